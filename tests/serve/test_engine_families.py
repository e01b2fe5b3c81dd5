"""The serving engine on every model family (tiny random checkpoints in the real layouts): mixed
requests through shared slots equal each request decoded alone."""

from __future__ import annotations

import dream_fixtures
import llada2_fixtures
import llada_fixtures
import llada_moe_fixtures
import pytest
import torch

import unmask
from unmask.decoding.config import DecodeConfig

from .test_engine import run_engine

SETTINGS = [
    {"policy": "threshold", "threshold": 0.6, "cache": "dual", "credit": True},
    {"policy": "topk", "cache": "none"},
    {"policy": "factor", "factor": 1.0, "cache": "prefix"},
    {"policy": "frechet", "margin": 0.25, "cache": "dual"},
    {"policy": "threshold", "threshold": 0.6, "cache": "prompt_stale(every=2)"},  # answer-only refreshes
    {"policy": "threshold", "threshold": 0.6, "cache": "partial(budget=3)", "credit": True},  # no block refresh
    {"policy": "threshold", "threshold": 0.6, "cache": "partial(budget=0,reuse=1)"},  # decoded block columns reused
]
# policies that revise tokens (WINO re-masks: the server settles only the blocks a row has left); LLaDA-type
REVISING = [{"policy": "wino", "threshold": 0.3, "cache": "none"}]
# a block-diffusion model (LLaDA2): its samplers, the exact block cache or none
BLOCK_SETTINGS = [
    {"policy": "llada2", "threshold": 0.6, "cache": "dual"},
    {"policy": "llada2_edit", "threshold": 0.5, "edit": 0.0, "post": 3, "cache": "dual"},
    {"policy": "threshold", "threshold": 0.6, "cache": "none", "credit": True},
    {"policy": "llada2_edit", "threshold": 0.7, "edit": 0.5, "cache": "none"},
]


def checkpoint(family: str, folder):
    if family == "llada":
        cfg = llada_fixtures.tiny_config(torch_dtype="float32")
        return llada_fixtures.write_checkpoint(folder, cfg, llada_fixtures.random_weights(cfg, dtype=torch.float32))
    if family == "llada2":
        cfg = llada2_fixtures.tiny_llada2_config()
        return llada_fixtures.write_checkpoint(folder, cfg, llada2_fixtures.random_llada2_weights(cfg,
                                                                                                  dtype=torch.float32))
    if family == "llada-moe":
        cfg = llada_moe_fixtures.tiny_moe_config()
        weights = llada_moe_fixtures.random_moe_weights(cfg, dtype=torch.float32)
        return llada_fixtures.write_checkpoint(folder, cfg, weights)
    cfg = dream_fixtures.tiny_config(torch_dtype="float32")
    return dream_fixtures.write_checkpoint(folder, cfg, dream_fixtures.random_weights(cfg, dtype=torch.float32))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["llada", "llada-moe", "dream", "llada2"])
def test_engine_equals_alone_on_each_family(family, device, tmp_path):
    """On CUDA the dual window of every slot is replayed from a CUDA graph (eager kernels, float32)."""
    lm = unmask.load(checkpoint(family, tmp_path / family), device=device, dtype="float32", compile=False)
    generator = torch.Generator().manual_seed(0)
    vocab = min(lm.model.config.vocab_size, 90)  # plain word tokens of the fixtures' tokenizers
    requests = []
    for i in range(8):
        table = BLOCK_SETTINGS if family == "llada2" else SETTINGS + REVISING * (family != "dream")
        settings = table[i % len(table)]
        ids = torch.randint(8, vocab, (5 + 3 * i,), generator=generator).tolist()
        max_tokens = (20, 32, 45, 12)[i % 4]
        config = DecodeConfig.create(**settings, gen_length=-(-max_tokens // 16) * 16, block_length=16)
        requests.append((ids, config, max_tokens))
    results = run_engine(lm, [(ids, c, m, ()) for ids, c, m in requests], max_batch=3, token_prompts=True)
    for key, (ids, config, max_tokens) in enumerate(requests):
        out = lm.generate(torch.tensor([ids]), config)  # eager: the load's compile=False
        n = min(int(out.lengths[0]), max_tokens)
        expected = lm.tokenizer.decode(out.tokens[0, :n].tolist(), skip_special_tokens=True).strip()
        assert "".join(u.text for u in results[key]) == expected, (family, key, config)
        assert 1 <= results[key][-1].usage.forwards <= int(out.nfe_per_row[0])  # a row leaves once settled
