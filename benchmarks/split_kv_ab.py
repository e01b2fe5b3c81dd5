"""A/B of the fused step with split-KV attention (models/split_kv.py) against cuDNN's SDPA, same process and GPU.

One random-weight model; the fused-mode kernels are switched between ``split_kv`` on and off and the step
benchmarked with ``bench_model`` each time (programs recaptured), interleaved (off, on, off, on) so that
drift shows. Writes ``split_kv_ab.json``.

    python benchmarks/split_kv_ab.py --out DIR [--shape llada-8b] [--batch 1 --batch 32] [--cache dual]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import torch

import unmask.models.llada as llada
from unmask.eval.speed import SHAPES, bench_model, random_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shape", default="llada-8b")
    parser.add_argument("--cache", action="append", default=None)
    parser.add_argument("--batch", type=int, action="append", default=None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = random_model(SHAPES[args.shape], dtype=torch.bfloat16, device=torch.device("cuda")).fuse_projections()
    compiled = llada.compiled_kernels()
    rows, env = [], {}
    for rnd in range(args.rounds):
        for split in (False, True):
            llada._COMPILED_KERNELS = dataclasses.replace(compiled, split_kv=split)
            model.__dict__.pop("_decode_programs", None)
            found, env = bench_model(model, tuple(args.batch or [1]), tuple(args.cache or ["dual", "prefix"]),
                                     repeats=args.repeats, modes=("fused",), log=lambda s: None)
            for r in found:
                rows.append({"split_kv": split, "round": rnd, **asdict(r)})
                print(f"round {rnd} split_kv {split!s:5}  b{r.batch:<3} {r.cache:6} step {r.step_ms:7.3f} ms  refresh "
                      f"{r.refresh_ms:7.2f}  amortised {r.amortised_step_ms:7.3f} ({r.ratio_to_floor:.2f}x floor)  "
                      f"e2e {r.e2e_step_ms:7.3f}  graph==eager {r.graph_equals_eager}", flush=True)
    llada._COMPILED_KERNELS = compiled
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "split_kv_ab.json").write_text(json.dumps({"env": env, "command": "benchmarks/split_kv_ab.py",
                                                            "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
