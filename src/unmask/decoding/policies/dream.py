"""Dream's step schedule (Ye et al. 2025, "Dream 7B"; ``diffusion_generate``, ``alg`` = maskgit_plus,
topk_margin or entropy: the scorer's confidence, margin or entropy; ``alg_temp``: the positions drawn instead
of taken), its ``alg="origin"`` (every masked position unmasked with probability 1 - s/t), and the variant of
Fast-dLLM's cached Dream generate (``generation_utils_block.py``, ``alg=entropy``) that decodes a block's first
column at its refresh."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from unmask.decoding.policies.base import (
    CommitPolicy,
    Knob,
    StepContext,
    check_steps_per_block,
    commit_scheduled,
    commit_top_n,
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
    the k_i highest-confidence masked positions, or with ``alg_temp`` > 0 k_i positions drawn without
    replacement from softmax(c / alg_temp) over the masked ones (Dream's ``torch.multinomial``; drawn here as
    the top k_i of c / alg_temp + Gumbel noise, the same distribution). With one block (block_length =
    gen_length) and no cache this is Dream's ``diffusion_generate``. A step may commit nothing (Dream's own
    behaviour).

    Knob ``steps``: forwards in all (default ``gen_length``), a multiple of the number of blocks; option
    ``alg_temp`` >= 0 (default 0: the top k_i).
    """

    steps_per_block: int
    alg_temp: float = 0.0
    name = "dream"
    knob = Knob("steps", int, None, "> 0 (a multiple of the number of blocks)", lambda v: v > 0,
                "dream: forwards in all (default gen_length)")
    options = (Knob("alg_temp", float, 0.0, "a finite number >= 0", lambda v: v >= 0 and math.isfinite(v),
                    "dream: temperature of the positions drawn (0: the most confident)"),)
    lead: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_steps_per_block(self.steps_per_block)
        self.alg_temp = self.options[0].parse(self.alg_temp, self.name)

    @property
    def uses_context(self) -> bool:  # type: ignore[override]
        return self.alg_temp > 0

    @property
    def needs_uniform(self) -> bool:  # type: ignore[override]
        return self.alg_temp > 0

    @classmethod
    def from_knob(cls, value: int | None, gen_length: int | None = None, block_length: int | None = None,
                  alg_temp: float = 0.0) -> Dream:
        steps, num_blocks = schedule_steps(cls.name, value, gen_length, block_length)
        return cls(steps // num_blocks, alg_temp)

    def start_block(self, masked: torch.Tensor) -> torch.Tensor:
        return dream_schedule(masked.sum(dim=-1), self.steps_per_block, lead=self.lead)

    def __call__(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor, schedule: torch.Tensor,
        context: StepContext | None = None,
    ) -> torch.Tensor:
        step = torch.as_tensor(step, device=schedule.device)
        if self.alg_temp > 0:  # Gumbel top-k: k draws without replacement from softmax(c / alg_temp)
            gumbel = -torch.log(-torch.log(context.uniform.clamp(min=torch.finfo(torch.float64).tiny)))
            keys = torch.where(masked, confidence / self.alg_temp + gumbel, -torch.inf)
            column = step.clamp(max=self.steps_per_block - 1).expand(schedule.shape[0], 1)
            order = keys.sort(dim=-1, descending=True, stable=True).indices
            commit = commit_top_n(order, schedule.gather(1, column).squeeze(1), masked)
        else:
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
    options = (Knob("alg_temp", float, 0.0, "a finite number >= 0", lambda v: v >= 0 and math.isfinite(v),
                    "dream_lead: temperature of the positions drawn (0: the most confident)"),)
    lead: ClassVar[bool] = True


@register
@dataclass
class DreamOrigin(CommitPolicy):
    """Dream's ``alg="origin"``: with t = linspace(1, eps, S + 1) (float32) over the block's S steps, step i
    unmasks each masked position on its own with probability 1 - t_{i+1} / t_i (the last step: all), the
    candidate from the scorer (Dream: ``--confidence-from sampling`` with its temperature, top-p, top-k). A step
    may unmask nothing. The reference draws one U(0, 1) per masked position of the whole batch in order; here
    one per block position and row (the same distribution, another stream).

    Knob ``steps``: forwards in all (default ``gen_length``), a multiple of the number of blocks.
    """

    steps_per_block: int
    name = "dream_origin"
    knob = Knob("steps", int, None, "> 0 (a multiple of the number of blocks)", lambda v: v > 0,
                "dream_origin: forwards in all (default gen_length)")
    uses_context = True
    needs_uniform = True

    def __post_init__(self) -> None:
        check_steps_per_block(self.steps_per_block)

    @classmethod
    def from_knob(cls, value: int | None, gen_length: int | None = None, block_length: int | None = None
                  ) -> DreamOrigin:
        steps, num_blocks = schedule_steps(cls.name, value, gen_length, block_length)
        return cls(steps // num_blocks)

    def start_block(self, masked: torch.Tensor) -> torch.Tensor:
        """No counts to plan (each step draws): the fixed schedule's steps, as zeros."""
        return torch.zeros((masked.shape[0], self.steps_per_block), dtype=torch.long, device=masked.device)

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: torch.Tensor, context: StepContext) -> torch.Tensor:
        step = torch.as_tensor(step, device=masked.device).reshape(-1, 1).clamp(max=self.steps_per_block - 1)
        t = torch.linspace(1, EPS, self.steps_per_block + 1, device=masked.device)  # float32, as the reference
        transfer = torch.cat([1 - t[1:-1] / t[:-2], torch.ones_like(t[:1])])  # [S]; the last step: all
        return masked & (context.uniform < transfer[step])
