"""Cache modes at a model shape (random weights, bf16, one GPU, one process): tok/s and the refresh share.

A batch of ``--batch`` prompts decodes ``--gen-length`` tokens with a fixed schedule of ``--tokens-per-step``
tokens per forward (``topk``, no early stop: every mode runs the same number of steps, so the difference is
what a step and a block start cost). Each (batch, tokens per step, cache) decodes twice; the second is timed.
The refresh share is the GPU time of the block-start forwards (full refreshes and answer-only ones) over the
GPU time of all step kinds (CUDA events around every replay, read after the run).

    PYTHONPATH=src python benchmarks/cache_speed.py --shape llada-8b --batch 1 --batch 32 \
        --tokens-per-step 1 --tokens-per-step 4 --cache dual --cache 'prompt_stale(every=inf)' \
        --cache 'partial(budget=16)' --json out.json

``--quantize int8|int4|fp8`` quantizes the linear layers first (weight-only, ``unmask.models.quantize``); every
row carries the model's stored weight bytes and its weight-read floor (those bytes over the copy bandwidth
measured in this process), so a quantized step is judged against its own floor.
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import torch

from unmask.decoding import TopK, decode
from unmask.decoding import engine as engine_module
from unmask.eval.speed import SHAPES, memory_bandwidth
from unmask.models import skinny
from unmask.models.loading import random_model
from unmask.models.quantize import quantize_model, weight_bytes

REFRESH_KINDS = ("refresh", "answer")
EVENTS: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
RECORDING = {"on": False}


def instrument() -> None:
    """CUDA events around every step kind the engine runs (only while ``RECORDING``)."""
    run = engine_module.DecodeEngine._run

    def run_with_events(self, kind):
        if not RECORDING["on"] or self.device.type != "cuda":
            return run(self, kind)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(self, kind)
        end.record()
        EVENTS.append((kind[0], start, end))

    engine_module.DecodeEngine._run = run_with_events


def measure(model, prompts: torch.Tensor, cache: str, tokens_per_step: int, args) -> dict:
    steps_per_block = args.block_length // tokens_per_step
    kw = dict(mask_id=model.config.mask_token_id, gen_length=args.gen_length, block_length=args.block_length,
              cache=cache, early_stop=False, compile=args.compile, slots=prompts.shape[0])
    cuda = prompts.device.type == "cuda"
    decode(model, prompts, TopK(steps_per_block), **kw)  # compile and capture
    if cuda:
        torch.cuda.synchronize()
    EVENTS.clear()
    RECORDING["on"] = True
    tic = time.perf_counter()
    out = decode(model, prompts, TopK(steps_per_block), **kw)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - tic
    RECORDING["on"] = False
    gpu = collections.defaultdict(float)
    for kind, start, end in EVENTS:
        gpu[kind] += start.elapsed_time(end)
    total = sum(gpu.values())
    tokens = prompts.shape[0] * args.gen_length
    return {"mode": cache, "batch": prompts.shape[0], "tokens_per_step": tokens_per_step, "wall_s": wall,
            "nfe": out.nfe, "tok_s": tokens / wall, "ms_per_step": 1e3 * wall / out.nfe,
            "refresh_share": sum(gpu[k] for k in REFRESH_KINDS) / total if total else None,
            "gpu_ms": {k: round(v, 2) for k, v in gpu.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llada-8b")
    ap.add_argument("--batch", type=int, action="append", default=[])
    ap.add_argument("--tokens-per-step", type=int, action="append", default=[])
    ap.add_argument("--cache", action="append", default=[])
    ap.add_argument("--prompt-length", type=int, default=256)
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--compile", default="fused")
    ap.add_argument("--device", default="cuda", help="cuda (cpu: a smoke run, no GPU times)")
    ap.add_argument("--quantize", default=None, help="int8, int4 or fp8 (default: the model's dtype)")
    ap.add_argument("--bits", action="store_true",
                    help="quantized weights converted by integer bit operations in the skinny kernel (BIT_TRICKS)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    skinny.BIT_TRICKS = args.bits
    instrument()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = random_model(SHAPES[args.shape], dtype=dtype, device=device)
    if args.quantize:
        quantize_model(model, args.quantize)
    model.fuse_projections()
    stored = weight_bytes(model)
    floor_ms = 1e3 * stored / memory_bandwidth(device, gib=2.0 if device.type == "cuda" else 0.25)
    generator = torch.Generator(device=device).manual_seed(0)
    rows: list[dict] = []
    caches = args.cache or ["dual", "prompt_stale(every=inf)", "partial(budget=16)"]
    for batch in args.batch or [1, 32]:
        prompts = torch.randint(0, model.config.vocab_size, (batch, args.prompt_length), device=device,
                                generator=generator)
        for tps in args.tokens_per_step or [1, 4]:
            dual = None
            for cache in caches:
                row = measure(model, prompts, cache, tps, args)
                row.update(shape=args.shape, compile=args.compile, quantize=args.quantize or str(dtype)[6:],
                           weight_bytes=stored, floor_ms=floor_ms, bits=args.bits)
                if cache == "dual":
                    dual = row["tok_s"]
                row["speedup_vs_dual"] = row["tok_s"] / dual if dual else None
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(args.json, "w") as f:  # after every row: a run cut short keeps what it measured
                    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
                    json.dump({"device": name, "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
