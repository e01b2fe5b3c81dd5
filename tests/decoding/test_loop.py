"""The block loop: batches equal one-by-one runs, early stop keeps the text, bad input fails clearly."""

import pytest
import torch
from llada_fixtures import write_checkpoint

import unmask
from unmask.decoding import CreditConfig, Factor, Frechet, Threshold, TopK, decode
from unmask.decoding.loop import FILLED_BY_EARLY_STOP
from unmask.models import load_model


@pytest.fixture
def eos_model(tmp_path, tiny_cfg, tiny_weights):
    """The tiny model with end-of-text made a frequent candidate, so rows finish early."""
    head = tiny_weights["model.transformer.ff_out.weight"]
    head[tiny_cfg["eos_token_id"]] = head[76] * 1.2
    return unmask.load(write_checkpoint(tmp_path / "eos", tiny_cfg, tiny_weights), dtype="float64")


@pytest.fixture
def mid_stop_model(tmp_path, tiny_cfg, tiny_weights):
    """The tiny model with end-of-text's logit 1.06x token 76's, so rows stop mid-answer, in different blocks,
    and some commit end-of-text before every token ahead of it is decoded."""
    head = tiny_weights["model.transformer.ff_out.weight"]
    head[tiny_cfg["eos_token_id"]] = head[76] * 1.06
    return unmask.load(write_checkpoint(tmp_path / "mid-stop", tiny_cfg, tiny_weights), dtype="float64")


CASES = [
    (TopK(4), "none", None), (Threshold(0.4), "none", None), (Factor(1.0), "prefix", None),
    (Frechet(0.25), "dual", None), (Threshold(0.4), "dual", CreditConfig()), (TopK(8), "prefix", CreditConfig()),
]


@pytest.mark.parametrize("policy,cache,credit", CASES, ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize("early_stop", [False, True])
def test_batch_equals_one_by_one(eos_model, policy, cache, credit, early_stop):
    lm = eos_model
    g = torch.Generator().manual_seed(5)
    rows = [torch.randint(0, 100, (n,), generator=g) for n in (9, 4, 7)]
    width = max(len(r) for r in rows)
    batch = torch.full((3, width), lm.tokenizer.pad_id)
    attn = torch.zeros((3, width), dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, width - len(r):] = r
        attn[i, width - len(r):] = 1
    kw = dict(mask_id=lm.mask_id, gen_length=32, block_length=8, cache=cache, credit=credit,
              early_stop=early_stop, stop_ids=lm.tokenizer.stop_ids)
    together = decode(lm.model, batch, policy, attention_mask=attn, **kw)
    for i, r in enumerate(rows):
        alone = decode(lm.model, r[None], policy, **kw)
        assert torch.equal(together.tokens[i], alone.tokens[0])
        assert torch.equal(together.commit_step[i], alone.commit_step[0])
        assert together.nfe_per_row[i] == alone.nfe_per_row[0] or not early_stop


@pytest.mark.parametrize("policy", [TopK(8), Threshold(0.5), Frechet(0.25)], ids=repr)
def test_early_stop_keeps_text_up_to_first_stop_and_saves_forwards(mid_stop_model, policy):
    """Rows stop mid-answer in different blocks; each keeps the no-early-stop text up to its first stop token,
    including rows whose stop token is committed while tokens ahead of it are still masked."""
    lm = mid_stop_model
    gen_length, block_length = 64, 8
    x = torch.randint(0, 100, (32, 6), generator=torch.Generator().manual_seed(0))[[0, 2, 13, 19]]
    kw = dict(mask_id=lm.mask_id, gen_length=gen_length, block_length=block_length, stop_ids=lm.tokenizer.stop_ids)
    full = decode(lm.model, x, policy, early_stop=False, **kw)
    fast = decode(lm.model, x, policy, early_stop=True, **kw)
    lengths = full.lengths.tolist()
    assert len(set(lengths)) == len(lengths), lengths  # the fixture is not degenerate: lengths all differ,
    assert all(block_length < n < gen_length for n in lengths), lengths  # every row stops mid-answer,
    assert len({(n - 1) // block_length for n in lengths}) == len(lengths), lengths  # each in its own block,
    early = [b for b, n in enumerate(lengths) if full.commit_step[b, n - 1] < full.commit_step[b, :n - 1].max()]
    assert early, "some row must commit its stop token before the tokens ahead of it"
    assert torch.equal(fast.lengths, full.lengths)
    stops = torch.tensor(lm.tokenizer.stop_ids)
    for b, n in enumerate(lengths):
        assert torch.isin(full.tokens[b, n - 1], stops) and not torch.isin(full.tokens[b, :n - 1], stops).any()
        assert torch.equal(fast.tokens[b, :n], full.tokens[b, :n])
        assert torch.equal(fast.commit_step[b, :n], full.commit_step[b, :n])
        filled = fast.commit_step[b] == FILLED_BY_EARLY_STOP
        assert filled[n:].any() and not filled[:n].any()
        assert (fast.tokens[b][filled] == lm.tokenizer.eos_id).all()
        if (n - 1) // block_length < gen_length // block_length - 1:  # stopped before the last block
            assert fast.nfe_per_row[b] < full.nfe_per_row[b]
    assert fast.nfe < full.nfe
    assert (fast.tokens != lm.mask_id).all()


def test_trace_records_commit_steps(tiny_ckpt, tiny_cfg):
    model = load_model(tiny_ckpt, dtype="float64")
    x = torch.randint(0, 100, (2, 5))
    out = decode(model, x, TopK(8), mask_id=tiny_cfg["mask_token_id"], gen_length=16, block_length=8,
                 early_stop=False)
    for b in range(2):  # one token per step, blocks in order
        assert sorted(out.commit_step[b].tolist()) == list(range(16))
        assert out.commit_step[b, :8].max() < out.commit_step[b, 8:].min()
    assert ((out.commit_confidence > 0) & (out.commit_confidence <= 1)).all()


def test_sampling_is_reproducible_with_seed(tiny_ckpt):
    lm = unmask.load(tiny_ckpt, dtype="float64")
    a = lm.generate(["hello world"], temperature=1.0, seed=3, gen_length=16, block_length=8, early_stop=False)
    b = lm.generate(["hello world"], temperature=1.0, seed=3, gen_length=16, block_length=8, early_stop=False)
    c = lm.generate(["hello world"], temperature=1.0, seed=4, gen_length=16, block_length=8, early_stop=False)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)


@pytest.mark.parametrize("scorer", ["margin", "entropy", "random"])
def test_other_scorers_decode_everything(tiny_ckpt, scorer):
    lm = unmask.load(tiny_ckpt, dtype="float64")
    out = lm.generate(["hello world", "a b"], policy="topk", scorer=scorer, gen_length=16, block_length=8,
                      early_stop=False, seed=0)
    assert (out.tokens != lm.mask_id).all() and out.nfe == 16


@pytest.mark.parametrize("kwargs,match", [
    ({"gen_length": 30, "block_length": 8}, "gen_length=30 must be a positive multiple of block_length=8"),
    ({"policy": "threshold", "threshold": 1.2}, r"threshold must be in \(0, 1\], got 1.2"),
    ({"policy": "threshold", "threshold": 0.0}, r"threshold must be in \(0, 1\], got 0.0"),
    ({"policy": "nope"}, "unknown policy 'nope'"),
    ({"cache": "full"}, "unknown cache mode 'full'"),
    ({"steps": 7, "gen_length": 16, "block_length": 8}, "steps=7 must be a positive multiple"),
    ({"scorer": "vibes"}, "unknown scorer 'vibes'"),
    ({"gen_length": 1024, "block_length": 32}, "exceeds the model's max_sequence_length 512"),
])
def test_bad_generate_arguments(tiny_ckpt, kwargs, match):
    lm = unmask.load(tiny_ckpt, dtype="float32")
    with pytest.raises(ValueError, match=match):
        lm.generate(["hello world"], **kwargs)


@pytest.mark.parametrize("prompts", [[], [""], ["  "], "", ["ok", ""]])
def test_empty_prompts_rejected(tiny_ckpt, prompts):
    lm = unmask.load(tiny_ckpt, dtype="float32")
    with pytest.raises(ValueError, match="empty"):
        lm.generate(prompts)


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_rows_queued_through_one_slot_with_credit_equal_alone(mid_stop_model, cache):
    """With one slot and credit, rows queue through one slot after rows that stopped early mid-block (no block
    start reset their credit): every row still decodes as it does alone, fused confidences included."""
    lm = mid_stop_model
    x = torch.randint(0, 100, (32, 6), generator=torch.Generator().manual_seed(0))[[0, 2, 13, 19]]
    kw = dict(mask_id=lm.mask_id, gen_length=64, block_length=8, stop_ids=lm.tokenizer.stop_ids, early_stop=True,
              cache=cache, credit=CreditConfig(alpha=3.0))
    lm.model.__dict__.pop("_decode_engines", None)
    queued = decode(lm.model, x, Threshold(0.5), slots=1, **kw)
    assert (queued.lengths[:-1] < 64).any(), queued.lengths  # a row stops early: the next takes its stale credit
    for b in range(len(x)):
        lm.model.__dict__.pop("_decode_engines", None)  # alone = on a fresh engine (the same one would carry state)
        alone = decode(lm.model, x[b:b + 1], Threshold(0.5), **kw)
        assert torch.equal(queued.tokens[b], alone.tokens[0]), b
        assert torch.equal(queued.commit_step[b], alone.commit_step[0]), b
        assert torch.equal(queued.commit_confidence[b], alone.commit_confidence[0]), b  # the fused confidence


def test_progress_counts_only_blocks_a_row_decoded(mid_stop_model):
    """on_block reports blocks as rows finish them; a row that stops early never reports the block it stopped in
    (nor the ones after it) before the closing call."""
    lm = mid_stop_model
    x = torch.randint(0, 100, (32, 6), generator=torch.Generator().manual_seed(0))[[0, 2, 13, 19]]
    kw = dict(mask_id=lm.mask_id, gen_length=64, block_length=8, stop_ids=lm.tokenizer.stop_ids, early_stop=True)
    for row in x:
        seen: list[tuple[int, int]] = []
        out = decode(lm.model, row[None], Threshold(0.5), on_block=lambda d, t, seen=seen: seen.append((d, t)), **kw)
        stopped_in = (int(out.lengths[0]) - 1) // 8  # the block holding the stop token
        assert seen[-1] == (8, 8)
        assert [d for d, _ in seen[:-1]] == list(range(1, stopped_in + 1)), (seen, stopped_in)


def test_fixed_schedule_without_early_stop_reads_nothing_back_per_step(mid_stop_model, monkeypatch):
    """A fixed schedule without early stop: the host knows every row's block and end, so steps are queued without
    reading the device (only the finished rows' answers are read)."""
    from unmask.decoding.engine import DecodeEngine, EngineOptions, RowRequest, run_queue
    from unmask.decoding.scorers import Scorer

    lm = mid_stop_model
    opts = EngineOptions(2, 6 + 32, 32, 8, False, lm.mask_id, "dual", 0.0, False, None, (), False)
    engine = DecodeEngine(lm.model, TopK(4), Scorer(), None, opts)
    rows = torch.randint(0, 100, (3, 6), generator=torch.Generator().manual_seed(0))
    reads = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append(t.shape) or original(t))
    results = []
    steps, _ = run_queue(engine, [RowRequest(r, 32, key=i) for i, r in enumerate(rows)], results.append)
    monkeypatch.undo()
    assert steps == 2 * 16 and len(results) == 3
    assert len(reads) == 2 * 2  # two retirements (2 rows, then 1): nfe and finished each
    assert all(r.nfe == 16 for r in results)


@pytest.mark.parametrize("mask,match", [
    (torch.zeros(2, 4, dtype=torch.long), r"attention_mask of row\(s\) \[0, 1\] is all zero"),
    (torch.tensor([[1, 1, 1, 1], [0, 2, 1, 1]]), r"attention_mask must hold 0 \(padding\) and 1 \(token\)"),
    (torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1]]), r"attention_mask of row\(s\) \[1\] is not left padding"),
    (torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]), r"attention_mask of row\(s\) \[0\] is not left padding"),
])
def test_bad_attention_masks_are_refused(tiny_ckpt, mask, match):
    lm = unmask.load(tiny_ckpt, dtype="float32")
    with pytest.raises(ValueError, match=match):
        lm.generate(torch.randint(0, 90, (2, 4)), attention_mask=mask, gen_length=8, block_length=8)
