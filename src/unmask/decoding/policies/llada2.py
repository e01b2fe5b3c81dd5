"""LLaDA2's samplers: LLaDA2.0's (inclusionAI, ``modeling_llada2_moe.py``, ``generate``; dInfer and SGLang serve
the same rule), a threshold with a schedule beneath it, and LLaDA2.1's token editing (``LLaDA2Edit``).

With s steps per block, step i's quota is n_i = B // s + (i < B % s) (B = block_length; LLaDA's even spread,
one token per step at the default s = B). A step commits every masked position whose confidence exceeds tau
if at least n_i do, else the n_i most confident (fewer if fewer are masked). The quota sums to B, so a block
ends within s forwards. Default tau = 0.95 (the reference's).
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
from unmask.decoding.policies.topk import num_transfer_tokens


@register
@dataclass
class LLaDA2Threshold(CommitPolicy):
    """Every masked c_i > tau if at least the step's quota pass, else the quota's most confident.

    Knob ``threshold``: tau in (0, 1] (default 0.95); option ``steps``: forwards per block of the quota
    (default: block_length, one token per step).
    """

    tau: float = 0.95
    steps: int | None = None
    block_length: int = 32
    name = "llada2"
    knob = Knob("threshold", float, 0.95, "in (0, 1]", in_unit_interval, "llada2: tau in (0, 1] (default 0.95)")
    options = (Knob("steps", int, None, ">= 1 (at most block_length)", lambda v: v >= 1,
                    "llada2: forwards per block of the fallback quota (default block_length)"),)

    def __post_init__(self) -> None:
        self.tau = self.knob.parse(self.tau, self.name)
        steps = self.block_length if self.steps is None else self.steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= self.block_length:
            raise ValueError(f"llada2 steps must be an integer in [1, block_length={self.block_length}], got {steps!r}")
        self.steps = steps

    @classmethod
    def from_knob(cls, value: float | None, gen_length: int | None = None, block_length: int | None = None,
                  steps: int | None = None) -> LLaDA2Threshold:
        return cls(cls.knob.default if value is None else value, steps, block_length or 32)

    @property
    def schedule_length(self) -> int:
        return self.steps

    def start_block(self, masked: torch.Tensor) -> torch.Tensor:
        """The quota of each step: LLaDA's ``num_transfer_tokens`` of the whole block (the reference spreads
        B, not the masked count)."""
        return num_transfer_tokens(torch.full_like(masked.sum(dim=-1), self.block_length), self.steps)

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: torch.Tensor) -> torch.Tensor:
        column = torch.as_tensor(step, device=masked.device).reshape(-1, 1).clamp(max=self.steps - 1)
        quota = schedule.gather(1, column.expand(schedule.shape[0], 1)).squeeze(1)
        passing = masked & (confidence > self.tau)
        _, order, _ = sorted_confidence(confidence, masked)
        fallback = commit_top_n(order, quota, masked)
        return torch.where((passing.sum(dim=-1) >= quota)[:, None], passing, fallback)


@register
@dataclass
class LLaDA2Edit(CommitPolicy):
    """LLaDA2.1's sampler: mask-to-token and token-to-token editing (``generate`` of LLaDA2.1's
    ``modeling_llada2_moe.py``; SGLang's ``JointThreshold``). Per step of a block, with x0 the argmax and p its
    probability at every position:

    - mask to token: every masked p > tau, or the most confident masked one if none passes;
    - token to token: every decoded answer token of the block (not the prompt's, not this step's) whose argmax
      differs from it, with p > the edit threshold, is replaced by x0;
    - once nothing is masked the block runs on, edit-only, while a step edits something, at most ``post`` such
      steps (a step that edits nothing ends the block; ``post=0``: none).

    Knob ``threshold``: tau in (0, 1] (default 0.7, the quality mode; speed mode: 0.5 with ``edit=0``); options
    ``edit`` (the edit threshold in [0, 1), default 0.5) and ``post`` (edit-only steps, default 16).
    """

    tau: float = 0.7
    edit: float = 0.5
    post: int = 16
    name = "llada2_edit"
    knob = Knob("threshold", float, 0.7, "in (0, 1]", in_unit_interval, "llada2_edit: tau in (0, 1] (default 0.7)")
    options = (Knob("edit", float, 0.5, "in [0, 1)", lambda v: 0 <= v < 1,
                    "llada2_edit: edit threshold in [0, 1) (default 0.5)"),
               Knob("post", int, 16, "in [0, 4096]", lambda v: 0 <= v <= 4096,
                    "llada2_edit: edit-only steps once a block is decoded (default 16)"))
    uses_context = True
    edits = True

    def __post_init__(self) -> None:
        self.tau = self.knob.parse(self.tau, self.name)
        self.edit = self.options[0].parse(self.edit, self.name)
        self.post = self.options[1].parse(self.post, self.name)

    def allocate_state(self, slots: int, block_length: int, vocab: int, device: torch.device,
                       dtype: torch.dtype) -> PolicyState:
        return PolicyState({"hold": torch.zeros(slots, dtype=torch.bool, device=device),
                            "post_steps": torch.zeros(slots, dtype=torch.long, device=device)},
                           {"hold": False, "post_steps": 0})

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None, context: StepContext) -> torch.Tensor:
        state = context.state
        top1 = torch.zeros_like(masked).scatter(-1, confidence.argmax(dim=-1, keepdim=True), True) & masked
        fill = masked & (confidence > self.tau)
        fill = torch.where(fill.any(dim=-1, keepdim=True), fill, top1)
        edit = context.in_block & ~masked & (context.candidates != context.current) & \
            (context.probability > self.edit)
        had_masks = masked.any(dim=-1)
        # masked after this step: those not filled, and any filled or edited with the mask token itself (the
        # model may predict it; the reference writes it, and the position is masked again)
        written = fill | edit
        left = ((masked & ~written) | (written & (context.candidates == context.mask_id))).any(dim=-1)
        post = state.post_steps + (~had_masks).long()  # an edit-only step: one more (never reset in a block)
        state.post_steps.copy_(post)
        # a next step in a block with nothing masked is one more edit-only step: the reference runs it if that
        # stays within ``post`` and this step filled something or edited something
        edited = edit.any(dim=-1)
        state.hold.copy_(~left & (post < self.post) & (had_masks | edited))
        return written
