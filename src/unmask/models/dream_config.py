"""Dream configuration: the fields of Dream-org/Dream-v0-{Instruct,Base}-7B's ``config.json`` (Qwen2-style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unmask.models.config import ConfigError, HFStyleConfig, config_from_dict, config_to_dict

_POSITIVE_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "max_position_embeddings")


@dataclass
class DreamConfig(HFStyleConfig):
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
        problems = self.common_problems(_POSITIVE_INTS, "Dream")
        if str(self.model_type).lower() != "dream":
            problems.append(f"model_type={self.model_type!r} (allowed: 'Dream')")
        if self.use_sliding_window:
            problems.append("use_sliding_window=true (Dream attends to the whole canvas: false)")
        problems += self.token_id_problems(("mask_token_id",))
        problems += self.positive_number_problems(("rms_norm_eps", "rope_theta"))
        if problems:
            raise ConfigError("unsupported Dream config: " + "; ".join(problems))

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
