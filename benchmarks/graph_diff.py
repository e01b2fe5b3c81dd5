"""Where a captured decode differs from the same kernels run eagerly: step by step, the logits of an engine
replaying CUDA graphs against an engine launching the same (compiled or eager) kernels from Python.

For each step of one row (the 8B layer shapes, fewer layers, random weights, bf16) it prints the kind of
forward, the largest logit difference and whether the committed tokens agree, for ``--compile`` modes
``exact`` (eager kernels) and ``fused`` (torch.compile + Triton), so a read-before-write or a stale
buffer (a difference at the first step of a kind, growing) can be told from rounding (a different
kernel, differences of an ulp that flip near-ties).

    python benchmarks/graph_diff.py --shape llada-8b --layers 4 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from unmask.decoding.engine import DecodeEngine, EngineOptions, RowRequest
from unmask.decoding.policies import Threshold
from unmask.decoding.scorers import Scorer
from unmask.eval.speed import SHAPES
from unmask.models.loading import random_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llada-8b")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--cache", default="dual")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    config = SHAPES[args.shape]
    name = "n_layers" if hasattr(config, "n_layers") and not hasattr(config, "num_hidden_layers") else \
        "num_hidden_layers"
    config = dataclasses.replace(config, **{name: args.layers})
    model = random_model(config, dtype=torch.bfloat16, device=torch.device("cuda")).fuse_projections()
    prompt = torch.randint(0, config.vocab_size, (256,), generator=torch.Generator().manual_seed(0))
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "modes": {}}
    for mode in ("exact", "fused"):
        model.compile_kernels(mode == "fused")
        opts = EngineOptions(1, 512, 256, 32, False, config.mask_token_id, args.cache, 0.0, False, None, (), False)
        engines = [DecodeEngine(model, Threshold(0.9), Scorer(), None, opts, graphs=g) for g in (False, True)]
        for engine in engines:
            engine.admit(RowRequest(prompt, 256))
        rows = []
        for step in range(args.steps):
            kinds = []
            for engine in engines:
                kinds.append("refresh" if engine.slots[0] is not None and engine.slots[0].refresh else "window")
                engine.step()
            eager, graph = engines
            diff = (eager.logits.float() - graph.logits.float()).abs().max().item()
            same = bool(torch.equal(eager.x, graph.x))
            rows.append({"step": step, "kind": kinds[0], "max_logit_diff": diff, "tokens_equal": same})
            print(mode, rows[-1], flush=True)
            if eager.slots[0] is None or graph.slots[0] is None:
                break
        report["modes"][mode] = rows
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
