"""LLaDA2.x: the native model loads the HF layout and its logits equal the restatement (float64), bidirectional
and block-causal; the router's groups and bias; fused experts and the compiled kernels; the bench shapes; the
block decode against LLaDA2.0's generate."""

from __future__ import annotations

import json

import pytest
import torch
from llada2_fixtures import random_llada2_weights, tiny_llada2_config
from llada_fixtures import left_pad, write_checkpoint
from reference_llada2 import ref_llada2_forward, ref_llada2_generate, ref_llada21_generate

from unmask.decoding.engine import DecodeEngine
from unmask.eval.speed import SHAPES
from unmask.models import load_model
from unmask.models.llada2 import LLaDA2Model, block_causal_mask, route_groups
from unmask.models.loading import CheckpointError, random_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = tiny_llada2_config()
    w = random_llada2_weights(cfg)
    return cfg, w, write_checkpoint(tmp_path_factory.mktemp("llada2") / "m", cfg, w)


def tokens(n=2, length=20, seed=0):
    return torch.randint(0, 100, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("block_length", [None, 4, 8])
@pytest.mark.parametrize("fused", [False, True])
def test_logits_equal_reference(tiny, block_length, fused):
    cfg, w, folder = tiny
    model = load_model(folder, dtype="float64")
    assert isinstance(model, LLaDA2Model)
    if fused:
        model.fuse_projections()
    x = tokens()
    out = model.forward(x, block_length=block_length)
    for b in range(x.shape[0]):
        ref = ref_llada2_forward(w, cfg, x[b], block_length)
        assert torch.allclose(out[b], ref, rtol=1e-9, atol=1e-9), (block_length, fused)


def test_block_causal_attention_hides_later_blocks(tiny):
    """With block_length B, changing a token of block j changes no logit of an earlier block, and every logit of
    its own block (bidirectional inside it)."""
    _, _, folder = tiny
    model = load_model(folder, dtype="float64")
    x = tokens(1, 16)
    y = x.clone()
    y[0, 9] = (y[0, 9] + 1) % 100  # block 2 of B = 4
    a, b = model.forward(x, block_length=4), model.forward(y, block_length=4)
    # equal up to float64 rounding: the changed token can route to other experts, and the experts' matmuls then
    # run over other row counts (another BLAS blocking: ulp-level differences, machine-dependent)
    torch.testing.assert_close(a[0, :8], b[0, :8], rtol=1e-12, atol=1e-12)
    assert not torch.isclose(a[0, 8:12], b[0, 8:12]).all(dim=-1).any()
    assert torch.equal(block_causal_mask(6, 2).long(), torch.tensor(
        [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1],
         [1, 1, 1, 1, 1, 1]]))


def test_router_groups_bias_and_weights():
    """Groups ranked by their top-2 biased scores; the bias picks but does not weigh; weights renormalised and
    scaled."""
    logits = torch.tensor([[2.0, 1.9, -3.0, -3.0, 1.0, 0.9, 0.8, 0.7]])  # 4 groups of 2
    bias = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5])
    weights, experts = route_groups(logits, 3, 4, 2, bias, 2.5)
    # group scores (sigmoid + bias, top-2 summed): g0 ~1.75, g1 ~0.09, g2 ~1.44, g3 ~1.61 + 0.5: keep g0 and g3
    assert sorted(experts[0].tolist()) == [0, 1, 7]
    s = torch.sigmoid(logits)[0, [0, 1, 7]]
    assert torch.allclose(weights[0].sort().values, (s / s.sum() * 2.5).sort().values)
    assert weights.dtype == torch.float32


def test_expert_bias_stays_float32_and_loads_by_name(tiny):
    _, w, folder = tiny
    model = load_model(folder, dtype="bfloat16")
    gate = model.model.layers[1].mlp.gate
    assert gate.expert_bias.dtype == torch.float32 and model.model.word_embeddings.weight.dtype == torch.bfloat16
    assert torch.equal(gate.expert_bias, w["model.layers.1.mlp.gate.expert_bias"].float())
    assert model.model.layers[0].mlp.__class__.__name__ == "MLP"  # first_k_dense_replace = 1


def test_compiled_kernels_equal_eager(tiny):
    _, _, folder = tiny
    model = load_model(folder, dtype="float32").fuse_projections()
    x = tokens()
    eager = model.forward(x, block_length=4)
    model.compile_kernels(True)
    try:
        assert torch.allclose(model.forward(x, block_length=4), eager, atol=1e-5)
    finally:
        model.compile_kernels(False)


def test_bad_config_is_named(tmp_path, tiny):
    cfg, w, _ = tiny
    for overrides, message in (({"n_group": 3}, "n_group=3 must divide num_experts=8"),
                               ({"score_function": "softmax"}, "score_function='softmax'"),
                               ({"partial_rotary_factor": 0.3}, "even number of rotated dimensions"),
                               ({"use_qkv_bias": True}, "use_qkv_bias and use_bias must be false")):
        folder = write_checkpoint(tmp_path / json.dumps(overrides)[:20].replace('"', ""), {**cfg, **overrides}, w)
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_model(folder)


def test_bench_shapes():
    mini, flash = SHAPES["llada2-mini"], SHAPES["llada2-flash"]
    assert (mini.hidden_size, mini.num_hidden_layers, mini.num_experts, mini.rotary_dim) == (2048, 20, 256, 64)
    assert (flash.hidden_size, flash.num_hidden_layers, flash.moe_intermediate_size) == (4096, 32, 1024)
    with torch.device("meta"):
        model = LLaDA2Model(mini)
    total = sum(p.numel() for p in model.parameters())
    assert 16.0e9 < total < 16.5e9  # LLaDA2.0-mini: 16B
    embedding = model.model.word_embeddings.weight.numel()
    assert 1.3e9 < model.active_parameters + embedding < 1.5e9  # the model card's 1.4B active (with the table)
    tiny_model = random_model(SHAPES["llada2-tiny"], dtype=torch.float32)
    assert tiny_model.forward(tokens(1, 8)).shape == (1, 8, 4096)


LLADA2_PROMPTS = (5, 11, 8, 16)  # ragged; 8 and 16 start on a block boundary at B = 8, 5 and 11 inside one


@pytest.mark.parametrize("cache", ["none", "dual"])
@pytest.mark.parametrize("threshold,steps", [(0.95, None), (0.3, None), (0.3, 4)])
def test_block_decode_equals_llada2_generate(tiny, cache, threshold, steps):
    """Ragged prompts decoded at once (2 slots: continuous batching) equal LLaDA2.0's generate row by row, tokens
    and forwards: blocks at absolute multiples of B (the first holding the prompt's tail), block-causal
    attention; with the dual cache the finished blocks' keys/values are reused exactly."""
    from unmask.decoding import decode, make_policy

    cfg, w, folder = tiny
    model = load_model(folder, dtype="float64")
    gen, block = 24, 8
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(0, 100, (n,), generator=g) for n in LLADA2_PROMPTS]
    ids, attn = left_pad(rows, cfg["pad_token_id"])
    policy = make_policy("llada2", threshold=threshold, steps=steps, gen_length=gen, block_length=block)
    kinds = []
    run = DecodeEngine._run

    def spy(self, kind):
        kinds.append(kind[0])
        return run(self, kind)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DecodeEngine, "_run", spy)
        out = decode(model, ids, policy, mask_id=cfg["mask_token_id"], attention_mask=attn, gen_length=gen,
                     block_length=block, cache=cache, early_stop=False, slots=2)
    if cache == "dual":  # one whole-canvas refresh per row (its first block), then the append windows
        assert 1 <= kinds.count("refresh") <= len(rows) and kinds.count("answer") >= len(rows)
    parallel = False
    for b, row in enumerate(rows):
        ref, nfe = ref_llada2_generate(w, cfg, row, gen, block, cfg["mask_token_id"], threshold, steps)
        assert torch.equal(out.tokens[b], ref), (b, cache)
        assert int(out.nfe_per_row[b]) == nfe, (b, cache)
        parallel |= nfe < -(-(len(row) + gen) // block) * block - len(row)
    assert parallel or threshold > 0.9, "no step committed more than its quota here"


def test_block_decode_early_stop_keeps_the_text(tiny):
    """Early stop (unmask's: the row ends once a stop token is decoded with everything before it) gives the
    reference's text up to its first stop token, in no more forwards than its stop after that block. The stop
    token is one the random model writes often (its own end-of-text never comes)."""
    from unmask.decoding import decode, make_policy

    cfg, w, folder = tiny
    model = load_model(folder, dtype="float64")
    policy = make_policy("llada2", threshold=0.3, gen_length=32, block_length=8)
    rows = [torch.randint(0, 100, (7,), generator=torch.Generator().manual_seed(seed)) for seed in range(4)]
    plain = [ref_llada2_generate(w, cfg, row, 32, 8, cfg["mask_token_id"], 0.3)[0] for row in rows]
    stop = int(torch.cat([p[4:] for p in plain]).mode().values)
    stopped = 0
    for row in rows:
        out = decode(model, row[None], policy, mask_id=cfg["mask_token_id"], gen_length=32, block_length=8,
                     cache="dual", stop_ids=(stop,))
        ref, nfe = ref_llada2_generate(w, cfg, row, 32, 8, cfg["mask_token_id"], 0.3, eos_id=stop,
                                       stop_after_eos_block=True)
        ref = ref.tolist()
        cut = ref.index(stop) + 1 if stop in ref else len(ref)
        assert out.tokens[0].tolist()[:cut] == ref[:cut]
        assert int(out.nfe) <= nfe
        stopped += stop in ref and int(out.nfe) < nfe
    assert stopped, "no row stopped early here"


@pytest.mark.parametrize("cache", ["none", "dual"])
@pytest.mark.parametrize("threshold,edit,post", [(0.7, 0.5, 16), (0.5, 0.0, 16), (0.3, 0.0, 2), (0.7, 0.5, 0)])
def test_token_editing_equals_llada21_generate(tiny, cache, threshold, edit, post):
    """LLaDA2.1's quality (0.7 / 0.5 / 16) and speed (0.5 / 0.0 / 16) modes and variants: tokens and forwards of
    ragged rows over 2 slots equal its generate row by row; edits happen (committed tokens change)."""
    from unmask.decoding import decode, make_policy

    cfg, w, folder = tiny
    model = load_model(folder, dtype="float64")
    gen, block = 24, 8
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(0, 100, (n,), generator=g) for n in LLADA2_PROMPTS]
    ids, attn = left_pad(rows, cfg["pad_token_id"])
    policy = make_policy("llada2_edit", threshold=threshold, edit=edit, post=post)
    events = []
    out = decode(model, ids, policy, mask_id=cfg["mask_token_id"], attention_mask=attn, gen_length=gen,
                 block_length=block, cache=cache, early_stop=False, slots=2, on_step=events.append)
    for b, row in enumerate(rows):
        ref, nfe = ref_llada21_generate(w, cfg, row, gen, block, cfg["mask_token_id"], threshold, edit, post)
        assert torch.equal(out.tokens[b], ref), (b, cache)
        assert int(out.nfe_per_row[b]) == nfe, (b, cache)
    rewrites = sum(len(e.positions) for e in events) - sum(len(r) for r in out.tokens)
    if edit == 0.0:
        assert rewrites > 0, "no token was ever edited here"
