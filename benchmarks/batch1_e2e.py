"""Milliseconds per forward of a whole batch-1 decode at a model shape (random weights, bf16, CUDA graphs):
the number to compare between two unmask trees on one GPU (run it once with each on ``PYTHONPATH``).

    PYTHONPATH=src python benchmarks/batch1_e2e.py --shape llada-8b --cache dual --json new.json
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from unmask.decoding import TopK, decode
from unmask.eval.speed import SHAPES
from unmask.models.loading import random_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llada-8b")
    ap.add_argument("--cache", action="append", default=[])
    ap.add_argument("--prompt-length", type=int, default=256)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    model = random_model(SHAPES[args.shape], dtype=torch.bfloat16, device=torch.device("cuda")).fuse_projections()
    prompt = torch.randint(0, model.config.vocab_size, (1, args.prompt_length), device="cuda",
                           generator=torch.Generator(device="cuda").manual_seed(0))
    rows = []
    for cache in args.cache or ["dual"]:
        def run(cache: str = cache) -> float:
            out = decode(model, prompt, TopK(args.block_length), mask_id=model.config.mask_token_id,
                         gen_length=args.gen_length, block_length=args.block_length, cache=cache, early_stop=False,
                         compile="fused")
            return out.elapsed_s * 1e3 / out.nfe

        run()  # compile and capture
        times = [run() for _ in range(args.repeats)]
        rows.append({"shape": args.shape, "cache": cache, "ms_per_forward": statistics.median(times), "all": times})
        print(json.dumps(rows[-1]), flush=True)
    with open(args.json, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
