"""Online batch selection: from a candidate batch, choose the rows that contribute to the loss.

The trainer runs the training forward on a candidate batch of ``batch_size / fraction`` rows (the
noised inputs with grad), computes the per-row masked-diffusion loss, then asks a selector which
rows to keep; the loss is the mean over the kept rows, so only those get gradients. Everything the
selector sees is detached (no extra backward pass, no extra forward).

UDS (DESIGN.md section 8) is meant to plug in here: its utility / intra-sample diversity comes from
the nuclear norm of each row's logits at its masked response positions (``logits_masked_per_row``)
and its inter-sample diversity from a cheap embedding (``embeddings``) compared with a memory buffer
the selector keeps itself.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class BatchSelector(Protocol):
    """Chooses which rows of a candidate batch train.

    needs_logits: whether ``select`` reads ``logits_masked_per_row`` (the trainer skips building the
        list otherwise; a selector that does not set it is given the logits).
    """

    needs_logits: bool

    def select(
        self,
        logits_masked_per_row: list[torch.Tensor],
        losses_per_row: torch.Tensor,
        embeddings: torch.Tensor,
        fraction: float,
    ) -> torch.Tensor:
        """Indices (LongTensor, on any device) of the rows to train on.

        logits_masked_per_row: per row, the logits [n_masked_i, V] at its masked response positions
            (float32 or the autocast dtype; detached); an empty list when ``needs_logits`` is False.
        losses_per_row: [B] per-row masked-diffusion loss (detached, float32).
        embeddings: [B, D] a cheap per-row embedding (detached, float32): the mean input-token
            embedding of the clean response (see ``Trainer.row_embeddings``).
        fraction: the share of rows to keep; ``n_keep(B, fraction)`` rows by convention.
        """
        ...


def n_keep(batch: int, fraction: float) -> int:
    """Rows kept out of ``batch`` at ``fraction`` (at least one)."""
    return max(1, min(batch, math.ceil(batch * fraction - 1e-9)))


class AllSelector:
    """The default: every row trains (plain SFT)."""

    needs_logits = False

    def select(self, logits_masked_per_row, losses_per_row, embeddings, fraction):  # noqa: D102
        return torch.arange(losses_per_row.shape[0], device=losses_per_row.device)


class RandomSelector:
    """Uniformly random rows (the baseline any selection method must beat at the same fraction)."""

    needs_logits = False

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def select(self, logits_masked_per_row, losses_per_row, embeddings, fraction):  # noqa: D102
        B = losses_per_row.shape[0]
        idx = torch.randperm(B, generator=self.generator)[: n_keep(B, fraction)]
        return idx.sort().values.to(losses_per_row.device)


class HighLossSelector:
    """The rows with the highest loss (a common online-selection baseline)."""

    needs_logits = False

    def select(self, logits_masked_per_row, losses_per_row, embeddings, fraction):  # noqa: D102
        k = n_keep(losses_per_row.shape[0], fraction)
        return torch.topk(losses_per_row, k).indices.sort().values


SELECTORS = {"all": AllSelector, "random": RandomSelector, "high_loss": HighLossSelector}


def make_selector(name: str, **kwargs) -> BatchSelector:
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r} (known: {', '.join(SELECTORS)})")
    return SELECTORS[name](**kwargs)
