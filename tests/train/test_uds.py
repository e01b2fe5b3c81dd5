"""UDS selection against plain restatements: nuclear norm by SVD, the FFT projector of the UDS code,
mean-distance diversity, top-k of the combined score (uds_legacy), greedy picks, the shared scoring
noise, the per-token normalisation, and the FIFO buffer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unmask.models.llada import LLaDAModel
from unmask.models.tokenizer import special_ids
from unmask.train import pipeline
from unmask.train.data import encode_sft
from unmask.train.presets import load_preset
from unmask.train.selection import (
    LEGACY_UDS,
    Candidates,
    FastJLProjector,
    UDSSelector,
    greedy_picks,
    make_selector,
    masked_logit_matrices,
    n_keep,
    nuclear_norms,
    shared_noise,
)
from unmask.train.trainer import Trainer, init_weights


def tiny_model(tokenizer):
    preset = load_preset("tiny")
    return init_weights(LLaDAModel(pipeline.model_config(preset, tokenizer, 128)), seed=0), preset


def numpy_nuclear(m: np.ndarray) -> float:
    return float(np.linalg.svd(m, compute_uv=False).sum())


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 9, 4), (1, 6, 6)])
@pytest.mark.parametrize("method", ["gram", "newton_schulz", "gram_cpu", "svd"])
def test_nuclear_norm_matches_svd(shape, method):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 3
    x[0, 1] = 0  # a zero row, as for an unmasked position
    got = nuclear_norms(x, method)
    want = [numpy_nuclear(x[b].double().numpy()) for b in range(shape[0])]
    assert got.dtype == torch.float32 and got.shape == (shape[0],)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_newton_schulz_on_ill_conditioned_and_logit_like_matrices():
    gen = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(300, 40, dtype=torch.float64, generator=gen))
    sigma = torch.logspace(3, -6, 40, dtype=torch.float64)  # condition number 1e9
    spread = (u * sigma) @ v.T
    logits = torch.randn(40, 300, dtype=torch.float64, generator=gen) * 2 + 8 * torch.randn(300, dtype=torch.float64)
    x = torch.stack([spread, logits, torch.zeros(40, 300, dtype=torch.float64)])
    want = [numpy_nuclear(m.numpy()) for m in x]
    np.testing.assert_allclose(nuclear_norms(x, "newton_schulz").double().numpy(), want, rtol=1e-6, atol=1e-6)


def test_nuclear_norm_of_rank_one_and_bad_method():
    u, v = torch.randn(6, 1), torch.randn(1, 9)
    x = (u @ v)[None]
    assert nuclear_norms(x)[0].item() == pytest.approx(u.norm().item() * v.norm().item(), rel=1e-5)
    with pytest.raises(ValueError, match="unknown nuclear-norm method 'qr'"):
        nuclear_norms(x, "qr")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA tensor"):
            nuclear_norms(x, "gesvda")


def test_masked_matrix_has_the_nuclear_norm_of_the_masked_rows():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 10, 12, generator=gen)
    masked = torch.rand(3, 10, generator=gen) < 0.5
    masked[2] = False  # a row with nothing masked scores 0
    x = masked_logit_matrices(logits, masked, vocab_size=11)  # drops the padded 12th column
    assert x.shape == (3, 10, 11)
    got = nuclear_norms(x)
    for b in range(3):
        sub = logits[b, :, :11][masked[b]].double().numpy()
        want = numpy_nuclear(sub) if sub.size else 0.0
        assert got[b].item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def fft_projection(proj: FastJLProjector, x: torch.Tensor) -> torch.Tensor:
    """The UDS code's ``project_batch`` on a zero-padded [B, T, V] matrix, written with FFTs."""
    B, L, V = x.shape
    padded = torch.zeros(B, proj.T, V, dtype=torch.float64)
    padded[:, :L] = x.double()
    y = torch.fft.fft(padded * proj.d2, dim=-1).real[..., proj.idx2] * (proj.V**0.5 / proj.r2**0.5)
    z = torch.fft.fft(y * proj.d1.view(1, proj.T, 1), dim=1).real[:, proj.idx1, :] * (proj.T**0.5 / proj.r1**0.5)
    return z.reshape(B, -1)


def test_projector_equals_the_fft_formulation():
    proj = FastJLProjector(T=40, V=33, r1=4, r2=8, seed=3)
    x = torch.randn(2, 25, 33, generator=torch.Generator().manual_seed(2))
    got = proj.project(x)
    assert got.shape == (2, proj.dim) == (2, 32)
    torch.testing.assert_close(got.double(), fft_projection(proj, x), rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="at most 40 x 33"):
        proj.project(torch.zeros(1, 41, 33))


def test_projector_roughly_preserves_distances():
    # A JL map: squared norms are preserved in expectation; check the ratio is of order one.
    proj = FastJLProjector(T=64, V=256, r1=8, r2=128, seed=0)
    x = torch.randn(16, 64, 256, generator=torch.Generator().manual_seed(4))
    ratio = proj.project(x).norm(dim=1) / (x.flatten(1).norm(dim=1) * math.sqrt(64 * 256))
    assert 0.2 < ratio.mean().item() < 5


def make_batch(logits: torch.Tensor, masked: torch.Tensor) -> Candidates:
    B, L = masked.shape
    return Candidates(logits, masked, torch.zeros(B), torch.zeros(B, L, dtype=torch.long), torch.zeros(B))


def test_legacy_uds_selection_against_a_plain_restatement():
    # uds_legacy is the first port unchanged: raw nuclear norm of the row's own noise, one top-k per step
    gen = torch.Generator().manual_seed(5)
    B, L, V, k = 8, 12, 20, 3
    sel = make_selector("uds_legacy", vocab_size=V, max_len=16, alpha=0.05, queue_size=5, r1=2, r2=4, seed=0)
    assert (sel.noise, sel.per_token, sel.greedy) == ("own", False, False)
    assert sel.scoring_noise(torch.zeros(B, L, dtype=torch.long), torch.zeros(B, dtype=torch.long), 0) is None
    history = []
    for step in range(4):
        logits = torch.randn(B, L, V + 4, generator=gen) * (1 + torch.arange(B)[:, None, None] % 3)
        masked = torch.rand(B, L, generator=gen) < 0.6
        # the restatement: per row, SVD of the masked submatrix; embeddings; mean distance to the buffer
        x = logits[..., :V] * masked[..., None]
        utility = torch.tensor([numpy_nuclear(x[b].double().numpy()) for b in range(B)])
        emb = fft_projection(sel.projector, x)
        if history:
            buffer = torch.stack(history[-5:])
            diversity = torch.tensor([float((emb[b] - buffer).norm(dim=1).mean()) for b in range(B)])
        else:
            diversity = torch.zeros(B)
        combined = utility + 0.05 * diversity
        want = sorted(np.argsort(-combined.numpy(), kind="stable")[:k].tolist())
        keep = sel.select(make_batch(logits, masked), k)
        assert keep.tolist() == want, step
        np.testing.assert_allclose(sel.last_scores["utility"].numpy(), utility.numpy(), rtol=1e-5)
        np.testing.assert_allclose(sel.last_scores["diversity"].numpy(), diversity.numpy(), rtol=1e-3, atol=1e-2)
        history.extend(emb[i].float() for i in want)
    assert sel.queue_count == 5


def test_uds_diversity_breaks_ties_towards_new_directions():
    V, L = 6, 4
    sel = UDSSelector(vocab_size=V, max_len=L, alpha=1.0, queue_size=8, r1=2, r2=3, seed=0, per_token=False)
    sel.push(torch.zeros(2, sel.projector.dim))
    same = torch.zeros(2, L, V)
    same[0, 0, 0] = 1.0  # equal nuclear norms (1), different embeddings: rows 0 and 1 of a batch
    same[1, 0, 0] = -1.0
    utility, diversity, emb = sel.scores(make_batch(same, torch.ones(2, L, dtype=torch.bool)))
    assert utility.tolist() == pytest.approx([1.0, 1.0])
    torch.testing.assert_close(diversity, emb.norm(dim=1))  # distance to the zero entries of the buffer


def test_buffer_is_a_fifo_ring():
    sel = UDSSelector(vocab_size=4, max_len=4, queue_size=4, r1=1, r2=2)
    rows = torch.arange(14, dtype=torch.float32).view(7, 2)
    sel.push(rows[:3])
    assert (sel.queue_count, sel.queue_ptr) == (3, 3)
    sel.push(rows[3:5])  # wraps: slot 3 then slot 0
    assert (sel.queue_count, sel.queue_ptr) == (4, 1)
    assert sel.queue.tolist() == [rows[4].tolist(), rows[1].tolist(), rows[2].tolist(), rows[3].tolist()]
    sel.push(rows[:6])  # more than the ring holds: the newest 4 survive
    assert sel.queue_count == 4 and sorted(map(tuple, sel.queue.tolist())) == sorted(map(tuple, rows[2:6].tolist()))


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_selection_respects_the_fraction(fraction):
    B = 40
    k = n_keep(B, fraction)
    sel = UDSSelector(vocab_size=8, max_len=6, r1=2, r2=4)
    logits = torch.randn(B, 6, 8)
    keep = sel.select(make_batch(logits, torch.ones(B, 6, dtype=torch.bool)), k)
    assert len(keep) == k == math.ceil(B * fraction) and len(set(keep.tolist())) == k
    assert sel.queue_count == k


def test_make_selector_and_errors():
    new = make_selector("uds", vocab_size=10, max_len=8)
    assert isinstance(new, UDSSelector)
    assert (new.noise, new.per_token, new.greedy, new.ratio) == ("shared", True, True, 0.5)
    with pytest.raises(ValueError, match="needs vocab_size and max_len"):
        make_selector("uds")
    with pytest.raises(ValueError, match="uds_legacy selection needs vocab_size"):
        make_selector("uds_legacy")
    with pytest.raises(ValueError, match="noise must be 'shared' or 'own'"):
        UDSSelector(10, 8, noise="row")
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        UDSSelector(10, 8, ratio=0)
    with pytest.raises(ValueError, match="unknown selector 'best'"):
        make_selector("best")
    with pytest.raises(ValueError, match="alpha must be"):
        UDSSelector(10, 8, alpha=-1)


@pytest.mark.parametrize("name", ["uds", "uds_legacy"])
def test_trainer_runs_uds(examples, tokenizer, name):
    data = encode_sft(examples[:24], tokenizer, seq_len=96)
    model, preset = tiny_model(tokenizer)
    cfg = preset.train
    cfg.steps, cfg.batch_size, cfg.selection_fraction, cfg.log_every = 3, 2, 0.25, 1
    sel = make_selector(name, vocab_size=model.config.vocab_size, max_len=96)
    log = Trainer(model, data, cfg, special_ids(tokenizer)["mask"], selector=sel).fit()
    assert log.info["steps"] == 3 and sel.queue_count == 6
    assert sel.steps == (3 if name == "uds" else 0)  # one shared scoring draw per step
    assert all(math.isfinite(r["loss"]) for r in log.train)
    assert log.train[-1]["select_ms"] > 0


def test_scores_in_chunks_equal_one_pass(monkeypatch):
    import unmask.train.selection as selection

    gen = torch.Generator().manual_seed(7)
    logits, masked = torch.randn(9, 6, 12, generator=gen), torch.rand(9, 6, generator=gen) < 0.7
    whole = UDSSelector(vocab_size=10, max_len=8, r1=2, r2=4).scores(make_batch(logits, masked))
    monkeypatch.setattr(selection, "CHUNK_ELEMENTS", 2 * 6 * 10)  # two rows per chunk
    chunked = UDSSelector(vocab_size=10, max_len=8, r1=2, r2=4).scores(make_batch(logits, masked))
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- shared scoring noise (issue 16)


def rows_with_prompts(prompt_len: list[int], L: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 50, (len(prompt_len), L), generator=torch.Generator().manual_seed(seed))
    return ids, torch.tensor(prompt_len)


def test_shared_noise_masks_the_same_ratio_of_every_answer():
    ids, plen = rows_with_prompts([0, 3, 7, 12, 19, 20, 7])
    L = ids.shape[1]
    noisy, masked, p_mask = shared_noise(ids, plen, mask_id=2, ratio=0.5, generator=torch.Generator().manual_seed(1))
    answer = torch.arange(L)[None] >= plen[:, None]
    assert not (masked & ~answer).any()  # the prompt is never masked
    answer_len = (L - plen).tolist()
    want = [0 if a == 0 else max(1, math.floor(0.5 * a + 0.5)) for a in answer_len]  # 10, 9 (8.5 -> 9), 7, 4, 1, 0, 7
    assert masked.sum(1).tolist() == want
    torch.testing.assert_close(p_mask, torch.tensor(want, dtype=torch.float32) / torch.tensor(answer_len).clamp(min=1))
    assert torch.equal(noisy, torch.where(masked, torch.full_like(ids, 2), ids))
    for ratio in (0.1, 0.3, 0.9, 1.0):
        m = shared_noise(ids, plen, 2, ratio, torch.Generator().manual_seed(1))[1]
        got = m.sum(1).float() / torch.tensor(answer_len).clamp(min=1)
        live = torch.tensor(answer_len) >= 10  # rounding moves short answers by at most 1/(2 A)
        assert (got[live] - ratio).abs().max() <= 0.05 + 1e-6


def test_shared_noise_does_not_depend_on_the_row():
    # one draw over positions for the whole batch: a row's mask depends only on its answer span, not on
    # its tokens or its place in the batch; with the same seed the draw repeats, another seed differs
    ids, plen = rows_with_prompts([4, 9, 4, 0, 9], L=24)
    masked = shared_noise(ids, plen, 2, 0.5, torch.Generator().manual_seed(3))[1]
    assert torch.equal(masked[0], masked[2]) and torch.equal(masked[1], masked[4])
    other_tokens = torch.randint(5, 50, ids.shape, generator=torch.Generator().manual_seed(9))
    perm = torch.tensor([3, 1, 4, 0, 2])
    again = shared_noise(other_tokens[perm], plen[perm], 2, 0.5, torch.Generator().manual_seed(3))[1]
    assert torch.equal(again, masked[perm])
    assert not torch.equal(masked, shared_noise(ids, plen, 2, 0.5, torch.Generator().manual_seed(4))[1])
    u = torch.rand(24, generator=torch.Generator().manual_seed(3))  # the draw itself: smallest u in each span
    for b in range(5):
        span = torch.arange(int(plen[b]), 24)
        chosen = span[u[span].argsort()[: int(masked[b].sum())]]
        assert sorted(chosen.tolist()) == masked[b].nonzero().flatten().tolist()


def test_scoring_noise_is_one_seeded_draw_per_step():
    ids, plen = rows_with_prompts([2, 5, 11])
    a, b = UDSSelector(10, 20, seed=7), UDSSelector(10, 20, seed=7)
    draws_a = [a.scoring_noise(ids, plen, 2)[1] for _ in range(3)]
    draws_b = [b.scoring_noise(ids, plen, 2)[1] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(draws_a, draws_b, strict=True)) and a.steps == 3
    assert not torch.equal(draws_a[0], draws_a[1])
    assert not torch.equal(draws_a[0], UDSSelector(10, 20, seed=8).scoring_noise(ids, plen, 2)[1])
    want = shared_noise(ids, plen, 2, 0.5, torch.Generator().manual_seed(7 * 1_000_003 + 1))[1]
    assert torch.equal(draws_a[1], want)


def test_per_token_normalisation():
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(4, 9, 13, generator=gen) * 4
    masked = torch.rand(4, 9, generator=gen) < 0.5
    masked[0] = False  # nothing masked: stays zero
    masked[1, :3] = True
    n = masked.sum(1)
    x = masked_logit_matrices(logits, masked, vocab_size=12, per_token=True)
    for b in range(4):
        sub = logits[b, :, :12][masked[b]].double().numpy()
        want = numpy_nuclear(sub) / int(n[b]) if sub.size else 0.0
        assert nuclear_norms(x[b : b + 1])[0].item() == pytest.approx(want, rel=1e-5, abs=1e-7)
    # the selector's utility and embedding are those of X_b / n_b: the raw ones divided by n_b
    batch = make_batch(logits, masked)
    per_token = UDSSelector(12, 9, r1=2, r2=4, per_token=True).scores(batch)
    raw = UDSSelector(12, 9, r1=2, r2=4, per_token=False).scores(batch)
    scale = n.clamp(min=1).float()
    torch.testing.assert_close(per_token[0], raw[0] / scale)
    torch.testing.assert_close(per_token[2], raw[2] / scale[:, None])
    assert per_token[0][0].item() == 0.0


def greedy_restatement(utility, emb, queue, alpha, k):
    """Plain Python: each pick the best u + alpha * mean distance to (buffer + earlier picks)."""
    picked, divs = [], []
    for _ in range(k):
        best, best_score, best_div = None, -math.inf, None
        for b in range(len(utility)):
            if b in picked:
                continue
            others = list(queue) + [emb[p] for p in picked]
            div = sum(float((emb[b] - q).double().norm()) for q in others) / len(others) if others else 0.0
            score = float(utility[b]) + alpha * div
            if score > best_score:
                best, best_score, best_div = b, score, div
        picked.append(best)
        divs.append(best_div)
    return picked, divs


@pytest.mark.parametrize("queue_rows", [0, 5])
def test_greedy_picks_equal_a_per_pick_restatement(queue_rows):
    gen = torch.Generator().manual_seed(13 + queue_rows)
    B, D, k, alpha = 12, 6, 5, 0.7
    utility = torch.rand(B, generator=gen)
    emb = torch.randn(B, D, generator=gen)
    queue = torch.randn(queue_rows, D, generator=gen) + 1.0
    queue_div = torch.cdist(emb, queue).mean(1) if queue_rows else None
    picks, pick_div = greedy_picks(utility, emb, alpha, k, queue_div, queue_rows)
    want, want_div = greedy_restatement(utility, emb, queue, alpha, k)
    assert picks.tolist() == want
    np.testing.assert_allclose(pick_div.numpy(), want_div, rtol=1e-4, atol=1e-5)
    # the diversity term matters here: a top-k of the step-start score picks a different set
    start = utility + alpha * (queue_div if queue_div is not None else torch.zeros(B))
    assert set(torch.topk(start, k).indices.tolist()) != set(want)
    with pytest.raises(ValueError, match="cannot pick 13 of 12"):
        greedy_picks(utility, emb, alpha, 13)


def test_uds_select_is_greedy_and_pushes_in_pick_order():
    gen = torch.Generator().manual_seed(17)
    B, L, V, k = 10, 8, 14, 4
    sel = UDSSelector(vocab_size=V, max_len=L, alpha=3.0, queue_size=64, r1=2, r2=4)
    for step in range(3):
        logits = torch.randn(B, L, V, generator=gen) * (1 + torch.arange(B)[:, None, None] % 4)
        masked = torch.rand(B, L, generator=gen) < 0.5
        masked[:, 0] = True
        queue = sel.queue[: sel.queue_count].clone() if sel.queue_count else torch.zeros(0, sel.projector.dim)
        utility, _, emb = sel.scores(make_batch(logits, masked))
        want, _ = greedy_restatement(utility, emb, queue, 3.0, k)
        keep = sel.select(make_batch(logits, masked), k)
        assert keep.tolist() == sorted(want) and sel.last_scores["order"].tolist() == want, step
        torch.testing.assert_close(sel.queue[sel.queue_count - k : sel.queue_count], emb[want])


def test_trainer_scores_uds_on_shared_noise_and_trains_on_the_training_noise(examples, tokenizer):
    data = encode_sft(examples[:8], tokenizer, seq_len=96)
    model, preset = tiny_model(tokenizer)
    mask_id = special_ids(tokenizer)["mask"]
    ids, plen = data.input_ids.long(), data.prompt_len.long()
    torch.manual_seed(0)
    from unmask.train.objective import forward_process

    noisy, masked, p_mask = forward_process(ids, plen, mask_id)
    for name in ("uds", "uds_legacy"):
        sel = make_selector(name, vocab_size=model.config.vocab_size, max_len=96)
        cand = Trainer(model, data, preset.train, mask_id, selector=sel).candidates(ids, plen, noisy, masked, p_mask)
        if name == "uds_legacy":
            assert torch.equal(cand.masked, masked)  # scored on the training noise
        else:
            answer_len = 96 - plen
            assert cand.masked.sum(1).tolist() == torch.floor(0.5 * answer_len + 0.5).long().tolist()
            assert not torch.equal(cand.masked, masked)
        assert cand.logits.shape[:2] == (8, 96) and torch.isfinite(cand.losses).all()
    assert LEGACY_UDS == {"noise": "own", "per_token": False, "greedy": False}
