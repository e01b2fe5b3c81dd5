"""Dream's step schedule (Ye et al. 2025, "Dream 7B"; ``diffusion_generate``, ``alg`` = maskgit_plus,
topk_margin or entropy: the scorer's confidence, margin or entropy), and the variant of Fast-dLLM's cached
Dream generate (``generation_utils_block.py``, ``alg=entropy``) that decodes a block's first column at
its refresh."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from unmask.decoding.policies.base import (
    CommitPolicy,
    Knob,
    check_steps_per_block,
    commit_scheduled,
    register,
    schedule_steps,
)

EPS = 1e-3  # Dream's generation_config ``eps``: the last timestep


def dream_schedule(masked_count: torch.Tensor, steps: int, eps: float = EPS, lead: bool = False) -> torch.Tensor:
    """Tokens per step [B, steps] for a block with ``masked_count`` [B] masked positions.

    Timesteps t = linspace(1, eps, steps + 1) in float32; with n_i the count still masked before step i,
    step i < steps - 1 commits floor(n_i * (1 - t_{i+1} / t_i)) (float32, as the reference: it can be 0)
    and the last step all n_i. ``lead``: step 0 commits one token (the block's first column, decoded at
    the refresh) and the formula runs from step 1, as Fast-dLLM's cached Dream generate.
    """
    t = torch.linspace(1, eps, steps + 1, device=masked_count.device)
    left = masked_count.clone()
    counts = []
    for i in range(steps):
        if i == steps - 1:
            k = left
        elif lead and i == 0:
            k = left.clamp(max=1)
        else:
            k = (left.float() * (1 - t[i + 1] / t[i])).long()
        counts.append(k)
        left = left - k
    return torch.stack(counts, dim=1)


def leftmost_masked(masked: torch.Tensor) -> torch.Tensor:
    """The first masked position of each row (nothing where none is masked)."""
    return masked & (masked.long().cumsum(dim=-1) == 1)


@register
@dataclass
class Dream(CommitPolicy):
    """Dream's schedule (``dream_schedule``) over ``steps_per_block`` forwards per block; step i commits
    the k_i highest-confidence masked positions. With one block (block_length = gen_length) and no
    cache this is Dream's ``diffusion_generate``. A step may commit nothing (Dream's own behaviour).

    Knob ``steps``: forwards in all (default ``gen_length``), a multiple of the number of blocks.
    """

    steps_per_block: int
    name = "dream"
    knob = Knob("steps", int, None, "> 0 (a multiple of the number of blocks)", lambda v: v > 0,
                "dream: forwards in all (default gen_length)")
    lead: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_steps_per_block(self.steps_per_block)

    @classmethod
    def from_knob(cls, value: int | None, gen_length: int | None = None, block_length: int | None = None) -> Dream:
        steps, num_blocks = schedule_steps(cls.name, value, gen_length, block_length)
        return cls(steps // num_blocks)

    def start_block(self, masked: torch.Tensor) -> torch.Tensor:
        return dream_schedule(masked.sum(dim=-1), self.steps_per_block, lead=self.lead)

    def __call__(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor, schedule: torch.Tensor
    ) -> torch.Tensor:
        step = torch.as_tensor(step, device=schedule.device)
        commit = commit_scheduled(confidence, masked, step, schedule, self.steps_per_block)
        if self.lead:
            commit = torch.where(step == 0, leftmost_masked(masked), commit)
        return commit


@register
@dataclass
class DreamLead(Dream):
    """Fast-dLLM's cached Dream generate with ``alg=entropy`` (use the ``entropy`` scorer): the block's
    first step (the refresh) commits its leftmost masked column, then ``dream_schedule`` from step 1.

    Knob ``steps``: forwards in all (default ``gen_length``), a multiple of the number of blocks.
    """

    name = "dream_lead"
    knob = Knob("steps", int, None, "> 0 (a multiple of the number of blocks)", lambda v: v > 0,
                "dream_lead: forwards in all (default gen_length)")
    lead: ClassVar[bool] = True
