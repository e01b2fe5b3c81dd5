"""EB-Sampler: entropy-bounded unmasking (Ben-Hamu et al. 2025, arXiv 2505.24857, Eq. 2 and Alg. 1; SGLang's
``dllm/algorithm/eb_sampling.py``).

Sort the block's masked positions by an error proxy, most certain first: the scorer's confidence (the
paper's ``confidence`` proxy, its best for LLaDA; ``--scorer entropy`` gives the ``entropy`` proxy, its best
for Dream and SGLang's only one; ``margin`` the third). With H_l = -sum_v p_l(v) log p_l(v) the entropy (nats,
float64) of the softmax of the scored logits (credit fused), commit the longest prefix U of that order with

    sum_{l in U} H_l - max_{l in U} H_l <= gamma,

a bound on the dependence error of committing U at once. At least one token per step (|U| = 1 gives 0);
gamma = 0 is one token per step (up to tokens of zero entropy), gamma = inf the whole block. Ties in the order
go to the lower position (the references' sorts leave them unspecified; only which tied tokens, never how
many, can differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from unmask.decoding.policies.base import CommitPolicy, Knob, StepContext, commit_top_n, register, sorted_confidence


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p_v log p_v of softmax(logits) over the last dim, float64, 0 log 0 = 0."""
    log_p = torch.log_softmax(logits.double(), dim=-1)
    return -torch.nan_to_num(log_p.exp() * log_p).sum(-1)


@register
@dataclass
class EntropyBounded(CommitPolicy):
    """Commit the longest confidence-ordered prefix whose entropies sum to at most gamma beyond their maximum.

    Knob ``gamma``: the entropy budget >= 0 (default 0.15, SGLang's; the paper sweeps 0.001-1.5).
    """

    gamma: float = 0.15
    name = "eb"
    knob = Knob("gamma", float, 0.15, "a finite number >= 0", lambda v: v >= 0 and math.isfinite(v),
                "eb: entropy budget gamma >= 0 (default 0.15)")
    uses_context = True

    def __post_init__(self) -> None:
        self.gamma = self.knob.parse(self.gamma, self.name)

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None, context: StepContext) -> torch.Tensor:
        _, order, n_masked = sorted_confidence(confidence, masked)
        h = entropy(context.logits).gather(-1, order)  # in commit order; unmasked positions sort last
        spent = h.cumsum(dim=-1) - h.cummax(dim=-1).values
        ranks = torch.arange(order.shape[-1], device=order.device)
        within = (spent <= self.gamma) & (ranks < n_masked[:, None])
        count = within.long().cumprod(dim=-1).sum(dim=-1).clamp(min=1)  # the prefix: spent never decreases
        return commit_top_n(order, count, masked)
