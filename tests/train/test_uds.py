"""UDS selection against plain restatements: nuclear norm by SVD, the FFT projector of the UDS code,
mean-distance diversity, top-k of the combined score, and the FIFO buffer."""

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
    Candidates,
    FastJLProjector,
    UDSSelector,
    make_selector,
    masked_logit_matrices,
    n_keep,
    nuclear_norms,
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
    y = torch.fft.fft(padded * proj.d2, dim=-1).real[..., proj.idx2] * (proj.V ** 0.5 / proj.r2 ** 0.5)
    z = torch.fft.fft(y * proj.d1.view(1, proj.T, 1), dim=1).real[:, proj.idx1, :] * (proj.T ** 0.5 / proj.r1 ** 0.5)
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


def test_uds_selection_against_a_plain_restatement():
    gen = torch.Generator().manual_seed(5)
    B, L, V, k = 8, 12, 20, 3
    sel = UDSSelector(vocab_size=V, max_len=16, alpha=0.05, queue_size=5, r1=2, r2=4, seed=0)
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
    sel = UDSSelector(vocab_size=V, max_len=L, alpha=1.0, queue_size=8, r1=2, r2=3, seed=0)
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
    assert isinstance(make_selector("uds", vocab_size=10, max_len=8), UDSSelector)
    with pytest.raises(ValueError, match="needs vocab_size and max_len"):
        make_selector("uds")
    with pytest.raises(ValueError, match="unknown selector 'best'"):
        make_selector("best")
    with pytest.raises(ValueError, match="alpha must be"):
        UDSSelector(10, 8, alpha=-1)


def test_trainer_runs_uds(examples, tokenizer):
    data = encode_sft(examples[:24], tokenizer, seq_len=96)
    model, preset = tiny_model(tokenizer)
    cfg = preset.train
    cfg.steps, cfg.batch_size, cfg.selection_fraction, cfg.log_every = 3, 2, 0.25, 1
    sel = make_selector("uds", vocab_size=model.config.vocab_size, max_len=96)
    log = Trainer(model, data, cfg, special_ids(tokenizer)["mask"], selector=sel).fit()
    assert log.info["steps"] == 3 and sel.queue_count == 6
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
