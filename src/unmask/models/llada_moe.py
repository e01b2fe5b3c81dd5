"""LLaDA-MoE (inclusionAI 2025, "LLaDA-MoE: A Sparse MoE Diffusion Language Model"): LLaDA's bidirectional
mask predictor with OLMoE's sparse mixture-of-experts MLP (Muennighoff et al. 2024, "OLMoE").

Plain PyTorch, weight names identical to inclusionAI/LLaDA-MoE-7B-A1B-*'s ``modeling_lladamoe.py``
(``model.embed_tokens``, ``model.layers.{i}.self_attn.{q,k,v,o}_proj``, ``self_attn.{q,k}_norm``,
``mlp.gate``, ``mlp.experts.{e}.{gate,up,down}_proj``, ``model.norm``, ``lm_head``).

Per layer (``LLaDAMoEDecoderLayer``):
    h = x + o_proj(Attention(RoPE(q_norm(q)), RoPE(k_norm(k)), v)),   q, k, v = proj(input_layernorm(x))
    y = h + MoE(m) [+ shared_expert(m)],                                m = post_attention_layernorm(h)
q_norm/k_norm are RMSNorms over each head (``qk_layernorm``), RoPE is applied in the model dtype (the
float32 tables cast to it, as the reference); attention is bidirectional, padded keys masked (the hub
modeling ignores ``attention_mask``: the two agree on unpadded rows). The MoE (``LLaDAMoESparseMoeBlock``):
    p = softmax(gate(m)) in float32 [+ expert_bias];   (w, e) = top-k(p);   w cast to the model dtype
    MoE(m) = sum_j w_j * down_{e_j}(silu(gate_{e_j}(m)) * up_{e_j}(m))
with no renormalisation of the top-k weights (the reference hard-codes ``norm_topk_prob = False``).
Layers with ``moe_layer_freq[i] == 0`` have a dense SwiGLU MLP instead.

The experts run without a loop over tokens: the (token, expert) pairs are sorted by expert and each
expert multiplies its contiguous segment (``run_experts``), by one of two paths chosen automatically:

- ``grouped`` (CUDA, bfloat16, sm90+): two ``F.grouped_mm`` calls over all experts with on-device
  offsets; no host sync, so the step can be captured in a CUDA graph.
- ``loop`` (everywhere else: the CPU, float32/float64, older GPUs): one matmul per expert on its
  segment, the segment sizes read on the host (not capturable: there decode falls back to eager steps).
Both compute the same sums; they differ only in float rounding inside the matmuls.

``fuse_projections()`` stacks the experts' weights into [E, 2F, d] (gate; up) and [E, d, F] (down) and
fuses q/k/v (the checkpoint's per-expert tensors stay as views, so saving is unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unmask.models.cache import StaticKVCache, write_kv
from unmask.models.fused_moe import fused_experts_pairs
from unmask.models.llada import (
    MaskPredictor,
    RMSNorm,
    as_views,
    compile_kernel,
    fuse_parameters,
    residual_norm,
    rms_norm,
    store_fused,
    with_fast_linear,
)
from unmask.models.llada_moe_config import LLaDAMoEConfig
from unmask.models.quantize import QuantizedLinear, fuse_quantized
from unmask.models.quantize import linear as quantized_linear

EXPERT_PATHS = ("auto", "fused", "grouped", "loop")


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin in x's dtype, the tables cast to it first (the reference's rounding)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def attention_inputs(
    x: torch.Tensor, mlp_out: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
    qkv_weights: tuple[torch.Tensor, ...], qk_norm: tuple[torch.Tensor, torch.Tensor] | None, n_heads: int,
    n_kv_heads: int, cos: torch.Tensor, sin: torch.Tensor, cache: torch.Tensor | None = None,
    columns: torch.Tensor | None = None, linear: Callable[..., torch.Tensor] = quantized_linear,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layer input x + mlp_out and its q, k (per-head RMSNorm, then RoPE) and v [B, heads, L, hd].

    As ``llada.attention_inputs`` plus the q/k norms; with a layer's ``cache`` buffer the fresh keys and
    values are written at ``columns`` and the whole cached canvas is returned.
    """
    x, h = residual_norm(x, mlp_out, norm_weight, eps)
    B, L, _ = x.shape
    hd = cos.shape[-1]
    if len(qkv_weights) == 1:
        q, k, v = linear(h, qkv_weights[0]).split([n_heads * hd, n_kv_heads * hd, n_kv_heads * hd], dim=-1)
    else:
        q, k, v = (linear(h, w) for w in qkv_weights)
    q, k = q.reshape(B, L, n_heads, hd), k.reshape(B, L, n_kv_heads, hd)
    if qk_norm is not None:
        q, k = rms_norm(q, qk_norm[0], eps), rms_norm(k, qk_norm[1], eps)
    q, k = apply_rotary(q.transpose(1, 2), cos, sin), apply_rotary(k.transpose(1, 2), cos, sin)
    v = v.reshape(B, L, n_kv_heads, hd).transpose(1, 2)
    if cache is None:
        return x, q, k, v
    write_kv(cache, k, v, columns)
    return x, q, cache[0], cache[1]


def attention_output(
    x: torch.Tensor, attended: torch.Tensor, out_weight: torch.Tensor, norm_weight: torch.Tensor, eps: float,
    linear: Callable[..., torch.Tensor] = quantized_linear,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h = x + o_proj(attended) and the MLP's input m = post_attention_layernorm(h)."""
    B, L, _ = x.shape
    h = x + linear(attended.transpose(1, 2).reshape(B, L, -1), out_weight)
    return h, rms_norm(h, norm_weight, eps)


def swiglu(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """down(silu(gate(x)) * up(x)) with ``gate_up`` = [gate; up] stacked on the output dimension."""
    gate, up = quantized_linear(x, gate_up).chunk(2, dim=-1)
    return quantized_linear(F.silu(gate) * up, down)


# ---- routing and experts ----------------------------------------------------------------------------

def route(
    logits: torch.Tensor, top_k: int, expert_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, experts) [N, k] of router logits [N, E], as the reference's sparse block:

    p = softmax(logits) in float32, plus ``expert_bias`` if the checkpoint has one (the biased value is
    also the weight); the top-k of p by ``torch.topk`` (its tie-breaking); no renormalisation.
    """
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    if expert_bias is not None:
        probs = probs + expert_bias
    return torch.topk(probs, top_k, dim=-1)


def expert_path(x: torch.Tensor, path: str = "auto") -> str:
    """``grouped`` where ``F.grouped_mm`` runs on device offsets (CUDA bf16 on sm90+), else ``loop``."""
    if path != "auto":
        return path
    if x.is_cuda and x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (9, 0):
        return "grouped"
    return "loop"


def set_expert_path(model: nn.Module, path: str) -> nn.Module:
    """Set the expert path of every sparse layer of ``model`` (one with ``sparse_blocks()``)."""
    if path not in EXPERT_PATHS:
        raise ValueError(f"unknown expert path {path!r} (allowed: {', '.join(EXPERT_PATHS)})")
    for block in model.sparse_blocks():
        block.path = path
    return model


def run_experts(
    x: torch.Tensor, weights: torch.Tensor, experts: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
    path: str = "auto", sum_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """sum_j weights[:, j] * expert_{experts[:, j]}(x) for tokens ``x`` [N, d]; experts stacked as ``gate_up``
    [E, 2F, d] and ``down`` [E, d, F].

    The N*k (token, expert) pairs are sorted by expert (stably), the tokens gathered in that order, each
    expert applied to its contiguous segment, and the outputs put back in (token, slot) order, weighted
    (in the model dtype, as the reference; in ``sum_dtype`` and cast back if given: LLaDA2's float32) and summed
    over the k slots.
    """
    N, k = experts.shape
    E = gate_up.shape[0]
    if expert_path(x, path) == "fused":
        out = fused_experts_pairs(x, experts, gate_up, down).view(N, k, -1)
        return combine_slots(out, weights, sum_dtype)
    flat = experts.reshape(-1)
    order = flat.argsort(stable=True)
    xs = x.index_select(0, order // k)  # [N*k, d], grouped by expert
    if expert_path(x, path) == "grouped":
        ends = torch.searchsorted(flat.index_select(0, order), torch.arange(1, E + 1, device=x.device))
        ends = ends.to(torch.int32)
        gate, up = F.grouped_mm(xs, gate_up.transpose(-2, -1), offs=ends).chunk(2, dim=-1)
        out = F.grouped_mm(F.silu(gate) * up, down.transpose(-2, -1), offs=ends)
    else:
        out = torch.empty_like(xs)
        start = 0
        for e, count in enumerate(torch.bincount(flat, minlength=E).tolist()):  # a loop over experts, not tokens
            if count:
                out[start:start + count] = swiglu(xs[start:start + count], gate_up[e], down[e])
                start += count
    out = torch.empty_like(out).index_copy_(0, order, out).view(N, k, -1)  # back to (token, slot) order
    return combine_slots(out, weights, sum_dtype)


def combine_slots(out: torch.Tensor, weights: torch.Tensor, sum_dtype: torch.dtype | None = None) -> torch.Tensor:
    """sum_j weights[:, j] * out[:, j] for the experts' outputs ``out`` [N, k, d], in the model dtype (the
    reference) or in ``sum_dtype`` and cast back."""
    if sum_dtype is not None:
        return (out.to(sum_dtype) * weights.to(sum_dtype)[..., None]).sum(dim=1).to(out.dtype)
    return (out * weights.to(out.dtype)[..., None]).sum(dim=1)


# ---- modules with the checkpoint's names ------------------------------------------------------------

class MLP(nn.Module):
    """A SwiGLU MLP (``LLaDAMoEMLP``): a dense layer's MLP, one expert, or the shared expert."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)
        self.fused = False

    def fuse(self) -> None:
        """One [gate; up] matrix (``gate_up_weight``); the named weights become views into it."""
        if not self.fused:
            store_fused(self, "gate_up_weight", fuse_parameters([self.gate_proj, self.up_proj]))
            self.fused = True

    def gate_up(self) -> torch.Tensor:
        if self.fused:
            return self.gate_up_weight
        if isinstance(self.gate_proj, QuantizedLinear):  # a quantized shared expert, before fusing
            return fuse_quantized([self.gate_proj, self.up_proj])
        return torch.cat([self.gate_proj.weight, self.up_proj.weight])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.gate_up(), self.down_proj.weight)


def stack_experts(block: nn.Module) -> None:
    """Stack ``block.experts`` into ``gate_up_weight`` [E, 2F, d] and ``down_weight`` [E, d, F]; the per-expert
    weights become views into them (the checkpoint's names stay)."""
    gate_up = torch.stack([e.gate_up().detach() for e in block.experts])
    down = torch.stack([e.down_proj.weight.detach() for e in block.experts])
    block.register_buffer("gate_up_weight", gate_up, persistent=False)
    block.register_buffer("down_weight", down, persistent=False)
    for i, expert in enumerate(block.experts):
        as_views(gate_up[i], [(expert.gate_proj, "weight"), (expert.up_proj, "weight")])
        expert.down_proj.weight = nn.Parameter(down[i], requires_grad=False)
    block.fused = True


def stacked_experts(block: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The experts' (gate_up [E, 2F, d], down [E, d, F]): the fused buffers, or stacked now."""
    if block.fused:
        return block.gate_up_weight, block.down_weight
    return (torch.stack([e.gate_up() for e in block.experts]),
            torch.stack([e.down_proj.weight for e in block.experts]))


class SparseMoE(nn.Module):
    """``LLaDAMoESparseMoeBlock``: the router ``gate`` and ``num_experts`` SwiGLU experts."""

    def __init__(self, config: LLaDAMoEConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList(MLP(config.hidden_size, config.expert_intermediate_size)
                                     for _ in range(config.num_experts))
        if config.moe_router_enable_expert_bias:
            self.register_buffer("expert_bias", torch.zeros(config.num_experts))
        else:
            self.expert_bias = None
        self.path = "auto"
        self.fused = False

    def fuse(self) -> None:
        if not self.fused:
            stack_experts(self)

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        return stacked_experts(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        weights, experts = route(self.gate(x), self.top_k, self.expert_bias)
        return run_experts(x, weights, experts, *self.stacked(), path=self.path).view(shape)


class Attention(nn.Module):
    def __init__(self, config: LLaDAMoEConfig) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(d, config.num_attention_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.num_key_value_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.num_key_value_heads * hd, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        if config.qk_layernorm:
            self.q_norm = RMSNorm(hd, config.rms_norm_eps)
            self.k_norm = RMSNorm(hd, config.rms_norm_eps)


@dataclass(frozen=True)
class MoEKernels:
    """The attention halves of a layer: eager functions or their ``torch.compile`` versions (the router
    and the experts always run eagerly)."""

    attention_inputs: Callable[..., tuple[torch.Tensor, ...]] = attention_inputs
    attention_output: Callable[..., tuple[torch.Tensor, torch.Tensor]] = attention_output
    compiled: bool = False


EAGER_KERNELS = MoEKernels()
_COMPILED_KERNELS: MoEKernels | None = None


def compiled_kernels() -> MoEKernels:
    """The attention halves through ``torch.compile`` (options as ``llada.compiled_kernels``), compiled once."""
    global _COMPILED_KERNELS
    if _COMPILED_KERNELS is None:
        _COMPILED_KERNELS = MoEKernels(compile_kernel(with_fast_linear(attention_inputs)),
                                       compile_kernel(with_fast_linear(attention_output)), compiled=True)
    return _COMPILED_KERNELS


class DecoderLayer(nn.Module):
    def __init__(self, config: LLaDAMoEConfig, layer: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.eps = config.rms_norm_eps
        self.self_attn = Attention(config)
        if config.is_moe_layer(layer):
            self.mlp = SparseMoE(config)
            if config.shared_expert_intermediate_size is not None:
                self.shared_expert = MLP(config.hidden_size, config.shared_expert_intermediate_size)
        else:
            self.mlp = MLP(config.hidden_size, config.dense_intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.fused = False

    def fuse_projections(self) -> None:
        """One [q; k; v] matrix (``qkv_weight``) and stacked experts; the named weights become views."""
        if self.fused:
            return
        attn = self.self_attn
        store_fused(self, "qkv_weight", fuse_parameters([attn.q_proj, attn.k_proj, attn.v_proj]))
        self.mlp.fuse()
        if hasattr(self, "shared_expert"):
            self.shared_expert.fuse()
        self.fused = True

    def qkv_weights(self) -> tuple[torch.Tensor, ...]:
        attn = self.self_attn
        return (self.qkv_weight,) if self.fused else (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight)

    def forward(
        self, x: torch.Tensor, mlp_out: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
        key_mask: torch.Tensor | None, cache: StaticKVCache | None = None, layer: int = 0,
        columns: torch.Tensor | None = None, kernels: MoEKernels = EAGER_KERNELS,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, mlp_out) of this layer for the input ``x + mlp_out``; the layer's output is their sum."""
        attn = self.self_attn
        qk_norm = (attn.q_norm.weight, attn.k_norm.weight) if hasattr(attn, "q_norm") else None
        x, q, k, v = kernels.attention_inputs(
            x, mlp_out, self.input_layernorm.weight, self.eps, self.qkv_weights(), qk_norm, self.n_heads,
            self.n_kv_heads, cos, sin, None if cache is None else cache.layer(layer), columns)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, is_causal=False, enable_gqa=self.n_kv_heads != self.n_heads)
        h, m = kernels.attention_output(x, att, attn.o_proj.weight, self.post_attention_layernorm.weight, self.eps)
        out = self.mlp(m)
        if hasattr(self, "shared_expert"):
            out = out + self.shared_expert(m)
        return h, out


class LLaDAMoEModel(MaskPredictor):
    """The LLaDA-MoE mask predictor; ``model.*`` and ``lm_head`` match the HF checkpoint's weight names.
    Its kernels are the attention halves of a layer (the router and the experts always run eagerly)."""

    _eager_kernels = EAGER_KERNELS
    _compiled_kernels = staticmethod(compiled_kernels)

    def __init__(self, config: LLaDAMoEConfig) -> None:
        super().__init__(config)
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.model.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.model.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def sparse_blocks(self) -> list[SparseMoE]:
        return [layer.mlp for layer in self.model.layers if isinstance(layer.mlp, SparseMoE)]

    def set_expert_path(self, path: str) -> LLaDAMoEModel:
        """``auto`` (default), ``fused``, ``grouped`` or ``loop`` for every sparse layer (see ``run_experts``)."""
        return set_expert_path(self, path)

    # ---- what a forward reads, for the speed floors (eval/speed.py) ---------------------------------
    def expert_parameters(self) -> int:
        return sum(p.numel() for block in self.sparse_blocks() for p in block.experts.parameters())

    @property
    def active_parameters(self) -> int:
        """Parameters one token multiplies: all but the experts and the input embedding (a lookup), plus
        its top-k experts in each sparse layer (LLaDA-MoE-7B-A1B: 1.40B of 7.36B)."""
        c = self.config
        per_expert = 3 * c.hidden_size * c.expert_intermediate_size
        total = sum(p.numel() for p in self.parameters())
        lookup = 0 if c.tie_word_embeddings else self.model.embed_tokens.weight.numel()
        routed = len(self.sparse_blocks()) * c.num_experts_per_tok * per_expert
        return total - self.expert_parameters() - lookup + routed

    def weight_bytes_read(self, run: Callable[[], object]) -> int:
        """Bytes of weights read by ``run()`` (one forward of this model, run eagerly here): every weight
        outside the experts once, plus each expert that at least one token routes to, per layer."""
        blocks = self.sparse_blocks()
        routed: list[torch.Tensor] = []

        def record(block: SparseMoE) -> Callable:
            def hook(module: nn.Module, inputs: tuple, logits: torch.Tensor) -> None:
                routed.append(route(logits, block.top_k, block.expert_bias)[1].unique())
            return hook

        handles = [block.gate.register_forward_hook(record(block)) for block in blocks]
        try:
            with torch.no_grad():
                run()
        finally:
            for handle in handles:
                handle.remove()
        element = self.dtype.itemsize
        per_expert = 3 * self.config.hidden_size * self.config.expert_intermediate_size * element
        other = (sum(p.numel() for p in self.parameters()) - self.expert_parameters()) * element
        return other + per_expert * sum(int(r.numel()) for r in routed)
