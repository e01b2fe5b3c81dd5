"""Fast-dLLM's approximate block KV cache (Wu et al. 2025, "Fast-dLLM", Sec. 3.1), as static buffers.

The cache holds, per layer, keys (after RoPE) and values for the whole canvas ``[prompt | generation]``
in buffers allocated once per (batch, canvas length), like gpt-fast's ``KVCache``. At the start of
every block one full forward (the *refresh*) writes every column; inside the block each step
recomputes only a window of columns, writes their fresh keys/values in place and attends to all
columns. The cache modes differ only in that window (``recompute_columns``):

- ``none``:   every step recomputes the whole canvas (no cache is kept);
- ``prefix``: ``[block_start, canvas_end)``: the prefix is frozen for the block;
- ``dual``:   ``[block_start, block_end)``: prefix *and* suffix are frozen (Fast-dLLM's
  ``replace_position``).

Both cached modes are approximations: frozen columns are not refreshed inside a block.

Cache modes are registered (``register_cache``) with their knobs, like the policies, and named in specs,
``--cache`` and ``generate(cache=...)`` as ``NAME`` or ``NAME(KNOB=VALUE)``. Besides the three above:

- ``prompt_stale(every=N)``: the dual cache, except that only blocks 0, N, 2N, ... start with the full
  refresh; the other blocks start by recomputing the answer columns only (their keys/values written, their
  logits decoding the block), attending to the prompt's cached keys/values from the last full refresh
  (refresh-light caching; the prompt's deeper-layer keys/values are as stale as N blocks). ``every=1`` is
  ``dual``; ``every=inf`` refreshes the prompt at block 0 only.
- ``partial(budget=K)``: no block refresh after block 0 (which starts with the full one; ``every=N``: blocks
  0, N, 2N, ... do, dLLM-Cache's interval refresh on top of the per-step budget). Every step
  recomputes the block's columns plus ``K`` more of the row's canvas, chosen on the device: first the
  columns whose token changed since their keys/values were computed (the tokens committed at the end of
  the previous block), then the stalest (most steps since their last recompute), ties to the lower
  column. The prompt and the rest of the answer are thus refreshed a stripe at a time, ``K`` columns per
  step, at a fixed cost per step (one static shape: block + K columns, graph-captured). The rule follows
  the per-step partial refreshes of Flash-dLLM (VILA-Lab, 2025: window + newly committed tokens + a
  fixed budget) and SPA-Cache (arXiv 2602.02544: a per-step token budget), with staleness instead of
  their attention / value-drift scores as the measure of what to recompute (one set for all layers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

CacheMode = Literal["none", "prefix", "dual"]
WINDOWS: tuple[str, ...] = ("none", "prefix", "dual")  # what a step inside a block recomputes


@dataclass(frozen=True)
class CacheKnob:
    """A cache mode's option: ``MODE(NAME=VALUE)`` in a spec, ``--cache``, ``generate(cache=...)``."""

    name: str
    default: float
    allowed: str  # in words, for errors
    check: Callable[[float], bool]
    help: str
    in_label_at_default: bool = True  # False: the canonical label omits it at its default (a later-added knob)


@dataclass(frozen=True)
class CacheKind:
    """A registered cache mode: the window its in-block steps recompute (``WINDOWS``), how a block starts
    (``refresh``: ``full`` rewrites the whole cache; ``answer`` may recompute the answer columns only, against the
    cached prompt; ``partial``: only block 0 is refreshed, every step recomputes a budget of columns besides the
    block) and its knobs."""

    name: str
    window: str
    refresh: str
    knobs: tuple[CacheKnob, ...]
    help: str


CACHE_KINDS: dict[str, CacheKind] = {}


def register_cache(kind: CacheKind) -> CacheKind:
    if kind.name in CACHE_KINDS:
        raise ValueError(f"cache mode {kind.name!r} is registered twice")
    CACHE_KINDS[kind.name] = kind
    return kind


def _every(value: float) -> bool:
    return value == math.inf or (value >= 1 and float(value).is_integer())


register_cache(CacheKind("none", "none", "full", (), "no cache: every step recomputes the whole canvas"))
register_cache(CacheKind("prefix", "prefix", "full", (),
                         "Fast-dLLM prefix cache: a block starts with a full refresh, steps recompute [block, end)"))
register_cache(CacheKind("dual", "dual", "full", (),
                         "Fast-dLLM dual cache: a block starts with a full refresh, steps recompute the block"))
register_cache(CacheKind(
    "prompt_stale", "dual", "answer",
    (CacheKnob("every", 4.0, "an integer >= 1 or inf", _every,
               "blocks between full refreshes (the prompt's keys/values are recomputed at blocks 0, N, 2N, ...; "
               "inf: at block 0 only); the other blocks start by recomputing the answer columns only"),),
    "dual cache whose block refresh recomputes only the answer against the cached prompt keys/values"))


def _switch(value: float) -> bool:
    return value in (0.0, 1.0)


def _budget(value: float) -> bool:
    return 0 <= value <= 4096 and float(value).is_integer()


register_cache(CacheKind(
    "partial", "dual", "partial",
    (CacheKnob("budget", 16.0, "an integer in [0, 4096]", _budget,
               "columns recomputed per step besides the block: changed tokens first, then the stalest"),
     CacheKnob("every", math.inf, "an integer >= 1 or inf", _every,
               "blocks between full refreshes (blocks 0, N, 2N, ... start with one; inf: block 0 only)",
               in_label_at_default=False),
     CacheKnob("reuse", 0.0, "0 or 1", _switch,
               "1: the block's decoded columns keep their cached keys/values and their slots in the step recompute "
               "more changed/stalest columns instead (same step cost, more of the canvas refreshed)",
               in_label_at_default=False)),
    "no block refresh after the first (or every N blocks): every step recomputes the block plus a budget of "
    "changed/stalest columns"))

CACHE_MODES: tuple[str, ...] = tuple(CACHE_KINDS)  # the registered names
_MODE_RE = re.compile(r"^(?P<name>[a-z_]+)(?:\((?P<knobs>[^()]*)\))?$")


@dataclass(frozen=True)
class ParsedCache:
    """A cache mode with its knob values: ``kind`` registered, ``knobs`` every knob (defaults filled in)."""

    kind: CacheKind
    knobs: tuple[tuple[str, float], ...]

    @property
    def window(self) -> str:
        return self.kind.window

    def knob(self, name: str) -> float:
        return dict(self.knobs)[name]

    @property
    def label(self) -> str:
        """The canonical text: ``dual``, ``prompt_stale(every=4)``."""
        shown = [(k, v) for (k, v), knob in zip(self.knobs, self.kind.knobs, strict=True)
                 if knob.in_label_at_default or v != knob.default]
        if not shown:
            return self.kind.name
        values = ",".join(f"{k}={_number(v)}" for k, v in shown)
        return f"{self.kind.name}({values})"


def _number(value: float) -> str:
    if value == math.inf:
        return "inf"
    return str(int(value)) if float(value).is_integer() else repr(value)


def cache_forms() -> str:
    """Every registered mode with its knobs, for help texts and errors."""
    parts = []
    for kind in CACHE_KINDS.values():
        knobs = ",".join(f"{k.name}=N" for k in kind.knobs)
        parts.append(f"{kind.name}({knobs})" if knobs else kind.name)
    return ", ".join(parts)


def parse_cache_mode(text: object) -> ParsedCache:
    """``dual``, ``prompt_stale``, ``prompt_stale(every=8)``: a ``ValueError`` names the bad part and what is
    allowed."""
    if isinstance(text, ParsedCache):
        return text
    match = _MODE_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None or match["name"] not in CACHE_KINDS:
        raise ValueError(f"unknown cache mode {text!r} (allowed: {cache_forms()})")
    kind = CACHE_KINDS[match["name"]]
    values = {k.name: k.default for k in kind.knobs}
    given = match["knobs"]
    if given is not None and given.strip():
        for item in given.split(","):
            name, sep, raw = item.partition("=")
            name = name.strip()
            knob = next((k for k in kind.knobs if k.name == name), None)
            if not sep or knob is None:
                names = ", ".join(k.name for k in kind.knobs) or "none"
                raise ValueError(f"cache mode {kind.name!r}: bad option {item.strip()!r} (its options: {names})")
            try:
                value = float(raw.strip())
            except ValueError:
                value = math.nan
            if not knob.check(value):
                raise ValueError(f"cache mode {kind.name!r}: {name} must be {knob.allowed}, got {raw.strip()!r}")
            values[name] = value
    elif given is not None and kind.knobs:
        pass  # "prompt_stale()": the defaults
    return ParsedCache(kind, tuple((k.name, values[k.name]) for k in kind.knobs))


def canonical_cache(text: str) -> str:
    """The canonical label of a cache mode (a ``ValueError`` for a bad one)."""
    return parse_cache_mode(text).label


def check_cache_mode(mode: str) -> None:
    parse_cache_mode(mode)


def recompute_columns(mode: str, block_start: int, block_end: int, canvas_length: int) -> tuple[int, int]:
    """Canvas columns ``[a, b)`` that a step inside block ``[block_start, block_end)`` recomputes."""
    window = parse_cache_mode(mode).window
    if window == "none":
        return 0, canvas_length
    return (block_start, canvas_length) if window == "prefix" else (block_start, block_end)


class StaticKVCache:
    """Keys and values ``[n_layers, 2, batch, n_kv_heads, canvas_length, head_dim]`` in one buffer.

    A forward writes the fresh keys/values of the canvas ``columns`` it computes into ``layer(i)``
    (one ``index_copy_`` for both, or a full copy for the refresh) and attends to all columns.
    """

    def __init__(
        self, n_layers: int, batch: int, n_kv_heads: int, length: int, head_dim: int,
        dtype: torch.dtype, device: torch.device | str,
    ) -> None:
        self.kv = torch.zeros((n_layers, 2, batch, n_kv_heads, length, head_dim), dtype=dtype, device=device)
        # a model that reads another column's output (Dream's shifted prediction) keeps the last-layer
        # outputs [batch, length, hidden] here, allocated by the model on first use
        self.outputs: torch.Tensor | None = None

    @classmethod
    def for_model(cls, config, batch: int, length: int, dtype: torch.dtype, device: torch.device) -> StaticKVCache:
        return cls(config.n_layers, batch, config.n_kv_heads, length, config.head_dim, dtype, device)

    @property
    def batch(self) -> int:
        return self.kv.shape[2]

    @property
    def length(self) -> int:
        return self.kv.shape[4]

    def head(self, rows: int) -> StaticKVCache:
        """A view of the first ``rows`` rows (keys/values and kept outputs): writes through it land here."""
        view = object.__new__(StaticKVCache)
        view.kv = self.kv[:, :, :rows]
        view.outputs = None if self.outputs is None else self.outputs[:rows]
        return view

    def layer(self, index: int) -> torch.Tensor:
        """The [2, batch, n_kv_heads, canvas_length, head_dim] buffer of one layer (keys, values)."""
        return self.kv[index]


def write_kv(buffer: torch.Tensor, k: torch.Tensor, v: torch.Tensor, columns: torch.Tensor | None) -> None:
    """Store fresh keys/values [B, H, W, hd] of canvas ``columns`` in ``buffer``: all columns if ``None``,
    the same W columns for every row ([W]) or each row's own ([B, W])."""
    # One write for both, on the buffer itself: under torch.compile a write through a view of the
    # buffer (buffer[0].index_copy_) becomes a copy of the whole layer's cache.
    fresh = torch.stack((k, v))
    if columns is None:
        buffer.copy_(fresh)
    elif columns.dim() == 2:  # per-row columns [B, W] (rows at different places: the server's batches)
        buffer.scatter_(3, columns[None, :, None, :, None].expand_as(fresh), fresh)
    else:
        buffer[:, :, :, columns] = fresh  # index_put_: under torch.compile it fuses with its producers
