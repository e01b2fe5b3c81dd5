"""KLASS against the restatement of its public code (tests/reference_policies.py ``ref_klass_generate``):
ragged batches decoded at once equal each row decoded by the reference, token for token and in forwards, in
every cache mode; the KL history across a block boundary (kept from the next block's logits without a cache)
is what the reference does and changes the decode."""

from __future__ import annotations

import pytest
import torch
from llada_fixtures import left_pad, random_weights, tiny_config, write_checkpoint
from reference_policies import ref_klass_generate

from unmask.decoding import decode, make_policy
from unmask.decoding.policies.klass import KLASS
from unmask.eval.spec import parse_spec
from unmask.models import load_model

GEN, BLOCK = 24, 8
PROMPT_LENGTHS = (7, 4, 6)
# (tau, eps, history, steps in all): the fallback quota is one token per step, or three (steps 8 of 24)
CASES = [(0.5, 0.05, 2, 24), (0.3, 0.1, 2, 24), (0.3, 0.05, 3, 24), (0.5, 0.05, 2, 9)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A float64 tiny model whose LM head is scaled up: confident, settling predictions, so KLASS's ready set
    fires (a random model's confidences are near 1/V)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = tiny_config()
    w = random_weights(cfg)
    w["model.transformer.ff_out.weight"] *= 3
    model = load_model(write_checkpoint(tmp_path_factory.mktemp("klass") / "m", cfg, w), dtype="float64")
    yield model, cfg, w
    torch.set_num_threads(threads)


def ragged(cfg, seed=4):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(0, 100, (n,), generator=g) for n in PROMPT_LENGTHS]
    return (rows, *left_pad(rows, cfg["pad_token_id"]))


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("tau,eps,history,steps", CASES)
def test_klass_equals_reference_row_by_row(setup, cache, tau, eps, history, steps):
    model, cfg, w = setup
    rows, ids, attn = ragged(cfg)
    policy = make_policy("klass", threshold=tau, kl=eps, history=history, steps=steps, gen_length=GEN,
                         block_length=BLOCK)
    out = decode(model, ids, policy, mask_id=cfg["mask_token_id"], attention_mask=attn, gen_length=GEN,
                 block_length=BLOCK, cache=cache, early_stop=False)
    P = ids.shape[1]
    parallel = False
    for b, row in enumerate(rows):
        ref = ref_klass_generate(w, cfg, row[None], GEN, BLOCK, cfg["mask_token_id"], tau, eps, history, steps,
                                 cache=cache)
        assert torch.equal(out.sequences[b, P - len(row):], ref.x[0]), f"row {b}"
        assert int(out.nfe_per_row[b]) == ref.nfe, f"row {b}"
        parallel |= ref.nfe < GEN * (steps // (GEN // BLOCK)) // BLOCK
    assert parallel or steps < GEN, "KLASS never committed more than the fallback here"


def test_the_history_across_a_block_boundary_matters(setup):
    """Without a cache the first forward of a block compares with the previous block's last forward (the
    reference); dropping those columns changes some decode, so the equality above checks that path."""
    model, cfg, w = setup
    rows, _, _ = ragged(cfg)
    changed = 0
    for tau, eps, history, steps in CASES:
        for row in rows:
            kept = ref_klass_generate(w, cfg, row[None], GEN, BLOCK, cfg["mask_token_id"], tau, eps, history, steps)
            dropped = ref_klass_generate(w, cfg, row[None], GEN, BLOCK, cfg["mask_token_id"], tau, eps, history,
                                         steps, keep_next=False)
            changed += not torch.equal(kept.x, dropped.x) or kept.nfe != dropped.nfe
    assert changed


def test_klass_with_early_stop_equals_reference(setup):
    model, cfg, w = setup
    rows, ids, attn = ragged(cfg)
    stop_ids = (60, 47)
    policy = KLASS(0.3, 0.1, 2, BLOCK)
    out = decode(model, ids, policy, mask_id=cfg["mask_token_id"], attention_mask=attn, gen_length=GEN,
                 block_length=BLOCK, stop_ids=stop_ids)
    P = ids.shape[1]
    for b, row in enumerate(rows):
        ref = ref_klass_generate(w, cfg, row[None], GEN, BLOCK, cfg["mask_token_id"], 0.3, 0.1, 2, GEN,
                                 stop_ids=stop_ids)
        assert torch.equal(out.sequences[b, P - len(row):], ref.x[0]) and int(out.nfe_per_row[b]) == ref.nfe


def test_klass_spec_and_options():
    spec = parse_spec("klass:0.6(kl=0.015)@dual")
    assert spec.label == "klass:0.6(kl=0.015)@dual" and parse_spec(spec.label) == spec
    assert parse_spec("klass(kl=0.01,history=2)").label == "klass"  # defaults drop out of the label
    kwargs = {k: v for k, v in spec.generate_kwargs().items() if k not in ("policy", "cache")}
    policy = make_policy("klass", gen_length=64, block_length=32, **kwargs)
    assert (policy.tau, policy.kl, policy.history, policy.steps_per_fallback) == (0.6, 0.015, 2, 32)
    for bad, fragment in (("klass(kl=2)", "kl must be in (0, 1]"), ("klass(depth=2)", "NAME in {kl, history, steps}"),
                          ("klass(kl=0.1,kl=0.2)", "given twice"), ("threshold:0.9(kl=0.1)", "has no options")):
        with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            parse_spec(bad)
    with pytest.raises(ValueError, match="history must be in"):
        make_policy("klass", history=0, gen_length=64, block_length=32)
    with pytest.raises(ValueError, match="do not apply to policy 'threshold'"):
        make_policy("threshold", kl=0.1)
