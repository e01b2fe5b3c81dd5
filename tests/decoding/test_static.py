"""The static decode step: compiled kernels give the reference-checked tokens, engines (buffers) are allocated
once and reused, compile modes are validated, and on a GPU the captured CUDA graphs replay exactly what the
eager step computes."""

import pytest
import torch
from reference import ref_fastdllm_generate

import unmask
from unmask.decoding import CreditConfig, Factor, Frechet, Scorer, Threshold, TopK, decode
from unmask.decoding.engine import DecodeEngine, EngineOptions, RowRequest, run_queue
from unmask.decoding.loop import resolve_compile
from unmask.decoding.policies.eb import EntropyBounded
from unmask.decoding.policies.klass import KLASS
from unmask.decoding.policies.wino import Wino
from unmask.decoding.scorers import CHUNK_ELEMENTS, argmax_confidence
from unmask.models import load_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from llada_fixtures import random_weights, tiny_config, write_checkpoint

    cfg = tiny_config()
    return write_checkpoint(tmp_path_factory.mktemp("static") / "m", cfg, random_weights(cfg))


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint, dtype="float64").fuse_projections()


@pytest.fixture(scope="module")
def model32(checkpoint):
    return load_model(checkpoint, dtype="float32").fuse_projections()


def prompts(n=2, length=7, seed=0):
    return torch.randint(0, 100, (n, length), generator=torch.Generator().manual_seed(seed))


CASES = [(policy, cache, credit)
         for policy in (TopK(4), Threshold(0.3), Factor(1.0), Frechet(0.25))
         for cache in ("none", "prefix", "dual")
         for credit in (None, CreditConfig())]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("policy,cache,credit", CASES, ids=lambda v: repr(v)[:24])
def test_compiled_kernels_give_the_eager_tokens(model, model32, dtype, policy, cache, credit):
    """compile="fused" on the CPU runs the torch.compile kernels (no graphs): same tokens, NFE, commit steps,
    in float64 and in float32 (where the reference-checked eager path is the one of the other tests)."""
    model = model if dtype == "float64" else model32
    mask_id = model.config.mask_token_id
    x = prompts(3, 9, seed=2)
    attn = torch.ones_like(x)
    attn[0, :4] = 0  # a ragged batch
    kw = dict(mask_id=mask_id, attention_mask=attn, gen_length=24, block_length=8, cache=cache, credit=credit,
              early_stop=False)
    eager = decode(model, x, policy, compile=False, **kw)
    fused = decode(model, x, policy, compile="fused", **kw)
    assert torch.equal(eager.sequences, fused.sequences)
    assert torch.equal(eager.commit_step, fused.commit_step)
    assert eager.nfe == fused.nfe


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_compiled_kernels_equal_fastdllm(model, tiny_cfg, tiny_weights, cache):
    """Directly against the restatement of Fast-dLLM's generate* (tiny_weights are the model fixture's)."""
    weights = tiny_weights
    mask_id = tiny_cfg["mask_token_id"]
    for row in prompts(2, 6, seed=4):
        x = row[None]
        ref, ref_nfe = ref_fastdllm_generate(weights, tiny_cfg, x, 24, 8, mask_id, threshold=0.3, cache=cache)
        out = decode(model, x, Threshold(0.3), mask_id=mask_id, gen_length=24, block_length=8, cache=cache,
                     early_stop=False, compile="fused")
        assert torch.equal(out.sequences, ref)
        assert out.nfe == ref_nfe


def test_engines_are_reused_and_leave_no_state_behind(model):
    mask_id = model.config.mask_token_id
    model.__dict__.pop("_decode_engines", None)
    kw = dict(mask_id=mask_id, gen_length=16, block_length=8, cache="dual", early_stop=False)
    a, b = prompts(2, 7, seed=0), prompts(2, 7, seed=1)
    first = decode(model, a, Threshold(0.3), **kw)
    (engine,) = model._decode_engines.values()
    pointers = (engine.x.data_ptr(), engine.kv.kv.data_ptr(), engine.commit_step.data_ptr())
    decode(model, b, Threshold(0.3), **kw)  # same shape: same engine, same buffers
    again = decode(model, a, Threshold(0.3), **kw)
    assert list(model._decode_engines.values()) == [engine]
    assert (engine.x.data_ptr(), engine.kv.kv.data_ptr(), engine.commit_step.data_ptr()) == pointers
    assert torch.equal(first.sequences, again.sequences) and torch.equal(first.commit_step, again.commit_step)
    decode(model, prompts(2, 5), Threshold(0.3), **kw)  # another prompt length: another engine
    assert len(model._decode_engines) == 2


def test_the_host_reads_one_status_per_step(model, monkeypatch):
    """The only read-back of a step is the slots' status bytes (the scheduler needs them)."""
    opts = EngineOptions(2, 7 + 16, 16, 8, False, model.config.mask_token_id, "dual", 0.0, False, None, (), False)
    engine = DecodeEngine(model, Threshold(0.3), Scorer(), None, opts)
    reads = []
    original = torch.Tensor.tolist

    def counting(tensor):
        reads.append(tensor.shape)
        return original(tensor)

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    steps, _ = run_queue(engine, [RowRequest(p, 16, key=i) for i, p in enumerate(prompts())], lambda r: None)
    monkeypatch.undo()
    status_reads = [s for s in reads if s == torch.Size([engine.hi]) or s == torch.Size([2])]
    assert steps > 2 and len(reads) == steps + 2 * 1  # one status per step, plus nfe/finished at the retirement
    assert len(status_reads) >= steps


def test_policy_step_as_device_tensor_equals_int():
    g = torch.Generator().manual_seed(0)
    masked = torch.rand(8, 16, generator=g) < 0.6
    conf = torch.where(masked, torch.rand(8, 16, generator=g, dtype=torch.float64), -torch.inf)
    policy = TopK(4)
    schedule = policy.start_block(masked)
    for step in range(4):
        assert torch.equal(policy(conf, masked, step, schedule), policy(conf, masked, torch.tensor(step), schedule))


def test_confidence_is_float64_and_chunked(monkeypatch):
    logits = torch.randn(3, 5, 1000, dtype=torch.float64).to(torch.bfloat16)
    candidates, confidence = argmax_confidence(logits)
    assert confidence.dtype == torch.float64
    expect = torch.softmax(logits.double(), dim=-1).gather(-1, candidates[..., None]).squeeze(-1)
    torch.testing.assert_close(confidence, expect, rtol=1e-13, atol=0)
    monkeypatch.setattr("unmask.decoding.scorers.CHUNK_ELEMENTS", 2000)  # 2 rows per chunk
    assert CHUNK_ELEMENTS > 2000
    assert torch.equal(argmax_confidence(logits)[1], confidence)


def test_compile_modes_are_validated(tiny_ckpt):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_compile(None, cpu) == "off" and resolve_compile(None, cuda) == "fused"
    assert resolve_compile(True, cpu) == "fused" and resolve_compile(False, cuda) == "off"
    assert resolve_compile("exact", cuda) == "exact"
    with pytest.raises(ValueError, match="unknown compile mode 'fast'.*fused, exact, off"):
        resolve_compile("fast", cpu)
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        unmask.load(tiny_ckpt, dtype="float32", device="cpu", compile="fast")


def test_generate_exact_mode_on_cpu_is_eager(tiny_ckpt):
    lm = unmask.load(tiny_ckpt, dtype="float64", device="cpu")
    kw = dict(policy="threshold", threshold=0.3, gen_length=16, block_length=8, cache="dual")
    assert lm.generate("hello world", compile="exact", **kw).texts == lm.generate("hello world", **kw).texts


REFRESH_LIGHT = [(Threshold(0.3), cache, credit) for cache in ("prompt_stale(every=2)", "partial(budget=5)",
                                                                         "partial(budget=2,reuse=1)")
                 for credit in (None, CreditConfig())]
# the context policies (entropy budget; KL history in per-row state; WINO's shadow block and re-masks)
CONTEXT_RULES = [(EntropyBounded(6.0), "dual", CreditConfig()), (EntropyBounded(6.0), "none", None),
                 (KLASS(0.05, 0.5, 2, 8), "none", None), (KLASS(0.05, 0.5, 2, 8), "dual", CreditConfig()),
                 (Wino(0.05, 0.5), "none", None), (Wino(0.05, 0.5), "none", CreditConfig())]


@pytest.mark.parametrize("policy,cache,credit", CONTEXT_RULES, ids=lambda v: repr(v)[:24])
def test_compiled_kernels_give_the_eager_tokens_for_context_rules(model, policy, cache, credit):
    x = prompts(3, 9, seed=2)
    attn = torch.ones_like(x)
    attn[0, :4] = 0
    kw = dict(mask_id=model.config.mask_token_id, attention_mask=attn, gen_length=24, block_length=8, cache=cache,
              credit=credit, early_stop=False)
    eager = decode(model, x, policy, compile=False, **kw)
    fused = decode(model, x, policy, compile="fused", **kw)
    assert torch.equal(eager.sequences, fused.sequences) and torch.equal(eager.commit_step, fused.commit_step)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("policy,cache,credit", CASES + REFRESH_LIGHT + CONTEXT_RULES, ids=lambda v: repr(v)[:24])
def test_graph_replay_equals_eager_on_cuda(model, policy, cache, credit):
    cuda_model = type(model)(model.config).to(torch.float32)
    cuda_model.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    cuda_model = cuda_model.cuda().eval().requires_grad_(False)
    x = prompts(3, 9, seed=2).cuda()
    kw = dict(mask_id=model.config.mask_token_id, gen_length=24, block_length=8, cache=cache, credit=credit,
              early_stop=False)
    for mode in ("exact", "fused"):
        cuda_model.compile_kernels(mode == "fused")
        opts = EngineOptions(3, 9 + 24, 24, 8, False, kw["mask_id"], cache, 0.0, False, None, (), False)
        engines = [DecodeEngine(cuda_model, policy, Scorer(), credit, opts, graphs=g) for g in (False, True)]
        for engine in engines:
            run_queue(engine, [RowRequest(p, 24, key=i) for i, p in enumerate(x)], lambda r: None)
        eager, graph = engines
        assert graph.graphs and not eager.graphs
        assert torch.equal(eager.x, graph.x) and torch.equal(eager.commit_step, graph.commit_step)


@pytest.mark.parametrize("early_stop", [False, True])
def test_batch_buckets_share_programs_and_keep_tokens(model, early_stop):
    """In fused mode a batch of 3 runs in an engine of 4 slots: same tokens, NFE."""
    mask_id = model.config.mask_token_id
    x = prompts(3, 9, seed=5)
    attn = torch.ones_like(x)
    attn[1, :3] = 0
    stop = (model.config.eos_token_id,)
    kw = dict(mask_id=mask_id, attention_mask=attn, gen_length=16, block_length=8, cache="dual", early_stop=early_stop,
              stop_ids=stop)
    model.__dict__.pop("_decode_engines", None)
    eager = decode(model, x, Frechet(0.25), compile=False, **kw)
    fused = decode(model, x, Frechet(0.25), compile="fused", **kw)
    assert fused.sequences.shape == eager.sequences.shape
    assert torch.equal(eager.sequences, fused.sequences) and torch.equal(eager.nfe_per_row, fused.nfe_per_row)
    assert eager.nfe == fused.nfe
    four = [e for e in model._decode_engines.values() if e.S == 4]
    assert len(four) == 1  # the fused engine holds 4 slots


@pytest.mark.parametrize("policy", [TopK(8), Threshold(0.3)], ids=repr)
def test_on_block_reports_progress(model, policy):
    seen = []
    decode(model, prompts(), policy, mask_id=model.config.mask_token_id, gen_length=32, block_length=8,
           early_stop=False, on_block=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (8, 8) and {total for _, total in seen} == {8}  # 2 rows x 4 blocks
    assert [done for done, _ in seen] == sorted(set(done for done, _ in seen))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_captured_decode_equals_eager_whatever_ran_before(model):
    """``unmask bench``'s order: a captured decode first (its graphs hold the kernels compiled for the shapes
    seen so far), then other shapes, then the same decode's kernels run eagerly. Under dynamo's automatic
    dynamic shapes the later shapes recompiled every kernel with dynamic sizes and the eager run took those
    (other roundings, other bf16 tokens); with static per-shape kernels the two agree bit for bit."""
    import torch._dynamo

    torch._dynamo.reset()  # a fresh compile history, as in a new process
    cuda_model = type(model)(model.config).to(torch.bfloat16)
    cuda_model.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    cuda_model = cuda_model.cuda().eval().requires_grad_(False).fuse_projections().compile_kernels(True)
    mask_id = model.config.mask_token_id
    x = prompts(1, 16, seed=3).cuda()
    kw = dict(mask_id=mask_id, gen_length=32, block_length=8, cache="dual", early_stop=False)
    captured = decode(cuda_model, x, TopK(8), compile="fused", **kw)
    decode(cuda_model, prompts(3, 11, seed=4).cuda(), TopK(8), compile="fused", **kw)  # other shapes
    opts = EngineOptions(1, 16 + 32, 32, 8, False, mask_id, "dual", 0.0, False, None, (), False)
    eager = DecodeEngine(cuda_model, TopK(8), Scorer(), None, opts, graphs=False)
    run_queue(eager, [RowRequest(x[0], 32)], lambda r: None)
    assert captured.graphs
    assert torch.equal(captured.sequences[0], eager.x[0])
