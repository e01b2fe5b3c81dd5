"""LLaDA's baseline, low-confidence remasking (Nie et al. 2025, ``generate.py``): a fixed budget per step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.decoding.policies.base import (
    CommitPolicy,
    Knob,
    check_steps_per_block,
    commit_scheduled,
    register,
    schedule_steps,
)


def num_transfer_tokens(masked_count: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's ``get_num_transfer_tokens``: [B, steps] with base = n // steps, the first n % steps steps +1."""
    base, remainder = masked_count // steps, masked_count % steps
    step_index = torch.arange(steps, device=masked_count.device)
    return base[:, None] + (step_index[None, :] < remainder[:, None]).long()


@register
@dataclass
class TopK(CommitPolicy):
    """The masked count n of a block is spread over ``steps_per_block`` steps (``num_transfer_tokens``);
    step i commits the k_i highest-confidence masked positions.

    Knob ``steps``: forwards in all (default ``gen_length``: one token per step), a multiple of the
    number of blocks; the policy holds ``steps / num_blocks`` per block.
    """

    steps_per_block: int
    name = "topk"
    knob = Knob("steps", int, None, "> 0 (a multiple of the number of blocks)", lambda v: v > 0,
                "topk: forwards in all (default gen_length: one token per step)")

    def __post_init__(self) -> None:
        check_steps_per_block(self.steps_per_block)

    @classmethod
    def from_knob(cls, value: int | None, gen_length: int | None = None, block_length: int | None = None) -> TopK:
        steps, num_blocks = schedule_steps(cls.name, value, gen_length, block_length)
        if steps > gen_length:  # a step commits at least one token
            raise ValueError(f"steps={steps} exceeds gen_length={gen_length} (at most one step per token)")
        return cls(steps // num_blocks)

    def start_block(self, masked: torch.Tensor) -> torch.Tensor:
        return num_transfer_tokens(masked.sum(dim=-1), self.steps_per_block)

    def __call__(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor, schedule: torch.Tensor
    ) -> torch.Tensor:
        return commit_scheduled(confidence, masked, step, schedule, self.steps_per_block)
