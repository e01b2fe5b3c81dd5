"""LLaDA (Nie et al. 2025, "Large Language Diffusion Models"): a bidirectional Llama-style mask predictor.

Plain PyTorch, weight names identical to GSAI-ML/LLaDA-8B-Instruct's ``modeling_llada.py``
(``model.transformer.wte``, ``blocks.{i}.q_proj`` ... ``ff_out``), so its safetensors load as is.

Per block (``LLaDALlamaBlock``):
    h = x + attn_out(Attention(RoPE(q_proj(n)), RoPE(k_proj(n)), v_proj(n))),   n = attn_norm(x)
    y = h + ff_out(silu(ff_proj(m)) * up_proj(m)),                                 m = ff_norm(h)
RMSNorm and RoPE are computed in float32 and cast back (``rope_full_precision``), as the reference.
Attention is bidirectional (no causal mask); padded keys are masked out.

For inference, ``fuse_projections()`` concatenates q/k/v into one matrix and gate/up into another
(one matmul each; the checkpoint's separate weights stay as views, so saving is unchanged), and
``compile_kernels()`` runs the two pointwise-heavy halves of a block (norm + projections + RoPE;
output projection + norm + MLP) and the final norm + LM head through ``torch.compile`` so their
elementwise work is fused; on CUDA their projections go through the Triton skinny matmul
(``skinny.fast_linear``, at most 64 rows) and a cached forward's RoPE + cache write through one Triton
kernel (``rope_kv``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from unmask.models import rope_kv, skinny
from unmask.models.cache import StaticKVCache, write_kv
from unmask.models.config import LLaDAConfig
from unmask.models.quantize import QuantizedLinear, QuantizedWeight, fuse_quantized
from unmask.models.quantize import linear as quantized_linear
from unmask.models.skinny import fast_linear


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """y = w * (x / sqrt(mean(x^2) + eps)), normalised in float32 then cast back before the weight."""
    dtype = x.dtype
    x32 = x.float() if dtype != torch.float64 else x
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


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


def residual_norm(
    x: torch.Tensor, mlp_out: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block input x + mlp_out (the previous block's last residual add) and its RMSNorm."""
    if mlp_out is not None:
        x = x + mlp_out
    return x, rms_norm(x, norm_weight, eps)


def attention_inputs(
    x: torch.Tensor, mlp_out: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
    qkv_weights: tuple[torch.Tensor, ...], n_heads: int, n_kv_heads: int, cos: torch.Tensor, sin: torch.Tensor,
    cache: torch.Tensor | None = None, columns: torch.Tensor | None = None,
    qkv_biases: tuple[torch.Tensor, ...] | None = None, linear: Callable[..., torch.Tensor] = quantized_linear,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The block input x + mlp_out (the previous block's last residual add, done here so that it fuses
    with this norm), and q, k (after RoPE), v [B, heads, L, head_dim] from it.

    ``qkv_weights`` is one fused [q; k; v] matrix or the three separate ones; ``qkv_biases`` the matching
    biases (Qwen2-style models such as Dream) or ``None``. With a layer's ``cache`` buffer
    [2, B, kv_heads, T, head_dim], the fresh keys/values are written at ``columns`` (all if ``None``)
    and the returned k, v are the whole cached canvas. ``linear`` computes the projections (``F.linear``, or
    the compiled kernels' ``skinny.fast_linear``).
    """
    x, h = residual_norm(x, mlp_out, norm_weight, eps)
    B, L, _ = x.shape
    hd = cos.shape[-1]
    biases = qkv_biases or (None,) * len(qkv_weights)
    if len(qkv_weights) == 1:
        qkv = linear(h, qkv_weights[0], biases[0])
        q, k, v = qkv.split([n_heads * hd, n_kv_heads * hd, n_kv_heads * hd], dim=-1)
    else:
        q, k, v = (linear(h, w, b) for w, b in zip(qkv_weights, biases, strict=True))
    q = q.reshape(B, L, n_heads, hd).transpose(1, 2)
    k = k.reshape(B, L, n_kv_heads, hd).transpose(1, 2)
    v = v.reshape(B, L, n_kv_heads, hd).transpose(1, 2)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if cache is None:
        return x, q, k, v
    write_kv(cache, k, v, columns)
    return x, q, cache[0], cache[1]


def attention_output_and_mlp(
    x: torch.Tensor, attended: torch.Tensor, out_weight: torch.Tensor, norm_weight: torch.Tensor, eps: float,
    gate_up_weights: tuple[torch.Tensor, ...], down_weight: torch.Tensor,
    linear: Callable[..., torch.Tensor] = quantized_linear,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h = x + attn_out(attended) and the MLP's output ff_out(silu(gate(m)) * up(m)), m = ff_norm(h).

    The block's output is h + that; the sum is left to the next block's ``attention_inputs`` (or the
    final norm), where it fuses with the norm that reads it.
    """
    B, L, _ = x.shape
    h = x + linear(attended.transpose(1, 2).reshape(B, L, -1), out_weight)
    m = rms_norm(h, norm_weight, eps)
    if len(gate_up_weights) == 1:
        gate, up = linear(m, gate_up_weights[0]).chunk(2, dim=-1)
    else:
        gate, up = (linear(m, w) for w in gate_up_weights)
    return h, linear(F.silu(gate) * up, down_weight)


def with_fast_linear(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its ``linear`` (the projections) set to ``skinny.fast_linear``: the compiled kernels'."""
    return functools.partial(fn, linear=fast_linear)


def fast_norm_and_qkv(
    x: torch.Tensor, mlp_out: torch.Tensor | None, norm_weight: torch.Tensor, eps: float, qkv_weight: torch.Tensor,
    qkv_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block input x + mlp_out and the fused q/k/v projection of its norm (``skinny.fast_linear``)."""
    x, h = residual_norm(x, mlp_out, norm_weight, eps)
    return x, fast_linear(h, qkv_weight, qkv_bias)


class FusedAttentionInputs:
    """``attention_inputs`` of the compiled kernels: with a layer cache and fused q/k/v on CUDA, the norm and
    projection compiled, then RoPE and the cache write in one Triton kernel (``rope_kv``); otherwise the
    whole of ``attention_inputs`` compiled."""

    def __init__(self) -> None:
        self.whole = compile_kernel(with_fast_linear(attention_inputs))
        self.norm_and_qkv = compile_kernel(fast_norm_and_qkv)

    def __call__(
        self, x: torch.Tensor, mlp_out: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
        qkv_weights: tuple[torch.Tensor, ...], n_heads: int, n_kv_heads: int, cos: torch.Tensor, sin: torch.Tensor,
        cache: torch.Tensor | None = None, columns: torch.Tensor | None = None,
        qkv_biases: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[torch.Tensor, ...]:
        if len(qkv_weights) == 1 and rope_kv.applies(x, cos, cache, columns):
            bias = None if qkv_biases is None else qkv_biases[0]
            x, qkv = self.norm_and_qkv(x, mlp_out, norm_weight, eps, qkv_weights[0], bias)
            q = rope_kv.rope_write_kv(qkv, cos, sin, cache, columns, n_heads, n_kv_heads)
            return x, q, cache[0], cache[1]
        return self.whole(x, mlp_out, norm_weight, eps, qkv_weights, n_heads, n_kv_heads, cos, sin, cache, columns,
                          qkv_biases)


def final_logits(
    x: torch.Tensor, mlp_out: torch.Tensor | None, norm_weight: torch.Tensor, eps: float, head_weight: torch.Tensor,
    linear: Callable[..., torch.Tensor] = quantized_linear,
) -> torch.Tensor:
    """Logits of the last layer's outputs x + mlp_out: the final RMSNorm, then the LM head."""
    return linear(residual_norm(x, mlp_out, norm_weight, eps)[1], head_weight)


_COMPILED_FINAL_LOGITS: Callable[..., torch.Tensor] | None = None


def compiled_final_logits() -> Callable[..., torch.Tensor]:
    global _COMPILED_FINAL_LOGITS
    if _COMPILED_FINAL_LOGITS is None:
        _COMPILED_FINAL_LOGITS = compile_kernel(with_fast_linear(final_logits))
    return _COMPILED_FINAL_LOGITS


@dataclass(frozen=True)
class BlockKernels:
    """The two halves of a block around attention: eager functions or their ``torch.compile`` versions
    (whose projections go through ``skinny.fast_linear``)."""

    attention_inputs: Callable[..., tuple[torch.Tensor, ...]] = attention_inputs
    attention_output_and_mlp: Callable[..., tuple[torch.Tensor, torch.Tensor]] = attention_output_and_mlp
    compiled: bool = False


EAGER_KERNELS = BlockKernels()
_COMPILED_KERNELS: BlockKernels | None = None
COMPILE_OPTIONS = {"emulate_precision_casts": True}
# compiled variants per function (every decode shape is its own: step kinds x slot buckets x cache widths)
RECOMPILE_LIMIT = 1024


def compile_kernel(fn: Callable) -> Callable:
    """``fn`` through ``torch.compile`` (inductor) with ``COMPILE_OPTIONS`` and static shapes, after raising
    dynamo's recompile limits to ``RECOMPILE_LIMIT``.

    Static shapes (``dynamic=False``) make the kernels of a shape a function of that shape alone. Under
    dynamo's default (automatic dynamic shapes) a function is first compiled for its first shape and then
    recompiled with dynamic sizes once it sees a second one, after which every shape, the first included,
    runs the dynamic kernels: a CUDA graph captured before that recompile replays other kernels (other
    roundings) than the same step launched after it, and a decode's bits depended on what ran before it.
    """
    # past the limits dynamo silently runs the function eagerly (other kernels, other bits)
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 8 * RECOMPILE_LIMIT)
    return torch.compile(fn, dynamic=False, options=COMPILE_OPTIONS)


def compiled_kernels() -> BlockKernels:
    """The block halves through ``torch.compile`` (inductor), compiled once and shared by every layer.

    ``emulate_precision_casts`` keeps the eager code's intermediate roundings (e.g. RMSNorm's cast back
    to bf16 before the weight); the results still differ from eager in the last bits (reduction order,
    fused multiply-adds). Raises dynamo's per-function recompile limit to ``RECOMPILE_LIMIT``.
    """
    global _COMPILED_KERNELS
    if _COMPILED_KERNELS is None:
        _COMPILED_KERNELS = BlockKernels(FusedAttentionInputs(),
                                         compile_kernel(with_fast_linear(attention_output_and_mlp)), compiled=True)
    return _COMPILED_KERNELS


def as_views(fused: torch.Tensor, params: list[tuple[nn.Module, str]]) -> None:
    """Replace each ``module.name`` parameter by its rows of ``fused`` (consecutive, in order), frozen."""
    row = 0
    for module, name in params:
        rows = getattr(module, name).shape[0]
        setattr(module, name, nn.Parameter(fused[row : row + rows], requires_grad=False))
        row += rows


def fuse_parameters(modules: list[nn.Module], name: str = "weight") -> torch.Tensor | QuantizedWeight:
    """The ``name`` parameters of ``modules`` concatenated along dim 0 (one matmul for all of them); each
    module's parameter becomes a view into the result, so the checkpoint's names and values are unchanged.
    Quantized linears (``models/quantize.py``) fuse into one ``QuantizedWeight``."""
    if name == "weight" and all(isinstance(m, QuantizedLinear) for m in modules):
        return fuse_quantized(modules)
    fused = torch.cat([getattr(m, name).detach() for m in modules], dim=0)
    as_views(fused, [(m, name) for m in modules])
    return fused


def store_fused(module: nn.Module, name: str, fused: torch.Tensor | QuantizedWeight) -> None:
    """Keep a fused weight on ``module``: a non-persistent buffer, or a plain attribute for a quantized one."""
    if isinstance(fused, QuantizedWeight):
        setattr(module, name, fused)
    else:
        module.register_buffer(name, fused, persistent=False)


def pick_rows(t: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    """Rows of ``t`` [B, L, d] along dim 1: a slice or index [R] shared by every row, or each row's own [B, R]."""
    if isinstance(rows, slice):
        return t[:, rows]
    if rows.dim() == 1:
        return t.index_select(1, rows)
    return t.gather(1, rows[..., None].expand(-1, -1, t.shape[-1]))


class LLaDABlock(nn.Module):
    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        d, hd = config.d_model, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, hd
        self.eps = config.rms_norm_eps
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)
        self.fused = False

    def fuse_projections(self) -> None:
        """One [q; k; v] and one [gate; up] matrix; the named weights become views into them."""
        if self.fused:
            return
        groups = (("qkv_weight", ("q_proj", "k_proj", "v_proj")), ("gate_up_weight", ("ff_proj", "up_proj")))
        for fused_name, names in groups:
            store_fused(self, fused_name, fuse_parameters([getattr(self, n) for n in names]))
        self.fused = True

    def qkv_weights(self) -> tuple[torch.Tensor, ...]:
        return (self.qkv_weight,) if self.fused else (self.q_proj.weight, self.k_proj.weight, self.v_proj.weight)

    def gate_up_weights(self) -> tuple[torch.Tensor, ...]:
        return (self.gate_up_weight,) if self.fused else (self.ff_proj.weight, self.up_proj.weight)

    def forward(
        self,
        x: torch.Tensor,
        mlp_out: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        cache: StaticKVCache | None = None,
        layer: int = 0,
        columns: torch.Tensor | None = None,
        kernels: BlockKernels = EAGER_KERNELS,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, mlp_out) of this block for the input ``x + mlp_out`` (the previous block's pair); the
        block's output is their sum."""
        x, q, k, v = kernels.attention_inputs(
            x, mlp_out, self.attn_norm.weight, self.eps, self.qkv_weights(), self.n_heads, self.n_kv_heads, cos, sin,
            None if cache is None else cache.layer(layer), columns)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, is_causal=False, enable_gqa=self.n_kv_heads != self.n_heads
        )
        return kernels.attention_output_and_mlp(x, att, self.attn_out.weight, self.ff_norm.weight, self.eps,
                                                self.gate_up_weights(), self.ff_out.weight)


class Transformer(nn.Module):
    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.embedding_size, config.d_model)
        self.blocks = nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers))
        self.ln_f = RMSNorm(config.d_model, config.rms_norm_eps)
        if not config.weight_tying:
            self.ff_out = nn.Linear(config.d_model, config.embedding_size, bias=False)


_Model = TypeVar("_Model", bound="MaskPredictor")


class MaskPredictor(nn.Module):
    """What the top-level models of every family (LLaDA, Dream, LLaDA-MoE) share: the full forward, the
    cached window forward, device/dtype, rotary tables and the inference switches (fused projections,
    compiled kernels). A family builds its modules under its checkpoint's names, points ``embedding``,
    ``layers``, ``final_norm`` and ``head_weight`` at them (defaults: ``model.embed_tokens``,
    ``model.layers``, ``model.norm``, ``lm_head``) and names its block kernels; each layer is called as
    ``layer(x, mlp_out, cos, sin, key_mask, cache, i, columns, kernels) -> (h, mlp_out)``.
    """

    _eager_kernels: ClassVar[Any] = EAGER_KERNELS
    _compiled_kernels: ClassVar[Callable[[], Any]] = staticmethod(compiled_kernels)
    shifted_prediction: ClassVar[bool] = False  # Dream: the output at column c predicts column c + 1

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.kernels = self._eager_kernels

    # the parts; by default the Hugging Face layout of Dream and LLaDA-MoE (LLaDA's own names override)
    def embedding(self) -> nn.Embedding:
        return self.model.embed_tokens

    def layers(self) -> nn.ModuleList:
        return self.model.layers

    def final_norm(self) -> RMSNorm:
        return self.model.norm

    def head_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight

    @property
    def device(self) -> torch.device:
        return self.embedding().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding().weight.dtype

    def fuse_projections(self: _Model) -> _Model:
        """Inference layout: each layer's projections fused into fewer matmuls (q/k/v, gate/up; MoE: the
        experts stacked); the checkpoint's weights become views, so saving is unchanged."""
        for layer in self.layers():
            layer.fuse_projections()
        return self

    def compile_kernels(self: _Model, enabled: bool = True) -> _Model:
        """Run the layer halves around attention through ``torch.compile`` (``enabled=False``: back to eager)."""
        self.kernels = self._compiled_kernels() if enabled else self._eager_kernels
        if enabled:
            skinny.prepare(self.device)
        return self

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin tables [B, 1, T, head_dim] for ``positions`` [B, T] (float64 for a float64 model)."""
        table_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        return rotary_tables(self.config.head_dim, self.config.rope_theta, positions, table_dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        logits_range: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Logits [B, L, embedding_size] *for* each column of ``input_ids`` [B, L] (a full forward, no cache;
        what a row's logits are is ``forward_window``'s: Dream's are shifted).

        attention_mask: [B, L] (1 = token, 0 = padding): padded keys are masked out. positions: rotary
        positions [B, L]; default ``cumsum(attention_mask) - 1`` (padding-aware, so a left-padded row sees
        the same relative positions as alone), or ``0..L-1`` without a mask, as the references.
        logits_range: ``(a, b)``: only rows ``a..b-1`` go through the LM head.
        """
        B, L = input_ids.shape
        if attention_mask is not None and attention_mask.shape != (B, L):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, L)}")
        if positions is None:
            if attention_mask is None:
                positions = torch.arange(L, device=input_ids.device).expand(B, L)
            else:
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cos, sin = self.rotary(positions)
        # Pass no mask when nothing is padded: SDPA then takes its fastest (flash) path.
        key_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        rows = None if logits_range is None else slice(*logits_range)
        return self.forward_window(input_ids, cos, sin, key_mask, logits_rows=rows)

    def run_layers(
        self, input_ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_mask: torch.Tensor | None,
        cache: StaticKVCache | None, columns: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The last layer's (h, mlp_out) for the window ``input_ids``; its output is their sum."""
        x, mlp_out = self.embedding()(input_ids), None
        kernels = self.kernels
        for i, layer in enumerate(self.layers()):
            x, mlp_out = layer(x, mlp_out, cos, sin, key_mask, cache, i, columns, kernels)
        return x, mlp_out

    def head(self, hidden: torch.Tensor, mlp_out: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of last-layer outputs ``hidden`` (+ ``mlp_out``) [..., d]: the final norm, then the LM head
        (compiled, the head through ``skinny.fast_linear``, with the compiled kernels)."""
        norm = self.final_norm()
        logits = compiled_final_logits() if self.kernels.compiled else final_logits
        return logits(hidden, mlp_out, norm.weight, norm.eps, self.head_weight())

    def forward_window(
        self,
        input_ids: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        cache: StaticKVCache | None = None,
        columns: torch.Tensor | None = None,
        logits_rows: slice | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for the canvas ``columns`` held in ``input_ids`` [B, W] (all columns if ``None``).

        cos/sin: rotary tables of those columns [B or 1, 1, W, head_dim]. key_mask: [B, 1, 1, T] over the
        canvas or ``None``. With a ``cache``, fresh keys/values are written at ``columns`` ([W] shared, or
        [B, W] per row) and attention reads all T cached columns; without, the window attends to itself.
        ``logits_rows`` picks the rows of the window that go through the LM head (a slice, an index
        tensor [R], or per-row indices [B, R]).
        """
        x, mlp_out = self.run_layers(input_ids, cos, sin, key_mask, cache, columns)
        if logits_rows is not None:  # pick the rows first: the last residual add only for them
            x, mlp_out = pick_rows(x, logits_rows), pick_rows(mlp_out, logits_rows)
        return self.head(x, mlp_out)


class LLaDAModel(MaskPredictor):
    """The LLaDA mask predictor; ``model.transformer.*`` matches the HF checkpoint's weight names."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__(config)
        self.model = nn.Module()
        self.model.transformer = Transformer(config)

    @property
    def transformer(self) -> Transformer:
        return self.model.transformer

    def embedding(self) -> nn.Embedding:
        return self.transformer.wte

    def layers(self) -> nn.ModuleList:
        return self.transformer.blocks

    def final_norm(self) -> RMSNorm:
        return self.transformer.ln_f

    def head_weight(self) -> torch.Tensor:
        return self.transformer.wte.weight if self.config.weight_tying else self.transformer.ff_out.weight
