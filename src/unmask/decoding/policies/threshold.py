"""Fast-dLLM threshold parallel decoding (Wu et al. 2025, Sec. 3.2; ``get_transfer_index``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.decoding.policies.base import CommitPolicy, Knob, register


def in_unit_interval(value: float) -> bool:
    return 0.0 < value <= 1.0


@register
@dataclass
class Threshold(CommitPolicy):
    """Commit every masked i with c_i >= tau, and the top-1 always.

    The paper writes c_i > tau; the reference code keeps c_i >= tau (it drops ``c < threshold``),
    and that is what we implement. Default tau = 0.9.
    """

    tau: float = 0.9
    name = "threshold"
    knob = Knob("threshold", float, 0.9, "in (0, 1]", in_unit_interval, "threshold: tau in (0, 1] (default 0.9)")

    def __post_init__(self) -> None:
        self.tau = self.knob.parse(self.tau, self.name)

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None) -> torch.Tensor:
        top1 = torch.zeros_like(masked).scatter(-1, confidence.argmax(dim=-1, keepdim=True), True)
        return masked & ((confidence >= self.tau) | top1)
