"""WINO against the restatement of its public code (tests/reference_policies.py ``ref_wino_generate``): ragged
batches, continuous batching over fewer slots and early stop equal each row decoded by the reference, token for
token and in forwards; the re-masks really happen and ``on_step`` reports them."""

from __future__ import annotations

import pytest
import torch
from llada_fixtures import left_pad, random_weights, tiny_config, write_checkpoint
from reference_policies import ref_wino_generate

from unmask.decoding import DecodeConfig, decode, make_policy
from unmask.decoding.policies.wino import Wino
from unmask.eval.spec import parse_spec
from unmask.models import load_model

GEN, BLOCK = 24, 8
PROMPT_LENGTHS = (7, 4, 6, 5)
CASES = [(0.3, 0.9), (0.2, 0.6), (0.5, 0.9)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A float64 tiny model with its LM head scaled up (confident enough that drafts pass tau1 and some fail
    the shadow check)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = tiny_config()
    w = random_weights(cfg)
    w["model.transformer.ff_out.weight"] *= 3
    model = load_model(write_checkpoint(tmp_path_factory.mktemp("wino") / "m", cfg, w), dtype="float64")
    yield model, cfg, w
    torch.set_num_threads(threads)


def ragged(cfg, seed=4):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(0, 100, (n,), generator=g) for n in PROMPT_LENGTHS]
    return (rows, *left_pad(rows, cfg["pad_token_id"]))


@pytest.mark.parametrize("slots", [None, 2])
@pytest.mark.parametrize("tau1,tau2", CASES)
def test_wino_equals_reference_row_by_row(setup, tau1, tau2, slots):
    model, cfg, w = setup
    rows, ids, attn = ragged(cfg)
    events = []
    out = decode(model, ids, Wino(tau1, tau2), mask_id=cfg["mask_token_id"], attention_mask=attn, gen_length=GEN,
                 block_length=BLOCK, early_stop=False, slots=slots, on_step=events.append)
    P = ids.shape[1]
    for b, row in enumerate(rows):
        ref = ref_wino_generate(w, cfg, row[None], GEN, BLOCK, cfg["mask_token_id"], tau1, tau2)
        assert torch.equal(out.sequences[b, P - len(row):], ref.x[0]), f"row {b}"
        assert int(out.nfe_per_row[b]) == ref.nfe, f"row {b}"
    # replaying the steps' commits and re-masks gives each final answer
    canvas = {b: {} for b in range(len(rows))}
    for e in events:
        for pos, token in zip(e.positions, e.tokens, strict=True):
            canvas[e.key][pos] = token
        for pos in e.remasked:
            assert pos not in e.positions
            canvas[e.key].pop(pos)
    for b in range(len(rows)):
        assert [canvas[b][g] for g in range(GEN)] == out.tokens[b].tolist()
    assert sum(len(e.remasked) for e in events) > 0, "no token was ever re-masked on this fixture"


def test_wino_with_early_stop_equals_reference(setup):
    model, cfg, w = setup
    rows, ids, attn = ragged(cfg)
    stop_ids = (60, 47)
    out = decode(model, ids, Wino(0.3, 0.9), mask_id=cfg["mask_token_id"], attention_mask=attn, gen_length=GEN,
                 block_length=BLOCK, stop_ids=stop_ids)
    P = ids.shape[1]
    stopped = 0
    for b, row in enumerate(rows):
        ref = ref_wino_generate(w, cfg, row[None], GEN, BLOCK, cfg["mask_token_id"], 0.3, 0.9, stop_ids=stop_ids)
        assert torch.equal(out.sequences[b, P - len(row):], ref.x[0]) and int(out.nfe_per_row[b]) == ref.nfe
        stopped += ref.nfe < ref_wino_generate(w, cfg, row[None], GEN, BLOCK, cfg["mask_token_id"], 0.3, 0.9).nfe
    assert stopped


def test_wino_settings_and_errors(setup, tmp_path):
    spec = parse_spec("wino:0.7(verify=0.8)")
    assert spec.label == "wino:0.7(verify=0.8)" and parse_spec("wino(verify=0.9)").label == "wino"
    policy = make_policy("wino", threshold=0.7, verify=0.8)
    assert (policy.tau1, policy.verify) == (0.7, 0.8)
    with pytest.raises(ValueError, match="cache must be 'none', got 'dual'"):
        DecodeConfig.create(policy="wino", cache="dual")
    model, cfg, _ = setup
    with pytest.raises(ValueError, match="cache 'none' only"):
        decode(model, ragged(cfg)[1], Wino(), mask_id=cfg["mask_token_id"], gen_length=GEN, block_length=BLOCK,
               early_stop=False, cache="prefix")
    import dream_fixtures

    dream_cfg = dream_fixtures.tiny_config()
    dream = load_model(dream_fixtures.write_checkpoint(tmp_path / "dream", dream_cfg,
                                                       dream_fixtures.random_weights(dream_cfg)), dtype="float64")
    with pytest.raises(ValueError, match="Dream predicts the next one"):
        decode(dream, torch.tensor([[5, 6, 7]]), Wino(), mask_id=dream_cfg["mask_token_id"], gen_length=GEN,
               block_length=BLOCK, early_stop=False)
