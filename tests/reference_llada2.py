"""A plain, slow restatement of LLaDA2.x's forward (HF ``modeling_llada2_moe.py``: ``LLaDA2MoeModel``), written
independently of unmask's code from the public model code's semantics (torch only):

- embedding lookup (``word_embeddings``), pre-norm layers, RMSNorm as x / sqrt(mean x^2 + eps) * w;
- attention: ``query_key_value`` rows = all query heads, then key heads, then value heads; per-head RMSNorm on
  q and k; RoPE (rotate-half, base ``rope_theta``) on the first ``head_dim * partial_rotary_factor`` dimensions,
  at absolute positions; GQA (query head h uses key/value head h // (heads / kv_heads)); scale 1/sqrt(head_dim);
  a block-causal mask (q sees k iff q // B >= k // B) or none; ``dense`` out;
- MLP: dense SwiGLU for layers < ``first_k_dense_replace``; else the router (sigmoid of the float32 logits; the
  expert bias added for the choice only; groups scored by the sum of their top-2; the top ``topk_group``
  groups; top-k inside them; weights = the unbiased scores, renormalised, times ``routed_scaling_factor``),
  the chosen experts' SwiGLU weighted and summed in float32, plus ``shared_experts``; the router and the sum in
  float32 (float64 for a float64 model: the reference's float32 would hide nothing but rounding);
- final norm, ``lm_head``.
Per-token Python loops over the experts on purpose: readability over speed.
"""

from __future__ import annotations

import math

import torch


def rms(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def rope_partial(t, positions, theta, rotary):
    """t [H, L, hd]: the first ``rotary`` dims rotated (rotate-half inside them) at ``positions`` [L]."""
    inv = 1.0 / theta ** (torch.arange(0, rotary, 2, dtype=torch.float64) / rotary)
    ang = positions.double()[:, None] * inv
    ang = torch.cat([ang, ang], -1)
    r, rest = t[..., :rotary], t[..., rotary:]
    half = rotary // 2
    rotated = torch.cat([-r[..., half:], r[..., :half]], -1)
    return torch.cat([r * ang.cos() + rotated * ang.sin(), rest], -1)


def swiglu(w, prefix, x):
    gate = x @ w[prefix + "gate_proj.weight"].T
    return (torch.nn.functional.silu(gate) * (x @ w[prefix + "up_proj.weight"].T)) @ w[prefix + "down_proj.weight"].T


def moe(w, cfg, p, x):
    """The sparse MLP for tokens x [L, d]."""
    E, G, k = cfg["num_experts"], cfg["n_group"], cfg["num_experts_per_tok"]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    scores = torch.sigmoid(x.to(dtype) @ w[p + "mlp.gate.weight"].to(dtype).T)
    bias = w.get(p + "mlp.gate.expert_bias")
    choice = scores + (0 if bias is None else bias.to(scores.dtype))
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        groups = choice[t].view(G, E // G)
        group_score = groups.topk(2).values.sum(-1)
        kept = group_score.topk(cfg["topk_group"], sorted=False).indices.tolist()
        masked = torch.full_like(choice[t], float("-inf"))
        for g in kept:
            masked[g * (E // G):(g + 1) * (E // G)] = choice[t, g * (E // G):(g + 1) * (E // G)]
        experts = masked.topk(k, sorted=False).indices.tolist()
        weights = scores[t, experts]
        weights = weights / (weights.sum() + 1e-20) * cfg["routed_scaling_factor"]
        acc = torch.zeros(x.shape[1], dtype=dtype)
        for e, wt in zip(experts, weights.tolist(), strict=True):
            acc = acc + swiglu(w, p + f"mlp.experts.{e}.", x[t]).to(acc.dtype) * wt
        out[t] = acc.to(x.dtype)
    if cfg.get("num_shared_experts"):
        out = out + swiglu(w, p + "mlp.shared_experts.", x)
    return out


def ref_llada2_forward(w, cfg, x, block_length=None):
    """Logits [L, V] of one row of tokens ``x`` [L] (no padding)."""
    L = x.shape[0]
    H, KV, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    rotary = int(hd * cfg["partial_rotary_factor"])
    eps = cfg["rms_norm_eps"]
    positions = torch.arange(L)
    allowed = None
    if block_length is not None:
        block = positions // block_length
        allowed = block[:, None] >= block[None, :]
    h = w["model.word_embeddings.weight"][x]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms(h, w[p + "input_layernorm.weight"], eps)
        qkv = a @ w[p + "attention.query_key_value.weight"].T
        q = qkv[:, :H * hd].view(L, H, hd).transpose(0, 1)
        k = qkv[:, H * hd:(H + KV) * hd].view(L, KV, hd).transpose(0, 1)
        v = qkv[:, (H + KV) * hd:].view(L, KV, hd).transpose(0, 1)
        if cfg.get("use_qk_norm", True):
            q = rms(q, w[p + "attention.query_layernorm.weight"], eps)
            k = rms(k, w[p + "attention.key_layernorm.weight"], eps)
        q, k = rope_partial(q, positions, cfg["rope_theta"], rotary), rope_partial(k, positions, cfg["rope_theta"],
                                                                                  rotary)
        k, v = k.repeat_interleave(H // KV, 0), v.repeat_interleave(H // KV, 0)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        att = (torch.softmax(scores, -1) @ v).transpose(0, 1).reshape(L, H * hd)
        h = h + att @ w[p + "attention.dense.weight"].T
        m = rms(h, w[p + "post_attention_layernorm.weight"], eps)
        h = h + (swiglu(w, p + "mlp.", m) if i < cfg["first_k_dense_replace"] else moe(w, cfg, p, m))
    h = rms(h, w["model.norm.weight"], eps)
    head = w["model.word_embeddings.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return h @ head.T


def ref_llada2_generate(w, cfg, prompt, gen_length, block_length, mask_id, threshold, steps=None,
                        eos_id=None, stop_after_eos_block=False):
    """LLaDA2.0's ``generate`` (HF ``modeling_llada2_moe.py``) for one prompt [P] at temperature 0: a canvas of
    ceil((P + G) / B) blocks over absolute positions, the prompt then masks; from block P // B on, each step runs
    the window x[:(b + 1) B] block-causally and scores the block's masked positions (p = softmax(logits)[argmax]);
    the step's quota n_i = B // s + (i < B % s); commit every p > threshold if at least n_i pass, else the n_i
    most confident (ties: lower position); at most s steps per block. ``stop_after_eos_block``: the reference
    stops after a block once the answer holds an end-of-text (an early stop that keeps the block). Returns
    (answer tokens [G], forwards)."""
    P = prompt.shape[0]
    B = block_length
    steps = B if steps is None else steps
    blocks = -(-(P + gen_length) // B)
    x = torch.full((blocks * B,), mask_id, dtype=torch.long)
    x[:P] = prompt
    quota = [B // steps + (i < B % steps) for i in range(steps)]
    nfe = 0
    for b in range(P // B, blocks):
        s, e = b * B, (b + 1) * B
        for i in range(steps):
            masked = x[s:e] == mask_id
            if not masked.any():
                break
            logits = ref_llada2_forward(w, cfg, x[:e], block_length=B)[s:e]
            nfe += 1
            p = torch.softmax(logits.double(), -1)
            conf, x0 = p.max(-1)
            conf = torch.where(masked, conf, torch.tensor(float("-inf"), dtype=conf.dtype))
            passing = masked & (conf > threshold)
            if int(passing.sum()) >= quota[i]:
                transfer = passing
            else:
                order = conf.sort(descending=True, stable=True).indices[:min(quota[i], int(masked.sum()))]
                transfer = torch.zeros_like(masked)
                transfer[order] = True
            x[s:e] = torch.where(transfer, x0, x[s:e])
        if stop_after_eos_block and eos_id is not None and bool((x[P:e] == eos_id).any()):
            break
    return x[P:P + gen_length], nfe


def ref_llada21_generate(w, cfg, prompt, gen_length, block_length, mask_id, threshold, editing_threshold,
                         max_post_steps):
    """LLaDA2.1's ``generate`` (token editing) for one prompt [P] at temperature 0, the canvas and blocks as
    ``ref_llada2_generate``. Per block, a loop: M = the block's masked positions; if none, one more post step,
    and past ``max_post_steps`` the block ends; forward (the window x[:(b + 1) B], block-causal); x0 = argmax,
    p = its probability everywhere; mask to token (if M): the positions of M with p > threshold, or the most
    confident one if none; token to token: positions not in M and not the prompt's with x0 != token and
    p > editing_threshold; x0 written at both; a step with nothing masked that edits nothing ends the block.
    Returns (answer tokens [G], forwards)."""
    P = prompt.shape[0]
    B = block_length
    blocks = -(-(P + gen_length) // B)
    x = torch.full((blocks * B,), mask_id, dtype=torch.long)
    x[:P] = prompt
    nfe = 0
    for b in range(P // B, blocks):
        s, e = b * B, (b + 1) * B
        prompt_in_block = torch.arange(s, e) < P
        post_steps = 0
        while True:
            old = x[s:e].clone()
            masked = old == mask_id
            if not masked.any():
                post_steps += 1
                if post_steps > max_post_steps:
                    break
            logits = ref_llada2_forward(w, cfg, x[:e], block_length=B)[s:e]
            nfe += 1
            p_all = torch.softmax(logits.double(), -1)
            p, x0 = p_all.max(-1)
            fill = torch.zeros_like(masked)
            if masked.any():
                fill = masked & (p > threshold)
                if not fill.any():
                    conf = torch.where(masked, p, torch.tensor(float("-inf"), dtype=p.dtype))
                    fill[int(conf.argmax())] = True
            edit = ~masked & ~prompt_in_block & (x0 != old) & (p > editing_threshold)
            x[s:e] = torch.where(fill | edit, x0, old)
            if not masked.any() and not edit.any():
                break
    return x[P:P + gen_length], nfe
