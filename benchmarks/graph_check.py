"""On a GPU: the captured decode step replays exactly what its kernels compute eagerly.

For every policy x cache mode x credit x early stop (plus CFG, sampling and a ragged batch), a small
random-weight LLaDA decodes the same prompts twice with the same kernels: once step by step from
Python, once as CUDA graph replays. Tokens, commit steps and NFE must be identical. Beside it, the
share of tokens on which the eager kernels and the ``torch.compile`` kernels agree (they may differ
in the last bits of float arithmetic, which flips near-ties of random weights).

    python benchmarks/graph_check.py [--dtype float32] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from unmask.decoding import CreditConfig, Factor, Frechet, Scorer, Threshold, TopK
from unmask.decoding.engine import engine_decode
from unmask.eval.speed import SHAPES
from unmask.models.loading import parse_dtype, random_model


def run(model, prompts, mask, policy, cache, credit, early_stop, stop_ids, graphs, cfg=0.0, temperature=0.0, seed=0):
    gen = torch.Generator(device=prompts.device).manual_seed(seed)
    rows, steps, _, _ = engine_decode(
        model, prompts, policy, mask_id=model.config.mask_token_id, attention_mask=mask, gen_length=64,
        block_length=16, scorer=Scorer(temperature=temperature, generator=gen), credit=credit, cache=cache,
        cfg_scale=cfg, logits_eos_inf=False, eos_id=None, stop_ids=tuple(stop_ids), early_stop=early_stop,
        time_steps=False, graphs=graphs)
    return torch.stack([r.tokens for r in rows]), torch.stack([r.commit_step for r in rows]), steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    model = random_model(SHAPES["llada-tiny"], dtype=parse_dtype(args.dtype), device=device, seed=1).fuse_projections()
    g = torch.Generator(device=device).manual_seed(0)
    prompts = torch.randint(0, 4000, (3, 12), device=device, generator=g)
    mask = torch.ones_like(prompts)
    mask[0, :5] = 0
    mask[2, :2] = 0
    # a stop token the model commits often, so that early stop triggers
    model.compile_kernels(False)
    probe, _, _ = run(model, prompts, None, Threshold(0.9), "none", None, False, (), graphs=False)
    stop = int(probe[:, 12:].flatten().bincount().argmax())
    cases = []
    for policy in (TopK(4), Threshold(0.05), Factor(1.0), Frechet(0.25)):
        for cache in ("none", "prefix", "dual"):
            for credit in (None, CreditConfig()):
                for early_stop in (False, True):
                    cases.append(dict(policy=policy, cache=cache, credit=credit, early_stop=early_stop))
    cases += [dict(policy=Threshold(0.05), cache="dual", credit=None, early_stop=True, cfg=1.5),
              dict(policy=TopK(4), cache="prefix", credit=None, early_stop=False, temperature=0.7),
              dict(policy=Frechet(0.25), cache="none", credit=CreditConfig(adaptive=True), early_stop=True,
                   temperature=1.0)]
    results, failures = [], 0
    for case in cases:
        for ragged in (False, True):
            m = mask if ragged else None
            kw = dict(case, stop_ids=(stop,))
            model.compile_kernels(True)
            eager = run(model, prompts, m, graphs=False, **kw)
            graph = run(model, prompts, m, graphs=True, **kw)
            model.compile_kernels(False)
            plain = run(model, prompts, m, graphs=False, **kw)
            same = torch.equal(eager[0], graph[0]) and torch.equal(eager[1], graph[1]) and eager[2] == graph[2]
            agree = float((plain[0][:, 12:] == graph[0][:, 12:]).float().mean())
            failures += not same
            name = (f"{case['policy']!r:32} {case['cache']:6} credit={case['credit'] is not None!s:5} "
                    f"early_stop={case['early_stop']!s:5} ragged={ragged!s:5} cfg={case.get('cfg', 0)} "
                    f"T={case.get('temperature', 0)}")
            results.append({"case": name, "graph_equals_eager": same, "nfe": graph[2],
                            "compiled_vs_eager_kernels_token_agreement": agree})
            print(f"{'ok ' if same else 'BAD'} {name} nfe={graph[2]:3d} compiled/eager-kernel agreement {agree:.3f}",
                  flush=True)
    print(f"{len(results) - failures}/{len(results)} cases: graph replay == eager (same kernels)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "graph_check.json").write_text(json.dumps(results, indent=1))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
