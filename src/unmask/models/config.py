"""LLaDA configuration: the fields of GSAI-ML/LLaDA-8B-Instruct's ``config.json`` (OLMo-style)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A ``config.json`` that cannot describe a model unmask can build."""


def config_from_dict(cls: type, data: Any, label: str, model_type: str | None = None) -> Any:
    """A config dataclass ``cls`` from ``config.json``'s object: its own fields by name, every other field kept
    in ``extra`` (so a config round-trips unchanged); ``model_type`` required when given."""
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
    if model_type is not None and "model_type" not in data:
        raise ConfigError(f"config.json has no 'model_type' (expected {model_type!r})")
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names}
    try:
        return cls(**known, extra=extra)
    except TypeError as err:  # wrong value types
        raise ConfigError(f"bad {label}: {err}") from err


def config_to_dict(config: Any, architecture: str) -> dict[str, Any]:
    """The ``config.json`` object of a config dataclass: its fields, then ``extra``, ``architectures`` defaulted."""
    data = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "extra"}
    data.update(config.extra)
    data.setdefault("architectures", [architecture])
    return data


@dataclass
class LLaDAConfig:
    """Architecture of a dense LLaDA model (``model_type: llada``, ``block_type: llama``).

    Field names and defaults follow LLaDA-8B-Instruct's ``config.json``; unknown fields of a real
    checkpoint are kept in ``extra`` so that a config round-trips unchanged.
    """

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int | None = None
    n_layers: int = 32
    mlp_hidden_size: int = 12288
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    weight_tying: bool = False
    mask_token_id: int = 126336
    eos_token_id: int = 126081
    pad_token_id: int = 126081
    max_sequence_length: int = 4096
    block_type: str = "llama"
    model_type: str = "llada"
    activation_type: str = "silu"
    layer_norm_type: str = "rms"
    include_bias: bool = False
    include_qkv_bias: bool = False
    attention_layer_norm: bool = False
    input_emb_norm: bool = False
    scale_logits: bool = False
    rope: bool = True
    alibi: bool = False
    torch_dtype: str | None = "bfloat16"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.embedding_size is None:
            self.embedding_size = self.vocab_size
        problems = []
        if self.model_type.lower() != "llada":
            problems.append(f"model_type={self.model_type!r} (allowed: 'llada')")
        if self.block_type != "llama":
            problems.append(f"block_type={self.block_type!r} (allowed: 'llama')")
        if self.activation_type not in ("silu", "swiglu"):
            problems.append(f"activation_type={self.activation_type!r} (allowed: 'silu', 'swiglu')")
        if self.layer_norm_type not in ("rms", "rms_layer_norm"):
            problems.append(f"layer_norm_type={self.layer_norm_type!r} (allowed: 'rms')")
        if self.include_bias or self.include_qkv_bias or self.attention_layer_norm or self.alibi:
            problems.append("include_bias/include_qkv_bias/attention_layer_norm/alibi must be false")
        if not self.rope:
            problems.append("rope=false (unmask implements rotary embeddings only)")
        if self.d_model <= 0 or self.n_heads <= 0 or self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} must be a positive multiple of n_heads={self.n_heads}")
        elif self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
            problems.append(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if self.embedding_size < self.vocab_size:
            problems.append(f"embedding_size={self.embedding_size} < vocab_size={self.vocab_size}")
        if problems:
            raise ConfigError("unsupported LLaDA config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LLaDAConfig:
        return config_from_dict(cls, data, "config.json", model_type="llada")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, "LLaDAModelLM")


LLADA_8B = LLaDAConfig()
"""The shape of LLaDA-8B-Base/Instruct and LLaDA 1.5 (used for speed benchmarks with random weights)."""
