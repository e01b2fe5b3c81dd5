"""Aggregates of an evaluation run and its outputs: results.json, results.md, the Pareto plot.

Per (spec, task): accuracy, mean NFE (the row's own forwards), tokens/NFE (per row, then averaged;
docs/design.md §5), tokens/s, latencies, and speedups against the task's ``topk`` baseline.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unmask.eval.records import PARETO_PNG, RECORDS, RESULTS_JSON, RESULTS_MD

if TYPE_CHECKING:
    from unmask.eval.runner import EvalConfig, EvalReport


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
    ("latency_s", "s/request"), ("batch_latency_s", "latency s"),
)


def markdown_table(rows: list[dict[str, Any]], config: EvalConfig) -> str:
    lines = [
        f"# unmask eval: {config.model}",
        "",
        f"split `{config.split}`, {config.n} examples per task (seed {config.seed}), gen_length {config.gen_length}, "
        f"block_length {config.block_length}, {config.batch_size} slots, early stop {config.early_stop}, "
        f"temperature {config.temperature}, device `{config.device}`, dtype `{config.dtype}`. "
        "NFE: the row's model forwards (cache refreshes included); tokens: generated up to the first end-of-text; "
        "speedup: topk baseline's mean NFE / the spec's; tokens/s and s/request: from each row's share of the "
        "engine's wall time; latency s: a row's mean time from taking a slot to finishing.",
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
