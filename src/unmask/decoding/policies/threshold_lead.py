"""Fast-dLLM's cached Dream generate with ``alg=confidence_threshold`` (Wu et al. 2025; its
``dream/model/generation_utils_block.py``): a block's first column at its refresh, then the threshold rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.decoding.policies.base import CommitPolicy, Knob, register
from unmask.decoding.policies.dream import leftmost_masked
from unmask.decoding.policies.threshold import Threshold, in_unit_interval


@register
@dataclass
class ThresholdLead(CommitPolicy):
    """Step 0 of a block (the refresh) commits its leftmost masked column; every later step commits
    each masked i with c_i >= tau and the top-1 always (``threshold``). Default tau = 0.9.

    Fast-dLLM decodes a Dream block's first column this way because its prediction comes from the
    column before the block (Dream's shift), which a cached window does not recompute.
    """

    tau: float = 0.9
    name = "threshold_lead"
    knob = Knob("threshold", float, 0.9, "in (0, 1]", in_unit_interval,
                "threshold_lead: tau in (0, 1] after the block's first column (default 0.9)")

    def __post_init__(self) -> None:
        self.tau = self.knob.parse(self.tau, self.name)

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None) -> torch.Tensor:
        rule = Threshold(self.tau)(confidence, masked, step, schedule)
        return torch.where(torch.as_tensor(step, device=masked.device) == 0, leftmost_masked(masked), rule)
