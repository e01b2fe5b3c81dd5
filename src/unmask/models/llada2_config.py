"""LLaDA2.x configuration: the fields of inclusionAI/LLaDA2.0-mini / LLaDA2.1-mini / -flash ``config.json``
(``model_type: llada2_moe``, ``architectures: ["LLaDA2MoeModelLM"]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unmask.models.config import ConfigError, HFStyleConfig, config_from_dict, config_to_dict, positive_int

_POSITIVE_INTS = ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "head_dim", "num_experts", "num_experts_per_tok",
                  "n_group", "topk_group", "max_position_embeddings")


@dataclass
class LLaDA2Config(HFStyleConfig):
    """Architecture of LLaDA2.x (a BailingMoE-style block-diffusion model; docs/design.md §2, LLaDA2).

    Defaults: LLaDA2.0-mini (20 layers, d 2048, 16 query / 4 key-value heads of 128, layer 0 dense of 5120,
    then 256 experts of 512, top-8 in 4 of 8 groups, one shared expert, sigmoid router with an expert bias,
    scaling 2.5, RoPE base 600000 on half of each head, q/k RMSNorm). ``mask_token_id`` is not in the
    checkpoint's config (the tokenizer's ``<|mask|>``: 156895); a config may set it. ``norm_topk_prob`` is read
    but, as in the reference, the top-k weights are always renormalised.
    """

    vocab_size: int = 157184
    hidden_size: int = 2048
    intermediate_size: int = 5120
    moe_intermediate_size: int = 512
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int | None = 4
    head_dim: int = 128
    first_k_dense_replace: int = 1
    num_experts: int = 256
    num_experts_per_tok: int = 8
    num_shared_experts: int = 1
    n_group: int = 8
    topk_group: int = 4
    routed_scaling_factor: float = 2.5
    norm_topk_prob: bool = True
    score_function: str = "sigmoid"
    moe_router_enable_expert_bias: bool = True
    router_dtype: str | None = "fp32"
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 600000.0
    partial_rotary_factor: float = 0.5
    rope_scaling: dict | None = None
    use_qk_norm: bool = True
    use_qkv_bias: bool = False
    use_bias: bool = False
    tie_word_embeddings: bool = False
    mask_token_id: int = 156895
    eos_token_id: int = 156892
    pad_token_id: int = 156892
    bos_token_id: int | None = None
    model_type: str = "llada2_moe"
    torch_dtype: str | None = "bfloat16"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = self.common_problems(_POSITIVE_INTS, "LLaDA2")
        problems = [p for p in problems if not p.startswith("hidden_size=")]  # heads of head_dim, not d / heads
        if str(self.model_type).lower() != "llada2_moe":
            problems.append(f"model_type={self.model_type!r} (allowed: 'llada2_moe')")
        if self.num_experts_per_tok > self.num_experts:
            problems.append(f"num_experts_per_tok={self.num_experts_per_tok} exceeds num_experts={self.num_experts}")
        if self.num_experts % self.n_group or self.topk_group > self.n_group:
            problems.append(f"n_group={self.n_group} must divide num_experts={self.num_experts} and be >= "
                            f"topk_group={self.topk_group}")
        elif self.num_experts_per_tok > self.topk_group * (self.num_experts // self.n_group):
            problems.append(f"num_experts_per_tok={self.num_experts_per_tok} exceeds the experts of topk_group="
                            f"{self.topk_group} groups")
        if self.score_function != "sigmoid":
            problems.append(f"score_function={self.score_function!r} (allowed: 'sigmoid')")
        rotated = self.head_dim * self.partial_rotary_factor
        if not 0 < self.partial_rotary_factor <= 1 or rotated != int(rotated) or int(rotated) % 2:
            problems.append(f"partial_rotary_factor={self.partial_rotary_factor!r} must give an even number of "
                            f"rotated dimensions of head_dim={self.head_dim}")
        if self.use_qkv_bias or self.use_bias:
            problems.append("use_qkv_bias and use_bias must be false")
        if not isinstance(self.first_k_dense_replace, int) or not 0 <= self.first_k_dense_replace \
                <= self.num_hidden_layers:
            problems.append(f"first_k_dense_replace={self.first_k_dense_replace!r} must be in [0, num_hidden_layers]")
        if self.num_shared_experts is not None and not (self.num_shared_experts == 0
                                                        or positive_int(self.num_shared_experts)):
            problems.append(f"num_shared_experts={self.num_shared_experts!r} must be an integer >= 0")
        problems += self.positive_number_problems(("rope_theta", "routed_scaling_factor"))
        problems += self.token_id_problems(("mask_token_id", "eos_token_id"))
        if problems:
            raise ConfigError("unsupported LLaDA2 config: " + "; ".join(problems))

    @property
    def rotary_dim(self) -> int:
        """Dimensions of each head that RoPE rotates (the first ones)."""
        return int(self.head_dim * self.partial_rotary_factor)

    def is_moe_layer(self, layer: int) -> bool:
        return layer >= self.first_k_dense_replace

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LLaDA2Config:
        return config_from_dict(cls, data, "LLaDA2 config.json")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, "LLaDA2MoeModelLM")


LLADA2_MINI = LLaDA2Config()
"""The shape of LLaDA2.0-mini / LLaDA2.1-mini (16B, 1.4B active): for speed benchmarks with random weights."""
LLADA2_FLASH = LLaDA2Config(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, intermediate_size=9216,
                            moe_intermediate_size=1024)
"""The shape of LLaDA2.0-flash / LLaDA2.1-flash (100B, 6.1B active)."""
