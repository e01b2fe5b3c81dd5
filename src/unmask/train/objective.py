"""The masked-diffusion objective of LLaDA (Nie et al. 2025, "Large Language Diffusion Models").

Forward process (Algorithm 1 pretraining / Algorithm 2 SFT of the paper; ``forward_process`` of LLaDA's
published training guidelines): per row draw ``t ~ U(0, 1)`` and set ``p = (1 - eps) t + eps`` (so
``p ~ U(eps, 1)``, eps = 1e-3); every answer token is replaced by the mask token independently with
probability ``p``. For SFT the prompt is never masked; for pretraining rows ``prompt_len = 0``.

Loss (the SFT guideline's code)::

    loss = sum_{rows b} sum_{masked i in b} CE(logits_bi, x_bi) / p_b / answer_len_b   /  B

where ``answer_len_b = L - prompt_len_b`` counts the response and its end-of-text padding (all of it
is target). For pretraining rows this is the paper's ``sum CE / t`` normalised by ``L`` (the
guideline's ``/ (B * L)``). ``per_row_loss`` returns the per-row terms; the batch loss is their mean
over the rows a ``BatchSelector`` keeps (all by default).

Optional semi-autoregressive rows (``semi_ar_prob`` > 0, an unmask extension, not in the LLaDA recipe):
a row of this kind looks like a canvas in the middle of LLaDA's semi-autoregressive block decoding.
A cut ``k`` is drawn uniformly over the answer; answer positions ``< k`` stay clean, those in
``[k, k + W)`` (the "current block", W = ``semi_ar_block``) are masked with probability ``p``, and
every position ``>= k + W`` is masked. Uniform masking lets a small model answer ``a op b = [M]`` by
copying the result from a later line that is still visible; these rows make it compute from the left
context only, which is all that block decoding ever shows it (cf. the clean-prefix / noised-block
training of Block Diffusion, Arriola et al. 2025). Their weight uses the expected masked share,
``p_eff = (min(W, A - k') p + max(0, A - k' - W)) / A`` with ``k' = k - prompt_len``, in place of ``p``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-3


def forward_process(
    input_ids: torch.Tensor,
    prompt_len: torch.Tensor,
    mask_id: int,
    eps: float = EPS,
    generator: torch.Generator | None = None,
    semi_ar_prob: float = 0.0,
    semi_ar_block: int = 32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise a batch: returns ``(noisy_ids, masked [B, L] bool, p_mask [B])``.

    Positions ``< prompt_len`` are never masked; every later position (response and end-of-text
    padding) is masked independently with the row's probability ``p_mask = (1 - eps) t + eps``.
    With ``semi_ar_prob`` > 0 that share of rows is noised semi-autoregressively instead (module
    docstring): clean before a uniform cut ``k``, masked with ``p_mask`` in ``[k, k + semi_ar_block)``,
    masked after; their ``p_mask`` is then the expected masked share of the answer.
    """
    B, L = input_ids.shape
    dev = input_ids.device
    t = torch.rand(B, device=dev, generator=generator)
    p_mask = (1 - eps) * t + eps
    pos = torch.arange(L, device=dev)[None, :]
    start = prompt_len.to(dev)[:, None]
    answer = pos >= start
    draw = torch.rand(B, L, device=dev, generator=generator) < p_mask[:, None]
    masked = draw & answer
    if semi_ar_prob > 0:
        answer_len = (L - start).clamp(min=1)
        semi = torch.rand(B, 1, device=dev, generator=generator) < semi_ar_prob
        cut = start + (torch.rand(B, 1, device=dev, generator=generator) * answer_len).long()
        after = pos >= cut + semi_ar_block
        masked = torch.where(semi, answer & ((draw & (pos >= cut)) | after), masked)
        rest = (L - cut).float()  # answer positions from the cut on
        expected = (rest.clamp(max=semi_ar_block) * p_mask[:, None] + (rest - semi_ar_block).clamp(min=0))
        p_mask = torch.where(semi[:, 0], (expected / answer_len).squeeze(1), p_mask)
    noisy = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    return noisy, masked, p_mask


def per_row_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    p_mask: torch.Tensor,
    prompt_len: torch.Tensor,
) -> torch.Tensor:
    """[B] float32: ``sum_{masked i} CE_i / p_mask / answer_len`` per row (``answer_len = L - prompt_len``).

    Computed densely (cross-entropy at every position, zero weight where unmasked): no data-dependent
    shapes, hence no host-device synchronisation in the training step.
    """
    B, L = input_ids.shape
    ce = F.cross_entropy(logits.float().flatten(0, 1), input_ids.flatten(), reduction="none").view(B, L)
    answer_len = (L - prompt_len.to(input_ids.device)).clamp(min=1).float()
    weights = 1.0 / (p_mask.float() * answer_len)
    return (ce * masked).sum(1) * weights
