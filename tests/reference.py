"""Plain, slow restatements of the reference semantics, written independently of unmask's code.

- ``ref_forward``: LLaDA's forward (modeling_llada.py) with Fast-dLLM's KV cache, whose cache holds
  keys *before* RoPE and re-applies RoPE to every key at each call; positions are plain 0..T-1.
- ``ref_llada_generate``: LLaDA's ``generate.py`` (low-confidence remasking, fixed schedule).
- ``ref_fastdllm_generate``: Fast-dLLM's ``generate`` / ``generate_with_prefix_cache`` /
  ``generate_with_dual_cache`` with the threshold or factor rule.
Per-row Python loops are on purpose: readability over speed.
"""

from __future__ import annotations

import itertools
import math

import torch

MASK = None  # set per call


def rms_norm(x, w, eps):
    x32 = x.double()
    return w * (x32 / torch.sqrt((x32 * x32).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope(t, positions, theta):
    """t [B, H, n, d] rotated at ``positions`` [n] or [B, n] (rotate-half convention)."""
    d = t.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = positions.double()[..., None] * inv
    ang = torch.cat([ang, ang], -1)
    if ang.dim() == 3:
        ang = ang[:, None]
    rot = torch.cat([-t[..., d // 2:], t[..., : d // 2]], -1)
    return t * ang.cos() + rot * ang.sin()


def with_past(past, k, v, replace=None):
    """A layer's keys/values [B, kv_heads, *, hd] with Fast-dLLM's cache ``past`` = (k, v) of the cached
    columns: the new ones appended (prefix cache), or with ``replace`` = (a, b) written over columns
    [a, b) of a copy (dual cache), or ``replace`` = a tensor of columns written over those columns;
    ``past`` None: the new ones alone."""
    if past is None:
        return k, v
    pk, pv = past
    if replace is None:
        return torch.cat([pk, k], 2), torch.cat([pv, v], 2)
    pk, pv = pk.clone(), pv.clone()
    where = replace if isinstance(replace, torch.Tensor) else slice(replace[0], replace[1])
    pk[:, :, where], pv[:, :, where] = k, v
    return pk, pv


def ref_forward(w, cfg, x, key_mask=None, past=None, query_start=0, replace=None, columns=None, positions=None,
                attn_mask=None):
    """Logits for tokens ``x`` [B, n].

    past: None, or per layer (k_pre_rope, v) [B, H, S, hd] of cached columns.
    Without ``replace``, queries are at columns [query_start, query_start + n) and keys = past ++ new
    (Fast-dLLM prefix cache, query_start = S). With ``replace`` = (a, b), the new k/v overwrite
    columns [a, b) of ``past`` (dual cache). With ``columns`` (a tensor [n]), token i sits at canvas column
    ``columns[i]`` and its k/v overwrite that column of ``past``. Without ``past``: ``positions`` [n] are the
    tokens' rotary positions (default 0..n-1) and ``attn_mask`` [n, n] (True: query i may attend key j) a mask
    over queries and keys (WINO's shadow block). Returns (logits, new per-layer (k_pre_rope, v)).
    """
    p = "model.transformer."
    B, n = x.shape
    H, kvH = cfg["n_heads"], cfg["n_kv_heads"]
    hd = cfg["d_model"] // H
    h = w[p + "wte.weight"][x]
    present = []
    for layer in range(cfg["n_layers"]):
        b = f"{p}blocks.{layer}."
        a = rms_norm(h, w[b + "attn_norm.weight"], cfg["rms_norm_eps"])
        q = (a @ w[b + "q_proj.weight"].T).view(B, n, H, hd).transpose(1, 2)
        k = (a @ w[b + "k_proj.weight"].T).view(B, n, kvH, hd).transpose(1, 2)
        v = (a @ w[b + "v_proj.weight"].T).view(B, n, kvH, hd).transpose(1, 2)
        k, v = with_past(None if past is None else past[layer], k, v, replace if columns is None else columns)
        present.append((k, v))
        total = k.shape[2]
        qpos = torch.arange(query_start, query_start + n) if columns is None else columns
        kpos = torch.arange(total)
        if positions is not None:
            qpos = kpos = positions
        qr, kr = rope(q, qpos, cfg["rope_theta"]), rope(k, kpos, cfg["rope_theta"])
        kr = kr.repeat_interleave(H // kvH, dim=1)
        vv = v.repeat_interleave(H // kvH, dim=1)
        scores = qr @ kr.transpose(-1, -2) / math.sqrt(hd)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask[None, None], float("-inf"))
        att = torch.softmax(scores, -1) @ vv
        h = h + att.transpose(1, 2).reshape(B, n, -1) @ w[b + "attn_out.weight"].T
        m = rms_norm(h, w[b + "ff_norm.weight"], cfg["rms_norm_eps"])
        gate = m @ w[b + "ff_proj.weight"].T
        h = h + (gate * torch.sigmoid(gate) * (m @ w[b + "up_proj.weight"].T)) @ w[b + "ff_out.weight"].T
    h = rms_norm(h, w[p + "ln_f.weight"], cfg["rms_norm_eps"])
    head = w[p + "wte.weight"] if cfg.get("weight_tying") else w[p + "ff_out.weight"]
    return h @ head.T, present


def _num_transfer(mask_index, steps):
    n = mask_index.sum(1, keepdim=True)
    base, rem = n // steps, n % steps
    out = torch.zeros(n.shape[0], steps, dtype=torch.int64) + base
    for i in range(n.shape[0]):
        out[i, : rem[i]] += 1
    return out


def ref_llada_generate(w, cfg, prompt, steps, gen_length, block_length, mask_id, attention_mask=None, cfg_scale=0.0,
                       logits_eos_inf=False, confidence_eos_eot_inf=False, eos_id=None, eot_id=None):
    """LLaDA generate.py at temperature 0, remasking='low_confidence'."""
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones(prompt.shape[0], gen_length, dtype=torch.long)], 1)
    prompt_index = x != mask_id
    num_blocks = gen_length // block_length
    steps = steps // num_blocks
    for nb in range(num_blocks):
        s = prompt.shape[1] + nb * block_length
        block_mask_index = x[:, s : s + block_length] == mask_id
        ntt = _num_transfer(block_mask_index, steps)
        for i in range(steps):
            mask_index = x == mask_id
            if cfg_scale > 0:
                un_x = x.clone()
                un_x[prompt_index] = mask_id
                am = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
                both, _ = ref_forward(w, cfg, torch.cat([x, un_x]), key_mask=am)
                logits, un_logits = both.chunk(2)
                logits = un_logits + (cfg_scale + 1) * (logits - un_logits)
            else:
                logits, _ = ref_forward(w, cfg, x, key_mask=attention_mask)
            if logits_eos_inf:
                logits[:, :, eos_id] = -torch.inf
            x0 = logits.argmax(-1)
            if confidence_eos_eot_inf:
                logits[:, :, eot_id] = -torch.inf
            p = torch.softmax(logits, -1)
            x0_p = p.gather(-1, x0[..., None]).squeeze(-1)
            x0_p[:, s + block_length :] = -float("inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(-float("inf"), dtype=x0_p.dtype))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(confidence.shape[0]):
                _, idx = torch.topk(confidence[j], k=int(ntt[j, i]))
                transfer[j, idx] = True
            x[transfer] = x0[transfer]
    return x


def _candidates(logits, mask_index, x):
    """The start of Fast-dLLM's transfer rules: (x0, confidence, transfer): the argmax at masked positions
    (the tokens elsewhere), its probability there (-inf elsewhere) and no position transferred yet."""
    x0 = logits.argmax(-1)
    p = torch.softmax(logits.double(), -1)
    x0_p = p.gather(-1, x0[..., None]).squeeze(-1)
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, torch.tensor(-float("inf"), dtype=x0_p.dtype))
    return x0, confidence, torch.zeros_like(x0, dtype=torch.bool)


def _transfer_threshold(logits, mask_index, x, threshold):
    x0, confidence, transfer = _candidates(logits, mask_index, x)
    k_all = mask_index.sum(1)
    for j in range(confidence.shape[0]):
        _, idx = torch.topk(confidence[j], k=int(k_all[j]))
        transfer[j, idx] = True
        for k in range(1, int(k_all[j])):
            if confidence[j, idx[k]] < threshold:
                transfer[j, idx[k]] = False
    return x0, transfer


def _transfer_factor(logits, mask_index, x, factor):
    x0, confidence, transfer = _candidates(logits, mask_index, x)
    counts = mask_index.sum(1)
    for j in range(confidence.shape[0]):
        n_masked = int(counts[j])
        if n_masked == 0:
            continue
        threshs = [1 - factor / (n + 1) for n in range(1, n_masked + 1)]
        threshs[0] = -1
        sorted_conf = torch.sort(confidence[j][mask_index[j]], descending=True)[0]
        for top_i in range(len(threshs)):
            if sorted_conf[top_i] < threshs[top_i]:
                break
        if top_i == 0 or top_i == len(threshs) - 1:
            top_i += 1
        _, idx = torch.topk(confidence[j], k=top_i)
        transfer[j, idx] = True
    return x0, transfer


def ref_fastdllm_generate(w, cfg, prompt, gen_length, block_length, mask_id, threshold=None, factor=None,
                          cache="none"):
    """Fast-dLLM generate / generate_with_prefix_cache / generate_with_dual_cache (batch size 1 semantics
    per row, temperature 0). Returns (x, nfe)."""

    def rule(logits, mask_index, cur):
        if factor is not None:
            return _transfer_factor(logits, mask_index, cur, factor)
        return _transfer_threshold(logits, mask_index, cur, threshold)

    P = prompt.shape[1]
    x = torch.full((prompt.shape[0], P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    nfe = 0
    for nb in range(gen_length // block_length):
        s, e = P + nb * block_length, P + (nb + 1) * block_length
        if cache == "none":
            while True:
                nfe += 1
                mask_index = x == mask_id
                logits, _ = ref_forward(w, cfg, x)
                mask_index[:, e:] = False
                x0, transfer = rule(logits, mask_index, x)
                x[transfer] = x0[transfer]
                if (x[:, s:e] == mask_id).sum() == 0:
                    break
            continue
        logits, past = ref_forward(w, cfg, x)
        mask_index = x == mask_id
        mask_index[:, e:] = False
        x0, transfer = rule(logits, mask_index, x)
        x[transfer] = x0[transfer]
        nfe += 1
        if cache == "prefix":
            past = [(k[:, :, :s], v[:, :, :s]) for k, v in past]
        while (x[:, s:e] == mask_id).sum() > 0:
            nfe += 1
            if cache == "prefix":
                mask_index = x[:, s:] == mask_id
                mask_index[:, block_length:] = False
                logits, _ = ref_forward(w, cfg, x[:, s:], past=past, query_start=s)
                x0, transfer = rule(logits, mask_index, x[:, s:])
                x[:, s:][transfer] = x0[transfer]
            else:
                mask_index = x[:, s:e] == mask_id
                logits, past = ref_forward(w, cfg, x[:, s:e], past=past, query_start=s, replace=(s, e))
                x0, transfer = rule(logits, mask_index, x[:, s:e])
                x[:, s:e][transfer] = x0[transfer]
    return x, nfe


def ref_prompt_stale_generate(w, cfg, prompt, gen_length, block_length, mask_id, threshold, every):
    """Fast-dLLM's dual-cache generate with the threshold rule, except that only blocks 0, every, 2 every, ...
    start with the full forward; the others start with a forward of the answer columns alone against the cached
    prompt keys/values (prefix-cache style: keys = cached prompt ++ fresh answer), which replaces the answer's
    cache. Batch-1 semantics per row, temperature 0. Returns (x, nfe)."""
    P = prompt.shape[1]
    x = torch.full((prompt.shape[0], P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    nfe, past = 0, None
    for nb in range(gen_length // block_length):
        s, e = P + nb * block_length, P + (nb + 1) * block_length
        if nb == 0 or (every != math.inf and nb % every == 0):
            logits, past = ref_forward(w, cfg, x)
        else:
            answer_logits, past = ref_forward(w, cfg, x[:, P:], past=[(k[:, :, :P], v[:, :, :P]) for k, v in past],
                                              query_start=P)
            logits = torch.cat([torch.zeros_like(answer_logits[:, :P]).expand(-1, P, -1), answer_logits], 1)
        mask_index = x == mask_id
        mask_index[:, e:] = False
        mask_index[:, :s] = False
        x0, transfer = _transfer_threshold(logits, mask_index, x, threshold)
        x[transfer] = x0[transfer]
        nfe += 1
        while (x[:, s:e] == mask_id).sum() > 0:
            nfe += 1
            mask_index = x[:, s:e] == mask_id
            logits, past = ref_forward(w, cfg, x[:, s:e], past=past, query_start=s, replace=(s, e))
            x0, transfer = _transfer_threshold(logits, mask_index, x[:, s:e], threshold)
            x[:, s:e][transfer] = x0[transfer]
    return x, nfe


def ref_partial_generate(w, cfg, prompt, gen_length, block_length, mask_id, threshold, budget, every=math.inf,
                         reuse=False):
    """Dual-cache generate with the threshold rule where only block 0 (and blocks every, 2 every, ...) starts
    with the full forward; every other forward recomputes the block's columns and ``budget`` more: the columns
    whose token differs from the one their cached keys/values were computed from, then the most steps since
    their last recompute, then the lower column. ``reuse``: only the block's masked columns keep their places;
    each decoded one's place, left to right, then the ``budget`` more, take the next columns of that order among
    all the others (the block's decoded columns included). One row (batch 1), temperature 0. Returns (x, nfe)."""
    P = prompt.shape[1]
    L = P + gen_length
    x = torch.full((1, L), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    nfe = 0
    for nb in range(gen_length // block_length):
        s, e = P + nb * block_length, P + (nb + 1) * block_length
        if nb == 0 or (every != math.inf and nb % every == 0):
            logits, past = ref_forward(w, cfg, x)
            kv_token, age = x[0].tolist(), [0] * L
            first = True
        while (x[:, s:e] == mask_id).any():
            if first:
                block_logits, first = logits[:, s:e], False
            else:
                held = [c for c in range(s, e) if not reuse or int(x[0, c]) == mask_id]
                others = [c for c in range(L) if c not in held]
                others.sort(key=lambda c: (int(x[0, c]) != kv_token[c], age[c], -c), reverse=True)
                order = iter(others)
                places = [c if c in held else next(order) for c in range(s, e)]
                columns = torch.tensor(places + list(itertools.islice(order, budget)))  # at most the whole canvas
                out, past = ref_forward(w, cfg, x[:, columns], past=past, columns=columns)
                block_logits = out[:, :e - s]
                age = [a + 1 for a in age]
                for c in columns.tolist():
                    kv_token[c], age[c] = int(x[0, c]), 0
            nfe += 1
            mask_index = x[:, s:e] == mask_id
            x0, transfer = _transfer_threshold(block_logits, mask_index, x[:, s:e], threshold)
            x[:, s:e][transfer] = x0[transfer]
    return x, nfe
