"""Registered cache modes: parsing and errors; ``prompt_stale(every=N)`` (answer-only refreshes against the
cached prompt) and ``partial(budget=K)`` (no block refresh; the block plus K changed/stalest columns every step)
token for token against restatements, through ragged batches, continuous batching and the spec."""

import math
import re

import pytest
import torch
from reference import ref_fastdllm_generate, ref_partial_generate, ref_prompt_stale_generate

import unmask
from unmask.decoding import Threshold, decode
from unmask.eval.spec import parse_spec
from unmask.models import load_model
from unmask.models.cache import CACHE_KINDS, canonical_cache, parse_cache_mode


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from llada_fixtures import random_weights, tiny_config, write_checkpoint

    torch.set_num_threads(1)
    cfg = tiny_config()
    return load_model(write_checkpoint(tmp_path_factory.mktemp("caches") / "m", cfg, random_weights(cfg)),
                      dtype="float64")


def prompts(n=2, length=6, seed=4):
    return torch.randint(0, 100, (n, length), generator=torch.Generator().manual_seed(seed))


def test_registry_and_labels():
    assert {"none", "prefix", "dual", "prompt_stale", "partial"} <= set(CACHE_KINDS)
    assert canonical_cache("partial") == "partial(budget=16)"
    assert canonical_cache("partial(budget=64)") == "partial(budget=64)"
    # a knob added later is shown only away from its default, so earlier labels (records, sweeps) stay valid
    assert canonical_cache("partial(every=inf)") == "partial(budget=16)"
    assert canonical_cache("partial(every=2, budget=8)") == "partial(budget=8,every=2)"
    assert canonical_cache("partial(reuse=0)") == "partial(budget=16)"
    assert canonical_cache("partial(reuse=1,budget=4)") == "partial(budget=4,reuse=1)"
    assert canonical_cache("prompt_stale") == "prompt_stale(every=4)"
    assert canonical_cache(" prompt_stale(every=inf) ") == "prompt_stale(every=inf)"
    assert parse_cache_mode("prompt_stale(every=2)").knob("every") == 2 and parse_cache_mode("dual").window == "dual"
    label = "threshold:0.9+credit@prompt_stale(every=2)"
    assert parse_spec(label).label == label


@pytest.mark.parametrize("text,message", [
    ("full", "unknown cache mode 'full'"),
    ("prompt_stale(every=0)", "every must be an integer >= 1 or inf, got '0'"),
    ("prompt_stale(every=2.5)", "every must be an integer >= 1 or inf, got '2.5'"),
    ("prompt_stale(often=2)", "bad option 'often=2' (its options: every)"),
    ("dual(every=2)", "cache mode 'dual': bad option 'every=2' (its options: none)"),
    ("partial(budget=-1)", "budget must be an integer in [0, 4096], got '-1'"),
    ("partial(budget=1.5)", "budget must be an integer in [0, 4096], got '1.5'"),
    ("partial(reuse=2)", "reuse must be 0 or 1, got '2'"),
])
def test_bad_modes_name_the_value(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_cache_mode(text)
    with pytest.raises(ValueError, match="cache mode"):
        unmask.DecodeConfig.create(policy="threshold", cache=text)


@pytest.mark.parametrize("every", [2, 3, math.inf])
@pytest.mark.parametrize("tau", [0.3, 0.6])
def test_prompt_stale_equals_its_restatement(model, tiny_cfg, tiny_weights, every, tau):
    mask_id = tiny_cfg["mask_token_id"]
    label = "inf" if every == math.inf else every
    stale = 0
    for row in prompts(3):
        x = row[None]
        ref, ref_nfe = ref_prompt_stale_generate(tiny_weights, tiny_cfg, x, 32, 8, mask_id, tau, every)
        out = decode(model, x, Threshold(tau), mask_id=mask_id, gen_length=32, block_length=8,
                     cache=f"prompt_stale(every={label})", early_stop=False)
        assert torch.equal(out.sequences, ref) and out.nfe == ref_nfe
        dual, dual_nfe = ref_fastdllm_generate(tiny_weights, tiny_cfg, x, 32, 8, mask_id, threshold=tau, cache="dual")
        stale += not torch.equal(dual, ref) or dual_nfe != ref_nfe
    assert stale, "the stale prompt never changed a decode: the fixture proves nothing"


def test_every_block_is_dual(model, tiny_cfg):
    kw = dict(mask_id=tiny_cfg["mask_token_id"], gen_length=32, block_length=8, early_stop=False)
    a = decode(model, prompts(), Threshold(0.4), cache="prompt_stale(every=1)", **kw)
    b = decode(model, prompts(), Threshold(0.4), cache="dual", **kw)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.commit_step, b.commit_step)


def test_generate_and_server_signature_take_the_spec(tiny_ckpt):
    lm = unmask.load(tiny_ckpt, dtype="float64")
    out = lm.generate(["hello world"], policy="threshold", threshold=0.5, cache="prompt_stale(every=2)",
                      gen_length=32, block_length=8)
    assert out.config.cache == "prompt_stale(every=2)" and out.nfe <= 32


@pytest.mark.parametrize("budget,every", [(1, math.inf), (5, math.inf), (64, math.inf), (5, 2), (1, 3)])
@pytest.mark.parametrize("tau", [0.3, 0.6])
def test_partial_equals_its_restatement(model, tiny_cfg, tiny_weights, budget, every, tau):
    """``partial(budget=K)`` and, with ``every=N``, a full refresh at blocks 0, N, 2N, ... (dLLM-Cache's interval)."""
    mask_id = tiny_cfg["mask_token_id"]
    differs = 0
    cache = f"partial(budget={budget})" if every == math.inf else f"partial(budget={budget},every={every})"
    for row in prompts(3):
        x = row[None]
        ref, ref_nfe = ref_partial_generate(tiny_weights, tiny_cfg, x, 32, 8, mask_id, tau, budget, every)
        out = decode(model, x, Threshold(tau), mask_id=mask_id, gen_length=32, block_length=8,
                     cache=cache, early_stop=False)
        assert torch.equal(out.sequences, ref) and out.nfe == ref_nfe
        dual, dual_nfe = ref_fastdllm_generate(tiny_weights, tiny_cfg, x, 32, 8, mask_id, threshold=tau, cache="dual")
        differs += not torch.equal(dual, ref) or dual_nfe != ref_nfe
    if budget < 64:  # a budget past the canvas recomputes everything every step: no cache at all
        assert differs, "the partial refresh never changed a decode: the fixture proves nothing"


@pytest.mark.parametrize("budget,every", [(0, math.inf), (1, math.inf), (5, math.inf), (3, 2)])
@pytest.mark.parametrize("tau", [0.3, 0.6])
def test_partial_reuse_equals_its_restatement(model, tiny_cfg, tiny_weights, budget, every, tau):
    """``partial(reuse=1)``: the block's decoded columns give their slots to the next changed/stalest columns."""
    mask_id = tiny_cfg["mask_token_id"]
    knobs = f"budget={budget},reuse=1" + ("" if every == math.inf else f",every={every}")
    differs = 0
    for row in prompts(3):
        x = row[None]
        ref, ref_nfe = ref_partial_generate(tiny_weights, tiny_cfg, x, 32, 8, mask_id, tau, budget, every, reuse=True)
        out = decode(model, x, Threshold(tau), mask_id=mask_id, gen_length=32, block_length=8,
                     cache=f"partial({knobs})", early_stop=False)
        assert torch.equal(out.sequences, ref) and out.nfe == ref_nfe
        plain, plain_nfe = ref_partial_generate(tiny_weights, tiny_cfg, x, 32, 8, mask_id, tau, budget, every)
        differs += not torch.equal(plain, ref) or plain_nfe != ref_nfe
    assert differs, "reuse=1 never changed a decode against reuse=0: the fixture proves nothing"


def test_partial_reuse_refuses_a_policy_that_scores_decoded_tokens(model, tiny_cfg):
    from unmask.decoding.policies import make_policy

    editing = make_policy("llada2_edit")
    assert editing.edits
    with pytest.raises(ValueError, match="reuse=1 computes no logits"):
        decode(model, prompts(), editing, mask_id=tiny_cfg["mask_token_id"], gen_length=32, block_length=8,
               cache="partial(reuse=1)", early_stop=False)


def test_partial_with_the_whole_canvas_is_no_cache(model, tiny_cfg):
    """A budget covering every column recomputes the whole canvas every step: the tokens of no cache."""
    kw = dict(mask_id=tiny_cfg["mask_token_id"], gen_length=32, block_length=8, early_stop=False)
    a = decode(model, prompts(), Threshold(0.4), cache="partial(budget=4096)", **kw)
    b = decode(model, prompts(), Threshold(0.4), cache="none", **kw)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.commit_step, b.commit_step)


def test_partial_interval_refreshes_change_the_decode(model, tiny_cfg, tiny_weights):
    """``every=2`` is not ``every=inf``: the refreshes at blocks 2 change some decode of the fixture (else the
    restatement test above could not tell them apart)."""
    mask_id = tiny_cfg["mask_token_id"]
    pairs = [(ref_partial_generate(tiny_weights, tiny_cfg, row[None], 32, 8, mask_id, 0.3, 1, every)) for row in
             prompts(3) for every in (math.inf, 2)]
    assert any(not torch.equal(a[0], b[0]) or a[1] != b[1] for a, b in zip(pairs[0::2], pairs[1::2], strict=True))


@pytest.mark.parametrize("cache", ["prompt_stale(every=2)", "partial(budget=3)", "partial(budget=3,every=2)",
                                   "partial(budget=3,reuse=1)"])
def test_ragged_batch_through_fewer_slots_equals_alone(model, tiny_cfg, cache):
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(0, 100, (n,), generator=g) for n in (9, 4, 7, 5)]
    width = max(len(r) for r in rows)
    batch = torch.full((len(rows), width), tiny_cfg["pad_token_id"])
    attn = torch.zeros_like(batch)
    for i, r in enumerate(rows):
        batch[i, width - len(r):] = r
        attn[i, width - len(r):] = 1
    kw = dict(mask_id=tiny_cfg["mask_token_id"], gen_length=32, block_length=8, cache=cache,
              early_stop=True, stop_ids=(tiny_cfg["eos_token_id"],))
    out = decode(model, batch, Threshold(0.4), attention_mask=attn, slots=2, **kw)
    for i, r in enumerate(rows):
        alone = decode(model, r[None], Threshold(0.4), **kw)
        assert torch.equal(out.tokens[i], alone.tokens[0]) and out.nfe_per_row[i] == alone.nfe_per_row[0]
