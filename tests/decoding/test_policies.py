"""Policy definitions against plain per-row restatements, and their stated properties."""

import pytest
import torch

from unmask.decoding import Factor, Frechet, Threshold, TopK, make_policy, num_transfer_tokens


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


def test_make_policy_errors_name_the_value():
    with pytest.raises(ValueError, match="'greedy'"):
        make_policy("greedy")
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 1.5"):
        make_policy("threshold", threshold=1.5)
    with pytest.raises(ValueError, match="got 0"):
        make_policy("threshold", threshold=0)
    with pytest.raises(ValueError, match="factor must be > 0"):
        make_policy("factor", factor=-1)
