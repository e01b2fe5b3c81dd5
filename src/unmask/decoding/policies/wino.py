"""WINO: wide-in, narrow-out revocable decoding (Hong et al. 2025, arXiv 2507.18578; code Feng-Hong/WINO-DLLM,
``LLaDA/decoding.py``, ``decoding_wino``).

Each forward also runs a *shadow* block: ``block_length`` masks at the current block's positions, which the
canvas cannot see and whose position i sees everything but the block's column i (a leave-one-out check of
the token drafted there). Per step, over the block:

- draft (wide in): every masked i with c_i > tau1, at most clamp(floor(0.7 m), 5, 20) of them (the most
  confident; m = masked in the block), and the top-1 if none passes;
- verify (narrow out), only when more than one token is drafted: a token drafted in an earlier step goes
  back to mask where its shadow probability p_shadow_i(token) < tau2; if that is as many as the previous
  step drafted (a, initially 30), only the a - 1 least confident go.

A block ends when none of it is masked (its last drafts are not verified); earlier blocks are fixed. The
re-mask cap keeps a block within ``block_length`` forwards. The shadow block needs a forward over the whole
canvas: WINO runs without a cache (its reference), on LLaDA-architecture models.
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

FIRST_ACCEPT = 30  # the reference's initial "previous draft count"


@register
@dataclass
class Wino(CommitPolicy):
    """Draft at a low threshold, re-mask drafted tokens a leave-one-out shadow block doubts (module docstring).

    Knob ``threshold``: the draft threshold tau1 in (0, 1] (default 0.6, the reference's; its scripts: GSM8K
    0.6, MATH and HumanEval 0.7, MBPP 0.8); option ``verify``: tau2 in (0, 1] (default 0.9).
    """

    tau1: float = 0.6
    verify: float = 0.9
    name = "wino"
    knob = Knob("threshold", float, 0.6, "in (0, 1]", in_unit_interval,
                "wino: draft threshold tau1 in (0, 1] (default 0.6)")
    options = (Knob("verify", float, 0.9, "in (0, 1]", in_unit_interval,
                    "wino: verification threshold tau2 in (0, 1] (default 0.9)"),)
    uses_context = True
    shadow_block = True  # the step adds the leave-one-out shadow block (its logits: StepContext.next_logits)
    revocable = True  # the call returns (commit, remask)

    def __post_init__(self) -> None:
        self.tau1 = self.knob.parse(self.tau1, self.name)
        self.verify = self.options[0].parse(self.verify, self.name)

    def allocate_state(self, slots: int, block_length: int, vocab: int, device: torch.device,
                       dtype: torch.dtype) -> PolicyState:
        return PolicyState({"last_accept": torch.full((slots,), FIRST_ACCEPT, dtype=torch.long, device=device)},
                           {"last_accept": FIRST_ACCEPT})

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None, context: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        _, order, m = sorted_confidence(confidence, masked)
        max_accept = (m.double() * 0.7).floor().long().clamp(5, 20)
        passing = (masked & (confidence > self.tau1)).sum(dim=-1)
        count = torch.where(passing > max_accept, max_accept, passing.clamp(min=1))
        draft = commit_top_n(order, count, masked)  # the passing ones are the most confident
        # narrow out: the tokens drafted before this step (the block's unmasked columns), by their shadow check
        drafted = context.in_block & ~masked
        shadow = torch.softmax(context.next_logits.double(), dim=-1)
        verified = shadow.gather(-1, context.current.clamp(max=shadow.shape[-1] - 1)[..., None]).squeeze(-1)
        doubt = torch.where(drafted, verified, torch.inf)
        doubtful = drafted & (verified < self.verify)
        last = context.state.last_accept
        n_doubt = doubtful.sum(dim=-1)
        cap = torch.where(n_doubt >= last, last - 1, n_doubt).clamp(min=0)
        _, doubt_order = doubt.sort(dim=-1, stable=True)  # least confident first
        remask = commit_top_n(doubt_order, cap, doubtful) & (count > 1)[:, None]
        last.copy_(torch.where(masked.any(dim=-1), count, last))
        return draft, remask
