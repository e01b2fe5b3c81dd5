"""Loss curves of a training run (train loss per log interval, validation losses) as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_losses(log: Any, path: str | Path, title: str = "masked-diffusion loss") -> None:
    """Training loss (per log interval) and validation loss against step, as a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = log.to_dict() if hasattr(log, "to_dict") else log
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if d["train"]:
        ax.plot([r["step"] for r in d["train"]], [r["loss"] for r in d["train"]], lw=1, label="train")
    if d["val"]:
        ax.plot([r["step"] for r in d["val"]], [r["loss"] for r in d["val"]], "o-", ms=3, label="validation")
        for key in sorted(k for k in d["val"][0] if k.startswith("loss_")):
            ax.plot(
                [r["step"] for r in d["val"]],
                [r.get(key, float("nan")) for r in d["val"]],
                "--",
                lw=1,
                label=f"val {key[5:]}",
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (sum CE / t, per answer token)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
