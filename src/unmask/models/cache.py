"""Fast-dLLM's approximate block KV cache (Wu et al. 2025, "Fast-dLLM", Sec. 3.1).

The cache holds, per layer, keys and values for the whole canvas ``[prompt | generation]``. At the
start of every block the decoder runs one full forward that fills it (``refresh``); inside the
block each step recomputes only a window of the canvas and writes its fresh keys/values over the
cached ones, attending to the rest from the cache:

- ``prefix``: the window is ``[block_start, end_of_canvas)``; the prefix is frozen for the block.
- ``dual``:   the window is ``[block_start, block_end)``; prefix *and* suffix are frozen
  (Fast-dLLM's ``replace_position``).

Both are approximations: cached entries are not refreshed inside a block.
"""

from __future__ import annotations

from typing import Literal

import torch

CacheMode = Literal["none", "prefix", "dual"]
CACHE_MODES: tuple[str, ...] = ("none", "prefix", "dual")


class KVCache:
    """Per-layer key/value buffers of shape ``[batch, n_kv_heads, canvas_length, head_dim]``.

    Keys are stored after the rotary embedding, so a window can be recomputed at any offset.
    """

    def __init__(self, mode: CacheMode = "prefix") -> None:
        if mode not in ("prefix", "dual"):
            raise ValueError(f"cache mode {mode!r} has no KV cache (allowed: 'prefix', 'dual')")
        self.mode = mode
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def window(self, block_start: int, block_end: int, canvas_length: int) -> tuple[int, int]:
        """Canvas columns that a step inside block ``[block_start, block_end)`` recomputes."""
        return (block_start, canvas_length) if self.mode == "prefix" else (block_start, block_end)

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write fresh ``k, v`` for columns ``[start, start + n)`` of ``layer``; return the full buffers.

        A write at ``start == 0`` that covers the canvas (the block refresh) replaces the buffers.
        """
        if layer == len(self.keys):  # first (refresh) forward allocates
            if start != 0:
                raise RuntimeError("KVCache must be filled by a full forward before partial updates")
            self.keys.append(k)
            self.values.append(v)
            return k, v
        if start == 0 and k.shape[2] == self.keys[layer].shape[2]:
            self.keys[layer], self.values[layer] = k, v
            return k, v
        self.keys[layer][:, :, start : start + k.shape[2]] = k
        self.values[layer][:, :, start : start + v.shape[2]] = v
        return self.keys[layer], self.values[layer]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep only batch ``rows`` (used when finished rows leave the batch)."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]
