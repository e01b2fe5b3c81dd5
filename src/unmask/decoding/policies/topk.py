"""LLaDA's baseline, low-confidence remasking (Nie et al. 2025, ``generate.py``): a fixed budget per step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.decoding.policies.base import CommitPolicy, Knob, commit_top_n, register, sorted_confidence


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
        if isinstance(self.steps_per_block, bool) or not isinstance(self.steps_per_block, int):
            raise ValueError(f"steps per block must be an integer, got {self.steps_per_block!r}")
        if self.steps_per_block < 1:
            raise ValueError(f"steps per block must be >= 1, got {self.steps_per_block}")

    @classmethod
    def from_knob(cls, value: int | None, gen_length: int | None = None, block_length: int | None = None) -> TopK:
        if gen_length is None or block_length is None:
            raise ValueError("policy 'topk' needs gen_length and block_length to place its steps")
        num_blocks = gen_length // block_length
        steps = gen_length if value is None else value
        if steps <= 0 or steps % num_blocks:
            raise ValueError(f"steps={steps} must be a positive multiple of the number of blocks ({num_blocks})")
        if steps > gen_length:  # a step commits at least one token
            raise ValueError(f"steps={steps} exceeds gen_length={gen_length} (at most one step per token)")
        return cls(steps // num_blocks)

    def start_block(self, masked: torch.Tensor) -> torch.Tensor:
        return num_transfer_tokens(masked.sum(dim=-1), self.steps_per_block)

    def __call__(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor, schedule: torch.Tensor
    ) -> torch.Tensor:
        _, order, _ = sorted_confidence(confidence, masked)
        step = torch.as_tensor(step, device=schedule.device)
        column = step.clamp(max=self.steps_per_block - 1).expand(schedule.shape[0], 1)  # the loop stops at the last
        return commit_top_n(order, schedule.gather(1, column).squeeze(1), masked)
