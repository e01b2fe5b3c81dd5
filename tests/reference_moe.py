"""A plain, slow restatement of LLaDA-MoE's forward (``modeling_lladamoe.py``), written independently of
unmask's code, with the Fast-dLLM cache semantics of ``reference.ref_forward`` (same signature, so the
reference generate loops of ``reference.py`` run on it when it stands in for ``ref_forward``).

Arithmetic is float64 except where the reference itself casts: the router's softmax is float32 and the
routing weights are cast back to the hidden dtype. The MoE is the reference's, one token at a time:
    p = softmax(gate(m)) (float32) [+ expert_bias]; top-k by torch.topk; no renormalisation;
    out_t = sum over the token's experts, in increasing expert id (the reference's index_add_ order), of
            w * down(silu(gate_proj(m_t)) * up_proj(m_t))   [+ shared_expert(m_t)]
"""

from __future__ import annotations

import math

import torch
from reference import rms_norm, rope, with_past


def swiglu(w, prefix, x):
    gate = x @ w[prefix + "gate_proj.weight"].T
    return (gate * torch.sigmoid(gate) * (x @ w[prefix + "up_proj.weight"].T)) @ w[prefix + "down_proj.weight"].T


def ref_route(logits, top_k, expert_bias=None):
    """(weights, experts) of one token's router logits [E]."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    if expert_bias is not None:
        probs = probs + expert_bias
    return torch.topk(probs, top_k)


def ref_moe(w, cfg, prefix, m):
    """The sparse block on m [B, n, d], token by token."""
    out = torch.zeros_like(m)
    bias = w.get(prefix + "expert_bias")
    for b in range(m.shape[0]):
        for t in range(m.shape[1]):
            x = m[b, t]
            weights, experts = ref_route(x @ w[prefix + "gate.weight"].T, cfg["num_experts_per_tok"], bias)
            for j in experts.argsort().tolist():
                y = swiglu(w, f"{prefix}experts.{int(experts[j])}.", x[None])[0]
                out[b, t] = out[b, t] + y * weights[j].to(m.dtype)
    return out


def ref_moe_forward(w, cfg, x, key_mask=None, past=None, query_start=0, replace=None):
    """Logits for tokens ``x`` [B, n]; ``past``/``query_start``/``replace`` as ``reference.ref_forward``
    (cached keys are after the q/k norm and before RoPE, which is re-applied at every call)."""
    B, n = x.shape
    H, kvH = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hd = cfg["hidden_size"] // H
    eps = cfg["rms_norm_eps"]
    h = w["model.embed_tokens.weight"][x]
    present = []
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        a = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q = (a @ w[p + "self_attn.q_proj.weight"].T).view(B, n, H, hd)
        k = (a @ w[p + "self_attn.k_proj.weight"].T).view(B, n, kvH, hd)
        v = (a @ w[p + "self_attn.v_proj.weight"].T).view(B, n, kvH, hd).transpose(1, 2)
        if cfg.get("qk_layernorm"):
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        k, v = with_past(None if past is None else past[layer], k, v, replace)
        present.append((k, v))
        qr = rope(q, torch.arange(query_start, query_start + n), cfg["rope_theta"])
        kr = rope(k, torch.arange(k.shape[2]), cfg["rope_theta"]).repeat_interleave(H // kvH, dim=1)
        scores = qr @ kr.transpose(-1, -2) / math.sqrt(hd)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
        att = torch.softmax(scores, -1) @ v.repeat_interleave(H // kvH, dim=1)
        h = h + att.transpose(1, 2).reshape(B, n, -1) @ w[p + "self_attn.o_proj.weight"].T
        m = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        freq = cfg.get("moe_layer_freq")
        if freq is not None and freq[layer] == 0:
            h = h + swiglu(w, p + "mlp.", m)
            continue
        mlp = ref_moe(w, cfg, p + "mlp.", m)
        if cfg.get("shared_expert_intermediate_size") is not None:
            mlp = mlp + swiglu(w, p + "shared_expert.", m)
        h = h + mlp
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return h @ head.T, present
