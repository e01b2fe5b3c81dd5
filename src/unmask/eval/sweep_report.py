"""Outputs of a sweep: ``sweep.json`` (the analysis), ``sweep.md`` (a table per task), ``frontier.png``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unmask.eval.sweep import FamilyResult, SweepReport, TaskFrontier

SWEEP_JSON, SWEEP_MD, FRONTIER_PNG = "sweep.json", "sweep.md", "frontier.png"


def write_sweep_outputs(report: SweepReport, plot: bool = True) -> dict[str, Path]:
    out = report.out_dir
    payload = {"config": asdict(report.eval.config), "settings": report.settings,
               "tasks": [asdict(t) for t in report.tasks], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = out / (SWEEP_JSON + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out / SWEEP_JSON)
    (out / SWEEP_MD).write_text(sweep_markdown(report))
    files = {"sweep_json": out / SWEEP_JSON, "sweep_md": out / SWEEP_MD}
    if plot and report.tasks:
        files["frontier"] = plot_frontiers(report.tasks, out / FRONTIER_PNG, report.settings["drop"])
    return files


def _f(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def with_ci(value: float | None, ci: list[float | None], digits: int = 1, suffix: str = "") -> str:
    """``9.0 [8.1, 10.2]``; an open upper end (some resamples never reach the target) reads ``inf``."""
    if value is None:
        return "not reached"
    lower, upper = ci
    hi = "inf" if upper is None else f"{upper:.{digits}f}"
    return f"{value:.{digits}f}{suffix} [{_f(lower, digits)}, {hi}]"


def family_row(fam: FamilyResult, points: dict[str, dict[str, Any]]) -> str:
    best = points.get(fam.best) if fam.best else None
    cells = [
        f"`{fam.family}`", f"`{fam.best}`" if fam.best else "-",
        "-" if best is None else f"{best['accuracy']:.3f} / {best['mean_nfe']:.1f}",
        with_ci(fam.nfe, fam.nfe_ci), with_ci(fam.nfe_speedup, fam.nfe_speedup_ci, 2, "x"),
        with_ci(fam.tokens_per_s, fam.tokens_per_s_ci, 0), with_ci(fam.tokens_per_s_ratio, fam.tokens_per_s_ratio_ci, 2,
                                                                    "x"),
        f"{100 * fam.reached:.0f}%",
    ]
    return "| " + " | ".join(cells) + " |"


def task_section(t: TaskFrontier, confidence: float, drop: float) -> list[str]:
    base = t.baseline
    points = {p["spec"]: p for p in t.points}
    pct = f"{100 * confidence:.0f}%"
    lines = [
        f"## {t.task} (n = {t.n})", "",
        f"Baseline `{base['spec']}`: accuracy {base['accuracy']:.3f} [{base['accuracy_ci'][0]:.3f}, "
        f"{base['accuracy_ci'][1]:.3f}], NFE {base['mean_nfe']:.1f}, {_f(base['tokens_per_s'], 0)} tokens/s. "
        f"Matched accuracy a* = {t.target:.3f} (baseline - {drop:g}).", "",
        f"| family | cheapest setting with acc >= a* | its acc / NFE | NFE at a* [{pct} CI] | NFE speedup "
        f"[{pct} CI] | tokens/s at a* [{pct} CI] | tokens/s vs baseline | reached a* |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = sorted(t.families, key=lambda f: (f.nfe is None, f.nfe if f.nfe is not None else 0.0))
    lines += [family_row(f, points) for f in order]
    lines += ["", "Fronts (accuracy / NFE of each Pareto-optimal setting, cheapest first):", ""]
    for fam in t.families:
        chain = " -> ".join(f"`{s}` {points[s]['accuracy']:.3f} / {points[s]['mean_nfe']:.1f}" for s in fam.front)
        lines.append(f"- `{fam.family}`: {chain}")
    if t.incomplete:
        lines += ["", f"Left out (not every example decoded): {', '.join(f'`{s}`' for s in t.incomplete)}."]
    return lines + [""]


def sweep_markdown(report: SweepReport) -> str:
    cfg, settings = report.eval.config, report.settings
    lines = [
        f"# unmask sweep: {cfg.model}", "",
        f"split `{cfg.split}`, {cfg.n} examples per task (seed {cfg.seed}), gen_length {cfg.gen_length}, block_length "
        f"{cfg.block_length}, batch {cfg.batch_size}, early stop {cfg.early_stop}, device `{cfg.device}`, dtype "
        f"`{cfg.dtype}`; {len(settings['specs'])} settings. NFE: mean model forwards per example. "
        f"Figures at the matched accuracy a* = baseline accuracy - {settings['drop']:g}, interpolated along each "
        f"family's Pareto front (piecewise linear in accuracy); intervals: paired bootstrap over the examples "
        f"({settings['samples']} resamples, seed {settings['boot_seed']}, percentile). Speedup: baseline NFE / "
        "NFE at a*. `reached a*`: the share of resamples whose front reaches a* (below 97.5% the interval is open). "
        "Every setting's accuracy and NFE: `results.md`.", "",
    ]
    for t in report.tasks:
        lines += task_section(t, settings["confidence"], settings["drop"])
    return "\n".join(lines)


def plot_frontiers(tasks: list[TaskFrontier], path: Path, drop: float) -> Path:
    """Accuracy vs NFE, one panel per task: each family's settings (faint), its front (line: colour by
    policy, style by credit variant), the baseline (star), the matched accuracy (dashed) and each
    family's NFE there (cross)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(f.family for t in tasks for f in t.families))
    policies = list(dict.fromkeys(name.split("+")[0].split("@")[0] for name in names))
    cmap = plt.get_cmap("tab10")

    def style(name: str) -> dict[str, Any]:
        color = cmap(policies.index(name.split("+")[0].split("@")[0]) % 10)
        dash = ":" if "credit-adaptive" in name else "--" if "+credit" in name else "-"
        return {"color": color, "ls": dash}

    legend_w, panel_w = 2.4, 6.0
    width = panel_w * len(tasks) + legend_w
    fig, axes = plt.subplots(1, len(tasks), figsize=(width, 4.6), squeeze=False)
    for ax, t in zip(axes[0], tasks, strict=True):
        points = {p["spec"]: p for p in t.points}
        for fam in t.families:
            look = style(fam.family)
            ax.scatter([points[s]["mean_nfe"] for s in fam.specs], [points[s]["accuracy"] for s in fam.specs],
                       color=look["color"], alpha=0.3, s=12, zorder=2)
            ax.plot([points[s]["mean_nfe"] for s in fam.front], [points[s]["accuracy"] for s in fam.front],
                    marker="o", ms=3.5, lw=1.5, label=fam.family, zorder=3, **look)
            if fam.nfe is not None:
                ax.scatter([fam.nfe], [t.target], color=look["color"], marker="x", s=50, zorder=4)
        base = t.baseline
        ax.scatter([base["mean_nfe"]], [base["accuracy"]], color="black", marker="*", s=150, zorder=5,
                   label=f"baseline {base['spec']}")
        ax.axhline(t.target, color="gray", ls="--", lw=0.8, label=f"baseline - {drop:g} (x: NFE there)")
        xs = [p["mean_nfe"] for p in t.points if p["mean_nfe"] > 0]
        if xs and max(xs) / min(xs) > 10:
            ax.set_xscale("log")
        ax.set_xlabel("mean NFE per example (lower is faster)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{t.task} (n={t.n})")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    right = 1 - legend_w / width
    fig.tight_layout(rect=(0, 0, right, 1))
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(right, 0.5), fontsize=8, frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_sweep(report: SweepReport, console: Any = None) -> None:
    """Per task, the families at the matched accuracy as a rich table (best first)."""
    from rich.table import Table

    from unmask.cli_errors import make_console

    console = console or make_console()
    drop = report.settings["drop"]
    for t in report.tasks:
        base = t.baseline
        table = Table(title=f"unmask sweep: {t.task} (n={t.n}, {report.eval.config.split})", caption=(
            f"baseline {base['spec']}: accuracy {base['accuracy']:.3f}, NFE {base['mean_nfe']:.1f}; a* = "
            f"{t.target:.3f} (baseline - {drop:g}); [{100 * report.settings['confidence']:.0f}% interval] paired "
            "bootstrap; details in sweep.md"))
        for name in ("family", "cheapest at a*", "NFE at a*", "NFE speedup", "tokens/s ratio", "reached"):
            table.add_column(name, justify="left" if name in ("family", "cheapest at a*") else "right")
        for fam in sorted(t.families, key=lambda f: (f.nfe is None, f.nfe or 0.0)):
            table.add_row(fam.family, fam.best or "-", _f(fam.nfe) if fam.nfe is not None else "not reached",
                          with_ci(fam.nfe_speedup, fam.nfe_speedup_ci, 2, "x"),
                          with_ci(fam.tokens_per_s_ratio, fam.tokens_per_s_ratio_ci, 2, "x"),
                          f"{100 * fam.reached:.0f}%")
        console.print(table)
