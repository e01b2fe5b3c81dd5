"""Micro-benchmarks behind the static step's kernel choices, at the LLaDA-8B shape on one GPU.

Each kernel is timed as the decode step runs it: 32 layers' worth of distinct weights (or caches) in one
CUDA graph, so weights stream from DRAM as in the step and launch gaps are those of a graph (timing one
launch of one warm weight instead measures the launch and the L2, not the kernel).

- projections at a dual-cache step (32 tokens x batch): ``F.linear`` with cuBLAS's default choice, with
  cuBLASLt preferred, with bf16 reduced-precision reductions off (no split-K with bf16 partial sums),
  and inductor's autotuned Triton templates; achieved bandwidth over the weight bytes;
- attention of a 32-token window over a 512-column cache: each SDPA backend (cuDNN, flash,
  memory-efficient) and ``flex_attention`` (compiled: its split-KV decoding kernel);
- the KV-cache write: ``index_copy_`` of keys and values (two launches) against one launch over a
  fused [k; v] buffer.

    python benchmarks/kernel_probe.py [--batch 1] [--out DIR] [--no-autotune]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from unmask.eval.speed import memory_bandwidth

LAYERS = 32
PROJECTIONS = {"qkv": (12288, 4096), "attn_out": (4096, 4096), "gate_up": (24576, 4096), "down": (4096, 12288),
               "lm_head": (126464, 4096)}


def graph_us(body: Callable[[], object], repeats: int = 20) -> float:
    """Median microseconds of one replay of ``body`` captured in a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            body()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    graph.replay()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-autotune", action="store_true", help="skip inductor's max-autotune GEMMs")
    args = parser.parse_args()
    dev = torch.device("cuda")
    bw = memory_bandwidth(dev)
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e9:.0f} GB/s; per kernel, {LAYERS} in a graph")
    results: dict = {"device": torch.cuda.get_device_name(), "bandwidth_GBps": bw / 1e9, "gemm": {}, "attention": {}}
    tokens = 32 * args.batch
    matmuls: dict[str, Callable] = {"cublas": F.linear}
    if not args.no_autotune:
        matmuls["inductor_autotune"] = torch.compile(F.linear, mode="max-autotune-no-cudagraphs", dynamic=False)
    for name, (n, k) in PROJECTIONS.items():
        layers = 4 if name == "lm_head" else LAYERS
        ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02 for _ in range(layers)]
        x = torch.randn(tokens, k, device=dev, dtype=torch.bfloat16)
        floor = n * k * 2 / bw * 1e6
        row = {"floor_us": floor}
        settings = [("cublas", "cublas", None), ("cublaslt", "cublas", "cublaslt"),
                    ("no_reduced_precision", "cublas", "rp")]
        settings += [("inductor_autotune", "inductor_autotune", None)] if "inductor_autotune" in matmuls else []
        ref = F.linear(x, ws[0])
        for label, fn_name, setting in settings:
            fn = matmuls[fn_name]
            old_lib = torch.backends.cuda.preferred_blas_library()
            old_rp = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
            try:
                if setting == "cublaslt":
                    torch.backends.cuda.preferred_blas_library("cublaslt")
                if setting == "rp":
                    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
                us = graph_us(lambda fn=fn, ws=ws, x=x: [fn(x, w) for w in ws]) / layers
                same = torch.equal(fn(x, ws[0]), ref)
                row[label] = {"us": us, "of_floor": floor / us, "bitwise_equal_cublas": same}
                print(f"{name:8} [{tokens}x{k}]@[{k}x{n}] {label:20}: {us:6.1f} us ({floor / us:.0%} of the "
                      f"{floor:.1f} us floor), bitwise == cuBLAS default: {same}", flush=True)
            except Exception as err:  # a backend that is missing here is a result, not a failure
                row[label] = {"error": str(err)[:200]}
                print(f"{name:8} {label:20}: unavailable ({str(err)[:100]})", flush=True)
            finally:
                torch.backends.cuda.preferred_blas_library(old_lib)
                torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = old_rp
        results["gemm"][name] = row
        del ws
    q = torch.randn(args.batch, 32, 32, 128, device=dev, dtype=torch.bfloat16)
    kvs = [torch.randn(2, args.batch, 32, 512, 128, device=dev, dtype=torch.bfloat16) for _ in range(LAYERS)]
    kv_floor = kvs[0].numel() * 2 / bw * 1e6
    ref = F.scaled_dot_product_attention(q, kvs[0][0], kvs[0][1])
    attention: dict[str, Callable] = {}
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        def sdpa(q, k, v, backend=backend):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v)
        attention[backend.name.lower()] = sdpa
    try:
        from torch.nn.attention.flex_attention import flex_attention

        attention["flex_attention"] = torch.compile(flex_attention, dynamic=False)
    except ImportError as err:
        print("flex_attention unavailable:", err)
    def flash_split(q, k, v, splits):
        """FlashAttention-2's forward with ``num_splits`` key chunks (split-KV), [B, L, H, D] layout."""
        out = torch.ops.aten._flash_attention_forward(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, None, q.shape[2], k.shape[2], 0.0,
            False, False, num_splits=splits)[0]
        return out.transpose(1, 2)

    def cudnn_split(q, k, v, splits):
        """cuDNN attention over ``splits`` key chunks as a batch, merged by their log-sum-exps."""
        B, H, T, D = k.shape
        kc = k.view(B, H, splits, T // splits, D).transpose(1, 2).reshape(B * splits, H, T // splits, D)
        vc = v.view(B, H, splits, T // splits, D).transpose(1, 2).reshape(B * splits, H, T // splits, D)
        qc = q.repeat_interleave(splits, dim=0) if B > 1 else q.expand(splits, -1, -1, -1)
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(qc, kc, vc, None, True)[:2]
        out = out.view(B, splits, H, -1, D).float()
        lse = lse.view(B, splits, H, -1, 1).float()
        w = torch.softmax(lse, dim=1)
        return (out * w).sum(1).to(q.dtype)

    for splits in (1, 2, 4, 8):
        attention[f"flash_num_splits_{splits}"] = lambda q, k, v, s=splits: flash_split(q, k, v, s)
    for splits in (2, 4):
        attention[f"cudnn_split_{splits}_eager_merge"] = lambda q, k, v, s=splits: cudnn_split(q, k, v, s)
        attention[f"cudnn_split_{splits}_compiled"] = torch.compile(
            lambda q, k, v, s=splits: cudnn_split(q, k, v, s), dynamic=False)
    for label, fn in attention.items():
        try:
            out = fn(q, kvs[0][0], kvs[0][1])
            err = (out.float() - ref.float()).abs().max().item()
            us = graph_us(lambda fn=fn: [fn(q, kv[0], kv[1]) for kv in kvs]) / LAYERS
            results["attention"][label] = {"us": us, "kv_floor_us": kv_floor, "max_abs_diff_cudnn": err}
            print(f"attention {label:20}: {us:6.1f} us (cache read floor {kv_floor:.1f} us), max |diff| vs cuDNN "
                  f"{err:.2e}", flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            results["attention"][label] = {"error": str(e)[:200]}
            print(f"attention {label:20}: unavailable ({str(e)[:100]})", flush=True)
    cache = torch.zeros(2, args.batch, 32, 512, 128, device=dev, dtype=torch.bfloat16)
    cols = torch.arange(256, 288, device=dev)
    new = torch.randn(2, args.batch, 32, 32, 128, device=dev, dtype=torch.bfloat16)
    two = graph_us(lambda: (cache[0].index_copy_(2, cols, new[0]), cache[1].index_copy_(2, cols, new[1])))
    one = graph_us(lambda: cache.index_copy_(3, cols, new))
    results["cache_write_us"] = {"apart": two, "together": one}
    print(f"cache write: keys and values apart {two:.1f} us, together {one:.1f} us")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "kernel_probe.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
