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


def positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class HFStyleConfig:
    """What the configs with Hugging Face field names (``hidden_size``, ``num_hidden_layers`` ...: Dream,
    LLaDA-MoE) share: LLaDAConfig's names, which the decoder, the KV cache and the loader read, and the
    checks of the fields they have in common (each returns its problems, as text)."""

    @property
    def n_layers(self) -> int:
        return self.num_hidden_layers

    @property
    def n_heads(self) -> int:
        return self.num_attention_heads

    @property
    def n_kv_heads(self) -> int:
        return self.num_key_value_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def d_model(self) -> int:
        return self.hidden_size

    @property
    def embedding_size(self) -> int:
        return self.vocab_size

    @property
    def max_sequence_length(self) -> int:
        return self.max_position_embeddings

    def positive_int_problems(self, names: tuple[str, ...]) -> list[str]:
        return [f"{name}={getattr(self, name)!r} must be a positive integer"
                for name in names if not positive_int(getattr(self, name))]

    def positive_number_problems(self, names: tuple[str, ...]) -> list[str]:
        return [f"{name}={value!r} must be a positive number" for name in names
                if isinstance(value := getattr(self, name), bool) or not isinstance(value, (int, float)) or value <= 0]

    def token_id_problems(self, names: tuple[str, ...]) -> list[str]:
        return [f"{name}={value!r} must be a token id below vocab_size={self.vocab_size}" for name in names
                if isinstance(value := getattr(self, name), bool) or not isinstance(value, int)
                or not 0 <= value < self.vocab_size]

    def common_problems(self, sizes: tuple[str, ...], family: str) -> list[str]:
        """Defaults ``num_key_value_heads``; raises if a field of ``sizes`` is not a positive integer; else
        returns the problems of the shared fields: heads that split ``hidden_size`` and group evenly,
        SiLU, the default RoPE."""
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        problems = self.positive_int_problems(sizes)
        if problems:  # the checks below compare these numbers
            raise ConfigError(f"unsupported {family} config: " + "; ".join(problems))
        if self.hidden_size % self.num_attention_heads:
            problems.append(f"hidden_size={self.hidden_size} must be a multiple of "
                            f"num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                            f"num_key_value_heads={self.num_key_value_heads}")
        if self.hidden_act != "silu":
            problems.append(f"hidden_act={self.hidden_act!r} (allowed: 'silu')")
        if self.rope_scaling is not None:
            problems.append(f"rope_scaling={self.rope_scaling!r} (unmask implements the default RoPE only: null)")
        return problems


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
