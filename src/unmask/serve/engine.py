"""``unmask serve``'s scheduler over the one decode engine (``unmask.decoding.engine.DecodeEngine``).

Requests that share a decode signature (policy and its knob, credit, cache mode, block length, scorer,
temperature) decode in one ``SlotBatch``: a ``DecodeEngine`` of ``max_batch`` slots, the engine that also
runs ``generate`` and ``unmask eval``. Each row is at its own block, step, cache columns and credit; all
step kinds (window, batched refresh, full, commit) are static and, on CUDA, replayed as CUDA graphs.
Requests with other settings go to another ``SlotBatch`` and the batches are stepped in turn.

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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from unmask.api import DiffusionLM
from unmask.decoding.config import DecodeConfig
from unmask.decoding.engine import DecodeEngine, EngineOptions, RowRequest, StepCommits
from unmask.decoding.loop import resolve_compile

MAX_ADMISSION_WAIT_S = 10.0


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
    commits: StepCommits | None = None  # a traced request: what this step committed (the playground's canvas)


@dataclass
class Ticket:
    """A request as the engine sees it. ``sink`` receives ``Update``s on the engine's thread."""

    prompt_ids: list[int]
    config: DecodeConfig  # gen_length = max_tokens rounded up to a multiple of block_length
    max_tokens: int
    sink: Callable[[Update], None]
    stop: tuple[str, ...] = ()
    timeout_s: float | None = None
    trace: bool = False  # also report every step's commits (``Update.commits``)
    id: int = field(default_factory=itertools.count().__next__)
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False

    def cancel(self) -> None:
        """Drop the request (client gone): its row leaves before the next step."""
        self.cancelled = True


def batch_signature(config: DecodeConfig) -> tuple:
    """Requests decode in one ``SlotBatch`` iff these agree (the policy's repr carries its knob)."""
    return (repr(config.build_policy()), repr(config.credit_config), config.cache, config.block_length,
            config.scorer, config.temperature, config.logits_eos_inf, config.confidence_eos_eot_inf, config.compile,
            config.confidence_dtype, config.top_p, config.top_k, config.confidence_from)


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
    """Host-side state of a request in a slot."""

    ticket: Ticket
    prompt_length: int
    gen_length: int
    stream: TextStream

    @property
    def length(self) -> int:
        return self.prompt_length + self.gen_length


class SlotBatch:
    """The slots of one decode signature: a ``DecodeEngine`` and the requests in it (see the module docstring).

    The engine's canvas capacity grows (doubling, up to the model's limit) when a longer request arrives:
    the rows in flight move to the larger engine with their caches and state.
    """

    def __init__(self, lm: DiffusionLM, config: DecodeConfig, slots: int, length: int, warm: bool = False) -> None:
        self.lm, self.model = lm, lm.model
        self.signature = batch_signature(config)
        self.config, self.block_length, self.cache = config, config.block_length, config.cache
        tokenizer = lm.tokenizer
        self.scorer = config.build_scorer(tokenizer.eot_id)
        self.policy = config.build_policy()
        self.mask_id, self.slots = lm.mask_id, slots
        self.rows: dict[int, Row] = {}  # slot -> row
        mode = resolve_compile(lm.compile if config.compile is None else config.compile, self.model.device)
        self.graphs = mode != "off" and self.model.device.type == "cuda"
        self.fused = mode == "fused"
        self.warm = warm and self.graphs  # capture every bucket's step when an engine is built (CUDA graphs only)
        self.engine: DecodeEngine | None = None
        self.grow(length)

    @property
    def active(self) -> int:
        return len(self.rows)

    def free_slot(self) -> bool:
        return self.engine.free_slots() > 0

    def _options(self, capacity: int) -> EngineOptions:
        c, tokenizer = self.config, self.lm.tokenizer
        return EngineOptions(self.slots, capacity, capacity, c.block_length, True, self.mask_id, c.cache, 0.0,
                             c.logits_eos_inf, tokenizer.eos_id, tuple(tokenizer.stop_ids), True)

    def grow(self, length: int) -> None:
        """Room for canvases of ``length`` columns (answers up to the capacity)."""
        if self.engine is not None and length <= self.engine.T:
            return
        old = self.engine.T if self.engine is not None else 0
        limit = self.model.config.max_sequence_length
        capacity = min(max(length, 2 * old, 64), max(limit, length))
        capacity = -(-capacity // self.block_length) * self.block_length
        self.model.compile_kernels(self.fused)
        engine = DecodeEngine(self.model, self.policy, self.scorer, self.config.credit_config,
                              self._options(capacity), graphs=self.graphs)
        if self.warm:  # before the rows in flight move in: warm() needs an idle engine
            engine.warm()
        if self.engine is not None:
            engine.take_rows_from(self.engine)
        self.engine = engine

    def admit(self, ticket: Ticket) -> None:
        P, G = len(ticket.prompt_ids), ticket.config.gen_length
        self.grow(P + G)
        generator = None
        if self.scorer.random:
            generator = torch.Generator(device=self.model.device)
            if ticket.config.seed is not None:
                generator.manual_seed(ticket.config.seed)
            else:
                generator.seed()
        prompt = torch.tensor(ticket.prompt_ids, dtype=torch.long)
        slot = self.engine.admit(RowRequest(prompt, G, key=ticket.id, generator=generator))
        tokenizer = self.lm.tokenizer
        stream = TextStream(lambda ids: tokenizer.decode(ids, skip_special_tokens=True), ticket.stop)
        self.rows[slot] = Row(ticket, P, G, stream)

    def release(self, slots: list[int]) -> list[int]:
        """Take ``slots`` out of the engine; the forwards each row took."""
        results = self.engine.retire(slots)
        for slot in slots:
            self.rows.pop(slot)
        return [r.nfe for r in results]

    def step(self) -> tuple[list[tuple[int, Row]], set[int]]:
        """One engine step of every row: (the rows it stepped, the slots whose rows the engine finished)."""
        done, stepped = self.engine.step()
        return [(slot, self.rows[slot]) for slot in stepped], set(done)

    def compact(self) -> None:
        moves = self.engine.compact()
        if moves:
            self.rows = {moves.get(slot, slot): row for slot, row in self.rows.items()}


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
    """The decode thread: a bounded queue of ``Ticket``s and the ``SlotBatch``es that decode them.

    ``max_batch``: rows decoding at once (over all batches); ``max_queue``: waiting requests beyond
    which ``submit`` raises ``QueueFull``; ``max_batches``: decode signatures kept allocated at once;
    ``admission_wait_s``: when nothing is decoding, how long the first waiting request may wait for others
    (until ``max_batch`` are waiting) so that a burst starts together: rows that start their blocks at the
    same step share each block's refresh forward (vLLM's scheduler delay; 0: admit at once).
    """

    def __init__(self, lm: DiffusionLM, max_batch: int = 8, max_queue: int = 64, max_batches: int = 4,
                 admission_wait_s: float = 0.0) -> None:
        if max_batch < 1 or max_queue < 0 or max_batches < 1:
            raise ValueError(f"max_batch ({max_batch}) and max_batches ({max_batches}) must be >= 1, "
                             f"max_queue ({max_queue}) >= 0")
        if not 0 <= admission_wait_s <= MAX_ADMISSION_WAIT_S:
            raise ValueError(f"admission_wait_s must be in [0, {MAX_ADMISSION_WAIT_S:g}] seconds, got "
                             f"{admission_wait_s!r}")
        self.lm, self.max_batch, self.max_queue, self.max_batches = lm, max_batch, max_queue, max_batches
        self.admission_wait_s = admission_wait_s
        self.waiting: deque[Ticket] = deque()
        self.batches: dict[tuple, SlotBatch] = {}
        self.condition = threading.Condition()
        self.running = False
        self.thread: threading.Thread | None = None
        self.stats = EngineStats()
        self.stop_ids = set(lm.tokenizer.stop_ids)

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
                    if self.running and self.admission_wait_s and self.waiting and not self.active_rows:
                        self._wait_for_burst()
                    if not self.running:
                        break
                    self._admit()
                for batch in list(self.batches.values()):
                    if batch.active:
                        self._step(batch)
            for batch in self.batches.values():  # shutting down: nobody waits forever
                for slot, row in list(batch.rows.items()):
                    self._finish(batch, slot, row, Update(finish_reason="cancelled", error="server shutting down"))
        for ticket in self.waiting:
            ticket.sink(Update(finish_reason="cancelled", error="server shutting down"))

    def _wait_for_burst(self) -> None:
        """Idle, with requests waiting: wait (holding no rows) until ``max_batch`` are waiting or the first has
        waited ``admission_wait_s``."""
        deadline = self.waiting[0].submitted + self.admission_wait_s
        while self.running and len(self.waiting) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.condition.wait(remaining)

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
            if batch is None or self.active_rows >= self.max_batch or not batch.free_slot():
                kept.append(ticket)
                continue
            try:
                batch.admit(ticket)
            except Exception as err:  # e.g. out of memory growing the buffers
                ticket.sink(Update(finish_reason="error", error=f"{type(err).__name__}: {err}"))
        self.waiting = kept
        self.stats.queue_depth = len(kept)

    def warm(self, config: DecodeConfig, length: int) -> SlotBatch:
        """Build the slots of ``config``'s signature for canvases of ``length`` columns and capture every step
        kind of every bucket now (as vLLM captures its graphs at start-up), so that no request waits for a capture;
        engines built later for that signature (a longer request grows the canvas) are captured likewise. Call
        before ``start``. Without CUDA graphs only the slots are built."""
        if self.thread is not None:
            raise RuntimeError("warm() runs before the engine thread starts")
        key = batch_signature(config)
        with torch.inference_mode():
            batch = self.batches[key] = SlotBatch(self.lm, config, self.max_batch, length, warm=True)
        return batch

    def _batch_for(self, ticket: Ticket) -> SlotBatch | None:
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
        batch = SlotBatch(self.lm, ticket.config, self.max_batch, length)
        self.batches[key] = batch
        return batch

    def _step(self, batch: SlotBatch) -> None:
        now = time.monotonic()
        for slot, row in list(batch.rows.items()):  # cancelled or timed out rows leave before the step
            if row.ticket.cancelled:
                self._finish(batch, slot, row, Update(finish_reason="cancelled"))
            elif row.ticket.timeout_s is not None and now - row.ticket.submitted > row.ticket.timeout_s:
                self._finish(batch, slot, row, Update(
                    finish_reason="timeout", error=f"request timed out after {row.ticket.timeout_s:g} s"))
        if not batch.active:
            batch.compact()
            return
        try:
            stepped, done = batch.step()
        except Exception as err:  # a failing step fails its rows, never the server
            for slot, row in list(batch.rows.items()):
                self._finish(batch, slot, row, Update(finish_reason="error", error=f"{type(err).__name__}: {err}"))
            self.batches.pop(batch.signature, None)
            return
        self.stats.record_step(len(stepped), self.active_rows, self.max_batch)
        traced = [slot for slot, row in stepped if row.ticket.trace]
        for slot, commits in zip(traced, batch.engine.step_commits(traced), strict=True):
            batch.rows[slot].ticket.sink(Update(commits=commits))
        canvases = batch.engine.canvases([slot for slot, _ in stepped])  # one copy
        for (slot, row), gen in zip(stepped, canvases, strict=True):
            final = None if slot in done else batch.engine.final_length(slot)
            if final is not None:  # a policy that revises tokens: only the blocks it has left are settled
                gen = gen[:final]
            tokens, stopped = settled_answer(gen, batch.mask_id, self.stop_ids)
            max_tokens = row.ticket.max_tokens
            finish = None
            if stopped and len(tokens) <= max_tokens:
                finish = "stop"
            elif len(tokens) >= max_tokens:
                tokens, finish = tokens[:max_tokens], "length"
            elif slot in done:  # every block decoded
                finish = "length"
            delta, hit = row.stream.advance(tokens, final=finish is not None)
            if hit:
                finish = "stop"
            if finish is not None:
                self._finish(batch, slot, row, Update(delta, finish), completion_tokens=len(tokens))
            elif delta:
                row.ticket.sink(Update(delta))
        batch.compact()

    def _finish(self, batch: SlotBatch, slot: int, row: Row, update: Update,
                completion_tokens: int | None = None) -> None:
        """Take the row out of its slot and send its last update (with usage when it completed)."""
        (forwards,) = batch.release([slot])
        if completion_tokens is not None:
            update.usage = Usage(row.prompt_length, completion_tokens, forwards)
            self.stats.record_finish(update.usage)
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
