"""Micro-benchmarks behind the static step's kernel choices, at the LLaDA-8B shape on one GPU.

- projections at a dual-cache step (32 tokens x batch): ``x @ W.T`` (F.linear) against ``(W @ x.T).T``,
  achieved bandwidth over the weight bytes;
- attention of a 32-token window over a 512-column cache: each SDPA backend (cuDNN, flash,
  memory-efficient, math);
- the KV-cache write: ``index_copy_`` of keys and values (two launches) against one launch over a
  fused [k; v] buffer.

    python benchmarks/kernel_probe.py [--batch 1]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from unmask.eval.speed import memory_bandwidth, timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    dev = torch.device("cuda")
    bw = memory_bandwidth(dev)
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e9:.0f} GB/s")
    tokens = 32 * args.batch
    for name, (n, k) in {"qkv": (12288, 4096), "attn_out": (4096, 4096), "gate_up": (24576, 4096),
                         "down": (4096, 12288), "lm_head": (126464, 4096)}.items():
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        x = torch.randn(tokens, k, device=dev, dtype=torch.bfloat16)
        floor = n * k * 2 / bw * 1e6
        a = timed(lambda w=w, x=x: F.linear(x, w), dev, warmup=5, repeats=50) * 1e3
        b = timed(lambda w=w, x=x: (w @ x.T).T.contiguous(), dev, warmup=5, repeats=50) * 1e3
        same = torch.equal(F.linear(x, w), (w @ x.T).T)
        print(f"{name:8} [{tokens}x{k}] @ [{k}x{n}]: floor {floor:6.1f} us | x@W.T {a:6.1f} us ({floor / a:.0%}) | "
              f"(W@x.T).T {b:6.1f} us ({floor / b:.0%}) | bitwise equal {same}")
    q = torch.randn(args.batch, 32, 32, 128, device=dev, dtype=torch.bfloat16)
    kv = torch.randn(2, args.batch, 32, 512, 128, device=dev, dtype=torch.bfloat16)
    ref = None
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.MATH):
        try:
            with sdpa_kernel([backend]):
                ms = timed(lambda: F.scaled_dot_product_attention(q, kv[0], kv[1]), dev, warmup=5, repeats=50)
                out = F.scaled_dot_product_attention(q, kv[0], kv[1])
            ref = out if ref is None else ref
            print(f"attention {backend.name:20}: {ms * 1e3:6.1f} us, bitwise equal to cuDNN {torch.equal(out, ref)}")
        except RuntimeError as err:
            print(f"attention {backend.name:20}: unavailable ({str(err)[:80]})")
    with torch.no_grad():
        default = timed(lambda: F.scaled_dot_product_attention(q, kv[0], kv[1]), dev, warmup=5, repeats=50)
    print(f"attention default selection: {default * 1e3:.1f} us")
    cache = torch.zeros(2, args.batch, 32, 512, 128, device=dev, dtype=torch.bfloat16)
    cols = torch.arange(256, 288, device=dev)
    new = torch.randn(2, args.batch, 32, 32, 128, device=dev, dtype=torch.bfloat16)
    two = timed(lambda: (cache[0].index_copy_(2, cols, new[0]), cache[1].index_copy_(2, cols, new[1])), dev,
                warmup=5, repeats=50)
    one = timed(lambda: cache.index_copy_(3, cols, new), dev, warmup=5, repeats=50)
    print(f"cache write: keys and values apart {two * 1e3:.1f} us, together {one * 1e3:.1f} us")


if __name__ == "__main__":
    main()
