"""Policy definitions against plain per-row restatements, and their stated properties."""

import math
from fractions import Fraction

import pytest
import torch
from reference_policies import frechet_count

from unmask.decoding import (
    CreditConfig,
    CreditState,
    Factor,
    Frechet,
    Threshold,
    TopK,
    make_policy,
    num_transfer_tokens,
)


def random_state(B=64, L=16, seed=0, equal=False):
    g = torch.Generator().manual_seed(seed)
    masked = torch.rand(B, L, generator=g) < 0.7
    masked[0] = False  # a row with nothing left to commit
    masked[1] = False
    masked[1, 3] = True  # a row with a single masked position
    if equal:
        conf = torch.rand(B, 1, generator=g, dtype=torch.float64).expand(B, L).clone()
    else:
        conf = torch.rand(B, L, generator=g, dtype=torch.float64) ** 0.3
    return torch.where(masked, conf, -torch.inf), masked


POLICIES = [TopK(4), Threshold(0.9), Threshold(0.5), Factor(1.0), Factor(0.5), Frechet(0.25), Frechet(0.0)]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: repr(p))
def test_every_policy_commits_at_least_top1_and_only_masked(policy):
    for seed in range(5):
        conf, masked = random_state(seed=seed)
        schedule = policy.start_block(masked)
        commit = policy(conf, masked, 0, schedule)
        assert not (commit & ~masked).any()
        has = masked.any(-1)
        assert (commit.sum(-1)[has] >= 1).all()
        top1 = conf.argmax(-1)
        assert commit[has].gather(-1, top1[has][:, None]).all()


def test_num_transfer_tokens_matches_llada():
    counts = torch.tensor([0, 1, 7, 32, 33])
    got = num_transfer_tokens(counts, 4)
    for row, n in enumerate(counts.tolist()):
        expect = [n // 4 + (1 if i < n % 4 else 0) for i in range(4)]
        assert got[row].tolist() == expect
        assert sum(expect) == n


def test_topk_commits_schedule_count_of_highest():
    conf, masked = random_state(seed=1)
    policy = TopK(4)
    schedule = policy.start_block(masked)
    for step in range(4):
        commit = policy(conf, masked, step, schedule)
        assert torch.equal(commit.sum(-1), schedule[:, step])
        for b in range(conf.shape[0]):  # committed ones are the highest
            if commit[b].any() and (masked[b] & ~commit[b]).any():
                assert conf[b][commit[b]].min() >= conf[b][masked[b] & ~commit[b]].max()


def test_threshold_is_ge_tau_plus_top1():
    conf, masked = random_state(seed=2)
    conf[5, masked[5].nonzero()[0]] = 0.9  # exactly tau is committed (reference keeps c >= tau)
    commit = Threshold(0.9)(conf, masked, 0, None)
    for b in range(conf.shape[0]):
        expect = masked[b] & (conf[b] >= 0.9)
        if masked[b].any():
            expect[conf[b].argmax()] = True
        assert torch.equal(commit[b], expect)


def factor_count_reference(sorted_conf, f):
    """Fast-dLLM get_transfer_index_dynamic for one row, quirk included."""
    threshs = [1 - f / (n + 1) for n in range(1, len(sorted_conf) + 1)]
    threshs[0] = -1
    for top_i in range(len(threshs)):
        if sorted_conf[top_i] < threshs[top_i]:
            break
    if top_i == 0 or top_i == len(threshs) - 1:
        top_i += 1
    return top_i


def frechet_count_reference(sorted_conf, delta):
    """Largest n with sum_{j<=n} c_(j) - n + c_(n) > delta, at least 1."""
    best = 1
    for n in range(1, len(sorted_conf) + 1):
        g = sum(sorted_conf[:n]) - n + sorted_conf[n - 1]
        if g > delta:
            best = max(best, n)
    return best


def assert_counts_per_row(policy, count_reference):
    """On random states, ``policy`` commits ``count_reference(sorted masked confidences)`` in each row."""
    for seed in range(4):
        conf, masked = random_state(seed=seed)
        commit = policy(conf, masked, 0, None)
        for b in range(conf.shape[0]):
            if not masked[b].any():
                assert not commit[b].any()
                continue
            sorted_conf = conf[b][masked[b]].sort(descending=True).values.tolist()
            assert int(commit[b].sum()) == count_reference(sorted_conf)


@pytest.mark.parametrize("f", [0.25, 0.5, 1.0, 2.0])
def test_factor_matches_reference_per_row(f):
    assert_counts_per_row(Factor(f), lambda sorted_conf: factor_count_reference(sorted_conf, f))


@pytest.mark.parametrize("delta", [0.0, 0.1, 0.25, 0.5])
def test_frechet_matches_definition_per_row(delta):
    assert_counts_per_row(Frechet(delta), lambda sorted_conf: frechet_count_reference(sorted_conf, delta))


@pytest.mark.parametrize("f", [0.3, 0.5, 1.0, 1.5])
def test_frechet_reduces_to_factor_on_equal_confidences(f):
    conf, masked = random_state(B=256, seed=9, equal=True)
    fre = Frechet.from_factor(f)(conf, masked, 0, None)
    fac = Factor(f, reference_quirk=False)(conf, masked, 0, None)
    assert torch.equal(fre, fac)


@pytest.mark.parametrize("f", [0.3, 0.5, 1.0, 1.5])
def test_frechet_commits_at_least_as_many_as_factor(f):
    strictly_more = 0
    for seed in range(6):
        conf, masked = random_state(seed=seed)
        fre = Frechet.from_factor(f)(conf, masked, 0, None)
        fac = Factor(f, reference_quirk=False)(conf, masked, 0, None)
        assert (fre.sum(-1) >= fac.sum(-1)).all()
        assert not (fac & ~fre).any()  # same ranking: factor's set is a subset
        strictly_more += int((fre.sum(-1) > fac.sum(-1)).sum())
    assert strictly_more > 0  # the heterogeneity bonus shows up on unequal confidences


def planted_row(sorted_conf, seed=0):
    """One row holding ``sorted_conf`` at shuffled positions, plus two unmasked positions: (confidence, masked)."""
    n = len(sorted_conf)
    perm = torch.randperm(n + 2, generator=torch.Generator().manual_seed(seed))
    conf = torch.full((1, n + 2), -torch.inf, dtype=torch.float64)
    conf[0, perm[:n]] = torch.tensor(sorted_conf, dtype=torch.float64)
    return conf, torch.isfinite(conf)


@pytest.mark.parametrize("f,m", [(1.0, 3), (1.0, 7), (2.0, 3), (2.0, 7), (0.5, 3)])
def test_factor_admits_a_confidence_exactly_at_its_threshold(f, m):
    """c_(m) = 1 - f / (m + 1) exactly passes: the reference stops on ``c < 1 - f/(n+1)``. m + 1 is a power of
    two and f dyadic, so the threshold is exact in float64 (checked) whatever the order of operations."""
    at = 1 - f / (m + 1)
    assert Fraction(at) == 1 - Fraction(f) / (m + 1)
    sorted_conf = [0.99] * (m - 1) + [at] + [0.1] * 3  # m + 3 masked: the end-of-list quirk stays out of it
    assert factor_count_reference(sorted_conf, f) == m
    conf, masked = planted_row(sorted_conf)
    commit = Factor(f)(conf, masked, 0, None)
    assert int(commit.sum()) == m
    assert torch.equal(commit, masked & (conf >= at))


@pytest.mark.parametrize("margin,expect", [(0.375, 1), (-0.125, 2)])
def test_frechet_excludes_a_score_exactly_at_the_margin(margin, expect):
    """G_n = margin is not admitted: Fast-dLLM++'s ``get_transfer_index_frechet_profile`` counts
    ``score > margin`` (strict). Dyadic confidences: G_1..G_5 = 0.75, 0.375, -0.125, -0.75, -1.5 exactly."""
    sorted_conf = [0.875, 0.75, 0.625, 0.5, 0.375]
    exact = [sum(Fraction(c) for c in sorted_conf[:n]) - (n - 1) - (1 - Fraction(sorted_conf[n - 1]))
             for n in range(1, 6)]
    assert exact == [Fraction(g) for g in (0.75, 0.375, -0.125, -0.75, -1.5)]
    assert frechet_count(sorted_conf, margin) == expect == frechet_count_reference(sorted_conf, margin)
    conf, masked = planted_row(sorted_conf, seed=1)
    commit = Frechet(margin)(conf, masked, 0, None)
    assert int(commit.sum()) == expect
    assert torch.equal(commit, masked & (conf >= sorted_conf[expect - 1]))


def test_credit_slots_evict_the_smallest_credit():
    """With ``slots=2`` a third distinct top-1 token takes the slot of the smallest credit. Top-1 A (p 0.9), then
    B (p 0.4), then C (p 0.45): before C, A holds 0.9 * 0.9^2 = 0.729 and B 0.4 * 0.9 = 0.36, so B goes.
    A's kept credit then lifts it over the raw top-1 C; evicting A (the largest) would leave C on top."""
    state = CreditState(CreditConfig(alpha=1.0, beta=0.9, gamma=1.0, slots=2), 1, 1, torch.device("cpu"))
    masked = torch.ones(1, 1, dtype=torch.bool)
    for probs in ([0.9, 0.05, 0.05], [0.25, 0.4, 0.35], [0.4, 0.15, 0.45]):
        raw = torch.tensor(probs, dtype=torch.float64).log()[None, None]
        fused = state.update_and_fuse(raw, masked)
    expect = raw.clone()
    expect[0, 0, 0] += math.log1p(0.729)  # A kept
    expect[0, 0, 2] += math.log1p(0.45)  # C new; B (0.36) evicted: no bonus
    torch.testing.assert_close(fused, expect, rtol=1e-6, atol=1e-6)
    assert int(fused.argmax()) == 0 and int(raw.argmax()) == 2


def test_make_policy_errors_name_the_value():
    with pytest.raises(ValueError, match="'greedy'"):
        make_policy("greedy")
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 1.5"):
        make_policy("threshold", threshold=1.5)
    with pytest.raises(ValueError, match="got 0"):
        make_policy("threshold", threshold=0)
    with pytest.raises(ValueError, match="factor must be > 0"):
        make_policy("factor", factor=-1)
