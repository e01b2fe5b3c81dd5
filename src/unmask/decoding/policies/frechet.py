"""Fréchet profile commit sets (Fast-dLLM++, Kasa et al. 2026, arXiv 2606.02955;
``get_transfer_index_frechet_profile``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.decoding.policies.base import (
    CommitPolicy,
    Knob,
    commit_top_n,
    finite_number,
    register,
    sorted_confidence,
)
from unmask.decoding.policies.factor import FACTOR_KNOB


@register
@dataclass
class Frechet(CommitPolicy):
    """By the Fréchet inequality P(top n all correct) >= L_n = sum_{j<=n} c_(j) - (n - 1); the best
    competitor of the n-th token has probability at most U_n = 1 - c_(n). Commit the largest n with
    G_n = L_n - U_n = sum_{j<=n} c_(j) - n + c_(n) > delta (strict), top-1 always. G_n decreases in n,
    so the admitted set is a prefix. With equal confidences c = 1 - e, G_n > delta <=> (n + 1) e < 1 - delta:
    Fast-dLLM's factor rule with f = 1 - delta (without that rule's end-of-list quirk); otherwise G_n
    exceeds it by the heterogeneity bonus sum_{j<n}(c_(j) - c_(n)) >= 0. Default delta = 0.25; the
    option ``factor`` f sets delta = 1 - f.
    """

    margin: float = 0.25
    name = "frechet"
    knob = Knob("margin", float, 0.25, "a finite number", finite_number,
                "frechet: margin delta (default 0.25)",
                aliases={"factor": lambda f: 1.0 - FACTOR_KNOB.parse(f, "frechet")})

    def __post_init__(self) -> None:
        self.margin = self.knob.parse(self.margin, self.name)

    @classmethod
    def from_factor(cls, f: float) -> Frechet:
        """The Fréchet rule with the budget of Fast-dLLM's factor f (delta = 1 - f)."""
        return cls(margin=1.0 - f)

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None) -> torch.Tensor:
        values, order, count = sorted_confidence(confidence, masked)
        ranks = torch.arange(values.shape[-1], device=values.device)
        valid = ranks[None, :] < count[:, None]
        finite = torch.where(valid, values, torch.zeros_like(values))
        score = finite.cumsum(dim=-1) - ranks.to(values.dtype) - (1 - finite)  # L_n - U_n, n = rank + 1
        admitted = (score > self.margin) & valid
        admitted[:, 0] = True  # the reference counts admitted n (not a prefix scan); G_n is monotone anyway
        n = admitted.sum(dim=-1).minimum(count)
        return commit_top_n(order, n, masked)
