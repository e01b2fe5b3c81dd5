"""Evaluation grid: decoding specs x tasks on one model, resumable.

For each (spec, task) the pending examples go through the decode engine with continuous batching
(``batch_size`` slots: an example leaves as soon as it is decoded and the next one takes its slot); each
finished example is scored (in threads: code runs in sandboxed subprocesses) and appended at once to
``<out>/records.jsonl`` (``eval/records.py``), so a crash loses no finished result and a rerun decodes
only what is missing. Aggregates, tables and the Pareto plot are always recomputed from the
records (``eval/report.py``): accuracy, mean NFE per row, tokens/NFE, tokens/s, latencies, speedups
against the ``topk`` baseline (a record's ``seconds`` is its share of the engine's wall time, each step's
time split over the rows in it; ``batch_seconds`` its own latency, admission to finish). Under torchrun each
rank decodes its share (``eval/distributed.py``: pending example ``i`` of each (spec, task) to rank
``i % world``) into its own records file, and rank 0 writes the merged outputs.

Outputs: ``run.json`` (the decode settings; a rerun with other settings is refused),
``records.jsonl``, ``results.json`` (aggregates + config), ``results.md``, ``pareto.png``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unmask.decoding.loop import check_lengths
from unmask.eval.distributed import Shard, current_shard
from unmask.eval.records import (
    RUN_KEYS,
    RecordWriter,
    RunLock,
    check_run_file,
    check_shared,
    fold_records,
    rank_records_path,
    read_run_records,
    record_key,
)
from unmask.eval.report import aggregate, write_outputs
from unmask.eval.spec import DecodeSpec, parse_specs
from unmask.tasks.base import Example, Task
from unmask.tasks.registry import get_task


@dataclass
class EvalConfig:
    """Settings of one evaluation run (everything but the model object)."""

    specs: list[str]
    tasks: list[str]
    n: int = 16
    split: str = "test"
    seed: int = 0
    batch_size: int = 8
    gen_length: int = 256
    block_length: int = 32
    early_stop: bool = True
    temperature: float = 0.0
    chat: bool = True
    model: str = "embedded"
    device: str = ""
    dtype: str = ""

    def run_identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in RUN_KEYS}


@dataclass
class EvalReport:
    """What ``run_eval`` returns: one aggregate row per (spec, task), the config and the output paths."""

    rows: list[dict[str, Any]]
    config: EvalConfig
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    generated: int = 0  # examples decoded by this call, all ranks together (the rest came from the records)
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)  # this grid's records

    def row(self, spec: str, task: str) -> dict[str, Any]:
        for r in self.rows:
            if r["spec"] == spec and r["task"] == task:
                return r
        raise KeyError(f"no result for spec {spec!r} on task {task!r}")


# --------------------------------------------------------------------------- tasks


def resolve_tasks(tasks: Iterable[str | Task] | dict[str, Task]) -> dict[str, Task]:
    """Names (``math``, ``gsm8k=/data/gsm8k.jsonl``), ``Task`` objects, or a name -> Task mapping."""
    if isinstance(tasks, dict):
        return dict(tasks)
    out: dict[str, Task] = {}
    for item in tasks:
        if isinstance(item, Task):
            name = item.name or type(item).__name__
            task = item
        elif isinstance(item, str):
            name, _, path = item.partition("=")
            name = name.strip()
            task = get_task(name, path=path.strip()) if path else _named_task(name)
        else:
            raise ValueError(f"a task must be a name or a Task, got {item!r}")
        if name in out:
            raise ValueError(f"task {name!r} given twice")
        out[name] = task
    if not out:
        raise ValueError("no task given")
    return out


def _named_task(name: str) -> Task:
    try:
        return get_task(name)
    except TypeError as err:  # a benchmark without its data path
        raise ValueError(f"{err}; on the command line write --task {name}=PATH") from None


# --------------------------------------------------------------------------- the grid


def run_eval(
    lm: Any,
    specs: Sequence[str | DecodeSpec] | str,
    tasks: Iterable[str | Task] | dict[str, Task],
    out_dir: str | os.PathLike,
    *,
    n: int = 16,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 8,
    gen_length: int = 256,
    block_length: int = 32,
    early_stop: bool = True,
    temperature: float = 0.0,
    chat: bool = True,
    model_name: str | None = None,
    overwrite: bool = False,
    warmup: bool = True,
    progress: bool = True,
    plot: bool = True,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> EvalReport:
    """Decode ``n`` examples of each task's ``split`` with every spec on ``lm`` (a ``DiffusionLM``);
    ``n=0`` takes a benchmark's whole file.

    Finished (spec, task, example) records in ``out_dir`` are reused, so an interrupted run resumes
    where it stopped (with any number of processes). Returns the aggregates (also written to
    ``results.json``, ``results.md`` and ``pareto.png``). Under torchrun every rank calls this with the
    same arguments and decodes its share of the batches; every rank returns the merged report.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0 examples per task (0: all, benchmarks only), got {n}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    check_lengths(gen_length, block_length)
    items = [specs] if isinstance(specs, str) else list(specs)
    spec_list = parse_specs([s.label if isinstance(s, DecodeSpec) else s for s in items])
    task_map = resolve_tasks(tasks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shard = current_shard(getattr(lm, "device", None))
    if model_name is None:
        model_name = str(getattr(lm, "path", None) or "embedded")
    device = str(getattr(lm, "device", ""))
    config = EvalConfig(
        specs=[s.label for s in spec_list], tasks=list(task_map), n=n, split=split, seed=seed, batch_size=batch_size,
        gen_length=gen_length, block_length=block_length, early_stop=early_stop, temperature=temperature, chat=chat,
        model=model_name, device=device if shard.world == 1 else f"{device.split(':')[0]} x{shard.world}",
        dtype=str(getattr(getattr(lm, "model", None), "dtype", "")),
    )
    examples = {name: task.examples(split, n, seed) for name, task in task_map.items()}
    for name, exs in examples.items():
        if not exs:
            raise ValueError(f"task {name!r} gave no {split} examples for n={n} (n=0 means all, for benchmarks only)")
        ids = [e.id for e in exs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"task {name!r} has duplicate example ids; records need unique ids")

    lock, done = open_folder(out, shard, config, overwrite)
    try:
        groups: list[tuple[DecodeSpec, str, list[tuple[int, Example]]]] = []
        for spec in spec_list:
            for name, exs in examples.items():
                pending = [(i, e) for i, e in enumerate(exs) if (spec.label, name, e.id) not in done]
                mine_here = shard.take(pending)  # example i of the pending ones to rank i % world
                if mine_here:
                    groups.append((spec, name, mine_here))
        generated = 0
        if groups:
            if warmup:
                first = groups[0][2][0][1]
                lm.generate([first.prompt], policy="threshold", gen_length=block_length, block_length=block_length,
                            early_stop=early_stop, chat=chat)
            writer = RecordWriter(rank_records_path(out, shard.rank, shard.world))
            try:
                with _progress(progress and shard.main, sum(len(g) for _, _, g in groups)) as bar:
                    for spec, name, rows in groups:
                        bar.describe(f"{spec.label} / {name}")

                        def finished(records: list[dict[str, Any]]) -> None:
                            writer.write(records)
                            bar.advance(len(records))
                            if on_batch is not None:
                                on_batch(records)

                        generated += decode_rows(lm, spec, name, task_map[name], rows, gen_length=gen_length,
                                                 block_length=block_length, early_stop=early_stop,
                                                 temperature=temperature, chat=chat, seed=seed, slots=batch_size,
                                                 on_records=finished)
            finally:
                writer.close()
        generated = sum(shard.gather(generated))  # also waits for every rank's records
        if shard.main:
            specs_at = {s.label: k for k, s in enumerate(spec_list)}
            tasks_at = {name: k for k, name in enumerate(task_map)}
            fold_records(out, lambda r: (specs_at.get(r["spec"], len(specs_at)), r["spec"],
                                         tasks_at.get(r["task"], len(tasks_at)), r["task"], r.get("index", 0)))
        shard.barrier()

        wanted = {(s.label, name, e.id) for s in spec_list for name, exs in examples.items() for e in exs}
        records = [r for r in read_run_records(out) if record_key(r) in wanted]
        rows = aggregate(records, [s.label for s in spec_list], list(task_map))
        report = EvalReport(rows=rows, config=config, out_dir=out, generated=generated, records=records)
        if shard.main:
            report.files = write_outputs(report, plot=plot)
        shard.barrier()  # every rank returns with the outputs on disk
    finally:
        if lock is not None:
            lock.release()
    return report


def open_folder(out: Path, shard: Shard, config: EvalConfig, overwrite: bool,
                ) -> tuple[RunLock | None, set[tuple[str, str, str]]]:
    """Rank 0 locks ``out``, checks or writes ``run.json`` and reads the finished records' keys, which every
    rank receives; the other ranks check that they see the same folder. Any rank's error is raised on all."""
    lock, done, token, error = None, set(), "", None
    if shard.main:
        try:
            lock = RunLock(out)
            token = lock.token
            check_run_file(out, config.run_identity(), overwrite)
            done = {record_key(r) for r in read_run_records(out)}
        except (ValueError, OSError) as err:
            if lock is not None:
                lock.release()
            if shard.world == 1:
                raise
            error = str(err)
    done, token = shard.broadcast((done, token))
    try:
        shard.raise_any(error or (None if shard.main else check_shared(out, token)))
    except ValueError:
        if lock is not None:
            lock.release()
        raise
    return lock, done


def decode_rows(
    lm: Any, spec: DecodeSpec, task_name: str, task: Task, rows: list[tuple[int, Example]], *, gen_length: int,
    block_length: int, early_stop: bool, temperature: float, chat: bool, seed: int, slots: int,
    on_records: Callable[[list[dict[str, Any]]], None],
) -> int:
    """Decode ``rows`` with one spec through ``slots`` slots (continuous batching); each example is scored as
    soon as it is decoded (in a thread pool) and its record handed to ``on_records`` (on this thread, in the
    order they finish). Returns the number of records."""
    prompts = [e.prompt for _, e in rows]
    run_id = uuid.uuid4().hex[:12]
    lock = threading.Lock()
    ready: list[dict[str, Any]] = []

    def score(i: int, result: Any, tokens: int, completion: str) -> None:
        index, example = rows[i]
        record = {
            "spec": spec.label, "task": task_name, "id": example.id, "index": index,
            "score": float(task.score(example, completion)), "nfe": result.nfe, "tokens": tokens,
            "tokens_per_nfe": tokens / max(result.nfe, 1), "batch_nfe": result.nfe, "batch": f"{run_id}-{i}",
            "batch_size": slots, "batch_seconds": result.retired_s - result.admitted_s,
            "seconds": result.seconds, "completion": completion,
        }
        with lock:
            ready.append(record)

    def flush() -> None:
        with lock:
            records = ready[:]
            ready.clear()
        if records:
            on_records(records)

    workers = max(1, min(len(rows), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = []

        def on_row(i: int, result: Any) -> None:
            tokens = lm.answer_length(result.tokens)
            futures.append(pool.submit(score, i, result, tokens, lm.answer_text(result.tokens, tokens)))
            flush()

        lm.generate(prompts, gen_length=gen_length, block_length=block_length, early_stop=early_stop,
                    temperature=temperature, chat=chat, seed=seed if temperature > 0 else None, slots=slots,
                    on_row=on_row, **spec.generate_kwargs())
        for future in futures:
            future.result()  # a scoring error is raised here
    flush()
    return len(rows)


# --------------------------------------------------------------------------- progress


class _NoBar:
    def describe(self, text: str) -> None:
        pass

    def advance(self, k: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _RichBar(_NoBar):
    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), transient=False)
        self.task = self.progress.add_task("eval", total=total)

    def describe(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def advance(self, k: int) -> None:
        self.progress.advance(self.task, k)

    def __enter__(self) -> _RichBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _progress(enabled: bool, total: int) -> _NoBar:
    return _RichBar(total) if enabled else _NoBar()
