"""Split-KV attention (models/split_kv.py) against PyTorch's attention; the kernel needs CUDA and Triton."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unmask.models import split_kv
from unmask.models.llada import attend, merge_attention

needs_kernel = pytest.mark.skipif(not torch.cuda.is_available() or split_kv.triton is None,
                                  reason="needs a CUDA GPU and Triton")


def test_choose_splits_fills_the_gpu_and_keeps_chunks_of_a_tile():
    assert split_kv.choose_splits(32, 512) == 8  # batch 1, 32 heads: 256 programs, 64 keys each
    assert split_kv.choose_splits(1024, 512) == 1  # batch 32: enough programs without splitting
    assert split_kv.choose_splits(1, 100) == 2  # never more chunks than 64-key tiles


def test_merge_of_chunks_is_attention_over_all_keys():
    """The log-sum-exp merge restated on the CPU: chunks computed apart, merged, equal full attention."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 16), torch.randn(2, 4, 40, 16), torch.randn(2, 4, 40, 16)
    outs, lses = [], []
    for chunk in torch.arange(40).split(16):
        s = q @ k[:, :, chunk].transpose(-1, -2) / 4.0
        lses.append(torch.logsumexp(s, -1))
        outs.append(torch.softmax(s, -1) @ v[:, :, chunk])
    merged = merge_attention((torch.stack(outs, 2), torch.stack(lses, 2)), torch.float32)
    torch.testing.assert_close(merged, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)


def test_cpu_and_long_windows_take_sdpa():
    q, k, v = torch.randn(1, 2, 8, 64), torch.randn(1, 2, 128, 64), torch.randn(1, 2, 128, 64)
    assert not split_kv.available(q, k, None)
    out = attend(q, k, v, None, split_kv=True)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


@needs_kernel
@pytest.mark.parametrize("batch,heads,kv_heads,window,keys,head_dim,masked", [
    (1, 32, 32, 32, 512, 128, False),  # the LLaDA-8B dual step
    (1, 28, 4, 32, 512, 128, False),  # Dream-7B (GQA)
    (3, 8, 8, 17, 300, 64, True),  # ragged rows (padded keys), a window and a cache of odd sizes
    (2, 16, 4, 64, 1000, 128, True),
    (4, 4, 4, 1, 130, 128, False),
])
def test_kernel_equals_attention(batch, heads, kv_heads, window, keys, head_dim, masked):
    torch.manual_seed(0)
    dev, dtype = torch.device("cuda"), torch.bfloat16
    q = torch.randn(batch, window, heads, head_dim, device=dev, dtype=dtype).transpose(1, 2)  # as the model's
    cache = torch.randn(2, batch, kv_heads, keys, head_dim, device=dev, dtype=dtype)
    mask = None
    if masked:
        lengths = torch.randint(keys // 2, keys + 1, (batch,), device=dev)
        mask = (torch.arange(keys, device=dev) >= keys - lengths[:, None])[:, None, None, :]  # left padding
    assert split_kv.available(q, cache[0], mask)
    out = merge_attention(attend(q, cache[0], cache[1], mask, split_kv=True), dtype)
    ref = F.scaled_dot_product_attention(q.float(), cache[0].float(), cache[1].float(), attn_mask=mask,
                                         enable_gqa=kv_heads != heads)
    assert out.shape == ref.shape and out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    bf16 = F.scaled_dot_product_attention(q, cache[0], cache[1], attn_mask=mask, enable_gqa=kv_heads != heads)
    assert (out.float() - ref).abs().max() <= 2 * (bf16.float() - ref).abs().max() + 1e-3
