"""Frontier maths of a sweep, pure numpy: Pareto fronts, values at a matched accuracy, paired bootstrap.

A setting is a point (NFE, accuracy); lower NFE and higher accuracy are better. All functions take
arrays whose last axis runs over the settings of one family (a policy with its credit variant), and
any leading axes (bootstrap resamples) are handled at once.

- Pareto front: the points no other point dominates (NFE' <= NFE and acc' >= acc, one strictly).
  Sorted by NFE, its accuracy rises strictly.
- NFE at accuracy a*: along the front, piecewise linear in accuracy. With P_j = (n_j, a_j) the cheapest
  point with a_j >= a* and P_i the front point before it (a_i < a*),
  ``NFE(a*) = n_i + w (n_j - n_i)``, ``w = (a* - a_i) / (a_j - a_i)``; ``n_j`` if no front point is
  cheaper (no extrapolation below the cheapest setting); NaN ("not reached") if no point reaches a*.
  Another metric (tokens/s) is interpolated with the same w between the same two settings.
- Bootstrap: B resamples of the n examples with replacement, as multinomial counts [B, n]; a mean is
  ``counts @ x / n``. Every setting and the baseline use the same resampled examples (paired), so a
  ratio against the baseline carries the pairing. Percentile intervals.
"""

from __future__ import annotations

import numpy as np

TOL = 1e-9  # accuracies are means of 0/1 scores: a* = 0.82 must count as reached by 0.8199999999


def pareto_front(nfe: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of the Pareto-optimal points of 1-d ``nfe`` and ``acc``, sorted by NFE (exact duplicates: the first)."""
    nfe, acc = np.asarray(nfe, dtype=float), np.asarray(acc, dtype=float)
    order = np.lexsort((-acc, nfe))  # by NFE, then the most accurate first
    best_before = np.maximum.accumulate(np.concatenate(([-np.inf], acc[order][:-1])))
    return order[acc[order] > best_before]


def at_accuracy(
    nfe: np.ndarray, acc: np.ndarray, target: np.ndarray | float, other: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """NFE (and ``other``) at accuracy ``target`` along the Pareto front of each row (module docstring).

    ``nfe``, ``acc``, ``other``: [..., K]; ``target``: broadcastable to [...]. Returns arrays of shape [...],
    NaN where the front never reaches the target.
    """
    nfe, acc = np.asarray(nfe, dtype=float), np.asarray(acc, dtype=float)
    target = np.broadcast_to(np.asarray(target, dtype=float), nfe.shape[:-1])[..., None]
    order = np.lexsort((-acc, nfe), axis=-1)
    n_sorted = np.take_along_axis(nfe, order, -1)
    a_sorted = np.take_along_axis(acc, order, -1)
    reach = a_sorted >= target - TOL
    j = reach.argmax(-1)[..., None]  # the cheapest point that reaches the target: on the front
    before = np.arange(nfe.shape[-1]) < j
    i = np.where(before, a_sorted, -np.inf).argmax(-1)[..., None]  # its front predecessor (first max)
    has_prev = before.any(-1, keepdims=True)
    a_i, a_j = np.take_along_axis(a_sorted, i, -1), np.take_along_axis(a_sorted, j, -1)
    w = np.where(has_prev, (target - a_i) / np.where(has_prev, a_j - a_i, 1.0), 1.0).clip(0.0, 1.0)
    reached = reach.any(-1)

    def interpolate(values: np.ndarray) -> np.ndarray:
        v_i, v_j = np.take_along_axis(values, i, -1), np.take_along_axis(values, j, -1)
        return np.where(reached, (v_i + w * (v_j - v_i))[..., 0], np.nan)

    other_at = None
    if other is not None:
        other_at = interpolate(np.take_along_axis(np.asarray(other, dtype=float), order, -1))
    return interpolate(n_sorted), other_at


def bootstrap_counts(n: int, samples: int = 1000, seed: int = 0) -> np.ndarray:
    """[samples, n] multinomial counts: how often each of ``n`` examples is drawn in each resample."""
    if n < 1 or samples < 1:
        raise ValueError(f"a bootstrap needs n >= 1 examples and samples >= 1, got n={n}, samples={samples}")
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=samples)


def resampled_mean(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Means of ``values`` [S, n] (per setting and example) under each resample: [B, S] = counts @ values.T / n."""
    return counts @ np.asarray(values, dtype=float).T / counts.sum(-1, keepdims=True)


def resampled_ratio(counts: np.ndarray, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """sum(numerator) / sum(denominator) under each resample, [B, S] (tokens/s = tokens / seconds)."""
    num = counts @ np.asarray(numerator, dtype=float).T
    den = counts @ np.asarray(denominator, dtype=float).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def percentile_ci(samples: np.ndarray, confidence: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (lower, upper) percentile interval of bootstrap ``samples`` along ``axis``: order statistics
    (``inverted_cdf``, no interpolation, so infinite values stay exact); NaNs count as +inf (a resample
    where the target is not reached has no finite NFE; map NaN to 0 first for a speedup)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values = np.where(np.isnan(samples), np.inf, samples)
    tail = 50 * (1 - confidence)
    lower, upper = np.percentile(values, [tail, 100 - tail], axis=axis, method="inverted_cdf")
    return lower, upper
