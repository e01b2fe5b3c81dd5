"""The policy contract, the registry, and the sorting helpers every policy shares (docs/design.md §1, §6).

A policy is a small class, registered by name, with one hyper-parameter (its ``knob``) and a pure
call ``(confidence [B, L], masked [B, L], step, schedule) -> commit [B, L] bool``:

- ``confidence`` holds -inf wherever ``masked`` is False;
- ``step`` (the step index inside the block) is an int or a 0-d device tensor, so a policy runs
  inside a captured CUDA graph without a host sync;
- ``start_block(masked)`` returns the per-row state of a block (a fixed schedule) or ``None``;
- every policy commits at least one masked position of each row that has one (so decoding always
  progresses; the seed papers' rules: at least the top-1) and nothing elsewhere; rows are handled
  together, no per-row loops.

A policy may declare further ``options`` (knobs with defaults, e.g. KLASS's KL bound and history length):
``generate(policy="klass", threshold=0.6, kl=0.015)``, spec ``klass:0.6(kl=0.015)``.

Policies that need more than the confidences set ``uses_context``: they are called with a fifth argument,
a ``StepContext`` holding the block's scored logits [B, L, V] (credit fused), the candidates [B, L] and
the policy's own per-row ``PolicyState`` (buffers it allocates once with ``allocate_state``; the engine
moves them with their rows, resets a row's at admission and calls ``advance_state`` for the rows that start
a new block). Everything stays on the device, in place, so the step is still one captured graph.

A *revocable* policy (``revocable``, WINO) returns ``(commit, remask)``: ``remask`` [B, L] sends tokens the
row committed earlier in this block back to mask (never the same step's commits, never an earlier block's);
a step still makes progress as long as it commits more than it re-masks over the block's life (WINO's cap
bounds a block by its length in forwards). An *editing* policy (``edits``, LLaDA2.1) may commit over the
block's decoded answer tokens (its ``commit`` covers them; the candidate replaces the token), and its state's
``hold`` buffer [S] keeps a row in a block with nothing masked left for more (edit-only) steps.
``shadow_block`` asks the step to add WINO's leave-one-out shadow block, whose logits arrive as
``StepContext.next_logits``.

The knob declares its name (the keyword of ``generate`` and ``make_policy``, the ``--NAME`` option
and the value of a ``POLICY:VALUE`` spec), type, default, allowed range and help, so the spec parser,
the command line, the Python API and the lm-eval adapter all read it from here: adding a policy is
one module in this package and its test.

Ties are broken by position, lowest first (stable sort; ``argmax`` returns the first maximum). The
references select with ``torch.topk``, whose order among exactly equal values is not specified; with
float64 confidences exact ties between different positions need exactly equal logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


@dataclass(frozen=True)
class Knob:
    """A policy's hyper-parameter: ``generate(policy=..., NAME=value)``, ``--NAME``, spec ``POLICY:VALUE``."""

    name: str
    type: type
    default: float | int | None
    allowed: str  # the allowed range in words, for errors: "in (0, 1]"
    check: Callable[[Any], bool]
    help: str
    # other option names that set this knob, each with a function that parses, checks and maps its value
    aliases: dict[str, Callable[[Any], Any]] = field(default_factory=dict)

    def parse(self, value: Any, policy: str, text: bool = False) -> float | int:
        """``value`` as this knob's type, checked; a ``ValueError`` names the value and what is allowed. A string is
        read as a number only with ``text`` (a spec, a sweep grid, the command line); the Python API takes numbers
        (``threshold="0.9"`` is refused as ``temperature="0"`` is)."""
        label = self.name if policy == self.name else f"{policy} {self.name}"
        kind = "an integer" if self.type is int else "a number"
        if self.allowed.startswith(("a ", "an ")):  # "a finite number": already says what kind
            kind = ""
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (isinstance(value, str) and not text):
            raise ValueError(f"{label} must be {f'{kind} ' if kind else ''}{self.allowed}, got {value!r}")
        try:
            number = self.type(value) if self.type is float else _integer(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{label} must be {f'{kind} ' if kind else ''}{self.allowed}, got {value!r}") from None
        if not self.check(number):
            raise ValueError(f"{label} must be {self.allowed}, got {value}")
        return number


def _integer(value: Any) -> int:
    """An int as is (no float round trip: 2**70 stays exact); "8", "8.0", 8.0 as 8; else a ValueError."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    number = float(value)
    if not number.is_integer():
        raise ValueError
    return int(number)


def finite_number(value: float) -> bool:
    return math.isfinite(value)


class PolicyState:
    """Per-row buffers of a stateful policy, each ``[S, ...]``, allocated once; ``fills`` gives each buffer's
    value for a fresh row. ``head(rows)`` is a view of the first rows (writes land here)."""

    def __init__(self, buffers: dict[str, torch.Tensor], fills: dict[str, float | bool]) -> None:
        self.buffers, self.fills = buffers, fills

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self.__dict__["buffers"][name]
        except KeyError:
            raise AttributeError(name) from None

    def head(self, rows: int) -> PolicyState:
        return PolicyState({k: v[:rows] for k, v in self.buffers.items()}, self.fills)

    def reset_rows(self, index: torch.Tensor) -> None:
        """Fresh state for the rows ``index`` (a new request in those slots)."""
        for name, buffer in self.buffers.items():
            buffer.index_fill_(0, index, self.fills[name])

    def reset_where(self, rows: torch.Tensor) -> None:
        """Fresh state where ``rows`` [B] is True, in place, no sync."""
        for name, buffer in self.buffers.items():
            buffer.masked_fill_(rows.view(-1, *([1] * (buffer.dim() - 1))), self.fills[name])


@dataclass
class StepContext:
    """What a step hands a policy with ``uses_context``, besides the confidences."""

    logits: torch.Tensor  # [B, L, V] the block's logits as scored (credit fused)
    candidates: torch.Tensor  # [B, L] the token each position would commit
    state: PolicyState | None  # the policy's rows (views)
    next_logits: torch.Tensor | None = None  # [B, L, V] the next block's (or the shadow block's), where computed
    current: torch.Tensor | None = None  # [B, L] the block's tokens before this step
    in_block: torch.Tensor | None = None  # [B, L] the block's answer columns (not a prompt's) of the rows that decode
    uniform: torch.Tensor | None = None  # [B, L] U(0, 1) draws of this step, for a policy with ``needs_uniform``
    mask_id: int | None = None  # the mask token (a candidate may be it: the model can predict the mask)
    probability: torch.Tensor | None = None  # [B, L] p(candidate) at every position, for a policy that ``edits``


class CommitPolicy:
    """Base of the registered policies; subclasses are dataclasses holding their knob's value."""

    name: ClassVar[str]
    knob: ClassVar[Knob]
    options: ClassVar[tuple[Knob, ...]] = ()  # further knobs, each with its default
    uses_context: ClassVar[bool] = False  # called with a StepContext as a fifth argument
    wants_next_block: ClassVar[bool] = False  # the step also computes the next block's logits where it can
    shadow_block: ClassVar[bool] = False  # the step adds WINO's leave-one-out shadow block (no cache only)
    revocable: ClassVar[bool] = False  # the call returns (commit, remask): drafted tokens may go back to mask
    needs_uniform: ClassVar[bool] = False  # the step draws U(0, 1) per block position for it (StepContext.uniform)
    edits: ClassVar[bool] = False  # may commit over decoded answer tokens of the block (LLaDA2.1's token edits)
    steps_per_block: int | None = None  # a fixed number of forwards per block (topk), else None

    def start_block(self, masked: torch.Tensor) -> torch.Tensor | None:
        """The per-row state of a block, from its masked positions at the block's start."""
        return None

    @property
    def schedule_length(self) -> int | None:
        """Columns of the [B, n] schedule ``start_block`` returns (the engine keeps it per row and hands it to
        every call; default: the fixed steps per block, None: no schedule)."""
        return self.steps_per_block

    def allocate_state(self, slots: int, block_length: int, vocab: int, device: torch.device,
                       dtype: torch.dtype) -> PolicyState | None:
        """The per-row buffers of a stateful policy (``None``: stateless)."""
        return None

    def advance_state(self, state: PolicyState, rows: torch.Tensor) -> None:
        """The rows where ``rows`` [B] is True start a new block (default: fresh state)."""
        state.reset_where(rows)

    def __call__(
        self, confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor, schedule: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def knob_keywords(cls) -> set[str]:
        """The names that set the policy's main knob: the knob and its aliases."""
        return {cls.knob.name, *cls.knob.aliases}

    @classmethod
    def option_keywords(cls) -> set[str]:
        """Every option name the policy takes: its knob, the knob's aliases and its further options."""
        return cls.knob_keywords() | {o.name for o in cls.options}

    @classmethod
    def from_knob(cls, value: float | int | None, gen_length: int | None = None,
                  block_length: int | None = None, **options: float | int) -> CommitPolicy:
        """The policy for a knob value (``None``: the default) and its options; the decode's lengths where the
        knob needs them."""
        return cls(cls.knob.default if value is None else value, **options)


REGISTRY: dict[str, type[CommitPolicy]] = {}


def register(cls: type[CommitPolicy]) -> type[CommitPolicy]:
    """Class decorator: make the policy available by ``cls.name`` everywhere."""
    if cls.name in REGISTRY:
        raise ValueError(f"policy {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


def policy_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get_policy_class(name: str) -> type[CommitPolicy]:
    if name not in REGISTRY:
        raise ValueError(f"unknown policy {name!r} (allowed: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def knob_names() -> set[str]:
    """Every policy option name (knobs, their aliases and the policies' further options)."""
    return {name for cls in REGISTRY.values() for name in cls.option_keywords()}


def make_policy(
    name: str, *, gen_length: int | None = None, block_length: int | None = None, **knobs: Any
) -> CommitPolicy:
    """Build a registered policy from its knob (``make_policy("threshold", threshold=0.8)``).

    Knobs given as ``None`` are ignored; a knob of another policy is an error, not silently dropped.
    """
    cls = get_policy_class(name)
    given = {k: v for k, v in knobs.items() if v is not None}
    known = knob_names()
    for key in given:
        if key not in known:
            raise ValueError(f"unknown policy option {key!r} (options: {', '.join(sorted(known))})")
    extras = {o.name: o for o in cls.options}
    foreign = sorted(k for k in given if k not in cls.option_keywords())
    if foreign:
        names = ", ".join([cls.knob.name, *extras])
        raise ValueError(f"option(s) {', '.join(foreign)} do not apply to policy {name!r} (its option"
                         f"{'s' if extras else ''}: {names}; given {', '.join(f'{k}={given[k]!r}' for k in foreign)})")
    main = {k: v for k, v in given.items() if k not in extras}
    if len(main) > 1:
        raise ValueError(f"give policy {name!r} one of {', '.join(sorted(main))}, not several")
    value = None
    for key, raw in main.items():  # at most one
        # the knob itself, or an alias such as frechet's factor budget f (margin 1 - f)
        value = cls.knob.parse(raw, name) if key == cls.knob.name else cls.knob.aliases[key](raw)
    options = {k: extras[k].parse(v, name) for k, v in given.items() if k in extras}
    return cls.from_knob(value, gen_length=gen_length, block_length=block_length, **options)


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


# --------------------------------------------------------------------------- fixed-schedule policies (topk, dream)


def check_steps_per_block(steps_per_block: Any) -> None:
    """A fixed schedule's forwards per block: an integer >= 1."""
    if isinstance(steps_per_block, bool) or not isinstance(steps_per_block, int):
        raise ValueError(f"steps per block must be an integer, got {steps_per_block!r}")
    if steps_per_block < 1:
        raise ValueError(f"steps per block must be >= 1, got {steps_per_block}")


def schedule_steps(policy: str, value: int | None, gen_length: int | None,
                   block_length: int | None) -> tuple[int, int]:
    """(steps, blocks) of a fixed schedule: its knob ``steps`` (forwards in all, default ``gen_length``),
    checked to be a positive multiple of the number of blocks."""
    if gen_length is None or block_length is None:
        raise ValueError(f"policy {policy!r} needs gen_length and block_length to place its steps")
    num_blocks = gen_length // block_length
    steps = gen_length if value is None else value
    if steps <= 0 or steps % num_blocks:
        raise ValueError(f"steps={steps} must be a positive multiple of the number of blocks ({num_blocks})")
    return steps, num_blocks


def commit_scheduled(confidence: torch.Tensor, masked: torch.Tensor, step: int | torch.Tensor,
                     schedule: torch.Tensor, steps_per_block: int) -> torch.Tensor:
    """Commit the ``schedule[b, step]`` highest-confidence masked positions of each row (``schedule``:
    ``[B, steps_per_block]``; a step past the last, which the loop does not reach, reads the last)."""
    _, order, _ = sorted_confidence(confidence, masked)
    step = torch.as_tensor(step, device=schedule.device)
    column = step.clamp(max=steps_per_block - 1).expand(schedule.shape[0], 1)
    return commit_top_n(order, schedule.gather(1, column).squeeze(1), masked)
