"""Dream's sampling options: ``top_p`` / ``top_k`` (``sample_tokens``), a confidence from the sampling
distribution, ``alg_temp`` (positions drawn) and ``alg="origin"`` (``dream_origin``). The filters and every
deterministic part are checked exactly against a restatement of the reference code; draws by their
distribution (Pearson's chi-square, as tests/decoding/test_scorers.py), since the reference's random stream
(``torch.distributions.Categorical``, ``torch.multinomial``, one ``torch.rand`` over the batch's masked
positions) cannot be replayed by static per-position draws."""

from __future__ import annotations

import itertools

import pytest
import torch
from test_scorers import ALPHA, chi_square_p_value

from unmask.decoding import make_policy
from unmask.decoding.policies.base import StepContext
from unmask.decoding.scorers import Scorer, top_p_top_k

LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.2, 0.2, -1.0, -3.0], dtype=torch.float64)


def reference_filters(logits: torch.Tensor, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Dream's ``sample_tokens`` filters as its code writes them (the dropped logits at the dtype's minimum)."""
    if top_p is not None and top_p < 1:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cumulative > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = 0
        mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    if top_k is not None:
        top_k = min(top_k, logits.size(-1))
        remove = logits < torch.topk(logits, top_k)[0][..., -1, None]
        logits = logits.masked_fill(remove, torch.finfo(logits.dtype).min)
    return logits


@pytest.mark.parametrize("top_p,top_k", [(0.5, None), (0.9, None), (0.999, None), (None, 3), (None, 4), (0.8, 2),
                                         (0.3, 5), (1.0, None)])
def test_filters_equal_dreams(top_p, top_k):
    g = torch.Generator().manual_seed(3)
    logits = torch.cat([LOGITS[None], torch.randn(20, 7, generator=g, dtype=torch.float64)])
    ours, ref = top_p_top_k(logits, top_p, top_k), reference_filters(logits, top_p, top_k)
    assert torch.equal(ours.softmax(-1), ref.softmax(-1))  # -inf and the dtype's minimum: the same zeros
    assert torch.equal(torch.isinf(ours), ref == torch.finfo(ref.dtype).min)


def test_greedy_confidence_from_the_sampling_distribution():
    """Temperature 0: the argmax, its probability renormalised over what top-p keeps (Dream's ``probs.max``)."""
    logits = LOGITS.expand(2, 3, 7)
    candidates, confidence = Scorer(top_p=0.5, confidence_from="sampling")(logits)
    kept = torch.softmax(reference_filters(LOGITS, 0.5, None), -1)
    assert torch.equal(candidates, logits.argmax(-1)) and torch.allclose(confidence, kept.max().expand(2, 3))
    _, raw = Scorer(top_p=0.5)(logits)  # confidence_from="logits": the model's softmax, filters or not
    assert torch.allclose(raw, torch.softmax(LOGITS, -1).max().expand(2, 3))


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 0.8, None), (0.7, None, 3), (1.5, 0.9, 4)])
def test_samples_follow_the_filtered_distribution(temperature, top_p, top_k):
    n = 40_000
    scorer = Scorer(temperature=temperature, top_p=top_p, top_k=top_k, confidence_from="sampling",
                    generator=torch.Generator().manual_seed(1))
    logits = LOGITS.expand(n, 1, 7)
    candidates, confidence = scorer(logits)
    q = torch.softmax(reference_filters(LOGITS / temperature, top_p, top_k), -1)
    counts = torch.bincount(candidates.flatten(), minlength=7)
    support = q > 0
    assert counts[~support].sum() == 0  # nothing the filters drop is ever drawn
    statistic, p = chi_square_p_value(counts[support], q[support])
    assert p > ALPHA, f"chi-square {statistic:.1f}, counts {counts.tolist()}"
    assert torch.allclose(confidence[:, 0], q[candidates[:, 0]])  # Dream's: p of the draw under q


def dream_step(policy, confidence, masked, step, uniform):
    schedule = policy.start_block(masked)
    return policy(confidence, masked, torch.tensor(step), schedule, StepContext(None, None, None, uniform=uniform))


def successive_probability(p: torch.Tensor, chosen: tuple[int, ...]) -> float:
    """P(the set ``chosen``) under draws without replacement from ``p``: the sum over its orders."""
    total = 0.0
    for order in itertools.permutations(chosen):
        left, prob = 1.0, 1.0
        for j in order:
            prob *= float(p[j]) / left
            left -= float(p[j])
        total += prob
    return total


def test_alg_temp_draws_positions_from_softmax_of_confidence_over_alg_temp():
    """k positions without replacement from softmax(c / alg_temp) over the masked ones (Dream's multinomial):
    the frequencies of the chosen sets fit successive draws' probabilities; masked-out positions never come."""
    n, alg_temp = 30_000, 0.5
    policy = make_policy("dream", steps=2, gen_length=7, block_length=7, alg_temp=alg_temp)
    conf = torch.tensor([0.9, 0.5, -torch.inf, 0.7, 0.1, 0.3, 0.6], dtype=torch.float64)
    masked = conf > -torch.inf
    g = torch.Generator().manual_seed(0)
    uniform = torch.rand(n, 7, generator=g, dtype=torch.float64)
    commit = dream_step(policy, conf.expand(n, 7), masked.expand(n, 7), 0, uniform)
    k = int(policy.start_block(masked[None])[0, 0])  # floor(6 (1 - t1 / t0)) = 2
    assert k == 2 and (commit.sum(-1) == k).all() and not commit[:, 2].any()
    p = torch.softmax(torch.where(masked, conf / alg_temp, -torch.inf), -1)
    sets = list(itertools.combinations(masked.nonzero().flatten().tolist(), k))
    expected = torch.tensor([successive_probability(p, c) for c in sets], dtype=torch.float64)
    index = {c: i for i, c in enumerate(sets)}
    chosen = [tuple(row.nonzero().flatten().tolist()) for row in commit]
    counts = torch.bincount(torch.tensor([index[c] for c in chosen]), minlength=len(sets))
    statistic, pv = chi_square_p_value(counts, expected)
    assert pv > ALPHA, f"chi-square {statistic:.1f}, counts {counts.tolist()}"
    greedy = make_policy("dream", steps=2, gen_length=7, block_length=7)
    assert dream_step(greedy, conf[None], masked[None], 0, None)[0].nonzero().flatten().tolist() == [0, 3]


def test_origin_unmasks_each_position_with_dreams_probability():
    """Step i commits exactly the masked positions whose draw is below 1 - t_{i+1} / t_i (t = linspace(1, 1e-3,
    S + 1), float32), the last step all of them."""
    S = 4
    policy = make_policy("dream_origin", steps=S, gen_length=8, block_length=8)
    t = torch.linspace(1, 1e-3, S + 1)
    g = torch.Generator().manual_seed(5)
    masked = torch.rand(64, 8, generator=g) < 0.7
    conf = torch.zeros(64, 8, dtype=torch.float64)
    for i in range(S):
        uniform = torch.rand(64, 8, generator=g, dtype=torch.float64)
        p = 1 - t[i + 1] / t[i] if i < S - 1 else 1.0
        assert torch.equal(dream_step(policy, conf, masked, i, uniform), masked & (uniform < p))


def test_origin_and_alg_temp_decode_to_the_end_and_follow_the_seed(tmp_path):
    import dream_fixtures

    from unmask.decoding import decode
    from unmask.models import load_model

    cfg = dream_fixtures.tiny_config()
    model = load_model(dream_fixtures.write_checkpoint(tmp_path / "d", cfg, dream_fixtures.random_weights(cfg)),
                       dtype="float64")
    x = torch.randint(0, 100, (3, 6), generator=torch.Generator().manual_seed(0))
    for name, knobs in (("dream_origin", {"steps": 8}), ("dream", {"steps": 8, "alg_temp": 0.3})):
        outs = []
        for seed in (1, 1, 2):
            scorer = Scorer(temperature=0.8, top_p=0.9, confidence_from="sampling",
                            generator=torch.Generator().manual_seed(seed))
            outs.append(decode(model, x, make_policy(name, gen_length=16, block_length=16, **knobs), scorer=scorer,
                               mask_id=cfg["mask_token_id"], gen_length=16, block_length=16, early_stop=False))
        assert all(int(o.nfe) == 8 and not (o.tokens == cfg["mask_token_id"]).any() for o in outs), name
        assert torch.equal(outs[0].tokens, outs[1].tokens) and not torch.equal(outs[0].tokens, outs[2].tokens), name
