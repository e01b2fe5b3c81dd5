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
"""

from __future__ import annotations

from typing import Literal

import torch

CacheMode = Literal["none", "prefix", "dual"]
CACHE_MODES: tuple[str, ...] = ("none", "prefix", "dual")


def check_cache_mode(mode: str) -> None:
    if mode not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {mode!r} (allowed: {', '.join(CACHE_MODES)})")


def recompute_columns(mode: str, block_start: int, block_end: int, canvas_length: int) -> tuple[int, int]:
    """Canvas columns ``[a, b)`` that a step inside block ``[block_start, block_end)`` recomputes."""
    check_cache_mode(mode)
    if mode == "none":
        return 0, canvas_length
    return (block_start, canvas_length) if mode == "prefix" else (block_start, block_end)


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
