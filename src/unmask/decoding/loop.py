"""The semi-autoregressive block loop shared by every policy (LLaDA ``generate.py`` / Fast-dLLM).

canvas = [prompt | MASK * gen_length], decoded block by block, left to right. Each step: one model
forward (with or without the block KV cache), optional classifier-free guidance and credit fusion,
a scorer gives (candidate, confidence) for the block, the policy says which masked positions to
commit. The loop owns the canvas, the cache and the stopping rule; it knows no policy by name.

With ``cache="none"``, temperature 0 and ``early_stop=False`` the tokens equal the reference code's
(LLaDA ``generate`` for ``topk``, Fast-dLLM ``generate`` for ``threshold``/``factor``). Early stop
never changes the text up to the first end-of-text: a row stops only once a stop token is committed
with every position before it decoded; its remaining positions are filled with end-of-text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from unmask.decoding.credit import CreditConfig, CreditState
from unmask.decoding.policies import Policy, TopK
from unmask.decoding.scorers import Scorer
from unmask.models.cache import CACHE_MODES, KVCache

NOT_COMMITTED = -1
FILLED_BY_EARLY_STOP = -2


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


def _first_stop_finished(gen: torch.Tensor, mask_id: int, stop_ids: torch.Tensor) -> torch.Tensor:
    """Rows where some stop token is committed and every position before it is decoded."""
    decoded_prefix = (gen != mask_id).long().cumprod(dim=-1).bool()
    return (torch.isin(gen, stop_ids) & decoded_prefix).any(dim=-1)


def _lengths(gen: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
    is_stop = torch.isin(gen, stop_ids)
    first = torch.where(is_stop.any(-1), is_stop.int().argmax(-1) + 1, gen.shape[-1])
    return first


@torch.no_grad()
def decode(
    model: Callable[..., torch.Tensor],
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
) -> DecodeResult:
    """Decode ``gen_length`` tokens after left-padded prompts ``input_ids`` [B, P].

    ``model(input_ids, attention_mask=, positions=, cache=, start=, logits_range=)`` returns logits;
    NFE counts its calls. ``time_steps`` synchronises after each step to record its latency.
    """
    if gen_length <= 0 or block_length <= 0 or gen_length % block_length:
        raise ValueError(
            f"gen_length={gen_length} must be a positive multiple of block_length={block_length}"
        )
    if cache not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {cache!r} (allowed: {', '.join(CACHE_MODES)})")
    if isinstance(policy, TopK) and policy.steps_per_block > block_length:
        raise ValueError(f"steps per block ({policy.steps_per_block}) exceeds block_length={block_length}")
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
    if logits_eos_inf and eos_id is None:
        raise ValueError("logits_eos_inf needs eos_id")
    if early_stop and not stop_ids:
        raise ValueError("early_stop needs stop_ids (end-of-text / end-of-turn token ids)")
    scorer = scorer or Scorer()
    device = input_ids.device
    B, P = input_ids.shape
    T = P + gen_length
    x = torch.cat([input_ids, torch.full((B, gen_length), mask_id, dtype=torch.long, device=device)], dim=1)
    if attention_mask is not None:
        ones = torch.ones((B, gen_length), dtype=attention_mask.dtype, device=device)
        attention_mask = torch.cat([attention_mask, ones], dim=1)
        if bool(attention_mask.all()):  # nothing padded: let SDPA take its unmasked (flash) path
            attention_mask = None
    positions = None if attention_mask is None else (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    prompt_index = x != mask_id
    if cfg_scale > 0:  # LLaDA's unsupervised CFG: the unconditional copy has the prompt masked
        attention_mask = None if attention_mask is None else attention_mask.repeat(2, 1)
        positions = None if positions is None else positions.repeat(2, 1)
    stop_tensor = torch.tensor(stop_ids, dtype=torch.long, device=device)

    commit_step = torch.full((B, gen_length), NOT_COMMITTED, dtype=torch.long, device=device)
    commit_conf = torch.zeros((B, gen_length), dtype=torch.float32, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    nfe_per_row = torch.zeros(B, dtype=torch.long, device=device)
    nfe = 0
    step_times: list[float] = []
    fixed_steps = policy.steps_per_block
    sync = device.type == "cuda"
    start_time = time.perf_counter()

    def forward(canvas: torch.Tensor, kv: KVCache | None, start: int, end: int, s: int, e: int) -> torch.Tensor:
        inp = canvas[:, start:end]
        if cfg_scale > 0:
            uncond = torch.where(prompt_index, mask_id, canvas)[:, start:end]
            inp = torch.cat([inp, uncond], dim=0)
        logits = model(inp, attention_mask=attention_mask, positions=positions, cache=kv, start=start,
                       logits_range=(s - start, e - start))
        if cfg_scale > 0:
            cond, uncond_logits = logits.chunk(2, dim=0)
            logits = uncond_logits + (cfg_scale + 1) * (cond - uncond_logits)
        return logits

    for block in range(gen_length // block_length):
        s, e = P + block * block_length, P + (block + 1) * block_length
        if early_stop and bool(finished.all()):
            break
        block_masked = x[:, s:e] == mask_id
        schedule = policy.start_block(block_masked)
        credit_state = None if credit is None else CreditState(credit, B, block_length, device)
        kv = None if cache == "none" else KVCache(cache)
        i = 0
        while True:
            if fixed_steps is not None and i >= fixed_steps:  # LLaDA: steps_per_block forwards per block
                break
            # until the block is decoded (one host sync per step; skipped for a fixed schedule without
            # early stop, where the schedule alone decides)
            if (fixed_steps is None or early_stop) and not bool(block_masked.any()):
                break
            tic = time.perf_counter()
            if kv is None or i == 0:  # no cache, or the block's refresh (fills the cache; also a step)
                logits = forward(x, kv, 0, T, s, e)
            else:
                ws, we = kv.window(s, e, T)
                logits = forward(x, kv, ws, we, s, e)
            nfe += 1
            nfe_per_row += block_masked.any(dim=-1).long()  # a row waiting on others costs it nothing
            if logits_eos_inf:
                logits[..., eos_id] = -torch.inf
            if credit_state is not None:
                logits = credit_state.update_and_fuse(logits, block_masked)
            candidates, confidence = scorer(logits)
            confidence = torch.where(block_masked, confidence, -torch.inf)
            commit = policy(confidence, block_masked, i, schedule)
            x[:, s:e] = torch.where(commit, candidates, x[:, s:e])
            g = slice(s - P, e - P)
            commit_step[:, g] = torch.where(commit, nfe_per_row[:, None] - 1, commit_step[:, g])
            commit_conf[:, g] = torch.where(commit, confidence.float(), commit_conf[:, g])
            if early_stop:
                gen = x[:, P:]
                newly = _first_stop_finished(gen, mask_id, stop_tensor) & ~finished
                fill = newly[:, None] & (gen == mask_id)
                x[:, P:] = torch.where(fill, stop_ids[0], gen)
                commit_step[fill] = FILLED_BY_EARLY_STOP
                finished |= newly
            block_masked = x[:, s:e] == mask_id
            i += 1
            if time_steps:
                if sync:
                    torch.cuda.synchronize(device)
                step_times.append(time.perf_counter() - tic)
    if sync:
        torch.cuda.synchronize(device)
    gen = x[:, P:]
    return DecodeResult(
        sequences=x, tokens=gen, commit_step=commit_step, commit_confidence=commit_conf, nfe=nfe,
        nfe_per_row=nfe_per_row, lengths=_lengths(gen, stop_tensor), elapsed_s=time.perf_counter() - start_time,
        step_times_s=step_times,
    )
