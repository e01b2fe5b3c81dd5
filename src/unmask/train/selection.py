"""Online batch selection for masked-diffusion SFT: from each candidate batch, pick the rows to train on.

The trainer draws a candidate batch of ``batch_size / fraction`` rows and noises it once with LLaDA's
forward process (``forward_process``): that is the *training noise*. A selector that ``needs_forward``
gets the logits of one no-grad forward of the candidates (the scoring forward); it returns the indices
of ``k = batch_size`` rows, and the optimiser step is a forward + backward on exactly those rows with
their training noise. No extra backward pass, no reference model, no validation set (the UDS protocol;
its code does the same: a ``no_grad`` scoring forward over the candidates, then ``compute_loss`` on the
selected rows).

The scoring forward runs on the training noise, unless the selector brings its own scoring noise
(``scoring_noise``; UDS by default, see ``shared_noise``): then every candidate is scored at the same
mask ratio and the selected rows still train with their fresh, independent LLaDA noise.

Selectors (``make_selector``):

- ``all``: plain SFT, every row (no candidate batch, no scoring forward);
- ``random``: ``k`` uniformly random rows (no scoring forward);
- ``high_loss``: the ``k`` rows with the largest masked-diffusion loss in the scoring forward
  ("big-loss" selection, a baseline of the UDS paper; scored on the training noise);
- ``uds``: UDS (Utility-Diversity Sampling; Zou et al., "Utility-Diversity Aware Online Batch Selection
  for LLM Supervised Fine-tuning", code github.com/gfyddha/UDS, ``UDSamplingTrainer.py``) with a
  shared scoring noise, per-token utility and greedy picks, see ``UDSSelector``;
- ``uds_legacy``: the first UDS port (each row scored on its own training noise, raw nuclear norm, one
  top-k per step); kept for comparison: its utility tracks the number of masked positions of the
  row's noise draw (docs/benchmarks/uds.md).

For masked-diffusion SFT, "the logits matrix" of a row is its logits at the masked response positions
(docs/design.md §8). We keep the positions in place and zero the other rows of the [L, V] matrix:
zero rows change no singular value, so the nuclear norm is the one of the masked-row submatrix, and
shapes stay static (no host-device synchronisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Candidates:
    """What a selector sees of one noised candidate batch (everything detached).

    logits: [B, L, V] logits of the scoring forward (``None`` for selectors without ``needs_forward``);
        V may include padded embedding columns beyond the vocabulary.
    masked: [B, L] bool, the masked response positions of the scoring forward: the training noise, or
        the selector's own ``scoring_noise`` when it has one.
    losses: [B] float32 per-row masked-diffusion loss of the scoring forward (``None`` without it).
    input_ids: [B, L] the clean rows; prompt_len: [B].
    """

    logits: torch.Tensor | None
    masked: torch.Tensor
    losses: torch.Tensor | None
    input_ids: torch.Tensor
    prompt_len: torch.Tensor

    @property
    def size(self) -> int:
        return self.masked.shape[0]


@runtime_checkable
class BatchSelector(Protocol):
    """Chooses ``k`` rows of a candidate batch.

    needs_forward: whether ``select`` reads ``logits``/``losses`` (the trainer runs the scoring
        forward only for such selectors).

    A selector may also define ``scoring_noise(input_ids, prompt_len, mask_id)`` returning
    ``(noisy, masked, p_mask)`` (or ``None``): the scoring forward then runs on that noise instead of
    the training noise (``Trainer.candidates``).
    """

    needs_forward: bool

    def select(self, batch: Candidates, k: int) -> torch.Tensor:
        """Indices (int64, on the batch's device) of the ``k`` rows to train on."""
        ...


def n_keep(batch: int, fraction: float) -> int:
    """Rows kept out of ``batch`` at ``fraction`` (at least one)."""
    return max(1, min(batch, math.ceil(batch * fraction - 1e-9)))


class AllSelector:
    """Plain SFT: every row trains."""

    needs_forward = False

    def select(self, batch: Candidates, k: int) -> torch.Tensor:  # noqa: D102
        return torch.arange(batch.size, device=batch.masked.device)


class RandomSelector:
    """``k`` rows uniformly at random (the baseline any selection method must beat)."""

    needs_forward = False

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def select(self, batch: Candidates, k: int) -> torch.Tensor:  # noqa: D102
        idx = torch.randperm(batch.size, generator=self.generator)[:k]
        return idx.sort().values.to(batch.masked.device)


class HighLossSelector:
    """Big-loss selection: the ``k`` rows with the largest loss in the scoring forward."""

    needs_forward = True

    def select(self, batch: Candidates, k: int) -> torch.Tensor:  # noqa: D102
        if batch.losses is None:
            raise ValueError("high_loss selection needs the scoring forward's losses")
        return torch.topk(batch.losses, k).indices.sort().values


# ----------------------------------------------------------------------------- UDS


def masked_logit_matrices(
    logits: torch.Tensor, masked: torch.Tensor, vocab_size: int | None = None, per_token: bool = False
) -> torch.Tensor:
    """[B, L, V] float32: each row's logits at its masked positions, zero elsewhere (first ``vocab_size`` columns).

    ``per_token``: divide row b's matrix by its number of masked positions ``n_b`` (``X_b / n_b``; a row
    with none stays zero), so that norms and embeddings are per masked token.
    """
    x = logits[..., :vocab_size] if vocab_size else logits
    weight = masked.to(torch.float32)
    if per_token:
        weight = weight / weight.sum(1, keepdim=True).clamp(min=1.0)
    return x.float() * weight[..., None]


def shared_noise(
    input_ids: torch.Tensor,
    prompt_len: torch.Tensor,
    mask_id: int,
    ratio: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scoring noise at one mask ratio for every row: ``(noisy_ids, masked [B, L] bool, p_mask [B])``.

    One uniform draw ``u ~ U(0, 1)^L`` over positions is shared by all rows; row b masks exactly
    ``n_b = max(1, floor(ratio * A_b + 1/2))`` of its ``A_b = L - prompt_len_b`` answer positions (0 if it
    has none): those with the smallest ``u``. So the noise level is the same for every candidate
    (``n_b / A_b = ratio`` up to rounding), does not depend on the row's content or its place in the
    batch, and is fixed by the generator's seed. ``p_mask = n_b / A_b`` (for ``per_row_loss``).
    """
    B, L = input_ids.shape
    dev = input_ids.device
    pos = torch.arange(L, device=dev)
    answer = pos[None, :] >= prompt_len.to(dev)[:, None]
    answer_len = answer.sum(1)
    n = torch.floor(ratio * answer_len.double() + 0.5).long().clamp(min=1).minimum(answer_len)
    order = torch.rand(L, device=dev, generator=generator).argsort()  # positions by increasing u
    in_order = answer[:, order]
    take = in_order & (in_order.cumsum(1) <= n[:, None])  # the n_b answer positions of smallest u
    masked = take.gather(1, order.argsort()[None, :].expand(B, L))
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy, masked, n.float() / answer_len.clamp(min=1).float()


NUCLEAR_METHODS = ("gram", "newton_schulz", "gram_cpu", "svd", "gesvda")


def nuclear_norms(x: torch.Tensor, method: str = "gram") -> torch.Tensor:
    """[B] float32: ``||X_b||_* = sum_i sigma_i(X_b)``, the UDS utility (``torch.linalg.svdvals(logits).sum(1)``).

    Methods (all exact up to floating point; ``benchmarks/uds_experiment.py`` times them and checks
    they agree before choosing one):

    - ``gram``: ``sum_i sqrt(lambda_i)`` over the eigenvalues of the Gram matrix ``G = X X^T`` (or
      ``X^T X``, whichever is smaller), formed and solved in float64 so that squaring loses nothing;
      round-off eigenvalues below zero are clamped;
    - ``newton_schulz``: ``sqrt(c) * trace((G / c)^{1/2})`` with ``c = trace(G)``, the square root by
      the coupled Newton-Schulz iteration ``T = (3I - Z Y) / 2, Y <- Y T, Z <- T Z`` from ``Y = G / c``,
      ``Z = I`` (Higham, "Functions of Matrices", 2008, eq. 6.35) in float64, ``iters`` steps: only
      batched matrix products, so one GPU launch per product for the whole batch instead of one
      eigensolver call per matrix. An eigenvalue ``lambda`` of ``G / c`` converges once
      ``1.5^(2k) lambda`` is near 1; with 40 steps the unconverged ones (``lambda < 1e-14``) add at most
      ``n * 1e-7 * sqrt(c)``, far below float32 resolution of the sum;
    - ``gram_cpu``: the same, with ``G`` formed on X's device and the eigenvalues solved on the CPU
      in parallel threads (small eigenproblems run faster there than as a loop of GPU solver calls);
    - ``svd``: singular values of X directly (float32);
    - ``gesvda``: cuSOLVER's batched tall-skinny SVD (CUDA only, float32; ``driver="gesvda"``).
    """
    if x.ndim != 3:
        raise ValueError(f"expected a batch of matrices [B, n, m], got shape {tuple(x.shape)}")
    if method == "svd":
        return torch.linalg.svdvals(x.float()).sum(-1)
    if method == "gesvda":
        if x.device.type != "cuda":
            raise ValueError("nuclear-norm method 'gesvda' needs a CUDA tensor")
        tall = x.float() if x.shape[1] >= x.shape[2] else x.float().transpose(1, 2)
        return torch.linalg.svdvals(tall, driver="gesvda").sum(-1)
    if method in ("gram", "gram_cpu", "newton_schulz"):
        x64 = x.double()
        gram = x64 @ x64.transpose(1, 2) if x.shape[1] <= x.shape[2] else x64.transpose(1, 2) @ x64
        if method == "newton_schulz":
            return _trace_sqrt_newton_schulz(gram).float()
        if method == "gram":
            eig = torch.linalg.eigvalsh(gram)
        else:
            eig = _eigvalsh_threads(gram.cpu()).to(x.device)
        return eig.clamp(min=0).sqrt().sum(-1).float()
    raise ValueError(f"unknown nuclear-norm method {method!r}; allowed: {', '.join(NUCLEAR_METHODS)}")


def _trace_sqrt_newton_schulz(gram: torch.Tensor, iters: int = 40) -> torch.Tensor:
    """[B] ``trace(G^{1/2})`` of PSD matrices by the coupled Newton-Schulz iteration (see ``nuclear_norms``)."""
    n = gram.shape[-1]
    c = gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp(min=torch.finfo(gram.dtype).tiny)  # trace >= lambda_max
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device).expand_as(gram)
    y, z = gram / c[:, None, None], eye
    for _ in range(iters):
        t = 1.5 * eye - 0.5 * (z @ y)
        y, z = y @ t, t @ z
    return c.sqrt() * y.diagonal(dim1=-2, dim2=-1).sum(-1)


def _eigvalsh_threads(gram: torch.Tensor, workers: int | None = None) -> torch.Tensor:
    """``torch.linalg.eigvalsh`` of a CPU batch, split over threads (LAPACK releases the GIL)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(workers or os.cpu_count() or 1, gram.shape[0]))
    if workers == 1:
        return torch.linalg.eigvalsh(gram)
    chunks = gram.chunk(workers)
    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        return torch.cat(list(pool.map(torch.linalg.eigvalsh, chunks)))


class FastJLProjector:
    """UDS's two-sided fast Johnson-Lindenstrauss projection of a [T, V] logits matrix to [r1, r2].

    The UDS code (``FastJLProjector.project_batch``) computes, for X zero-padded to T rows::

        Y = Re FFT_V(X * d2)[:, idx2] * sqrt(V / r2)         # random signs d2 on the vocabulary
        Z = Re FFT_T(Y * d1[:, None])[idx1, :] * sqrt(T / r1)  # random signs d1 on time

    with ``idx2`` r2 random frequencies of V and ``idx1`` r1 random frequencies of T. Both steps are
    linear and keep only a few frequencies, so we apply them as two small matrix products with the
    selected cosine rows: ``Z = C1^T X C2`` with ``C2[j, k] = d2_j cos(2 pi j idx2_k / V) sqrt(V/r2)``
    and ``C1[t, i] = d1_t cos(2 pi t idx1_i / T) sqrt(T/r1)`` (``Re FFT(x)_k = sum_j x_j cos(2 pi jk/N)``).
    The padding rows are zero, so only the first L rows of ``C1`` are used. Defaults: r1 = 8 time
    frequencies, r2 = 128 vocabulary frequencies (``projection_dim2``, ``projection_dim1`` in UDS).
    """

    def __init__(self, T: int, V: int, r1: int = 8, r2: int = 128, seed: int = 0, device: str | torch.device = "cpu"):
        gen = torch.Generator().manual_seed(seed)
        self.T, self.V, self.r1, self.r2 = T, V, r1, r2
        self.d2 = torch.randint(0, 2, (V,), generator=gen).double() * 2 - 1
        self.idx2 = torch.randint(0, V, (r2,), generator=gen)
        self.d1 = torch.randint(0, 2, (T,), generator=gen).double() * 2 - 1
        self.idx1 = torch.randint(0, T, (r1,), generator=gen)
        self.c2 = (self.d2[:, None] * _cos_table(V, self.idx2) * math.sqrt(V / r2)).float().to(device)
        self.c1 = (self.d1[:, None] * _cos_table(T, self.idx1) * math.sqrt(T / r1)).float().to(device)

    @property
    def dim(self) -> int:
        return self.r1 * self.r2

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, V] (L <= T; rows past L are the zero padding) -> [B, r1 * r2] float32."""
        B, L, V = x.shape
        if L > self.T or V != self.V:
            raise ValueError(f"projector built for at most {self.T} x {self.V} matrices, got {L} x {V}")
        if self.c2.device != x.device:  # move the tables once, not every step
            self.c1, self.c2 = self.c1.to(x.device), self.c2.to(x.device)
        y = x.float() @ self.c2  # [B, L, r2]
        z = self.c1[:L].T @ y  # [B, r1, r2]
        return z.reshape(B, -1)


def _cos_table(n: int, freqs: torch.Tensor) -> torch.Tensor:
    """[n, len(freqs)] float64: ``cos(2 pi ((j * k) mod n) / n)`` (exact integer phases)."""
    j = torch.arange(n, dtype=torch.int64)[:, None]
    phase = (j * freqs[None, :].to(torch.int64)) % n
    return torch.cos(2 * math.pi * phase.double() / n)


CHUNK_ELEMENTS = 1 << 27  # logits per UDS scoring chunk (512 MiB in float32)


def greedy_picks(
    utility: torch.Tensor,
    emb: torch.Tensor,
    alpha: float,
    k: int,
    queue_diversity: torch.Tensor | None = None,
    queue_count: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy UDS picks: ``(picks [k] int64 in pick order, diversity [k] of each pick when picked)``.

    Pick j (j = 0..k-1) takes ``argmax_{b not yet picked} u_b + alpha * d_b(Q + P_j)`` (first index on
    ties), where ``d_b(S) = mean_{q in S} ||e_b - q||_2`` (0 for an empty set), Q is the memory buffer
    (``queue_count`` entries; ``queue_diversity`` = ``d_b(Q)``) and P_j the rows picked before j. With
    ``T_b = sum_{q in Q} ||e_b - q||`` kept up to date (``T_b += ||e_b - e_p||`` after a pick p),
    ``d_b(Q + P_j) = T_b / (|Q| + j)``: each pick is a few tensor ops over all candidates and nothing
    is read back to the host (no device synchronisation).
    """
    B = utility.shape[0]
    if not 0 < k <= B:
        raise ValueError(f"cannot pick {k} of {B} candidates")
    if queue_count and queue_diversity is not None:
        total = queue_diversity.float() * queue_count
    else:
        total, queue_count = torch.zeros(B, device=utility.device), 0
    pair = torch.cdist(emb.float(), emb.float(), p=2)  # [B, B]
    taken = torch.zeros(B, dtype=torch.bool, device=utility.device)
    utility = utility.float()
    picks, diversity = [], []
    for j in range(k):
        n = queue_count + j
        div = total / n if n else torch.zeros_like(total)
        p = (utility + alpha * div).masked_fill(taken, -math.inf).argmax().view(1)
        picks.append(p)
        diversity.append(div.index_select(0, p))
        taken.index_fill_(0, p, True)
        total = total + pair.index_select(0, p)[0]
    return torch.cat(picks), torch.cat(diversity)


class UDSSelector:
    """UDS: utility + alpha * inter-sample diversity (Zou et al., "Utility-Diversity Aware Online Batch
    Selection for LLM Supervised Fine-tuning"; gfyddha/UDS ``UDSamplingTrainer.compute_top_index``).

    For each candidate row b, with ``X_b`` its [L, V] logits at the masked answer positions of the
    scoring forward (module docstring) and ``n_b`` their number:

    - scoring noise (``noise``): ``"shared"`` (default) scores every candidate at the same mask ratio
      ``ratio`` (``shared_noise``; one draw per step from the seed ``seed * 1_000_003 + step``), so that
      the utility compares rows, not noise draws; the selected rows then train with their own fresh
      LLaDA noise, drawn independently of the selection. ``"own"`` scores each row on its training noise
      (the UDS code has no noise; the first port did this, and its utility then tracked ``n_b``:
      correlation 0.91-0.99 over candidate batches, docs/benchmarks/uds.md);
    - ``M_b = X_b / n_b`` with ``per_token`` (default; a nuclear norm grows with the number of rows),
      else ``M_b = X_b``;
    - utility ``u_b = ||M_b||_* = sum_i sigma_i(M_b)`` (nuclear norm: large for confident *and* varied
      predictions, the paper's utility and intra-sample diversity in one number);
    - embedding ``e_b = FastJLProjector(M_b)`` (r1 * r2 = 1024 dims);
    - diversity ``d_b(S) = mean_{q in S} ||e_b - q||_2`` to a set S of embeddings (0 for an empty S);
    - ``greedy`` (default): ``k`` picks one at a time, pick j the best ``u_b + alpha * d_b(Q + P_j)`` over
      the rows not yet picked, with Q the memory buffer and P_j the rows picked before it this step
      (``greedy_picks``): rows picked together are compared for diversity, as in the UDS code, which
      picks 4 rows per micro-batch and pushes them before the next; else the top ``k`` of
      ``u_b + alpha * d_b(Q)`` at once (the first port);
    - push the picks' embeddings into Q (in pick order), a FIFO ring of ``queue_size`` = 1024 entries;
      alpha = 2.5e-3 (the UDS trainer's default; the repository's MMLU script passes 1.5e-3).

    ``nuclear``: the ``nuclear_norms`` method; ``auto`` takes ``newton_schulz`` on a GPU, ``gram`` on the CPU.
    ``make_selector("uds_legacy")`` is ``noise="own", per_token=False, greedy=False``.
    """

    needs_forward = True

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        alpha: float = 2.5e-3,
        queue_size: int = 1024,
        r1: int = 8,
        r2: int = 128,
        nuclear: str = "auto",
        seed: int = 0,
        noise: str = "shared",
        ratio: float = 0.5,
        per_token: bool = True,
        greedy: bool = True,
    ) -> None:
        if queue_size <= 0:
            raise ValueError(f"queue_size must be > 0, got {queue_size}")
        if alpha < 0 or not math.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        if noise not in ("shared", "own"):
            raise ValueError(f"noise must be 'shared' or 'own', got {noise!r}")
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        self.vocab_size, self.alpha, self.queue_size, self.nuclear = vocab_size, alpha, queue_size, nuclear
        self.noise, self.ratio, self.per_token, self.greedy, self.seed = noise, ratio, per_token, greedy, seed
        self.projector = FastJLProjector(max_len, vocab_size, r1, r2, seed=seed)
        self.queue: torch.Tensor | None = None
        self.queue_ptr = 0
        self.queue_count = 0
        self.steps = 0  # scoring-noise draws so far (the per-step seed)
        self.last_scores: dict[str, torch.Tensor] = {}

    def scoring_noise(
        self, input_ids: torch.Tensor, prompt_len: torch.Tensor, mask_id: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """This step's ``shared_noise`` (``None`` with ``noise="own"``: score on the training noise)."""
        if self.noise == "own":
            return None
        gen = torch.Generator(device=input_ids.device).manual_seed(self.seed * 1_000_003 + self.steps)
        self.steps += 1
        return shared_noise(input_ids, prompt_len, mask_id, self.ratio, gen)

    def scores(self, batch: Candidates) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(utility [B], diversity to the buffer [B], embeddings [B, D]) of a candidate batch.

        Rows go through in chunks of at most ``CHUNK_ELEMENTS`` logits, so that the float32/float64
        copies stay bounded for large vocabularies (LLaDA-8B: 126,464 columns).
        """
        if batch.logits is None:
            raise ValueError("UDS needs the scoring forward's logits")
        method = self.nuclear
        if method == "auto":  # batched matrix products on a GPU; LAPACK eigensolvers on the CPU
            method = "newton_schulz" if batch.logits.device.type == "cuda" else "gram"
        B, L = batch.masked.shape
        rows = max(1, CHUNK_ELEMENTS // (L * min(batch.logits.shape[-1], self.vocab_size)))
        utility, emb = [], []
        for s in range(0, B, rows):
            x = masked_logit_matrices(
                batch.logits[s : s + rows], batch.masked[s : s + rows], self.vocab_size, per_token=self.per_token
            )
            utility.append(nuclear_norms(x, method))
            emb.append(self.projector.project(x))
        utility, emb = torch.cat(utility), torch.cat(emb)
        if self.queue_count == 0:
            diversity = torch.zeros_like(utility)
        else:
            queue = self.queue[: self.queue_count].to(emb.device)
            diversity = torch.cdist(emb, queue, p=2).mean(1)
        return utility, diversity, emb

    def select(self, batch: Candidates, k: int) -> torch.Tensor:  # noqa: D102
        utility, diversity, emb = self.scores(batch)
        combined = utility + self.alpha * diversity
        if self.greedy:
            order, picked_diversity = greedy_picks(utility, emb, self.alpha, k, diversity, self.queue_count)
            keep = order.sort().values
        else:
            keep = order = torch.topk(combined, k).indices.sort().values
            picked_diversity = diversity[keep]
        self.push(emb[order])
        self.last_scores = {
            "utility": utility,
            "diversity": diversity,
            "combined": combined,
            "order": order,
            "picked_diversity": picked_diversity,
        }
        return keep

    def push(self, emb: torch.Tensor) -> None:
        """FIFO ring update: write ``emb`` [n, D] at the pointer (wrapping), count up to ``queue_size``."""
        n, D = emb.shape
        if self.queue is None:
            self.queue = torch.zeros(self.queue_size, D, device=emb.device, dtype=emb.dtype)
        if n > self.queue_size:  # only the newest queue_size rows survive a wrap-around
            emb, n = emb[-self.queue_size :], self.queue_size
        idx = (torch.arange(n, device=emb.device) + self.queue_ptr) % self.queue_size
        self.queue[idx] = emb.to(self.queue.dtype)
        self.queue_ptr = (self.queue_ptr + n) % self.queue_size
        self.queue_count = min(self.queue_size, self.queue_count + n)


SELECTORS = {
    "all": AllSelector,
    "random": RandomSelector,
    "high_loss": HighLossSelector,
    "uds": UDSSelector,
    "uds_legacy": UDSSelector,
}
LEGACY_UDS = {"noise": "own", "per_token": False, "greedy": False}  # the first port (docs/benchmarks/uds.md)


def make_selector(
    name: str, *, vocab_size: int | None = None, max_len: int | None = None, seed: int = 0, **kwargs
) -> BatchSelector:
    """A selector by name; ``uds`` and ``uds_legacy`` need ``vocab_size`` and ``max_len`` (the row length T)."""
    if name == "all":
        return AllSelector()
    if name == "random":
        return RandomSelector(seed=seed)
    if name == "high_loss":
        return HighLossSelector()
    if name in ("uds", "uds_legacy"):
        if vocab_size is None or max_len is None:
            raise ValueError(f"{name} selection needs vocab_size and max_len")
        options = {**LEGACY_UDS, **kwargs} if name == "uds_legacy" else kwargs
        return UDSSelector(vocab_size, max_len, seed=seed, **options)
    raise ValueError(f"unknown selector {name!r}; allowed: {', '.join(SELECTORS)}")
