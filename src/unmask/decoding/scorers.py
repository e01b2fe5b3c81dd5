"""Scorers: logits [B, L, V] -> (candidate token [B, L], confidence [B, L]).

The candidate is the token that would be committed at a position; the confidence is what the commit
policy ranks and thresholds. Probabilities are computed with float64 accuracy, as Fast-dLLM's
``get_transfer_index`` does (``softmax(logits.to(float64))``), but without a [B, L, V] float64 tensor:
the log-normaliser is taken over chunks of rows. (LLaDA's own ``generate.py`` takes the softmax in the
logits' dtype, bf16 on a GPU; in float32/float64 models the two agree.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

SCORER_NAMES: tuple[str, ...] = ("confidence", "margin", "entropy", "random")
# where the confidence softmax is taken: float64 (Fast-dLLM; LLaDA's generate.py before it changed) or the
# logits' own dtype (LLaDA's generate.py at HEAD: ``F.softmax(logits)``, bf16 on a GPU)
CONFIDENCE_DTYPES: tuple[str, ...] = ("float64", "logits")
# what the confidence is the probability under: the model's softmax (LLaDA, Fast-dLLM) or the distribution the
# candidate is drawn from, softmax(filter(logits / T)) (Dream's ``sample_tokens``)
CONFIDENCE_FROM: tuple[str, ...] = ("logits", "sampling")


def top_p_top_k(logits: torch.Tensor, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Dream's ``sample_tokens`` filters, in its order: nucleus (keep the most likely tokens up to and including
    the first whose cumulative probability exceeds ``top_p``; the top-1 always), then top-k (drop logits below
    the k-th largest; ties with it stay). Dropped logits become -inf (the reference: the dtype's minimum, the same
    probabilities: exactly 0)."""
    if top_p is not None and top_p < 1:
        values, order = logits.sort(dim=-1, descending=True)
        cumulative = values.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative > top_p
        drop[..., 1:] = drop[..., :-1].clone()
        drop[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -torch.inf)
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    return logits
CHUNK_ELEMENTS = 1 << 24  # float64 elements per chunk (128 MiB)


def log_normaliser(logits: torch.Tensor) -> torch.Tensor:
    """log sum_v exp(l_v) over the last dim in float64, [..., V] -> [...], chunked over rows."""
    flat = logits.reshape(-1, logits.shape[-1])
    rows = max(1, CHUNK_ELEMENTS // flat.shape[-1])
    parts = [torch.logsumexp(chunk.double(), dim=-1) for chunk in flat.split(rows)]
    return torch.cat(parts).reshape(logits.shape[:-1])


def log_probs_float64(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax in float64 (for the margin and entropy scores, which need the whole distribution)."""
    return torch.log_softmax(logits.double(), dim=-1)


def gumbel_argmax(logits: torch.Tensor, temperature: float, uniform: torch.Tensor | None) -> torch.Tensor:
    """LLaDA's ``add_gumbel_noise`` + argmax, in float64.

    The reference takes argmax_v exp(l_v) / (-log u_v)^T with u ~ U(0, 1); we take the equal
    argmax_v l_v - T log(-log u_v), which cannot overflow. T = 0 is plain argmax.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    return (logits.double() - temperature * torch.log(-torch.log(uniform))).argmax(dim=-1)


def candidate_probability(
    logits: torch.Tensor, candidates: torch.Tensor, normaliser: Callable[[torch.Tensor], torch.Tensor] = log_normaliser,
) -> torch.Tensor:
    """p(candidate) = exp(l_c - logsumexp(l)), in float64, without materialising all of p."""
    chosen = logits.gather(-1, candidates[..., None]).squeeze(-1).double()
    return (chosen - normaliser(logits)).exp()


def argmax_confidence(
    logits: torch.Tensor, normaliser: Callable[[torch.Tensor], torch.Tensor] = log_normaliser,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy candidate and its probability, with the normaliser in float64."""
    candidates = logits.argmax(dim=-1)
    return candidates, candidate_probability(logits, candidates, normaliser)


def _unchunked_log_normaliser(logits: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logits.double(), dim=-1)  # under torch.compile: fused, no float64 copy in memory


SPLIT_CHUNKS = (256, 128, 64, 32, 16)  # vocabulary chunks of the two-stage greedy reductions


def _fused_argmax_confidence(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy candidate c = argmax_v l_v and p(c) = exp(l_c - logsumexp(l)) = 1 / sum_v exp(l_v - l_c), in
    float64, both reduced in two stages over vocabulary chunks (a reduction over 126k entries with one
    output per position would run on as many GPU programs as positions: 32 at batch 1).

    The candidate is the first maximum, as ``argmax``: the first chunk holding the largest chunk maximum,
    then the first maximum inside it.
    """
    V = logits.shape[-1]
    chunks = next((c for c in SPLIT_CHUNKS if V % c == 0 and V // c >= 64), None)
    if chunks is None:
        return argmax_confidence(logits, _unchunked_log_normaliser)
    parts = logits.unflatten(-1, (chunks, V // chunks))
    part_max, part_arg = parts.max(dim=-1)
    best = part_max.argmax(dim=-1, keepdim=True)
    candidates = (best * (V // chunks) + part_arg.gather(-1, best)).squeeze(-1)
    top = part_max.gather(-1, best).double()  # l_c
    total = (parts.double() - top[..., None]).exp().sum(-1).sum(-1)
    return candidates, total.reciprocal()


_COMPILED_ARGMAX_CONFIDENCE = None


def compiled_argmax_confidence():
    """``argmax_confidence`` through ``torch.compile``: split reductions over the vocabulary (few rows,
    long rows) and no float64 copy of the logits in memory."""
    from unmask.models.llada import compile_kernel

    global _COMPILED_ARGMAX_CONFIDENCE
    if _COMPILED_ARGMAX_CONFIDENCE is None:
        _COMPILED_ARGMAX_CONFIDENCE = compile_kernel(_fused_argmax_confidence)  # static shapes, as the model's
    return _COMPILED_ARGMAX_CONFIDENCE


@dataclass
class Noise:
    """The random draws of one step, taken before it (so a captured step replays with fresh noise)."""

    uniform: torch.Tensor | None = None  # [B, L, V] float64 for the Gumbel-max candidate (temperature > 0)
    random_confidence: torch.Tensor | None = None  # [B, L] for the ``random`` scorer

    def head(self, start: int, stop: int) -> Noise:
        """The draws of rows ``[start, stop)`` (views: filling them fills these)."""
        return Noise(None if self.uniform is None else self.uniform[start:stop],
                     None if self.random_confidence is None else self.random_confidence[start:stop])


@dataclass
class Scorer:
    """Candidate by (Gumbel-)argmax; confidence by ``kind``:

    - ``confidence``: p(candidate) under softmax of the raw logits (LLaDA ``low_confidence``),
      p_c = exp(l_c - logsumexp(l)) in float64.
    - ``margin``: p_top1 - p_top2.
    - ``entropy``: negative entropy sum_v p_v log p_v (higher = more certain).
    - ``random``: U(0, 1) (LLaDA ``remasking='random'``).

    ``confidence_exclude`` lists token ids whose logits are set to -inf for the confidence only,
    after the candidate is chosen: LLaDA's ``confidence_eos_eot_inf`` (whose reference line only
    affects end-of-turn: a candidate equal to it gets confidence 0).

    ``confidence_dtype``: ``float64`` (default; Fast-dLLM and LLaDA's earlier ``generate.py``) or ``logits``:
    the softmax in the logits' own dtype, as LLaDA's ``generate.py`` at HEAD (``F.softmax(logits)``: bf16
    probabilities on a GPU, with their ties), then widened to float64 for the policy.

    ``top_p`` / ``top_k`` (Dream's ``sample_tokens``): the candidate is drawn from (T = 0: the argmax of)
    q = softmax(top_k(top_p(logits / T))) (``top_p_top_k``; T = 0: no division). ``confidence_from``: the
    confidence, margin or entropy of ``logits`` (the model's softmax: LLaDA, Fast-dLLM) or of ``sampling``, q
    itself (Dream: the probability of the token it drew under the distribution it drew it from).
    """

    kind: str = "confidence"
    temperature: float = 0.0
    generator: torch.Generator | None = None
    confidence_exclude: Sequence[int] = ()
    confidence_dtype: str = "float64"
    top_p: float | None = None
    top_k: int | None = None
    confidence_from: str = "logits"

    def __post_init__(self) -> None:
        if self.kind not in SCORER_NAMES:
            raise ValueError(f"unknown scorer {self.kind!r} (allowed: {', '.join(SCORER_NAMES)})")
        if self.confidence_dtype not in CONFIDENCE_DTYPES:
            raise ValueError(f"confidence_dtype must be one of {', '.join(CONFIDENCE_DTYPES)}, "
                             f"got {self.confidence_dtype!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.confidence_from not in CONFIDENCE_FROM:
            raise ValueError(f"confidence_from must be one of {', '.join(CONFIDENCE_FROM)}, "
                             f"got {self.confidence_from!r}")

    @property
    def random(self) -> bool:
        """Whether a step draws random numbers (then ``draw`` gives them)."""
        return self.temperature > 0 or self.kind == "random"

    def allocate_noise(self, batch: int, length: int, vocab: int, device: torch.device) -> Noise:
        return Noise(
            torch.empty((batch, length, vocab), dtype=torch.float64, device=device) if self.temperature > 0 else None,
            torch.empty((batch, length), dtype=torch.float32, device=device) if self.kind == "random" else None,
        )

    def draw(self, noise: Noise, generator: torch.Generator | None = None) -> Noise:
        """Fill ``noise`` in place from ``generator`` (default the scorer's): the Gumbel uniforms first, then
        the random confidences."""
        generator = generator or self.generator
        if noise.uniform is not None:
            noise.uniform.uniform_(generator=generator)
        if noise.random_confidence is not None:
            noise.random_confidence.uniform_(generator=generator)
        return noise

    def __call__(
        self, logits: torch.Tensor, noise: Noise | None = None, fused: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(candidate, confidence) per position; ``fused`` runs the greedy confidence through ``torch.compile``."""
        native = self.confidence_dtype == "logits"
        filtered = self.top_p is not None or self.top_k is not None or self.confidence_from == "sampling"
        if self.kind == "confidence" and self.temperature == 0 and not self.confidence_exclude and not native \
                and not filtered:
            return (compiled_argmax_confidence() if fused else argmax_confidence)(logits)
        if noise is None and self.random:
            B, L, V = logits.shape
            noise = self.draw(self.allocate_noise(B, L, V, logits.device))
        uniform = None if noise is None else noise.uniform
        if filtered:  # Dream's sample_tokens: temperature, top-p, top-k, then draw from what is left
            scaled = logits.double() / self.temperature if self.temperature > 0 else logits.double()
            sampling = top_p_top_k(scaled, self.top_p, self.top_k)
            candidates = gumbel_argmax(sampling, 1.0 if self.temperature > 0 else 0.0, uniform)
            if self.confidence_from == "sampling":
                logits = sampling
        else:
            candidates = gumbel_argmax(logits, self.temperature, uniform)
        if self.kind == "random":
            return candidates, noise.random_confidence
        if self.confidence_exclude:
            logits = logits.clone()
            for token in self.confidence_exclude:
                logits[..., token] = -torch.inf
        if native:  # the reference's own dtype: probabilities rounded to it (bf16: 8 significant bits)
            log_probs = torch.log_softmax(logits, dim=-1)
            if self.kind == "confidence":
                probs = torch.softmax(logits, dim=-1)
                return candidates, probs.gather(-1, candidates[..., None]).squeeze(-1).double()
            log_probs = log_probs.double()
        elif self.kind == "confidence":
            return candidates, candidate_probability(logits, candidates)
        else:
            log_probs = log_probs_float64(logits)
        if self.kind == "margin":
            top2 = log_probs.topk(2, dim=-1).values.exp()
            return candidates, top2[..., 0] - top2[..., 1]
        probs = log_probs.exp()
        return candidates, torch.nan_to_num(probs * log_probs).sum(-1)  # 0 * log 0 = 0
