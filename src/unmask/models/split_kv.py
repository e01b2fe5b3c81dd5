"""Split-KV attention for a short query window over a long cache (the dual-cache decode step), in Triton.

At a batch-1 dual-cache step of LLaDA-8B, 32 queries per head attend over 512 cached keys. One program per
(row, head) leaves most of an H100 idle (32 programs for 132 SMs): cuDNN's kernel takes 12 us per layer in
a CUDA graph, four times the 2.8 us of reading the cache. As in Flash-Decoding (Dao et al. 2023), the keys
are cut into ``splits`` chunks processed by separate programs; each returns its chunk's softmax-weighted
values ``o_s`` and log-sum-exp ``lse_s``, and the chunks merge exactly:

    out = sum_s exp(lse_s - LSE) o_s,    LSE = log sum_s exp(lse_s).

The merge is plain PyTorch (``merge_splits``) so that ``torch.compile`` fuses it into the kernel that reads
the attention output next. Numerically this is attention up to float32 rounding (a different summation
order than cuDNN's), so only the ``fused`` decode mode uses it; ``exact`` keeps the eager kernels.
"""

from __future__ import annotations

import math

import torch

try:  # Triton ships with CUDA builds of PyTorch; CPU builds have no use for this kernel
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the build
    triton = None

MAX_WINDOW = 64  # queries per head handled in one program (the dual step's block)
BLOCK_KEYS = 64
TARGET_PROGRAMS = 264  # two waves of an H100's 132 SMs


def available(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None) -> bool:
    """Whether split-KV attention runs for queries ``q`` [B, H, L, D] over keys ``k`` [B, H_kv, T, D]: CUDA,
    Triton, a short window over a longer cache, 16-bit values, a key mask of one row per batch row (or none)."""
    return (triton is not None and q.is_cuda and q.shape[2] <= MAX_WINDOW < k.shape[2]
            and q.shape[-1] in (64, 128, 256) and q.dtype in (torch.bfloat16, torch.float16)
            and (key_mask is None or (key_mask.dim() == 4 and key_mask.shape[1] == key_mask.shape[2] == 1)))


def choose_splits(rows_heads: int, keys: int) -> int:
    """Key chunks per (row, head): enough programs to fill the GPU twice, chunks of at least BLOCK_KEYS."""
    return max(1, min(math.ceil(TARGET_PROGRAMS / rows_heads), math.ceil(keys / BLOCK_KEYS)))


if triton is not None:

    @triton.jit
    def _split_kv_kernel(
        Q, K, V, MASK, OUT, LSE,
        sqb, sqh, sql, sqd, skb, skh, skt, skd, svb, svh, svt, svd, smb, smt,
        n_heads, group, n_queries, n_keys, keys_per_split, scale,
        HAS_MASK: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_T: tl.constexpr, D: tl.constexpr,
    ):
        bh = tl.program_id(0)
        split = tl.program_id(1)
        splits = tl.num_programs(1)
        b = bh // n_heads
        h = bh % n_heads
        hk = h // group
        offs_l = tl.arange(0, BLOCK_L)
        offs_d = tl.arange(0, D)
        offs_t = tl.arange(0, BLOCK_T)
        q = tl.load(Q + b * sqb + h * sqh + offs_l[:, None] * sql + offs_d[None, :] * sqd,
                    mask=offs_l[:, None] < n_queries, other=0.0)
        m = tl.full([BLOCK_L], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_L], tl.float32)
        acc = tl.zeros([BLOCK_L, D], tl.float32)
        start = split * keys_per_split
        end = tl.minimum(start + keys_per_split, n_keys)
        for t0 in range(start, end, BLOCK_T):
            t = t0 + offs_t
            valid = t < end
            if HAS_MASK:
                valid = valid & (tl.load(MASK + b * smb + t * smt, mask=t < end, other=0) != 0)
            k = tl.load(K + b * skb + hk * skh + t[:, None] * skt + offs_d[None, :] * skd,
                        mask=valid[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a chunk with no valid key so far
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m - m_safe)
            total = total * alpha + tl.sum(p, 1)
            v = tl.load(V + b * svb + hk * svh + t[:, None] * svt + offs_d[None, :] * svd,
                        mask=valid[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        out = acc / tl.maximum(total, 1e-30)[:, None]
        lse = tl.where(total > 0, m + tl.log(tl.maximum(total, 1e-30)), float("-inf"))
        row = (bh * splits + split) * BLOCK_L
        tl.store(OUT + (row + offs_l[:, None]) * D + offs_d[None, :], out, mask=offs_l[:, None] < n_queries)
        tl.store(LSE + row + offs_l, lse, mask=offs_l < n_queries)


def split_kv_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
    splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chunk attention of ``q`` [B, H, L, D] over ``k``, ``v`` [B, H_kv, T, D] (any strides, last dim
    contiguous); ``key_mask`` [B, 1, 1, T] (True = attend) or ``None``. Returns the chunks' outputs
    [B, H, S, L, D] and log-sum-exps [B, H, S, L] in float32, for ``merge_splits``."""
    B, H, L, D = q.shape
    Hk, T = k.shape[1], k.shape[2]
    splits = splits or choose_splits(B * H, T)
    keys_per_split = math.ceil(math.ceil(T / splits) / BLOCK_KEYS) * BLOCK_KEYS
    splits = math.ceil(T / keys_per_split)
    block_l = max(16, triton.next_power_of_2(L))
    out = torch.empty(B, H, splits, block_l, D, device=q.device, dtype=torch.float32)
    lse = torch.empty(B, H, splits, block_l, device=q.device, dtype=torch.float32)
    mask = key_mask.expand(B, 1, 1, T).reshape(B, T).view(torch.uint8) if key_mask is not None else q  # q: a dummy
    mask_strides = mask.stride() if key_mask is not None else (0, 0)
    _split_kv_kernel[(B * H, splits)](
        q, k, v, mask, out, lse,
        *q.stride(), *k.stride(), *v.stride(), *mask_strides,
        H, H // Hk, L, T, keys_per_split, 1.0 / math.sqrt(D),
        HAS_MASK=key_mask is not None, BLOCK_L=block_l, BLOCK_T=BLOCK_KEYS, D=D, num_warps=4,
    )
    return out[..., :L, :], lse[..., :L]


def merge_splits(out: torch.Tensor, lse: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """sum_s softmax_s(lse_s) o_s: the attention output [B, H, L, D] from ``split_kv_attention``'s chunks."""
    weights = torch.softmax(lse, dim=2).unsqueeze(-1)
    return (out * weights).sum(2).to(dtype)
