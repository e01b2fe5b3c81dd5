"""Fast-dLLM factor-based parallel decoding (Wu et al. 2025, Thm. 1 and Sec. 3.2; ``get_transfer_index_dynamic``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from unmask.decoding.policies.base import CommitPolicy, Knob, commit_top_n, register, sorted_confidence

FACTOR_KNOB = Knob("factor", float, 1.0, "> 0", lambda v: math.isfinite(v) and v > 0,
                   "factor: f > 0 (default 1.0); frechet: the budget 1 - delta")


@register
@dataclass
class Factor(CommitPolicy):
    """Commit the n highest, n the largest count with (m + 1)(1 - c_(m)) <= f for every m <= n
    (i.e. c_(m) >= 1 - f / (m + 1)); top-1 always.

    The paper writes "< f"; the reference code tests ``c < 1 - f/(m+1)`` to stop, i.e. "<= f",
    which we follow. Reference quirk, kept by default (``reference_quirk``): when only the last
    masked token fails the test, the code still commits all of them.
    """

    f: float = 1.0
    reference_quirk: bool = True
    name = "factor"
    knob = FACTOR_KNOB

    def __post_init__(self) -> None:
        self.f = self.knob.parse(self.f, self.name)

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None) -> torch.Tensor:
        values, order, count = sorted_confidence(confidence, masked)
        m = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=values.dtype)
        passes = values >= 1 - self.f / (m + 1)
        passes[:, 0] = True
        n = passes.long().cumprod(dim=-1).sum(dim=-1).minimum(count)
        if self.reference_quirk:
            n = torch.where(n == count - 1, count, n)
        return commit_top_n(order, n, masked)
