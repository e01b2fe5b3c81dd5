"""Evaluation grid: decoding specs x tasks on one model, resumable, with tables and a Pareto plot.

For each (spec, task) the examples are decoded in batches; each finished example is appended at
once to ``<out>/records.jsonl`` (flushed and fsynced), so a crash loses no finished result and a
rerun skips what is done. Aggregates are always recomputed from the records:

- accuracy: mean task score;
- mean NFE: mean of the row's own forwards (``nfe_per_row``: cache refreshes included, a row
  waiting on others costs it nothing);
- tokens/NFE: generated tokens up to and including the first end-of-text, over the row's NFE,
  per row, then averaged (docs/design.md §5);
- tokens/s: generated tokens (same count) over wall time; latency per request is the batch's
  wall time over its size, latency per batch the mean wall time of a batch;
- NFE speedup: mean NFE of the ``topk`` baseline of the same task over the spec's mean NFE
  (time speedup likewise with latency per request).

Outputs: ``run.json`` (the decode settings; a rerun with other settings is refused),
``records.jsonl``, ``results.json`` (aggregates + config), ``results.md``, ``pareto.png``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unmask.decoding.loop import check_lengths
from unmask.eval.spec import DecodeSpec, parse_specs
from unmask.tasks.base import Example, Task, get_task

RECORDS = "records.jsonl"
RUN_FILE = "run.json"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PARETO_PNG = "pareto.png"
# settings that change what a record means: a rerun into the same folder must match them
RUN_KEYS = ("model", "split", "seed", "gen_length", "block_length", "early_stop", "temperature", "chat")


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
    generated: int = 0  # examples decoded by this call (the rest came from records.jsonl)

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


# --------------------------------------------------------------------------- records


def read_records(path: Path) -> list[dict[str, Any]]:
    """Finished records; a torn last line (crash while writing) is dropped from the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # crash mid-write: cut the partial line so appends stay valid
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    records = []
    for number, line in enumerate(data.decode().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not a valid record ({err.msg}); fix or delete that line") from err
    return records


def record_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["spec"], record["task"], record["id"]


class RecordWriter:
    """Appends records as JSON lines, each flushed and fsynced before the next batch starts."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def check_run_file(out_dir: Path, config: EvalConfig, overwrite: bool) -> None:
    run_path = out_dir / RUN_FILE
    identity = config.run_identity()
    if overwrite:
        for name in (RECORDS, RESULTS_JSON, RESULTS_MD, PARETO_PNG, RUN_FILE):
            (out_dir / name).unlink(missing_ok=True)
    elif run_path.is_file():
        previous = json.loads(run_path.read_text())
        diff = [f"{k}: {previous.get(k)!r} there, {v!r} now" for k, v in identity.items() if previous.get(k) != v]
        if diff:
            raise ValueError(
                f"{out_dir} holds records of a different run ({'; '.join(diff)}); "
                "use another output folder or overwrite it"
            )
    elif (out_dir / RECORDS).is_file() and (out_dir / RECORDS).stat().st_size:
        raise ValueError(f"{out_dir / RECORDS} exists without {RUN_FILE}; use another output folder or overwrite it")
    run_path.write_text(json.dumps(identity, indent=2) + "\n")


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

    Finished (spec, task, example) records in ``out_dir/records.jsonl`` are reused, so an
    interrupted run resumes where it stopped. Returns the aggregates (also written to
    ``results.json``, ``results.md`` and ``pareto.png``).
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
    if model_name is None:
        model_name = str(getattr(lm, "path", None) or "embedded")
    config = EvalConfig(
        specs=[s.label for s in spec_list], tasks=list(task_map), n=n, split=split, seed=seed, batch_size=batch_size,
        gen_length=gen_length, block_length=block_length, early_stop=early_stop, temperature=temperature, chat=chat,
        model=model_name, device=str(getattr(lm, "device", "")),
        dtype=str(getattr(getattr(lm, "model", None), "dtype", "")),
    )
    check_run_file(out, config, overwrite)

    examples = {name: task.examples(split, n, seed) for name, task in task_map.items()}
    for name, exs in examples.items():
        if not exs:
            raise ValueError(f"task {name!r} gave no {split} examples for n={n} (n=0 means all, for benchmarks only)")
        ids = [e.id for e in exs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"task {name!r} has duplicate example ids; records need unique ids")
    records_path = out / RECORDS
    done = {record_key(r) for r in read_records(records_path)}
    plan: list[tuple[DecodeSpec, str, list[tuple[int, Example]]]] = []
    for spec in spec_list:
        for name, exs in examples.items():
            pending = [(i, e) for i, e in enumerate(exs) if (spec.label, name, e.id) not in done]
            if pending:
                plan.append((spec, name, pending))
    total = sum(len(p) for _, _, p in plan)

    generated = 0
    if total:
        if warmup:
            first = plan[0][2][0][1]
            lm.generate([first.prompt], policy="threshold", gen_length=block_length, block_length=block_length,
                        early_stop=early_stop, chat=chat)
        writer = RecordWriter(records_path)
        try:
            with _progress(progress, total) as bar:
                for spec, name, pending in plan:
                    bar.describe(f"{spec.label} / {name}")
                    for start in range(0, len(pending), batch_size):
                        batch = pending[start:start + batch_size]
                        records = decode_batch(lm, spec, name, task_map[name], batch, gen_length=gen_length,
                                               block_length=block_length, early_stop=early_stop,
                                               temperature=temperature, chat=chat, seed=seed)
                        writer.write(records)
                        generated += len(records)
                        bar.advance(len(records))
                        if on_batch is not None:
                            on_batch(records)
        finally:
            writer.close()

    wanted = {(s.label, name, e.id) for s in spec_list for name, exs in examples.items() for e in exs}
    records = [r for r in read_records(records_path) if record_key(r) in wanted]
    rows = aggregate(records, [s.label for s in spec_list], list(task_map))
    report = EvalReport(rows=rows, config=config, out_dir=out, generated=generated)
    report.files = write_outputs(report, plot=plot)
    return report


def decode_batch(
    lm: Any, spec: DecodeSpec, task_name: str, task: Task, batch: list[tuple[int, Example]], *, gen_length: int,
    block_length: int, early_stop: bool, temperature: float, chat: bool, seed: int,
) -> list[dict[str, Any]]:
    """Decode one batch with one spec, score it, and return one record per example."""
    prompts = [e.prompt for _, e in batch]
    tic = time.perf_counter()
    out = lm.generate(prompts, gen_length=gen_length, block_length=block_length, early_stop=early_stop,
                      temperature=temperature, chat=chat, seed=seed if temperature > 0 else None,
                      **spec.generate_kwargs())
    wall = time.perf_counter() - tic
    batch_id = uuid.uuid4().hex[:12]
    scores = score_all(task, [e for _, e in batch], out.texts)
    records = []
    for row, (index, example) in enumerate(batch):
        nfe = int(out.nfe_per_row[row])
        tokens = int(out.lengths[row])
        completion = out.texts[row]
        records.append({
            "spec": spec.label, "task": task_name, "id": example.id, "index": index,
            "score": scores[row], "nfe": nfe, "tokens": tokens,
            "tokens_per_nfe": tokens / max(nfe, 1), "batch_nfe": int(out.nfe), "batch": batch_id,
            "batch_size": len(batch), "batch_seconds": wall, "seconds": wall / len(batch),
            "completion": completion,
        })
    return records


def score_all(task: Task, examples: list[Example], completions: list[str]) -> list[float]:
    """Score a batch; in threads (code scoring waits on sandboxed subprocesses, which release the GIL)."""
    workers = min(len(examples), os.cpu_count() or 1)
    if workers <= 1:
        return [float(task.score(e, c)) for e, c in zip(examples, completions, strict=True)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [float(s) for s in pool.map(task.score, examples, completions)]


# --------------------------------------------------------------------------- aggregates


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def aggregate(records: list[dict[str, Any]], specs: list[str], tasks: list[str]) -> list[dict[str, Any]]:
    """One row per (spec, task) with records, in spec-then-task order; speedups vs the task's topk baseline."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["spec"], r["task"]), []).append(r)
    rows = []
    for spec in specs:
        for task in tasks:
            group = groups.get((spec, task))
            if not group:
                continue
            batches: dict[str, float] = {}
            for r in group:
                batches[r["batch"]] = r["batch_seconds"]
            seconds = sum(r["seconds"] for r in group)
            tokens = sum(r["tokens"] for r in group)
            rows.append({
                "spec": spec, "task": task, "n": len(group),
                "accuracy": _mean([r["score"] for r in group]),
                "mean_nfe": _mean([r["nfe"] for r in group]),
                "tokens_per_nfe": _mean([r["tokens_per_nfe"] for r in group]),
                "mean_tokens": tokens / len(group),
                "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"),
                "latency_s": seconds / len(group),
                "batch_latency_s": _mean(list(batches.values())),
                "seconds": seconds,
                "nfe_speedup": None, "time_speedup": None,
            })
    for task in tasks:
        base = _baseline_row(rows, task)
        if base is None:
            continue
        for row in rows:
            if row["task"] == task:
                row["nfe_speedup"] = base["mean_nfe"] / row["mean_nfe"] if row["mean_nfe"] else None
                row["time_speedup"] = base["latency_s"] / row["latency_s"] if row["latency_s"] else None
    return rows


def _baseline_row(rows: list[dict[str, Any]], task: str) -> dict[str, Any] | None:
    for row in rows:
        if row["task"] == task and row["spec"] == "topk":
            return row
    return None


# --------------------------------------------------------------------------- outputs


def write_outputs(report: EvalReport, plot: bool = True) -> dict[str, Path]:
    out = report.out_dir
    files = {"records": out / RECORDS, "json": out / RESULTS_JSON, "markdown": out / RESULTS_MD}
    payload = {"config": asdict(report.config), "results": report.rows,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = out / (RESULTS_JSON + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out / RESULTS_JSON)
    (out / RESULTS_MD).write_text(markdown_table(report.rows, report.config))
    if plot and report.rows:
        files["pareto"] = plot_pareto(report.rows, out / PARETO_PNG)
    return files


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return str(value)


MD_COLUMNS = (
    ("task", "task"), ("spec", "spec"), ("n", "n"), ("accuracy", "accuracy"), ("mean_nfe", "mean NFE"),
    ("tokens_per_nfe", "tokens/NFE"), ("nfe_speedup", "NFE speedup"), ("tokens_per_s", "tokens/s"),
    ("latency_s", "s/request"), ("batch_latency_s", "s/batch"),
)


def markdown_table(rows: list[dict[str, Any]], config: EvalConfig) -> str:
    lines = [
        f"# unmask eval: {config.model}",
        "",
        f"split `{config.split}`, {config.n} examples per task (seed {config.seed}), gen_length {config.gen_length}, "
        f"block_length {config.block_length}, batch {config.batch_size}, early stop {config.early_stop}, "
        f"temperature {config.temperature}, device `{config.device}`, dtype `{config.dtype}`. "
        "NFE: the row's model forwards (cache refreshes included); tokens: generated up to the first end-of-text; "
        "speedup: topk baseline's mean NFE / the spec's.",
        "",
        "| " + " | ".join(title for _, title in MD_COLUMNS) + " |",
        "|" + "|".join("---" if key in ("task", "spec") else "---:" for key, _ in MD_COLUMNS) + "|",
    ]
    for row in sorted(rows, key=lambda r: config.tasks.index(r["task"]) if r["task"] in config.tasks else 0):
        cells = []
        for key, _ in MD_COLUMNS:
            value = row[key]
            if key == "nfe_speedup" and value is not None:
                cells.append(f"{value:.2f}x")
            else:
                cells.append(_fmt(value, 1 if key in ("tokens_per_s",) else 3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower-or-equal NFE and higher-or-equal accuracy,
    one of them strictly), sorted by NFE."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def plot_pareto(rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy vs mean NFE, one panel per task, one point per spec, the Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        task_rows = [r for r in rows if r["task"] == task]
        points = [(r["mean_nfe"], r["accuracy"]) for r in task_rows]
        front = pareto_front(points)
        ax.scatter([p[0] for p in points], [p[1] for p in points], c="tab:blue", zorder=3)
        labels: dict[tuple[float, float], list[str]] = {}
        for r, point in zip(task_rows, points, strict=True):
            labels.setdefault(point, []).append(r["spec"])
        for (x, y), specs in labels.items():  # coincident points share one label
            ax.annotate("\n".join(specs), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if front:
            fx = [points[i][0] for i in front]
            fy = [points[i][1] for i in front]
            ax.step(fx, fy, where="post", color="tab:red", lw=1.5, label="Pareto front", zorder=2)
            ax.scatter(fx, fy, facecolors="none", edgecolors="tab:red", s=90, zorder=4)
            ax.legend(loc="lower right", fontsize=8)
        xs = [p[0] for p in points if p[0] > 0]
        if xs and max(xs) / min(xs) > 10:  # parallel rules sit 10-30x left of the baseline: log scale
            ax.set_xscale("log")
        ax.set_xlabel("mean NFE per example (lower is faster)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{task} (n={task_rows[0]['n']})")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
