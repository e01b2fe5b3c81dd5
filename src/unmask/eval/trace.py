"""A picture of one generation: when each position was committed, at which confidence.

The figure is a step x position grid (like the decoding-trace figures of CreditDecoding): row s is
the row's decoding step s (one model forward), column p a generated position. The cell where p is
committed is coloured by the confidence the policy saw when committing it; positions already decoded
are light grey, positions still masked white, positions filled with end-of-text by early stop dark
grey (from the step the row finished). Block boundaries are drawn as vertical lines; tokens label
the x axis when the generation is short enough.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unmask.decoding.loop import FILLED_BY_EARLY_STOP
from unmask.eval.spec import DecodeSpec, parse_spec
from unmask.models.tokenizer import EOS_TOKEN, EOT_TOKEN, MASK_TOKEN

MAX_LABELLED = 96  # label tokens on the x axis up to this many positions


@dataclass
class Trace:
    """One decoded prompt: per-position commit step and confidence, and the per-step commit counts."""

    prompt: str
    spec: str
    text: str
    tokens: list[str]  # the generated tokens as text (special tokens kept)
    commit_step: np.ndarray  # [G] step that committed each position (-2: filled by early stop)
    commit_confidence: np.ndarray  # [G]
    step_counts: list[int]  # tokens committed at each step 0..nfe-1
    early_stop_filled: int  # positions filled with end-of-text by early stop
    nfe: int
    length: int  # generated tokens up to and including the first end-of-text
    gen_length: int
    block_length: int
    path: Path | None = None

    @property
    def tokens_per_nfe(self) -> float:
        return self.length / max(self.nfe, 1)


def trace_generation(
    lm: Any,
    prompt: str,
    spec: str | DecodeSpec = "threshold:0.9",
    *,
    gen_length: int = 64,
    block_length: int = 32,
    early_stop: bool = True,
    chat: bool = True,
    out: str | os.PathLike | None = None,
    title: str | None = None,
) -> Trace:
    """Decode ``prompt`` with ``spec`` on ``lm`` and return its trace (and draw it to ``out`` if given)."""
    spec = spec if isinstance(spec, DecodeSpec) else parse_spec(spec)
    if out is not None:
        check_writable(Path(out))  # fail before decoding, not after
    result = lm.generate([prompt], gen_length=gen_length, block_length=block_length, early_stop=early_stop, chat=chat,
                         **spec.generate_kwargs())
    steps = result.commit_step[0].cpu().numpy().astype(np.int64)
    conf = result.commit_confidence[0].float().cpu().numpy()
    nfe = int(result.nfe_per_row[0])
    ids = result.tokens[0].tolist()
    tokens = [lm.tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    counts = np.bincount(steps[steps >= 0], minlength=nfe).tolist() if (steps >= 0).any() else [0] * nfe
    trace = Trace(
        prompt=prompt, spec=spec.label, text=result.texts[0], tokens=tokens, commit_step=steps, commit_confidence=conf,
        step_counts=[int(c) for c in counts], early_stop_filled=int((steps == FILLED_BY_EARLY_STOP).sum()), nfe=nfe,
        length=int(result.lengths[0]), gen_length=gen_length, block_length=block_length,
    )
    if out is not None:
        trace.path = plot_trace(trace, out, title=title)
    return trace


def _short(token: str, width: int = 8) -> str:
    token = token.replace("\n", "\\n").replace(EOS_TOKEN, "EOS").replace(EOT_TOKEN, "EOT")
    token = token.replace(MASK_TOKEN, "MASK")
    return token if len(token) <= width else token[: width - 1] + "…"


def check_writable(path: Path) -> None:
    """The PNG's folder must exist and be writable (no folders are created for a mistyped path)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ValueError(f"output {str(path)!r} is a directory; give a file name such as trace.png")
    if not folder.is_dir():
        raise ValueError(f"output folder {str(folder)!r} does not exist (or is a file)")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"output folder {str(folder)!r} is not writable")


def plot_trace(trace: Trace, path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw the step x position grid of ``trace`` to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    G = trace.gen_length
    steps = trace.commit_step
    n_steps = max(trace.nfe, int(steps.max()) + 1 if steps.size else 1, 1)
    finish_step = int(steps[steps >= 0].max()) if (steps >= 0).any() else 0
    grid_step = np.arange(n_steps)[:, None]
    state = np.zeros((n_steps, G))  # 0 masked, 1 decoded, 2 early-stop fill
    state[(steps[None, :] >= 0) & (grid_step > steps[None, :])] = 1
    state[(steps[None, :] == FILLED_BY_EARLY_STOP) & (grid_step >= finish_step)] = 2
    commit = np.full((n_steps, G), np.nan)
    cols = np.nonzero(steps >= 0)[0]
    commit[steps[cols], cols] = trace.commit_confidence[cols]

    width = min(max(6.0, G * 0.16 + 2), 40.0)
    height = min(max(3.0, n_steps * 0.14 + 1.8), 30.0)
    fig, ax = plt.subplots(figsize=(width, height))
    background = ListedColormap(["#ffffff", "#d9d9d9", "#6e6e6e"])
    ax.imshow(state, cmap=background, vmin=0, vmax=2, aspect="auto", interpolation="nearest")
    image = ax.imshow(commit, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    for b in range(0, G + 1, trace.block_length):
        ax.axvline(b - 0.5, color="tab:red", lw=1.2)
    ax.set_xlabel("generated position")
    ax.set_ylabel("decoding step (model forward)")
    if G <= MAX_LABELLED:
        ax.set_xticks(range(G))
        ax.set_xticklabels([_short(t) for t in trace.tokens], rotation=90, fontsize=6)
    fig.colorbar(image, ax=ax, label="confidence at commit", fraction=0.03, pad=0.01)
    ax.set_title(title or (
        f"{trace.spec}: NFE {trace.nfe}, {trace.length} tokens, {trace.tokens_per_nfe:.2f} tokens/NFE "
        f"(white masked, grey decoded, dark grey early-stop fill)"), fontsize=9)
    fig.tight_layout()
    out = Path(path)
    check_writable(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
