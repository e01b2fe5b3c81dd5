"""The continuous-batching engine: every answer equals the same request decoded alone."""

from __future__ import annotations

import threading
import time

import pytest

from unmask.decoding.config import DecodeConfig
from unmask.serve.engine import Engine, QueueFull, TextStream, Ticket, Update, settled_answer
from unmask.tasks.registry import get_task

SETTINGS = [
    {"policy": "threshold", "threshold": 0.9, "cache": "dual"},
    {"policy": "topk", "cache": "none"},
    {"policy": "factor", "factor": 1.0, "cache": "prefix", "credit": True},
    {"policy": "frechet", "margin": 0.25, "cache": "dual", "credit": True},
    {"policy": "threshold", "threshold": 0.7, "cache": "none", "temperature": 0.8, "seed": 5},
    {"policy": "threshold", "threshold": 0.8, "cache": "prefix", "block_length": 16},
]
MAX_TOKENS = [24, 40, 33, 17, 30, 20]


def prompts(n: int) -> list[str]:
    math = [e.prompt for e in get_task("math").examples("test", n, seed=1)]
    code = [e.prompt for e in get_task("code").examples("test", n, seed=1)]
    return [p for pair in zip(math, code, strict=True) for p in pair][:n]


def alone(lm, prompt: str, config: DecodeConfig, max_tokens: int, stop: tuple[str, ...] = ()) -> str:
    """The answer of ``generate`` for this request by itself, cut at max_tokens and the first stop string."""
    out = lm.generate([prompt], config)
    n = min(int(out.lengths[0]), max_tokens)
    text = lm.tokenizer.decode(out.tokens[0, :n].tolist(), skip_special_tokens=True).strip()
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(cuts)].rstrip() if cuts else text


def run_engine(lm, requests, max_batch=4, token_prompts=False, warm=None, admission_wait_s=0.0, spacing_s=0.0,
               before_start=None) -> dict[int, list[Update]]:
    """Submit ``(prompt, config, max_tokens, stop)`` requests (prompt: text, or token ids with
    ``token_prompts``) to a fresh engine, ``spacing_s`` apart; every update of each, keyed by request index.
    ``warm``: a ``(config, length)`` the engine warms before it starts (as on a GPU: every engine it builds is
    warmed); ``before_start(engine)``: called before the engine thread starts."""
    engine = Engine(lm, max_batch=max_batch, max_queue=len(requests), admission_wait_s=admission_wait_s)
    if warm is not None:
        engine.warm(*warm).warm = True  # on the CPU only the slots are built: warm every engine regardless
    if before_start is not None:
        before_start(engine)
    engine.start()
    results: dict[int, list[Update]] = {}
    done = threading.Event()
    lock = threading.Lock()

    def sink_for(key):
        updates = []

        def sink(update: Update) -> None:
            updates.append(update)
            if update.finish_reason is not None:
                with lock:
                    results[key] = updates
                    if len(results) == len(requests):
                        done.set()
        return sink

    try:
        for key, (prompt, config, max_tokens, stop) in enumerate(requests):
            ids = prompt if token_prompts else lm.encode_prompts([prompt])[0][0].tolist()
            engine.submit(Ticket(ids, config, max_tokens, sink_for(key), stop))
            time.sleep(spacing_s)
        assert done.wait(300), f"only {len(results)} of {len(requests)} answers finished"
    finally:
        engine.shutdown()
    return results


def test_mixed_requests_equal_alone(lm):
    """Mixed policies, caches, credit, block lengths, prompt lengths and max_tokens through 4 slots: rows
    join mid-answer of others and leave at once; each answer equals the request decoded alone."""
    texts = prompts(6)
    requests = []
    for i, settings in enumerate(SETTINGS):
        for j in (i, i + 1):
            max_tokens = MAX_TOKENS[(i + j) % len(MAX_TOKENS)]
            block = settings.get("block_length", 32)
            config = DecodeConfig.create(gen_length=-(-max_tokens // block) * block, **settings)
            requests.append((texts[j % len(texts)], config, max_tokens, ()))
    results = run_engine(lm, requests)
    assert sorted(results) == list(range(len(requests)))  # none lost
    for key, (prompt, config, max_tokens, _) in enumerate(requests):
        updates = results[key]
        assert sum(u.finish_reason is not None for u in updates) == 1
        assert updates[-1].finish_reason in ("stop", "length")
        text = "".join(u.text for u in updates)
        assert text == alone(lm, prompt, config, max_tokens), (key, config)
        usage = updates[-1].usage
        assert usage.prompt_tokens == len(lm.encode_prompts([prompt])[0][0])
        assert 1 <= usage.forwards <= config.gen_length and usage.completion_tokens <= max_tokens


def test_static_window_of_every_slot_equals_alone(lm):
    """The dual-cache window over a bucket of slots with static inputs (the body of the CUDA graph on a GPU):
    free slots and refreshing rows ride along without changing anyone's answer."""
    texts = prompts(4)
    requests = []
    for i, (settings, max_tokens) in enumerate(zip(SETTINGS[:4], (40, 24, 33, 64), strict=True)):
        config = DecodeConfig.create(**{**settings, "cache": "dual"}, gen_length=-(-max_tokens // 32) * 32)
        requests.append((texts[i], config, max_tokens, ()))
    results = run_engine(lm, requests, max_batch=3)
    for key, (prompt, config, max_tokens, _) in enumerate(requests):
        assert "".join(u.text for u in results[key]) == alone(lm, prompt, config, max_tokens), key


def test_stop_strings_and_length(lm):
    prompt = prompts(2)[1]  # a code prompt: a multi-line answer
    config = DecodeConfig.create(policy="threshold", threshold=0.9, cache="dual", gen_length=64)
    full = alone(lm, prompt, config, 64)
    assert "\n" in full
    requests = [(prompt, config, 64, ("\n",)), (prompt, config, 5, ())]
    results = run_engine(lm, requests)
    cut = "".join(u.text for u in results[0])
    assert cut == full[: full.index("\n")].rstrip() and results[0][-1].finish_reason == "stop"
    assert results[1][-1].finish_reason == "length" and results[1][-1].usage.completion_tokens == 5
    assert "".join(u.text for u in results[1]) == alone(lm, prompt, config, 5)


def test_queue_bound_and_cancel(lm):
    engine = Engine(lm, max_batch=1, max_queue=1)  # not started: nothing leaves the queue
    config = DecodeConfig.create(gen_length=32)
    updates: list[Update] = []
    first = Ticket([5, 6, 7], config, 32, updates.append)
    engine.submit(first)
    with pytest.raises(QueueFull, match="1 requests waiting"):
        engine.submit(Ticket([5, 6, 7], config, 32, updates.append))
    first.cancel()
    engine.start()
    deadline = time.monotonic() + 10
    while not updates and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.shutdown()
    assert [u.finish_reason for u in updates] == ["cancelled"]


def test_timeout(lm):
    engine = Engine(lm, max_batch=1, max_queue=4).start()
    updates: list[Update] = []
    config = DecodeConfig.create(policy="topk", gen_length=256)
    engine.submit(Ticket(lm.encode_prompts(["hello"])[0][0].tolist(), config, 256, updates.append, timeout_s=0.0))
    deadline = time.monotonic() + 10
    while not updates and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.shutdown()
    assert updates[-1].finish_reason == "timeout" and "timed out" in updates[-1].error


def test_settled_answer():
    assert settled_answer([4, 5, 0, 6], mask_id=0, stop_ids={9}) == ([4, 5], False)
    assert settled_answer([4, 9, 0, 6], mask_id=0, stop_ids={9}) == ([4, 9], True)
    assert settled_answer([4, 5, 6], mask_id=0, stop_ids={9}) == ([4, 5, 6], False)


def test_text_stream_only_grows_and_holds_back_stop_prefixes():
    vocab = {1: "The", 2: " answer", 3: " is", 4: " 4", 5: "2", 6: " END", 7: " ", 8: "\ufffd"}
    stream = TextStream(lambda ids: "".join(vocab[i] for i in ids), stop=(" EN",))
    sent = [stream.advance([1], False)[0], stream.advance([1, 2, 7], False)[0]]
    assert sent == ["The", " answer"]  # trailing whitespace held back
    assert stream.advance([1, 2, 3, 4, 8], False) == (" is 4", False)  # an incomplete character held back
    assert stream.advance([1, 2, 3, 4, 5, 6], True) == ("2", True)  # cut before the stop string
    assert stream.sent == "The answer is 42"


def test_shutdown_cancels_active_rows(lm):
    """Shutting down with a row mid-decode ends it with 'cancelled' (its slot freed in the engine's thread)."""
    engine = Engine(lm, max_batch=1, max_queue=4).start()
    updates: list[Update] = []
    config = DecodeConfig.create(policy="topk", gen_length=1024, block_length=1024)
    ticket = Ticket(lm.encode_prompts(["hello"])[0][0].tolist(), config, 1024, updates.append, trace=True)
    engine.submit(ticket)
    deadline = time.monotonic() + 60
    while not any(u.commits is not None for u in updates) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.active_rows == 1
    engine.shutdown()
    assert updates[-1].finish_reason == "cancelled" and updates[-1].error == "server shutting down"
    assert engine.active_rows == 0 and engine.thread is None


def test_a_warmed_engine_grows_with_rows_in_flight_and_answers_as_alone(lm):
    """A server warmed for short canvases: longer requests grow them while earlier rows are in the slots (the new
    engine is warmed before the rows move in); every answer equals the request decoded alone."""
    texts = prompts(6)
    texts = texts[:3] + [" ".join(texts[3:])] + texts[:1]  # the fourth is long: it grows the canvas
    config = DecodeConfig.create(policy="threshold", threshold=0.9, cache="dual", gen_length=32)
    lengths = [len(lm.encode_prompts([t])[0][0]) + 32 for t in texts]
    warm_length = max(lengths[:3])
    assert lengths[3] > -(-warm_length // 32) * 32  # admitted while the first three rows are in the slots
    requests = [(t, config, 32, ()) for t in texts]
    results = run_engine(lm, requests, max_batch=4, warm=(config, warm_length))
    for key, (prompt, _, max_tokens, _) in enumerate(requests):
        assert "".join(u.text for u in results[key]) == alone(lm, prompt, config, max_tokens), key


def test_warm_before_start_only(lm):
    engine = Engine(lm, max_batch=2)
    config = DecodeConfig.create(policy="topk", cache="dual", gen_length=32)
    batch = engine.warm(config, 40)
    assert engine.batches and batch.engine.T >= 40 and not batch.warm  # the CPU: no graphs to capture
    engine.start()
    try:
        with pytest.raises(RuntimeError, match="before the engine thread starts"):
            engine.warm(config, 40)
    finally:
        engine.shutdown()


def test_an_idle_engine_waits_for_a_burst_to_gather(lm):
    """With an admission wait, requests arriving within it start decoding together (one first step over all of
    them: their blocks' refreshes are shared), and their answers still equal each decoded alone; without it the
    first request starts at once."""
    config = DecodeConfig.create(policy="threshold", threshold=0.9, cache="dual", gen_length=32, block_length=32)
    texts = prompts(3)
    firsts = {}
    for wait in (0.0, 2.0):
        first_rows = []

        def record_first_step(engine, first_rows=first_rows):
            step = engine._step

            def recorded(batch):
                if not first_rows:
                    first_rows.append(batch.active)
                return step(batch)
            engine._step = recorded

        # the burst arrives over 0.6 s: within a 2 s wait, not at once
        results = run_engine(lm, [(text, config, 32, ()) for text in texts], admission_wait_s=wait, spacing_s=0.3,
                             before_start=record_first_step)
        firsts[wait] = first_rows[0]
        for key, text in enumerate(texts):
            assert "".join(u.text for u in results[key]) == alone(lm, text, config, 32), (wait, key)
    assert firsts[0.0] == 1 and firsts[2.0] == 3


@pytest.mark.parametrize("wait", [-0.1, 11.0, float("nan")])
def test_admission_wait_out_of_range_is_named(lm, wait):
    with pytest.raises(ValueError, match=r"admission_wait_s must be in \[0, 10\] seconds"):
        Engine(lm, admission_wait_s=wait)
