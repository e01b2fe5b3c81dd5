"""RoPE + KV-cache write in one Triton kernel (``unmask.models.rope_kv``): the same q and cache as the
compiled step's ``apply_rotary`` + ``write_kv`` (shared, per-row or no columns, grouped-query heads, per-row
rotary tables); where it does not apply the compiled kernels keep their own path. On the CPU the kernel runs
under the Triton interpreter (TRITON_INTERPRET=1, Triton installed)."""

import os

import pytest
import torch

from unmask.models import rope_kv
from unmask.models.cache import write_kv
from unmask.models.llada import apply_rotary, rotary_tables

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1" and rope_kv.triton is not None
DEVICE = "cuda" if torch.cuda.is_available() and rope_kv.triton is not None else ("cpu" if INTERPRET else None)
kernel = pytest.mark.skipif(DEVICE is None, reason="needs CUDA or the Triton interpreter (TRITON_INTERPRET=1)")


def reference(qkv, cos, sin, cache, columns, H, Hkv):
    B, W, _ = qkv.shape
    hd = cache.shape[-1]
    q, k, v = qkv.split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
    q, k, v = (t.reshape(B, W, -1, hd).transpose(1, 2) for t in (q, k, v))
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if columns is None:
        cache[:, :, :, :W] = torch.stack((k, v))
    else:
        write_kv(cache, k, v, columns)
    return q


def test_does_not_apply_on_cpu_or_to_strided_per_row_columns():
    cache = torch.zeros(2, 2, 4, 16, 8)
    cos = torch.zeros(1, 1, 4, 8)
    assert not rope_kv.applies(torch.zeros(2, 4, 96), cos, cache, torch.arange(4))
    assert not rope_kv.applies(torch.zeros(2, 4, 96), cos, None, None)
    if torch.cuda.is_available() and rope_kv.triton is not None:
        cache, cos = cache.cuda(), cos.cuda()
        per_row = torch.arange(8, device="cuda").reshape(4, 2).t()  # [2, 4], not contiguous
        assert not rope_kv.applies(torch.zeros(2, 4, 96, device="cuda"), cos, cache, per_row)
        assert rope_kv.applies(torch.zeros(2, 4, 96, device="cuda"), cos, cache, per_row.contiguous())


@kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("B,W,H,Hkv,T,columns_kind,per_row_tables", [
    (1, 32, 32, 32, 512, "shared", False), (2, 8, 4, 2, 40, "shared", True), (3, 12, 4, 4, 12, "none", False),
    (2, 7, 6, 1, 30, "shared", False), (3, 10, 4, 2, 40, "per_row", True), (1, 48, 32, 32, 512, "per_row", True)])
def test_rope_write_kv_equals_rotary_and_write(dtype, B, W, H, Hkv, T, columns_kind, per_row_tables):
    if DEVICE == "cpu" and (dtype == torch.bfloat16 or H == 32):
        pytest.skip("the interpreter: float32 (its bfloat16 arithmetic is not faithful), small shapes")
    g = torch.Generator(device=DEVICE).manual_seed(B * W + H)
    hd = 128 if H == 32 else 16
    qkv = torch.randn(B, W, (H + 2 * Hkv) * hd, device=DEVICE, generator=g).to(dtype)
    columns = None
    if columns_kind == "shared":
        columns = torch.randperm(T, device=DEVICE, generator=g)[:W]
    elif columns_kind == "per_row":  # partial(budget=K): each row its own columns (distinct within the row)
        columns = torch.stack([torch.randperm(T, device=DEVICE, generator=g)[:W] for _ in range(B)])
    positions = (columns if columns is not None else torch.arange(W, device=DEVICE)).expand(B, W)
    if per_row_tables and columns_kind != "per_row":  # a ragged batch: each row its own positions
        positions = positions + torch.arange(B, device=DEVICE)[:, None]
    cos, sin = rotary_tables(hd, 10000.0, positions)
    cache = torch.randn(2, B, Hkv, T, hd, device=DEVICE, generator=g).to(dtype)
    expected_cache = cache.clone()
    expected_q = reference(qkv, cos, sin, expected_cache, columns, H, Hkv)
    assert rope_kv.applies(qkv, cos, cache, columns) == (DEVICE == "cuda")
    q = rope_kv.rope_write_kv(qkv, cos, sin, cache, columns, H, Hkv)
    assert q.shape == (B, H, W, hd) and q.transpose(1, 2).is_contiguous()  # the layout SDPA's output keeps
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(q, expected_q, **tol)  # float32: fused multiply-adds may differ in the last bit
    torch.testing.assert_close(cache, expected_cache, **tol)
