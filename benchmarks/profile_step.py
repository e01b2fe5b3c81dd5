"""Profile one decode step (torch profiler): kernels launched, host time, top kernels by GPU time.

At the LLaDA-8B shape with random weights, batch 1, prompt 256, gen 256, block 32, for a block in the
middle of the generation: the eager step (ops launched from Python), the same kernels captured in a
CUDA graph (exact) and the captured step with its elementwise work fused by torch.compile (fused), for
each cache mode asked (``--sdpa`` forces an attention backend for the experiment).

    python benchmarks/profile_step.py --out DIR [--cache dual --cache none] [--shape llada-8b]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from unmask.eval.speed import SHAPES, build_program
from unmask.models.loading import random_model


def summarise(prof, steps: int) -> tuple[str, dict]:
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = sum(e.count for e in events) / steps
    gpu_ms = sum(e.self_device_time_total for e in events) / 1e3 / steps
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=70)
    return table, {"kernels_per_step": kernels, "gpu_busy_ms_per_step": gpu_ms}


def kernel_sequence(prof) -> list[dict]:
    """The profiled GPU kernels in launch order: name, start and duration in microseconds."""
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels.sort(key=lambda e: e.time_range.start)
    return [{"name": e.name, "start_us": e.time_range.start, "us": e.time_range.elapsed_us()} for e in kernels]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shape", default="llada-8b")
    parser.add_argument("--cache", action="append", default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--modes", default="eager,exact,fused", help="comma-separated: eager, exact, fused")
    parser.add_argument("--sdpa", default=None, help="force an attention backend: flash, efficient, cudnn")
    parser.add_argument("--kernels", action="store_true",
                        help="also write each profiled step's kernel sequence (name, start, duration) as JSON")
    args = parser.parse_args()
    device = torch.device("cuda")
    model = random_model(SHAPES[args.shape], dtype=torch.bfloat16, device=device).fuse_projections()
    prompts = torch.randint(0, model.config.vocab_size, (args.batch, 256), device=device)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for cache in args.cache or ["dual"]:
        for mode in args.modes.split(","):
            graphs = mode != "eager"
            model.compile_kernels(mode == "fused")
            backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                        "cudnn": SDPBackend.CUDNN_ATTENTION}
            with sdpa_kernel([backends[args.sdpa]] if args.sdpa else list(backends.values()) + [SDPBackend.MATH]):
                program = build_program(model, prompts, cache, 256, 32, graphs)
            program.begin_block(4)
            kind = program.step_kind(4, first=cache == "none")
            for _ in range(3):
                program.run_step(kind)
            torch.cuda.synchronize()
            tic = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(args.steps):
                    program.run_step(kind)
                torch.cuda.synchronize()
            wall = (time.perf_counter() - tic) * 1e3 / args.steps
            table, stats = summarise(prof, args.steps)
            if args.kernels:
                (args.out / f"kernels_{cache}_{mode}.json").write_text(json.dumps(kernel_sequence(prof)))
            head = (f"## batch {args.batch}, cache {cache}, {mode}: {stats['kernels_per_step']:.0f} kernels per step, "
                    f"GPU busy {stats['gpu_busy_ms_per_step']:.2f} ms per step, wall {wall:.2f} ms per step "
                    f"(under the profiler)")
            print(head, flush=True)
            lines += [head, "", "```", table, "```", ""]
            del program
    (args.out / "profile.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
