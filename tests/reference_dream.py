"""Plain, slow restatements of Dream's reference semantics, written independently of unmask's code.

- ``ref_forward``: ``DreamModel.forward`` of Dream-org/Dream-v0-Instruct-7B's ``modeling_dream.py``: raw
  logits (row i predicts token i + 1), its padding (a [B, 1, N, N] mask, valid query and valid key, and
  positions ``tok_idx``), and Fast-dLLM's cache (``dream/model/modeling_dream.py``: keys cached before
  RoPE, plain positions 0..T-1 over the keys).
- ``ref_dream_generate``: Dream's ``diffusion_generate`` (``_sample``) at temperature 0, ``alg`` =
  maskgit_plus, topk_margin or entropy.
- ``ref_fastdllm_dream_generate``: Fast-dLLM's ``generation_utils_block._sample`` (prefix or dual cache,
  ``alg`` = confidence_threshold or entropy) with batch-size-1 semantics; ``cache="none"``: the same
  recipe with a full forward at every step.
Per-row Python loops are on purpose: readability over speed.
"""

from __future__ import annotations

import math

import torch
from reference import rms_norm, rope, with_past


def shift(logits):
    """Dream's generate: the logits for column i are the output of column i - 1 (column 0 keeps its own)."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def ref_forward(w, cfg, x, attention_mask=None, tok_idx=None, past=None, query_start=0, replace=None):
    """Raw logits for tokens ``x`` [B, n] and the per-layer (keys before RoPE, values).

    attention_mask [B, n] (no cache): query i sees key j iff both are tokens; a padded query sees nothing
    and its output is 0 (as torch's SDPA for a fully masked row). tok_idx: rotary positions [B, n].
    past: per layer (k, v) [B, kv_heads, S, hd]; without ``replace`` the queries are at columns
    query_start.. and keys = past ++ new (prefix cache); with ``replace`` = (a, b) the new keys/values
    overwrite columns [a, b) of ``past`` (dual cache).
    """
    B, n = x.shape
    H, kvH, eps, theta = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"], cfg["rope_theta"]
    hd = cfg["hidden_size"] // H
    h = w["model.embed_tokens.weight"][x]
    present = []
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        a = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q, k, v = (a @ w[p + f"self_attn.{name}.weight"].T + w[p + f"self_attn.{name}.bias"]
                   for name in ("q_proj", "k_proj", "v_proj"))
        q = q.view(B, n, H, hd).transpose(1, 2)
        k = k.view(B, n, kvH, hd).transpose(1, 2)
        v = v.view(B, n, kvH, hd).transpose(1, 2)
        k, v = with_past(None if past is None else past[layer], k, v, replace)
        present.append((k, v))
        if past is None:
            qpos = kpos = tok_idx if tok_idx is not None else torch.arange(n)
        else:
            qpos, kpos = torch.arange(query_start, query_start + n), torch.arange(k.shape[2])
        qr, kr = rope(q, qpos, theta), rope(k, kpos, theta)
        kr, vv = kr.repeat_interleave(H // kvH, dim=1), v.repeat_interleave(H // kvH, dim=1)
        scores = qr @ kr.transpose(-1, -2) / math.sqrt(hd)
        if attention_mask is not None:
            valid = attention_mask.bool()
            scores = scores.masked_fill(~(valid[:, None, :, None] & valid[:, None, None, :]), float("-inf"))
        att = torch.softmax(scores, -1).nan_to_num(0.0) @ vv
        h = h + att.transpose(1, 2).reshape(B, n, -1) @ w[p + "self_attn.o_proj.weight"].T
        m = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        gate = m @ w[p + "mlp.gate_proj.weight"].T
        h = h + (gate * torch.sigmoid(gate) * (m @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return h @ head.T, present


def _filters(logits, top_p=None, top_k=None):
    """``sample_tokens``'s nucleus then top-k filters (dropped logits at the dtype's minimum)."""
    if top_p is not None and top_p < 1:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        remove = torch.cumsum(torch.softmax(sorted_logits, -1), -1) > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = 0
        logits = logits.masked_fill(torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove),
                                    torch.finfo(logits.dtype).min)
    if top_k is not None:
        remove = logits < torch.topk(logits, min(top_k, logits.size(-1)))[0][..., -1, None]
        logits = logits.masked_fill(remove, torch.finfo(logits.dtype).min)
    return logits


def _confidence(logits, alg, top_p=None, top_k=None):
    """Dream's ``sample_tokens`` at temperature 0: (confidence, candidate) of each row of ``logits``."""
    probs = torch.softmax(_filters(logits, top_p, top_k), -1)
    confidence, x0 = probs.max(-1)
    if alg == "topk_margin":
        top = probs.sort(-1, descending=True).values
        confidence = top[:, 0] - top[:, 1]
    elif alg == "entropy":
        confidence = (probs * torch.log(probs + 1e-10)).sum(-1)
    return confidence, x0


def ref_dream_generate(w, cfg, prompt, gen_length, steps, mask_id, alg="maskgit_plus", attention_mask=None,
                       eps=1e-3, top_p=None, top_k=None):
    """Dream's diffusion_generate at temperature 0 (one block over the whole generation)."""
    B = prompt.shape[0]
    x = torch.cat([prompt, torch.full((B, gen_length), mask_id, dtype=torch.long)], 1)
    am = tok_idx = None
    if attention_mask is not None and bool((attention_mask == 0).any()):
        am = torch.cat([attention_mask, torch.ones(B, gen_length, dtype=attention_mask.dtype)], 1)
        tok_idx = (am.long().cumsum(-1) - 1).masked_fill(am == 0, 1)
    timesteps = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        mask_index = x == mask_id
        logits = shift(ref_forward(w, cfg, x, am, tok_idx)[0])
        confidence, x0 = _confidence(logits[mask_index], alg, top_p, top_k)
        n_masked = mask_index.sum() / B  # the reference divides the batch's total: float32
        t, s = timesteps[i], timesteps[i + 1]
        k = int(n_masked * (1 - s / t)) if i < steps - 1 else int(n_masked)
        full = torch.full(x.shape, float("-inf"), dtype=logits.dtype)
        full[mask_index] = confidence
        if k > 0:
            chosen = full.topk(k, dim=-1).indices
            candidates = torch.full_like(x, mask_id)
            candidates[mask_index] = x0
            rows = torch.arange(B)[:, None]
            x[rows, chosen] = candidates[rows, chosen]
    return x


def ref_fastdllm_dream_generate(w, cfg, prompt, gen_length, block_length, mask_id, cache, threshold=None,
                                steps=None, eps=1e-3):
    """Fast-dLLM's cached Dream generate for one row (prompt [1, P]); ``threshold`` picks
    alg=confidence_threshold, else alg=entropy with ``steps`` in all. Returns (x, nfe)."""
    P = prompt.shape[1]
    T = P + gen_length
    x = torch.cat([prompt, torch.full((1, gen_length), mask_id, dtype=torch.long)], 1)
    num_blocks = gen_length // block_length
    if threshold is None:
        steps_per_block = steps // num_blocks
        timesteps = torch.linspace(1, eps, steps_per_block + 1)
    nfe = 0
    for b in range(num_blocks):
        s, e = P + b * block_length, P + (b + 1) * block_length
        logits, past = ref_forward(w, cfg, x)  # the refresh: a full forward that fills the cache
        nfe += 1
        x[:, s] = shift(logits)[:, s].argmax(-1)  # ... and decodes the block's first column
        if cache == "prefix":
            past = [(k[:, :, :s], v[:, :, :s]) for k, v in past]
        i = 1
        while True:
            if cache == "dual":
                raw, past = ref_forward(w, cfg, x[:, s:e], past=past, query_start=s, replace=(s, e))
                start = s
            elif cache == "prefix":
                raw, _ = ref_forward(w, cfg, x[:, s:], past=past, query_start=s)
                start = s
            else:
                raw, _ = ref_forward(w, cfg, x)
                start = 0
            nfe += 1
            logits = shift(raw)[0, s - start: e - start]  # the shift inside the window
            block = x[0, s:e]
            mask_index = block == mask_id
            if threshold is not None:
                confidence, x0 = _confidence(logits[mask_index], "maskgit_plus")
                full = torch.full((block_length,), float("-inf"), dtype=logits.dtype)
                full[mask_index] = confidence
                candidates = torch.full_like(block, mask_id)
                candidates[mask_index] = x0
                values, order = full.topk(int(mask_index.sum()))
                keep = [order[0]] + [order[j] for j in range(1, len(order)) if values[j] >= threshold]
                for j in keep:
                    block[j] = candidates[j]
            else:
                if i == steps_per_block:
                    break
                confidence, x0 = _confidence(logits[mask_index], "entropy")
                n_masked = mask_index.sum() / 1
                t, s_next = timesteps[i], timesteps[i + 1]
                k = int(n_masked * (1 - s_next / t)) if i < steps_per_block - 1 else int(n_masked)
                full = torch.full((block_length,), float("-inf"), dtype=logits.dtype)
                full[mask_index] = confidence
                candidates = torch.full_like(block, mask_id)
                candidates[mask_index] = x0
                if k > 0:
                    chosen = full.topk(k).indices
                    block[chosen] = candidates[chosen]
                i += 1
            if not bool((x[0, s:e] == mask_id).any()):
                break
    assert x.shape[1] == T
    return x, nfe


def ref_fastdllm_dream_threshold(w, cfg, prompt, gen_length, steps, mask_id, threshold):
    """Fast-dLLM's no-cache Dream generate with ``alg=confidence_threshold`` (``dream/model/generation_utils.py``,
    ``_sample``), batch size 1, temperature 0: no blocks; n = masked / steps; each step takes the top
    ``n + left`` masked positions by confidence (``left``: last step's rejections) and commits the first and
    every other with confidence >= threshold; at the last step a rejection sets n = 0 and adds a step (once per
    step: later rejections of that step only carry). Returns (x, nfe)."""
    x = torch.cat([prompt, torch.full((1, gen_length), mask_id, dtype=torch.long)], 1)
    n = int((x == mask_id).sum()) // steps
    left, i, nfe = 0, 0, 0
    while i < steps:
        mask_index = x == mask_id
        logits = shift(ref_forward(w, cfg, x)[0])
        nfe += 1
        confidence, x0 = _confidence(logits[mask_index], "maskgit_plus")
        full = torch.full(x.shape, float("-inf"), dtype=logits.dtype)
        full[mask_index] = confidence
        candidates = torch.full_like(x, mask_id)
        candidates[mask_index] = x0
        current, left = n + left, 0
        values, order = full[0].sort(descending=True, stable=True)  # torch.topk in the reference; ties: lower first
        transfer = [int(order[0])]
        for k in range(1, current):
            if values[k] < threshold:
                if i < steps - 1:
                    left += 1
                else:
                    n, steps, left = 0, steps + 1, left + 1
            else:
                transfer.append(int(order[k]))
        for j in transfer:
            x[0, j] = candidates[0, j]
        i += 1
    return x, nfe
