"""Skinny matmuls for the decode step: y = x @ W^T with few rows in x (a dual-cache step at batch 1 has 32).

At 32 rows a projection is bound by reading W (the weight floor), and cuBLAS reaches 76-91% of it at the
LLaDA-8B shapes. The Triton kernel here computes y^T = W @ x^T ("swap AB": W's tile is the MMA's large
operand, so Hopper's wgmma applies with only 32 rows of x), each program owning ``BLOCK_N`` output
features and a ``1 / SPLIT_K`` slice of the reduction. With ``SPLIT_K > 1`` the programs write float32
partial sums [SPLIT_K, M, N] and the caller adds them, so the reduction fuses into whatever elementwise
kernel consumes y (a residual add, a norm) instead of costing a kernel of its own.

CUDA only (Triton). ``fast_linear`` is the entry point: ``F.linear`` through this kernel where it applies
(a CUDA bf16/fp16 input of at most ``MAX_ROWS`` rows, tiled shapes), ``F.linear`` otherwise; the compiled
(``fused``) decode step uses it for every dense projection and the LM head, the eager and ``exact`` modes
never do (their kernels stay those of the reference-checked eager path).

Measured at the LLaDA-8B shapes, 32 rows, one H100 (``benchmarks/skinny_probe.py``, in a CUDA graph of 32
layers' distinct weights): qkv 37.6 us vs cuBLAS 40.2, attention output 14.3 vs 14.8, gate/up 70.3 vs
74.0, down 37.2 vs 40.7, LM head 347.1 vs 377.9 (its weight floor: 344.4).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from unmask.models.quantize import QuantizedWeight

try:  # Triton ships with CUDA builds of PyTorch, not with the CPU build
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None
    tl = None


@dataclass(frozen=True)
class SkinnyConfig:
    """One launch configuration: output features per program, reduction chunk, K splits, pipeline depth."""

    block_n: int = 64
    block_k: int = 128
    split_k: int = 1
    stages: int = 4
    warps: int = 4
    swap: bool = True


if triton is not None:

    @triton.jit
    def _skinny_mm_kernel(
        x_ptr, w_ptr, out_ptr, M, N, K, k_per_split,
        stride_xm, stride_wn, stride_os, stride_om,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWAP: tl.constexpr,
        EVEN_K: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        pid_m = tl.program_id(2)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        k_start = pid_k * k_per_split
        rk = tl.arange(0, BLOCK_K)
        x_ptrs = x_ptr + rm[:, None] * stride_xm + (k_start + rk)[None, :]
        w_ptrs = w_ptr + rn[:, None] * stride_wn + (k_start + rk)[None, :]
        m_ok = rm[:, None] < M
        if SWAP:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, k_per_split, BLOCK_K):
            if EVEN_K:
                w = tl.load(w_ptrs)
                x = tl.load(x_ptrs, mask=m_ok, other=0.0)
            else:
                k_ok = (k_start + k + rk)[None, :] < K
                w = tl.load(w_ptrs, mask=k_ok, other=0.0)
                x = tl.load(x_ptrs, mask=m_ok & k_ok, other=0.0)
            if SWAP:
                acc = tl.dot(w, tl.trans(x), acc)
            else:
                acc = tl.dot(x, tl.trans(w), acc)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        out_ptrs = out_ptr + pid_k * stride_os
        if SWAP:
            tl.store(out_ptrs + rm[None, :] * stride_om + rn[:, None], acc.to(out_ptr.dtype.element_ty),
                     mask=rm[None, :] < M)
        else:
            tl.store(out_ptrs + rm[:, None] * stride_om + rn[None, :], acc.to(out_ptr.dtype.element_ty),
                     mask=m_ok)


def skinny_partials(x: torch.Tensor, weight: torch.Tensor, config: SkinnyConfig) -> torch.Tensor:
    """x [M, K] @ weight [N, K]^T as ``config.split_k`` float32 partial sums [split_k, M, N] (or, with
    one split, y [M, N] in x's dtype). N must be a multiple of ``config.block_n``."""
    if triton is None:
        raise RuntimeError("skinny_partials needs Triton (a CUDA build of PyTorch)")
    M, K = x.shape
    N = weight.shape[0]
    if weight.shape[1] != K or N % config.block_n:
        raise ValueError(f"skinny matmul: x {tuple(x.shape)}, weight {tuple(weight.shape)}, block_n {config.block_n}")
    if x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError("skinny matmul needs x and weight contiguous along K")
    split = config.split_k
    k_per_split = triton.cdiv(triton.cdiv(K, split), config.block_k) * config.block_k
    dtype = x.dtype if split == 1 else torch.float32
    out = torch.empty((split, M, N), device=x.device, dtype=dtype)
    block_m = block_rows(M)
    grid = (N // config.block_n, split, triton.cdiv(M, block_m))
    with torch.cuda.device(x.device):  # Triton launches on the current device
        _skinny_mm_kernel[grid](
            x, weight, out, M, N, K, k_per_split, x.stride(0), weight.stride(0), out.stride(0), out.stride(1),
            BLOCK_M=block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k, SWAP=config.swap,
            EVEN_K=K % (split * config.block_k) == 0 and k_per_split * split == K,
            num_warps=config.warps, num_stages=config.stages,
        )
    return out[0] if split == 1 else out


ENABLED = True  # False: fast_linear is F.linear everywhere (for A/B measurements; set before compiling)
MAX_ROWS = 64  # above this the projections are no longer weight-bound at 8B shapes: cuBLAS's tiles win
# Tuned on one H100 (sm90) at 32 rows by benchmarks/skinny_probe.py, keyed by (N, K); other shapes and
# other GPUs take ``default_config`` (74 KiB of shared memory: fits every GPU from sm80 on).
TUNED: dict[tuple[int, int], SkinnyConfig] = {
    (12288, 4096): SkinnyConfig(64, 128, 1, 3, 4),  # LLaDA-8B q/k/v
    (4096, 4096): SkinnyConfig(64, 128, 2, 5, 4),  # attention output
    (24576, 4096): SkinnyConfig(64, 128, 1, 3, 4),  # gate/up
    (4096, 12288): SkinnyConfig(64, 128, 4, 3, 4),  # down
    (126464, 4096): SkinnyConfig(256, 128, 1, 3, 4),  # LM head
}


def default_config(n: int, k: int, multiprocessors: int = 132) -> SkinnyConfig:
    """64 features per program; the reduction split in 2 or 4 while that leaves fewer programs than
    twice the multiprocessors (a weight-bound kernel needs every multiprocessor streaming)."""
    split = 1
    while split < 4 and (n // 64) * split < 2 * multiprocessors and k % (2 * split * 128) == 0:
        split *= 2
    return SkinnyConfig(64, 128, split, 3, 4)


_CAPABILITY: dict[int, tuple[int, int]] = {}  # CUDA device index -> compute capability (``prepare``)
_SHARED_MEMORY: dict[int, int] = {}  # CUDA device index -> shared memory a block may opt in to, bytes
SM90_SHARED_MEMORY = 232448  # H100/H200: 227 KiB per block


def block_rows(m: int) -> int:
    """The kernel's row tile for ``m`` rows of x: a power of two from 16 to 64."""
    return max(16, 1 << (min(m, 64) - 1).bit_length())


def fit_stages(config: SkinnyConfig, m: int, shared_memory: int, element_bytes: int = 2) -> SkinnyConfig:
    """``config`` with its pipeline shortened until the staged tiles fit in ``shared_memory`` bytes.

    Each stage holds a weight tile [block_n, block_k] and an x tile [block_rows(m), block_k]; a depth tuned at
    32 rows can overflow at 33-64 (the LM head's 256-wide tile: 3 x 80 KiB > 227 KiB on sm90).
    """
    per_stage = (config.block_n + block_rows(m)) * config.block_k * element_bytes
    stages = max(1, min(config.stages, shared_memory // per_stage))
    return config if stages == config.stages else replace(config, stages=stages)


def prepare(device: torch.device) -> None:
    """Read ``device``'s compute capability once, outside torch.compile's tracing (the compiled kernels
    call this when they are switched on). Triton's bf16 MMA needs sm80 or newer (A100, H100, ...);
    NVIDIA only. Until a device is prepared, ``fast_linear`` is ``F.linear`` there."""
    if triton is None or device.type != "cuda" or torch.version.hip is not None:
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    _CAPABILITY[index] = torch.cuda.get_device_capability(index)
    properties = torch.cuda.get_device_properties(index)
    _SHARED_MEMORY[index] = int(getattr(properties, "shared_memory_per_block_optin", SM90_SHARED_MEMORY))


def config_for(n: int, k: int, device: torch.device | None = None) -> SkinnyConfig:
    """The tuned configuration of (N, K) on an sm90 GPU (H100/H200), where ``TUNED`` was measured, else
    ``default_config``."""
    index = None
    if device is not None and device.type == "cuda":  # torch.device("cuda") names no index: the current one
        index = device.index if device.index is not None else torch.cuda.current_device()
    hopper = _CAPABILITY.get(index) == (9, 0)
    return (TUNED.get((n, k)) if hopper else None) or default_config(n, k)


def _launch_config(x: torch.Tensor, weight: torch.Tensor) -> SkinnyConfig | None:
    """The kernel's configuration for ``x @ weight^T``, or ``None`` where it does not apply: it needs a
    prepared sm80+ CUDA device, bf16/fp16, at most ``MAX_ROWS`` rows, a weight [N, K] with K contiguous
    and N, K tiled by the configuration."""
    if not ENABLED or not x.is_cuda or _CAPABILITY.get(x.device.index, (0, 0)) < (8, 0):
        return None
    if x.dtype not in (torch.bfloat16, torch.float16) or weight.dtype != x.dtype:
        return None
    if weight.dim() != 2 or weight.stride(1) != 1 or x.shape[-1] != weight.shape[1]:
        return None
    n, k = weight.shape
    cfg = config_for(n, k, x.device)
    m = x.numel() // k
    if m > MAX_ROWS or n % cfg.block_n or k % (cfg.split_k * cfg.block_k):
        return None
    return fit_stages(cfg, m, _SHARED_MEMORY.get(x.device.index, SM90_SHARED_MEMORY), x.element_size())


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``fast_linear(x, weight)`` takes the Triton kernel (``_launch_config``)."""
    return _launch_config(x, weight) is not None


@torch.library.custom_op("unmask::skinny_mm", mutates_args=(), device_types="cuda")
def skinny_mm(x: torch.Tensor, weight: torch.Tensor, block_n: int, block_k: int, split_k: int, stages: int,
              warps: int) -> torch.Tensor:
    """``skinny_partials`` as an operator (opaque to torch.compile, which fuses around it)."""
    return skinny_partials(x, weight, SkinnyConfig(block_n, block_k, split_k, stages, warps))


@skinny_mm.register_fake
def _(x, weight, block_n, block_k, split_k, stages, warps):
    m, n = x.shape[0], weight.shape[0]
    return x.new_empty((m, n)) if split_k == 1 else x.new_empty((split_k, m, n), dtype=torch.float32)


def fast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ weight^T (+ bias), through the skinny Triton kernel where ``applies``, else ``F.linear``.

    With a split reduction the float32 partials are added here, in PyTorch, so that under torch.compile
    the sum fuses into the kernel that consumes y.
    """
    if isinstance(weight, QuantizedWeight):  # its own matmul (the conversion fuses under torch.compile)
        return weight.linear(x, bias)
    cfg = _launch_config(x, weight)
    if cfg is None:
        return F.linear(x, weight, bias)
    n, k = weight.shape
    x2 = x.reshape(-1, k)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    out = torch.ops.unmask.skinny_mm(x2, weight, cfg.block_n, cfg.block_k, cfg.split_k, cfg.stages, cfg.warps)
    y = (out if cfg.split_k == 1 else out.sum(0).to(x.dtype)).reshape(*x.shape[:-1], n)
    return y if bias is None else y + bias
