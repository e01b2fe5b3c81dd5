"""RoPE and the KV-cache write of a cached decode step in one Triton kernel (CUDA, the fused step only).

After the q/k/v projection of a window of W columns the compiled step ran three kernels per layer (RoPE
of q and k, stacking k and v, the indexed write into the cache), about 1.5 us each plus their launch
gaps at batch 1. ``rope_write_kv`` reads the projection's output [B * W, (H + 2 H_kv) * hd] once and
writes q after RoPE [B, H, W, hd] and k after RoPE and v into the layer's cache at the window's canvas
columns. RoPE is LLaDA's (rotate_half): out = x * cos + rotate_half(x) * sin, with
rotate_half([x1, x2]) = [-x2, x1], computed in float32 and cast back, as ``llada.apply_rotary``.
"""

from __future__ import annotations

import contextlib

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None
    tl = None

HEADS_PER_PROGRAM = 8
ENABLED = True  # False: the compiled step keeps inductor's RoPE and cache write (for A/B measurements)

if triton is not None:

    @triton.jit
    def _rope_write_kv_kernel(
        qkv_ptr, cos_ptr, sin_ptr, cache_ptr, columns_ptr, q_ptr,
        W, n_heads, n_kv_heads, stride_qkv, stride_cos_b, stride_cos_l, stride_cache_kv, stride_cache_b,
        stride_cache_h, stride_cache_t,
        HEAD_DIM: tl.constexpr, HEADS: tl.constexpr, HAS_COLUMNS: tl.constexpr, PER_ROW: tl.constexpr,
    ):
        row = tl.program_id(0)  # b * W + l
        group = tl.program_id(1)
        b = row // W
        l_idx = row % W
        half: tl.constexpr = HEAD_DIM // 2
        d = tl.arange(0, half)
        h = group * HEADS + tl.arange(0, HEADS)  # heads of [q | k | v], q's first
        total = n_heads + 2 * n_kv_heads
        live = h < total
        base = qkv_ptr + row * stride_qkv + h[:, None] * HEAD_DIM + d[None, :]
        x1 = tl.load(base, mask=live[:, None], other=0.0).to(tl.float32)
        x2 = tl.load(base + half, mask=live[:, None], other=0.0).to(tl.float32)
        trig = b * stride_cos_b + l_idx * stride_cos_l + d
        c1 = tl.load(cos_ptr + trig)[None, :]
        c2 = tl.load(cos_ptr + trig + half)[None, :]
        s1 = tl.load(sin_ptr + trig)[None, :]
        s2 = tl.load(sin_ptr + trig + half)[None, :]
        rotate = h < n_heads + n_kv_heads  # q and k heads; v is copied as is
        y1 = tl.where(rotate[:, None], x1 * c1 - x2 * s1, x1)
        y2 = tl.where(rotate[:, None], x2 * c2 + x1 * s2, x2)
        dtype = q_ptr.dtype.element_ty
        is_q = h < n_heads
        q_base = q_ptr + ((b * W + l_idx) * n_heads + h[:, None]) * HEAD_DIM + d[None, :]  # [B, W, H, hd] in memory
        q_mask = (is_q & live)[:, None]
        tl.store(q_base, y1.to(dtype), mask=q_mask)
        tl.store(q_base + half, y2.to(dtype), mask=q_mask)
        if PER_ROW:  # columns [B, W]: each row its own
            column = tl.load(columns_ptr + row)
        elif HAS_COLUMNS:
            column = tl.load(columns_ptr + l_idx)
        else:
            column = l_idx
        kv = h - n_heads  # 0 .. 2 H_kv - 1: keys, then values
        which = kv // n_kv_heads
        head = kv % n_kv_heads
        c_base = (cache_ptr + which[:, None] * stride_cache_kv + b * stride_cache_b + head[:, None] * stride_cache_h
                  + column * stride_cache_t + d[None, :])
        c_mask = ((~is_q) & live)[:, None]
        tl.store(c_base, y1.to(dtype), mask=c_mask)
        tl.store(c_base + half, y2.to(dtype), mask=c_mask)


def applies(qkv: torch.Tensor, cos: torch.Tensor, cache: torch.Tensor | None, columns: torch.Tensor | None) -> bool:
    """Whether ``rope_write_kv`` can take this step: CUDA, a layer cache [2, B, H_kv, T, hd] in the
    projection's dtype, columns shared by the rows ([W]), per row ([B, W], contiguous) or none (the whole canvas),
    tables [1 or B, 1, W, hd]."""
    if not ENABLED or triton is None or cache is None or not qkv.is_cuda or torch.version.hip is not None:
        return False
    if cache.dtype != qkv.dtype or cache.stride(-1) != 1:
        return False
    if columns is not None and not (columns.dim() == 1 or (
            columns.dim() == 2 and columns.shape == qkv.shape[:2] and columns.is_contiguous())):
        return False
    hd = cache.shape[-1]
    return hd % 2 == 0 and (hd // 2) & (hd // 2 - 1) == 0 and cos.stride(-1) == 1 and cos.dtype == torch.float32


def rope_write_kv(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: torch.Tensor, columns: torch.Tensor | None,
    n_heads: int, n_kv_heads: int,
) -> torch.Tensor:
    """q after RoPE [B, H, W, hd] from the projection ``qkv`` [B, W, (H + 2 H_kv) hd]; k after RoPE and v are
    written into ``cache`` [2, B, H_kv, T, hd] at ``columns`` [W] or [B, W] (at 0..W-1 if ``None``).

    cos/sin: float32 tables [1 or B, 1, W, hd] of the window's positions.
    """
    B, W, _ = qkv.shape
    hd = cache.shape[-1]
    flat = qkv.reshape(B * W, -1)
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    # q is [B, H, W, hd] over [B, W, H, hd] memory: the attention's output then comes in that layout too, so
    # the output projection reads it without a copy (as after the reference's reshape + transpose)
    q = torch.empty((B, W, n_heads, hd), device=qkv.device, dtype=qkv.dtype)
    if sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    cos_b = cos.stride(0) if cos.shape[0] > 1 else 0
    grid = (B * W, triton.cdiv(n_heads + 2 * n_kv_heads, HEADS_PER_PROGRAM))
    # Triton launches on the current device (the Triton interpreter, TRITON_INTERPRET=1: on the CPU)
    with torch.cuda.device(qkv.device) if qkv.is_cuda else contextlib.nullcontext():
        _rope_write_kv_kernel[grid](
            flat, cos, sin, cache, columns if columns is not None else flat, q,
            W, n_heads, n_kv_heads, flat.stride(0), cos_b, cos.stride(2), cache.stride(0), cache.stride(1),
            cache.stride(2), cache.stride(3),
            HEAD_DIM=hd, HEADS=HEADS_PER_PROGRAM, HAS_COLUMNS=columns is not None,
            PER_ROW=columns is not None and columns.dim() == 2, num_warps=4,
        )
    return q.transpose(1, 2)
