"""Continuous batching for ``unmask serve``: every row at its own block, joining and leaving between steps.

A ``RowBatch`` holds the rows that share one decode signature (policy and its knob, credit, cache
mode, block length, scorer, temperature); requests with other settings go to another ``RowBatch``
and the engine steps the batches in turn. Inside a batch each row carries its own canvas length,
block, step index, cache columns and credit, in slot buffers allocated once (grown when a longer
request arrives): ``x`` [S, T] (right-padded: a row's canvas is ``x[s, :len_s]``, so rotary
positions are the column index and the row decodes as it does alone), the KV cache [L, 2, S, H, T,
hd] and per-row credit. One engine step of a batch:

1. rows inside a block (cache ``prefix``/``dual``): one window forward over the slots ``[0, hi)``,
   each row at its own columns (``forward_window`` with per-row columns [S, W]); free slots compute
   nothing that is read;
2. rows at a block start (or every row without a cache): one full forward over their canvases,
   which rewrites their cache columns (the refresh) after step 1, so nothing stale survives;
3. credit, scorer, policy and commit for all stepped rows at once, each at its own step index.

A row leaves as soon as its answer is settled (stop token with every position before it decoded,
``max_tokens`` settled positions, a stop string, or its last block), and a waiting request takes its
slot before the next step. With temperature 0 every answer equals the same request decoded alone
(``DiffusionLM.generate`` with ``early_stop=True``); with a seed, its row draws its noise from its own
generator in the same order as alone.

Streaming: a dLLM does not write left to right, so a row reports its *settled prefix*: the tokens up
to the first still-masked position (and up to the first stop token), which never change again; its
text only ever grows.
"""

from __future__ import annotations

import itertools
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from unmask.api import DiffusionLM
from unmask.decoding.config import DecodeConfig
from unmask.decoding.credit import CreditState
from unmask.decoding.scorers import Noise, Scorer
from unmask.models.cache import StaticKVCache


class QueueFull(RuntimeError):
    """The engine's waiting queue is full (the server answers 429 with Retry-After)."""


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    forwards: int  # model forwards the row took part in (NFE)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Update:
    """What the engine reports for a request: new text, and at the end the finish reason and usage."""

    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "timeout" | "error"
    usage: Usage | None = None
    error: str | None = None


@dataclass
class Ticket:
    """A request as the engine sees it. ``sink`` receives ``Update``s on the engine's thread."""

    prompt_ids: list[int]
    config: DecodeConfig  # gen_length = max_tokens rounded up to a multiple of block_length
    max_tokens: int
    sink: Callable[[Update], None]
    stop: tuple[str, ...] = ()
    timeout_s: float | None = None
    id: int = field(default_factory=itertools.count().__next__)
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False

    def cancel(self) -> None:
        """Drop the request (client gone): its row leaves before the next step."""
        self.cancelled = True


def batch_signature(config: DecodeConfig) -> tuple:
    """Requests decode in one ``RowBatch`` iff these agree (the policy's repr carries its knob)."""
    return (repr(config.build_policy()), repr(config.credit_config), config.cache, config.block_length,
            config.scorer, config.temperature, config.logits_eos_inf, config.confidence_eos_eot_inf)


class TextStream:
    """The growing answer of one row: settled tokens -> text, cut at stop strings, only ever appended to.

    The final text equals ``tokenizer.decode(tokens, skip_special_tokens=True).strip()`` of the whole
    answer (then cut before the first stop string). While streaming, trailing whitespace, an
    incomplete UTF-8 character and a tail that may still become a stop string are held back.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: tuple[str, ...]) -> None:
        self.decode, self.stop = decode, tuple(s for s in stop if s)
        self.sent = ""

    def text_of(self, tokens: list[int]) -> tuple[str, bool]:
        """(text, whether a stop string cut it)."""
        text = self.decode(tokens).strip()
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            return text[: min(cuts)].rstrip(), True
        return text, False

    def advance(self, tokens: list[int], final: bool) -> tuple[str, bool]:
        """(new text to send, stop string hit) for the settled ``tokens``."""
        text, hit = self.text_of(tokens)
        if not (final or hit):
            text = text.rstrip("\ufffd")
            hold = max((len(s) - 1 for s in self.stop), default=0)
            for k in range(min(hold, len(text)), 0, -1):  # a tail that may grow into a stop string
                if any(s.startswith(text[-k:]) for s in self.stop):
                    text = text[:-k]
                    break
        if not text.startswith(self.sent):  # cannot happen for settled tokens; never send a rewrite
            return "", hit
        delta, self.sent = text[len(self.sent):], text
        return delta, hit


@dataclass
class Row:
    """Host-side state of one slot."""

    ticket: Ticket
    prompt_length: int
    gen_length: int
    stream: TextStream
    generator: torch.Generator | None
    block: int = 0
    step: int = 0
    forwards: int = 0
    refresh: bool = True  # at a block start: the next step is a full forward

    @property
    def length(self) -> int:
        return self.prompt_length + self.gen_length


class RowBatch:
    """The slots of one decode signature (see the module docstring)."""

    def __init__(self, lm: DiffusionLM, config: DecodeConfig, slots: int, length: int,
                 static_window: bool | None = None) -> None:
        self.lm, self.model = lm, lm.model
        self.signature = batch_signature(config)
        self.policy = config.build_policy()
        tokenizer = lm.tokenizer
        eot = tokenizer.eot_id
        exclude = (eot,) if config.confidence_eos_eot_inf and eot is not None else ()
        self.scorer = Scorer(config.scorer, config.temperature, None, exclude)
        self.config, self.block_length, self.cache = config, config.block_length, config.cache
        self.mask_id, self.eos_id = lm.mask_id, tokenizer.eos_id
        self.stop_ids = torch.tensor(tokenizer.stop_ids or (-1,))
        self.rows: list[Row | None] = [None] * slots
        device = self.model.device
        credit = config.credit_config
        self.credit = None if credit is None else CreditState(credit, slots, config.block_length, device)
        steps = self.policy.steps_per_block
        self.schedule = None if steps is None else torch.zeros((slots, steps), dtype=torch.long, device=device)
        self.x: torch.Tensor | None = None
        self.kv: StaticKVCache | None = None
        self.capacity = 0
        # dual cache: the window step of every slot has the same shapes at every step, so on CUDA it is
        # captured once in a CUDA graph (per buffer capacity) and replayed; rows feed it through
        # `window_starts` / `window_lengths`
        if static_window is None:
            static_window = device.type == "cuda"
        self.static_window = static_window and self.cache == "dual"
        self.window_starts = torch.zeros(slots, dtype=torch.long, device=device)
        self.window_lengths = torch.ones(slots, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capturable = True
        self.graph_logits: torch.Tensor | None = None
        self.grow(length)

    # ---- slots ---------------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return sum(row is not None for row in self.rows)

    def free_slot(self) -> int | None:
        return next((i for i, row in enumerate(self.rows) if row is None), None)

    def grow(self, length: int) -> None:
        """Make room for canvases of ``length`` columns (+1 scratch column that is always masked)."""
        if length + 1 <= self.capacity:
            return
        limit = self.model.config.max_sequence_length + 1
        capacity = min(max(length + 1, 2 * self.capacity, 64), max(limit, length + 1))
        model, S, device = self.model, len(self.rows), self.model.device
        x = torch.full((S, capacity), self.mask_id, dtype=torch.long, device=device)
        kv = None
        if self.cache != "none":
            kv = StaticKVCache.for_model(model.config, S, capacity, model.dtype, device)
        if self.x is not None:
            x[:, : self.capacity].copy_(self.x)
            if kv is not None:
                kv.kv[..., : self.capacity, :].copy_(self.kv.kv)
                if self.kv.outputs is not None:
                    kv.outputs = self.kv.outputs.new_zeros((S, capacity, self.kv.outputs.shape[-1]))
                    kv.outputs[:, : self.capacity].copy_(self.kv.outputs)
        self.x, self.kv, self.capacity = x, kv, capacity
        self.graph = self.graph_logits = None  # captured over the old buffers
        self.cos, self.sin = model.rotary(torch.arange(capacity, device=device)[None])  # [1, 1, T, hd]

    def admit(self, ticket: Ticket) -> None:
        slot = self.free_slot()
        assert slot is not None, "admit needs a free slot"
        P, G = len(ticket.prompt_ids), ticket.config.gen_length
        self.grow(P + G)
        self.x[slot].fill_(self.mask_id)
        self.x[slot, :P] = torch.tensor(ticket.prompt_ids, dtype=torch.long, device=self.x.device)
        generator = None
        if self.scorer.random:
            generator = torch.Generator(device=self.x.device)
            if ticket.config.seed is not None:
                generator.manual_seed(ticket.config.seed)
            else:
                generator.seed()
        tokenizer = self.lm.tokenizer
        stream = TextStream(lambda ids: tokenizer.decode(ids, skip_special_tokens=True), ticket.stop)
        self.rows[slot] = Row(ticket, P, G, stream, generator)

    def release(self, slot: int) -> None:
        self.rows[slot] = None

    # ---- one step of every row -----------------------------------------------------------------------
    def _window_layout(self, hi: int) -> tuple[list[int], list[int]]:
        """(block start, canvas length) of slots [0, hi); a free slot attends to every column (an all-masked
        row would write NaN keys/values, which a later row's masked columns would carry into its sums)."""
        BL = self.block_length
        starts, lengths = [0] * hi, [self.capacity] * hi
        for i in range(hi):
            row = self.rows[i]
            if row is not None:
                starts[i], lengths[i] = row.prompt_length + row.block * BL, row.length
        return starts, lengths

    def _window_forward(self, x: torch.Tensor, kv: StaticKVCache, starts: torch.Tensor, lengths: torch.Tensor,
                        width: int) -> torch.Tensor:
        """Logits [rows, BL, V] of each row's block from a forward over its ``width`` columns from ``starts``
        (clamped to the scratch column), keys past each row's ``lengths`` masked, keys/values written into ``kv``."""
        T, BL, device = self.capacity, self.block_length, self.x.device
        columns = (starts[:, None] + torch.arange(width, device=device)).clamp(max=T - 1)
        key_mask = (torch.arange(T, device=device) < lengths[:, None])[:, None, None]
        cos, sin = self.cos[0, 0][columns][:, None], self.sin[0, 0][columns][:, None]
        return self.model.forward_window(x.gather(1, columns), cos, sin, key_mask, kv, columns,
                                         torch.arange(BL, device=device))

    def _static_window(self) -> torch.Tensor:
        """Logits [S, BL, V] of every slot's block (dual cache) from the static inputs ``window_starts`` /
        ``window_lengths``: fixed shapes, no host sync (the body of the captured graph)."""
        return self._window_forward(self.x, self.kv, self.window_starts, self.window_lengths, self.block_length)

    def _captured_window(self) -> torch.Tensor:
        """``_static_window`` replayed from a CUDA graph (captured on first use after each buffer growth);
        a model whose step cannot be captured (e.g. MoE experts run with host-side sizes) runs it eagerly."""
        if not self.capturable:
            return self._static_window()
        if self.graph is None:
            try:
                self._capture_window()
            except Exception as err:  # capture is an optimisation, never a failure
                warnings.warn(f"serve: CUDA graph capture failed, stepping eagerly ({type(err).__name__}: {err})",
                              stacklevel=2)
                self.capturable = False
                self.graph = self.graph_logits = None
                return self._static_window()
        self.graph.replay()
        return self.graph_logits

    def _capture_window(self) -> None:
        """Warm up on a side stream (the window step is idempotent: same inputs, same writes), then capture."""
        device = self.x.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._static_window()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.graph_logits = self._static_window()
        self.graph = graph

    def _window_logits(self, slots: list[int]) -> torch.Tensor:
        """Logits [hi, BL, V] of each slot's block from a window forward over slots [0, hi) (cached modes)."""
        BL, device = self.block_length, self.x.device
        if self.static_window:
            starts, lengths = self._window_layout(len(self.rows))
            self.window_starts.copy_(torch.tensor(starts), non_blocking=True)
            self.window_lengths.copy_(torch.tensor(lengths), non_blocking=True)
            return self._captured_window() if device.type == "cuda" else self._static_window()
        hi = max(slots) + 1
        starts, lengths = self._window_layout(hi)
        width = BL if self.cache == "dual" else max(lengths[i] - starts[i] for i in slots)
        return self._window_forward(self.x[:hi], self.kv.head(hi), torch.tensor(starts, device=device),
                                    torch.tensor(lengths, device=device), width)

    def _full_logits(self, slots: list[int], block_columns: torch.Tensor) -> torch.Tensor:
        """Logits [n, BL, V] of each row's block from a full forward over its canvas (writes its cache)."""
        device = self.x.device
        index = torch.tensor(slots, device=device)
        lengths = [self.rows[i].length for i in slots]
        width = max(lengths)
        key_mask = None
        if min(lengths) < width:  # as alone: no mask where nothing is padded
            key_mask = (torch.arange(width, device=device) < torch.tensor(lengths, device=device)[:, None])
            key_mask = key_mask[:, None, None]
        cache = None
        if self.kv is not None:
            cache = StaticKVCache.for_model(self.model.config, len(slots), width, self.model.dtype, device)
        logits = self.model.forward_window(self.x[index, :width], self.cos[..., :width, :], self.sin[..., :width, :],
                                           key_mask, cache, None, block_columns[index])
        if cache is not None:
            self.kv.kv[:, :, index, :, :width] = cache.kv
            if cache.outputs is not None:  # a model's kept outputs (Dream) travel with the keys/values
                if self.kv.outputs is None:
                    self.kv.outputs = cache.outputs.new_zeros((len(self.rows), self.capacity, cache.outputs.shape[-1]))
                    self.graph = self.graph_logits = None  # the captured window read no outputs buffer
                self.kv.outputs[index, :width] = cache.outputs
        return logits

    def step(self) -> list[tuple[int, Row]]:
        """One step of every active row; returns the rows it stepped (the engine reports and retires)."""
        rows = [(i, row) for i, row in enumerate(self.rows) if row is not None]
        if not rows:
            return []
        self.model.compile_kernels(False)  # eager kernels: the shapes of a server step vary
        BL, device = self.block_length, self.x.device
        starts = torch.tensor([0 if r is None else r.prompt_length + r.block * BL for r in self.rows], device=device)
        block_columns = starts[:, None] + torch.arange(BL, device=device)  # [S, BL]
        if self.cache == "none":
            inside, fresh = [], [i for i, _ in rows]
        else:
            inside = [i for i, r in rows if not r.refresh]
            fresh = [i for i, r in rows if r.refresh]
        parts, order = [], []
        if inside:  # before the refresh: its writes to refreshing rows are then overwritten
            parts.append(self._window_logits(inside)[torch.tensor(inside, device=device)])
            order += inside
        if fresh:
            parts.append(self._full_logits(fresh, block_columns))
            order += fresh
        logits = torch.cat(parts) if len(parts) > 1 else parts[0]
        index = torch.tensor(order, device=device)
        columns = block_columns[index]
        current = self.x[index[:, None], columns]
        masked = current == self.mask_id
        flags = [self.rows[i].refresh for i in order]  # rows starting a block (known on the host: no sync)
        starting = torch.tensor(flags, device=device)
        if self.schedule is not None and any(flags):
            start_rows = index[starting]
            self.schedule[start_rows] = self.policy.start_block(masked[starting])
        if self.config.logits_eos_inf:
            logits[..., self.eos_id] = -torch.inf
        if self.credit is not None:
            if any(flags):
                self.credit.reset_rows(index[starting])
            state = self.credit.select(index)
            logits = state.update_and_fuse(logits, masked)
            self.credit.store(index, state)
        noise = None
        if self.scorer.random:
            noise = self.scorer.allocate_noise(len(order), BL, logits.shape[-1], device)
            for j, slot in enumerate(order):  # each request's own generator, in the order of a solo decode
                generator = self.rows[slot].generator
                if noise.uniform is not None:
                    noise.uniform[j].uniform_(generator=generator)
                if noise.random_confidence is not None:
                    noise.random_confidence[j].uniform_(generator=generator)
        candidates, confidence = self.scorer(logits, noise or Noise())
        confidence = torch.where(masked, confidence, -torch.inf)
        step_index = torch.tensor([self.rows[i].step for i in order], device=device)[:, None]
        schedule = None if self.schedule is None else self.schedule[index]
        commit = self.policy(confidence, masked, step_index, schedule)
        self.x[index[:, None], columns] = torch.where(commit, candidates, current)
        block_open = (self.x[index[:, None], columns] == self.mask_id).any(-1).tolist()
        steps_per_block = self.policy.steps_per_block
        stepped = []
        for slot, still_open in zip(order, block_open, strict=True):
            row = self.rows[slot]
            row.forwards += 1
            row.step += 1
            row.refresh = False
            if not still_open or (steps_per_block is not None and row.step >= steps_per_block):
                row.block += 1
                row.step = 0
                row.refresh = True
            stepped.append((slot, row))
        return stepped


def settled_answer(gen: list[int], mask_id: int, stop_ids: set[int]) -> tuple[list[int], bool]:
    """(the settled tokens: up to the first masked position, or up to and including the first stop token
    before it; whether that stop token ends the answer)."""
    out = []
    for token in gen:
        if token == mask_id:
            return out, False
        out.append(token)
        if token in stop_ids:
            return out, True
    return out, False


class Engine:
    """The decode thread: a bounded queue of ``Ticket``s and the ``RowBatch``es that decode them.

    ``max_batch``: rows decoding at once (over all batches); ``max_queue``: waiting requests beyond
    which ``submit`` raises ``QueueFull``; ``max_batches``: decode signatures kept allocated at once.
    """

    def __init__(self, lm: DiffusionLM, max_batch: int = 8, max_queue: int = 64, max_batches: int = 4) -> None:
        if max_batch < 1 or max_queue < 0 or max_batches < 1:
            raise ValueError(f"max_batch ({max_batch}) and max_batches ({max_batches}) must be >= 1, "
                             f"max_queue ({max_queue}) >= 0")
        self.lm, self.max_batch, self.max_queue, self.max_batches = lm, max_batch, max_queue, max_batches
        self.waiting: deque[Ticket] = deque()
        self.batches: dict[tuple, RowBatch] = {}
        self.condition = threading.Condition()
        self.running = False
        self.thread: threading.Thread | None = None
        self.stats = EngineStats()
        self.stop_ids = set(lm.tokenizer.stop_ids)
        self.static_window: bool | None = None  # None: on CUDA (see RowBatch); True also steps all slots on a CPU

    # ---- client side ---------------------------------------------------------------------------------
    def start(self) -> Engine:
        if self.thread is None:
            self.running = True
            self.thread = threading.Thread(target=self._loop, name="unmask-engine", daemon=True)
            self.thread.start()
        return self

    def shutdown(self) -> None:
        with self.condition:
            self.running = False
            self.condition.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=30)
            self.thread = None

    def submit(self, ticket: Ticket) -> None:
        with self.condition:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting)")
            self.waiting.append(ticket)
            self.stats.submitted += 1
            self.condition.notify_all()

    @property
    def active_rows(self) -> int:
        return sum(batch.active for batch in self.batches.values())

    # ---- engine thread -------------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self.condition:
                    while self.running and not self.waiting and not self.active_rows:
                        self.condition.wait()
                    if not self.running:
                        break
                    self._admit()
                for batch in list(self.batches.values()):
                    if batch.active:
                        self._step(batch)
        for batch in self.batches.values():  # shutting down: nobody waits forever
            for slot, row in enumerate(batch.rows):
                if row is not None:
                    self._finish(batch, slot, row, Update(finish_reason="cancelled", error="server shutting down"))
        for ticket in self.waiting:
            ticket.sink(Update(finish_reason="cancelled", error="server shutting down"))

    def _admit(self) -> None:
        """Move waiting tickets into free slots, first come first served within each signature."""
        now = time.monotonic()
        kept: deque[Ticket] = deque()
        while self.waiting:
            ticket = self.waiting.popleft()
            if ticket.cancelled:
                ticket.sink(Update(finish_reason="cancelled"))
                continue
            if ticket.timeout_s is not None and now - ticket.submitted > ticket.timeout_s:
                ticket.sink(Update(finish_reason="timeout", error=f"request timed out after {ticket.timeout_s:g} s"))
                continue
            batch = self._batch_for(ticket)
            if batch is None or self.active_rows >= self.max_batch or batch.free_slot() is None:
                kept.append(ticket)
                continue
            try:
                batch.admit(ticket)
            except Exception as err:  # e.g. out of memory growing the buffers
                ticket.sink(Update(finish_reason="error", error=f"{type(err).__name__}: {err}"))
        self.waiting = kept
        self.stats.queue_depth = len(kept)

    def _batch_for(self, ticket: Ticket) -> RowBatch | None:
        key = batch_signature(ticket.config)
        batch = self.batches.get(key)
        if batch is not None:
            return batch
        for other_key, other in list(self.batches.items()):  # make room: drop idle batches first
            if len(self.batches) < self.max_batches:
                break
            if not other.active:
                del self.batches[other_key]
        if len(self.batches) >= self.max_batches:
            return None
        length = len(ticket.prompt_ids) + ticket.config.gen_length
        batch = RowBatch(self.lm, ticket.config, self.max_batch, length, self.static_window)
        self.batches[key] = batch
        return batch

    def _step(self, batch: RowBatch) -> None:
        now = time.monotonic()
        for slot, row in enumerate(batch.rows):  # cancelled or timed out rows leave before the step
            if row is None:
                continue
            if row.ticket.cancelled:
                self._finish(batch, slot, row, Update(finish_reason="cancelled"))
            elif row.ticket.timeout_s is not None and now - row.ticket.submitted > row.ticket.timeout_s:
                self._finish(batch, slot, row, Update(
                    finish_reason="timeout", error=f"request timed out after {row.ticket.timeout_s:g} s"))
        if not batch.active:
            return
        try:
            stepped = batch.step()
        except Exception as err:  # a failing step fails its rows, never the server
            for slot, row in enumerate(batch.rows):
                if row is not None:
                    self._finish(batch, slot, row, Update(finish_reason="error", error=f"{type(err).__name__}: {err}"))
            self.batches.pop(batch.signature, None)
            return
        self.stats.record_step(len(stepped), self.active_rows, self.max_batch)
        canvases = batch.x[torch.tensor([slot for slot, _ in stepped], device=batch.x.device)].tolist()  # one copy
        for (slot, row), canvas in zip(stepped, canvases, strict=True):
            gen = canvas[row.prompt_length: row.length]
            tokens, stopped = settled_answer(gen, batch.mask_id, self.stop_ids)
            max_tokens = row.ticket.max_tokens
            finish = None
            if stopped and len(tokens) <= max_tokens:
                finish = "stop"
            elif len(tokens) >= max_tokens:
                tokens, finish = tokens[:max_tokens], "length"
            elif row.block * batch.block_length >= row.gen_length:  # every block decoded
                finish = "length"
            delta, hit = row.stream.advance(tokens, final=finish is not None)
            if hit:
                finish = "stop"
            if finish is not None:
                usage = Usage(row.prompt_length, len(tokens), row.forwards)
                self.stats.record_finish(usage)
                self._finish(batch, slot, row, Update(delta, finish, usage))
            elif delta:
                row.ticket.sink(Update(delta))

    def _finish(self, batch: RowBatch, slot: int, row: Row, update: Update) -> None:
        batch.release(slot)
        row.ticket.sink(update)
        with self.condition:
            self.condition.notify_all()


@dataclass
class EngineStats:
    """Counters and gauges for ``/metrics`` (written by the engine thread, read by the server)."""

    submitted: int = 0
    finished: int = 0
    queue_depth: int = 0
    active_rows: int = 0
    occupancy: float = 0.0
    steps: int = 0  # batch forwards
    row_forwards: int = 0
    completion_tokens: int = 0
    window: deque = field(default_factory=lambda: deque(maxlen=4096))  # (time, tokens) of finished requests

    def record_step(self, rows: int, active: int, capacity: int) -> None:
        self.steps += 1
        self.row_forwards += rows
        self.active_rows = active
        self.occupancy = active / capacity

    def record_finish(self, usage: Usage) -> None:
        self.finished += 1
        self.completion_tokens += usage.completion_tokens
        self.window.append((time.monotonic(), usage.completion_tokens))

    def tokens_per_second(self, horizon_s: float = 60.0) -> float:
        now = time.monotonic()
        recent = [n for t, n in list(self.window) if now - t <= horizon_s]
        return sum(recent) / horizon_s

    @property
    def forwards_per_token(self) -> float:
        return self.row_forwards / self.completion_tokens if self.completion_tokens else 0.0
