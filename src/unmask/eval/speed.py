"""``unmask bench``: per-step latency and tokens/s of each cache mode at a model shape.

For each cache mode and batch size this measures, with CUDA events (synchronised wall clock on the
CPU), warm-up excluded, median of repeats:

- the steady-state step: ``none`` = a forward over the whole canvas [prompt | generation];
  ``prefix`` = a cached forward over [block_start, end); ``dual`` = a cached forward over the block;
- the block refresh (one full forward that fills the cache), paid once per block by the cache modes;
- the amortised step = (refresh + (steps_per_block - 1) * step) / steps_per_block, and tokens/s at one
  token per step and per row (LLaDA's baseline schedule): batch / amortised step;
- end to end: ``decode`` over two blocks (the same prompt length, one token per step), wall time / NFE,
  which adds the scorer, the policy, cache bookkeeping and host synchronisation to the forward.

Beside it, the floors: every step reads all weights once (weight bytes / measured copy bandwidth),
and does 2 * params * tokens FLOPs (over the measured bf16 matmul rate). Speed does not depend on
weight values, so random weights at the real shape give honest timings.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from unmask.models.cache import KVCache
from unmask.models.config import LLADA_8B, LLaDAConfig
from unmask.models.llada import LLaDAModel
from unmask.models.loading import load_model, parse_dtype, random_model

SHAPES: dict[str, LLaDAConfig] = {
    "llada-8b": LLADA_8B,
    "llada-tiny": LLaDAConfig(d_model=256, n_heads=4, n_layers=4, mlp_hidden_size=688, vocab_size=4096,
                              embedding_size=4096, mask_token_id=4095, eos_token_id=4094, pad_token_id=4094),
}


@dataclass
class BenchRow:
    cache: str
    batch: int
    prompt_length: int
    gen_length: int
    block_length: int
    step_ms: float
    refresh_ms: float
    amortised_step_ms: float
    tokens_per_s: float
    weight_floor_ms: float
    flop_floor_ms: float
    ratio_to_floor: float
    e2e_step_ms: float  # decode() wall time / NFE over two blocks: scorer, policy and host syncs included


def timed(fn: Callable[[], object], device: torch.device, warmup: int = 3, repeats: int = 10) -> float:
    """Median milliseconds of ``fn`` (CUDA events on a GPU, perf_counter otherwise)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            tic = time.perf_counter()
            fn()
            times.append((time.perf_counter() - tic) * 1e3)
    return statistics.median(times)


def memory_bandwidth(device: torch.device, gib: float = 2.0) -> float:
    """Bytes/s of a large device-to-device copy, counting bytes read plus bytes written."""
    n = int(gib * 2**30) // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), device, warmup=2, repeats=10)
    return 2 * n * 4 / (ms / 1e3)


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int = 8192) -> float:
    """FLOP/s of a large square matmul on random data."""
    if device.type == "cpu":
        size = 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    ms = timed(lambda: a @ b, device, warmup=2, repeats=10)
    return 2 * size**3 / (ms / 1e3)


def end_to_end_step_ms(model: LLaDAModel, prompts: torch.Tensor, cache: str, block_length: int) -> float:
    """Milliseconds per model forward of a real ``decode`` over two blocks (LLaDA schedule, no early stop)."""
    from unmask.decoding.loop import decode
    from unmask.decoding.policies import TopK

    def run() -> float:
        out = decode(model, prompts, TopK(block_length), mask_id=model.config.mask_token_id,
                     gen_length=2 * block_length, block_length=block_length, cache=cache, early_stop=False)
        return out.elapsed_s * 1e3 / out.nfe

    run()  # warm-up
    return statistics.median(run() for _ in range(3))


def bench_model(
    model: LLaDAModel,
    batches: tuple[int, ...] = (1, 32),
    caches: tuple[str, ...] = ("none", "prefix", "dual"),
    prompt_length: int = 256,
    gen_length: int = 256,
    block_length: int = 32,
    repeats: int = 10,
    log: Callable[[str], None] = print,
) -> tuple[list[BenchRow], dict]:
    device = model.device
    n_params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bandwidth = memory_bandwidth(device) if device.type == "cuda" else float("nan")
    flops = matmul_rate(device, model.dtype)
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(model.dtype).removeprefix("torch."), "params": n_params, "weight_bytes": weight_bytes,
        "measured_bandwidth_GBps": bandwidth / 1e9, "measured_matmul_TFLOPs": flops / 1e12,
        "torch": torch.__version__,
    }
    log(f"{env['device']}: {n_params / 1e9:.2f}B params, {weight_bytes / 2**30:.1f} GiB, "
        f"copy {bandwidth / 1e9:.0f} GB/s, matmul {flops / 1e12:.0f} TFLOP/s")
    T = prompt_length + gen_length
    s = prompt_length + gen_length // 2  # a block in the middle of the generation
    e = s + block_length
    steps_per_block = block_length  # LLaDA baseline: one token per step
    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    vocab = model.config.vocab_size
    for batch in batches:
        x = torch.randint(0, vocab, (batch, T), device=device, generator=gen)
        with torch.no_grad():
            refresh_ms = timed(lambda x=x: model(x, logits_range=(s, e)), device, repeats=repeats)
            for cache in caches:
                if cache == "none":
                    step_ms, refresh = refresh_ms, 0.0
                    tokens = T
                else:
                    kv = KVCache(cache)

                    def refresh_fn(x=x, kv=kv) -> torch.Tensor:
                        kv.keys, kv.values = [], []
                        return model(x, cache=kv, logits_range=(s, e))

                    refresh = timed(refresh_fn, device, repeats=repeats)
                    ws, we = kv.window(s, e, T)
                    step_ms = timed(lambda x=x, kv=kv, ws=ws, we=we: model(
                        x[:, ws:we], cache=kv, start=ws, logits_range=(s - ws, e - ws)), device, repeats=repeats)
                    tokens = we - ws
                e2e_ms = end_to_end_step_ms(model, x[:, :prompt_length], cache, block_length)
                amortised = (refresh + (steps_per_block - (cache != "none")) * step_ms) / steps_per_block
                weight_floor = weight_bytes / bandwidth * 1e3 if bandwidth == bandwidth else float("nan")
                flop_floor = 2 * n_params * batch * tokens / flops * 1e3
                floor = max(weight_floor, flop_floor) if weight_floor == weight_floor else flop_floor
                row = BenchRow(cache, batch, prompt_length, gen_length, block_length, step_ms, refresh, amortised,
                               batch / (amortised / 1e3), weight_floor, flop_floor, step_ms / floor, e2e_ms)
                rows.append(row)
                log(f"batch {batch:>3} cache {cache:>6}: step {step_ms:8.2f} ms (refresh {refresh:8.2f} ms), "
                    f"amortised {amortised:8.2f} ms, {row.tokens_per_s:9.1f} tok/s, floor {floor:.2f} ms, "
                    f"end-to-end step {e2e_ms:.2f} ms")
        del x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, env


def markdown(rows: list[BenchRow], env: dict, command: str) -> str:
    lines = [
        f"Device: {env['device']}, dtype {env['dtype']}, {env['params'] / 1e9:.2f}B parameters "
        f"({env['weight_bytes'] / 2**30:.2f} GiB of weights); measured copy bandwidth "
        f"{env['measured_bandwidth_GBps']:.0f} GB/s, bf16 matmul {env['measured_matmul_TFLOPs']:.0f} TFLOP/s; "
        f"torch {env['torch']}.",
        "",
        f"Command: `{command}`",
        "",
        "| cache | batch | step ms | refresh ms | amortised step ms | tokens/s (1 tok/step/row) "
        "| weight-read floor ms | FLOP floor ms | step / floor | end-to-end step ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.cache} | {r.batch} | {r.step_ms:.2f} | {r.refresh_ms:.2f} | {r.amortised_step_ms:.2f} | "
            f"{r.tokens_per_s:.1f} | {r.weight_floor_ms:.2f} | {r.flop_floor_ms:.2f} | {r.ratio_to_floor:.2f} | "
            f"{r.e2e_step_ms:.2f} |"
        )
    return "\n".join(lines) + "\n"


def run_bench(
    model_path: str | None,
    random_weights: str | None,
    out: Path | None,
    batches: tuple[int, ...],
    caches: tuple[str, ...],
    prompt_length: int,
    gen_length: int,
    block_length: int,
    dtype: str | None,
    device: str | None,
    repeats: int,
    command: str,
    log: Callable[[str], None] = print,
) -> list[BenchRow]:
    if gen_length % block_length:
        raise ValueError(f"gen_length={gen_length} must be a multiple of block_length={block_length}")
    for cache in caches:
        if cache not in ("none", "prefix", "dual"):
            raise ValueError(f"unknown cache mode {cache!r} (allowed: none, prefix, dual)")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = parse_dtype(dtype) or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    if random_weights is not None:
        if random_weights not in SHAPES:
            raise ValueError(f"unknown shape {random_weights!r} for --random-weights (allowed: {', '.join(SHAPES)})")
        model = random_model(SHAPES[random_weights], dtype=torch_dtype, device=dev)
    else:
        model = load_model(model_path, dtype=torch_dtype, device=dev) if model_path else None
        if model is None:
            from unmask.api import embedded_model_path

            model = load_model(embedded_model_path(), dtype=torch_dtype, device=dev)
    if prompt_length + gen_length > model.config.max_sequence_length:
        raise ValueError(f"prompt_length + gen_length = {prompt_length + gen_length} exceeds max_sequence_length "
                         f"{model.config.max_sequence_length}")
    rows, env = bench_model(model, batches, caches, prompt_length, gen_length, block_length, repeats, log)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps({"env": env, "command": command,
                                                    "rows": [asdict(r) for r in rows]}, indent=2))
        (out / "bench.md").write_text(markdown(rows, env, command))
    return rows
