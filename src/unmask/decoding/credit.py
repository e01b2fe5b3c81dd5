"""CreditDecoding (Wang et al. 2025, arXiv 2510.06133): trace credits fused into the logits.

Per position i of the current block and token v, a credit C_i(v), reset at every new block:

    update (every model forward, before fusion, masked positions only):
        C_i(v) <- beta * C_i(v) + 1[v = argmax_i] * p_i(v)^gamma,   p_i = softmax(raw logits_i)
    fusion:
        fused_i(v) = logit_i(v) + alpha * log(1 + C_i(v))

The policy then sees the softmax/argmax of the fused logits, so a token that has been top-1 for
several steps gains confidence (and may overtake the raw argmax). An old candidate's credit just
decays when the argmax changes. Paper defaults alpha = 0.65, beta = 0.7, gamma = 0.2 (dInfer's code
uses 0.7, 0.8, 0.2). Parameter-free variant (``adaptive``): gamma = 1, alpha = beta = 1 - r, with r
the row's current mask ratio in the block.

Storage is sparse: only tokens that were top-1 at a position hold credit. By default a position has
one slot per step its block can take (``block_length``: every step commits at least one token), so
no token is ever evicted and the result equals the dense rule exactly; ``slots=k`` is an explicit
memory option that keeps k per position and evicts the smallest credit (which by then has decayed by
beta^j), which differs from the dense rule once a position sees more than k distinct top-1 tokens in a
block. This replaces dInfer's dense B x L x V buffer, and credit is updated exactly once per forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MAX_SLOTS = 1 << 16  # more than any block takes steps (a step commits at least one token)


@dataclass
class CreditConfig:
    alpha: float = 0.65
    beta: float = 0.7
    gamma: float = 0.2
    adaptive: bool = False
    slots: int | None = None  # None: one per step of a block (exact); k: at most k tokens per position

    def __post_init__(self) -> None:
        for name, allowed, check in (("alpha", "a finite number >= 0", lambda v: v >= 0),
                                     ("beta", "in [0, 1]", lambda v: 0 <= v <= 1),
                                     ("gamma", "a finite number > 0", lambda v: v > 0)):
            value = getattr(self, name)
            # NaN fails every comparison and inf is not finite: both rejected; bools and strings too
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) \
                    or not check(value):
                raise ValueError(f"credit {name} must be {allowed}, got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"credit adaptive must be True or False, got {self.adaptive!r}")
        if self.slots is not None and (isinstance(self.slots, bool) or not isinstance(self.slots, int)
                                       or not 1 <= self.slots <= MAX_SLOTS):
            raise ValueError(f"credit slots must be None (exact) or an integer in [1, {MAX_SLOTS}], "
                             f"got {self.slots!r}")


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


class CreditState:
    """Sparse credit of one block: ``tokens`` [B, L, S] (-1 = empty) and ``credit`` [B, L, S].

    Buffers are allocated once and updated in place (``reset_where`` for the rows starting a block), so the
    update can live inside a captured CUDA graph.
    """

    def __init__(self, config: CreditConfig, batch: int, length: int, device: torch.device) -> None:
        self.config = config
        slots = length if config.slots is None else config.slots  # a block takes at most `length` steps
        self.tokens = torch.full((batch, length, slots), -1, dtype=torch.long, device=device)
        self.credit = torch.zeros((batch, length, slots), dtype=torch.float32, device=device)

    def head(self, rows: int) -> CreditState:
        """A view of the first ``rows`` rows: updates through it land here."""
        if rows == self.tokens.shape[0]:
            return self
        sub = object.__new__(CreditState)
        sub.config, sub.tokens, sub.credit = self.config, self.tokens[:rows], self.credit[:rows]
        return sub

    def reset_where(self, rows: torch.Tensor) -> None:
        """Reset the credit of the rows where ``rows`` [B] is True (rows starting a block), in place, no sync."""
        self.tokens.masked_fill_(rows[:, None, None], -1)
        self.credit.masked_fill_(rows[:, None, None], 0.0)

    def _coefficients(self, masked: torch.Tensor) -> tuple[torch.Tensor | float, ...]:
        cfg = self.config
        if not cfg.adaptive:
            return cfg.alpha, cfg.beta, cfg.gamma
        keep = 1.0 - masked.float().mean(dim=-1)[:, None, None]  # 1 - mask ratio, per row
        return keep, keep, 1.0

    def update_and_fuse(self, logits: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Update credit from ``logits`` [B, L, V] at ``masked`` [B, L]; return fused float logits."""
        alpha, beta, gamma = self._coefficients(masked)
        logits = logits if logits.dtype == torch.float64 else logits.float()
        top = logits.argmax(dim=-1, keepdim=True)  # [B, L, 1]
        p_top = (logits.gather(-1, top) - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
        boost = p_top.float().pow(gamma) * masked[..., None]
        self.credit.mul_(beta)
        hit = self.tokens == top
        has_slot = hit.any(dim=-1, keepdim=True)
        # a new top-1 token takes the empty or smallest-credit slot
        free = torch.where(self.tokens < 0, -1.0, self.credit).argmin(dim=-1, keepdim=True)
        new_slot = torch.zeros_like(hit).scatter(-1, free, True) & ~has_slot & masked[..., None]
        self.tokens.copy_(torch.where(new_slot, top, self.tokens))
        self.credit.copy_(torch.where(new_slot, 0.0, self.credit) + boost * (hit | new_slot))
        bonus = alpha * torch.log1p(self.credit) * (self.tokens >= 0)
        return logits.scatter_add(-1, self.tokens.clamp(min=0), bonus.to(logits.dtype))
