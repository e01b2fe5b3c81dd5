"""Launch configurations of the Triton skinny matmul (``unmask.models.skinny``) against cuBLAS, at the
LLaDA-8B projections of a dual-cache step (32 tokens x batch), each timed as the step runs it: 32 layers of
distinct weights in one CUDA graph (``kernel_probe.graph_us``).

    python benchmarks/skinny_probe.py [--batch 1] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from kernel_probe import LAYERS, PROJECTIONS, graph_us  # noqa: E402

from unmask.eval.speed import memory_bandwidth  # noqa: E402
from unmask.models.skinny import SkinnyConfig, skinny_partials  # noqa: E402


def candidates(n: int, k: int, quick: bool) -> list[SkinnyConfig]:
    block_ns = (64, 128) if quick else (32, 64, 128, 256)
    block_ks = (128, 256)
    stages = (4,) if quick else (3, 5)
    splits = (1, 2, 4) if n <= 4096 or k > 4096 else (1, 2)
    out = []
    for bn, bk, st, sk, warps, swap in itertools.product(block_ns, block_ks, stages, splits, (4, 8), (True, False)):
        if n % bn or (k // sk) % bk or (bn >= 256 and bk >= 256) or (not swap and warps == 8):
            continue
        out.append(SkinnyConfig(bn, bk, sk, st, warps, swap))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated projection names")
    args = parser.parse_args()
    dev = torch.device("cuda")
    bw = memory_bandwidth(dev)
    tokens = 32 * args.batch
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e9:.0f} GB/s, {tokens} tokens", flush=True)
    results: dict = {"device": torch.cuda.get_device_name(), "bandwidth_GBps": bw / 1e9, "tokens": tokens, "gemm": {}}
    names = args.only.split(",") if args.only else list(PROJECTIONS)
    for name in names:
        n, k = PROJECTIONS[name]
        layers = 4 if name == "lm_head" else LAYERS
        ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02 for _ in range(layers)]
        x = torch.randn(tokens, k, device=dev, dtype=torch.bfloat16)
        floor = n * k * 2 / bw * 1e6
        ref = F.linear(x, ws[0]).float()
        cublas = graph_us(lambda ws=ws, x=x: [F.linear(x, w) for w in ws]) / layers
        row: dict = {"floor_us": floor, "cublas_us": cublas, "configs": []}
        print(f"{name} [{tokens}x{k}]@[{k}x{n}]: floor {floor:.1f} us, cuBLAS {cublas:.1f} us ({floor / cublas:.0%})",
              flush=True)
        for cfg in candidates(n, k, args.quick):
            try:
                out = skinny_partials(x, ws[0], cfg)
                out = (out if cfg.split_k == 1 else out.sum(0)).float()
                err = ((out - ref).abs().max() / ref.abs().max()).item()
                us = graph_us(lambda ws=ws, x=x, cfg=cfg: [skinny_partials(x, w, cfg) for w in ws], repeats=10) / layers
            except Exception as e:  # noqa: BLE001 - out of shared memory etc.: a result, not a failure
                row["configs"].append({**cfg.__dict__, "error": str(e)[:120]})
                continue
            row["configs"].append({**cfg.__dict__, "us": us, "rel_err": err})
        ok = sorted((c for c in row["configs"] if "us" in c), key=lambda c: c["us"])
        for c in ok[:6]:
            print(f"   {c['us']:6.1f} us ({floor / c['us']:.0%}) bn {c['block_n']} bk {c['block_k']} "
                  f"split {c['split_k']} stages {c['stages']} warps {c['warps']} swap {c['swap']} "
                  f"err {c['rel_err']:.1e}", flush=True)
        if ok:
            best = ok[0]
            if best["split_k"] > 1:  # what adding the partials costs when nothing else fuses it
                cfg = SkinnyConfig(**{f: best[f] for f in SkinnyConfig.__dataclass_fields__})
                us = graph_us(lambda ws=ws, x=x, cfg=cfg: [skinny_partials(x, w, cfg).sum(0).to(x.dtype) for w in ws],
                              repeats=10) / layers
                row["best_with_reduce_us"] = us
                print(f"   best + a separate sum of the partials: {us:.1f} us", flush=True)
        results["gemm"][name] = row
        del ws
        torch.cuda.empty_cache()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "skinny_probe.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
