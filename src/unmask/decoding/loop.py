"""The semi-autoregressive block loop shared by every policy (LLaDA ``generate.py`` / Fast-dLLM).

canvas = [prompt | MASK * gen_length], decoded block by block, left to right. Each step: one model
forward (with or without the block KV cache), optional classifier-free guidance and credit fusion,
a scorer gives (candidate, confidence) for the block, the policy says which masked positions to
commit. The loop owns the canvas, the cache and the stopping rule; it knows no policy by name.

``decode`` is the batch front end of the one decode engine (``decoding/engine.py``): the rows go
through a fixed number of slots with continuous batching (each row at its own block and step; a
finished row leaves at once and the next waiting row takes its slot), every step kind static and, on
CUDA, captured as a CUDA graph. Every row decodes exactly as it does alone, whatever the rows beside it.

With ``cache="none"``, temperature 0 and ``early_stop=False`` the tokens equal the reference code's
(LLaDA ``generate`` for ``topk``, Fast-dLLM ``generate`` for ``threshold``/``factor``). Early stop
never changes the text up to the first end-of-text: a row stops only once a stop token is committed
with every position before it decoded; its remaining positions are filled with end-of-text.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from unmask.decoding.credit import CreditConfig
from unmask.decoding.engine import FILLED_BY_EARLY_STOP, NOT_COMMITTED, RowResult, StepCommits, engine_decode
from unmask.decoding.policies import Policy, TopK
from unmask.decoding.scorers import Scorer
from unmask.models.cache import check_cache_mode
from unmask.models.llada import LLaDAModel

__all__ = ["FILLED_BY_EARLY_STOP", "NOT_COMMITTED", "DecodeResult", "decode", "check_lengths", "resolve_compile"]


@dataclass
class DecodeResult:
    """Output of ``decode``. Positions are over the generated part (``gen_length`` columns)."""

    sequences: torch.Tensor  # [B, P + G] the final canvas
    tokens: torch.Tensor  # [B, G]
    commit_step: torch.Tensor  # [B, G] the row's own step (0-based) that committed each token (-2: early-stop fill)
    commit_confidence: torch.Tensor  # [B, G] the confidence the policy saw when committing
    nfe: int  # model forwards for the batch (cache refreshes included)
    nfe_per_row: torch.Tensor  # [B] forwards in which the row had masked tokens in the current block
    lengths: torch.Tensor  # [B] generated tokens up to and including the first stop token
    elapsed_s: float
    step_times_s: list[float] = field(default_factory=list)
    graphs: bool = False  # whether the steps ran as CUDA graph replays
    forwards: int = 0  # model forwards launched (a step with rows at a block start and rows inside one: two)
    slot_efficiency: float = 1.0  # row-steps needed / row-steps computed (slots stepped, buckets included)


def check_lengths(gen_length: object, block_length: object) -> None:
    """``gen_length`` a positive multiple of ``block_length``, both integers; else a ``ValueError`` naming them."""
    for name, value in (("gen_length", gen_length), ("block_length", block_length)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if gen_length <= 0 or block_length <= 0 or gen_length % block_length:
        raise ValueError(f"gen_length={gen_length} must be a positive multiple of block_length={block_length}")


def stop_lengths(gen: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
    """Generated tokens up to and including the first stop token (all of them if none)."""
    is_stop = torch.isin(gen, stop_ids)
    return torch.where(is_stop.any(-1), is_stop.int().argmax(-1) + 1, gen.shape[-1])


COMPILE_MODES: tuple[str, ...] = ("fused", "exact", "off")


def resolve_compile(compile: bool | str | None, device: torch.device) -> str:
    """The compile mode of a decode on ``device``:

    - ``fused`` (``True``; the default on CUDA): steps captured in CUDA graphs, the block's elementwise
      work fused by ``torch.compile``. Numerically equivalent, not bitwise: bf16 tokens can differ
      from the reference arithmetic where two candidates are within rounding of each other.
    - ``exact``: steps captured in CUDA graphs over the eager kernels: bitwise the eager decode.
    - ``off`` (``False``; the default on the CPU): eager steps launched from Python.

    Graphs need CUDA; on the CPU ``fused`` compiles the kernels and ``exact`` runs eagerly.
    """
    if compile is None:
        return "fused" if device.type == "cuda" else "off"
    if isinstance(compile, bool):
        return "fused" if compile else "off"
    if compile not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile!r} (allowed: True, False, None, {', '.join(COMPILE_MODES)})")
    return compile


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_decode_args(
    model: LLaDAModel, input_ids: object, policy: object, *, attention_mask: object, gen_length: object,
    block_length: object, scorer: object, credit: object, cache: object, cfg_scale: object, mask_id: object,
    eos_id: object, stop_ids: object, flags: dict[str, object],
) -> None:
    """``decode``'s arguments, checked before anything is allocated: a ``ValueError`` names the bad value."""
    check_lengths(gen_length, block_length)
    check_cache_mode(cache)
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a policy object (make_policy(name, ...)), got {policy!r}")
    if isinstance(policy, TopK) and policy.steps_per_block > block_length:
        raise ValueError(f"steps per block ({policy.steps_per_block}) exceeds block_length={block_length}")
    if scorer is not None and not isinstance(scorer, Scorer):
        raise ValueError(f"scorer must be a Scorer or None, got {scorer!r}")
    if credit is not None and not isinstance(credit, CreditConfig):
        raise ValueError(f"credit must be a CreditConfig or None, got {credit!r}")
    try:
        finite = math.isfinite(cfg_scale) and not isinstance(cfg_scale, bool)
    except (TypeError, OverflowError):
        finite = False
    if not finite or cfg_scale < 0:
        raise ValueError(f"cfg_scale must be a finite number >= 0, got {cfg_scale!r}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    vocab = model.config.embedding_size
    for name, value in (("mask_id", mask_id), ("eos_id", eos_id)):
        if (value is not None or name == "mask_id") and not (_is_int(value) and 0 <= value < vocab):
            raise ValueError(f"{name} must be a token id in [0, {vocab}), got {value!r}")
    if not isinstance(stop_ids, (tuple, list)) or not all(_is_int(t) and 0 <= t < vocab for t in stop_ids):
        raise ValueError(f"stop_ids must be a tuple of token ids in [0, {vocab}), got {stop_ids!r}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.numel() == 0 \
            or input_ids.dtype not in (torch.long, torch.int32):
        shown = f"a {input_ids.dtype} tensor of shape {tuple(input_ids.shape)}" if isinstance(
            input_ids, torch.Tensor) else repr(input_ids)
        raise ValueError(f"input_ids must be a non-empty [batch, length] integer tensor, got {shown}")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"input_ids holds token id {low if low < 0 else high}, outside the vocabulary [0, {vocab})")
    if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor)
                                       or attention_mask.shape != input_ids.shape):
        shown = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else repr(attention_mask)
        raise ValueError(f"attention_mask must be a tensor of the prompts' shape {tuple(input_ids.shape)}, "
                         f"got {shown}")
    if attention_mask is not None:
        values = attention_mask.unique().tolist()
        if not set(values) <= {0, 1}:
            raise ValueError(f"attention_mask must hold 0 (padding) and 1 (token), got values {values}")
        empty = (attention_mask.sum(dim=-1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"attention_mask of row(s) {empty} is all zero: an empty prompt")
        holed = (attention_mask[:, 1:] < attention_mask[:, :-1]).any(dim=-1).nonzero().flatten().tolist()
        if holed:
            raise ValueError(f"attention_mask of row(s) {holed} is not left padding (zeros, then ones): a hole or "
                             "right padding would move the answer away from the prompt")
    limit = model.config.max_sequence_length
    if input_ids.shape[1] + gen_length > limit:
        raise ValueError(f"prompt length {input_ids.shape[1]} + gen_length {gen_length} exceeds the model's "
                         f"max_sequence_length {limit}")


@torch.no_grad()
def decode(
    model: LLaDAModel,
    input_ids: torch.Tensor,
    policy: Policy,
    *,
    mask_id: int,
    attention_mask: torch.Tensor | None = None,
    gen_length: int = 128,
    block_length: int = 32,
    scorer: Scorer | None = None,
    credit: CreditConfig | None = None,
    cache: str = "none",
    cfg_scale: float = 0.0,
    logits_eos_inf: bool = False,
    eos_id: int | None = None,
    stop_ids: tuple[int, ...] = (),
    early_stop: bool = True,
    time_steps: bool = False,
    compile: bool | str | None = False,
    on_block: Callable[[int, int], None] | None = None,
    slots: int | None = None,
    on_row: Callable[[int, RowResult], None] | None = None,
    on_step: Callable[[StepCommits], None] | None = None,
) -> DecodeResult:
    """Decode ``gen_length`` tokens after left-padded prompts ``input_ids`` [B, P].

    ``model.forward_window`` computes logits. ``compile`` (see ``resolve_compile``): ``True``/``"fused"``
    captures the steps in CUDA graphs and fuses the block's elementwise work with ``torch.compile``;
    ``"exact"`` captures the eager kernels; ``None`` = fused on CUDA, eager on the CPU; ``False`` = eager.
    ``slots``: rows decoding at once (default: all; fewer gives continuous batching over the rows in
    order); the engine (buffers, graphs) is kept per decode signature on the model and reused by later
    calls. ``nfe`` counts engine steps (every row in a slot advances one forward per step),
    ``nfe_per_row`` each row's own forwards. ``time_steps`` records each step's latency; ``on_block(done,
    total)`` reports blocks decoded over all rows; ``on_row(i, RowResult)`` is called as row ``i`` finishes;
    ``on_step(StepCommits)`` after every step of every row with what it committed (positions, tokens,
    confidences; one read-back per step).
    """
    check_decode_args(model, input_ids, policy, attention_mask=attention_mask, gen_length=gen_length,
                      block_length=block_length, scorer=scorer, credit=credit, cache=cache, cfg_scale=cfg_scale,
                      mask_id=mask_id, eos_id=eos_id, stop_ids=stop_ids,
                      flags={"logits_eos_inf": logits_eos_inf, "early_stop": early_stop, "time_steps": time_steps})
    if logits_eos_inf and eos_id is None:
        raise ValueError("logits_eos_inf needs eos_id")
    if early_stop and not stop_ids:
        raise ValueError("early_stop needs stop_ids (end-of-text / end-of-turn token ids)")
    scorer = scorer or Scorer()
    start_time = time.perf_counter()
    mode = resolve_compile(compile, input_ids.device)
    model.compile_kernels(mode == "fused")
    graphs = mode != "off" and input_ids.device.type == "cuda"
    kw = dict(mask_id=mask_id, attention_mask=attention_mask, gen_length=gen_length, block_length=block_length,
              scorer=scorer, credit=credit, cache=cache, cfg_scale=cfg_scale, logits_eos_inf=logits_eos_inf,
              eos_id=eos_id, stop_ids=tuple(stop_ids), early_stop=early_stop, time_steps=time_steps, slots=slots,
              bucket=mode == "fused", on_row=on_row, on_block=on_block, on_step=on_step)
    try:
        rows, steps, step_times, engine = engine_decode(model, input_ids, policy, graphs=graphs, **kw)
    except Exception as err:  # capture is an optimisation: fall back to eager steps, never to wrong tokens
        if not graphs or on_row is not None or on_step is not None:
            raise
        warnings.warn(f"CUDA graph capture failed, decoding eagerly ({type(err).__name__}: {err})", stacklevel=2)
        model.__dict__.pop("_decode_engines", None)
        model.compile_kernels(False)
        rows, steps, step_times, engine = engine_decode(model, input_ids, policy, graphs=False, **kw)
    tokens = torch.stack([r.tokens for r in rows]).to(input_ids.device)
    stop_tensor = torch.tensor(tuple(stop_ids) or (-1,), device=tokens.device)
    return DecodeResult(
        sequences=torch.cat([input_ids, tokens], dim=1), tokens=tokens,
        commit_step=torch.stack([r.commit_step for r in rows]).to(input_ids.device),
        commit_confidence=torch.stack([r.commit_confidence for r in rows]).to(input_ids.device),
        nfe=steps, nfe_per_row=torch.tensor([r.nfe for r in rows], device=input_ids.device),
        lengths=stop_lengths(tokens, stop_tensor), elapsed_s=time.perf_counter() - start_time,
        step_times_s=step_times, graphs=bool(engine.graphs), forwards=engine.stats.forwards,
        slot_efficiency=engine.stats.slot_efficiency,
    )
