"""``unmask tune``: the cheapest spec that keeps the baseline's accuracy on dev, reported on test.

Selection on the dev sweep (``select``): a spec is admissible when on every task its dev accuracy is
>= baseline accuracy - eps (point estimates); among those it minimises the mean over tasks of
NFE / baseline NFE (with one task: the NFE itself); ties go to the higher mean accuracy. The baseline
is always admissible, so a choice always exists.

Then the chosen spec and the baseline are decoded on the test split (disjoint examples: checked) and
compared there with a paired bootstrap (``compare``): accuracy and its interval, the accuracy
difference to the baseline, NFE and the NFE speedup, tokens/s.

Layout of ``out``: ``dev/`` (the sweep, its matched accuracy at baseline - eps; another folder with
``sweep_dir``, whose records are reused), ``test/`` (an eval run), ``tune.json``, ``tune.md``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unmask.eval.distributed import barrier, is_main
from unmask.eval.frontier import TOL, bootstrap_counts, percentile_ci, resampled_mean, resampled_ratio
from unmask.eval.runner import resolve_tasks, run_eval
from unmask.eval.spec import DecodeSpec
from unmask.eval.sweep import (
    BASELINE,
    ExampleTable,
    SweepGrid,
    SweepReport,
    TaskFrontier,
    example_table,
    resolve_split,
    run_sweep,
)
from unmask.tasks.base import Task

TUNE_JSON, TUNE_MD = "tune.json", "tune.md"


@dataclass
class Selection:
    """The chosen spec and the admissible candidates, cheapest first (``cost``: mean NFE / baseline NFE)."""

    spec: str
    eps: float
    cost: float
    candidates: list[dict[str, Any]]


def select(tasks: Sequence[TaskFrontier], eps: float) -> Selection:
    """The spec minimising the mean NFE ratio subject to accuracy >= baseline - eps on every task."""
    if not 0 <= eps < 1:
        raise ValueError(f"eps (accuracy below the baseline allowed) must be in [0, 1), got {eps}")
    if not tasks:
        raise ValueError("no task to select on")
    by_task = [{p["spec"]: p for p in t.points} for t in tasks]
    candidates = []
    for spec in by_task[0]:
        if not all(spec in points for points in by_task):
            continue
        rows = [points[spec] for points in by_task]
        floors = [t.baseline["accuracy"] - eps for t in tasks]
        if all(r["accuracy"] >= floor - TOL for r, floor in zip(rows, floors, strict=True)):
            cost = float(np.mean([r["mean_nfe"] / t.baseline["mean_nfe"] for r, t in zip(rows, tasks, strict=True)]))
            candidates.append({"spec": spec, "cost": cost, "accuracy": {t.task: r["accuracy"] for r, t in
                                                                       zip(rows, tasks, strict=True)},
                               "mean_nfe": {t.task: r["mean_nfe"] for r, t in zip(rows, tasks, strict=True)}})
    candidates.sort(key=lambda c: (c["cost"], -float(np.mean(list(c["accuracy"].values())))))
    return Selection(spec=candidates[0]["spec"], eps=eps, cost=candidates[0]["cost"], candidates=candidates)


def compare(table: ExampleTable, spec: str, *, samples: int = 1000, seed: int = 0,
            confidence: float = 0.95) -> dict[str, Any]:
    """``spec`` against the baseline on the same examples: point estimates and paired bootstrap intervals.

    ``accuracy_diff`` = acc(spec) - acc(baseline); ``nfe_speedup`` = NFE(baseline) / NFE(spec);
    ``tokens_per_s_ratio`` = tokens/s(spec) / tokens/s(baseline).
    """
    if spec not in table.specs:
        raise ValueError(f"{spec!r} has no complete records on this task")
    rows = [table.specs.index(BASELINE.label), table.specs.index(spec)]
    counts = bootstrap_counts(len(table.ids), samples, seed)
    out: dict[str, Any] = {"n": len(table.ids)}
    for weights, suffix in ((np.ones((1, len(table.ids))), ""), (counts, "_b")):
        acc = resampled_mean(weights, table.score[rows])
        nfe = resampled_mean(weights, table.nfe[rows])
        tps = resampled_ratio(weights, table.tokens[rows], table.seconds[rows])
        out["raw" + suffix] = (acc, nfe, tps)
    (acc, nfe, tps), (acc_b, nfe_b, tps_b) = out.pop("raw"), out.pop("raw_b")

    def ci(x: np.ndarray) -> list[float]:
        return [float(v) for v in percentile_ci(x, confidence)]

    for k, who in enumerate(("baseline", "spec")):
        out[who] = {"spec": (BASELINE.label, spec)[k], "accuracy": float(acc[0, k]), "accuracy_ci": ci(acc_b[:, k]),
                    "mean_nfe": float(nfe[0, k]), "tokens_per_s": float(tps[0, k])}
    out["accuracy_diff"] = float(acc[0, 1] - acc[0, 0])
    out["accuracy_diff_ci"] = ci(acc_b[:, 1] - acc_b[:, 0])
    out["nfe_speedup"] = float(nfe[0, 0] / nfe[0, 1])
    out["nfe_speedup_ci"] = ci(nfe_b[:, 0] / nfe_b[:, 1])
    out["tokens_per_s_ratio"] = float(tps[0, 1] / tps[0, 0])
    out["tokens_per_s_ratio_ci"] = ci(tps_b[:, 1] / tps_b[:, 0])
    return out


def check_disjoint(task_map: dict[str, Task], dev_split: str, test_split: str, n: int, test_n: int,
                   seed: int) -> None:
    """Tuning on test examples would be a leak: refuse when a task's dev and test examples share ids."""
    for name, task in task_map.items():
        dev = {e.id for e in task.examples(dev_split, n, seed)}
        shared = dev & {e.id for e in task.examples(test_split, test_n, seed)}
        if shared:
            raise ValueError(
                f"task {name!r}: its {dev_split} and {test_split} examples share {len(shared)} id(s) (e.g. "
                f"{sorted(shared)[0]!r}); a benchmark read from one file gives the same records for every split; "
                f"pass a folder with separate {dev_split} and {test_split} files (or --dev-split train)")


@dataclass
class TuneReport:
    """What ``run_tune`` returns: the dev sweep, the selection, the test comparison per task."""

    selection: Selection
    sweep: SweepReport
    dev: dict[str, dict[str, Any]]  # task -> compare() on dev
    test: dict[str, dict[str, Any]]  # task -> compare() on test
    settings: dict[str, Any]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)


def check_sweep_dir(folder: Path, grid: Any, gen_length: int, block_length: int) -> None:
    """``--sweep-dir`` reuses a sweep: a grid with settings that sweep never decoded is refused (tune would decode
    them into the user's folder and could choose one the user never swept)."""
    from unmask.eval.spec import parse_specs
    from unmask.eval.sweep import BASELINE, SweepGrid

    saved = folder / "sweep.json"
    if not saved.is_file():
        return  # a new sweep: it is decoded into the folder
    try:
        stored = set(json.loads(saved.read_text())["settings"]["specs"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--sweep-dir {str(folder)!r}: {saved.name} cannot be read ({err}); give another folder") \
            from None
    if isinstance(grid, SweepGrid):
        wanted = [s.label for s in grid.specs(gen_length, block_length)]
    else:
        wanted = [BASELINE.label, *(s.label for s in parse_specs([getattr(g, "label", g) for g in grid]))]
    new = [label for label in wanted if label not in stored]
    if new:
        raise ValueError(f"--sweep-dir {str(folder)!r} holds a sweep of {len(stored)} settings, and this tune's grid "
                         f"asks for {len(new)} it never decoded (e.g. {', '.join(new[:3])}); give the sweep's own "
                         f"grid (its settings are in {saved}) or another folder")


def run_tune(
    lm: Any,
    grid: SweepGrid | Sequence[str | DecodeSpec],
    tasks: Iterable[str | Task] | dict[str, Task],
    out_dir: str | os.PathLike,
    *,
    eps: float = 0.01,
    n: int = 512,
    test_n: int | None = None,
    dev_split: str = "dev",
    test_split: str = "test",
    sweep_dir: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 32,
    gen_length: int = 256,
    block_length: int = 32,
    samples: int = 1000,
    boot_seed: int = 0,
    confidence: float = 0.95,
    model_name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    plot: bool = True,
    **decode: Any,
) -> TuneReport:
    """Sweep (or reuse the sweep in ``sweep_dir``) on ``dev_split``, select with ``eps``, evaluate the
    choice and the baseline on ``test_split``; write ``tune.json`` and ``tune.md``. ``decode``: early_stop, chat."""
    if not 0 <= eps < 1:
        raise ValueError(f"eps (accuracy below the baseline allowed) must be in [0, 1), got {eps}")
    dev, test = resolve_split(dev_split), resolve_split(test_split)
    if dev == test:
        raise ValueError(f"dev split and test split are both {dev!r}; tune selects on one and reports on the other")
    test_n = n if test_n is None else test_n
    task_map = resolve_tasks(tasks)
    check_disjoint(task_map, dev, test, n, test_n, seed)
    out = Path(out_dir)
    common = {"seed": seed, "batch_size": batch_size, "gen_length": gen_length, "block_length": block_length,
              "model_name": model_name, "overwrite": overwrite, "progress": progress, **decode}
    if sweep_dir is not None:
        check_sweep_dir(Path(sweep_dir), grid, gen_length, block_length)
    sweep = run_sweep(lm, grid, task_map, sweep_dir or out / "dev", n=n, split=dev, drop=eps, samples=samples,
                      boot_seed=boot_seed, confidence=confidence, plot=plot, **common)
    choice = select(sweep.tasks, eps)
    specs = list(dict.fromkeys([BASELINE.label, choice.spec]))
    report = run_eval(lm, specs, task_map, out / "test", n=test_n, split=test, plot=False, **common)
    stats = {"samples": samples, "seed": boot_seed, "confidence": confidence}
    dev_cmp = {t: compare(example_table(sweep.eval.records, t, specs), choice.spec, **stats) for t in task_map}
    test_cmp = {t: compare(example_table(report.records, t, specs), choice.spec, **stats) for t in task_map}
    settings = {"eps": eps, "dev_split": dev, "test_split": test, "n": n, "test_n": test_n, **stats,
                "gen_length": gen_length, "block_length": block_length, "model": sweep.eval.config.model,
                "sweep_dir": str(sweep.out_dir), "test_dir": str(out / "test")}
    tune = TuneReport(selection=choice, sweep=sweep, dev=dev_cmp, test=test_cmp, settings=settings, out_dir=out)
    if is_main():  # torchrun: rank 0 writes
        tune.files = write_tune_outputs(tune)
    barrier()
    return tune


def write_tune_outputs(report: TuneReport) -> dict[str, Path]:
    out = report.out_dir
    payload = {"settings": report.settings, "chosen": report.selection.spec, "cost": report.selection.cost,
               "candidates": report.selection.candidates[:20], "dev": report.dev, "test": report.test,
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / TUNE_JSON).write_text(json.dumps(payload, indent=2) + "\n")
    (out / TUNE_MD).write_text(tune_markdown(report))
    return {"tune_json": out / TUNE_JSON, "tune_md": out / TUNE_MD}


def summary_rows(report: TuneReport) -> list[list[str]]:
    """One row per (task, split, spec): accuracy [CI], difference to the baseline [CI], NFE, speedup [CI], tokens/s."""

    def interval(value: float, ci: list[float], digits: int = 3, suffix: str = "") -> str:
        return f"{value:.{digits}f}{suffix} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"

    rows = []
    for split, results in (("dev", report.dev), ("test", report.test)):
        for task, c in results.items():
            for who in ("baseline", "spec"):
                r = c[who]
                chosen = who == "spec"
                rows.append([
                    task, f"{split} ({c['n']})", r["spec"], interval(r["accuracy"], r["accuracy_ci"]),
                    interval(c["accuracy_diff"], c["accuracy_diff_ci"], 3) if chosen else "-",
                    f"{r['mean_nfe']:.1f}", interval(c["nfe_speedup"], c["nfe_speedup_ci"], 2, "x") if chosen else "1x",
                    f"{r['tokens_per_s']:.0f}",
                ])
    return rows


TUNE_COLUMNS = ("task", "split (n)", "spec", "accuracy [CI]", "vs baseline [CI]", "NFE", "NFE speedup [CI]",
                "tokens/s")


def tune_markdown(report: TuneReport) -> str:
    s, sel = report.settings, report.selection
    pct = f"{100 * s['confidence']:.0f}%"
    lines = [
        f"# unmask tune: {s['model']}", "",
        f"Chosen: **`{sel.spec}`**: the lowest mean NFE / baseline NFE ({sel.cost:.3f}) among the "
        f"{len(sel.candidates)} settings whose `{s['dev_split']}` accuracy is >= the baseline's - {sel.eps:g} on "
        f"every task; then decoded on `{s['test_split']}`. gen_length {s['gen_length']}, block_length "
        f"{s['block_length']}; intervals: {pct} paired bootstrap ({s['samples']} resamples). Dev sweep: "
        f"`{s['sweep_dir']}`.", "",
        "| " + " | ".join(TUNE_COLUMNS) + " |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(report)]
    lines += ["", "Cheapest admissible settings on dev:", ""]
    for c in sel.candidates[:10]:
        accs = ", ".join(f"{t} {a:.3f}" for t, a in c["accuracy"].items())
        lines.append(f"- `{c['spec']}`: NFE ratio {c['cost']:.3f} (accuracy {accs})")
    return "\n".join(lines) + "\n"

