"""LLaDA-MoE: the native forward equals a plain restatement of modeling_lladamoe.py (routing corner cases
included), both expert paths agree, every decoding mode runs on it with the reference loops' tokens, and
the real checkpoint layout loads (and bad configs fail naming the field)."""

import json

import pytest
import reference
import torch
from llada_fixtures import write_checkpoint
from llada_moe_fixtures import EOS_ID, MASK_ID, random_moe_weights, tiny_moe_config
from reference import ref_fastdllm_generate, ref_llada_generate
from reference_moe import ref_moe_forward, ref_route

import unmask
from unmask.decoding import CreditConfig, Factor, Frechet, Threshold, TopK, decode
from unmask.decoding.engine import DecodeEngine, EngineOptions, run_rows
from unmask.decoding.scorers import Scorer
from unmask.models import CheckpointError, LLaDAModel, StaticKVCache, load_model, save_pretrained
from unmask.models.cache import recompute_columns
from unmask.models.llada_moe import LLaDAMoEModel, route, run_experts
from unmask.models.llada_moe_config import LLADA_MOE_7B_A1B, LLaDAMoEConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = tiny_moe_config()
    w = random_moe_weights(cfg, seed=1)
    return cfg, w, write_checkpoint(tmp_path_factory.mktemp("moe") / "m", cfg, w)


@pytest.fixture(scope="module")
def model(tiny):
    return load_model(tiny[2], dtype="float64").fuse_projections()


def prompts(n=2, length=7, seed=0):
    return torch.randint(0, 100, (n, length), generator=torch.Generator().manual_seed(seed))


# ---- the forward ------------------------------------------------------------------------------------

VARIANTS = [{}, {"num_key_value_heads": 2}, {"moe_layer_freq": [0, 1]}, {"shared_expert_intermediate_size": 24},
            {"moe_router_enable_expert_bias": True}, {"tie_word_embeddings": True}, {"qk_layernorm": False},
            {"num_experts_per_tok": 1}, {"num_experts_per_tok": 8}]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(o) or "default")
def test_logits_equal_reference(tmp_path, overrides):
    cfg = tiny_moe_config(**overrides)
    w = random_moe_weights(cfg, seed=3)
    model = load_model(write_checkpoint(tmp_path / "m", cfg, w), dtype="float64")
    assert isinstance(model, LLaDAMoEModel)
    x = torch.randint(0, cfg["vocab_size"], (2, 13))
    ref, _ = ref_moe_forward(w, cfg, x)
    torch.testing.assert_close(model(x), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.fuse_projections()(x), ref, rtol=1e-10, atol=1e-10)


def test_float32_close_to_reference(tiny):
    cfg, w, folder = tiny
    x = torch.randint(0, cfg["vocab_size"], (2, 13), generator=torch.Generator().manual_seed(2))
    got = load_model(folder, dtype="float32").fuse_projections()(x)
    torch.testing.assert_close(got.double(), ref_moe_forward(w, cfg, x)[0], rtol=1e-4, atol=1e-4)


def test_padding_masks_keys_and_keeps_relative_positions(model, tiny):
    cfg, w, _ = tiny
    x = prompts(2, 15, seed=3)
    mask = torch.ones(2, 15, dtype=torch.long)
    mask[0, :6] = 0
    padded = model(x, attention_mask=mask)
    torch.testing.assert_close(padded[0, 6:], model(x[:1, 6:])[0], rtol=1e-10, atol=1e-10)
    ref, _ = ref_moe_forward(w, cfg, x, key_mask=mask)  # plain positions + key mask: RoPE is relative
    torch.testing.assert_close(padded[0, 6:], ref[0, 6:], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cache_window_equals_fastdllm_cache(model, tiny, mode):
    cfg, w, _ = tiny
    x = prompts(2, 24, seed=4)
    cache = StaticKVCache.for_model(model.config, 2, 24, model.dtype, model.device)
    cos, sin = model.rotary(torch.arange(24)[None])
    full = model.forward_window(x, cos, sin, None, cache)  # the refresh writes every column
    ref_full, past = ref_moe_forward(w, cfg, x)
    torch.testing.assert_close(full, ref_full, rtol=1e-10, atol=1e-10)
    s, e = 8, 16
    x2 = x.clone()
    x2[:, s:e] = prompts(2, e - s, seed=5)
    a, b = recompute_columns(mode, s, e, 24)
    got = model.forward_window(x2[:, a:b], cos[:, :, a:b], sin[:, :, a:b], None, cache, torch.arange(a, b))
    if mode == "prefix":
        ref, _ = ref_moe_forward(w, cfg, x2[:, s:], past=[(k[:, :, :s], v[:, :, :s]) for k, v in past], query_start=s)
    else:
        ref, _ = ref_moe_forward(w, cfg, x2[:, s:e], past=past, query_start=s, replace=(s, e))
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_fusing_keeps_checkpoint_layout_and_save_round_trips(tmp_path, tiny):
    cfg, w, folder = tiny
    model = load_model(folder, dtype="float64").fuse_projections()
    state = model.state_dict()
    assert set(state) == set(w) and all(torch.equal(state[k], w[k]) for k in w)
    block = model.model.layers[0].mlp
    assert block.experts[5].up_proj.weight.data_ptr() == block.gate_up_weight[5, 32:].data_ptr()  # views, no copy
    out = save_pretrained(model, tmp_path / "saved", dtype="float64")
    saved = json.loads((out / "config.json").read_text())
    assert {k: saved[k] for k in cfg if k != "torch_dtype"} == {k: v for k, v in cfg.items() if k != "torch_dtype"}
    x = prompts(2, 9)
    torch.testing.assert_close(load_model(out, dtype="float64").fuse_projections()(x), model(x), rtol=0, atol=0)


def test_config_round_trips_and_keeps_unknown_fields():
    data = tiny_moe_config(some_future_field={"a": 1})
    config = LLaDAMoEConfig.from_dict(data)
    assert config.extra["some_future_field"] == {"a": 1} and config.extra["auto_map"] == data["auto_map"]
    assert LLaDAMoEConfig.from_dict(config.to_dict()) == config
    assert {k: config.to_dict()[k] for k in data} == data


# ---- routing corner cases ---------------------------------------------------------------------------

def test_route_breaks_ties_as_the_reference():
    logits = torch.randint(0, 3, (64, 8), generator=torch.Generator().manual_seed(0)).double()  # many exact ties
    weights, experts = route(logits, 3)
    for i in range(64):
        ref_w, ref_e = ref_route(logits[i], 3)
        assert torch.equal(experts[i], ref_e) and torch.equal(weights[i], ref_w)


def test_top_k_weights_are_not_renormalised(tmp_path):
    """norm_topk_prob is ignored (the reference hard-codes False): with a zero router every expert has
    p = 1/E, and identical experts make the MoE k/E times one expert, whichever k the tie-break picks."""
    cfg = tiny_moe_config(norm_topk_prob=True, num_hidden_layers=1, moe_layer_freq=[1])
    w = random_moe_weights(cfg, seed=4)
    w["model.layers.0.mlp.gate.weight"].zero_()
    for e in range(1, cfg["num_experts"]):
        for name in ("gate_proj", "up_proj", "down_proj"):
            p = "model.layers.0.mlp.experts."
            w[f"{p}{e}.{name}.weight"] = w[f"{p}0.{name}.weight"].clone()
    model = load_model(write_checkpoint(tmp_path / "m", cfg, w), dtype="float64")
    m = torch.randn(5, cfg["hidden_size"], dtype=torch.float64)
    block = model.model.layers[0].mlp
    expected = cfg["num_experts_per_tok"] / cfg["num_experts"] * block.experts[0](m)
    torch.testing.assert_close(block(m), expected, rtol=1e-12, atol=1e-12)
    x = prompts(1, 9)
    torch.testing.assert_close(model(x), ref_moe_forward(w, cfg, x)[0], rtol=1e-10, atol=1e-10)


def test_expert_bias_picks_experts_and_is_part_of_the_weight():
    logits = torch.zeros(4, 8, dtype=torch.float64)
    bias = torch.zeros(8)
    bias[6] = 0.5
    weights, experts = route(logits, 2, bias)
    assert (experts[:, 0] == 6).all()
    torch.testing.assert_close(weights[:, 0], torch.full((4,), 1 / 8 + 0.5))


@pytest.mark.parametrize("case", ["random", "one_expert", "empty_experts"])
def test_grouped_path_equals_loop_path_on_cpu(case):
    """F.grouped_mm runs on the CPU in float32: the sorted-segment bookkeeping of the GPU path, checked here."""
    g = torch.Generator().manual_seed(0)
    N, d, f, E, k = 37, 32, 16, 8, 3
    x = torch.randn(N, d, generator=g)
    gate_up, down = torch.randn(E, 2 * f, d, generator=g) / d**0.5, torch.randn(E, d, f, generator=g) / f**0.5
    logits = torch.randn(N, E, generator=g)
    if case == "one_expert":
        k, logits[:, 2] = 1, 100.0
    elif case == "empty_experts":
        logits[:, :4] = -100.0  # experts 0-3 get no token
    weights, experts = route(logits, k)
    loop = run_experts(x, weights, experts, gate_up, down, path="loop")
    torch.testing.assert_close(run_experts(x, weights, experts, gate_up, down, path="grouped"), loop,
                               rtol=1e-5, atol=1e-5)
    expected = sum(weights[:, j, None] * torch.stack([
        torch.nn.functional.linear(torch.nn.functional.silu(gate_up[e, :f] @ x[t]) * (gate_up[e, f:] @ x[t]), down[e])
        for t, e in enumerate(experts[:, j].tolist())]) for j in range(k))
    torch.testing.assert_close(loop, expected, rtol=1e-5, atol=1e-5)


# ---- decoding ---------------------------------------------------------------------------------------

@pytest.fixture
def ref_moe(monkeypatch):
    """reference.py's generate loops running on the LLaDA-MoE restatement."""
    monkeypatch.setattr(reference, "ref_forward", ref_moe_forward)


def test_topk_equals_llada_generate(model, tiny, ref_moe):
    cfg, w, _ = tiny
    x = prompts(3, 9, seed=1)
    attn = torch.ones_like(x)
    attn[0, :4] = 0
    ref = ref_llada_generate(w, cfg, x, 16, 16, 8, MASK_ID, attention_mask=attn)
    out = decode(model, x, TopK(8), mask_id=MASK_ID, attention_mask=attn, gen_length=16, block_length=8,
                 early_stop=False)
    assert torch.equal(out.sequences, ref)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("rule", [("threshold", 0.3), ("factor", 1.0)], ids=str)
def test_parallel_rules_equal_fastdllm(model, tiny, ref_moe, cache, rule):
    cfg, w, _ = tiny
    x = prompts(1, 6, seed=4)
    name, value = rule
    ref, ref_nfe = ref_fastdllm_generate(w, cfg, x, 16, 8, MASK_ID, cache=cache, **{name: value})
    policy = Threshold(value) if name == "threshold" else Factor(value)
    out = decode(model, x, policy, mask_id=MASK_ID, gen_length=16, block_length=8, cache=cache, early_stop=False)
    assert torch.equal(out.sequences, ref) and out.nfe == ref_nfe
    assert out.nfe < 16  # parallel commits happen, or the equality proves little


CASES = [(policy, cache, credit) for policy in (TopK(4), Threshold(0.4), Factor(1.0), Frechet(0.25))
         for cache in ("none", "prefix", "dual") for credit in (None, CreditConfig())]


@pytest.mark.parametrize("policy,cache,credit", CASES, ids=lambda v: repr(v)[:24])
def test_every_mode_decodes_a_ragged_batch_as_rows_alone(model, policy, cache, credit):
    g = torch.Generator().manual_seed(5)
    rows = [torch.randint(0, 100, (n,), generator=g) for n in (7, 3)]
    batch = torch.full((2, 7), EOS_ID)
    attn = torch.zeros((2, 7), dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, 7 - len(r):], attn[i, 7 - len(r):] = r, 1
    kw = dict(mask_id=MASK_ID, gen_length=16, block_length=8, cache=cache, credit=credit, early_stop=False)
    together = decode(model, batch, policy, attention_mask=attn, **kw)
    assert (together.tokens != MASK_ID).all() and (together.commit_step >= 0).all()
    for i, r in enumerate(rows):
        alone = decode(model, r[None], policy, **kw)
        assert torch.equal(together.tokens[i], alone.tokens[0])
        assert torch.equal(together.commit_step[i], alone.commit_step[0])


# ---- loading ----------------------------------------------------------------------------------------

def test_load_api_end_to_end(tiny):
    cfg, _, folder = tiny
    lm = unmask.load(folder, dtype="float64", device="cpu")
    assert isinstance(lm.model, LLaDAMoEModel) and lm.mask_id == MASK_ID
    out = lm.generate(["hello world", "the answer is"], policy="threshold", threshold=0.3, gen_length=16,
                      block_length=8, cache="dual")
    assert len(out.texts) == 2 and out.tokens.shape == (2, 16)
    ids, mask = lm.encode_prompts(["hello world", "the answer is"])
    again = decode(lm.model, ids, Threshold(0.3), mask_id=MASK_ID, attention_mask=mask, gen_length=16,
                   block_length=8, cache="dual", stop_ids=lm.tokenizer.stop_ids)
    assert torch.equal(out.tokens, again.tokens)


def test_model_type_spellings_dispatch(tmp_path, tiny, tiny_ckpt):
    cfg, w, _ = tiny
    dllm = write_checkpoint(tmp_path / "dllm", {**cfg, "model_type": "lladamoe", "architectures": []}, w)
    assert isinstance(load_model(dllm), LLaDAMoEModel)
    assert isinstance(load_model(tiny_ckpt), LLaDAModel)  # dense LLaDA: model_type llada, LLaDAModelLM


@pytest.mark.parametrize("overrides,message", [
    ({"num_experts_per_tok": 9}, "num_experts_per_tok=9 exceeds num_experts=8"),
    ({"num_experts": "8"}, "num_experts='8' must be a positive integer"),
    ({"moe_layer_freq": [1]}, "moe_layer_freq=[1] must be null or a list of num_hidden_layers=2"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"mask_token_id": 500}, "mask_token_id=500 must be a token id below vocab_size=128"),
    ({"hidden_size": 66}, "hidden_size=66 must be a multiple of num_attention_heads=4"),
])
def test_bad_config_names_the_field(tmp_path, tiny, overrides, message):
    cfg, w, _ = tiny
    folder = write_checkpoint(tmp_path / "bad", {**cfg, **overrides}, w)
    with pytest.raises(CheckpointError, match="config.json.*" + message.replace("[", r"\[").replace("]", r"\]")):
        load_model(folder)


def test_missing_or_misshapen_expert_weights(tmp_path, tiny):
    cfg, w, _ = tiny
    missing = {k: v for k, v in w.items() if k != "model.layers.1.mlp.experts.7.down_proj.weight"}
    with pytest.raises(CheckpointError, match=r"missing \['model.layers.1.mlp.experts.7.down_proj.weight'\]"):
        load_model(write_checkpoint(tmp_path / "a", cfg, missing))
    bad = {**w, "model.layers.0.mlp.experts.2.up_proj.weight": torch.zeros(31, 64, dtype=torch.float64)}
    with pytest.raises(CheckpointError, match=r"experts.2.up_proj.weight has shape \(31, 64\), config implies"):
        load_model(write_checkpoint(tmp_path / "b", cfg, bad))


# ---- speed floors -----------------------------------------------------------------------------------

def test_weight_bytes_read_counts_routed_experts(model):
    c = model.config
    per_expert = 3 * c.hidden_size * c.expert_intermediate_size * 8
    everything = sum(p.numel() for p in model.parameters()) * 8
    others = everything - c.num_hidden_layers * c.num_experts * per_expert
    one_token = model.weight_bytes_read(lambda: model(prompts(1, 1)))
    assert one_token == others + c.num_hidden_layers * c.num_experts_per_tok * per_expert
    assert model.weight_bytes_read(lambda: model(prompts(4, 64))) == everything  # many tokens: every expert
    embedding = c.vocab_size * c.hidden_size * 8  # a lookup, not multiplied
    assert model.active_parameters * 8 == others - embedding + c.num_hidden_layers * c.num_experts_per_tok * per_expert


def test_real_shape_parameter_counts():
    with torch.device("meta"):
        model = LLaDAMoEModel(LLADA_MOE_7B_A1B)
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e9, 2) == 7.36 and round(model.active_parameters / 1e9, 1) == 1.4  # the paper's 7B, 1.4B


def test_bench_runs_on_cpu(tmp_path):
    from unmask.eval.speed import run_bench

    rows = run_bench(None, "llada-moe-tiny", tmp_path, (1,), ("dual",), 8, 16, 8, None, "cpu", 1, "test",
                     log=lambda _: None)
    (row,) = rows
    assert row.step_ms > 0 and 0 < row.weight_floor_ms and row.amortised_floor_ms > 0
    assert json.loads((tmp_path / "bench.json").read_text())["env"]["active_params"] < \
        json.loads((tmp_path / "bench.json").read_text())["env"]["params"]


# ---- CUDA -------------------------------------------------------------------------------------------

def cuda_bf16(model: LLaDAMoEModel) -> LLaDAMoEModel:
    fresh = type(model)(model.config).to(torch.bfloat16)
    fresh.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    return fresh.cuda().eval().requires_grad_(False).fuse_projections()


@cuda
def test_grouped_path_equals_loop_path_on_cuda(model):
    """bf16 on the GPU: the grouped path (auto on sm90+) against the loop path and a float32 loop, on the
    same routing; the whole model's greedy tokens agree."""
    g = torch.Generator(device="cuda").manual_seed(0)
    N, d, f, E, k = 300, 64, 32, 8, 3
    x = torch.randn(N, d, generator=g, device="cuda")
    gate_up, down = torch.randn(E, 2 * f, d, generator=g, device="cuda") / 8, torch.randn(E, d, f, generator=g,
                                                                                       device="cuda") / 6
    weights, experts = route(torch.randn(N, E, generator=g, device="cuda"), k)
    exact = run_experts(x, weights, experts, gate_up, down, path="loop")
    bf16 = [t.to(torch.bfloat16) for t in (x, gate_up, down)]
    grouped = run_experts(bf16[0], weights, experts, *bf16[1:], path="grouped")
    loop = run_experts(bf16[0], weights, experts, *bf16[1:], path="loop")
    torch.testing.assert_close(grouped.float(), loop.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grouped.float(), exact, rtol=3e-2, atol=3e-2)
    gpu = cuda_bf16(model)
    ids = prompts(4, 40, seed=6).cuda()
    first = gpu.set_expert_path("grouped")(ids).argmax(-1)
    second = gpu.set_expert_path("loop")(ids).argmax(-1)
    assert (first == second).float().mean() > 0.95


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
                    reason="graph capture of the experts needs grouped_mm's device offsets (CUDA sm90+)")
@pytest.mark.parametrize("policy,cache,credit", CASES[::3], ids=lambda v: repr(v)[:24])
def test_graph_replay_equals_eager_on_cuda(model, policy, cache, credit):
    gpu = cuda_bf16(model)
    x = prompts(3, 9, seed=2).cuda()
    for mode in ("exact", "fused"):
        gpu.compile_kernels(mode == "fused")
        opts = EngineOptions(3, 9 + 24, 24, 8, False, MASK_ID, cache, 0.0, False, None, (), False)
        eager = DecodeEngine(gpu, policy, Scorer(), credit, opts)
        graph = DecodeEngine(gpu, policy, Scorer(), credit, opts, graphs=True)
        assert graph.graphs
        for program in (eager, graph):
            run_rows(program, x, eager.G)
        assert torch.equal(eager.x, graph.x) and torch.equal(eager.commit_step, graph.commit_step)
    gpu.compile_kernels(False)
