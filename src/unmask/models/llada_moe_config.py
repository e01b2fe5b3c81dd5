"""LLaDA-MoE configuration: the fields of inclusionAI/LLaDA-MoE-7B-A1B-{Base,Instruct}'s ``config.json``.

The checkpoint's config says ``model_type: llada`` like the dense LLaDA (dllm renames it ``lladamoe``);
``architectures: ["LLaDAMoEModelLM"]`` tells them apart (see ``loading.ARCHITECTURES``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unmask.models.config import ConfigError, HFStyleConfig, config_from_dict, config_to_dict, positive_int

_POSITIVE_INTS = ("vocab_size", "hidden_size", "expert_intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "num_experts", "num_experts_per_tok", "max_position_embeddings")


@dataclass
class LLaDAMoEConfig(HFStyleConfig):
    """Architecture of LLaDA-MoE (OLMoE-style sparse MLP in LLaDA's bidirectional mask predictor).

    Field names and defaults follow LLaDA-MoE-7B-A1B's ``config.json`` (16 layers, d 2048, 16 heads, 64
    experts of 1024, top-8, RoPE base 50000, q/k RMSNorm); unknown fields are kept in ``extra`` so that
    a config round-trips. Read but not applied, as in the reference ``modeling_lladamoe.py``:
    ``norm_topk_prob`` (its MoE block hard-codes ``False``), ``moe_router_score_function`` (always
    softmax) and ``routed_scaling_factor``. ``mask_token_id`` is not in the checkpoint's config (its
    ``generate`` hard-codes 156895); a config may set it.
    """

    vocab_size: int = 157184
    hidden_size: int = 2048
    dense_intermediate_size: int | None = 8192
    expert_intermediate_size: int = 1024
    shared_expert_intermediate_size: int | None = None
    num_hidden_layers: int = 16
    num_attention_heads: int = 16
    num_key_value_heads: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-5
    rope_theta: float = 50000.0
    partial_rotary_factor: float = 1.0
    rope_scaling: dict | None = None
    attention_bias: bool = False
    clip_qkv: float | None = None
    qk_layernorm: bool = True
    num_experts: int = 64
    num_experts_per_tok: int = 8
    norm_topk_prob: bool | None = None
    moe_layer_freq: list[int] | None = None  # per layer: 0 = dense MLP, else MoE; None = every layer MoE
    moe_router_enable_expert_bias: bool | None = None
    moe_router_score_function: str | None = None
    routed_scaling_factor: float = 1.0
    tie_word_embeddings: bool = False
    mask_token_id: int = 156895
    eos_token_id: int = 156892
    pad_token_id: int = 156892
    bos_token_id: int | None = None
    model_type: str = "llada"
    torch_dtype: str | None = "bfloat16"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = self.common_problems(_POSITIVE_INTS, "LLaDA-MoE")
        if str(self.model_type).lower() not in ("llada", "lladamoe"):
            problems.append(f"model_type={self.model_type!r} (allowed: 'llada', 'lladamoe')")
        if self.num_experts_per_tok > self.num_experts:
            problems.append(f"num_experts_per_tok={self.num_experts_per_tok} exceeds num_experts={self.num_experts}")
        if self.partial_rotary_factor not in (1, 1.0):
            problems.append(f"partial_rotary_factor={self.partial_rotary_factor!r} (unmask rotates whole heads: 1.0)")
        if self.attention_bias or self.clip_qkv is not None:
            problems.append("attention_bias must be false and clip_qkv null")
        problems += self.positive_number_problems(("rope_theta",))
        if not self._valid_layer_freq():
            problems.append(f"moe_layer_freq={self.moe_layer_freq!r} must be null or a list of "
                            f"num_hidden_layers={self.num_hidden_layers} integers (0 = dense layer)")
        elif self.moe_layer_freq is not None and 0 in self.moe_layer_freq and \
                not positive_int(self.dense_intermediate_size):
            problems.append(f"dense_intermediate_size={self.dense_intermediate_size!r} must be a positive integer "
                            "(moe_layer_freq has dense layers)")
        if self.shared_expert_intermediate_size is not None and not positive_int(self.shared_expert_intermediate_size):
            problems.append(f"shared_expert_intermediate_size={self.shared_expert_intermediate_size!r} must be null "
                            "or a positive integer")
        problems += self.token_id_problems(("mask_token_id", "eos_token_id"))
        if problems:
            raise ConfigError("unsupported LLaDA-MoE config: " + "; ".join(problems))

    def _valid_layer_freq(self) -> bool:
        freq = self.moe_layer_freq
        return freq is None or (isinstance(freq, list) and len(freq) == self.num_hidden_layers
                                and all(isinstance(f, int) and not isinstance(f, bool) for f in freq))

    def is_moe_layer(self, layer: int) -> bool:
        """The reference's rule: layer ``i`` is sparse unless ``moe_layer_freq[i] == 0``."""
        return self.moe_layer_freq is None or self.moe_layer_freq[layer] != 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LLaDAMoEConfig:
        return config_from_dict(cls, data, 'LLaDA-MoE config.json')

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, 'LLaDAMoEModelLM')


LLADA_MOE_7B_A1B = LLaDAMoEConfig(moe_layer_freq=[1] * 16)
"""The shape of LLaDA-MoE-7B-A1B-Base/Instruct (for speed benchmarks with random weights)."""
