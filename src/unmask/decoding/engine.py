"""The decode engine: continuous batching over a fixed number of slots, every step kind graph-capturable.

One engine decodes every batch of unmask (``decode``/``generate``, the eval runner and so sweep,
compare and tune, and ``unmask serve``), as vLLM's one engine sits under its offline and server front
ends. It holds ``slots`` rows in static buffers; every row is at its own block, step, cache columns
and credit, a finished row leaves at once and a waiting row takes its slot before the next step
(continuous batching), so no row waits for the slowest row of its batch.

Canvas layout: row ``s`` holds ``[prompt (P_s) | answer (G_s) | unused]`` in ``x[s]`` (right-padded);
rotary positions are the column index and, where some row is shorter than the capacity, keys past a
row's canvas are masked out, so a row decodes exactly as it does alone. One engine step:

1. the forward(s): without a cache, one full forward over the slots ``[0, hi)``; with a cache, a
   window forward (dual: the block; prefix: from the block to the end) over the slots ``[0, hi)``
   whose rows are inside a block, then one full forward (the *refresh*, which rewrites the whole KV
   cache of its rows) over the rows at a block start, gathered into a bucket of row counts;
2. the commit: CFG, credit, scorer, policy and commit for every slot at its own step index, then each
   row's bookkeeping on the device (early stop, next block, credit reset, the schedule of the next
   block) and a one-byte status per slot, the only read-back of a step.

Every step kind is a function of static buffers only, so on CUDA each is captured once per bucket as
a CUDA graph and replayed (window per slot bucket ``hi`` (and prefix width), refresh per row-count
bucket, commit per slot bucket). Slots are kept compact (active rows in ``[0, count)``; a row moves
down when the count drops), so the window and commit run over ``bucket(count)`` slots, not all.

Exactness: at temperature 0 every row's tokens, commit steps and forwards equal the same prompt
decoded alone (tests/decoding/test_engine.py), whatever the rows beside it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from unmask.decoding.credit import CreditConfig, CreditState
from unmask.decoding.policies import Policy
from unmask.decoding.policies.base import StepContext
from unmask.decoding.scorers import Scorer, candidate_probability
from unmask.models.cache import StaticKVCache, parse_cache_mode

NOT_COMMITTED = -1
FILLED_BY_EARLY_STOP = -2
ACTIVE, ADVANCED, DONE = 1, 2, 4  # status bits of a slot after a step


def slot_bucket(n: int, slots: int) -> int:
    """Slot counts share captured graphs by bucket: powers of two up to 8, multiples of 8 up to 64, then
    multiples of 32; never above ``slots``."""
    if n <= 8:
        b = 1 << max(n - 1, 0).bit_length()
    elif n <= 64:
        b = -(-n // 8) * 8
    else:
        b = -(-n // 32) * 32
    return min(b, slots)


def interval_block(block: int, every: float) -> bool:
    """Whether ``block`` is one of 0, N, 2N, ... for ``every`` = N (an integer, or inf: block 0 only)."""
    return block == 0 or (every != float("inf") and block % int(every) == 0)


@dataclass(frozen=True)
class EngineOptions:
    """Everything that fixes the engine's step functions besides the data (the key of a cached engine)."""

    slots: int
    capacity: int  # canvas columns T of every slot
    max_gen: int  # the longest answer a row may have (a multiple of block_length)
    block_length: int
    padded: bool  # some row is shorter than the capacity: keys past a row's canvas are masked
    mask_id: int
    cache: str
    cfg_scale: float
    logits_eos_inf: bool
    eos_id: int | None
    stop_ids: tuple[int, ...]
    early_stop: bool


@dataclass
class RowRequest:
    """A row waiting for a slot: its prompt token ids (no padding) and answer length."""

    prompt: torch.Tensor  # [P] long
    gen_length: int
    key: object = None  # the caller's handle (a row index, a server ticket)
    generator: torch.Generator | None = None  # the row's own noise (sampling); None: the engine's scorer's


@dataclass
class RowResult:
    """A finished row: its answer and bookkeeping (positions over its ``gen_length`` answer columns)."""

    key: object
    tokens: torch.Tensor  # [G]
    commit_step: torch.Tensor  # [G] the row's own step that committed each token (-2: early-stop fill)
    commit_confidence: torch.Tensor  # [G]
    nfe: int  # forwards the row took part in
    finished_early: bool  # stopped at a stop token (early stop)
    admitted_s: float = 0.0  # time.perf_counter() at admission / retirement
    retired_s: float = 0.0
    seconds: float = 0.0  # the row's share of the engine's wall time: each step's time split over its rows


@dataclass
class _Slot:
    """Host-side view of an occupied slot."""

    request: RowRequest
    prompt_length: int
    gen_length: int
    skip: int = 0  # block-diffusion rows: the prompt's tail inside the first block (answer columns [skip, ...))
    block: int = 0
    refresh: bool = True  # at a block start: the next step refreshes its cache
    step: int = 0  # steps taken in the current block (tracked on the host for a predictable schedule)
    admitted_s: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0  # share of the steps' wall time (see ``RowResult.seconds``)


@dataclass
class StepCommits:
    """What one engine step committed in one row: positions over the row's answer, their tokens and
    confidences (a live view of the canvas filling in, e.g. the playground's)."""

    key: object  # the row's request key (``decode``: its index in the batch)
    forward: int  # the row's forwards so far, this step's included
    block: int  # the block the row decodes next (after this step)
    positions: list[int]
    tokens: list[int]
    confidences: list[float]
    remasked: list[int] = field(default_factory=list)  # positions sent back to mask (revocable policies)


@dataclass
class EngineStats:
    """Work counters: row-steps computed (slots through a forward) against row-steps needed."""

    steps: int = 0
    forwards: int = 0  # model forwards launched (window, refresh, full)
    useful_row_steps: int = 0  # active rows stepped, summed over steps
    computed_row_steps: int = 0  # rows through the step's forwards (buckets included), summed over steps

    @property
    def slot_efficiency(self) -> float:
        return self.useful_row_steps / self.computed_row_steps if self.computed_row_steps else 1.0


class DecodeEngine:
    """Static buffers and step functions of one decode signature (see the module docstring)."""

    def __init__(
        self, model, policy: Policy, scorer: Scorer, credit: CreditConfig | None, opts: EngineOptions,
        graphs: bool = False,
    ) -> None:
        self.model, self.policy, self.scorer, self.opts = model, policy, scorer, opts
        device = self.device = model.device
        S, T, G, BL = opts.slots, opts.capacity, opts.max_gen, opts.block_length
        # a block-diffusion model (LLaDA2): blocks at multiples of BL over absolute positions, block-causal
        # attention; a row's first block holds its prompt's tail, so a row may need BL more columns
        self.block_causal = getattr(model, "block_diffusion", False)
        mode = parse_cache_mode(opts.cache)
        if self.block_causal:
            T, G = T + BL, G + BL
            if mode.window not in ("none", "dual") or mode.kind.refresh != "full" or opts.cfg_scale > 0:
                raise ValueError(f"{type(model).__name__} attends block-causally: cache 'none' or 'dual' (with it, the "
                                 f"exact cache of finished blocks), no cfg_scale; got cache {opts.cache!r}")
        self.S, self.T, self.G, self.BL = S, T, G, BL
        self.cfg = opts.cfg_scale > 0
        self.mode = mode
        self.window = self.mode.window  # none | prefix | dual: what a step inside a block recomputes
        # blocks between full refreshes (the others start with an answer-only refresh): 1 = every block
        self.every = self.mode.knob("every") if self.mode.kind.refresh == "answer" else 1
        # partial(budget=K): block 0 refreshed, then every step recomputes the block plus K changed/stalest columns
        self.partial = self.mode.kind.refresh == "partial"
        self.budget = min(int(self.mode.knob("budget")), T - BL) if self.partial else 0
        self.partial_every = self.mode.knob("every") if self.partial else 1  # blocks between full refreshes
        # partial(reuse=1): the block's decoded columns keep their keys/values, their slots recompute other columns
        self.reuse = self.partial and self.mode.knob("reuse") == 1
        if self.reuse and (policy.edits or policy.revocable):
            raise ValueError(f"cache mode {opts.cache!r}: reuse=1 computes no logits at the block's decoded columns, "
                             f"which policy {policy.name!r} scores (it may edit or re-mask them); use reuse=0")
        if self.cfg and (self.every != 1 or self.partial):
            raise ValueError(f"cfg_scale > 0 is not supported with cache mode {opts.cache!r} (use dual or prefix)")
        self.Bm = 2 * S if self.cfg else S  # rows through the model (CFG adds the unconditional copy)
        longs = {"dtype": torch.long, "device": device}
        self.x = torch.full((S, T), opts.mask_id, **longs)
        self.prompt_length = torch.zeros(S, **longs)
        self.skip = torch.zeros(S, **longs)  # see _Slot.skip
        self.gen_length = torch.full((S,), BL, **longs)
        self.canvas_length = torch.full((S,), T, **longs)  # keys visible to a row (a free slot sees all)
        self.block = torch.zeros(S, **longs)
        self.step_index = torch.zeros(S, **longs)
        self.nfe = torch.zeros(S, **longs)
        self.active = torch.zeros(S, dtype=torch.bool, device=device)
        self.finished = torch.zeros(S, dtype=torch.bool, device=device)
        self.block_masked = torch.zeros((S, BL), dtype=torch.bool, device=device)
        self.commit_step = torch.full((S, G), NOT_COMMITTED, **longs)
        self.commit_confidence = torch.zeros((S, G), dtype=torch.float32, device=device)
        self.status = torch.zeros(S, dtype=torch.uint8, device=device)
        self.status_host = torch.zeros(S, dtype=torch.uint8, pin_memory=device.type == "cuda")
        self.refresh_slots = torch.zeros(S, **longs)
        self.refresh_slots_host: list[int] = [0] * S  # what refresh_slots holds (copied only when it changes)
        self.answer_slots = torch.zeros(S, **longs)  # rows whose block starts with an answer-only refresh
        self.answer_slots_host: list[int] = [0] * S
        # a fixed schedule without early stop: every row advances every ``steps_per_block`` steps, so the host
        # knows each row's state without reading it back (steps are queued without a sync)
        self.predictable = policy.steps_per_block is not None and not opts.early_stop
        self.stop_tensor = torch.tensor(opts.stop_ids or (-1,), **longs)
        self.offsets = torch.arange(BL, **longs)
        self.gen_offsets = torch.arange(G, **longs)
        self.columns_T = torch.arange(T, **longs)
        self.kv_token = self.kv_age = None
        if self.partial:  # per column: the token its cached keys/values were computed from (-1: never), steps since
            self.kv_token = torch.full((S, T), -1, **longs)
            self.kv_age = torch.zeros((S, T), **longs)
            self.budget_offsets = torch.arange(self.budget, **longs) if self.reuse else None  # reuse: the K more slots
        self.cos, self.sin = model.rotary(torch.arange(T, **longs)[None])  # [1, 1, T, hd]: position = column
        self.schedule = None
        if policy.schedule_length is not None:
            self.schedule = torch.zeros((S, policy.schedule_length), **longs)
        self.credit = None if credit is None else CreditState(credit, S, BL, device)
        vocab = model.config.embedding_size
        self.noise = scorer.allocate_noise(S, BL, vocab, device)
        # a policy that looks at the next block (KLASS's history across a block boundary) gets its logits where the
        # step computes them anyway: without a cache every column goes through the model
        self.lookahead = policy.wants_next_block and self.window == "none"
        self.shadow = policy.shadow_block  # WINO: a leave-one-out shadow block after the canvas
        if self.shadow and (self.window != "none" or self.cfg):
            raise ValueError(f"policy {policy.name!r} verifies with a shadow block in a forward over the whole canvas: "
                             f"cache 'none' only (got {opts.cache!r}{', and cfg_scale > 0' if self.cfg else ''})")
        if self.shadow and model.shifted_prediction:
            raise ValueError(f"policy {policy.name!r} needs a model whose output at a column predicts that column "
                             "(LLaDA, LLaDA-MoE); Dream predicts the next one")
        self.wide = self.lookahead or self.shadow  # the logits hold a second block: the next one or the shadow
        self.logits = torch.zeros((S, 2 * BL if self.wide else BL, vocab), dtype=model.dtype, device=device)
        self.remasked = torch.zeros((S, G), dtype=torch.bool, device=device) if policy.revocable else None
        # a policy that draws (Dream's origin and alg_temp): one uniform per block position and step
        self.policy_uniform = torch.zeros((S, BL), dtype=torch.float64, device=device) \
            if policy.needs_uniform else None
        self.policy_state = policy.allocate_state(S, BL, vocab, device, model.dtype)
        self.kv = self.refresh_store = None
        if self.window != "none":
            self.kv = StaticKVCache.for_model(model.config, self.Bm, T, model.dtype, device)
            # the refresh of R rows writes a cache of R rows into this store, then into their slots; grown to the
            # largest bucket used (rows at a block start are a few of the slots: no second full-size cache)
            self.refresh_store = torch.empty(0, dtype=model.dtype, device=device)
        self.refresh_caches: dict[int, StaticKVCache] = {}
        self.slots: list[_Slot | None] = [None] * S
        self.last_step_end: float | None = None  # wall time is shared out from here to the next step's end
        self.hi = 1  # the slot bucket the step runs over
        self.stats = EngineStats()
        self.use_graphs = graphs
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.graph_pool = None
        if graphs:  # the commit is not idempotent: capture it for every bucket now, while no slot is active
            for hi in sorted({slot_bucket(n, S) for n in range(1, S + 1)}):
                self._run(("commit", hi))

    def step_kinds(self) -> list[tuple]:
        """Every forward kind a step may run, for every bucket: the inside step (window per slot bucket and, with
        the prefix cache, per width; partial; or the full forward), then the refreshes per row-count bucket,
        largest first (the refresh store is then allocated once, at its full size)."""
        S, BL = self.S, self.BL
        buckets = sorted({slot_bucket(n, S) for n in range(1, S + 1)})
        kinds: list[tuple] = []
        for hi in buckets:
            if self.window == "none":
                kinds.append(("full", hi))
            elif self.partial:
                kinds.append(("partial", hi))
            elif self.window == "prefix":
                kinds += [("window", hi, width) for width in range(BL, self.G + 1, BL)]
            else:
                kinds.append(("window", hi, BL))
        if self.window != "none":
            answer = self.every != 1 or self.block_causal
            for rows in sorted(buckets, reverse=True):
                kinds += [("refresh", rows)] + [("answer", rows)] * answer
        return kinds

    def warm(self) -> int:
        """Run (on CUDA: capture) every step kind of every bucket now, while no slot is occupied, so that no
        request later waits for a first-use capture or compilation (a server's first burst waited 3-4 s per new
        bucket at the 8B shape). Forwards only write the buffers of free slots, which admission and a row's
        first refresh rewrite: the decode is unchanged. Returns the number of kinds run."""
        if self.count:
            raise RuntimeError(f"warm() needs an idle engine ({self.count} slots are occupied)")
        kinds = self.step_kinds()
        for kind in kinds:
            self._run(kind)
        return len(kinds)

    # ---- slots ---------------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return sum(s is not None for s in self.slots)

    def free_slots(self) -> int:
        return self.S - self.count

    def fits(self, request: RowRequest) -> bool:
        P, G = self._layout(request)[:2]
        return P + G <= self.T and G <= self.G

    def _layout(self, request: RowRequest) -> tuple[int, int, int]:
        """(prompt columns, answer columns, skip) of a row: its own, or for a block-diffusion model the prompt cut
        at its last whole block, the answer from there rounded up to whole blocks, and the tail it skips."""
        P, G = len(request.prompt), request.gen_length
        if not self.block_causal:
            return P, G, 0
        start = P // self.BL * self.BL
        return start, -(-(P - start + G) // self.BL) * self.BL, P - start

    def admit(self, request: RowRequest) -> int:
        """Load ``request`` into the lowest free slot (device work only) and return the slot."""
        return self.admit_many([request])[0]

    def admit_many(self, requests: list[RowRequest]) -> list[int]:
        """Load ``requests`` into the lowest free slots at once (a few batched device writes, no sync)."""
        free = [i for i, s in enumerate(self.slots) if s is None]
        if len(requests) > len(free):
            raise ValueError(f"{len(requests)} rows for {len(free)} free slots")
        for request in requests:
            if not self.fits(request):
                raise ValueError(f"prompt length {len(request.prompt)} + gen_length {request.gen_length} exceeds "
                                 f"the engine's capacity {self.T} (answers up to {self.G})")
        slots, n, device = free[:len(requests)], len(requests), self.device
        index = torch.tensor(slots, device=device)
        rows = torch.full((n, self.T), self.opts.mask_id, dtype=torch.long, device=device)
        for j, request in enumerate(requests):
            rows[j, :len(request.prompt)].copy_(request.prompt, non_blocking=True)
        self.x.index_copy_(0, index, rows)
        layouts = [self._layout(r) for r in requests]
        lengths = [(P, G, P + G if self.opts.padded or self.block_causal else self.T, skip) for P, G, skip in layouts]
        table = torch.tensor(lengths, dtype=torch.long).to(device, non_blocking=True)
        for column, buffer in enumerate((self.prompt_length, self.gen_length, self.canvas_length, self.skip)):
            buffer.index_copy_(0, index, table[:, column])
        for buffer, value in ((self.block, 0), (self.step_index, 0), (self.nfe, 0), (self.finished, False),
                              (self.active, True), (self.commit_step, NOT_COMMITTED), (self.commit_confidence, 0.0),
                              (self.block_masked, True)):
            buffer.index_fill_(0, index, value)
        first = torch.ones((n, self.BL), dtype=torch.bool, device=device)  # the first block's masked columns
        if self.block_causal:  # past the prompt's tail
            first = self.offsets[None, :] >= table[:, 3:4]
            self.block_masked.index_copy_(0, index, first)
        if self.schedule is not None:
            self.schedule.index_copy_(0, index, self.policy.start_block(first))
        if self.credit is not None:
            self.credit.tokens.index_fill_(0, index, -1)
            self.credit.credit.index_fill_(0, index, 0.0)
        if self.policy_state is not None:
            self.policy_state.reset_rows(index)
        for slot, request, (P, G, _, skip) in zip(slots, requests, lengths, strict=True):
            self.slots[slot] = _Slot(request, P, G, skip)
        self.hi = max(self.hi, slot_bucket(slots[-1] + 1, self.S))
        return slots

    def retire(self, slots: list[int]) -> list[RowResult]:
        """Take the rows of ``slots`` out (finished, or dropped by the caller) with their answers so far."""
        if not slots:
            return []
        index = torch.tensor(slots, device=self.device)
        T, G = self.T, self.G
        finished = self.finished.index_select(0, index)[:, None].long()
        longs = torch.cat([self.x.index_select(0, index), self.commit_step.index_select(0, index),
                           self.nfe.index_select(0, index)[:, None], finished], dim=1).cpu()  # one copy
        confidence = self.commit_confidence.index_select(0, index).cpu()
        x, steps = longs[:, :T], longs[:, T:T + G]
        nfe, finished = longs[:, T + G].tolist(), longs[:, T + G + 1].bool().tolist()
        self.active.index_fill_(0, index, False)
        now = time.perf_counter()
        out = []
        for j, slot in enumerate(slots):
            row = self.slots[slot]
            a, b = row.skip, row.skip + row.request.gen_length  # the requested answer (a block row's: inside)
            P = row.prompt_length
            out.append(RowResult(row.request.key, x[j, P + a:P + b], steps[j, a:b], confidence[j, a:b], nfe[j],
                                 finished[j], row.admitted_s, now, row.seconds))
            self.slots[slot] = None
        if not self.count:  # idle from here: the next admission starts a new share of wall time
            self.last_step_end = None
        return out

    def canvases(self, slots: list[int]) -> list[list[int]]:
        """The answer columns of ``slots`` as they stand (one copy to the host)."""
        index = torch.tensor(slots, device=self.device)
        rows = self.x.index_select(0, index).tolist()
        out = []
        for s, r in zip(slots, rows, strict=True):
            row = self.slots[s]
            start = row.prompt_length + row.skip
            out.append(r[start:start + row.request.gen_length])
        return out

    def final_length(self, slot: int) -> int | None:
        """How many of a row's answer tokens no later step can change, for a policy that revises tokens
        (re-masks or edits, only inside the row's current block): those before that block; None: any committed
        token is final."""
        if not (self.policy.revocable or self.policy.edits):
            return None
        row = self.slots[slot]
        return max(0, row.block * self.BL - row.skip)

    def step_commits(self, slots: list[int]) -> list[StepCommits]:
        """What the last step committed in each of ``slots`` (one copy to the host; call before ``retire``)."""
        if not slots:
            return []
        index = torch.tensor(slots, device=self.device)
        G = self.G
        steps = self.commit_step.index_select(0, index)
        nfe = self.nfe.index_select(0, index)
        now = steps == (nfe - 1)[:, None]
        parts = [now.long(), steps, self.x.index_select(0, index), nfe[:, None],
                 self.block.index_select(0, index)[:, None]]
        if self.remasked is not None:
            parts.append(self.remasked.index_select(0, index).long())
        rows = torch.cat(parts, dim=1).cpu()
        confidence = self.commit_confidence.index_select(0, index).cpu()
        out = []
        for j, slot in enumerate(slots):
            row = self.slots[slot]
            P = row.prompt_length
            x = rows[j, 2 * G:2 * G + self.T]
            a, b = row.skip, row.skip + row.request.gen_length  # the requested answer's columns
            positions = [g for g in range(a, b) if rows[j, g]]
            tail = 2 * G + self.T  # after now, steps, x: nfe, block (, remasked)
            remasked = [] if self.remasked is None else [g - a for g in range(a, b) if rows[j, tail + 2 + g]]
            out.append(StepCommits(row.request.key, int(rows[j, tail]), int(rows[j, tail + 1]),
                                   [g - a for g in positions], [int(x[P + g]) for g in positions],
                                   [float(confidence[j, g]) for g in positions], remasked))
        return out

    def compact(self) -> dict[int, int]:
        """Move rows down into free slots so that the active rows fill ``[0, count)`` and the step runs over
        the smallest bucket (a row's buffers, cache columns and credit move with it); returns the moves
        ``{old slot: new slot}``."""
        count = self.count
        target = slot_bucket(max(count, 1), self.S)
        if self.cfg or target >= self.hi:  # CFG's cache pairs rows s and S + s: kept in place
            return {}
        free = [i for i in range(count) if self.slots[i] is None]
        movers = [i for i in range(count, self.S) if self.slots[i] is not None]
        if movers:
            src = torch.tensor(movers, device=self.device)
            dst = torch.tensor(free[:len(movers)], device=self.device)
            for buffer in self._row_buffers():
                buffer.index_copy_(0, dst, buffer.index_select(0, src))
            if self.kv is not None:
                self.kv.kv.index_copy_(2, dst, self.kv.kv.index_select(2, src))
                if self.kv.outputs is not None:
                    self.kv.outputs.index_copy_(0, dst, self.kv.outputs.index_select(0, src))
            for a, b in zip(movers, free, strict=False):
                self.slots[b], self.slots[a] = self.slots[a], None
            self.active.index_fill_(0, src, False)
        self.hi = target
        return dict(zip(movers, free, strict=False))

    def take_rows_from(self, other: DecodeEngine) -> None:
        """Continue the rows of ``other`` (same signature and slots, no larger capacity) here: canvases, state,
        caches and credit copied into the same slots."""
        if other.S != self.S or other.T > self.T or other.G > self.G:
            raise ValueError("take_rows_from needs the same slots and no larger canvases")
        T = other.T
        for mine, theirs in zip(self._row_buffers(), other._row_buffers(), strict=True):
            if mine.dim() >= 2 and mine.shape[1] != theirs.shape[1]:  # [S, T] or [S, G]
                mine[:, :theirs.shape[1]].copy_(theirs)
            else:
                mine.copy_(theirs)
        if not self.opts.padded:
            self.canvas_length.fill_(self.T)
        else:  # a free slot sees every column (an all-masked row attending to nothing would write NaN)
            self.canvas_length.copy_(torch.where(other.active, other.canvas_length, self.T))
        if self.kv is not None:
            self.kv.kv[..., :T, :].copy_(other.kv.kv)
            if other.kv.outputs is not None:
                self.kv.outputs = other.kv.outputs.new_zeros((self.Bm, self.T, other.kv.outputs.shape[-1]))
                self.kv.outputs[:, :T].copy_(other.kv.outputs)
        self.slots = list(other.slots)
        self.hi = other.hi

    def _row_buffers(self) -> list[torch.Tensor]:
        buffers = [self.x, self.prompt_length, self.skip, self.gen_length, self.canvas_length, self.block,
                   self.step_index, self.nfe, self.active, self.finished, self.block_masked, self.commit_step,
                   self.commit_confidence]
        if self.schedule is not None:
            buffers.append(self.schedule)
        if self.credit is not None:
            buffers += [self.credit.tokens, self.credit.credit]
        if self.partial:
            buffers += [self.kv_token, self.kv_age]
        if self.policy_state is not None:
            buffers += list(self.policy_state.buffers.values())
        return buffers

    # ---- the step functions (static buffers in, static buffers out) ---------------------------------------
    def _block_columns(self, rows: int) -> torch.Tensor:
        start = self.prompt_length[:rows] + self.block[:rows] * self.BL
        return (start[:, None] + self.offsets).clamp(max=self.T - 1)

    def _canvas_mask(self, index: torch.Tensor | int) -> torch.Tensor | None:
        """The mask of a forward over whole canvases (the no-cache step, a refresh): padding keys out; for a
        block-diffusion model also block-causal, query q seeing key k iff q // BL >= k // BL, [R, 1, T, T]."""
        if not self.block_causal:
            return self._key_mask(index)
        lengths = self.canvas_length[:index] if isinstance(index, int) else self.canvas_length.index_select(0, index)
        block = self.columns_T // self.BL
        causal = block[:, None] >= block[None, :]  # [T, T]
        return causal[None, None] & (self.columns_T < lengths[:, None])[:, None, None, :]

    def _window_mask(self, hi: int) -> torch.Tensor | None:
        """The mask of a cached window over the block of slots ``[0, hi)``: padding keys out; for a block-diffusion
        model also every key past the block (the cache of the blocks before it is exact), [hi, 1, 1, T]."""
        if not self.block_causal:
            return self._key_mask(hi if not self.cfg else self.S)
        end = torch.minimum(self.prompt_length[:hi] + (self.block[:hi] + 1) * self.BL, self.canvas_length[:hi])
        return (self.columns_T < end[:, None])[:, None, None, :]

    def _key_mask(self, index: torch.Tensor | int) -> torch.Tensor | None:
        if not self.opts.padded:
            return None
        lengths = self.canvas_length[:index] if isinstance(index, int) else self.canvas_length.index_select(0, index)
        if self.cfg:
            lengths = torch.cat([lengths, lengths])
        return (self.columns_T < lengths[:, None])[:, None, None, :]

    def _model_rows(self, x: torch.Tensor, prompt_length: torch.Tensor) -> torch.Tensor:
        """The rows through the model: with CFG also the unconditional copy (prompt columns masked)."""
        if not self.cfg:
            return x
        prompt = self.columns_T[:x.shape[1]] < prompt_length[:, None]
        return torch.cat([x, x.masked_fill(prompt, self.opts.mask_id)])

    def _guided(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.cfg:
            return logits
        cond, uncond = logits.chunk(2, dim=0)
        return uncond + (self.opts.cfg_scale + 1) * (cond - uncond)

    def _full_step(self, hi: int) -> None:
        """No cache: every slot of ``[0, hi)`` through a forward over its whole canvas."""
        if self.shadow:
            self._shadow_forward(hi)
            return
        rows = self._block_columns(hi)
        if self.lookahead:  # and the next block's columns (past the canvas: clamped, never read)
            rows = torch.cat([rows, (rows + self.BL).clamp(max=self.T - 1)], dim=1)
        x = self._model_rows(self.x[:hi], self.prompt_length[:hi])
        logits = self.model.forward_window(x, self.cos, self.sin, self._canvas_mask(hi), None, None,
                                           torch.cat([rows, rows]) if self.cfg else rows)
        self.logits[:hi].copy_(self._guided(logits))

    def _shadow_forward(self, hi: int) -> None:
        """WINO's forward: the canvas, then a shadow block of masks at the current block's positions. Canvas
        queries see the canvas only; shadow query i sees the canvas except the block's column i, and the shadow
        block. Logits: the block's columns, then the shadow's."""
        T, BL = self.T, self.BL
        block = self._block_columns(hi)  # [hi, BL]
        x = torch.cat([self.x[:hi], torch.full((hi, BL), self.opts.mask_id, dtype=torch.long, device=self.device)], 1)
        positions = torch.cat([self.columns_T.expand(hi, T), block], dim=1)  # [hi, T + BL]
        cos, sin = self.cos[0, 0][positions][:, None], self.sin[0, 0][positions][:, None]
        keys = torch.cat([self.columns_T, torch.full((BL,), -1, dtype=torch.long, device=self.device)])  # [T + BL]
        canvas_key = keys >= 0
        if self.opts.padded:
            canvas_key = canvas_key & (keys < self.canvas_length[:hi, None])  # [hi, T + BL]
        canvas_key = canvas_key.expand(hi, T + BL)
        # [hi, BL, T + BL]: every key but the block's own column (and the padding), and the shadow block
        shadow_rows = (keys[None, None, :] != block[:, :, None]) & (canvas_key[:, None, :] | (keys < 0))
        mask = torch.cat([canvas_key[:, None, :].expand(hi, T, T + BL), shadow_rows], dim=1)[:, None]
        rows = torch.cat([block, T + self.offsets.expand(hi, BL)], dim=1)
        self.logits[:hi].copy_(self.model.forward_window(x, cos, sin, mask, None, None, rows))

    def _window_step(self, hi: int, width: int) -> None:
        """Cached modes: the window of every slot of ``[0, hi)`` (``width`` columns from its block start)
        against its cached columns; writes the window's keys/values."""
        start = self.prompt_length[:hi] + self.block[:hi] * self.BL
        offsets = self.offsets if width == self.BL else torch.arange(width, device=self.device)
        columns = (start[:, None] + offsets).clamp(max=self.T - 1)  # [hi, W]
        x = self._model_rows(self.x[:hi].gather(1, columns), self.prompt_length[:hi] - start)
        if self.cfg:
            columns = torch.cat([columns, columns])
        cache = self.kv if self.Bm == hi or self.cfg else self.kv.head(hi)
        if hi == 1:  # one row: shared columns [W] (the kernels of a batch-1 decode: RoPE + cache write fused)
            columns = columns[0]
            cos, sin = self.cos.index_select(2, columns), self.sin.index_select(2, columns)
        else:
            cos, sin = self.cos[0, 0][columns][:, None], self.sin[0, 0][columns][:, None]
        logits = self.model.forward_window(x, cos, sin, self._window_mask(hi), cache,
                                           columns, self.offsets)
        self.logits[:hi].copy_(self._guided(logits))

    def _refresh_cache(self, rows: int) -> StaticKVCache:
        """A cache of ``rows`` rows over the refresh store (one store for every bucket: they run in turn)."""
        cache = self.refresh_caches.get(rows)
        if cache is None:
            kv = self.kv.kv
            shape = (kv.shape[0], kv.shape[1], rows, *kv.shape[3:])
            n = shape[0] * shape[1] * rows * shape[3] * shape[4] * shape[5]
            if n > self.refresh_store.numel():  # grow: the views and graphs over the old store go
                self.refresh_store = torch.empty(n, dtype=kv.dtype, device=kv.device)
                self.refresh_caches.clear()
                self.graphs = {k: g for k, g in self.graphs.items() if k[0] not in ("refresh", "answer")}
            cache = object.__new__(StaticKVCache)
            cache.kv, cache.outputs = self.refresh_store[:n].view(shape), None
            self.refresh_caches[rows] = cache
        return cache

    def _refresh_step(self, rows: int) -> None:
        """The refresh of the slots ``refresh_slots[:rows]``: a full forward over their canvases that rewrites
        their whole cache, and their block's logits."""
        index = self.refresh_slots[:rows]
        model_index = torch.cat([index, index + self.S]) if self.cfg else index
        x = self._model_rows(self.x.index_select(0, index), self.prompt_length.index_select(0, index))
        logits_rows = self._block_columns(self.S).index_select(0, index)
        direct = rows == self.Bm  # every slot refreshes: write the engine's cache itself (batch 1)
        cache = self.kv if direct else self._refresh_cache(len(model_index))
        logits = self.model.forward_window(x, self.cos, self.sin, self._canvas_mask(index), cache, None,
                                           torch.cat([logits_rows, logits_rows]) if self.cfg else logits_rows)
        if not direct:
            self._store_rows(model_index, cache)
        if self.partial:  # every column computed now, from the canvas as it stands
            self.kv_token.index_copy_(0, index, x)
            self.kv_age.index_fill_(0, index, 0)
        self.logits.index_copy_(0, index, self._guided(logits))

    def _store_rows(self, index: torch.Tensor, cache: StaticKVCache) -> None:
        """Write the caches of the gathered rows ``cache`` back into the engine's rows ``index`` (a model's kept
        outputs, Dream's, travel with the keys/values)."""
        self.kv.kv.index_copy_(2, index, cache.kv)
        if cache.outputs is not None:
            if self.kv.outputs is None:
                self.kv.outputs = cache.outputs.new_zeros((self.Bm, *cache.outputs.shape[1:]))
            self.kv.outputs.index_copy_(0, index, cache.outputs)

    def _partial_block(self, slot: int) -> bool:
        """Whether the ``partial`` row in ``slot`` starts its block with the partial step (not a full refresh)."""
        return not interval_block(self.slots[slot].block, self.partial_every)

    def _full_refresh(self, block: int) -> bool:
        """Whether ``block`` starts with the full refresh (else with the answer-only one; a block-diffusion row:
        with the window of its previous and new blocks, ``_append_window``)."""
        if self.block_causal:
            return block == 0
        return interval_block(block, self.every)

    def _answer_step(self, rows: int) -> None:
        """The answer-only refresh of the slots ``answer_slots[:rows]`` (``prompt_stale``): their answer columns
        through the model against their cached keys/values (the prompt's from the last full refresh), written
        into their cache, and their block's logits. The rows' caches are gathered into the refresh store and
        scattered back (the forward attends to each row's own cache)."""
        index = self.answer_slots[:rows]
        cache = self._refresh_cache(rows)
        cache.kv.copy_(self.kv.kv.index_select(2, index))
        if self.kv.outputs is not None:  # a model's kept outputs (Dream) travel with the keys/values
            if cache.outputs is None:
                cache.outputs = self.kv.outputs.new_zeros((rows, *self.kv.outputs.shape[1:]))
            cache.outputs.copy_(self.kv.outputs.index_select(0, index))
        if self.block_causal:
            self._append_window(index, cache)
            return
        prompt = self.prompt_length.index_select(0, index)
        columns = (prompt[:, None] + self.gen_offsets).clamp(max=self.T - 1)  # [rows, G]: the answer
        x = self.x.index_select(0, index).gather(1, columns)
        cos, sin = self.cos[0, 0][columns][:, None], self.sin[0, 0][columns][:, None]
        block_rows = self.block.index_select(0, index)[:, None] * self.BL + self.offsets  # the block in the answer
        logits = self.model.forward_window(x, cos, sin, self._key_mask(index), cache, columns, block_rows)
        self._store_rows(index, cache)
        self.logits.index_copy_(0, index, logits)

    def _append_window(self, index: torch.Tensor, cache: StaticKVCache) -> None:
        """A block-diffusion row's block start (after its first block): the previous block, now final, and the
        new block through the model against the cache of the blocks before them (exact: block-causal, nothing
        later changes them), block-causally; the previous block's keys/values replace those of its last window
        step, the new block's logits go to the commit. The whole-canvas refresh is never needed again."""
        BL, T = self.BL, self.T
        start = self.prompt_length.index_select(0, index) + self.block.index_select(0, index) * BL
        columns = (start[:, None] - BL + torch.arange(2 * BL, device=self.device)).clamp(0, T - 1)  # [rows, 2BL]
        x = self.x.index_select(0, index).gather(1, columns)
        cos, sin = self.cos[0, 0][columns][:, None], self.sin[0, 0][columns][:, None]
        lengths = self.canvas_length.index_select(0, index)
        keys = self.columns_T[None, None, :]
        mask = (keys // BL <= (columns // BL)[:, :, None]) & (keys < lengths[:, None, None])  # [rows, 2BL, T]
        logits = self.model.forward_window(x, cos, sin, mask[:, None], cache, columns, self.offsets + BL)
        self._store_rows(index, cache)
        self.logits.index_copy_(0, index, logits)

    def _partial_step(self, hi: int) -> None:
        """``partial(budget=K)``: every slot of ``[0, hi)`` recomputes its block's columns plus K more of its
        canvas: the columns whose token changed since their keys/values were computed first, then the stalest,
        ties to the lower column (one key per column, so the choice is a plain top-K), against its cache.
        ``reuse=1``: only the block's masked columns keep their slots (in place: the logits of slot j are block
        position j's where it is masked); the slots of its decoded columns, left to right, then the K more, take the
        next columns of that order over the rest of the canvas, the block's decoded columns included (a column
        committed last step is changed, so first)."""
        T, K, W = self.T, self.budget, self.BL
        start = self.prompt_length[:hi] + self.block[:hi] * self.BL
        block = (start[:, None] + self.offsets).clamp(max=T - 1)  # [hi, W]
        x = self.x[:hi]
        inside = (self.columns_T >= start[:, None]) & (self.columns_T < start[:, None] + self.BL)
        if self.reuse:  # only the block's masked columns hold their slots; its decoded ones compete with the rest
            inside = inside & (x == self.opts.mask_id)
        valid = self.columns_T < self.canvas_length[:hi, None]
        changed = (x != self.kv_token[:hi]).long()
        # changed first, then age, then the lower column; past the canvas: below every valid column; the block: last
        key = (changed << 40) + self.kv_age[:hi] * T + (T - 1 - self.columns_T)
        key = torch.where(valid, key, -1 - self.columns_T)
        key = torch.where(inside, -2 * T - self.columns_T, key)
        if self.reuse:
            # the extra columns in priority order fill the block's decoded slots, left to right, then the K more
            extra = key.topk(W + K, dim=1).indices  # [hi, W + K]
            masked = x.gather(1, block) == self.opts.mask_id  # [hi, W]
            decoded = (~masked).long()
            rank = decoded.cumsum(1) - decoded  # decoded slots before j: at most W - 1, inside extra's W + K
            slots = torch.where(masked, block, extra.gather(1, rank))
            tail = decoded.sum(1, keepdim=True) + self.budget_offsets
            columns = torch.cat([slots, extra.gather(1, tail)], dim=1)  # [hi, W + K]
        else:
            columns = torch.cat([block, key.topk(K, dim=1).indices], dim=1)  # [hi, W + K]
        tokens = x.gather(1, columns)
        cache = self.kv if self.Bm == hi else self.kv.head(hi)
        cos, sin = self.cos[0, 0][columns][:, None], self.sin[0, 0][columns][:, None]
        logits = self.model.forward_window(tokens, cos, sin, self._key_mask(hi), cache, columns, self.offsets)
        self.logits[:hi].copy_(logits)
        self.kv_token[:hi].scatter_(1, columns, tokens)
        age = self.kv_age[:hi]
        age += 1
        age.scatter_(1, columns, 0)

    def _commit_step(self, hi: int) -> None:
        """Credit, scorer, policy and commit for the slots ``[0, hi)``, then each row's bookkeeping."""
        opts, BL = self.opts, self.BL
        active = self.active[:hi]
        columns = self._block_columns(hi)
        current = self.x[:hi].gather(1, columns)
        masked = (current == opts.mask_id) & active[:, None]
        state = None if self.policy_state is None else self.policy_state.head(hi)
        held = None  # an editing policy keeps a row in its decoded block (its state's ``hold``)
        if state is not None and "hold" in state.buffers:
            held = state.hold & active
        self.nfe[:hi] += (masked.any(dim=-1) if held is None else masked.any(dim=-1) | held).long()
        logits = self.logits[:hi, :BL] if self.wide else self.logits[:hi]
        if opts.logits_eos_inf:
            logits[..., opts.eos_id] = -torch.inf
        if self.credit is not None:
            logits = self.credit.head(hi).update_and_fuse(logits, masked)
        noise = self.noise if hi == self.S else self.noise.head(0, hi)
        candidates, confidence = self.scorer(logits, noise, fused=self.model.kernels.compiled)
        confidence = torch.where(masked, confidence, -torch.inf)
        step = self.step_index[:hi]
        schedule = None if self.schedule is None else self.schedule[:hi]
        remask = None
        # an editing policy scores decoded tokens too: p(candidate) everywhere, computed once for it and the record
        probability = candidate_probability(logits, candidates) if self.policy.edits else None
        if self.policy.uses_context:
            extra = self.logits[:hi, BL:] if self.wide else None
            uniform = None if self.policy_uniform is None else self.policy_uniform[:hi]
            answer = active[:, None] & (columns >= (self.prompt_length[:hi] + self.skip[:hi])[:, None])
            context = StepContext(logits, candidates, state, extra, current, answer, uniform, opts.mask_id,
                                  probability)
            commit = self.policy(confidence, masked, step[:, None], schedule, context)
            if self.policy.revocable:
                commit, remask = commit
                remask = remask & ~masked & active[:, None]
        else:
            commit = self.policy(confidence, masked, step[:, None], schedule)
        x = self.x[:hi]
        new = torch.where(commit, candidates, current)
        if remask is not None:
            new = torch.where(remask, opts.mask_id, new)
        x.scatter_(1, columns, new)
        gen_columns = (columns - self.prompt_length[:hi, None]).clamp(0, self.G - 1)  # a free slot's: unchanged
        record = self.nfe[:hi, None] - 1
        commit_step, commit_confidence = self.commit_step[:hi], self.commit_confidence[:hi]
        commit_step.scatter_(1, gen_columns, torch.where(commit, record, commit_step.gather(1, gen_columns)))
        if probability is not None:  # an edited token's confidence is its probability (-inf elsewhere otherwise)
            confidence = torch.where(masked, confidence, probability)
        commit_confidence.scatter_(1, gen_columns, torch.where(
            commit, confidence.float(), commit_confidence.gather(1, gen_columns)))
        if remask is not None:  # back to mask: not committed; the step reports them (``step_commits``)
            commit_step.scatter_(1, gen_columns, torch.where(remask, NOT_COMMITTED, commit_step.gather(1, gen_columns)))
            remasked = self.remasked[:hi]
            remasked.zero_()
            remasked.scatter_(1, gen_columns, remask & active[:, None])
        finished = self.finished[:hi]
        if opts.early_stop:
            valid = self.gen_offsets < self.gen_length[:hi, None]
            answer_columns = (self.prompt_length[:hi, None] + self.gen_offsets).clamp(max=self.T - 1)
            gen = torch.where(valid, x.gather(1, answer_columns), opts.mask_id)
            if self.block_causal:  # the prompt's tail in a first block: decoded, never a stop
                gen = torch.where(self.gen_offsets < self.skip[:hi, None], -2, gen)
            decoded_prefix = (gen != opts.mask_id).long().cumprod(dim=-1).bool()
            newly = (torch.isin(gen, self.stop_tensor) & decoded_prefix).any(dim=-1) & ~finished & active
            fill = newly[:, None] & (gen == opts.mask_id) & valid
            # scatter_add: an answer column past a short row's canvas is clamped onto a real column, adding 0
            fill_columns = torch.zeros_like(x).scatter_add_(1, answer_columns, fill.long()) > 0
            x.copy_(torch.where(fill_columns, opts.stop_ids[0], x))
            commit_step.copy_(torch.where(fill, FILLED_BY_EARLY_STOP, commit_step))
            finished |= newly
        after = x.gather(1, columns) == opts.mask_id
        step += active.long()
        fixed = self.policy.steps_per_block
        if fixed is None:
            block_done = ~after.any(dim=-1)
            if held is not None:
                block_done &= ~state.hold
        elif opts.early_stop:
            block_done = ~after.any(dim=-1) | (step >= fixed)
        else:
            block_done = step >= fixed
        advance = active & block_done & ~finished
        block = self.block[:hi]
        block += advance.long()
        step.masked_fill_(advance, 0)
        done = active & (finished | (block * BL >= self.gen_length[:hi]))
        # the next block of the rows that advanced: its masked positions, schedule and fresh credit
        next_masked = x.gather(1, self._block_columns(hi)) == opts.mask_id
        self.block_masked[:hi].copy_(torch.where(advance[:, None], next_masked, self.block_masked[:hi]))
        if schedule is not None:
            schedule.copy_(torch.where(advance[:, None], self.policy.start_block(next_masked), schedule))
        if self.credit is not None:
            self.credit.head(hi).reset_where(advance)
        if state is not None:
            self.policy.advance_state(state, advance)
        self.status[:hi].copy_(active.to(torch.uint8) * ACTIVE + advance.to(torch.uint8) * ADVANCED
                               + done.to(torch.uint8) * DONE)
        active &= ~done

    # ---- running the step kinds: captured graphs or eager --------------------------------------------------
    def _function(self, kind: tuple) -> Callable[[], None]:
        name, *args = kind
        method = getattr(self, f"_{name}_step")
        return lambda: method(*args)

    def _run(self, kind: tuple) -> None:
        function = self._function(kind)
        if not self.use_graphs:
            function()
            return
        graph = self.graphs.get(kind)
        if graph is None:
            graph = self._capture(kind, function)
        graph.replay()

    def _capture(self, kind: tuple, function: Callable[[], None]) -> torch.cuda.CUDAGraph:
        """Warm up on a side stream (forwards are idempotent; the commit is captured before any row is
        active, when it changes nothing), then capture."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                function()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.graph_pool):
            function()
        self.graph_pool = graph.pool()
        self.graphs[kind] = graph
        return graph

    def _draw_noise(self) -> None:
        """The step's random draws, before the captured commit: the scorer's, then the policy's uniforms."""
        scorer, uniform = self.scorer.random, self.policy_uniform
        if not scorer and uniform is None:
            return
        noise = self.noise if self.hi == self.S else self.noise.head(0, self.hi)
        own = [s is not None and s.request.generator is not None for s in self.slots[:self.hi]]
        if not any(own):
            if scorer:
                self.scorer.draw(noise)
            if uniform is not None:
                uniform[:self.hi].uniform_(generator=self.scorer.generator)
            return
        for i, slot in enumerate(self.slots[:self.hi]):  # each request's own generator, in the order alone
            generator = slot.request.generator if slot is not None and slot.request.generator is not None \
                else self.scorer.generator
            if scorer:
                self.scorer.draw(noise.head(i, i + 1), generator)
            if uniform is not None:
                uniform[i:i + 1].uniform_(generator=generator)

    def step(self) -> tuple[list[int], list[int]]:
        """One step of every occupied slot; returns (slots that finished, slots that stepped)."""
        occupied = [i for i, s in enumerate(self.slots) if s is not None]
        if not occupied:
            return [], []
        hi, BL = self.hi, self.BL
        self.stats.steps += 1
        self.stats.useful_row_steps += len(occupied)
        if self.window == "none":
            self._run(("full", hi))
            self.stats.forwards += 1
            self.stats.computed_row_steps += hi
        else:
            # partial: a row's block 0 (and, with every=N, blocks N, 2N, ...) starts with a refresh; other blocks
            # start with the partial step
            fresh = [i for i in occupied if self.slots[i].refresh and not (self.partial and self._partial_block(i))]
            inside = [i for i in occupied if i not in fresh] if fresh else occupied
            if inside:
                width = BL
                if self.window == "prefix":
                    width = max(self.slots[i].gen_length - self.slots[i].block * BL for i in inside)
                self._run(("partial", hi) if self.partial else ("window", hi, width))
                self.stats.forwards += 1
                self.stats.computed_row_steps += hi
            full, answer = [], []
            for i in fresh:
                (full if self._full_refresh(self.slots[i].block) else answer).append(i)
            for kind, rows_, index, mirror in (("refresh", full, self.refresh_slots, self.refresh_slots_host),
                                                ("answer", answer, self.answer_slots, self.answer_slots_host)):
                if not rows_:
                    continue
                rows = slot_bucket(len(rows_), self.S) if not (len(rows_) == self.S == 1) else 1
                padded = rows_ + [rows_[0]] * (rows - len(rows_))  # copies of a row compute the same values
                if padded != mirror[:rows]:
                    index[:rows].copy_(torch.tensor(padded), non_blocking=True)
                    mirror[:rows] = padded
                self._run((kind, rows))
                self.stats.forwards += 1
                self.stats.computed_row_steps += rows
        self._draw_noise()
        self._run(("commit", hi))
        if self.predictable:  # no read-back: the step is queued, its time counts once a later sync waits for it
            self._share_time(occupied)
            return self._predicted(occupied), occupied
        if self.device.type == "cuda":
            self.status_host[:hi].copy_(self.status[:hi], non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
            status = self.status_host[:hi].tolist()
        else:
            status = self.status[:hi].tolist()
        self._share_time(occupied)
        done = []
        for i in occupied:
            flags, slot = status[i], self.slots[i]
            slot.refresh = False
            if flags & ADVANCED:
                slot.block += 1
                slot.refresh = True
            if flags & DONE:
                done.append(i)
        return done, occupied

    def _share_time(self, occupied: list[int]) -> None:
        """Split the wall time since the last step's end (or the first admission) over the rows of this step."""
        now = time.perf_counter()
        share = (now - (self.last_step_end or min(self.slots[i].admitted_s for i in occupied))) / len(occupied)
        self.last_step_end = now
        for i in occupied:
            self.slots[i].seconds += share

    def _predicted(self, occupied: list[int]) -> list[int]:
        """The host's own bookkeeping of a fixed schedule without early stop (what the status would say)."""
        done, spb = [], self.policy.steps_per_block
        for i in occupied:
            slot = self.slots[i]
            slot.step += 1
            slot.refresh = False
            if slot.step == spb:
                slot.step, slot.block, slot.refresh = 0, slot.block + 1, True
                if slot.block * self.BL >= slot.gen_length:
                    done.append(i)
        return done


def run_queue(
    engine: DecodeEngine, requests: list[RowRequest], on_result: Callable[[RowResult], None],
    on_step: Callable[[DecodeEngine, list[int]], None] | None = None, time_steps: bool = False,
) -> tuple[int, list[float]]:
    """Decode ``requests`` in order through ``engine`` with continuous batching: admit while slots are free,
    step, hand finished rows to ``on_result``, compact. Returns (engine steps, step seconds). If a callback
    raises (or the run is interrupted), the rows still in the engine are taken out before the error goes on:
    the engine is left empty for the next run."""
    waiting = list(reversed(requests))
    steps, times = 0, []
    engine.last_step_end = None
    try:
        while waiting or engine.count:
            if waiting and engine.free_slots():
                engine.admit_many([waiting.pop() for _ in range(min(len(waiting), engine.free_slots()))])
            tic = time.perf_counter()
            done, stepped = engine.step()
            steps += 1
            if time_steps:
                times.append(time.perf_counter() - tic)
            if on_step is not None:
                on_step(engine, stepped)
            for result in engine.retire(done):
                on_result(result)
            engine.compact()
    except BaseException:
        engine.retire([i for i, s in enumerate(engine.slots) if s is not None])
        raise
    return steps, times


def cached_engine(
    model, policy: Policy, scorer: Scorer, credit: CreditConfig | None, opts: EngineOptions, graphs: bool,
    capacity: int = 2,
) -> DecodeEngine:
    """The engine of this decode signature from the model's small LRU (built, and captured, on first use)."""
    engines: OrderedDict = model.__dict__.setdefault("_decode_engines", OrderedDict())
    scorer_key = (scorer.kind, scorer.temperature, tuple(scorer.confidence_exclude))
    key = (repr(policy), scorer_key, repr(credit), opts, graphs, model.kernels.compiled)
    engine = engines.get(key)
    if engine is None:
        while len(engines) >= capacity:
            engines.popitem(last=False)
            if graphs:
                torch.cuda.empty_cache()
        engine = DecodeEngine(model, policy, scorer, credit, opts, graphs=graphs)
        engines[key] = engine
    engines.move_to_end(key)
    engine.scorer = scorer  # the call's generator draws the noise
    engine.stats = EngineStats()
    return engine


def engine_decode(
    model, input_ids: torch.Tensor, policy: Policy, *, mask_id: int, attention_mask: torch.Tensor | None,
    gen_length: int, block_length: int, scorer: Scorer, credit: CreditConfig | None, cache: str, cfg_scale: float,
    logits_eos_inf: bool, eos_id: int | None, stop_ids: tuple[int, ...], early_stop: bool, time_steps: bool,
    graphs: bool, bucket: bool = False, slots: int | None = None,
    on_row: Callable[[int, RowResult], None] | None = None, on_block: Callable[[int, int], None] | None = None,
    on_step: Callable[[StepCommits], None] | None = None,
) -> tuple[list[RowResult], int, list[float], DecodeEngine]:
    """The rows of ``input_ids`` (left-padded by ``attention_mask``) through one engine with ``slots`` slots
    (default: the batch; with ``graphs`` or ``bucket`` rounded up to the next power of two up to 64, then to
    multiples of 64): (results in row order, engine steps, step seconds, the engine). ``on_row(i, result)`` is
    called as row ``i`` finishes, ``on_step(StepCommits)`` for every row after every step it took part in
    (a read-back per step)."""
    B = input_ids.shape[0]
    keep = None if attention_mask is None else attention_mask.bool()
    prompts = [input_ids[i] if keep is None else input_ids[i][keep[i]] for i in range(B)]
    longest = max(len(p) for p in prompts)
    S = min(B, slots or B)
    if graphs or bucket:  # batch sizes share engines (captured graphs, compiled kernels) by bucket
        S = 1 << (S - 1).bit_length() if S <= 64 else -(-S // 64) * 64
    opts = EngineOptions(S, longest + gen_length, gen_length, block_length, any(len(p) < longest for p in prompts),
                         mask_id, cache, float(cfg_scale), logits_eos_inf, eos_id, tuple(stop_ids), early_stop)
    engine = cached_engine(model, policy, scorer, credit, opts, graphs)
    results: list[RowResult | None] = [None] * B
    blocks_total, blocks_done = B * (gen_length // block_length), 0

    def finished(result: RowResult) -> None:
        results[result.key] = result
        if on_row is not None:
            on_row(result.key, result)

    def progress(engine: DecodeEngine, stepped: list[int]) -> None:
        nonlocal blocks_done
        if on_step is not None:
            for commits in engine.step_commits(stepped):
                on_step(commits)
        if on_block is None:
            return
        advanced = sum(1 for i in stepped if engine.slots[i].refresh)
        if advanced:
            blocks_done += advanced
            on_block(min(blocks_done, blocks_total), blocks_total)

    requests = [RowRequest(p, gen_length, key=i) for i, p in enumerate(prompts)]
    steps, times = run_queue(engine, requests, finished, progress, time_steps)
    if on_block is not None and blocks_done < blocks_total:
        on_block(blocks_total, blocks_total)
    return results, steps, times, engine


def run_rows(engine: DecodeEngine, prompts: torch.Tensor, gen_length: int) -> list[RowResult]:
    """Decode the rows of ``prompts`` [B, P] (no padding) through ``engine``; the results in row order (tests,
    benchmarks)."""
    results: list[RowResult | None] = [None] * prompts.shape[0]

    def keep(result: RowResult) -> None:
        results[result.key] = result

    run_queue(engine, [RowRequest(row, gen_length, key=i) for i, row in enumerate(prompts)], keep)
    return results
