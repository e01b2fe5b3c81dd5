"""LLaDA (Nie et al. 2025, "Large Language Diffusion Models"): a bidirectional Llama-style mask predictor.

Plain PyTorch, weight names identical to GSAI-ML/LLaDA-8B-Instruct's ``modeling_llada.py``
(``model.transformer.wte``, ``blocks.{i}.q_proj`` ... ``ff_out``), so its safetensors load as is.

Per block (``LLaDALlamaBlock``):
    h = x + attn_out(Attention(RoPE(q_proj(n)), RoPE(k_proj(n)), v_proj(n))),   n = attn_norm(x)
    y = h + ff_out(silu(ff_proj(m)) * up_proj(m)),                                 m = ff_norm(h)
RMSNorm and RoPE are computed in float32 and cast back (``rope_full_precision``), as the reference.
Attention is bidirectional (no causal mask); padded keys are masked out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unmask.models.cache import KVCache
from unmask.models.config import LLaDAConfig


class RMSNorm(nn.Module):
    """y = w * (x / sqrt(mean(x^2) + eps)), normalised in float32 then cast back before the weight."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float() if dtype != torch.float64 else x
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rotary_tables(
    head_dim: int, theta: float, positions: torch.Tensor, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [B, 1, L, head_dim] for integer ``positions`` [B, L] (LLaDA's RotaryEmbedding).

    inv_freq_j = theta^(-2j/d); angle = pos * inv_freq, duplicated over both halves (rotate_half style).
    Computed in float32 as the reference (float64 for a float64 model).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim))
    freqs = positions.to(dtype)[..., None] * inv_freq  # [B, L, d/2]
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, L, d]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, in float32 (or float64), cast back to x's dtype."""
    dtype = x.dtype
    xf = x.float() if dtype != torch.float64 else x
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos.to(xf.dtype) + rotated * sin.to(xf.dtype)).to(dtype)


class LLaDABlock(nn.Module):
    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        d, hd = config.d_model, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, hd
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        start: int,
    ) -> torch.Tensor:
        B, L, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, start, k, v)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, is_causal=False, enable_gqa=self.n_kv_heads != self.n_heads
        )
        x = x + self.attn_out(att.transpose(1, 2).reshape(B, L, -1))
        m = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))


class Transformer(nn.Module):
    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.embedding_size, config.d_model)
        self.blocks = nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers))
        self.ln_f = RMSNorm(config.d_model, config.rms_norm_eps)
        if not config.weight_tying:
            self.ff_out = nn.Linear(config.d_model, config.embedding_size, bias=False)


class LLaDAModel(nn.Module):
    """The LLaDA mask predictor; ``model.transformer.*`` matches the HF checkpoint's weight names."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        self.model = nn.Module()
        self.model.transformer = Transformer(config)

    @property
    def transformer(self) -> Transformer:
        return self.model.transformer

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.wte.weight.dtype

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        start: int = 0,
        logits_range: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Logits [B, n, embedding_size] for ``input_ids`` [B, n], canvas columns ``[start, start + n)``.

        attention_mask: [B, T] over the whole canvas (1 = token, 0 = padding); T = n without a cache.
        positions: rotary positions [B, T] of the whole canvas; default: ``cumsum(attention_mask) - 1``
            (padding-aware, so a left-padded row sees the same relative positions as alone), or
            ``0..T-1`` without a mask, as the reference.
        cache: a ``KVCache``; this call writes keys/values of columns ``[start, start + n)`` and
            attends to all T cached columns.
        logits_range: ``(a, b)``: only rows ``a..b-1`` of the input go through the LM head.
        """
        B, n = input_ids.shape
        total = cache.length if (cache is not None and cache.length) else start + n
        if attention_mask is not None and attention_mask.shape != (B, total):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, total)}")
        if positions is None:
            if attention_mask is None:
                positions = torch.arange(total, device=input_ids.device).expand(B, total)
            else:
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        positions = positions[:, start : start + n]
        hd = self.config.head_dim
        table_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        cos, sin = rotary_tables(hd, self.config.rope_theta, positions, table_dtype)
        # Pass attention_mask=None when nothing is padded: SDPA then takes its fastest (flash) path.
        key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        x = self.transformer.wte(input_ids)
        for i, block in enumerate(self.transformer.blocks):
            x = block(x, cos, sin, key_mask, cache, i, start)
        if logits_range is not None:
            x = x[:, logits_range[0] : logits_range[1]]
        x = self.transformer.ln_f(x)
        head = self.transformer.wte.weight if self.config.weight_tying else self.transformer.ff_out.weight
        return F.linear(x, head)
