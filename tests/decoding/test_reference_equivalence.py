"""Token-for-token equality with plain restatements of LLaDA's and Fast-dLLM's generate loops."""

import pytest
import torch
from reference import _num_transfer, ref_fastdllm_generate, ref_llada_generate

from unmask.decoding import Factor, Threshold, TopK, decode
from unmask.models import load_model

MASK = None


@pytest.fixture
def model(tiny_ckpt):
    return load_model(tiny_ckpt, dtype="float64")


def prompts(n=2, length=7, seed=0):
    return torch.randint(0, 100, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("gen_length,block_length,steps", [(16, 16, 16), (24, 8, 12), (16, 4, 16), (12, 4, 6)])
def test_topk_equals_llada_generate(model, tiny_cfg, tiny_weights, gen_length, block_length, steps):
    mask_id = tiny_cfg["mask_token_id"]
    x = prompts()
    ref = ref_llada_generate(tiny_weights, tiny_cfg, x, steps, gen_length, block_length, mask_id)
    nb = gen_length // block_length
    out = decode(model, x, TopK(steps // nb), mask_id=mask_id, gen_length=gen_length, block_length=block_length,
                 early_stop=False)
    assert torch.equal(out.sequences, ref)
    assert out.nfe == steps
    assert (out.commit_step >= 0).all()


def test_topk_equals_llada_generate_with_padding(model, tiny_cfg, tiny_weights):
    mask_id = tiny_cfg["mask_token_id"]
    x = prompts(3, 9, seed=1)
    attn = torch.ones_like(x)
    attn[0, :4] = 0
    attn[2, :2] = 0
    ref = ref_llada_generate(tiny_weights, tiny_cfg, x, 16, 16, 8, mask_id, attention_mask=attn)
    out = decode(model, x, TopK(8), mask_id=mask_id, attention_mask=attn, gen_length=16, block_length=8,
                 early_stop=False)
    assert torch.equal(out.sequences, ref)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("rule", [("threshold", 0.3), ("threshold", 0.6), ("factor", 1.0), ("factor", 2.0)])
def test_threshold_and_factor_equal_fastdllm(model, tiny_cfg, tiny_weights, cache, rule):
    mask_id = tiny_cfg["mask_token_id"]
    name, value = rule
    for row in prompts(2, 6, seed=4):  # Fast-dLLM's loops are batch-size-1 semantics
        x = row[None]
        kwargs = {"threshold": value} if name == "threshold" else {"factor": value}
        ref, ref_nfe = ref_fastdllm_generate(tiny_weights, tiny_cfg, x, 24, 8, mask_id, cache=cache, **kwargs)
        policy = Threshold(value) if name == "threshold" else Factor(value)
        out = decode(model, x, policy, mask_id=mask_id, gen_length=24, block_length=8, cache=cache,
                     early_stop=False)
        assert torch.equal(out.sequences, ref)
        assert out.nfe == ref_nfe


def test_parallel_rules_commit_several_tokens_per_step(model, tiny_cfg):
    """The fixtures must exercise parallel commits, or the equalities above prove little."""
    out = decode(model, prompts(2, 6, seed=4), Threshold(0.3), mask_id=tiny_cfg["mask_token_id"], gen_length=24,
                 block_length=8, early_stop=False)
    assert out.nfe < 24


@pytest.mark.parametrize("options", [
    {"cfg_scale": 1.5},
    {"logits_eos_inf": True},
    {"confidence_eos_eot_inf": True},
])
def test_llada_options_equal_reference(tmp_path, tiny_cfg, tiny_weights, options):
    from llada_fixtures import write_checkpoint

    import unmask

    # make end-of-text and end-of-turn frequent candidates, so that the options matter
    mask_id, eos, eot = tiny_cfg["mask_token_id"], tiny_cfg["eos_token_id"], tiny_cfg["eos_token_id"] + 3
    head = tiny_weights["model.transformer.ff_out.weight"]
    head[eos] = head[76] * 1.2  # 76 and 31 are frequent argmaxes of this fixture
    head[eot] = head[31] * 1.2
    lm = unmask.load(write_checkpoint(tmp_path / "m", tiny_cfg, tiny_weights), dtype="float64")
    assert lm.tokenizer.eot_id == eot
    x = prompts(2, 8, seed=7)
    attn = torch.ones_like(x)
    attn[1, :3] = 0
    ref = ref_llada_generate(tiny_weights, tiny_cfg, x, 16, 16, 8, mask_id, attention_mask=attn, eos_id=eos,
                             eot_id=eot, **options)
    out = lm.generate(x, attention_mask=attn, policy="topk", steps=16, gen_length=16, block_length=8,
                      early_stop=False, **options)
    assert torch.equal(out.sequences, ref)
    plain = lm.generate(x, attention_mask=attn, policy="topk", steps=16, gen_length=16, block_length=8,
                        early_stop=False)
    assert not torch.equal(plain.sequences, ref), "the option had no effect on this fixture"


def llada_head_generate(model, prompt, steps, gen_length, block_length, mask_id):
    """LLaDA's generate.py at HEAD (temperature 0, low_confidence) over unmask's own forward: the confidence
    softmax in the logits' dtype (``F.softmax(logits)``), top-k ties to the lowest position."""
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt.shape[1]] = prompt
    num_blocks = gen_length // block_length
    for nb in range(num_blocks):
        s = prompt.shape[1] + nb * block_length
        quota = _num_transfer(x[:, s:s + block_length] == mask_id, steps // num_blocks)
        for i in range(steps // num_blocks):
            mask_index = x == mask_id
            logits = model.forward(x)
            x0 = logits.argmax(-1)
            p = torch.softmax(logits, dim=-1)  # bf16 in, bf16 out
            conf = p.gather(-1, x0[..., None]).squeeze(-1).double()
            conf[:, s + block_length:] = -torch.inf
            conf = torch.where(mask_index, conf, -torch.inf)
            for j in range(x.shape[0]):
                order = conf[j].sort(descending=True, stable=True).indices[: int(quota[j, i])]
                x[j, order] = x0[j, order]
    return x


def test_confidence_in_the_logits_dtype_equals_llada_head(tmp_path):
    """``confidence_dtype="logits"`` reproduces LLaDA's generate.py at HEAD in bf16 (softmax in bf16, whose
    rounded probabilities tie and reorder commits), where the float64 default follows the earlier revision.
    The LM head is scaled up so that confidences sit near 1, where bf16 steps are 2^-8 and ties are common."""
    from llada_fixtures import random_weights, tiny_config, write_checkpoint

    from unmask.decoding.scorers import Scorer

    cfg = tiny_config()
    weights = random_weights(cfg)
    weights["model.transformer.ff_out.weight"] *= 6
    model = load_model(write_checkpoint(tmp_path / "peaked", cfg, weights), dtype="bfloat16")
    mask_id = cfg["mask_token_id"]
    differs = 0
    for seed in range(6):
        x = prompts(2, seed=seed)
        head = llada_head_generate(model, x, 16, 16, 8, mask_id)
        out = decode(model, x, TopK(8), mask_id=mask_id, gen_length=16, block_length=8, early_stop=False,
                     scorer=Scorer(confidence_dtype="logits"))
        assert torch.equal(out.sequences, head)
        wide = decode(model, x, TopK(8), mask_id=mask_id, gen_length=16, block_length=8, early_stop=False)
        differs += not torch.equal(wide.sequences, head)
    assert differs  # the option matters in bf16
