"""The experts of one MoE layer at decode-step token counts: ``grouped`` (F.grouped_mm) vs the fused Triton path
(``unmask.models.fused_moe``, several launch configurations), each timed as the step runs it: several layers of
distinct weights in one CUDA graph (``kernel_probe.graph_us``), random routing per layer. The floor is the bytes
of the experts a layer's tokens touch over the measured copy bandwidth.

    python benchmarks/moe_probe.py [--shape llada-moe llada2-mini] [--tokens 32 128 1024] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from kernel_probe import graph_us  # noqa: E402

from unmask.eval.speed import memory_bandwidth  # noqa: E402
from unmask.models.fused_moe import FusedMoEConfig, fused_experts_pairs  # noqa: E402
from unmask.models.llada_moe import combine_slots, route, run_experts  # noqa: E402

# (hidden d, expert intermediate F, experts E, top-k, layers in the probe's graph)
SHAPES = {
    "llada-moe": (2048, 1024, 64, 8, 8),  # LLaDA-MoE-7B-A1B: 805 MB of experts per layer
    "llada2-mini": (2048, 512, 256, 8, 4),  # LLaDA2.x-mini: 1.6 GB per layer
    "llada2-flash": (4096, 1024, 256, 8, 2),  # LLaDA2.x-flash: 6.4 GB per layer
}


def candidates(quick: bool) -> list[FusedMoEConfig]:
    if quick:
        return [FusedMoEConfig(), FusedMoEConfig(16, 128, 128, 128, 4, 3), FusedMoEConfig(16, 32, 64, 256, 4, 3)]
    out = []
    for bm, bn, bk, warps, stages in itertools.product((16, 32), (32, 64, 128), (64, 128, 256), (4, 8), (3, 4)):
        if bn * bk > 128 * 128 or (warps == 8) != (bn == 128):
            continue
        out.append(FusedMoEConfig(bm, bn, bn, bk, warps, stages))
    return out


def probe(x: torch.Tensor, routes: list, gate_ups: list, downs: list, configs: list[FusedMoEConfig]) -> dict:
    """Microseconds per layer of the grouped path and of each fused configuration (with its relative error
    against the grouped path on the first layer)."""
    tokens, k = x.shape[0], routes[0][1].shape[1]
    layers = list(zip(routes, gate_ups, downs, strict=True))
    grouped = graph_us(lambda: [run_experts(x, w, e, gu, dn, path="grouped") for (w, e), gu, dn in layers])
    (w0, e0), gu0, dn0 = layers[0]
    want = run_experts(x, w0, e0, gu0, dn0, path="grouped").float()
    rows = []
    for config in configs:
        def fused(w: torch.Tensor, e: torch.Tensor, gu: torch.Tensor, dn: torch.Tensor,
                  config: FusedMoEConfig = config) -> torch.Tensor:
            return combine_slots(fused_experts_pairs(x, e, gu, dn, config).view(tokens, k, -1), w)
        try:
            got = fused(w0, e0, gu0, dn0).float()
            us = graph_us(lambda fused=fused: [fused(w, e, gu, dn) for (w, e), gu, dn in layers])
        except Exception as error:  # a configuration Triton cannot build (shared memory, registers)
            print(f"  {config}: {type(error).__name__}: {str(error)[:120]}")
            continue
        err = (got - want).abs().max().item() / want.abs().max().item()
        rows.append({"config": config.__dict__, "us": us / len(layers), "rel_err": err})
    return {"grouped_us": grouped / len(layers), "configs": rows, "best": min(rows, key=lambda c: c["us"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", nargs="+", default=["llada-moe", "llada2-mini"], choices=list(SHAPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=[32, 128, 1024])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    dev = torch.device("cuda")
    bw = memory_bandwidth(dev)
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
    results: dict = {"device": torch.cuda.get_device_name(), "bandwidth_GBps": bw / 1e9, "rows": []}
    for shape in args.shape:
        d, f, E, k, layers = SHAPES[shape]
        gen = torch.Generator(device=dev).manual_seed(0)
        gate_ups = [torch.randn(E, 2 * f, d, device=dev, dtype=torch.bfloat16, generator=gen) * 0.02
                    for _ in range(layers)]
        downs = [torch.randn(E, d, f, device=dev, dtype=torch.bfloat16, generator=gen) * 0.02 for _ in range(layers)]
        for tokens in args.tokens:
            x = torch.randn(tokens, d, device=dev, dtype=torch.bfloat16, generator=gen)
            routes = [route(torch.randn(tokens, E, device=dev, generator=gen), k) for _ in range(layers)]
            touched = sum(int(torch.unique(experts).numel()) for _, experts in routes) / layers
            floor = touched * 3 * d * f * 2 / bw * 1e6
            row = {"shape": shape, "tokens": tokens, "experts_touched": touched, "floor_us": floor,
                   **probe(x, routes, gate_ups, downs, candidates(args.quick))}
            best = row["best"]
            print(f"{shape} {tokens:5d} tokens: {touched:5.1f} experts touched, floor {floor:7.1f} us | grouped "
                  f"{row['grouped_us']:7.1f} us ({row['grouped_us'] / floor:.2f}x) | fused best {best['us']:7.1f} us "
                  f"({best['us'] / floor:.2f}x, {best['config']}, rel err {best['rel_err']:.1e})", flush=True)
            results["rows"].append(row)
            del x, routes
        del gate_ups, downs
        torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
