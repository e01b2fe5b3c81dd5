"""LLaDA2.x (inclusionAI 2025-26, "LLaDA2.0" / "LLaDA2.1"): a block-diffusion mixture-of-experts mask predictor.

Plain PyTorch, weight names identical to the HF checkpoints' ``modeling_llada2_moe.py`` (``model.word_embeddings``,
``model.layers.{i}.attention.{query_key_value,query_layernorm,key_layernorm,dense}``, ``input_layernorm``,
``post_attention_layernorm``, ``mlp.{gate_proj,up_proj,down_proj}`` (dense layers), ``mlp.gate.weight``,
``mlp.gate.expert_bias``, ``mlp.experts.{e}.{gate,up,down}_proj``, ``mlp.shared_experts.*``, ``model.norm``,
``lm_head``). Per layer:

    h = x + dense(Attention(RoPE_r(qnorm(q)), RoPE_r(knorm(k)), v)),   [q | k | v] = query_key_value(input_layernorm(x))
    y = h + MLP(m),   m = post_attention_layernorm(h)

``query_key_value`` stacks all query heads, then all key heads, then all value heads; q/k RMSNorms run over each
head before RoPE, which rotates only the first ``rotary_dim`` (half) dimensions of a head (rotate-half pairs
inside them). The first ``first_k_dense_replace`` layers have a dense SwiGLU MLP, the others the MoE:

    s = sigmoid(gate(m)) in float32 (float64 in a float64 model);  b = s + expert_bias (selection only)
    groups of E / n_group experts scored by the sum of their top-2 b; keep the topk_group best groups;
    e = top-k of b inside them;  w = s_e / (sum s_e + 1e-20) * routed_scaling_factor   (float32)
    MLP(m) = sum_j w_j * expert_{e_j}(m) (summed in the router's dtype) + shared_experts(m)

Attention is *block-causal* (``forward(..., block_length=B)``): position q sees k iff q // B >= k // B
(bidirectional inside a block, causal across blocks), so the keys and values of finished blocks never change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from unmask.models.cache import StaticKVCache, write_kv
from unmask.models.llada import (
    MaskPredictor,
    RMSNorm,
    compile_kernel,
    residual_norm,
    rms_norm,
    rotary_tables,
    with_fast_linear,
)
from unmask.models.llada2_config import LLaDA2Config
from unmask.models.llada_moe import (
    MLP,
    MoEKernels,
    apply_rotary,
    run_experts,
    set_expert_path,
    stack_experts,
    stacked_experts,
)
from unmask.models.quantize import linear as quantized_linear


def attention_inputs(
    x: torch.Tensor, mlp_out: torch.Tensor | None, norm_weight: torch.Tensor, eps: float, qkv_weight: torch.Tensor,
    qk_norm: tuple[torch.Tensor, torch.Tensor] | None, n_heads: int, n_kv_heads: int, head_dim: int,
    cos: torch.Tensor, sin: torch.Tensor, cache: torch.Tensor | None = None, columns: torch.Tensor | None = None,
    linear: Callable[..., torch.Tensor] = quantized_linear,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layer input x + mlp_out and its q, k (per-head RMSNorm, then RoPE on the first ``cos.shape[-1]``
    dimensions) and v [B, heads, L, head_dim]; with a layer's ``cache`` the fresh keys/values are written at
    ``columns`` and the whole cached canvas is returned."""
    x, h = residual_norm(x, mlp_out, norm_weight, eps)
    B, L, _ = x.shape
    q, k, v = linear(h, qkv_weight).split([n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim], dim=-1)
    q, k = q.reshape(B, L, n_heads, head_dim), k.reshape(B, L, n_kv_heads, head_dim)
    if qk_norm is not None:
        q, k = rms_norm(q, qk_norm[0], eps), rms_norm(k, qk_norm[1], eps)
    r = cos.shape[-1]
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    q = torch.cat([apply_rotary(q[..., :r], cos, sin), q[..., r:]], dim=-1)
    k = torch.cat([apply_rotary(k[..., :r], cos, sin), k[..., r:]], dim=-1)
    v = v.reshape(B, L, n_kv_heads, head_dim).transpose(1, 2)
    if cache is None:
        return x, q, k, v
    write_kv(cache, k, v, columns)
    return x, q, cache[0], cache[1]


def attention_output(
    x: torch.Tensor, attended: torch.Tensor, out_weight: torch.Tensor, norm_weight: torch.Tensor, eps: float,
    linear: Callable[..., torch.Tensor] = quantized_linear,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h = x + dense(attended) and the MLP's input m = post_attention_layernorm(h)."""
    B, L = x.shape[:2]
    h = x + linear(attended.transpose(1, 2).reshape(B, L, -1), out_weight)
    return h, rms_norm(h, norm_weight, eps)


def route_groups(
    logits: torch.Tensor, top_k: int, n_group: int, topk_group: int, expert_bias: torch.Tensor | None,
    scaling: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights [N, k] in the logits' dtype, experts [N, k]) of router logits [N, E] (module docstring;
    ``torch.topk``'s tie-breaking, as the reference)."""
    scores = torch.sigmoid(logits)
    biased = scores if expert_bias is None else scores + expert_bias.to(scores.dtype)
    N, E = biased.shape
    group_scores = biased.view(N, n_group, E // n_group).topk(2, dim=-1).values.sum(dim=-1)  # [N, G]
    keep = torch.zeros_like(group_scores).scatter_(1, group_scores.topk(topk_group, dim=-1, sorted=False).indices, 1)
    allowed = keep[:, :, None].expand(N, n_group, E // n_group).reshape(N, E).bool()
    experts = biased.masked_fill(~allowed, float("-inf")).topk(top_k, dim=-1, sorted=False).indices
    weights = scores.gather(1, experts)
    weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20) * scaling
    return weights, experts


class Gate(nn.Module):
    """The router: ``weight`` [E, d] and the selection-only ``expert_bias`` [E] (kept in float32)."""

    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))
        self.register_buffer("expert_bias", torch.zeros(config.num_experts, dtype=torch.float32)
                             if config.moe_router_enable_expert_bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(torch.float32, x.dtype)  # float32 (the reference's), float64 kept
        return F.linear(x.to(dtype), self.weight.to(dtype))


class SparseMoE(nn.Module):
    """``LLaDA2MoeSparseMoeBlock``: the router ``gate``, routed ``experts`` and the ``shared_experts`` MLP."""

    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__()
        self.config = config
        self.gate = Gate(config)
        self.experts = nn.ModuleList(MLP(config.hidden_size, config.moe_intermediate_size)
                                     for _ in range(config.num_experts))
        if config.num_shared_experts:
            self.shared_experts = MLP(config.hidden_size, config.moe_intermediate_size * config.num_shared_experts)
        self.path = "auto"
        self.fused = False

    def fuse(self) -> None:
        """The experts stacked (``llada_moe.stack_experts``), the shared expert's gate/up fused."""
        if self.fused:
            return
        stack_experts(self)
        if hasattr(self, "shared_experts"):
            self.shared_experts.fuse()

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return route_groups(self.gate(x), c.num_experts_per_tok, c.n_group, c.topk_group, self.gate.expert_bias,
                            c.routed_scaling_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, experts = self.route(flat)
        out = run_experts(flat, weights, experts, *stacked_experts(self), path=self.path, sum_dtype=weights.dtype)
        out = out.view(shape)
        if hasattr(self, "shared_experts"):
            out = out + self.shared_experts(x)
        return out


class Attention(nn.Module):
    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        heads = config.num_attention_heads + 2 * config.num_key_value_heads
        self.query_key_value = nn.Linear(d, heads * hd, bias=False)
        self.dense = nn.Linear(config.num_attention_heads * hd, d, bias=False)
        if config.use_qk_norm:
            self.query_layernorm = RMSNorm(hd, config.rms_norm_eps)
            self.key_layernorm = RMSNorm(hd, config.rms_norm_eps)


EAGER_KERNELS = MoEKernels(attention_inputs, attention_output)
_COMPILED_KERNELS: MoEKernels | None = None


def compiled_kernels() -> MoEKernels:
    """The attention halves through ``torch.compile``, compiled once (the router and experts run eagerly)."""
    global _COMPILED_KERNELS
    if _COMPILED_KERNELS is None:
        _COMPILED_KERNELS = MoEKernels(compile_kernel(with_fast_linear(attention_inputs)),
                                       compile_kernel(with_fast_linear(attention_output)), compiled=True)
    return _COMPILED_KERNELS


class DecoderLayer(nn.Module):
    def __init__(self, config: LLaDA2Config, layer: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                        config.head_dim)
        self.eps = config.rms_norm_eps
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SparseMoE(config) if config.is_moe_layer(layer) else MLP(config.hidden_size,
                                                                           config.intermediate_size)
        self.fused = False

    def fuse_projections(self) -> None:
        """The experts stacked, gate/up fused (q/k/v are one matrix in the checkpoint already)."""
        if self.fused:
            return
        self.mlp.fuse()
        self.fused = True

    def forward(
        self, x: torch.Tensor, mlp_out: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
        key_mask: torch.Tensor | None, cache: StaticKVCache | None = None, layer: int = 0,
        columns: torch.Tensor | None = None, kernels: MoEKernels = EAGER_KERNELS,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, mlp_out) of this layer for the input ``x + mlp_out``; the layer's output is their sum."""
        attn = self.attention
        qk_norm = (attn.query_layernorm.weight, attn.key_layernorm.weight) if hasattr(attn, "query_layernorm") \
            else None
        x, q, k, v = kernels.attention_inputs(
            x, mlp_out, self.input_layernorm.weight, self.eps, attn.query_key_value.weight, qk_norm, self.n_heads,
            self.n_kv_heads, self.head_dim, cos, sin, None if cache is None else cache.layer(layer), columns)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, is_causal=False, enable_gqa=self.n_kv_heads != self.n_heads)
        h, m = kernels.attention_output(x, att, attn.dense.weight, self.post_attention_layernorm.weight, self.eps)
        return h, self.mlp(m)


def block_causal_mask(length: int, block_length: int, device: torch.device | None = None) -> torch.Tensor:
    """[L, L] bool: query q may attend key k iff q // B >= k // B (absolute positions)."""
    block = torch.arange(length, device=device) // block_length
    return block[:, None] >= block[None, :]


class LLaDA2Model(MaskPredictor):
    """The LLaDA2.x mask predictor; ``model.*`` and ``lm_head`` match the HF checkpoint's weight names.
    ``forward(..., block_length=B)`` attends block-causally; without it, bidirectionally."""

    _eager_kernels = EAGER_KERNELS
    _compiled_kernels = staticmethod(compiled_kernels)
    float32_buffers = (".expert_bias",)  # the router's bias stays float32 (SGLang, dInfer)
    block_diffusion = True  # trained block-causal: the semi-autoregressive decode over bidirectional windows is not it

    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__(config)
        self.model = nn.Module()
        self.model.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.model.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.model.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def embedding(self) -> nn.Embedding:
        return self.model.word_embeddings

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin tables [B, 1, T, rotary_dim] (RoPE rotates the first ``rotary_dim`` dimensions of a head)."""
        table_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        return rotary_tables(self.config.rotary_dim, self.config.rope_theta, positions, table_dtype)

    def head_weight(self) -> torch.Tensor:
        return self.model.word_embeddings.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def sparse_blocks(self) -> list[SparseMoE]:
        return [layer.mlp for layer in self.model.layers if isinstance(layer.mlp, SparseMoE)]

    def set_expert_path(self, path: str) -> LLaDA2Model:
        """``auto`` (default), ``fused``, ``grouped`` or ``loop`` for every sparse layer (see ``run_experts``)."""
        return set_expert_path(self, path)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None, logits_range: tuple[int, int] | None = None,
        block_length: int | None = None,
    ) -> torch.Tensor:
        """Logits [B, L, vocab] for each column of ``input_ids``; ``block_length``: block-causal attention over
        absolute positions (the reference's generate); ``attention_mask`` [B, L]: padded keys masked out."""
        if block_length is None:
            return super().forward(input_ids, attention_mask, positions, logits_range)
        if isinstance(block_length, bool) or not isinstance(block_length, int) or block_length < 1:
            raise ValueError(f"block_length must be a positive integer, got {block_length!r}")
        B, L = input_ids.shape
        if positions is None:
            positions = torch.arange(L, device=input_ids.device).expand(B, L)
        cos, sin = self.rotary(positions)
        mask = block_causal_mask(L, block_length, input_ids.device)[None, None]  # [1, 1, L, L]
        if attention_mask is not None:
            mask = mask & attention_mask.bool()[:, None, None, :]
        rows = None if logits_range is None else slice(*logits_range)
        return self.forward_window(input_ids, cos, sin, mask, logits_rows=rows)

    # ---- what a forward reads, for the speed floors (eval/speed.py) ---------------------------------
    def expert_parameters(self) -> int:
        return sum(p.numel() for block in self.sparse_blocks() for p in block.experts.parameters())

    @property
    def active_parameters(self) -> int:
        """Parameters one token multiplies: all but the routed experts and the input embedding, plus its top-k
        experts in each sparse layer (LLaDA2.0-mini: 1.11B of 16.3B; the model card's 1.4B counts the embedding
        table too)."""
        c = self.config
        per_expert = 3 * c.hidden_size * c.moe_intermediate_size
        total = sum(p.numel() for p in self.parameters())
        routed = len(self.sparse_blocks()) * c.num_experts_per_tok * per_expert
        return total - self.expert_parameters() - self.model.word_embeddings.weight.numel() + routed

    def weight_bytes_read(self, run: Callable[[], object]) -> int:
        """Bytes of weights read by ``run()`` (one forward, eager): every weight outside the routed experts once,
        plus each expert that at least one token routes to, per layer."""
        routed: list[torch.Tensor] = []

        def record(block: SparseMoE) -> Callable:
            def hook(module: nn.Module, inputs: tuple, logits: torch.Tensor) -> None:
                c = block.config
                routed.append(route_groups(logits, c.num_experts_per_tok, c.n_group, c.topk_group,
                                           block.gate.expert_bias, c.routed_scaling_factor)[1].unique())
            return hook

        handles = [block.gate.register_forward_hook(record(block)) for block in self.sparse_blocks()]
        try:
            with torch.no_grad():
                run()
        finally:
            for handle in handles:
                handle.remove()
        element = self.dtype.itemsize
        per_expert = 3 * self.config.hidden_size * self.config.moe_intermediate_size * element
        other = (sum(p.numel() for p in self.parameters()) - self.expert_parameters()) * element
        return other + per_expert * sum(int(r.numel()) for r in routed)
