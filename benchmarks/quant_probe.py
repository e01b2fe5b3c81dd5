"""The skinny matmul on quantized weights in isolation (issue 28): microseconds per call at the LLaDA-8B
projection shapes, 32 rows, bf16 vs int8 / fp8 / int4 / fp8-w8a8 (x in float8 too) through
``skinny.fast_linear`` (and whether it takes the kernel), each against its own weight-read floor (stored bytes
over the device's measured copy bandwidth).

    python benchmarks/quant_probe.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_probe import PROJECTIONS, graph_us  # noqa: E402

from unmask.eval.speed import memory_bandwidth  # noqa: E402
from unmask.models import skinny  # noqa: E402
from unmask.models.quantize import QuantizedWeight, quantize_weight  # noqa: E402

SHAPES = {name: PROJECTIONS[name] for name in ("qkv", "attn_out", "gate_up", "down")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--layers", type=int, default=8, help="distinct weights per timed call (defeats L2)")
    ap.add_argument("--configs", default="",
                    help="also time these launch configurations per quantized mode and shape, comma separated "
                         "BLOCK_NxBLOCK_KxSPLIT_KxSTAGESxWARPS, e.g. 64x256x1x4x4,128x256x2x4x8")
    ap.add_argument("--bits", action="store_true",
                    help="also time each quantized mode with the integer bit-trick conversions (skinny.BIT_TRICKS)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    skinny.prepare(torch.device("cuda"))
    bandwidth = memory_bandwidth(torch.device("cuda"))
    rows = []
    for name, (n, k) in SHAPES.items():
        x = torch.randn(args.rows, k, device="cuda").bfloat16()
        for mode in ("bf16", "int8", "fp8", "int4", "fp8-w8a8"):
            ws = []
            for _ in range(args.layers):
                w = torch.randn(n, k, device="cuda") * 0.02
                if mode == "bf16":
                    ws.append(w.bfloat16())
                else:
                    q = quantize_weight(w, mode)
                    ws.append(QuantizedWeight(q.mode, q.data.contiguous(), q.scale.contiguous(), q.group_size))
                del w
            takes = skinny.applies(x, ws[0])
            stored = n * k * skinny.weight_element_bytes(ws[0]) + (0 if mode == "bf16" else ws[0].scale.numel() * 4)
            floor = 1e6 * stored / bandwidth
            for bits in (False, True) if args.bits and mode in ("int8", "fp8", "int4") else (False,):
                skinny.BIT_TRICKS = bits
                us = graph_us(lambda ws=ws, x=x: [skinny.fast_linear(x, w) for w in ws]) / args.layers
                row = {"shape": name, "n": n, "k": k, "mode": mode + ("+bits" if bits else ""), "kernel": takes,
                       "us": us, "floor_us": floor, "over_floor": us / floor}
                rows.append(row)
                print(json.dumps(row), flush=True)
            skinny.BIT_TRICKS = False
            for spec in filter(None, args.configs.split(",")):
                cfg = skinny.SkinnyConfig(*map(int, spec.split("x")))
                if mode == "bf16" or n % cfg.block_n or k % (cfg.split_k * cfg.block_k):
                    continue
                try:
                    us = graph_us(lambda ws=ws, x=x, cfg=cfg: [skinny.skinny_partials(x, w, cfg) for w in ws])
                except Exception as error:  # a configuration that does not fit this GPU
                    print(f"{name} {mode} {spec}: {type(error).__name__}", flush=True)
                    continue
                row = {"shape": name, "mode": mode, "config": spec, "us": us / args.layers,
                       "over_floor": us / args.layers / floor}
                rows.append(row)
                print(json.dumps(row), flush=True)
            del ws
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "bandwidth_gb_s": bandwidth / 1e9,
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
