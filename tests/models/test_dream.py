"""Dream (Dream-org/Dream-v0-Instruct-7B layout): the native forward equals a plain restatement of the
reference modeling_dream.py (shifted logits, padding, Fast-dLLM's cache windows); decoding equals Dream's
diffusion_generate and Fast-dLLM's cached Dream generate token for token; every policy x cache x credit
decodes a ragged batch; ``unmask.load`` works end to end on a folder as the hub ships it."""

import json

import pytest
import torch
from dream_fixtures import SPECIAL_IDS, random_weights, tiny_config, write_checkpoint
from reference_dream import (
    ref_dream_generate,
    ref_fastdllm_dream_generate,
    ref_fastdllm_dream_threshold,
    ref_forward,
    shift,
)

import unmask
from unmask.decoding import CreditConfig, Scorer, decode
from unmask.decoding.engine import DecodeEngine, EngineOptions, run_rows
from unmask.decoding.policies import REGISTRY, make_policy
from unmask.decoding.policies.dream import dream_schedule
from unmask.models import CheckpointError, StaticKVCache, load_model, random_model, save_pretrained
from unmask.models.cache import recompute_columns
from unmask.models.dream import DreamModel
from unmask.models.dream_config import DREAM_7B, DreamConfig
from unmask.models.loading import load_state_dict, read_config

BUILT_IN_POLICIES = ("topk", "threshold", "factor", "frechet", "dream", "dream_lead", "threshold_lead")


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


@pytest.fixture(scope="module")
def weights(cfg):
    return random_weights(cfg)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, cfg, weights):
    return write_checkpoint(tmp_path_factory.mktemp("dream") / "tiny-dream", cfg, weights)


@pytest.fixture(scope="module")
def model(ckpt):
    return load_model(ckpt, dtype="float64").fuse_projections()


def prompts(n=2, length=7, seed=0):
    return torch.randint(0, 250, (n, length), generator=torch.Generator().manual_seed(seed))


# ---- the forward ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, {"num_key_value_heads": 4}, {"tie_word_embeddings": True}])
def test_logits_are_the_reference_logits_shifted(tmp_path, overrides):
    cfg = tiny_config(**overrides)
    w = random_weights(cfg, seed=3)
    model = load_model(write_checkpoint(tmp_path / "m", cfg, w, shards=2), dtype="float64")
    assert isinstance(model, DreamModel)
    x = prompts(3, 17)
    ref = shift(ref_forward(w, cfg, x)[0])  # logits *for* each column: column c from the output of c - 1
    torch.testing.assert_close(model(x), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model(x, logits_range=(5, 11)), ref[:, 5:11], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.fuse_projections()(x), ref, rtol=1e-10, atol=1e-10)


def test_padding_is_dreams_mask_and_positions(model, cfg, weights):
    """A left-padded row: Dream's [B, 1, N, N] mask and tok_idx positions, and the row's logits alone."""
    x = prompts(2, 15, seed=1)
    mask = torch.ones_like(x)
    mask[0, :6] = 0
    tok_idx = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    ref = shift(ref_forward(weights, cfg, x, mask, tok_idx)[0])
    got = model(x, attention_mask=mask)
    torch.testing.assert_close(got[0, 7:], ref[0, 7:], rtol=1e-10, atol=1e-10)  # past the first token (its shift)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[0, 7:], model(x[:1, 6:])[0, 1:], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cache_windows_read_the_column_before_from_the_refresh(model, cfg, weights, mode):
    """Rows 1.. of a window equal Fast-dLLM's cached forward shifted inside the window; row 0 (the block's
    first column) is predicted from the column before the block, frozen as of the refresh."""
    T, s, e = 24, 8, 16
    x = prompts(2, T, seed=2)
    cache = StaticKVCache.for_model(model.config, 2, T, model.dtype, model.device)
    cos, sin = model.rotary(torch.arange(T)[None])
    refresh = model.forward_window(x, cos, sin, None, cache, logits_rows=torch.arange(s, e))
    raw, past = ref_forward(weights, cfg, x)
    torch.testing.assert_close(refresh, shift(raw)[:, s:e], rtol=1e-10, atol=1e-10)
    x2 = x.clone()
    x2[:, s:e] = prompts(2, e - s, seed=3)  # the block changed since the refresh
    a, b = recompute_columns(mode, s, e, T)
    columns = torch.arange(a, b)
    got = model.forward_window(x2[:, a:b], cos[:, :, a:b], sin[:, :, a:b], None, cache, columns,
                               torch.arange(e - s))
    if mode == "prefix":
        raw2, _ = ref_forward(weights, cfg, x2[:, s:], past=[(k[:, :, :s], v[:, :, :s]) for k, v in past],
                              query_start=s)
    else:
        raw2, _ = ref_forward(weights, cfg, x2[:, s:e], past=past, query_start=s, replace=(s, e))
    torch.testing.assert_close(got[:, 1:], shift(raw2)[:, 1:e - s], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[:, 0], refresh[:, 0], rtol=1e-12, atol=1e-12)


def test_per_row_columns_and_rows_equal_shared_ones(model):
    """The serving path's per-row cache columns [B, W] and logit rows [B, R] read the same predecessors."""
    T, s, e = 20, 8, 12
    x = prompts(2, T, seed=7)
    cos, sin = model.rotary(torch.arange(T)[None])
    columns, rows = torch.arange(s, T), torch.arange(e - s)
    out = []
    for per_row in (False, True):
        cache = StaticKVCache.for_model(model.config, 2, T, model.dtype, model.device)
        model.forward_window(x, cos, sin, None, cache)
        cols, picked = (columns.expand(2, -1), rows.expand(2, -1)) if per_row else (columns, rows)
        out.append(model.forward_window(x[:, s:], cos[:, :, s:], sin[:, :, s:], None, cache, cols, picked))
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)


def test_fused_projections_keep_the_checkpoint_layout(tmp_path, model, ckpt, weights):
    assert model.model.layers[0].qkv_bias.shape == (64 + 2 * 2 * 16,)
    assert set(model.state_dict()) == set(weights)  # the checkpoint's names, no fused extras
    saved = load_state_dict(save_pretrained(model, tmp_path / "saved", dtype="float64"))
    assert all(torch.equal(saved[k], weights[k]) for k in weights)
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "Dream"


def test_bf16_forward_close_to_fp32(ckpt):
    x = prompts(1, 12)
    ref = load_model(ckpt, dtype="float32")(x)
    got = load_model(ckpt, dtype="bfloat16")(x).float()
    assert (got - ref).norm() / ref.norm() < 3e-2


# ---- config and loading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["Dream", "dream", "DREAM"])
def test_config_round_trips_and_model_type_is_case_insensitive(tmp_path, cfg, model_type):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": model_type}))
    config = read_config(folder)
    assert isinstance(config, DreamConfig)
    assert config.to_dict() == {**cfg, "model_type": model_type}
    assert (config.n_layers, config.n_kv_heads, config.head_dim, config.embedding_size) == (2, 2, 16, 320)


def test_dream_7b_shape():
    assert DREAM_7B.head_dim == 128 and DREAM_7B.n_kv_heads == 4 and DREAM_7B.embedding_size == 152064
    with torch.device("meta"):
        n = sum(p.numel() for p in DreamModel(DREAM_7B).parameters())
    assert 7.6e9 < n < 7.7e9  # Dream-v0-Instruct-7B: 7.62B parameters


@pytest.mark.parametrize("overrides,message", [
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling="),
    ({"use_sliding_window": True}, "use_sliding_window=true"),
    ({"num_attention_heads": 5}, "hidden_size=64 must be a multiple of num_attention_heads=5"),
    ({"num_key_value_heads": 3}, "num_attention_heads=4 must be a multiple of num_key_value_heads=3"),
    ({"hidden_size": "64"}, "hidden_size='64' must be a positive integer"),
    ({"mask_token_id": 400}, "mask_token_id=400 must be a token id below vocab_size=320"),
    ({"rope_theta": -1}, "rope_theta=-1 must be a positive number"),
])
def test_bad_config_names_the_field(tmp_path, cfg, weights, overrides, message):
    folder = write_checkpoint(tmp_path / "m", {**cfg, **overrides}, weights)
    with pytest.raises(CheckpointError, match="config.json.*unsupported Dream config: .*" + _escape(message)):
        load_model(folder)


def _escape(text):
    import re

    return re.escape(text)


def test_missing_bias_is_named(tmp_path, cfg, weights):
    w = {k: v for k, v in weights.items() if k != "model.layers.1.self_attn.k_proj.bias"}
    with pytest.raises(CheckpointError, match=r"missing \['model.layers.1.self_attn.k_proj.bias'\]"):
        load_model(write_checkpoint(tmp_path / "m", cfg, w))


# ---- decoding against the references --------------------------------------------------------------------


@pytest.mark.parametrize("alg,scorer", [("maskgit_plus", "confidence"), ("topk_margin", "margin"),
                                        ("entropy", "entropy")])
@pytest.mark.parametrize("steps", [16, 6])
def test_dream_policy_equals_diffusion_generate(model, cfg, weights, alg, scorer, steps):
    """Dream's own generate (one block, no cache) on a ragged batch, with its padding."""
    mask_id = cfg["mask_token_id"]
    x = prompts(2, 7, seed=5)
    attn = torch.ones_like(x)
    attn[1, :3] = 0
    ref = ref_dream_generate(weights, cfg, x.clone(), 16, steps, mask_id, alg, attention_mask=attn)
    out = decode(model, x, make_policy("dream", steps=steps, gen_length=16, block_length=16), mask_id=mask_id,
                 attention_mask=attn, gen_length=16, block_length=16, scorer=Scorer(scorer), early_stop=False)
    assert torch.equal(out.sequences, ref)
    assert out.nfe == steps


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("rule", [("threshold_lead", 0.3), ("threshold_lead", 0.6), ("dream_lead", 24),
                                  ("dream_lead", 9)])
def test_lead_policies_equal_fastdllm_dream(model, cfg, weights, cache, rule):
    """Fast-dLLM's cached Dream generate (its no-cache variant: full forwards, same recipe)."""
    name, value = rule
    knob = {"threshold": value} if name == "threshold_lead" else {"steps": value}
    scorer = Scorer("entropy" if name == "dream_lead" else "confidence")
    for row in prompts(2, 6, seed=4):  # Fast-dLLM's loops are batch-size-1 semantics
        x = row[None]
        ref, ref_nfe = ref_fastdllm_dream_generate(weights, cfg, x.clone(), 24, 8, cfg["mask_token_id"], cache,
                                                   **knob)
        out = decode(model, x, make_policy(name, gen_length=24, block_length=8, **knob), scorer=scorer,
                     mask_id=cfg["mask_token_id"], gen_length=24, block_length=8, cache=cache, early_stop=False)
        assert torch.equal(out.sequences, ref)
        assert out.nfe == ref_nfe


@pytest.mark.parametrize("alg,scorer", [("maskgit_plus", "confidence"), ("entropy", "entropy")])
@pytest.mark.parametrize("top_p,top_k", [(0.9, None), (None, 3), (0.95, 40)])
def test_dream_greedy_with_filters_equals_diffusion_generate(model, cfg, weights, alg, scorer, top_p, top_k):
    """At temperature 0 Dream's top-p / top-k still reshape the confidence (the kept tokens' renormalised
    probabilities): ``confidence_from="sampling"`` decodes as ``diffusion_generate`` does, and top-k 3 changes
    this decode. (A nucleus that keeps one token makes its confidence exactly 1: ties, which the reference's
    ``torch.topk`` orders in no stated way; the settings here keep two or more.)"""
    mask_id = cfg["mask_token_id"]
    x = prompts(2, 7, seed=5)
    ref = ref_dream_generate(weights, cfg, x.clone(), 16, 8, mask_id, alg, top_p=top_p, top_k=top_k)
    policy = make_policy("dream", steps=8, gen_length=16, block_length=16)
    kw = dict(mask_id=mask_id, gen_length=16, block_length=16, early_stop=False)
    out = decode(model, x, policy, scorer=Scorer(scorer, top_p=top_p, top_k=top_k, confidence_from="sampling"), **kw)
    assert torch.equal(out.sequences, ref)
    if top_k == 3:  # a tight filter reorders the commits here (a loose one may not)
        assert not torch.equal(decode(model, x, policy, scorer=Scorer(scorer), **kw).sequences, ref)


@pytest.mark.parametrize("threshold,steps", [(0.3, 4), (0.3, 8), (0.6, 4), (0.9, 3)])
def test_threshold_budget_equals_fastdllm_dream_without_cache(model, cfg, weights, threshold, steps):
    """Fast-dLLM's no-cache Dream generate (alg=confidence_threshold): one block over the answer, a budget of
    masked / steps per step, rejections carried over and extra steps past the nominal ones."""
    extended = 0
    for row in prompts(3, 6, seed=4):  # batch-size-1 semantics
        x = row[None]
        ref, ref_nfe = ref_fastdllm_dream_threshold(weights, cfg, x.clone(), 24, steps, cfg["mask_token_id"],
                                                    threshold)
        policy = make_policy("threshold_budget", threshold=threshold, steps=steps, gen_length=24, block_length=24)
        out = decode(model, x, policy, mask_id=cfg["mask_token_id"], gen_length=24, block_length=24,
                     early_stop=False)
        assert torch.equal(out.sequences, ref)
        assert out.nfe == ref_nfe
        extended += ref_nfe > steps
    assert extended, "the fixture never runs past the nominal steps"


def test_fixture_exercises_parallel_and_empty_steps(model, cfg):
    """The equalities above prove little unless steps commit several tokens, and Dream's schedule skips."""
    out = decode(model, prompts(2, 6, seed=4), make_policy("threshold_lead", threshold=0.3),
                 mask_id=cfg["mask_token_id"], gen_length=24, block_length=8, early_stop=False)
    assert out.nfe < 16
    assert (dream_schedule(torch.tensor([16]), 16) == 0).any()
    assert dream_schedule(torch.tensor([16, 5]), 6, lead=True)[:, 0].tolist() == [1, 1]
    assert dream_schedule(torch.tensor([16, 5]), 6).sum(-1).tolist() == [16, 5]


# ---- every policy, cache and credit on a ragged batch ---------------------------------------------------


def test_registry_holds_the_dream_policies():
    assert set(BUILT_IN_POLICIES) <= set(REGISTRY)


@pytest.mark.parametrize("credit", [None, CreditConfig()], ids=["plain", "credit"])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("policy", BUILT_IN_POLICIES)
def test_every_policy_cache_and_credit_decodes_a_ragged_batch(model, cfg, policy, cache, credit):
    """The whole generation is decoded, and a left-padded row decodes as it does alone."""
    mask_id = cfg["mask_token_id"]
    x = prompts(3, 9, seed=6)
    attn = torch.ones_like(x)
    attn[1, :4] = 0
    kw = dict(mask_id=mask_id, gen_length=16, block_length=8, cache=cache, credit=credit, early_stop=False)
    out = decode(model, x, make_policy(policy, gen_length=16, block_length=8), attention_mask=attn, **kw)
    assert not (out.tokens == mask_id).any() and (out.commit_step >= 0).all()
    alone = decode(model, x[1:2, 4:], make_policy(policy, gen_length=16, block_length=8), **kw)
    assert torch.equal(out.tokens[1], alone.tokens[0])
    assert torch.equal(out.commit_step[1], alone.commit_step[0])


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_cfg_runs_the_unconditional_rows_beside_the_cache(model, cfg, cache):
    """Classifier-free guidance doubles the rows through the model (and its output store)."""
    x = prompts(2, 7, seed=8)
    kw = dict(mask_id=cfg["mask_token_id"], gen_length=16, block_length=8, cache=cache, early_stop=False)
    guided = decode(model, x, make_policy("threshold", threshold=0.5), cfg_scale=1.5, **kw)
    plain = decode(model, x, make_policy("threshold", threshold=0.5), **kw)
    assert not (guided.tokens == cfg["mask_token_id"]).any()
    assert not torch.equal(guided.tokens, plain.tokens)


def test_early_stop_ends_rows_in_their_first_block(model, cfg):
    stop = tuple(range(250))  # every ordinary token ends a row
    out = decode(model, prompts(3, 9, seed=6), make_policy("threshold_lead", threshold=0.5),
                 mask_id=cfg["mask_token_id"], gen_length=32, block_length=8, cache="dual", stop_ids=stop)
    assert out.nfe <= 8 and (out.lengths <= 8).all()
    filled = out.commit_step == -2
    assert filled[:, 8:].all() and (out.tokens[filled] == stop[0]).all()


# ---- unmask.load end to end -------------------------------------------------------------------------------


def test_load_a_dream_folder_as_the_hub_ships_it(ckpt, cfg):
    assert not (ckpt / "tokenizer.json").exists()  # vocab.json + merges.txt + tokenizer_config.json only
    lm = unmask.load(ckpt, dtype="float64", device="cpu")
    tok = lm.tokenizer
    assert lm.mask_id == cfg["mask_token_id"] == SPECIAL_IDS["<|mask|>"]
    assert tok.eos_id == SPECIAL_IDS["<|endoftext|>"] and tok.eot_id == SPECIAL_IDS["<|im_end|>"]
    assert tok.stop_ids == (SPECIAL_IDS["<|endoftext|>"], SPECIAL_IDS["<|im_end|>"])
    text = tok.apply_chat_template([{"role": "user", "content": "hello world"}])
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhello world"
                    "<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.encode(text)
    assert ids[0] == SPECIAL_IDS["<|im_start|>"] and tok.decode(ids, skip_special_tokens=False) == text
    assert [tok.tokenizer.id_to_token(i) for i in tok.encode("hello world")] == ["hello", "Ġworld"]
    out = lm.generate(["hello world", "the answer is an apple"], policy="threshold_lead", threshold=0.5,
                      gen_length=16, block_length=8, cache="dual")
    assert len(out.texts) == 2 and all(isinstance(t, str) for t in out.texts)
    assert out.prompt_ids.shape[0] == 2 and (out.prompt_ids[0] == tok.pad_id).any()  # a ragged batch


@pytest.mark.parametrize("text", ["hello world", " hello  world\n\nthe answer is 42!", "Ünïcödé e\u0301 café 123456",
                                  "<|im_start|>user\nhi<|im_end|>\n<|mask|>", "it's    tabs\there  "])
def test_tokenizer_equals_transformers_qwen2_tokenizer(tmp_path, text):
    """The vocab.json + merges.txt tokenizer encodes and decodes as transformers' Qwen2Tokenizer."""
    transformers = pytest.importorskip("transformers")
    from dream_fixtures import write_tokenizer

    from unmask.models.tokenizer import Tokenizer

    write_tokenizer(tmp_path)
    ref = transformers.Qwen2Tokenizer.from_pretrained(str(tmp_path))
    ours = Tokenizer.from_pretrained(tmp_path)
    ids = ours.encode(text)
    assert ids == ref.encode(text, add_special_tokens=False)
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    assert ours.mask_id == SPECIAL_IDS["<|mask|>"]  # tokenizer_config's mask_token


def test_bench_runs_dream_shapes_on_cpu(tmp_path):
    from unmask.eval.speed import SHAPES, run_bench

    assert SHAPES["dream-7b"] == DREAM_7B
    rows = run_bench(None, "dream-tiny", tmp_path, (1,), ("dual",), 8, 16, 8, "float32", "cpu", 1, "test",
                     log=lambda _: None)
    assert [r.cache for r in rows] == ["dual"] and rows[0].step_ms > 0
    assert isinstance(random_model(SHAPES["dream-tiny"], dtype=torch.float32), DreamModel)


# ---- GPU ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("policy", ["threshold", "dream", "threshold_lead"])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_cuda_graph_replay_equals_eager(model, policy, cache):
    """The output store beside the cache is read and written inside captured steps like the KV cache."""
    cuda_model = DreamModel(model.config).to(torch.float32)
    cuda_model.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    cuda_model = cuda_model.cuda().eval().requires_grad_(False).fuse_projections()
    x = prompts(3, 9, seed=2).cuda()
    for mode in ("exact", "fused"):
        cuda_model.compile_kernels(mode == "fused")
        opts = EngineOptions(3, 9 + 24, 24, 8, False, model.config.mask_token_id, cache, 0.0, False, None, (), False)
        programs = [DecodeEngine(cuda_model, make_policy(policy, gen_length=24, block_length=8), Scorer(), None,
                                  opts, graphs=graphs) for graphs in (False, True)]
        for program in programs:
            run_rows(program, x, program.G)
        assert torch.equal(programs[0].x, programs[1].x)
        assert torch.equal(programs[0].commit_step, programs[1].commit_step)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_bf16_decode_runs_with_every_cache(ckpt):
    lm = unmask.load(ckpt, dtype="bfloat16", device="cuda")
    for cache in ("none", "prefix", "dual"):
        out = lm.generate(["hello world", "the answer"], policy="threshold", threshold=0.5, gen_length=32,
                          block_length=8, cache=cache)
        assert out.nfe <= 32 and len(out.texts) == 2
