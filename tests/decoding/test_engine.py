"""The decode engine: continuous batching over fewer slots than rows gives every row exactly what it gets
decoded alone (tokens, commit steps, forwards), rows leave at once and slots are compacted."""

import pytest
import torch
from llada_fixtures import write_checkpoint

import unmask
from unmask.decoding import CreditConfig, Factor, Frechet, Threshold, TopK, decode
from unmask.decoding.engine import DecodeEngine, EngineOptions, RowRequest, run_queue, slot_bucket


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """The tiny model with end-of-text a frequent candidate, so that rows finish early and at different steps."""
    from llada_fixtures import random_weights, tiny_config

    torch.set_num_threads(1)
    cfg = tiny_config()
    weights = random_weights(cfg)
    head = weights["model.transformer.ff_out.weight"]
    head[cfg["eos_token_id"]] = head[76] * 1.2
    return unmask.load(write_checkpoint(tmp_path_factory.mktemp("engine") / "m", cfg, weights), dtype="float64")


def ragged(n: int = 5, seed: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 100, (int(k),), generator=g) for k in torch.randint(3, 10, (n,), generator=g)]


def left_padded(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    batch = torch.full((len(rows), width), pad)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, width - len(r):] = r
        attn[i, width - len(r):] = 1
    return batch, attn


CASES = [(TopK(4), "none", None), (Threshold(0.4), "none", CreditConfig()), (Factor(1.0), "prefix", None),
         (Frechet(0.25), "dual", None), (Threshold(0.4), "dual", CreditConfig()), (TopK(8), "prefix", CreditConfig()),
         (Threshold(0.3), "prefix", CreditConfig(adaptive=True))]


@pytest.mark.parametrize("policy,cache,credit", CASES, ids=lambda v: repr(v)[:24])
@pytest.mark.parametrize("early_stop", [False, True])
def test_continuous_batching_equals_each_row_alone(lm, policy, cache, credit, early_stop):
    rows = ragged()
    batch, attn = left_padded(rows, lm.tokenizer.pad_id)
    kw = dict(mask_id=lm.mask_id, gen_length=32, block_length=8, cache=cache, credit=credit, early_stop=early_stop,
              stop_ids=lm.tokenizer.stop_ids)
    finished = []
    out = decode(lm.model, batch, policy, attention_mask=attn, slots=2, on_row=lambda i, r: finished.append(i), **kw)
    assert sorted(finished) == list(range(len(rows)))
    for i, r in enumerate(rows):
        alone = decode(lm.model, r[None], policy, **kw)
        assert torch.equal(out.tokens[i], alone.tokens[0])
        assert torch.equal(out.commit_step[i], alone.commit_step[0])
        assert out.nfe_per_row[i] == alone.nfe_per_row[0] == alone.nfe
        assert torch.equal(out.sequences[i, :batch.shape[1]], batch[i])
    assert out.nfe < int(out.nfe_per_row.sum())  # two rows per step


def test_rows_leave_at_once_and_slots_are_compacted(lm):
    """Rows that need few forwards leave early; the step then runs over a smaller bucket of slots."""
    rows = ragged(7, seed=3)
    opts = EngineOptions(4, max(len(r) for r in rows) + 32, 32, 8, True, lm.mask_id, "dual", 0.0, False, None,
                         tuple(lm.tokenizer.stop_ids), True)
    engine = DecodeEngine(lm.model, Threshold(0.4), unmask.decoding.Scorer(), None, opts)
    buckets, order = [], []

    def on_step(e, stepped):
        buckets.append(e.hi)
        assert all(e.slots[i] is not None for i in stepped)
        assert sorted(stepped) == list(range(len(stepped)))  # active rows fill the low slots

    steps, _ = run_queue(engine, [RowRequest(r, 32, key=i) for i, r in enumerate(rows)],
                         lambda result: order.append(result.key), on_step)
    assert sorted(order) == list(range(7)) and order != list(range(7))  # finished out of order
    assert max(buckets) == 4 and min(buckets) < 4  # the drain ran over fewer slots
    stats = engine.stats
    assert stats.useful_row_steps <= stats.computed_row_steps and 0 < stats.slot_efficiency <= 1
    assert stats.steps == steps


def test_slot_buckets():
    assert [slot_bucket(n, 256) for n in (1, 2, 3, 5, 8, 9, 17, 64, 65, 97, 256)] == \
        [1, 2, 4, 8, 8, 16, 24, 64, 96, 128, 256]
    assert slot_bucket(5, 6) == 6


def test_generate_with_slots_equals_generate(lm):
    prompts = ["hello world", "the answer is a", "w1 w2 w3", "b c"]
    kw = dict(policy="threshold", threshold=0.4, cache="dual", gen_length=32, block_length=8)
    together = lm.generate(prompts, **kw)
    streamed = lm.generate(prompts, slots=2, **kw)
    assert streamed.texts == together.texts and torch.equal(streamed.nfe_per_row, together.nfe_per_row)
    with pytest.raises(ValueError, match="slots must be a positive integer"):
        lm.generate(prompts, slots=0, **kw)


@pytest.mark.parametrize("early_stop", [False, True])
def test_every_row_gets_a_share_of_the_wall_time(lm, early_stop):
    """A row's seconds (eval's tokens/s) are its share of the steps' time, also for a fixed schedule without early
    stop, whose steps are queued without a read-back."""
    rows = ragged(4, seed=2)
    opts = EngineOptions(2, max(len(r) for r in rows) + 16, 16, 8, True, lm.mask_id, "dual", 0.0, False, None,
                         tuple(lm.tokenizer.stop_ids), early_stop)
    engine = DecodeEngine(lm.model, TopK(4), unmask.decoding.Scorer(), None, opts)
    assert engine.predictable == (not early_stop)
    results = []
    run_queue(engine, [RowRequest(r, 16, key=i) for i, r in enumerate(rows)], results.append)
    assert len(results) == 4 and all(r.seconds > 0 for r in results)


@pytest.mark.parametrize("policy,cache,credit", CASES[:5], ids=lambda v: repr(v)[:24])
def test_on_step_reports_every_commit_once(lm, policy, cache, credit):
    """``on_step`` sees each row's commits as they happen: every committed position exactly once, at the forward
    that committed it (``commit_step``), with the final token; the last forward reported is the row's NFE."""
    rows = ragged(4, seed=7)
    batch, attn = left_padded(rows, lm.tokenizer.pad_id)
    seen: dict[int, list] = {i: [] for i in range(len(rows))}
    out = decode(lm.model, batch, policy, attention_mask=attn, mask_id=lm.mask_id, gen_length=32, block_length=8,
                 cache=cache, credit=credit, stop_ids=lm.tokenizer.stop_ids, slots=2,
                 on_step=lambda c: seen[c.key].append(c))
    for i in range(len(rows)):
        forwards = [c.forward for c in seen[i]]
        assert forwards == list(range(1, len(forwards) + 1)) and forwards[-1] == int(out.nfe_per_row[i])
        positions = [p for c in seen[i] for p in c.positions]
        assert len(positions) == len(set(positions))
        committed = (out.commit_step[i] >= 0).nonzero().flatten().tolist()
        assert sorted(positions) == committed
        for c in seen[i]:
            assert len(c.positions) == len(c.tokens) == len(c.confidences)
            for p, t, conf in zip(c.positions, c.tokens, c.confidences, strict=True):
                assert int(out.commit_step[i, p]) == c.forward - 1 and int(out.tokens[i, p]) == t
                assert 0.0 <= conf <= 1.0


def test_a_failing_on_step_leaves_the_engine_clean(lm):
    """An exception from a callback stops the decode and frees every slot: the next decode (same cached engine)
    gives what it gives on a fresh one."""
    rows = ragged(3, seed=9)
    batch, attn = left_padded(rows, lm.tokenizer.pad_id)
    kw = dict(attention_mask=attn, mask_id=lm.mask_id, gen_length=32, block_length=8, cache="dual",
              stop_ids=lm.tokenizer.stop_ids, slots=2)
    before = decode(lm.model, batch, Threshold(0.4), **kw)
    calls = []

    def fail(commits):
        calls.append(commits)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decode(lm.model, batch, Threshold(0.4), on_step=fail, **kw)
    after = decode(lm.model, batch, Threshold(0.4), **kw)
    assert torch.equal(after.tokens, before.tokens) and torch.equal(after.nfe_per_row, before.nfe_per_row)
    with pytest.raises(ValueError, match="on_step must be a function"):
        lm.generate("hi", on_step=3)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual", "partial(budget=4)", "prompt_stale(every=2)"])
def test_a_warmed_engine_decodes_what_a_cold_one_does(lm, cache):
    """``warm`` runs every step kind of every bucket on the idle engine (a server's start-up capture): the
    forwards write only free slots' buffers, so every row's tokens, commit steps and forwards are unchanged."""
    rows = ragged(6, seed=11)
    opts = EngineOptions(4, max(len(r) for r in rows) + 32, 32, 8, True, lm.mask_id, cache, 0.0, False, None,
                         tuple(lm.tokenizer.stop_ids), True)

    def decode_all(warm: bool) -> tuple[dict, int]:
        engine = DecodeEngine(lm.model, Threshold(0.4), unmask.decoding.Scorer(), CreditConfig(), opts)
        kinds = engine.warm() if warm else 0
        results = {}
        run_queue(engine, [RowRequest(r, 32, key=i) for i, r in enumerate(rows)],
                  lambda result: results.__setitem__(result.key, result))
        return results, kinds

    cold, _ = decode_all(False)
    warmed, kinds = decode_all(True)
    window = {"none": 0, "prefix": 4, "dual": 1, "partial(budget=4)": 1, "prompt_stale(every=2)": 1}[cache]
    refresh = {"none": 0, "prompt_stale(every=2)": 2}.get(cache, 1)
    assert kinds == 3 * (max(window, 1) if cache != "none" else 1) + 3 * refresh  # buckets 1, 2, 4
    for key, result in cold.items():
        assert torch.equal(warmed[key].tokens, result.tokens)
        assert torch.equal(warmed[key].commit_step, result.commit_step)
        assert warmed[key].nfe == result.nfe


def test_warm_needs_an_idle_engine(lm):
    opts = EngineOptions(2, 40, 32, 8, True, lm.mask_id, "dual", 0.0, False, None, (), True)
    engine = DecodeEngine(lm.model, TopK(4), unmask.decoding.Scorer(), None, opts)
    assert engine.step_kinds() == [("window", 1, 8), ("window", 2, 8), ("refresh", 2), ("refresh", 1)]
    engine.admit(RowRequest(torch.tensor([5, 6, 7]), 32))
    with pytest.raises(RuntimeError, match="idle engine"):
        engine.warm()
