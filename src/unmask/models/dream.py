"""Dream (Ye et al. 2025, "Dream 7B: Diffusion Large Language Models"): a bidirectional Qwen2 mask predictor.

Plain PyTorch, weight names identical to Dream-org/Dream-v0-Instruct-7B's ``modeling_dream.py``
(``model.embed_tokens``, ``model.layers.{i}.self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``,
``input_layernorm``, ``post_attention_layernorm``, ``model.norm``, ``lm_head``), so its safetensors
load as is. Per layer (``DreamDecoderLayer``):
    h = x + o_proj(Attention(RoPE(q_proj(n)), RoPE(k_proj(n)), v_proj(n))),   n = input_layernorm(x)
    y = h + down_proj(silu(gate_proj(m)) * up_proj(m)),                       m = post_attention_layernorm(h)
with biases on q/k/v only, grouped-query attention, no causal mask (padded keys masked out), RMSNorm
in float32 cast back before the weight. The block halves are LLaDA's kernels (``models/llada.py``),
which take the q/k/v biases; ``fuse_projections`` fuses q/k/v (and their biases) and gate/up.

Shifted prediction. Dream starts from an autoregressive model (Qwen2.5) and keeps its convention: the
output at position i predicts the token at i + 1. Its generate takes ``cat([logits[:, :1],
logits[:, :-1]], 1)``, so the logits *for* canvas column c come from the output of column c - 1 (and
column 0 from its own). ``forward`` and ``forward_window`` return logits for the columns asked, the
shift done here, so the decoder, its policies and caches need no special case.

With a KV cache, a window's first column c0 needs the output of column c0 - 1, which a prefix or dual
window does not recompute. Beside each cache the model keeps every column's last-layer output
(pre-norm) as of the last forward that computed it and reads c0 - 1 there: inside a block the column
before it is frozen like its keys and values, as of the block's refresh (docs/design.md §2, Dream).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unmask.models.cache import StaticKVCache
from unmask.models.dream_config import DreamConfig
from unmask.models.llada import (
    EAGER_KERNELS,
    BlockKernels,
    MaskPredictor,
    RMSNorm,
    fuse_parameters,
    pick_rows,
    store_fused,
)


class DreamAttention(nn.Module):
    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(config.n_heads * hd, d, bias=False)


class DreamMLP(nn.Module):
    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)


class DreamLayer(nn.Module):
    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.eps = config.n_heads, config.n_kv_heads, config.rms_norm_eps
        self.self_attn = DreamAttention(config)
        self.mlp = DreamMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.fused = False

    def fuse_projections(self) -> None:
        """One [q; k; v] matrix with its [b_q; b_k; b_v], one [gate; up] matrix; the named weights become views."""
        if self.fused:
            return
        qkv = [self.self_attn.q_proj, self.self_attn.k_proj, self.self_attn.v_proj]
        store_fused(self, "qkv_weight", fuse_parameters(qkv))
        self.register_buffer("qkv_bias", fuse_parameters(qkv, "bias"), persistent=False)
        store_fused(self, "gate_up_weight", fuse_parameters([self.mlp.gate_proj, self.mlp.up_proj]))
        self.fused = True

    def qkv(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        if self.fused:
            return (self.qkv_weight,), (self.qkv_bias,)
        a = self.self_attn
        return (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight), (a.q_proj.bias, a.k_proj.bias, a.v_proj.bias)

    def gate_up_weights(self) -> tuple[torch.Tensor, ...]:
        return (self.gate_up_weight,) if self.fused else (self.mlp.gate_proj.weight, self.mlp.up_proj.weight)

    def forward(
        self, x: torch.Tensor, mlp_out: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
        key_mask: torch.Tensor | None, cache: StaticKVCache | None = None, layer: int = 0,
        columns: torch.Tensor | None = None, kernels: BlockKernels = EAGER_KERNELS,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, mlp_out) of this layer for the input ``x + mlp_out``; the layer's output is their sum."""
        weights, biases = self.qkv()
        x, q, k, v = kernels.attention_inputs(
            x, mlp_out, self.input_layernorm.weight, self.eps, weights, self.n_heads, self.n_kv_heads, cos, sin,
            None if cache is None else cache.layer(layer), columns, biases)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, is_causal=False, enable_gqa=self.n_kv_heads != self.n_heads)
        return kernels.attention_output_and_mlp(
            x, att, self.self_attn.o_proj.weight, self.post_attention_layernorm.weight, self.eps,
            self.gate_up_weights(), self.mlp.down_proj.weight)


class DreamBaseModel(nn.Module):
    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DreamLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DreamModel(MaskPredictor):
    """The Dream mask predictor; ``model.*`` and ``lm_head`` match the HF checkpoint's weight names.

    ``forward`` (``MaskPredictor.forward``) returns logits *for* each column: row c is the head of column
    c - 1's output (row 0 of its own), Dream's shifted prediction, with the reference's ``tok_idx``
    positions for padded rows."""

    shifted_prediction = True

    def __init__(self, config: DreamConfig) -> None:
        super().__init__(config)
        self.model = DreamBaseModel(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def cached_outputs(self, cache: StaticKVCache) -> torch.Tensor:
        """The last-layer outputs [B, T, hidden_size] kept in ``cache.outputs`` (allocated on first use)."""
        if cache.outputs is None:
            shape = (cache.batch, cache.length, self.config.hidden_size)
            cache.outputs = torch.zeros(shape, dtype=cache.kv.dtype, device=cache.kv.device)
        return cache.outputs

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

        Same contract as ``LLaDAModel.forward_window`` (cos/sin of the window, key_mask over the canvas,
        fresh keys/values written at ``columns`` [W] or [B, W], ``logits_rows`` a slice, [R] or [B, R]),
        with the logits of a row being those *for* its column: the head of the output of the column
        before it. Without a cache the window is read as the canvas from its first column; with one,
        the outputs of the window are kept beside the cache and the column before each row is read
        there (for the window's first row: as of the forward that last computed it, e.g. the refresh).
        """
        x, mlp_out = self.run_layers(input_ids, cos, sin, key_mask, cache, columns)
        W = x.shape[1]
        rows = logits_rows
        if rows is None or isinstance(rows, slice):
            rows = torch.arange(W, device=x.device)[rows if rows is not None else slice(None)]
        if cache is None:  # pick the rows first: the last residual add only for them
            before = (rows - 1).clamp(min=0)
            hidden = pick_rows(x, before) + pick_rows(mlp_out, before)
        else:
            hidden = self._cached_predecessors(x + mlp_out, cache, columns, rows)
        return self.head(hidden)

    def _cached_predecessors(
        self, out: torch.Tensor, cache: StaticKVCache, columns: torch.Tensor | None, rows: torch.Tensor
    ) -> torch.Tensor:
        """Write the window's outputs ``out`` [B, W, d] beside ``cache`` at ``columns``, then read, for each
        requested window row, the output of the canvas column just before its column (column 0: its own)."""
        outputs = self.cached_outputs(cache)
        if columns is None:
            outputs.copy_(out)
            canvas = rows
        elif columns.dim() == 1:
            outputs[:, columns] = out
            canvas = columns[rows]
        else:  # per-row columns [B, W]
            outputs.scatter_(1, columns[..., None].expand_as(out), out)
            canvas = columns.gather(1, rows) if rows.dim() == 2 else columns[:, rows]
        return pick_rows(outputs, (canvas - 1).clamp(min=0))
