"""Plain, slow restatements of the Fréchet (Fast-dLLM++), EB-Sampler, KLASS and CreditDecoding reference
semantics, written independently of unmask's code (torch only; nothing here calls unmask).

- ``transfer_frechet``: Fast-dLLM++ (Kasa et al. 2026, arXiv 2606.02955), repository
  Ringo-Star/FastdLLM_plusplus, ``v1/llada/generate.py``: ``get_transfer_index_frechet_profile``. With the
  masked confidences sorted c_(1) >= c_(2) >= ..., L_n = sum_{j<=n} c_(j) - (n - 1) (Fréchet lower bound on
  "the top n are all right"), U_n = 1 - c_(n) (the best competitor of the n-th), score_n = L_n - U_n; the
  code counts the n with ``score_n > margin`` (strict), n = 1 always counted, at least 1, and commits that
  many of the highest confidences.
- ``DenseCredit``: CreditDecoding (Wang et al. 2025, arXiv 2510.06133) with a dense [L, V] credit of one
  row's current block: every forward, C <- beta * C everywhere, then at each masked position
  C(argmax) += p(argmax)^gamma with p = softmax(raw logits); fused = logits + alpha * log(1 + C); reset at
  each new block. Adaptive (parameter-free) variant: gamma = 1, alpha = beta = 1 - (masked in the block /
  block length) at that forward. Cross-checked against inclusionAI/dInfer,
  ``python/dinfer/decoding/parallel_strategy.py``: ``CreditThresholdParallelDecoder._apply_credit_fusion``,
  which agrees on the update and the fusion. dInfer's differences (none changes this restatement): defaults
  alpha = 0.7, gamma = 0.2, beta = 0.8 (the paper's, as credit.py cites them: 0.65, 0.2, 0.7); a float32
  B x L x V matrix and a float32 softmax (here float64); one matrix per block, keyed by the block's (start,
  end) and cleared only once the whole canvas has no mask left (a decode that ends with masks left, or a
  later decode with the same block columns, would reuse stale credit); the fused logits feed only dInfer's
  own threshold rule (``get_transfer_index_threshold``: c >= min(tau, max c - 1e-5), never the mask token,
  unlike Fast-dLLM's c >= tau plus the top-1); no adaptive variant. unmask (``decoding/credit.py``) keeps
  the credit sparse (a slot per top-1 token seen at a position, by default as many as a block takes steps:
  exact) in float32, also for a float64 model: this float64 dense rule up to float32 rounding of the bonus,
  which no decision on the test fixtures is close enough to notice.
- ``ref_policy_generate``: Fast-dLLM++'s ``generate`` / ``generate_with_prefix_cache`` /
  ``generate_with_dual_cache`` (the same file; Fast-dLLM's loops with ``_select_tokens`` dispatching to the
  threshold, factor, Fréchet or fixed-quota rule) at temperature 0, batch-size-1 semantics, with an
  optional credit hook between the forward and the rule (on the current block's logits only) and an
  optional early stop. The dual-cache loop of the reference takes at most ``steps / num_blocks`` forwards
  per block (``for i in range(1, steps_per_block)``); with ``steps = gen_length`` (the default here, and
  what the repository's eval scripts pass for the dual cache) that cap never binds, as every step commits
  at least one token.

Early stop (not in the reference code; unmask's rule stated here on its own): after a step, once some
stop token is committed with every generated position before it decoded, the row's remaining masked
generated positions are filled with ``stop_ids[0]`` and the row is done.
Per-row Python loops are on purpose: readability over speed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from reference import _candidates, _num_transfer, _transfer_factor, _transfer_threshold, ref_forward


def transfer_topk(logits, mask_index, x, quota):
    """Fast-dLLM(++) ``get_transfer_index`` with a quota: the ``quota[j]`` highest confidences of row j."""
    x0, confidence, transfer = _candidates(logits, mask_index, x)
    for j in range(confidence.shape[0]):
        _, idx = torch.topk(confidence[j], k=int(quota[j]))
        transfer[j, idx] = True
    return x0, transfer & mask_index


def frechet_count(sorted_conf: list[float], margin: float) -> int:
    """How many to commit, from one row's masked confidences sorted high to low (Fast-dLLM++'s count)."""
    admitted, total = 0, 0.0
    for n in range(1, len(sorted_conf) + 1):
        total += sorted_conf[n - 1]
        lower = total - (n - 1)  # L_n
        upper = 1.0 - sorted_conf[n - 1]  # U_n
        if n == 1 or lower - upper > margin:  # the reference sets score_1 = +inf: the top-1 always
            admitted += 1
    return max(admitted, 1)


def transfer_frechet(logits, mask_index, x, margin):
    """Fast-dLLM++ ``get_transfer_index_frechet_profile``, row by row."""
    x0, confidence, transfer = _candidates(logits, mask_index, x)
    for j in range(confidence.shape[0]):
        if not mask_index[j].any():
            continue
        sorted_conf = confidence[j][mask_index[j]].sort(descending=True).values.tolist()
        _, idx = torch.topk(confidence[j], k=frechet_count(sorted_conf, margin))
        transfer[j, idx] = True
    return x0, transfer & mask_index


def transfer_eb(logits, mask_index, x, gamma):
    """EB-Sampler (Ben-Hamu et al. 2025, Alg. 1 with the confidence proxy; SGLang ``eb_sampling.py`` uses the
    entropy proxy with the same budget): walk the masked positions from the most confident (ties: lower
    position first), add each to U and keep it while sum(H_U) - max(H_U) <= gamma, else stop; H = the
    entropy in nats of softmax(logits) in float64."""
    x0, confidence, transfer = _candidates(logits, mask_index, x)
    p = torch.softmax(logits.double(), -1)
    h = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(-1)
    for j in range(confidence.shape[0]):
        masked = mask_index[j].nonzero().flatten().tolist()
        order = sorted(masked, key=lambda i: (-float(confidence[j, i]), i))
        chosen: list[int] = []
        for i in order:
            trial = [float(h[j, c]) for c in chosen + [i]]
            if sum(trial) - max(trial) > gamma:
                break
            chosen.append(i)
        transfer[j, chosen] = True
    return x0, transfer


class DenseCredit:
    """CreditDecoding's trace credit of one row: a dense float64 [block_length, V] matrix (see the module doc)."""

    def __init__(self, block_length: int, vocab: int, alpha: float = 0.65, beta: float = 0.7, gamma: float = 0.2,
                 adaptive: bool = False) -> None:
        self.alpha, self.beta, self.gamma, self.adaptive = alpha, beta, gamma, adaptive
        self.C = torch.zeros(block_length, vocab, dtype=torch.float64)

    def reset(self) -> None:
        self.C.zero_()

    def fuse(self, logits: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Update the credit from the block's raw ``logits`` [L, V] at ``masked`` [L]; return the fused logits."""
        L = self.C.shape[0]
        alpha, beta, gamma = self.alpha, self.beta, self.gamma
        if self.adaptive:
            keep = 1.0 - int(masked.sum()) / L  # 1 - mask ratio of the block at this forward
            alpha, beta, gamma = keep, keep, 1.0
        fused = logits.double().clone()
        for i in range(L):
            self.C[i] *= beta
            if masked[i]:
                p = torch.softmax(logits[i].double(), -1)
                v = int(logits[i].argmax())
                self.C[i, v] += float(p[v]) ** gamma
            fused[i] += alpha * torch.log1p(self.C[i])
        return fused


class RefDecode(NamedTuple):
    x: torch.Tensor  # [1, P + G] the final canvas
    nfe: int  # forwards
    block_nfe: list[int]  # forwards per block (blocks after an early stop are absent)


def stop_reached(gen: torch.Tensor, mask_id: int, stop_ids: tuple[int, ...]) -> bool:
    """Whether some stop token of ``gen`` [G] has every position before it decoded."""
    for token in gen.tolist():
        if token == mask_id:
            return False
        if token in stop_ids:
            return True
    return False


def early_stop(x: torch.Tensor, P: int, mask_id: int, stop_ids: tuple[int, ...]) -> bool:
    """unmask's early stop on the canvas ``x`` [1, P + G]: once a stop token has every answer position before it
    decoded, the answer's masked positions become ``stop_ids[0]`` (True: the row is done)."""
    if not stop_ids or not stop_reached(x[0, P:], mask_id, stop_ids):
        return False
    gen = x[0, P:]
    gen[gen == mask_id] = stop_ids[0]
    return True


def ref_policy_generate(w, cfg, prompt, gen_length, block_length, mask_id, rule, value, cache="none", credit=None,
                        steps=None, stop_ids=(), reset_credit=True) -> RefDecode:
    """Fast-dLLM++ generate loops for one prompt [1, P] (no padding) with ``rule`` in threshold (tau), factor
    (f), frechet (margin), eb (gamma: EB-Sampler's rule in the same loops) or topk (``value`` = forwards in
    all, LLaDA's ``get_num_transfer_tokens`` quota per step). ``credit``: a ``DenseCredit`` (reset at each block
    unless ``reset_credit`` is False, which is only there to show that the reset matters); ``stop_ids``: early
    stop (module doc)."""
    assert prompt.shape[0] == 1, "Fast-dLLM's loops are batch-size-1 semantics"
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    num_blocks = gen_length // block_length
    if rule == "topk":
        steps = value
    steps_per_block = (gen_length if steps is None else steps) // num_blocks
    nfe, block_nfe = 0, []

    def select(logits, mask_index, cur, i, quota):
        if rule == "threshold":
            return _transfer_threshold(logits, mask_index, cur, value)
        if rule == "factor":
            return _transfer_factor(logits, mask_index, cur, value)
        if rule == "frechet":
            return transfer_frechet(logits, mask_index, cur, value)
        if rule == "eb":
            return transfer_eb(logits, mask_index, cur, value)
        return transfer_topk(logits, mask_index, cur, quota[:, min(i, steps_per_block - 1)])

    for nb in range(num_blocks):
        s, e = P + nb * block_length, P + (nb + 1) * block_length
        if credit is not None and reset_credit:
            credit.reset()
        quota = _num_transfer(x[:, s:e] == mask_id, steps_per_block)
        block_nfe.append(0)
        past, i = None, 0
        while (x[:, s:e] == mask_id).any():
            if cache == "dual" and i >= steps_per_block:  # the dual-cache loop's cap (module doc)
                break
            if cache == "none" or i == 0:  # a forward over the whole canvas
                logits, present = ref_forward(w, cfg, x)
                offset = 0
                if cache == "prefix":
                    past = [(k[:, :, :s], v[:, :, :s]) for k, v in present]
                elif cache == "dual":
                    past = present
            elif cache == "prefix":  # queries from the block to the end, keys = cached prefix ++ them
                logits, _ = ref_forward(w, cfg, x[:, s:], past=past, query_start=s)
                offset = s
            else:  # dual: the block's queries; its keys/values replace the block's columns of the cache
                logits, past = ref_forward(w, cfg, x[:, s:e], past=past, query_start=s, replace=(s, e))
                offset = s
            nfe += 1
            block_nfe[-1] += 1
            cur = x[:, offset: offset + logits.shape[1]]  # a view: commits write through to x
            mask_index = cur == mask_id
            mask_index[:, e - offset:] = False
            if credit is not None:  # CreditDecoding: fuse the credit into the block's logits
                logits = logits.double().clone()
                a, b = s - offset, e - offset
                logits[0, a:b] = credit.fuse(logits[0, a:b], mask_index[0, a:b])
            x0, transfer = select(logits, mask_index, cur, i, quota)
            cur[transfer] = x0[transfer]
            i += 1
            if early_stop(x, P, mask_id, stop_ids):
                return RefDecode(x, nfe, block_nfe)
    return RefDecode(x, nfe, block_nfe)


def ref_klass_generate(w, cfg, prompt, gen_length, block_length, mask_id, tau, eps, history, steps=None,
                       cache="none", stop_ids=(), keep_next=None) -> RefDecode:
    """KLASS (Kim et al. 2025; shkim0116/KLASS ``src/model/llada_klass.py``, ``stable_confident_decode``) for one
    prompt [1, P] at temperature 0, restated from the public code:

    - every forward: p = softmax(logits in float64) at every column the forward computed; x0 = argmax p,
      c = p(x0); KL = sum_v p (log(p + 1e-12) - log(p_prev + 1e-12)) against the previous forward's p at the
      same column; a rolling window of the last ``history`` KL values per column;
    - ready = masked in the block & all(window < eps) & c > tau, only from the block's step ``history - 1`` on;
      ready non-empty: commit all of it; else the top ``quota[step]`` by confidence (LLaDA's
      ``get_num_transfer_tokens`` with ``steps / num_blocks`` per block);
    - the block ends when it has no mask (the reference stops after ``steps / num_blocks`` forwards; with the
      default ``steps = gen_length`` both are the same, as every step commits at least one token).

    The reference computes every column every forward (no cache) and starts p_prev at zeros (a first KL of
    about 27: never stable). With a cache (unmask's extension, no reference) a forward computes only its
    window's columns (dual: the block; prefix: the block and everything after it) and unmask keeps only the
    block's (and, without a cache, the next block's): a column the previous forward did not give is not
    stable. ``keep_next=False`` drops the next block's columns without a cache too (to show that they matter).
    Early stop as ``ref_policy_generate``."""
    assert prompt.shape[0] == 1
    P = prompt.shape[1]
    x = torch.full((1, P + gen_length), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    num_blocks = gen_length // block_length
    spb = (gen_length if steps is None else steps) // num_blocks
    prev: dict[int, torch.Tensor] = {}  # column -> p of the previous forward (only the columns it kept)
    window: dict[int, list[float]] = {}
    nfe, block_nfe = 0, []
    for nb in range(num_blocks):
        s, e = P + nb * block_length, P + (nb + 1) * block_length
        quota = _num_transfer(x[:, s:e] == mask_id, spb)[0]
        block_nfe.append(0)
        past, i = None, 0
        while (x[:, s:e] == mask_id).any():
            if cache == "none" or i == 0:
                logits, present = ref_forward(w, cfg, x)
                offset = 0
                if cache == "prefix":
                    past = [(k[:, :, :s], v[:, :, :s]) for k, v in present]
                elif cache == "dual":
                    past = present
            elif cache == "prefix":
                logits, _ = ref_forward(w, cfg, x[:, s:], past=past, query_start=s)
                offset = s
            else:
                logits, past = ref_forward(w, cfg, x[:, s:e], past=past, query_start=s, replace=(s, e))
                offset = s
            nfe += 1
            block_nfe[-1] += 1
            p = torch.softmax(logits[0].double(), -1)
            nxt = (cache == "none") if keep_next is None else keep_next
            kept = range(s, min(e + block_length, P + gen_length)) if nxt else range(s, e)
            new_prev = {}
            for col in kept:
                q = p[col - offset]
                kl = (q * (torch.log(q + 1e-12) - torch.log(prev[col] + 1e-12))).sum() if col in prev else torch.inf
                window[col] = (window.get(col, []) + [float(kl)])[-history:]
                new_prev[col] = q
            prev = new_prev
            block = p[s - offset:e - offset]
            x0 = block.argmax(-1)
            conf = block.gather(-1, x0[:, None]).squeeze(-1)
            masked = x[0, s:e] == mask_id
            ready = torch.zeros_like(masked)
            if i >= history - 1:
                for j in range(block_length):
                    hist = window[s + j]
                    ready[j] = bool(masked[j]) and len(hist) == history and all(v < eps for v in hist) \
                        and float(conf[j]) > tau
            if ready.any():
                transfer = ready
            else:
                n = max(int(quota[min(i, spb - 1)]) if i < spb else 0, 1)
                order = torch.where(masked, conf, -torch.inf).sort(descending=True, stable=True).indices
                transfer = torch.zeros_like(masked)
                transfer[order[:min(n, int(masked.sum()))]] = True
            x[0, s:e] = torch.where(transfer, x0, x[0, s:e])
            i += 1
            if early_stop(x, P, mask_id, stop_ids):
                return RefDecode(x, nfe, block_nfe)
        for col in range(s, e):  # a finished block's columns leave the history (never read again)
            window.pop(col, None)
    return RefDecode(x, nfe, block_nfe)


def ref_wino_generate(w, cfg, prompt, gen_length, block_length, mask_id, tau1, tau2, stop_ids=()) -> RefDecode:
    """WINO (Hong et al. 2025, arXiv 2507.18578; Feng-Hong/WINO-DLLM ``LLaDA/decoding.py``, ``decoding_wino``)
    for one prompt [1, P] at temperature 0, restated from the public code:

    - the forward's input is the canvas followed by a *shadow* block of ``block_length`` masks at the current
      block's positions; canvas queries attend to every canvas column and no shadow column (their logits are a
      plain LLaDA forward's), shadow query i attends to every column except the block's column i
      (leave-one-out) and to the shadow block;
    - draft (wide in): masked block positions with c > tau1 (c = p(argmax), float64 softmax), at most
      clamp(int(0.7 * masked), 5, 20) of them (the most confident), and the argmax one if none passes;
    - verify (narrow out), only if more than one token was drafted this step: a token drafted in an earlier
      step whose shadow probability p_shadow_i(token) < tau2 goes back to mask; if as many as the previous
      step's draft count would go, only the (previous count - 1) least confident do;
    - the block ends when it has no mask left (its last drafts are never verified); earlier blocks are fixed.

    Early stop (unmask's, not the reference's) as ``ref_policy_generate``."""
    assert prompt.shape[0] == 1
    P = prompt.shape[1]
    T = P + gen_length
    x = torch.full((1, T), mask_id, dtype=torch.long)
    x[:, :P] = prompt
    nfe, block_nfe = 0, []
    for nb in range(gen_length // block_length):
        s, e = P + nb * block_length, P + (nb + 1) * block_length
        n = T + block_length
        positions = torch.cat([torch.arange(T), torch.arange(s, e)])
        allowed = torch.zeros(n, n, dtype=torch.bool)
        allowed[:T, :T] = True
        allowed[T:, :] = True
        for i in range(block_length):
            allowed[T + i, s + i] = False
        last_accept = 30
        block_nfe.append(0)
        while (x[0, s:e] == mask_id).any():
            shadow = torch.full((1, block_length), mask_id, dtype=torch.long)
            logits, _ = ref_forward(w, cfg, torch.cat([x, shadow], 1), positions=positions, attn_mask=allowed)
            nfe += 1
            block_nfe[-1] += 1
            p = torch.softmax(logits[0].double(), -1)
            block, verify = p[s:e], p[T:]
            x0 = block.argmax(-1)
            conf = block.gather(-1, x0[:, None]).squeeze(-1)
            masked = x[0, s:e] == mask_id
            drafted_before = ~masked
            current = x[0, s:e]
            verify_conf = verify.gather(-1, current.clamp(max=p.shape[-1] - 1)[:, None]).squeeze(-1)
            # wide in
            max_accept = min(max(int(0.7 * int(masked.sum())), 5), 20)
            order = sorted((j for j in range(block_length) if masked[j]), key=lambda j: (-float(conf[j]), j))
            chosen = [j for j in order if float(conf[j]) > tau1]
            if len(chosen) > max_accept:
                chosen = order[:max_accept]
            elif not chosen:
                chosen = order[:1]
            # narrow out
            remask: list[int] = []
            if len(chosen) > 1:
                remask = [j for j in range(block_length) if drafted_before[j] and float(verify_conf[j]) < tau2]
                if len(remask) >= last_accept:
                    remask = sorted(remask, key=lambda j: (float(verify_conf[j]), j))[:last_accept - 1]
            for j in chosen:
                x[0, s + j] = x0[j]
            for j in remask:
                x[0, s + j] = mask_id
            last_accept = len(chosen)
            if early_stop(x, P, mask_id, stop_ids):
                return RefDecode(x, nfe, block_nfe)
    return RefDecode(x, nfe, block_nfe)
