"""Fast-dLLM's no-cache Dream generate with ``alg=confidence_threshold`` (Wu et al. 2025; its
``dream/model/generation_utils.py``, ``_sample``): the threshold rule under a per-step budget.

With m masked in the block at its start and s = steps per block, each step may commit at most
``n + left`` tokens (n = m / s, ``left`` the budget the previous step rejected): of the ``n + left`` most
confident masked positions, the top-1 always and every other with c >= tau; what is rejected carries over.
After the s-th step the budget is only the carried one, and the block runs on until nothing is masked (the
reference adds a step for every last step that rejects something: the same forwards). With one block over the
whole answer (``block_length = gen_length``, Dream's own layout) and no cache this is the reference; with
``s = 1`` it is ``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unmask.decoding.policies.base import (
    CommitPolicy,
    Knob,
    PolicyState,
    StepContext,
    commit_top_n,
    register,
    sorted_confidence,
)
from unmask.decoding.policies.threshold import in_unit_interval

BUDGET = 32  # the default budget per step: Fast-dLLM's Dream eval decodes 256 tokens in 8 steps


@register
@dataclass
class ThresholdBudget(CommitPolicy):
    """The threshold rule (top-1 and every c_i >= tau) among the step's budget of most confident positions;
    rejected budget carries to the next step (module docstring).

    Knob ``threshold``: tau in (0, 1] (default 0.9); option ``steps``: the nominal forwards in all, a multiple
    of the number of blocks whose per-block count divides block_length (default: a budget of 32 per step).
    """

    tau: float = 0.9
    nominal: int = 8  # nominal steps of a block (not a fixed schedule: the block runs on until it is decoded)
    name = "threshold_budget"
    knob = Knob("threshold", float, 0.9, "in (0, 1]", in_unit_interval,
                "threshold_budget: tau in (0, 1] (default 0.9)")
    options = (Knob("steps", int, None, "> 0 (a multiple of the number of blocks)", lambda v: v > 0,
                    "threshold_budget: nominal forwards in all (default: a budget of 32 tokens per step)"),)
    uses_context = True

    def __post_init__(self) -> None:
        self.tau = self.knob.parse(self.tau, self.name)
        if isinstance(self.nominal, bool) or not isinstance(self.nominal, int) or self.nominal < 1:
            raise ValueError(f"threshold_budget steps per block must be a positive integer, got {self.nominal!r}")

    @classmethod
    def from_knob(cls, value: float | None, gen_length: int | None = None, block_length: int | None = None,
                  steps: int | None = None) -> ThresholdBudget:
        if gen_length is None or block_length is None:
            raise ValueError("policy 'threshold_budget' needs gen_length and block_length to place its steps")
        num_blocks = gen_length // block_length
        if steps is None:
            steps = num_blocks * max(1, block_length // BUDGET)
        if steps % num_blocks or block_length % (steps // num_blocks):
            raise ValueError(f"threshold_budget steps={steps} must be a multiple of the number of blocks "
                             f"({num_blocks}) whose steps per block divide block_length {block_length} (the "
                             f"reference's budget: masked / steps)")
        return cls(cls.knob.default if value is None else value, steps // num_blocks)

    def allocate_state(self, slots: int, block_length: int, vocab: int, device: torch.device,
                       dtype: torch.dtype) -> PolicyState:
        longs = {"dtype": torch.long, "device": device}
        return PolicyState({"budget": torch.full((slots,), -1, **longs), "left": torch.zeros(slots, **longs)},
                           {"budget": -1, "left": 0})

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None, context: StepContext) -> torch.Tensor:
        state = context.state
        values, order, m = sorted_confidence(confidence, masked)
        state.budget.copy_(torch.where(state.budget < 0, m // self.nominal, state.budget))  # at the block's start
        i = torch.as_tensor(step, device=masked.device).reshape(-1)
        current = (torch.where(i < self.nominal, state.budget, 0) + state.left).clamp(1)
        ranks = torch.arange(values.shape[-1], device=values.device)
        passing = ((values >= self.tau) & (ranks < current[:, None]) & (ranks < m[:, None])).sum(dim=-1)
        count = passing.clamp(min=1)  # sorted: the top-1 and the passing ones are a prefix
        state.left.copy_(torch.where(m > 0, (current - count).clamp(min=0), state.left))
        return commit_top_n(order, count, masked)
