"""``unmask bench``: per-step latency and tokens/s of each cache mode at a model shape.

For each batch size, cache mode and execution mode (``eager``: the step launched op by op from
Python; ``exact``: the same kernels captured in a CUDA graph; ``fused``: the step captured in a CUDA
graph with the block's elementwise work fused by ``torch.compile``) this measures with CUDA events
(wall clock on the CPU), warm-up excluded, median of repeats, a *whole decode step* of a
decode engine's step (forward, scorer, policy, commit, bookkeeping) for a block in the middle of the
generation:

- the steady-state step: ``none`` = a forward over the whole canvas [prompt | generation];
  ``prefix`` = a cached forward over [block_start, end); ``dual`` = a cached forward over the block;
- the block refresh (one full forward that rewrites the cache), paid once per block by the cache modes;
- the amortised step = (refresh + (steps_per_block - 1) * step) / steps_per_block, and tokens/s at one
  token per step and per row (LLaDA's baseline schedule): batch / amortised step;
- end to end: a whole ``decode`` (same shape, one token per step), wall time / NFE, which adds the
  host loop and its read-backs (skipped where it would take longer than ``e2e_budget_s``).

Beside it, the floors: a step reads all weights once (weight bytes / measured copy bandwidth) and does
2 * params * tokens FLOPs (over the measured matmul rate); its floor is the larger, and the amortised
floor mixes the refresh's and the step's like the amortised step. For a mixture-of-experts model a
step reads the weights outside the experts plus each expert that some token of the step routes to
(counted on the step's own tokens: at batch 1 a block's tokens, at batch 32 all experts), and does
2 * active params * tokens FLOPs (the parameters one token multiplies: its top-k experts). Speed does
not depend on weight values, so random weights at the real shape give honest timings (a MoE's random
router spreads tokens over the experts about as a trained one does).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from unmask.decoding.engine import DecodeEngine, EngineOptions, RowRequest, run_rows
from unmask.decoding.loop import check_lengths, decode
from unmask.decoding.policies import Policy, TopK
from unmask.decoding.scorers import Scorer
from unmask.models.cache import WINDOWS, recompute_columns
from unmask.models.config import LLADA_8B, LLaDAConfig
from unmask.models.dream_config import DREAM_7B, DreamConfig
from unmask.models.llada import LLaDAModel
from unmask.models.llada2_config import LLADA2_FLASH, LLADA2_MINI, LLaDA2Config
from unmask.models.llada_moe_config import LLADA_MOE_7B_A1B, LLaDAMoEConfig
from unmask.models.loading import load_model, parse_dtype, random_model, resolve_device
from unmask.models.quantize import check_mode, parameter_count, quantize_model, weight_bytes
from unmask.threads import available_cores, load_average

SHAPES: dict[str, LLaDAConfig | LLaDAMoEConfig | DreamConfig] = {
    "llada-8b": LLADA_8B,
    "llada-tiny": LLaDAConfig(d_model=256, n_heads=4, n_layers=4, mlp_hidden_size=688, vocab_size=4096,
                              embedding_size=4096, mask_token_id=4095, eos_token_id=4094, pad_token_id=4094),
    "llada-moe-7b-a1b": LLADA_MOE_7B_A1B,
    "llada-moe-tiny": LLaDAMoEConfig(hidden_size=256, num_attention_heads=4, num_hidden_layers=4, num_experts=16,
                                     num_experts_per_tok=4, expert_intermediate_size=128, vocab_size=4096,
                                     mask_token_id=4095, eos_token_id=4094, pad_token_id=4094),
    "dream-7b": DREAM_7B,
    "llada2-mini": LLADA2_MINI,
    "llada2-flash": LLADA2_FLASH,
    "llada2-tiny": LLaDA2Config(vocab_size=4096, hidden_size=256, intermediate_size=688, moe_intermediate_size=128,
                                num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                num_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2, mask_token_id=4095,
                                eos_token_id=4094, pad_token_id=4094),
    "dream-tiny": DreamConfig(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=2, mask_token_id=4095, pad_token_id=4094),
}


@dataclass
class BenchRow:
    mode: str  # eager | exact | fused
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
    flop_floor_ms: float  # of the steady-state step
    floor_ms: float  # max(weight, FLOP) of the steady-state step
    amortised_floor_ms: float  # the floor of the amortised step (refresh included)
    ratio_to_floor: float  # amortised step / amortised floor
    e2e_step_ms: float  # decode() wall time / NFE: host loop and read-backs included (nan: not measured)
    graph_equals_eager: bool | None  # graph modes: the captured decode's tokens equal its kernels run eagerly


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
    return 2 * n * 4 / (max(ms, 1e-6) / 1e3)


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int = 8192) -> float:
    """FLOP/s of a large square matmul on random data."""
    if device.type == "cpu":
        size = 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    ms = timed(lambda: a @ b, device, warmup=2, repeats=10)
    return 2 * size**3 / (max(ms, 1e-6) / 1e3)


class StepBench:
    """A decode engine loaded with a batch and placed at a block, with verbs to time one step kind of it:
    ``step_kind(block, first)`` (the refresh or the full forward at a block start, else the window step)
    and ``run_step(kind)`` (the kind's forward and the commit, replayed as graphs where captured)."""

    def __init__(self, engine: DecodeEngine, prompts: torch.Tensor, gen_length: int) -> None:
        self.engine = engine
        for i, row in enumerate(prompts):
            engine.admit(RowRequest(row, gen_length, key=i))
        self.rows = prompts.shape[0]

    @property
    def x(self) -> torch.Tensor:
        return self.engine.x

    def begin_block(self, block: int) -> None:
        """Every row at the start of ``block`` (its answer still masked)."""
        engine, n = self.engine, self.rows
        engine.block[:n] = block
        engine.step_index[:n] = 0
        for slot in engine.slots[:n]:
            slot.block, slot.refresh = block, True
        engine.block_masked[:n] = engine.x[:n].gather(1, engine._block_columns(n)) == engine.opts.mask_id
        if engine.schedule is not None:
            engine.schedule[:n] = engine.policy.start_block(engine.block_masked[:n])
        engine.refresh_slots[:n] = torch.arange(n, device=engine.device)

    def step_kind(self, block: int, first: bool) -> tuple[tuple, ...]:
        engine = self.engine
        hi, cache = engine.hi, engine.opts.cache
        if cache == "none":
            forward = ("full", hi)
        elif first:
            forward = ("refresh", self.rows)
        else:
            forward = ("window", hi, engine.BL if cache == "dual" else engine.G - block * engine.BL)
        return forward, ("commit", hi)

    def run_step(self, kinds: tuple[tuple, ...]) -> None:
        self.engine._draw_noise()
        for kind in kinds:
            self.engine._run(kind)

    def _forward(self, kinds: tuple[tuple, ...]) -> None:
        self.engine._function(kinds[0])()


def build_program(
    model: LLaDAModel, prompts: torch.Tensor, cache: str, gen_length: int, block_length: int, graphs: bool,
    policy: Policy | None = None,
) -> StepBench:
    """A decode engine with the LLaDA schedule (one token per step), loaded with ``prompts``."""
    B, P = prompts.shape
    opts = EngineOptions(B, P + gen_length, gen_length, block_length, False, model.config.mask_token_id, cache, 0.0,
                         False, None, (), False)
    engine = DecodeEngine(model, policy or TopK(block_length), Scorer(), None, opts, graphs=graphs)
    return StepBench(engine, prompts, gen_length)


def weights_read(
    model: LLaDAModel, prompts: torch.Tensor, cache: str, gen_length: int, block_length: int, block: int,
) -> tuple[int, int]:
    """Weight bytes read by the steady-state step and by the refresh of ``block``: every weight for a dense
    model; for a MoE model (``weight_bytes_read``) those outside the experts plus the routed experts."""
    total = weight_bytes(model)
    measure = getattr(model, "weight_bytes_read", None)
    if measure is None:
        return total, total
    program = build_program(model, prompts, cache, gen_length, block_length, graphs=False)
    program.begin_block(block)
    kinds = program.step_kind(block, first=False), program.step_kind(block, first=True)
    return measure(lambda: program._forward(kinds[0])), measure(lambda: program._forward(kinds[1]))


def end_to_end_step_ms(
    model: LLaDAModel, prompts: torch.Tensor, cache: str, gen_length: int, block_length: int,
    compile: bool | str, repeats: int = 1,
) -> tuple[float, torch.Tensor]:
    """Milliseconds per forward of a whole ``decode`` (LLaDA schedule, no early stop), and its tokens."""

    def run() -> tuple[float, torch.Tensor]:
        out = decode(model, prompts, TopK(block_length), mask_id=model.config.mask_token_id, gen_length=gen_length,
                     block_length=block_length, cache=cache, early_stop=False, compile=compile)
        return out.elapsed_s * 1e3 / out.nfe, out.tokens

    _, tokens = run()  # warm-up (captures the graphs of this shape)
    return statistics.median(run()[0] for _ in range(repeats)), tokens


def bench_model(
    model: LLaDAModel,
    batches: tuple[int, ...] = (1, 32),
    caches: tuple[str, ...] = ("none", "prefix", "dual"),
    prompt_length: int = 256,
    gen_length: int = 256,
    block_length: int = 32,
    repeats: int = 10,
    log: Callable[[str], None] = print,
    modes: tuple[str, ...] | None = None,
    e2e_budget_s: float = 20.0,
) -> tuple[list[BenchRow], dict]:
    """Step latency per (batch, cache, mode); ``modes``: ``eager``, ``exact``, ``fused`` (default: all on CUDA).

    A graph mode's decode tokens are checked against the same kernels run eagerly (they must be identical).
    """
    device = model.device
    on_gpu = device.type == "cuda"
    load = load_average()  # before this process's own work raises it
    modes = modes or (("eager", "exact", "fused") if on_gpu else ("eager",))
    for mode in modes:
        if mode not in BENCH_MODES:
            raise ValueError(f"unknown bench mode {mode!r} (allowed: {', '.join(BENCH_MODES)})")
        if mode != "eager" and not on_gpu:
            raise ValueError(f"mode {mode!r} captures CUDA graphs and needs a CUDA device")
    n_params = parameter_count(model)
    n_active = getattr(model, "active_parameters", n_params)  # per token: a MoE model multiplies k of E experts
    stored_bytes = weight_bytes(model)
    bandwidth = memory_bandwidth(device, gib=2.0 if on_gpu else 0.25)
    flops = matmul_rate(device, model.dtype)
    env = {
        "device": torch.cuda.get_device_name(device) if on_gpu else "cpu",
        "dtype": str(model.dtype).removeprefix("torch."), "params": n_params, "active_params": n_active,
        "weight_bytes": stored_bytes, "quantize": (getattr(model, "quantization_config", None) or {}).get("mode"),
        "expert_path": model.sparse_blocks()[0].path if getattr(model, "sparse_blocks", lambda: [])() else None,
        "measured_bandwidth_GBps": bandwidth / 1e9, "measured_matmul_TFLOPs": flops / 1e12,
        "torch": torch.__version__,
    }
    if not on_gpu:
        env.update(threads=torch.get_num_threads(), cores=available_cores(), load_average=load)
    log(f"{env['device']}: {n_params / 1e9:.3f}B params, {stored_bytes / 2**30:.2f} GiB, "
        f"copy {bandwidth / 1e9:.0f} GB/s, matmul {rate(flops)}")
    if not on_gpu:
        log(cpu_note(env))
    T = prompt_length + gen_length
    mid = gen_length // block_length // 2  # a block in the middle of the generation
    steps_per_block = block_length  # LLaDA baseline: one token per step
    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    for batch in batches:
        prompts = torch.randint(0, model.config.vocab_size, (batch, prompt_length), device=device, generator=gen)
        for cache in caches:
            window = recompute_columns(cache, prompt_length + mid * block_length,
                                       prompt_length + (mid + 1) * block_length, T)
            tokens = window[1] - window[0]
            step_bytes, refresh_bytes = weights_read(model, prompts, cache, gen_length, block_length, mid)
            weight_floor = step_bytes / bandwidth * 1e3
            flop_floor = 2 * n_active * batch * tokens / flops * 1e3
            floor = max(weight_floor, flop_floor)
            refresh_floor = max(refresh_bytes / bandwidth * 1e3, 2 * n_active * batch * T / flops * 1e3)
            for mode in modes:
                graphs = mode != "eager"
                model.compile_kernels(mode == "fused")
                program = build_program(model, prompts, cache, gen_length, block_length, graphs)
                program.begin_block(mid)
                full = program.step_kind(mid, first=True)
                step_ms = refresh_ms = timed(lambda p=program, k=full: p.run_step(k), device, repeats=repeats)
                if cache != "none":
                    kind = program.step_kind(mid, first=False)
                    step_ms = timed(lambda p=program, k=kind: p.run_step(k), device, repeats=repeats)
                else:
                    refresh_ms = 0.0
                del program
                amortised = (refresh_ms + (steps_per_block - (cache != "none")) * step_ms) / steps_per_block
                amortised_floor = ((cache != "none") * refresh_floor
                                   + (steps_per_block - (cache != "none")) * floor) / steps_per_block
                e2e_ms, agree = float("nan"), None
                e2e_estimate_s = amortised * gen_length / 1e3
                if e2e_estimate_s <= e2e_budget_s:
                    e2e_ms, tokens_out = end_to_end_step_ms(model, prompts, cache, gen_length, block_length,
                                                            {"eager": False}.get(mode, mode))
                    if graphs:  # the captured step must replay exactly what its kernels compute eagerly
                        model.compile_kernels(mode == "fused")
                        opts = EngineOptions(batch, prompt_length + gen_length, gen_length, block_length, False,
                                             model.config.mask_token_id, cache, 0.0, False, None, (), False)
                        engine = DecodeEngine(model, TopK(block_length), Scorer(), None, opts)
                        eager_tokens = torch.stack([r.tokens for r in run_rows(engine, prompts, gen_length)])
                        agree = bool(torch.equal(eager_tokens, tokens_out.cpu()))
                        del engine
                        if not agree:
                            raise AssertionError(f"graph and eager tokens differ (batch {batch}, cache {cache})")
                model.__dict__.pop("_decode_engines", None)  # free this configuration's buffers and graphs
                if on_gpu:
                    torch.cuda.empty_cache()
                row = BenchRow(mode, cache, batch, prompt_length, gen_length, block_length, step_ms, refresh_ms,
                               amortised, batch / (amortised / 1e3), weight_floor, flop_floor, floor,
                               amortised_floor, amortised / amortised_floor, e2e_ms, agree)
                rows.append(row)
                e2e = (f"end-to-end {e2e_ms:.2f} ms/NFE" if math.isfinite(e2e_ms) else
                       f"end-to-end skipped (about {e2e_estimate_s:.0f} s > budget {e2e_budget_s:.0f} s)")
                log(f"batch {batch:>3} cache {cache:>6} {mode:>5}: step {step_ms:8.2f} ms (refresh {refresh_ms:8.2f}),"
                    f" amortised {amortised:8.2f} ms = {row.ratio_to_floor:.2f}x floor {amortised_floor:.2f}, "
                    f"{row.tokens_per_s:9.1f} tok/s, {e2e}")
        del prompts
        if on_gpu:
            torch.cuda.empty_cache()
    model.compile_kernels(False)
    return rows, env


def rate(flops: float) -> str:
    """FLOP/s in TFLOP/s, or GFLOP/s below one TFLOP/s (a CPU's rate is not '0 TFLOP/s')."""
    return f"{flops / 1e12:.2f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:.1f} GFLOP/s"


def cpu_note(env: dict) -> str:
    """What a CPU bench's floors are worth: measured on this process's threads, noisy where cores are shared."""
    load, cores, threads = env.get("load_average"), env.get("cores"), env.get("threads")
    note = (f"CPU: {threads} thread(s) of {cores} core(s); the floors use a 1024 x 1024 matmul and a 256 MiB copy "
            "measured here, so they are this process's rates, not the chip's peak")
    if load is not None and cores and load > cores:
        note += (f"; load average {load:.1f} > {cores} cores: other processes share the CPU, so timings and "
                 "floors are noisy (not a clean measurement)")
    return note + "."


def markdown(rows: list[BenchRow], env: dict, command: str) -> str:
    lines = [
        f"Device: {env['device']}, dtype {env['dtype']}, {env['params'] / 1e9:.2f}B parameters "
        f"({env['weight_bytes'] / 2**30:.2f} GiB of weights); measured copy bandwidth "
        f"{env['measured_bandwidth_GBps']:.0f} GB/s, matmul {rate(env['measured_matmul_TFLOPs'] * 1e12)}; "
        f"torch {env['torch']}.",
        *([cpu_note(env)] if env['device'] == "cpu" else []),
        "",
        f"Command: `{command}`",
        "",
        "| batch | cache | mode | step ms | refresh ms | amortised step ms | floor ms (amortised) | amortised / floor "
        "| tokens/s (1 tok/step/row) | end-to-end ms/NFE |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.batch} | {r.cache} | {r.mode} | {r.step_ms:.2f} | {r.refresh_ms:.2f} | {r.amortised_step_ms:.2f} | "
            f"{r.amortised_floor_ms:.2f} | {r.ratio_to_floor:.2f} | {r.tokens_per_s:.1f} | "
            f"{f'{r.e2e_step_ms:.2f}' if math.isfinite(r.e2e_step_ms) else 'skipped'} |"
        )
    return "\n".join(lines) + "\n"


BENCH_MODES = ("eager", "exact", "fused")
MAX_BENCH_BATCH = 1 << 16
MAX_BENCH_REPEATS = 10_000


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
    modes: tuple[str, ...] | None = None,
    quantize: str | None = None,
    expert_path: str | None = None,
) -> list[BenchRow]:
    """``unmask bench``: load (or build with random weights) a model and time its steps (``bench_model``);
    ``expert_path`` picks a mixture-of-experts model's expert kernels (``fused``, ``grouped``, ``loop``)."""
    check_lengths(gen_length, block_length)
    for cache in caches:
        if cache not in WINDOWS:
            raise ValueError(f"unknown cache mode {cache!r} (the bench times: {', '.join(WINDOWS)})")
    for batch in batches:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BENCH_BATCH:
            raise ValueError(f"batch size must be an integer in [1, {MAX_BENCH_BATCH}], got {batch!r}")
    if isinstance(prompt_length, bool) or not isinstance(prompt_length, int) or prompt_length < 1:
        raise ValueError(f"prompt_length must be an integer >= 1, got {prompt_length!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= MAX_BENCH_REPEATS:
        raise ValueError(f"repeats must be an integer in [1, {MAX_BENCH_REPEATS}], got {repeats!r}")
    dev = resolve_device(device)
    if quantize is not None:
        check_mode(quantize, dev)
    for mode in modes or ():
        if mode not in BENCH_MODES:
            raise ValueError(f"unknown bench mode {mode!r} (allowed: {', '.join(BENCH_MODES)})")
        if mode != "eager" and dev.type != "cuda":
            raise ValueError(f"mode {mode!r} captures CUDA graphs and needs a CUDA device (on {dev}: eager)")
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
        raise ValueError(f"prompt_length {prompt_length} + gen_length {gen_length} exceeds the model's "
                         f"max_sequence_length {model.config.max_sequence_length}")
    if quantize is not None and getattr(model, "quantization_config", None) is None:
        quantize_model(model, quantize)
    if expert_path is not None:
        if not hasattr(model, "set_expert_path"):
            raise ValueError(f"--expert-path {expert_path!r} applies to mixture-of-experts models; "
                             f"{type(model).__name__} has no experts")
        model.set_expert_path(expert_path)
    model.fuse_projections()
    rows, env = bench_model(model, batches, caches, prompt_length, gen_length, block_length, repeats, log, modes)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        records = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(r).items()}
                   for r in rows]
        (out / "bench.json").write_text(json.dumps({"env": env, "command": command, "rows": records}, indent=2))
        (out / "bench.md").write_text(markdown(rows, env, command))
    return rows
