"""CreditDecoding: the update and fusion rules against a dense restatement; composition with policies."""

import math

import pytest
import torch

from unmask.decoding import CreditConfig, CreditState, Factor, Frechet, Threshold, TopK, decode
from unmask.models import load_model


def dense_credit_steps(logits_steps, masked_steps, alpha, beta, gamma):
    """A dense B x L x V restatement: C <- beta C + 1[v = argmax] p^gamma (masked only), fused = l + a log(1+C)."""
    C = torch.zeros_like(logits_steps[0], dtype=torch.float64)
    fused_all = []
    for logits, masked in zip(logits_steps, masked_steps, strict=True):
        p = torch.softmax(logits.double(), -1)
        top = logits.argmax(-1)
        C = beta * C
        for b in range(logits.shape[0]):
            for i in range(logits.shape[1]):
                if masked[b, i]:
                    C[b, i, top[b, i]] += p[b, i, top[b, i]] ** gamma
        fused_all.append(logits.double() + alpha * torch.log1p(C))
    return fused_all


def test_sparse_credit_equals_dense_restatement():
    g = torch.Generator().manual_seed(0)
    B, L, V, steps = 3, 6, 11, 7
    logits_steps = [torch.randn(B, L, V, generator=g, dtype=torch.float64) * 2 for _ in range(steps)]
    masked_steps = [torch.rand(B, L, generator=g) < 0.8 for _ in range(steps)]
    cfg = CreditConfig(alpha=0.65, beta=0.7, gamma=0.2, slots=steps)  # enough slots: exact
    state = CreditState(cfg, B, L, torch.device("cpu"))
    ref = dense_credit_steps(logits_steps, masked_steps, 0.65, 0.7, 0.2)
    for logits, masked, expect in zip(logits_steps, masked_steps, ref, strict=True):
        torch.testing.assert_close(state.update_and_fuse(logits, masked), expect, rtol=1e-6, atol=1e-6)


def test_default_credit_is_exact_with_many_distinct_top1_tokens():
    """A position whose top-1 changes at every step (more distinct tokens than a small slot table holds):
    the default (one slot per step of the block) equals the dense rule; slots=4 evicts and differs."""
    B, L, V, steps = 1, 8, 16, 8
    logits_steps = []
    for t in range(steps):
        logits = torch.zeros(B, L, V, dtype=torch.float64)
        logits[..., t] = 3.0  # token t is the top-1 at step t, everywhere
        logits_steps.append(logits)
    masked_steps = [torch.ones(B, L, dtype=torch.bool)] * steps
    ref = dense_credit_steps(logits_steps, masked_steps, 0.65, 0.7, 0.2)
    exact = CreditState(CreditConfig(), B, L, torch.device("cpu"))
    small = CreditState(CreditConfig(slots=4), B, L, torch.device("cpu"))
    differs = False
    for logits, masked, expect in zip(logits_steps, masked_steps, ref, strict=True):
        torch.testing.assert_close(exact.update_and_fuse(logits, masked), expect, rtol=1e-6, atol=1e-6)
        differs |= not torch.allclose(small.update_and_fuse(logits, masked), expect, rtol=1e-6, atol=1e-6)
    assert differs


def test_credit_survives_argmax_change_by_decay():
    cfg = CreditConfig(alpha=1.0, beta=0.5, gamma=1.0, slots=2)  # two steps on a one-position state
    state = CreditState(cfg, 1, 1, torch.device("cpu"))
    masked = torch.ones(1, 1, dtype=torch.bool)
    a = torch.tensor([[[math.log(0.8), math.log(0.2)]]], dtype=torch.float64)
    b = torch.tensor([[[math.log(0.3), math.log(0.7)]]], dtype=torch.float64)
    state.update_and_fuse(a, masked)
    fused = state.update_and_fuse(b, masked)
    # token 0: 0.8 * 0.5 = 0.4 (decayed, not reset); token 1: 0.7
    torch.testing.assert_close(fused, b + torch.log1p(torch.tensor([0.4, 0.7], dtype=torch.float64)))


def test_adaptive_variant_uses_mask_ratio():
    cfg = CreditConfig(adaptive=True)
    state = CreditState(cfg, 1, 4, torch.device("cpu"))
    masked = torch.tensor([[True, True, True, False]])  # mask ratio 0.75 -> alpha = beta = 0.25, gamma = 1
    logits = torch.randn(1, 4, 5, dtype=torch.float64)
    fused = state.update_and_fuse(logits, masked)
    p = torch.softmax(logits, -1).max(-1)
    expect = logits.clone()
    for i in range(3):
        expect[0, i, p.indices[0, i]] += 0.25 * math.log1p(p.values[0, i])
    torch.testing.assert_close(fused, expect)


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_credit_with_alpha_zero_equals_threshold(tiny_ckpt, tiny_cfg, cache):
    model = load_model(tiny_ckpt, dtype="float64")
    x = torch.randint(0, 100, (3, 6), generator=torch.Generator().manual_seed(2))
    kw = dict(mask_id=tiny_cfg["mask_token_id"], gen_length=24, block_length=8, cache=cache, early_stop=False)
    plain = decode(model, x, Threshold(0.4), **kw)
    fused = decode(model, x, Threshold(0.4), credit=CreditConfig(alpha=0.0), **kw)
    assert torch.equal(plain.sequences, fused.sequences) and plain.nfe == fused.nfe


@pytest.mark.parametrize("policy", [TopK(4), Threshold(0.5), Factor(1.0), Frechet(0.25)], ids=repr)
def test_credit_composes_with_every_policy_and_speeds_up_dynamic_ones(tiny_ckpt, tiny_cfg, policy):
    model = load_model(tiny_ckpt, dtype="float64")
    x = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(3))
    kw = dict(mask_id=tiny_cfg["mask_token_id"], gen_length=16, block_length=8, early_stop=False)
    plain = decode(model, x, policy, **kw)
    fused = decode(model, x, policy, credit=CreditConfig(alpha=2.0), **kw)
    assert (fused.tokens != tiny_cfg["mask_token_id"]).all()
    if isinstance(policy, TopK):
        assert fused.nfe == plain.nfe
    else:  # credit only raises confidences of stable candidates
        assert fused.nfe <= plain.nfe


def test_credit_config_errors():
    with pytest.raises(ValueError, match="beta must be in"):
        CreditConfig(beta=1.5)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got -1"):
        CreditConfig(alpha=-1)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got nan"):
        CreditConfig(alpha=float("nan"))
    with pytest.raises(ValueError, match="gamma must be a finite number > 0, got inf"):
        CreditConfig(gamma=float("inf"))
