"""A/B of the fused decode step's kernel choices, in one process on one GPU (LLaDA-8B shape, random weights).

Each variant builds its own captured ``DecodeProgram`` (dual or prefix cache, batch 1, prompt 256, gen
256, block 32, a block in the middle) and the variants' steps and refreshes are timed in interleaved
rounds, so drift of the GPU's clocks hits them alike. Variants:

- ``cublas``: every projection through cuBLAS (``skinny.ENABLED = False``), RoPE and the cache write by
  inductor (``rope_kv.ENABLED = False``);
- ``skinny``: the dense projections and the LM head through the Triton skinny matmul;
- ``skinny_rope``: and RoPE + cache write in one Triton kernel (the default);
- ``skinny_rope_flash``: as ``skinny_rope``, attention forced to FlashAttention.

    python benchmarks/step_ab.py [--cache dual --cache prefix] [--rounds 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from unmask.eval.speed import SHAPES, build_program, timed
from unmask.models import rope_kv, skinny
from unmask.models.loading import random_model

VARIANTS = {"cublas": (False, False, None), "skinny": (True, False, None), "skinny_rope": (True, True, None),
            "skinny_rope_flash": (True, True, SDPBackend.FLASH_ATTENTION)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", action="append", default=None)
    parser.add_argument("--variants", default="cublas,skinny,skinny_rope")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    model = random_model(SHAPES["llada-8b"], dtype=torch.bfloat16, device=device).fuse_projections()
    model.compile_kernels(True)
    prompts = torch.randint(0, model.config.vocab_size, (args.batch, 256), device=device)
    results: dict = {"device": torch.cuda.get_device_name(), "rows": []}
    for cache in args.cache or ["dual"]:
        programs = {}
        for name in args.variants.split(","):
            skinny.ENABLED, rope_kv.ENABLED, backend = VARIANTS[name]
            with sdpa_kernel([backend]) if backend else contextlib.nullcontext():
                program = build_program(model, prompts, cache, 256, 32, graphs=True)
            program.begin_block(4)
            programs[name] = program
        skinny.ENABLED = rope_kv.ENABLED = True
        for r in range(args.rounds):
            for name, program in programs.items():
                step = timed(lambda p=program: p.run_step(p.step_kind(4, first=False)), device, repeats=20)
                refresh = timed(lambda p=program: p.run_step("full"), device, repeats=10)
                amortised = (refresh + 31 * step) / 32
                row = {"cache": cache, "variant": name, "round": r, "step_ms": step, "refresh_ms": refresh,
                       "amortised_step_ms": amortised}
                results["rows"].append(row)
                print(f"{cache:6} {name:13} round {r}: step {step:.3f} ms, refresh {refresh:.3f} ms, "
                      f"amortised {amortised:.3f} ms", flush=True)
        del programs
        torch.cuda.empty_cache()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "step_ab.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
