"""The semi-autoregressive block loop shared by every policy (LLaDA ``generate.py`` / Fast-dLLM).

canvas = [prompt | MASK * gen_length], decoded block by block, left to right. Each step: one model
forward (with or without the block KV cache), optional classifier-free guidance and credit fusion,
a scorer gives (candidate, confidence) for the block, the policy says which masked positions to
commit. The loop owns the canvas, the cache and the stopping rule; it knows no policy by name.

The step is static (gpt-fast's recipe): a ``DecodeProgram`` allocates every buffer once per decode
shape (canvas, KV cache, rotary tables, credit, counters), and a step only reads and writes them in
place at index tensors, so its shapes are fixed per (cache mode, window) and the step can be captured
once in a CUDA graph and replayed for every block. The whole step runs on the device (forward, CFG,
credit, scorer, policy, commit, early-stop bookkeeping); the host reads back one flag per step only
where the loop may end early (dynamic policies, early stop), none for a fixed schedule, and one per
block for early stop.

With ``cache="none"``, temperature 0 and ``early_stop=False`` the tokens equal the reference code's
(LLaDA ``generate`` for ``topk``, Fast-dLLM ``generate`` for ``threshold``/``factor``). Early stop
never changes the text up to the first end-of-text: a row stops only once a stop token is committed
with every position before it decoded; its remaining positions are filled with end-of-text.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from unmask.decoding.credit import CreditConfig, CreditState
from unmask.decoding.policies import Policy, TopK
from unmask.decoding.scorers import Scorer
from unmask.models.cache import StaticKVCache, check_cache_mode
from unmask.models.llada import LLaDAModel

NOT_COMMITTED = -1
FILLED_BY_EARLY_STOP = -2
MAX_PREFIX_GRAPHS = 64  # prefix windows differ per block: above this many blocks, prefix steps run eagerly


@dataclass
class DecodeResult:
    """Output of ``decode``. Positions are over the generated part (``gen_length`` columns)."""

    sequences: torch.Tensor  # [B, P + G] the final canvas
    tokens: torch.Tensor  # [B, G]
    commit_step: torch.Tensor  # [B, G] the row's own step (0-based) that committed each token (-2: early-stop fill)
    commit_confidence: torch.Tensor  # [B, G] the confidence the policy saw when committing
    nfe: int  # model forwards for the batch (cache refreshes included)
    nfe_per_row: torch.Tensor  # [B] forwards in which the row had masked tokens in the current block
    lengths: torch.Tensor  # [B] generated tokens up to and including the first stop token
    elapsed_s: float
    step_times_s: list[float] = field(default_factory=list)
    graphs: bool = False  # whether the steps ran as CUDA graph replays


def check_lengths(gen_length: object, block_length: object) -> None:
    """``gen_length`` a positive multiple of ``block_length``, both integers; else a ``ValueError`` naming them."""
    for name, value in (("gen_length", gen_length), ("block_length", block_length)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if gen_length <= 0 or block_length <= 0 or gen_length % block_length:
        raise ValueError(f"gen_length={gen_length} must be a positive multiple of block_length={block_length}")


def first_stop_finished(gen: torch.Tensor, mask_id: int, stop_ids: torch.Tensor) -> torch.Tensor:
    """Rows where some stop token is committed and every position before it is decoded."""
    decoded_prefix = (gen != mask_id).long().cumprod(dim=-1).bool()
    return (torch.isin(gen, stop_ids) & decoded_prefix).any(dim=-1)


def stop_lengths(gen: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
    """Generated tokens up to and including the first stop token (all of them if none)."""
    is_stop = torch.isin(gen, stop_ids)
    return torch.where(is_stop.any(-1), is_stop.int().argmax(-1) + 1, gen.shape[-1])


@dataclass(frozen=True)
class DecodeOptions:
    """Everything that fixes a decode's step function besides the data (the key of a cached program)."""

    batch: int
    prompt_length: int
    gen_length: int
    block_length: int
    padded: bool
    mask_id: int
    cache: str
    cfg_scale: float
    logits_eos_inf: bool
    eos_id: int | None
    stop_ids: tuple[int, ...]
    early_stop: bool


class DecodeProgram:
    """Static buffers and step functions of one decode shape; on CUDA, optionally CUDA-graph captured.

    Step kinds: ``full`` (a forward over the whole canvas: every step without a cache, and the block
    refresh that rewrites the whole cache), ``block`` (the dual cache's window, one graph for every
    block) and ``prefix`` (the window from the block to the end, one graph per block).
    """

    def __init__(
        self, model: LLaDAModel, policy: Policy, scorer: Scorer, credit: CreditConfig | None, opts: DecodeOptions,
        graphs: bool = False,
    ) -> None:
        self.model, self.policy, self.scorer, self.opts = model, policy, scorer, opts
        device = model.device
        B, P, G, BL = opts.batch, opts.prompt_length, opts.gen_length, opts.block_length
        self.B, self.P, self.T = B, P, P + G
        self.num_blocks = G // BL
        self.Bm = 2 * B if opts.cfg_scale > 0 else B  # rows through the model (CFG adds the unconditional copy)
        T, mask_id = self.T, opts.mask_id
        longs = {"dtype": torch.long, "device": device}
        self.x = torch.full((B, T), mask_id, **longs)
        self.prompt_index = torch.zeros((B, T), dtype=torch.bool, device=device)
        if opts.padded:
            self.key_mask = torch.ones((self.Bm, 1, 1, T), dtype=torch.bool, device=device)
            self.cos, self.sin = model.rotary(torch.zeros((self.Bm, T), **longs))
        else:  # nothing padded: no key mask (SDPA's flash path), one table for every row
            self.key_mask = None
            self.cos, self.sin = model.rotary(torch.arange(T, **longs)[None])
        self.kv = None
        if opts.cache != "none":
            self.kv = StaticKVCache.for_model(model.config, self.Bm, T, model.dtype, device)
        self.block_table = P + torch.arange(self.num_blocks, **longs)[:, None] * BL + torch.arange(BL, **longs)
        self.block_columns = self.block_table[0].clone()
        self.block_rows = torch.arange(BL, **longs)  # the block's rows inside a cached window
        self.prefix_columns = [torch.arange(P + b * BL, T, **longs) for b in range(self.num_blocks)]
        self.step_index = torch.zeros((), **longs)
        self.block_masked = torch.ones((B, BL), dtype=torch.bool, device=device)
        self.active = torch.ones((), dtype=torch.bool, device=device)
        self.commit_step = torch.full((B, G), NOT_COMMITTED, **longs)
        self.commit_confidence = torch.zeros((B, G), dtype=torch.float32, device=device)
        self.finished = torch.zeros(B, dtype=torch.bool, device=device)
        self.nfe_per_row = torch.zeros(B, **longs)
        self.stop_tensor = torch.tensor(opts.stop_ids or (-1,), **longs)
        self.schedule = None
        if policy.steps_per_block is not None:
            self.schedule = torch.zeros((B, policy.steps_per_block), **longs)
        self.credit = None if credit is None else CreditState(credit, B, BL, device)
        self.noise = scorer.allocate_noise(B, BL, model.config.embedding_size, device)
        self.graphs: dict[object, torch.cuda.CUDAGraph] = {}
        self.graph_pool = None
        if graphs:
            self.capture()

    # ---- data in -----------------------------------------------------------------------------------
    def load(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Copy a batch of left-padded prompts into the static buffers and reset every counter."""
        P = self.P
        self.x[:, :P].copy_(input_ids)
        self.x[:, P:].fill_(self.opts.mask_id)
        self.prompt_index.copy_(self.x != self.opts.mask_id)
        if self.opts.padded:
            mask = torch.ones((self.B, self.T), dtype=torch.long, device=self.x.device)
            mask[:, :P] = attention_mask
            rows = 2 if self.Bm > self.B else 1
            self.key_mask.copy_(mask.bool().repeat(rows, 1)[:, None, None, :])
            cos, sin = self.model.rotary((mask.cumsum(-1) - 1).clamp(min=0).repeat(rows, 1))
            self.cos.copy_(cos)
            self.sin.copy_(sin)
        self.commit_step.fill_(NOT_COMMITTED)
        self.commit_confidence.zero_()
        self.finished.zero_()
        self.nfe_per_row.zero_()

    def begin_block(self, block: int) -> None:
        """Point the step at ``block`` and reset its per-block state (device work only, no sync)."""
        self.block_columns.copy_(self.block_table[block])
        self.step_index.zero_()
        self.block_masked.copy_(self.x.index_select(1, self.block_columns) == self.opts.mask_id)
        self.active.fill_(True)
        if self.schedule is not None:
            self.schedule.copy_(self.policy.start_block(self.block_masked))
        if self.credit is not None:
            self.credit.reset()

    # ---- the step ----------------------------------------------------------------------------------
    def _forward(self, kind: object) -> torch.Tensor:
        """Logits [B, BL, V] of the current block, from a forward over the window of ``kind``."""
        x = self.x
        if self.Bm > self.B:  # LLaDA's unsupervised CFG: the unconditional copy has the prompt masked
            x = torch.cat([x, x.masked_fill(self.prompt_index, self.opts.mask_id)], dim=0)
        if kind == "full":
            logits = self.model.forward_window(x, self.cos, self.sin, self.key_mask, self.kv, None,
                                               self.block_columns)
        else:
            columns = self.block_columns if kind == "block" else self.prefix_columns[kind[1]]
            cos, sin = self.cos.index_select(2, columns), self.sin.index_select(2, columns)
            logits = self.model.forward_window(x.index_select(1, columns), cos, sin, self.key_mask, self.kv,
                                               columns, self.block_rows)
        if self.Bm > self.B:
            cond, uncond = logits.chunk(2, dim=0)
            logits = uncond + (self.opts.cfg_scale + 1) * (cond - uncond)
        return logits

    def _step(self, kind: object) -> None:
        """One decoding step, entirely on the device: forward, scoring, commit, bookkeeping."""
        opts, masked, columns = self.opts, self.block_masked, self.block_columns
        logits = self._forward(kind)
        self.nfe_per_row.add_(masked.any(dim=-1).long())  # a row waiting on others costs it nothing
        if opts.logits_eos_inf:
            logits[..., opts.eos_id] = -torch.inf
        if self.credit is not None:
            logits = self.credit.update_and_fuse(logits, masked)
        candidates, confidence = self.scorer(logits, self.noise, fused=self.model.kernels.compiled)
        confidence = torch.where(masked, confidence, -torch.inf)
        commit = self.policy(confidence, masked, self.step_index, self.schedule)
        self.x.index_copy_(1, columns, torch.where(commit, candidates, self.x.index_select(1, columns)))
        gen_columns = columns - self.P
        step = (self.nfe_per_row - 1)[:, None]
        self.commit_step.index_copy_(1, gen_columns, torch.where(
            commit, step, self.commit_step.index_select(1, gen_columns)))
        self.commit_confidence.index_copy_(1, gen_columns, torch.where(
            commit, confidence.float(), self.commit_confidence.index_select(1, gen_columns)))
        if opts.early_stop:
            gen = self.x[:, self.P:]
            newly = first_stop_finished(gen, opts.mask_id, self.stop_tensor) & ~self.finished
            fill = newly[:, None] & (gen == opts.mask_id)
            gen.copy_(torch.where(fill, opts.stop_ids[0], gen))
            self.commit_step.copy_(torch.where(fill, FILLED_BY_EARLY_STOP, self.commit_step))
            self.finished.logical_or_(newly)
        masked.copy_(self.x.index_select(1, columns) == opts.mask_id)
        self.active.copy_(masked.any())
        self.step_index.add_(1)

    def step_kind(self, block: int, first: bool) -> object:
        if self.opts.cache == "none" or first:
            return "full"
        return "block" if self.opts.cache == "dual" else ("prefix", block)

    def run_step(self, kind: object) -> None:
        """Draw the step's noise, then replay the captured step (or run it eagerly)."""
        if self.scorer.random:
            self.scorer.draw(self.noise)
        graph = self.graphs.get(kind)
        if graph is not None:
            graph.replay()
        else:
            self._step(kind)

    # ---- CUDA graphs -------------------------------------------------------------------------------
    def capture(self) -> None:
        """Capture every step kind this decode shape uses (warm-up runs first; ``load`` resets the state)."""
        kinds: list[object] = ["full"]
        if self.opts.cache == "dual":
            kinds.append("block")
        elif self.opts.cache == "prefix" and self.num_blocks <= MAX_PREFIX_GRAPHS:
            kinds += [("prefix", b) for b in range(self.num_blocks)]
        side = torch.cuda.Stream(self.x.device)
        side.wait_stream(torch.cuda.current_stream(self.x.device))
        with torch.cuda.stream(side):  # warm-up: compiles kernels, picks cuBLAS/attention algorithms
            for kind in kinds:
                for _ in range(2):
                    self._step(kind)
        torch.cuda.current_stream(self.x.device).wait_stream(side)
        for kind in kinds:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.graph_pool):
                self._step(kind)
            self.graph_pool = graph.pool()
            self.graphs[kind] = graph


def run_program(
    program: DecodeProgram, early_stop: bool, time_steps: bool = False,
    on_block: Callable[[int, int], None] | None = None,
) -> tuple[int, list[float]]:
    """The host side of a decode: blocks in order, steps until the block is decoded; (NFE, step seconds).

    ``on_block(done, total)`` is called after each block (progress display; it costs no device sync).
    """
    device = program.x.device
    sync = device.type == "cuda"
    fixed_steps = program.policy.steps_per_block
    nfe, step_times = 0, []

    def step(kind: object) -> None:
        nonlocal nfe
        tic = time.perf_counter()
        program.run_step(kind)
        nfe += 1
        if time_steps:
            if sync:
                torch.cuda.synchronize(device)
            step_times.append(time.perf_counter() - tic)

    for block in range(program.num_blocks):
        if early_stop and block > 0 and bool(program.finished.all()):  # one read-back per block
            break
        program.begin_block(block)
        step(program.step_kind(block, first=True))
        kind = program.step_kind(block, first=False)
        if fixed_steps is not None and not early_stop:  # the schedule alone decides: no read-back
            for _ in range(fixed_steps - 1):
                step(kind)
        else:
            i = 1
            while (fixed_steps is None or i < fixed_steps) and bool(program.active):  # one read-back per step
                step(kind)
                i += 1
        if on_block is not None:
            on_block(block + 1, program.num_blocks)
    if sync:
        torch.cuda.synchronize(device)
    return nfe, step_times


def _program_key(policy: Policy, scorer: Scorer, credit: CreditConfig | None, opts: DecodeOptions) -> tuple:
    scorer_key = (scorer.kind, scorer.temperature, tuple(scorer.confidence_exclude))
    return (repr(policy), scorer_key, repr(credit), opts)


COMPILE_MODES: tuple[str, ...] = ("fused", "exact", "off")


def resolve_compile(compile: bool | str | None, device: torch.device) -> str:
    """The compile mode of a decode on ``device``:

    - ``fused`` (``True``; the default on CUDA): steps captured in CUDA graphs, the block's elementwise
      work fused by ``torch.compile``. Numerically equivalent, not bitwise: bf16 tokens can differ
      from the reference arithmetic where two candidates are within rounding of each other.
    - ``exact``: steps captured in CUDA graphs over the eager kernels: bitwise the eager decode.
    - ``off`` (``False``; the default on the CPU): eager steps launched from Python.

    Graphs need CUDA; on the CPU ``fused`` compiles the kernels and ``exact`` runs eagerly.
    """
    if compile is None:
        return "fused" if device.type == "cuda" else "off"
    if isinstance(compile, bool):
        return "fused" if compile else "off"
    if compile not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile!r} (allowed: True, False, None, {', '.join(COMPILE_MODES)})")
    return compile


def batch_bucket(batch: int) -> int:
    """Batch sizes share captured graphs by bucket: the next power of two up to 64, then multiples of 64."""
    return 1 << (batch - 1).bit_length() if batch <= 64 else -(-batch // 64) * 64


def cached_program(
    model: LLaDAModel, policy: Policy, scorer: Scorer, credit: CreditConfig | None, opts: DecodeOptions,
    graphs: bool, capacity: int = 2,
) -> DecodeProgram:
    """The program of this decode shape from the model's small LRU (built, and captured, on first use)."""
    programs: OrderedDict = model.__dict__.setdefault("_decode_programs", OrderedDict())
    key = (_program_key(policy, scorer, credit, opts), graphs, model.kernels.compiled)
    program = programs.get(key)
    if program is None:
        while len(programs) >= capacity:
            programs.popitem(last=False)
            if graphs:
                torch.cuda.empty_cache()
        program = DecodeProgram(model, policy, scorer, credit, opts, graphs=graphs)
        programs[key] = program
    programs.move_to_end(key)
    program.scorer = scorer  # the call's generator draws the noise
    return program


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_decode_args(
    model: LLaDAModel, input_ids: object, policy: object, *, attention_mask: object, gen_length: object,
    block_length: object, scorer: object, credit: object, cache: object, cfg_scale: object, mask_id: object,
    eos_id: object, stop_ids: object, flags: dict[str, object],
) -> None:
    """``decode``'s arguments, checked before anything is allocated: a ``ValueError`` names the bad value."""
    check_lengths(gen_length, block_length)
    check_cache_mode(cache)
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a policy object (make_policy(name, ...)), got {policy!r}")
    if isinstance(policy, TopK) and policy.steps_per_block > block_length:
        raise ValueError(f"steps per block ({policy.steps_per_block}) exceeds block_length={block_length}")
    if scorer is not None and not isinstance(scorer, Scorer):
        raise ValueError(f"scorer must be a Scorer or None, got {scorer!r}")
    if credit is not None and not isinstance(credit, CreditConfig):
        raise ValueError(f"credit must be a CreditConfig or None, got {credit!r}")
    try:
        finite = math.isfinite(cfg_scale) and not isinstance(cfg_scale, bool)
    except (TypeError, OverflowError):
        finite = False
    if not finite or cfg_scale < 0:
        raise ValueError(f"cfg_scale must be a finite number >= 0, got {cfg_scale!r}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    vocab = model.config.embedding_size
    for name, value in (("mask_id", mask_id), ("eos_id", eos_id)):
        if (value is not None or name == "mask_id") and not (_is_int(value) and 0 <= value < vocab):
            raise ValueError(f"{name} must be a token id in [0, {vocab}), got {value!r}")
    if not isinstance(stop_ids, (tuple, list)) or not all(_is_int(t) and 0 <= t < vocab for t in stop_ids):
        raise ValueError(f"stop_ids must be a tuple of token ids in [0, {vocab}), got {stop_ids!r}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.numel() == 0 \
            or input_ids.dtype not in (torch.long, torch.int32):
        shown = f"a {input_ids.dtype} tensor of shape {tuple(input_ids.shape)}" if isinstance(
            input_ids, torch.Tensor) else repr(input_ids)
        raise ValueError(f"input_ids must be a non-empty [batch, length] integer tensor, got {shown}")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"input_ids holds token id {low if low < 0 else high}, outside the vocabulary [0, {vocab})")
    if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor)
                                       or attention_mask.shape != input_ids.shape):
        shown = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else repr(attention_mask)
        raise ValueError(f"attention_mask must be a tensor of the prompts' shape {tuple(input_ids.shape)}, "
                         f"got {shown}")
    limit = model.config.max_sequence_length
    if input_ids.shape[1] + gen_length > limit:
        raise ValueError(f"prompt length {input_ids.shape[1]} + gen_length {gen_length} exceeds the model's "
                         f"max_sequence_length {limit}")


@torch.no_grad()
def decode(
    model: LLaDAModel,
    input_ids: torch.Tensor,
    policy: Policy,
    *,
    mask_id: int,
    attention_mask: torch.Tensor | None = None,
    gen_length: int = 128,
    block_length: int = 32,
    scorer: Scorer | None = None,
    credit: CreditConfig | None = None,
    cache: str = "none",
    cfg_scale: float = 0.0,
    logits_eos_inf: bool = False,
    eos_id: int | None = None,
    stop_ids: tuple[int, ...] = (),
    early_stop: bool = True,
    time_steps: bool = False,
    compile: bool | str | None = False,
    on_block: Callable[[int, int], None] | None = None,
) -> DecodeResult:
    """Decode ``gen_length`` tokens after left-padded prompts ``input_ids`` [B, P].

    ``model.forward_window`` computes logits; NFE counts forwards. ``compile`` (see ``resolve_compile``):
    ``True``/``"fused"`` captures the steps in CUDA graphs and fuses the block's elementwise work with
    ``torch.compile``; ``"exact"`` captures the eager kernels; ``None`` = fused on CUDA, eager on the
    CPU; ``False`` = eager. Buffers (and graphs) are kept per decode shape on the model and reused by
    later calls; in ``fused`` mode batch sizes share them by bucket (``batch_bucket``). ``time_steps``
    synchronises after each step to record its latency; ``on_block(done, total)`` reports progress.
    """
    check_decode_args(model, input_ids, policy, attention_mask=attention_mask, gen_length=gen_length,
                      block_length=block_length, scorer=scorer, credit=credit, cache=cache, cfg_scale=cfg_scale,
                      mask_id=mask_id, eos_id=eos_id, stop_ids=stop_ids,
                      flags={"logits_eos_inf": logits_eos_inf, "early_stop": early_stop, "time_steps": time_steps})
    if logits_eos_inf and eos_id is None:
        raise ValueError("logits_eos_inf needs eos_id")
    if early_stop and not stop_ids:
        raise ValueError("early_stop needs stop_ids (end-of-text / end-of-turn token ids)")
    scorer = scorer or Scorer()
    device = input_ids.device
    start_time = time.perf_counter()
    mode = resolve_compile(compile, device)
    B, P = input_ids.shape
    if mode == "fused" and batch_bucket(B) > B:
        # share graphs across batch sizes: fill the bucket with copies of the first row, which decode
        # exactly as it does (never adding a step) and are dropped below
        extra = batch_bucket(B) - B
        input_ids = torch.cat([input_ids, input_ids[:1].expand(extra, P)])
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask[:1].expand(extra, P)])
    padded = attention_mask is not None and not bool(attention_mask.all())
    opts = DecodeOptions(input_ids.shape[0], P, gen_length, block_length, padded, mask_id, cache, float(cfg_scale),
                         logits_eos_inf, eos_id, tuple(stop_ids), early_stop)
    model.compile_kernels(mode == "fused")
    graphs = mode != "off" and device.type == "cuda"
    try:
        program = cached_program(model, policy, scorer, credit, opts, graphs)
    except Exception as err:  # capture is an optimisation: fall back to eager steps, never to wrong tokens
        if not graphs:
            raise
        warnings.warn(f"CUDA graph capture failed, decoding eagerly ({type(err).__name__}: {err})", stacklevel=2)
        model.compile_kernels(False)
        program = cached_program(model, policy, scorer, credit, opts, graphs=False)
    program.load(input_ids, attention_mask)
    nfe, step_times = run_program(program, early_stop, time_steps, on_block)
    x = program.x[:B].clone()
    gen = x[:, P:]
    return DecodeResult(
        sequences=x, tokens=gen, commit_step=program.commit_step[:B].clone(),
        commit_confidence=program.commit_confidence[:B].clone(), nfe=nfe, nfe_per_row=program.nfe_per_row[:B].clone(),
        lengths=stop_lengths(gen, program.stop_tensor), elapsed_s=time.perf_counter() - start_time,
        step_times_s=step_times, graphs=bool(program.graphs),
    )
