"""A fused mixture-of-experts step for few tokens: routing metadata on the device and two Triton kernels.

At a decode step's token counts (a dual-cache window of 32 tokens at batch 1, top-8 routing: 256 (token,
expert) pairs over 64-256 experts, 1-4 pairs per expert) ``F.grouped_mm`` spends most of its time outside the
weight reads: a sort, a gather of the tokens, a [N*k, 2F] intermediate, a scatter back, and matmuls of 1-4 rows
per expert. Here (the layout of vLLM's ``fused_moe``, restated for a captured decode step):

1. ``expert_blocks`` (plain PyTorch, no host sync, graph-capturable): the pairs are sorted by expert and each
   expert's run padded to a multiple of ``block_m`` rows; ``pair_ids[r]`` is the pair (``token * k + slot``) in
   padded row r (``N * k`` in padding rows) and ``block_expert[b]`` the expert of rows ``[b * block_m,
   (b + 1) * block_m)`` (``E`` past the last used block). The number of blocks is bounded by
   ``N * k // block_m + min(E, N * k)``, so the grids have a static size.
2. ``_gate_up_kernel``: program (b, n) gathers block b's tokens straight from x, multiplies them by rows
   ``[n * BLOCK_N, (n + 1) * BLOCK_N)`` of its expert's gate and up weights (both tiles of one program, so x is
   read once for the two), and writes ``silu(gate) * up`` ([padded rows, F]); programs of unused blocks return
   before reading a weight.
3. ``_down_kernel``: program (b, n) multiplies block b's intermediate rows by its expert's ``down`` tile and
   writes each valid row to its pair's row of a [N * k, d] output (no atomics: the combine stays deterministic).

The weighted sum over the k slots is the caller's (as ``run_experts``: in the model dtype or ``sum_dtype``).
Both matmuls run "swap AB" (acc^T = W x^T, as ``unmask.models.skinny``): the weight tile is the MMA's large
operand, so Hopper's wgmma applies with a 16-row block of tokens. The elementwise rounding follows the eager
path (gate and up rounded to the model dtype before ``silu(gate) * up``), so the result equals ``run_experts``
up to the order of the float32 reductions inside the matmuls.

CUDA only (Triton); where Triton or CUDA is missing ``fused_available`` is False and callers use another path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

try:  # Triton ships with CUDA builds of PyTorch, not with the CPU build
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None
    tl = None


@dataclass(frozen=True)
class ExpertBlocks:
    """Pairs sorted by expert and padded to ``block_m`` rows per expert (see ``expert_blocks``)."""

    pair_ids: torch.Tensor  # [num_blocks * block_m] pair index (token * k + slot), N * k in padding rows
    block_expert: torch.Tensor  # [num_blocks] expert of each block, E past the last used block
    block_m: int

    @property
    def num_blocks(self) -> int:
        return self.block_expert.numel()


def max_blocks(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Upper bound on sum_e ceil(count_e / block_m) over counts summing to ``num_pairs``: each used expert
    adds at most one partly filled block, and at most min(E, pairs) experts are used."""
    return num_pairs // block_m + min(num_experts, num_pairs)


def expert_blocks(experts: torch.Tensor, num_experts: int, block_m: int = 16) -> ExpertBlocks:
    """The padded block layout of the (token, slot) -> expert table ``experts`` [N, k], on its device.

    count_e = #{pairs routed to e};  blocks_e = ceil(count_e / block_m);  start_e = sum_{e' < e} blocks_e';
    a pair of rank r among expert e's pairs (stable order: ascending pair index) sits in padded row
    ``start_e * block_m + r``. Static shapes throughout (no ``bincount``/``nonzero``), so a CUDA graph can hold it.
    """
    flat = experts.reshape(-1)
    num_pairs = flat.numel()
    device = flat.device
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device).scatter_add_(
        0, flat, torch.ones_like(flat, dtype=torch.int64))
    blocks = (counts + block_m - 1) // block_m
    block_end = blocks.cumsum(0)
    order = flat.argsort(stable=True)
    sorted_experts = flat.index_select(0, order)
    first_of_expert = counts.cumsum(0) - counts
    rank = torch.arange(num_pairs, device=device) - first_of_expert.index_select(0, sorted_experts)
    rows = (block_end - blocks).index_select(0, sorted_experts) * block_m + rank
    bound = max_blocks(num_pairs, num_experts, block_m)
    pair_ids = torch.full((bound * block_m,), num_pairs, dtype=torch.int32, device=device)
    pair_ids.scatter_(0, rows, order.to(torch.int32))
    block_expert = torch.searchsorted(block_end, torch.arange(bound, device=device), right=True)
    return ExpertBlocks(pair_ids, block_expert.to(torch.int32), block_m)


if triton is not None:

    @triton.jit
    def _block_tile(pair_ids_ptr, num_pairs, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """The program's tile: its block's padded rows, their pair ids and which are real pairs (grid axis 0),
        its output features (axis 1) and the reduction offsets."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        pairs = tl.load(pair_ids_ptr + rows)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        return rows, pairs, pairs < num_pairs, rn, tl.arange(0, BLOCK_K)

    @triton.jit
    def _gate_up_kernel(
        x_ptr, w_ptr, out_ptr, pair_ids_ptr, block_expert_ptr,
        num_pairs, num_experts, F, K, top_k,
        stride_x, stride_we, stride_wn, stride_out,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        expert = tl.load(block_expert_ptr + tl.program_id(0))
        if expert >= num_experts:  # a block past the last used one: nothing to read
            return
        rows, pairs, valid, rn, rk = _block_tile(pair_ids_ptr, num_pairs, BLOCK_M, BLOCK_N, BLOCK_K)
        tokens = tl.where(valid, pairs // top_k, 0)
        n_ok = rn < F
        x_ptrs = x_ptr + tokens[:, None] * stride_x + rk[None, :]
        w_base = w_ptr + expert.to(tl.int64) * stride_we
        g_ptrs = w_base + rn[:, None] * stride_wn + rk[None, :]
        u_ptrs = w_base + (F + rn)[:, None] * stride_wn + rk[None, :]
        acc_g = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            k_ok = (k + rk)[None, :] < K
            x = tl.load(x_ptrs, mask=valid[:, None] & k_ok, other=0.0)
            g = tl.load(g_ptrs, mask=n_ok[:, None] & k_ok, other=0.0)
            u = tl.load(u_ptrs, mask=n_ok[:, None] & k_ok, other=0.0)
            xt = tl.trans(x)
            acc_g = tl.dot(g, xt, acc_g)
            acc_u = tl.dot(u, xt, acc_u)
            x_ptrs += BLOCK_K
            g_ptrs += BLOCK_K
            u_ptrs += BLOCK_K
        dtype = out_ptr.dtype.element_ty
        gate = acc_g.to(dtype).to(tl.float32)  # the eager path rounds each matmul's output
        up = acc_u.to(dtype).to(tl.float32)
        act = (gate * tl.sigmoid(gate)).to(dtype).to(tl.float32)
        out = (act * up).to(dtype)
        out_ptrs = out_ptr + rows[None, :] * stride_out + rn[:, None]
        tl.store(out_ptrs, out, mask=n_ok[:, None] & valid[None, :])

    @triton.jit
    def _down_kernel(
        h_ptr, w_ptr, out_ptr, pair_ids_ptr, block_expert_ptr,
        num_pairs, num_experts, D, K,
        stride_h, stride_we, stride_wn, stride_out,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        expert = tl.load(block_expert_ptr + tl.program_id(0))
        if expert >= num_experts:
            return
        rows, pairs, valid, rn, rk = _block_tile(pair_ids_ptr, num_pairs, BLOCK_M, BLOCK_N, BLOCK_K)
        n_ok = rn < D
        h_ptrs = h_ptr + rows[:, None] * stride_h + rk[None, :]
        w_ptrs = w_ptr + expert.to(tl.int64) * stride_we + rn[:, None] * stride_wn + rk[None, :]
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            k_ok = (k + rk)[None, :] < K
            h = tl.load(h_ptrs, mask=valid[:, None] & k_ok, other=0.0)
            w = tl.load(w_ptrs, mask=n_ok[:, None] & k_ok, other=0.0)
            acc = tl.dot(w, tl.trans(h), acc)
            h_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        out_ptrs = out_ptr + tl.where(valid, pairs, 0).to(tl.int64)[None, :] * stride_out + rn[:, None]
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=n_ok[:, None] & valid[None, :])


@dataclass(frozen=True)
class FusedMoEConfig:
    """Launch parameters: tokens per block (the MMA's small side), output features and reduction chunk per
    program, for the gate/up and the down kernel."""

    block_m: int = 16
    gate_up_block_n: int = 64
    down_block_n: int = 64
    block_k: int = 128
    warps: int = 4
    stages: int = 3


DEFAULT_CONFIG = FusedMoEConfig()


def fused_available(x: torch.Tensor) -> bool:
    """Triton present, a CUDA tensor, or the Triton interpreter (``TRITON_INTERPRET=1``, tests on the CPU)."""
    if triton is None:
        return False
    import os

    return x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def fused_experts_pairs(
    x: torch.Tensor, experts: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
    config: FusedMoEConfig = DEFAULT_CONFIG,
) -> torch.Tensor:
    """expert_{experts[i, j]}(x[i]) for every pair, as [N * k, d] in (token, slot) order (unweighted).

    ``x`` [N, d]; ``gate_up`` [E, 2F, d] (gate rows then up rows); ``down`` [E, d, F]; all contiguous in
    their last dimension.
    """
    if triton is None:
        raise RuntimeError("the fused MoE path needs Triton (a CUDA build of PyTorch)")
    N, d = x.shape
    k = experts.shape[1]
    E, two_f, _ = gate_up.shape
    F = two_f // 2
    if gate_up.stride(-1) != 1 or down.stride(-1) != 1:
        raise ValueError("the fused MoE path needs expert weights contiguous in their last dimension")
    x = x.contiguous()
    blocks = expert_blocks(experts, E, config.block_m)
    num_pairs = N * k
    hidden = torch.empty(blocks.num_blocks * config.block_m, F, dtype=x.dtype, device=x.device)
    grid = (blocks.num_blocks, triton.cdiv(F, config.gate_up_block_n))
    _gate_up_kernel[grid](
        x, gate_up, hidden, blocks.pair_ids, blocks.block_expert, num_pairs, E, F, d, k,
        x.stride(0), gate_up.stride(0), gate_up.stride(1), hidden.stride(0),
        BLOCK_M=config.block_m, BLOCK_N=config.gate_up_block_n, BLOCK_K=config.block_k,
        num_warps=config.warps, num_stages=config.stages)
    out = torch.empty(num_pairs, d, dtype=x.dtype, device=x.device)
    grid = (blocks.num_blocks, triton.cdiv(d, config.down_block_n))
    _down_kernel[grid](
        hidden, down, out, blocks.pair_ids, blocks.block_expert, num_pairs, E, d, F,
        hidden.stride(0), down.stride(0), down.stride(1), out.stride(0),
        BLOCK_M=config.block_m, BLOCK_N=config.down_block_n, BLOCK_K=config.block_k,
        num_warps=config.warps, num_stages=config.stages)
    return out
