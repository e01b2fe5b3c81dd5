"""Scorers: logits [B, L, V] -> (candidate token [B, L], confidence [B, L]).

The candidate is the token that would be committed at a position; the confidence is what the commit
policy ranks and thresholds. Probabilities are computed in float32 (float64 if the logits are).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

SCORER_NAMES: tuple[str, ...] = ("confidence", "margin", "entropy", "random")


def _float(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype == torch.float64 else logits.float()


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """LLaDA's ``add_gumbel_noise`` + argmax, in float64.

    The reference takes argmax_v exp(l_v) / (-log u_v)^T with u ~ U(0, 1); we take the equal
    argmax_v l_v - T log(-log u_v), which cannot overflow. T = 0 is plain argmax.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return (logits.double() - temperature * torch.log(-torch.log(u))).argmax(dim=-1)


@dataclass
class Scorer:
    """Candidate by (Gumbel-)argmax; confidence by ``kind``:

    - ``confidence``: p(candidate) under softmax of the raw logits (LLaDA ``low_confidence``).
    - ``margin``: p_top1 - p_top2.
    - ``entropy``: negative entropy sum_v p_v log p_v (higher = more certain).
    - ``random``: U(0, 1) (LLaDA ``remasking='random'``).

    ``confidence_exclude`` lists token ids whose logits are set to -inf for the confidence only,
    after the candidate is chosen: LLaDA's ``confidence_eos_eot_inf`` (whose reference line only
    affects end-of-turn: a candidate equal to it gets confidence 0).
    """

    kind: str = "confidence"
    temperature: float = 0.0
    generator: torch.Generator | None = None
    confidence_exclude: Sequence[int] = ()

    def __post_init__(self) -> None:
        if self.kind not in SCORER_NAMES:
            raise ValueError(f"unknown scorer {self.kind!r} (allowed: {', '.join(SCORER_NAMES)})")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    def __call__(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        candidates = gumbel_argmax(logits, self.temperature, self.generator)
        if self.kind == "random":
            shape, device = candidates.shape, candidates.device
            return candidates, torch.rand(shape, device=device, generator=self.generator)
        logits = _float(logits)
        if self.confidence_exclude:
            logits = logits.clone()
            logits[..., list(self.confidence_exclude)] = -torch.inf
        if self.kind == "confidence":  # p_c = exp(l_c - logsumexp(l)) without materialising all of p
            chosen = logits.gather(-1, candidates[..., None]).squeeze(-1)
            return candidates, (chosen - torch.logsumexp(logits, dim=-1)).exp()
        log_probs = torch.log_softmax(logits, dim=-1)
        if self.kind == "margin":
            top2 = log_probs.topk(2, dim=-1).values.exp()
            return candidates, top2[..., 0] - top2[..., 1]
        probs = log_probs.exp()
        return candidates, torch.nan_to_num(probs * log_probs).sum(-1)  # 0 * log 0 = 0
