"""Commit policies: pure functions (confidence [B, L], masked [B, L], step) -> commit [B, L] bool.

``confidence`` holds -inf wherever ``masked`` is False. ``step`` (the step index inside the block) may
be an int or a 0-d device tensor, so a policy runs inside a captured CUDA graph without a host sync.
Every policy commits at least the top-1 masked position of each row that has one (so decoding always
progresses) and nothing elsewhere. Rows are handled together by sorting each row's confidences once;
there are no per-row loops.

Ties are broken by position, lowest first (stable sort; ``argmax`` returns the first maximum). The
references select with ``torch.topk``, whose order among exactly equal values is not specified; with
float64 confidences exact ties between different positions need exactly equal logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

POLICY_NAMES: tuple[str, ...] = ("topk", "threshold", "factor", "frechet")


def sorted_confidence(
    confidence: torch.Tensor, masked: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_(1) >= c_(2) >= ... per row, the permutation that sorts, the masked count per row)."""
    values, order = confidence.sort(dim=-1, descending=True, stable=True)
    return values, order, masked.sum(dim=-1)


def commit_top_n(order: torch.Tensor, n: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Commit the ``n[b]`` highest-confidence positions of each row (``order`` from ``sorted_confidence``)."""
    ranks = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    chosen_sorted = ranks < n[:, None]
    return torch.zeros_like(masked).scatter(-1, order, chosen_sorted) & masked


def num_transfer_tokens(masked_count: torch.Tensor, steps: int) -> torch.Tensor:
    """LLaDA's ``get_num_transfer_tokens``: [B, steps] with base = n // steps, the first n % steps steps +1."""
    base, remainder = masked_count // steps, masked_count % steps
    step_index = torch.arange(steps, device=masked_count.device)
    return base[:, None] + (step_index[None, :] < remainder[:, None]).long()


@dataclass
class TopK:
    """LLaDA's baseline (``generate.py``, low-confidence remasking): a fixed budget per step.

    The masked count n of a block is spread over ``steps_per_block`` steps (``num_transfer_tokens``);
    step i commits the k_i highest-confidence masked positions.
    """

    steps_per_block: int
    name: str = "topk"

    def __post_init__(self) -> None:
        if self.steps_per_block < 1:
            raise ValueError(f"steps per block must be >= 1, got {self.steps_per_block}")

    def start_block(self, masked: torch.Tensor) -> torch.Tensor:
        """The per-row schedule for a block, from its masked positions at the block's start."""
        return num_transfer_tokens(masked.sum(dim=-1), self.steps_per_block)

    def __call__(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor, schedule: torch.Tensor
    ) -> torch.Tensor:
        _, order, count = sorted_confidence(confidence, masked)
        step = torch.as_tensor(step, device=schedule.device)
        column = step.clamp(max=self.steps_per_block - 1).expand(schedule.shape[0], 1)
        k = schedule.gather(1, column).squeeze(1)
        k = torch.where(step >= self.steps_per_block, count, k)  # extra steps (if a caller runs them) finish the block
        return commit_top_n(order, k, masked)


class _Dynamic:
    """Policies whose step count follows from the confidences (no fixed schedule)."""

    steps_per_block: int | None = None

    def start_block(self, masked: torch.Tensor) -> None:
        return None


@dataclass
class Threshold(_Dynamic):
    """Fast-dLLM threshold parallel decoding (Wu et al. 2025, Sec. 3.2; ``get_transfer_index``):
    commit every masked i with c_i >= tau, and the top-1 always.

    The paper writes c_i > tau; the reference code keeps c_i >= tau (it drops ``c < threshold``),
    and that is what we implement. Default tau = 0.9.
    """

    tau: float = 0.9
    name: str = "threshold"

    def __post_init__(self) -> None:
        check_unit_interval("threshold", self.tau)

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None) -> torch.Tensor:
        top1 = torch.zeros_like(masked).scatter(-1, confidence.argmax(dim=-1, keepdim=True), True)
        return masked & ((confidence >= self.tau) | top1)


@dataclass
class Factor(_Dynamic):
    """Fast-dLLM factor-based parallel decoding (Wu et al. 2025, Thm. 1 and Sec. 3.2;
    ``get_transfer_index_dynamic``): commit the n highest, n the largest count with
    (m + 1)(1 - c_(m)) <= f for every m <= n (i.e. c_(m) >= 1 - f / (m + 1)); top-1 always.

    The paper writes "< f"; the reference code tests ``c < 1 - f/(m+1)`` to stop, i.e. "<= f",
    which we follow. Reference quirk, kept by default (``reference_quirk``): when only the last
    masked token fails the test, the code still commits all of them.
    """

    f: float = 1.0
    reference_quirk: bool = True
    name: str = "factor"

    def __post_init__(self) -> None:
        if not self.f > 0:
            raise ValueError(f"factor must be > 0, got {self.f}")

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None) -> torch.Tensor:
        values, order, count = sorted_confidence(confidence, masked)
        m = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=values.dtype)
        passes = values >= 1 - self.f / (m + 1)
        passes[:, 0] = True
        n = passes.long().cumprod(dim=-1).sum(dim=-1).minimum(count)
        if self.reference_quirk:
            n = torch.where(n == count - 1, count, n)
        return commit_top_n(order, n, masked)


@dataclass
class Frechet(_Dynamic):
    """Fréchet profile commit sets (Fast-dLLM++, Kasa et al. 2026, arXiv 2606.02955;
    ``get_transfer_index_frechet_profile``).

    By the Fréchet inequality P(top n all correct) >= L_n = sum_{j<=n} c_(j) - (n - 1); the best
    competitor of the n-th token has probability at most U_n = 1 - c_(n). Commit the largest n with
    G_n = L_n - U_n = sum_{j<=n} c_(j) - n + c_(n) > delta (strict), top-1 always. G_n decreases in n,
    so the admitted set is a prefix. With equal confidences c = 1 - e, G_n > delta <=> (n + 1) e < 1 - delta:
    Fast-dLLM's factor rule with f = 1 - delta; otherwise G_n exceeds it by the heterogeneity bonus
    sum_{j<n}(c_(j) - c_(n)) >= 0, so it admits at least as many tokens. Default delta = 0.25.
    """

    margin: float = 0.25
    name: str = "frechet"

    def __post_init__(self) -> None:
        if not math.isfinite(self.margin):
            raise ValueError(f"frechet margin must be a finite number, got {self.margin}")

    @classmethod
    def from_factor(cls, f: float) -> Frechet:
        """The Fréchet rule with the budget of Fast-dLLM's factor f (delta = 1 - f)."""
        return cls(margin=1.0 - f)

    def __call__(self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                 schedule: None) -> torch.Tensor:
        values, order, count = sorted_confidence(confidence, masked)
        ranks = torch.arange(values.shape[-1], device=values.device)
        valid = ranks[None, :] < count[:, None]
        finite = torch.where(valid, values, torch.zeros_like(values))
        score = finite.cumsum(dim=-1) - ranks.to(values.dtype) - (1 - finite)  # L_n - U_n, n = rank + 1
        admitted = (score > self.margin) & valid
        admitted[:, 0] = True  # the reference counts admitted n (not a prefix scan); G_n is monotone anyway
        n = admitted.sum(dim=-1).minimum(count)
        return commit_top_n(order, n, masked)


def check_unit_interval(name: str, value: float) -> None:
    if not (0.0 < value <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value}")


Policy = TopK | Threshold | Factor | Frechet


def make_policy(
    name: str,
    *,
    steps_per_block: int | None = None,
    threshold: float | None = None,
    factor: float | None = None,
    margin: float | None = None,
) -> Policy:
    """Build a policy by name with its own hyper-parameter (defaults: tau 0.9, f 1.0, delta 0.25)."""
    if name == "topk":
        if steps_per_block is None:
            raise ValueError("policy 'topk' needs steps_per_block")
        return TopK(steps_per_block)
    if name == "threshold":
        return Threshold(0.9 if threshold is None else threshold)
    if name == "factor":
        return Factor(1.0 if factor is None else factor)
    if name == "frechet":
        if margin is None and factor is not None:
            return Frechet.from_factor(factor)
        return Frechet(0.25 if margin is None else margin)
    raise ValueError(f"unknown policy {name!r} (allowed: {', '.join(POLICY_NAMES)})")
