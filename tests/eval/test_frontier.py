"""Frontier maths with known answers: Pareto front, interpolation at a matched accuracy, paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from unmask.eval.frontier import (
    at_accuracy,
    bootstrap_counts,
    pareto_front,
    percentile_ci,
    resampled_mean,
    resampled_ratio,
)

# (NFE, accuracy, tokens/s): the front is (5, .6) -> (8, .7) -> (10, .8); (5, .5), (9, .65), (20, .8) are dominated
NFE = np.array([10.0, 5.0, 8.0, 5.0, 20.0, 9.0])
ACC = np.array([0.8, 0.6, 0.7, 0.5, 0.8, 0.65])
TPS = np.array([100.0, 200.0, 150.0, 210.0, 50.0, 120.0])


def test_pareto_front():
    assert pareto_front(NFE, ACC).tolist() == [1, 2, 0]
    assert pareto_front([3.0, 3.0], [0.5, 0.5]).tolist() == [0]  # exact duplicates: the first
    assert pareto_front([1.0], [0.0]).tolist() == [0]


@pytest.mark.parametrize(
    "target, nfe, tps",
    [
        (0.75, 9.0, 125.0),  # halfway between (8, .7) and (10, .8)
        (0.65, 6.5, 175.0),  # (9, .65) is dominated by (8, .7): not used
        (0.6, 5.0, 200.0),  # exactly the cheapest front point
        (0.3, 5.0, 200.0),  # below the cheapest setting: no extrapolation
        (0.8, 10.0, 100.0),
        (0.85, np.nan, np.nan),  # not reached
    ],
)
def test_at_accuracy_known_answers(target, nfe, tps):
    got_nfe, got_tps = at_accuracy(NFE, ACC, target, TPS)
    np.testing.assert_allclose([got_nfe, got_tps], [nfe, tps])


def test_at_accuracy_tolerates_rounding_of_the_target():
    got, _ = at_accuracy(NFE, ACC, 0.9 - 0.1)  # 0.8000000000000002 > 0.8 in floating point
    assert got == pytest.approx(10.0)


def test_at_accuracy_matches_np_interp_on_random_fronts():
    rng = np.random.default_rng(1)
    nfe = rng.integers(1, 40, size=(200, 7)).astype(float)
    acc = rng.integers(0, 20, size=(200, 7)) / 20
    target = rng.uniform(0.0, 1.0, size=200)
    got, _ = at_accuracy(nfe, acc, target)  # all rows at once
    for row in range(200):
        front = pareto_front(nfe[row], acc[row])
        fa, fn = acc[row][front], nfe[row][front]
        if target[row] > fa[-1]:
            expected = np.nan
        else:
            expected = fn[0] if target[row] <= fa[0] else np.interp(target[row], fa, fn)
        np.testing.assert_allclose(got[row], expected, err_msg=f"row {row}")
        single, _ = at_accuracy(nfe[row], acc[row], target[row])
        np.testing.assert_allclose(single, got[row])


def test_bootstrap_counts_and_means():
    counts = bootstrap_counts(50, samples=300, seed=3)
    assert counts.shape == (300, 50) and (counts.sum(1) == 50).all()
    assert np.array_equal(counts, bootstrap_counts(50, samples=300, seed=3))  # fixed seed: reproducible
    assert not np.array_equal(counts, bootstrap_counts(50, samples=300, seed=4))
    values = np.arange(100.0).reshape(2, 50)
    np.testing.assert_allclose(resampled_mean(np.ones((1, 50)), values), [[24.5, 74.5]])
    means = resampled_mean(counts, values)
    np.testing.assert_allclose(means[:, 1] - means[:, 0], 50.0)  # paired: the same examples in every setting
    np.testing.assert_allclose(resampled_ratio(np.ones((1, 50)), values, np.ones((2, 50))), [[24.5, 74.5]])
    with pytest.raises(ValueError, match="n >= 1"):
        bootstrap_counts(0)


def test_bootstrap_interval_of_a_proportion():
    scores = np.array([[1.0] * 200 + [0.0] * 200])  # p = 0.5, n = 400: standard error 0.025
    means = resampled_mean(bootstrap_counts(400, samples=2000, seed=0), scores)[:, 0]
    lower, upper = percentile_ci(means, 0.95)
    assert lower == pytest.approx(0.5 - 1.96 * 0.025, abs=0.01)
    assert upper == pytest.approx(0.5 + 1.96 * 0.025, abs=0.01)


def test_percentile_ci_counts_nan_as_not_reached():
    samples = np.r_[np.arange(1.0, 91.0), [np.nan] * 10]  # 10% of resamples never reach the target
    lower, upper = percentile_ci(samples, 0.95)
    assert lower == 3.0 and upper == np.inf
    with pytest.raises(ValueError, match="confidence"):
        percentile_ci(samples, 1.5)
