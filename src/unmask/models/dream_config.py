"""Dream configuration: the fields of Dream-org/Dream-v0-{Instruct,Base}-7B's ``config.json`` (Qwen2-style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unmask.models.config import ConfigError, config_from_dict, config_to_dict


@dataclass
class DreamConfig:
    """Architecture of a Dream model (Ye et al. 2025, "Dream 7B"; ``model_type: Dream``).

    Field names and defaults follow the reference ``configuration_dream.py`` (so a ``config.json`` that
    omits a field means what it means there); ``DREAM_7B`` is the released 7B shape. Unknown fields of
    a real checkpoint (``auto_map``, ``attention_dropout``, ``sliding_window`` ...) are kept in ``extra``
    so that a config round-trips unchanged.
    """

    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 32
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False
    use_sliding_window: bool = False
    mask_token_id: int = 151666
    pad_token_id: int | None = 151643
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    model_type: str = "Dream"
    torch_dtype: str | None = "bfloat16"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        problems = []
        if str(self.model_type).lower() != "dream":
            problems.append(f"model_type={self.model_type!r} (allowed: 'Dream')")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                problems.append(f"{name}={value!r} must be a positive integer")
        if problems:  # the checks below need the sizes
            raise ConfigError("unsupported Dream config: " + "; ".join(problems))
        if self.hidden_act != "silu":
            problems.append(f"hidden_act={self.hidden_act!r} (allowed: 'silu')")
        if self.rope_scaling is not None:
            problems.append(f"rope_scaling={self.rope_scaling!r} (unmask implements the default RoPE only: null)")
        if self.use_sliding_window:
            problems.append("use_sliding_window=true (Dream attends to the whole canvas: false)")
        if self.hidden_size % self.num_attention_heads:
            problems.append(f"hidden_size={self.hidden_size} must be a multiple of "
                            f"num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                            f"num_key_value_heads={self.num_key_value_heads}")
        mask = self.mask_token_id
        if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask < self.vocab_size:
            problems.append(f"mask_token_id={mask!r} must be a token id below vocab_size={self.vocab_size}")
        for name in ("rms_norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                problems.append(f"{name}={value!r} must be a positive number")
        if problems:
            raise ConfigError("unsupported Dream config: " + "; ".join(problems))

    # the names the decoder, the KV cache and the loader read (shared with LLaDAConfig)
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DreamConfig:
        return config_from_dict(cls, data, 'Dream config.json', model_type='Dream')

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, 'DreamModel')


DREAM_7B = DreamConfig(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, max_position_embeddings=131072, rms_norm_eps=1e-6, rope_theta=1000000.0,
    tie_word_embeddings=False, mask_token_id=151666, pad_token_id=151643, bos_token_id=151643,
    eos_token_id=151643,
)
"""The shape of Dream-org/Dream-v0-Instruct-7B and Dream-v0-Base-7B (speed benchmarks with random weights)."""
