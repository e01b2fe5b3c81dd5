"""The scorers' randomness: Gumbel-max sampling draws from softmax(logits / T), the random scorer from U(0, 1).

Goodness of fit by Pearson's chi-square with fixed seeds; the p-value is the exact chi-square survival
function, P(X > x) = Q(df / 2, x / 2) (torch.special.gammaincc: no scipy), and a test fails below
ALPHA = 1e-4. At df = 5 that is a statistic above 25.74; the sign-flipped Gumbel noise (l + T log(-log u))
gives statistics over 1,000.
"""

import pytest
import torch

from unmask.decoding.scorers import Scorer, gumbel_argmax

ALPHA = 1e-4
SAMPLES = 40_000
LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.5], dtype=torch.float64)  # V = 6, no ties


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, float]:
    """Pearson's statistic of ``counts`` against ``probs`` and its p-value (df = categories - 1)."""
    expected = probs.double() * counts.sum()
    assert expected.min() >= 5, "too few samples for the chi-square approximation"
    statistic = ((counts.double() - expected) ** 2 / expected).sum()
    df = torch.tensor((len(probs) - 1) / 2, dtype=torch.float64)
    return float(statistic), float(torch.special.gammaincc(df, statistic / 2))


def sample_candidates(temperature: float, seed: int, kind: str = "confidence") -> torch.Tensor:
    """SAMPLES candidates for the same logits as one [N, 1, V] batch, noise as the decode loop draws it."""
    scorer = Scorer(kind=kind, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    logits = LOGITS.float().expand(SAMPLES, 1, len(LOGITS))
    noise = scorer.draw(scorer.allocate_noise(SAMPLES, 1, len(LOGITS), logits.device))
    candidates, _ = scorer(logits, noise)
    assert torch.equal(candidates, gumbel_argmax(logits, temperature, noise.uniform))  # the same draw
    return candidates[:, 0]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_gumbel_samples_follow_softmax_of_logits_over_temperature(temperature: float, seed: int) -> None:
    counts = torch.bincount(sample_candidates(temperature, seed), minlength=len(LOGITS))
    statistic, p = chi_square_p_value(counts, torch.softmax(LOGITS / temperature, dim=-1))
    assert p > ALPHA, f"T={temperature}: chi-square {statistic:.1f} (p = {p:.2e}), counts {counts.tolist()}"


def test_temperature_changes_the_distribution() -> None:
    """The test above can tell temperatures apart: T=2 samples do not fit softmax(logits / 0.5)."""
    counts = torch.bincount(sample_candidates(2.0, 0), minlength=len(LOGITS))
    _, p = chi_square_p_value(counts, torch.softmax(LOGITS / 0.5, dim=-1))
    assert p < ALPHA


def test_random_scorer_samples_candidates_too() -> None:
    """The random scorer draws its confidences after the Gumbel uniforms: candidates still follow softmax."""
    counts = torch.bincount(sample_candidates(1.0, 2, kind="random"), minlength=len(LOGITS))
    _, p = chi_square_p_value(counts, torch.softmax(LOGITS, dim=-1))
    assert p > ALPHA


def test_zero_temperature_is_plain_argmax() -> None:
    logits = torch.randn(3, 7, 11, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gumbel_argmax(logits, 0.0, None), logits.argmax(-1))
    for kind in ("confidence", "margin", "entropy", "random"):
        scorer = Scorer(kind=kind, temperature=0.0, generator=torch.Generator().manual_seed(0))
        candidates, confidence = scorer(logits)
        assert torch.equal(candidates, logits.argmax(-1)), kind
        assert confidence.shape == (3, 7)
    candidates, confidence = Scorer()(logits)
    assert torch.allclose(confidence, torch.softmax(logits.double(), -1).amax(-1))
    assert not Scorer(temperature=0.0).random and Scorer(temperature=0.0).allocate_noise(3, 7, 11, "cpu").uniform \
        is None


def test_random_scorer_confidences_are_uniform() -> None:
    scorer = Scorer(kind="random", generator=torch.Generator().manual_seed(0))
    logits = torch.zeros(SAMPLES // 8, 8, 5)
    noise = scorer.draw(scorer.allocate_noise(*logits.shape, logits.device))
    assert noise.uniform is None  # temperature 0: no Gumbel draws
    _, confidence = scorer(logits, noise)
    values = confidence.flatten().double()
    assert ((values >= 0) & (values < 1)).all()
    bins = 10
    counts = torch.bincount((values * bins).long(), minlength=bins)
    statistic, p = chi_square_p_value(counts, torch.full((bins,), 1 / bins))
    assert p > ALPHA, f"chi-square {statistic:.1f} (p = {p:.2e})"
    ranks = torch.arange(len(values) + 1, dtype=torch.float64) / len(values)
    ordered = values.sort().values
    ks = torch.maximum(ranks[1:] - ordered, ordered - ranks[:-1]).max()
    assert ks < 1.95 / len(values) ** 0.5  # Kolmogorov-Smirnov at alpha = 1e-3
    again = scorer.draw(scorer.allocate_noise(*logits.shape, logits.device)).random_confidence
    assert not torch.equal(again, confidence)  # fresh draws each step


def test_margin_and_entropy_scores_are_their_definitions() -> None:
    """margin = p_top1 - p_top2 (>= 0), entropy score = sum_v p_v log p_v (<= 0, higher = more certain), with the
    exclusions applied to the confidence only."""
    logits = torch.randn(3, 7, 11, generator=torch.Generator().manual_seed(1))
    logits[0, 0, 4] = -torch.inf  # a zero probability: 0 * log 0 counts as 0
    p = torch.softmax(logits.double(), -1)
    top2 = p.topk(2, dim=-1).values
    _, margin = Scorer(kind="margin")(logits)
    assert torch.allclose(margin, top2[..., 0] - top2[..., 1]) and (margin >= 0).all()
    _, entropy = Scorer(kind="entropy")(logits)
    expected = torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1)
    assert torch.allclose(entropy, expected) and (entropy <= 0).all()
    peaked = logits.clone()
    peaked[..., 0] += 20  # nearly one-hot: the most certain rows score highest under both
    for kind in ("margin", "entropy"):
        _, flat_score = Scorer(kind=kind)(logits)
        _, peaked_score = Scorer(kind=kind)(peaked)
        assert (peaked_score > flat_score).all(), kind
