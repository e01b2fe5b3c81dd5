"""KLASS: KL-adaptive stability sampling (Kim et al. 2025, arXiv 2511.05664; code shkim0116/KLASS,
``src/model/llada_klass.py``).

Per step and masked position i of the block, with p_t the softmax (float64) of this forward's logits and
p_{t-1} the previous forward's at the same position:

    KL_t(i) = sum_v p_t(v) [log(p_t(v) + 1e-12) - log(p_{t-1}(v) + 1e-12)]        (KL(p_t || p_{t-1}))
    ready(i) = c_i > tau  and  KL_s(i) < eps for the last k forwards s  and  step >= k - 1

Every ready position is committed; if none is, the step falls back to LLaDA's low-confidence rule: the
``q_step`` most confident masked positions, q = LLaDA's ``get_num_transfer_tokens`` quota of ``steps``
forwards in all (default ``gen_length``: one token per step). Committed tokens are never re-masked.

The history runs across a block boundary as in the reference: the first forward of a block compares with
the last forward of the previous block at the new block's positions. Without a cache every column goes
through the model, so that forward's next-block logits are kept (``wants_next_block``) and the rule is the
reference's exactly; with a cache they are not computed, and a block's first KL counts as not stable (its
commits can then start one step later). Past ``steps`` forwards in a block (where the reference would leave
masks behind: a ready set smaller than the quota) the fallback keeps committing at least one token per step.
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
    schedule_steps,
    sorted_confidence,
)
from unmask.decoding.policies.threshold import in_unit_interval
from unmask.decoding.policies.topk import num_transfer_tokens

EPS = 1e-12  # the reference's floor inside the logarithms


@register
@dataclass
class KLASS(CommitPolicy):
    """Commit the masked positions whose confidence exceeds tau and whose KL divergence between consecutive
    forwards stayed below ``kl`` for the last ``history`` forwards; else LLaDA's quota (module docstring).

    Knob ``threshold``: tau in (0, 1] (default 0.9); options ``kl`` (eps > 0, default 0.01), ``history``
    (k >= 1, default 2), ``steps`` (the fallback's forwards in all, default ``gen_length``).
    """

    tau: float = 0.9
    kl: float = 0.01
    history: int = 2
    steps_per_fallback: int = 32  # forwards per block of the fallback quota
    name = "klass"
    knob = Knob("threshold", float, 0.9, "in (0, 1]", in_unit_interval,
                "klass: confidence bound tau in (0, 1] (default 0.9)")
    options = (
        Knob("kl", float, 0.01, "in (0, 1]", in_unit_interval, "klass: KL bound eps in (0, 1] (default 0.01)"),
        Knob("history", int, 2, "in [1, 64]", lambda v: 1 <= v <= 64,
             "klass: forwards the KL must stay below eps (default 2)"),
        Knob("steps", int, None, "> 0 (a multiple of the number of blocks)", lambda v: v > 0,
             "klass: forwards in all of the fallback quota (default gen_length)"),
    )
    uses_context = True
    wants_next_block = True

    def __post_init__(self) -> None:
        self.tau = self.knob.parse(self.tau, self.name)
        self.kl = self.options[0].parse(self.kl, self.name)
        self.history = self.options[1].parse(self.history, self.name)
        if isinstance(self.steps_per_fallback, bool) or not isinstance(self.steps_per_fallback, int) \
                or self.steps_per_fallback < 1:
            raise ValueError(f"klass steps per block must be a positive integer, got {self.steps_per_fallback!r}")

    @classmethod
    def from_knob(cls, value: float | None, gen_length: int | None = None, block_length: int | None = None,
                  kl: float = 0.01, history: int = 2, steps: int | None = None) -> KLASS:
        total, num_blocks = schedule_steps(cls.name, steps, gen_length, block_length)
        return cls(cls.knob.default if value is None else value, kl, history, total // num_blocks)

    def allocate_state(self, slots: int, block_length: int, vocab: int, device: torch.device,
                       dtype: torch.dtype) -> PolicyState:
        probs = torch.float64 if dtype == torch.float64 else torch.float32
        buffers = {
            "prev": torch.zeros((slots, block_length, vocab), dtype=probs, device=device),
            "prev_valid": torch.zeros(slots, dtype=torch.bool, device=device),
            "next_prev": torch.zeros((slots, block_length, vocab), dtype=probs, device=device),
            "next_valid": torch.zeros(slots, dtype=torch.bool, device=device),
            "kl_history": torch.full((slots, block_length, self.history), torch.inf, dtype=torch.float64,
                                     device=device),
        }
        fills = {"prev": 0.0, "prev_valid": False, "next_prev": 0.0, "next_valid": False, "kl_history": torch.inf}
        return PolicyState(buffers, fills)

    def advance_state(self, state: PolicyState, rows: torch.Tensor) -> None:
        """A new block: its previous distribution is the one kept from the last forward (if it was computed)."""
        state.prev.copy_(torch.where(rows[:, None, None], state.next_prev, state.prev))
        state.prev_valid.copy_(torch.where(rows, state.next_valid, state.prev_valid))
        state.next_valid.masked_fill_(rows, False)
        state.kl_history.masked_fill_(rows[:, None, None], torch.inf)

    @property
    def schedule_length(self) -> int:
        return self.steps_per_fallback

    def start_block(self, masked: torch.Tensor) -> torch.Tensor:
        """The fallback's quota: LLaDA's ``num_transfer_tokens`` of the block's masked count."""
        return num_transfer_tokens(masked.sum(dim=-1), self.steps_per_fallback)

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: torch.Tensor, context: StepContext) -> torch.Tensor:
        state = context.state
        p = torch.softmax(context.logits.double(), dim=-1)
        log_p = torch.log(p + EPS)
        kl = (p * (log_p - torch.log(state.prev.double() + EPS))).sum(-1)
        kl = torch.where(state.prev_valid[:, None], kl, torch.inf)
        history = torch.cat([state.kl_history[..., 1:], kl[..., None]], dim=-1)
        state.kl_history.copy_(history)
        state.prev.copy_(p)
        state.prev_valid.fill_(True)
        if context.next_logits is not None:
            state.next_prev.copy_(torch.softmax(context.next_logits.double(), dim=-1))
            state.next_valid.fill_(True)
        step = torch.as_tensor(step, device=masked.device).reshape(-1, 1)
        stable = (history < self.kl).all(dim=-1) & (step >= self.history - 1)
        ready = masked & stable & (confidence > self.tau)
        # the fallback: LLaDA's quota of this step (past the reference's steps: at least one token)
        column = step.clamp(max=self.steps_per_fallback - 1).expand(schedule.shape[0], 1)
        quota = schedule.gather(1, column).squeeze(1).clamp(min=1)
        _, order, _ = sorted_confidence(confidence, masked)
        fallback = commit_top_n(order, quota, masked)
        return torch.where(ready.any(dim=-1, keepdim=True), ready, fallback)
