"""Skinny matmuls for the decode step: y = x @ W^T with few rows in x (a dual-cache step at batch 1 has 32).

At 32 rows a projection is bound by reading W (the weight floor), and cuBLAS reaches 76-91% of it at the
LLaDA-8B shapes. The Triton kernel here computes y^T = W @ x^T ("swap AB": W's tile is the MMA's large
operand, so Hopper's wgmma applies with only 32 rows of x), each program owning ``BLOCK_N`` output
features and a ``1 / SPLIT_K`` slice of the reduction. With ``SPLIT_K > 1`` the programs write float32
partial sums [SPLIT_K, M, N] and the caller adds them, so the reduction fuses into whatever elementwise
kernel consumes y (a residual add, a norm) instead of costing a kernel of its own.

Weight-only quantized weights (``models/quantize.py``: int8, fp8, int4) are read in their own bytes and converted
in registers (``W_MODE`` of the kernel), so a batch-1 step streams 1 (int4: 1/2) byte per weight; ``fp8-w8a8``
weights meet x quantized per row to float8 in the tensor cores' fp8 MMA (sm89+), with no conversion at all.

CUDA only (Triton; the Triton interpreter runs it on the CPU for tests). ``fast_linear`` is the entry point:
``F.linear`` through this kernel where it applies
(a CUDA bf16/fp16 input of at most ``MAX_ROWS`` rows, tiled shapes), ``F.linear`` otherwise; the compiled
(``fused``) decode step uses it for every dense projection and the LM head, the eager and ``exact`` modes
never do (their kernels stay those of the reference-checked eager path).

Measured at the LLaDA-8B shapes, 32 rows, one H100 (``benchmarks/skinny_probe.py``, in a CUDA graph of 32
layers' distinct weights): qkv 37.6 us vs cuBLAS 40.2, attention output 14.3 vs 14.8, gate/up 70.3 vs
74.0, down 37.2 vs 40.7, LM head 347.1 vs 377.9 (its weight floor: 344.4).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from unmask.models.quantize import FP8, QuantizedWeight, quantize_rows_fp8

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
        x_ptr, w_ptr, out_ptr, scale_ptr, x_scale_ptr, M, N, K, k_per_split,
        stride_xm, stride_wn, stride_os, stride_om, stride_sn,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SWAP: tl.constexpr,
        EVEN_K: tl.constexpr, W_MODE: tl.constexpr, GROUP: tl.constexpr,
        BITS: tl.constexpr = False, MAGIC: tl.constexpr = 0, MAGIC_VALUE: tl.constexpr = 0.0,
        FP8_SHIFT: tl.constexpr = 0, FP8_FACTOR: tl.constexpr = 1.0,
    ):
        # W_MODE 0: W in x's dtype; 1 (int8), 3 (fp8): one float32 scale per row (applied to the sums);
        # 4 (fp8-w8a8): x already float8 with one float32 scale per row of x (x_scale_ptr), an fp8 x fp8 MMA, both
        # scales on the sums;
        # 2: int4, two per byte (low nibble the even column) met by x's even and odd columns in two dots, one
        # scale per row and GROUP columns (applied to the tile's sums where a group spans whole tiles, else to
        # the tile: W = q * s in float32, then x's dtype, as QuantizedWeight.dequantize).
        # BITS: integer bit operations instead of conversion instructions (``BIT_TRICKS``): MAGIC | n is the
        # 16-bit float B + n (n < 16); int8 q = 16 hi + lo - 128 in two dots, the bias removed with x's row sums;
        # fp8 bits moved into x's format give w * 2^-FP8_FACTOR's exponent, FP8_FACTOR restores it on the sums
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        pid_m = tl.program_id(2)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        k_start = pid_k * k_per_split
        rk = tl.arange(0, BLOCK_K)
        if W_MODE == 2:  # x's even and odd columns meet the low and high nibbles: no interleave of W's tile
            rh = tl.arange(0, BLOCK_K // 2)
            x_ptrs = x_ptr + rm[:, None] * stride_xm + (k_start + 2 * rh)[None, :]
            w_ptrs = w_ptr + rn[:, None] * stride_wn + (k_start // 2 + rh)[None, :]
        else:
            x_ptrs = x_ptr + rm[:, None] * stride_xm + (k_start + rk)[None, :]
            w_ptrs = w_ptr + rn[:, None] * stride_wn + (k_start + rk)[None, :]
        m_ok = rm[:, None] < M
        if SWAP:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_low = tl.zeros_like(acc)  # BITS int8: the low nibbles' sums
        x_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # BITS int8: x's row sums (the bias's correction)
        for k in range(0, k_per_split, BLOCK_K):
            if W_MODE == 2:
                w = tl.load(w_ptrs)
                x_even = tl.load(x_ptrs, mask=m_ok, other=0.0)
                x_odd = tl.load(x_ptrs + 1, mask=m_ok, other=0.0)
                if BITS and GROUP % BLOCK_K == 0:  # B + (q + 8) by bits; (B + 8) sum(x) is taken off the sums
                    low = ((w & 0xF).to(tl.uint16) | MAGIC).to(tl.uint16).to(x_even.dtype, bitcast=True)
                    high = ((w >> 4).to(tl.uint16) | MAGIC).to(tl.uint16).to(x_even.dtype, bitcast=True)
                else:
                    low = ((w & 0xF).to(tl.int8) - 8).to(x_even.dtype)  # |q| <= 8: exact in bf16/fp16
                    high = ((w >> 4).to(tl.int8) - 8).to(x_even.dtype)
                if GROUP % BLOCK_K == 0:  # one group per tile: the scale applies to the tile's sums
                    s = tl.load(scale_ptr + rn * stride_sn + (k_start + k) // GROUP)
                    bias = tl.zeros((BLOCK_M,), dtype=tl.float32)
                    if BITS:
                        bias = (tl.sum(x_even.to(tl.float32), axis=1) + tl.sum(x_odd.to(tl.float32), axis=1)) * (
                            MAGIC_VALUE + 8.0)
                    if SWAP:
                        part = tl.dot(low, tl.trans(x_even)) + tl.dot(high, tl.trans(x_odd)) - bias[None, :]
                        acc += part * s[:, None]
                    else:
                        part = tl.dot(x_even, tl.trans(low)) + tl.dot(x_odd, tl.trans(high)) - bias[:, None]
                        acc += part * s[None, :]
                else:  # several groups per tile: W = q * s in float32, then x's dtype (QuantizedWeight.dequantize)
                    HALF_GROUP: tl.constexpr = GROUP // 2
                    groups = (k_start + k) // GROUP + tl.arange(0, BLOCK_K // GROUP)
                    s = tl.load(scale_ptr + rn[:, None] * stride_sn + groups[None, :])[:, :, None]
                    low = tl.reshape(low.to(tl.float32), (BLOCK_N, BLOCK_K // GROUP, HALF_GROUP)) * s
                    high = tl.reshape(high.to(tl.float32), (BLOCK_N, BLOCK_K // GROUP, HALF_GROUP)) * s
                    low = tl.reshape(low, (BLOCK_N, BLOCK_K // 2))
                    high = tl.reshape(high, (BLOCK_N, BLOCK_K // 2))
                    low, high = low.to(x_even.dtype), high.to(x_even.dtype)
                    if SWAP:
                        acc = tl.dot(high, tl.trans(x_odd), tl.dot(low, tl.trans(x_even), acc))
                    else:
                        acc = tl.dot(x_odd, tl.trans(high), tl.dot(x_even, tl.trans(low), acc))
                x_ptrs += BLOCK_K
                w_ptrs += BLOCK_K // 2
            else:
                if EVEN_K:
                    w = tl.load(w_ptrs)
                    x = tl.load(x_ptrs, mask=m_ok, other=0.0)
                else:  # (W_MODE 0 only)
                    k_ok = (k_start + k + rk)[None, :] < K
                    w = tl.load(w_ptrs, mask=k_ok, other=0.0)
                    x = tl.load(x_ptrs, mask=m_ok & k_ok, other=0.0)
                if BITS and W_MODE == 1:  # q + 128 = 16 hi + lo; each nibble n as the float B + n
                    u = (w.to(tl.uint8, bitcast=True) ^ 0x80).to(tl.uint8)
                    high = ((u >> 4).to(tl.uint16) | MAGIC).to(tl.uint16).to(x.dtype, bitcast=True)
                    w = ((u & 0xF).to(tl.uint16) | MAGIC).to(tl.uint16).to(x.dtype, bitcast=True)
                    x_sum += tl.sum(x.to(tl.float32), axis=1)
                    if SWAP:
                        acc_low = tl.dot(w, tl.trans(x), acc_low)
                    else:
                        acc_low = tl.dot(x, tl.trans(w), acc_low)
                    w = high  # the high nibbles go through the dot below
                elif BITS and W_MODE == 3:  # sign and exponent/mantissa bits moved into x's 16-bit format
                    b = w.to(tl.uint8, bitcast=True).to(tl.uint16)
                    w = (((b & 0x80) << 8) | ((b & 0x7F) << FP8_SHIFT)).to(tl.uint16).to(x.dtype, bitcast=True)
                elif W_MODE == 1 or W_MODE == 3:
                    w = w.to(x.dtype)
                if SWAP:  # (W_MODE 4: both fp8, the tensor cores' own format)
                    acc = tl.dot(w, tl.trans(x), acc)
                else:
                    acc = tl.dot(x, tl.trans(w), acc)
                x_ptrs += BLOCK_K
                w_ptrs += BLOCK_K
        if BITS and W_MODE == 1:  # sum (16 (B + hi) + (B + lo)) x = sum (q + 128 + 17 B) x
            acc = 16.0 * acc + acc_low - (128.0 + 17.0 * MAGIC_VALUE) * (x_sum[None, :] if SWAP else x_sum[:, None])
        if BITS and W_MODE == 3:
            acc = acc * FP8_FACTOR
        if W_MODE == 1 or W_MODE == 3 or W_MODE == 4:
            s = tl.load(scale_ptr + rn * stride_sn)
            acc = acc * (s[:, None] if SWAP else s[None, :])
        if W_MODE == 4:
            s_x = tl.load(x_scale_ptr + rm, mask=rm < M, other=0.0)
            acc = acc * (s_x[None, :] if SWAP else s_x[:, None])
        out_ptrs = out_ptr + pid_k * stride_os
        if SWAP:
            tl.store(out_ptrs + rm[None, :] * stride_om + rn[:, None], acc.to(out_ptr.dtype.element_ty),
                     mask=rm[None, :] < M)
        else:
            tl.store(out_ptrs + rm[:, None] * stride_om + rn[None, :], acc.to(out_ptr.dtype.element_ty),
                     mask=m_ok)


W_MODES = {"int8": 1, "int4": 2, "fp8": 3, "fp8-w8a8": 4}  # the kernel's layouts (``_skinny_mm_kernel``); 0: plain
# Quantized weights converted by integer bit operations instead of conversion instructions (which run at a
# fraction of the integer rate): off until measured against the conversions on a GPU (benchmarks/quant_probe.py
# --bits). Per x dtype: MAGIC | n is the float MAGIC_VALUE + n for a nibble n; an fp8 e4m3 byte's exponent and
# mantissa bits shifted by FP8_SHIFT into the 16-bit format give the value times 1 / FP8_FACTOR (subnormals too;
# in bf16 a product x w below fp32's normal range, |x q| < 2^-6, may be flushed by the MMA: a relative error far
# below bf16's, to be confirmed by the GPU measurement with the accuracy runs).
BIT_TRICKS = False
BIT_CONSTANTS = {
    torch.bfloat16: {"MAGIC": 0x4300, "MAGIC_VALUE": 128.0, "FP8_SHIFT": 4, "FP8_FACTOR": 2.0**120},
    torch.float16: {"MAGIC": 0x6400, "MAGIC_VALUE": 1024.0, "FP8_SHIFT": 7, "FP8_FACTOR": 2.0**8},
}


def weight_element_bytes(weight: torch.Tensor | QuantizedWeight) -> float:
    """Bytes per weight element the kernel streams: 2 (bf16/fp16), 1 (int8, fp8), 0.5 (int4)."""
    if isinstance(weight, QuantizedWeight):
        return 0.5 if weight.mode == "int4" else 1.0
    return float(weight.element_size())


def skinny_partials(x: torch.Tensor, weight: torch.Tensor | QuantizedWeight, config: SkinnyConfig,
                    bits: bool | None = None, x_scale: torch.Tensor | None = None,
                    out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """x [M, K] @ weight [N, K]^T as ``config.split_k`` float32 partial sums [split_k, M, N] (or, with
    one split, y [M, N] in x's dtype, or ``out_dtype``). N must be a multiple of ``config.block_n``.

    A weight-only quantized ``weight`` (int8, fp8: y = (x @ Q^T) * s per row; int4: W = Q * s per row and group,
    ``models/quantize.py``) is read in its own bytes and converted in the kernel's registers; its reduction
    must be tiled by the configuration (and, int4, its group a multiple or a divisor of ``block_k``). ``bits``:
    convert by integer bit operations (default ``BIT_TRICKS``). An ``fp8-w8a8`` weight meets x in float8, the
    tensor cores' own format, no conversion: y = (x_q @ Q^T) * s_x * s with x_q, s_x = ``quantize_rows_fp8(x)``
    (pass them as ``x``, ``x_scale`` and the output dtype as ``out_dtype``, or pass x in bf16/fp16)."""
    if triton is None:
        raise RuntimeError("skinny_partials needs Triton (a CUDA build of PyTorch)")
    M, K = x.shape
    N = weight.shape[0]
    if weight.shape[1] != K or N % config.block_n:
        raise ValueError(f"skinny matmul: x {tuple(x.shape)}, weight {tuple(weight.shape)}, block_n {config.block_n}")
    split = config.split_k
    k_per_split = triton.cdiv(triton.cdiv(K, split), config.block_k) * config.block_k
    even_k = K % (split * config.block_k) == 0 and k_per_split * split == K
    w_mode, group, scale = 0, 1, x
    if isinstance(weight, QuantizedWeight):
        if weight.mode not in W_MODES:
            raise ValueError(f"skinny matmul reads {', '.join(W_MODES)} weights, not {weight.mode!r}")
        w_mode, group, scale = W_MODES[weight.mode], weight.group_size, weight.scale
        if not even_k or (w_mode == 2 and config.block_k % group and group % config.block_k):
            raise ValueError(f"skinny matmul: a {weight.mode} weight [{N}, {K}] (group {weight.group_size}) is not "
                             f"tiled by block_k {config.block_k} x split_k {split}")
        weight = weight.data
    if w_mode == 4 and x_scale is None:
        out_dtype = out_dtype or x.dtype
        x, x_scale = quantize_rows_fp8(x)
    if (x_scale is not None) != (w_mode == 4) or (w_mode == 4 and (x.dtype != FP8 or x_scale.shape != (M, 1))):
        raise ValueError("skinny matmul: x_scale [M, 1] goes with a float8 x and an fp8-w8a8 weight only")
    if x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError("skinny matmul needs x and weight contiguous along K")
    dtype = (out_dtype or x.dtype) if split == 1 else torch.float32
    out = torch.empty((split, M, N), device=x.device, dtype=dtype)
    block_m = block_rows(M)
    grid = (N // config.block_n, split, triton.cdiv(M, block_m))
    # Triton launches on the current device (the Triton interpreter, TRITON_INTERPRET=1: on the CPU)
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _skinny_mm_kernel[grid](
            x, weight, out, scale, scale if x_scale is None else x_scale, M, N, K, k_per_split, x.stride(0),
            weight.stride(0), out.stride(0), out.stride(1), scale.stride(0), BLOCK_M=block_m, BLOCK_N=config.block_n,
            BLOCK_K=config.block_k, SWAP=config.swap, EVEN_K=even_k, W_MODE=w_mode, GROUP=group,
            num_warps=config.warps, num_stages=config.stages,
            BITS=bool(BIT_TRICKS if bits is None else bits) and w_mode in (1, 2, 3), **BIT_CONSTANTS.get(x.dtype, {}),
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


def default_config(n: int, k: int, multiprocessors: int = 132, block_k: int = 128) -> SkinnyConfig:
    """64 features per program; the reduction split in 2 or 4 while that leaves fewer programs than
    twice the multiprocessors (a weight-bound kernel needs every multiprocessor streaming)."""
    split = 1
    while split < 4 and (n // 64) * split < 2 * multiprocessors and k % (2 * split * block_k) == 0:
        split *= 2
    return SkinnyConfig(64, block_k, split, 3, 4)


def quantized_config(n: int, k: int, mode: str = "int8", group_size: int = 128) -> SkinnyConfig:
    """A quantized weight's configuration: ``default_config`` with a deeper pipeline and a reduction chunk of 256
    where K allows (a 1-byte tile of 64 x 256 streams the bytes of a bf16 one of 64 x 128); int4 with groups of a
    multiple of 128 columns takes chunks of 128, whole groups, so that each group's scale multiplies the MMA sums
    instead of every weight."""
    block_k = 256 if k % 256 == 0 else 128
    if mode == "int4" and group_size % 128 == 0:
        block_k = 128
    return replace(default_config(n, k, block_k=block_k), stages=4)


_CAPABILITY: dict[int, tuple[int, int]] = {}  # CUDA device index -> compute capability (``prepare``)
_SHARED_MEMORY: dict[int, int] = {}  # CUDA device index -> shared memory a block may opt in to, bytes
SM90_SHARED_MEMORY = 232448  # H100/H200: 227 KiB per block


def block_rows(m: int) -> int:
    """The kernel's row tile for ``m`` rows of x: a power of two from 16 to 64."""
    return max(16, 1 << (min(m, 64) - 1).bit_length())


def fit_stages(config: SkinnyConfig, m: int, shared_memory: int, element_bytes: int = 2,
               weight_element_bytes: float | None = None) -> SkinnyConfig:
    """``config`` with its pipeline shortened until the staged tiles fit in ``shared_memory`` bytes.

    Each stage holds a weight tile [block_n, block_k] (``weight_element_bytes`` each, default x's) and an x tile
    [block_rows(m), block_k]; a depth tuned at 32 rows can overflow at 33-64 (the LM head's 256-wide tile:
    3 x 80 KiB > 227 KiB on sm90).
    """
    w_bytes = element_bytes if weight_element_bytes is None else weight_element_bytes
    per_stage = int((config.block_n * w_bytes + block_rows(m) * element_bytes) * config.block_k)
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


def _launch_config(x: torch.Tensor, weight: torch.Tensor | QuantizedWeight) -> SkinnyConfig | None:
    """The kernel's configuration for ``x @ weight^T``, or ``None`` where it does not apply: it needs a
    prepared sm80+ CUDA device, bf16/fp16, at most ``MAX_ROWS`` rows, a weight [N, K] with K contiguous
    and N, K tiled by the configuration; a quantized weight int8 or int4 (fp8: sm89+), its int4 groups tiled."""
    if not ENABLED or not x.is_cuda or _CAPABILITY.get(x.device.index, (0, 0)) < (8, 0):
        return None
    if x.dtype not in (torch.bfloat16, torch.float16) or x.shape[-1] != weight.shape[1]:
        return None
    quantized = isinstance(weight, QuantizedWeight)
    if quantized:
        if weight.mode not in W_MODES or (weight.mode.startswith("fp8") and _CAPABILITY[x.device.index] < (8, 9)):
            return None
        if weight.data.stride(1) != 1 or weight.scale.stride(-1) != 1:
            return None
    elif weight.dtype != x.dtype or weight.dim() != 2 or weight.stride(1) != 1:
        return None
    n, k = weight.shape
    cfg = quantized_config(n, k, weight.mode, weight.group_size) if quantized else config_for(n, k, x.device)
    m = x.numel() // k
    if m > MAX_ROWS or n % cfg.block_n or k % (cfg.split_k * cfg.block_k):
        return None
    if quantized and weight.mode == "int4" and cfg.block_k % weight.group_size and weight.group_size % cfg.block_k:
        return None
    return fit_stages(cfg, m, _SHARED_MEMORY.get(x.device.index, SM90_SHARED_MEMORY), x.element_size(),
                      weight_element_bytes(weight))


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


@torch.library.custom_op("unmask::skinny_qmm", mutates_args=(), device_types="cuda")
def skinny_qmm(x: torch.Tensor, data: torch.Tensor, scale: torch.Tensor, mode: str, group_size: int, block_n: int,
               block_k: int, split_k: int, stages: int, warps: int, bits: bool, x_scale: torch.Tensor | None = None,
               out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``skinny_partials`` of a quantized weight (``data``, ``scale``) as an operator (fp8-w8a8: x in float8 with
    its row scales ``x_scale``, the output in ``out_dtype``)."""
    return skinny_partials(x, QuantizedWeight(mode, data, scale, group_size),
                           SkinnyConfig(block_n, block_k, split_k, stages, warps), bits, x_scale, out_dtype)


@skinny_qmm.register_fake
def _(x, data, scale, mode, group_size, block_n, block_k, split_k, stages, warps, bits, x_scale=None, out_dtype=None):
    m, n = x.shape[0], data.shape[0]
    return x.new_empty((m, n), dtype=out_dtype or x.dtype) if split_k == 1 else x.new_empty((split_k, m, n),
                                                                                          dtype=torch.float32)


@torch.library.custom_op("unmask::quantized_linear", mutates_args=())
def quantized_linear(x: torch.Tensor, data: torch.Tensor, scale: torch.Tensor, mode: str,
                     group_size: int) -> torch.Tensor:
    """``QuantizedWeight.linear`` as an operator (where the skinny kernel does not apply: many rows)."""
    return QuantizedWeight(mode, data, scale, group_size).linear(x)


@quantized_linear.register_fake
def _(x, data, scale, mode, group_size):
    return x.new_empty((*x.shape[:-1], data.shape[0]))


def fast_linear(x: torch.Tensor, weight: torch.Tensor | QuantizedWeight,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ weight^T (+ bias), through the skinny Triton kernel where ``applies``, else ``F.linear`` (a
    quantized weight: its own ``linear``).

    With a split reduction the float32 partials are added here, in PyTorch, so that under torch.compile
    the sum fuses into the kernel that consumes y.
    """
    cfg = _launch_config(x, weight)
    if cfg is None and isinstance(weight, QuantizedWeight):
        # opaque to torch.compile: inductor's mm templates fail on an int8 -> bf16 prologue (InductorError,
        # torch 2.11, H100), so the weight is converted in full and multiplied by the library matmul
        y = torch.ops.unmask.quantized_linear(x, weight.data, weight.scale, weight.mode, weight.group_size)
        return y if bias is None else y + bias
    if cfg is None:
        return F.linear(x, weight, bias)
    n, k = weight.shape
    x2 = x.reshape(-1, k)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    if isinstance(weight, QuantizedWeight):
        x_scale = None
        if weight.mode == "fp8-w8a8":  # x to float8 here, where torch.compile fuses it with what made x
            x2, x_scale = quantize_rows_fp8(x2)
        out = torch.ops.unmask.skinny_qmm(x2, weight.data, weight.scale, weight.mode, weight.group_size, cfg.block_n,
                                          cfg.block_k, cfg.split_k, cfg.stages, cfg.warps, BIT_TRICKS, x_scale,
                                          x.dtype)
    else:
        out = torch.ops.unmask.skinny_mm(x2, weight, cfg.block_n, cfg.block_k, cfg.split_k, cfg.stages, cfg.warps)
    y = (out if cfg.split_k == 1 else out.sum(0).to(x.dtype)).reshape(*x.shape[:-1], n)
    return y if bias is None else y + bias
