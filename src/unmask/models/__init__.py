"""Model architectures, checkpoint loading and the block KV cache."""

from unmask.models.cache import CACHE_MODES, StaticKVCache
from unmask.models.config import LLADA_8B, ConfigError, LLaDAConfig
from unmask.models.dream import DreamModel
from unmask.models.dream_config import DREAM_7B, DreamConfig
from unmask.models.llada import LLaDAModel
from unmask.models.llada_moe import LLaDAMoEModel
from unmask.models.llada_moe_config import LLADA_MOE_7B_A1B, LLaDAMoEConfig
from unmask.models.loading import CheckpointError, load_model, random_model, save_pretrained
from unmask.models.tokenizer import Tokenizer

__all__ = [
    "CACHE_MODES", "StaticKVCache", "LLADA_8B", "ConfigError", "LLaDAConfig", "LLaDAModel",
    "LLADA_MOE_7B_A1B", "LLaDAMoEConfig", "LLaDAMoEModel", "DREAM_7B", "DreamConfig", "DreamModel",
    "CheckpointError", "load_model", "random_model", "save_pretrained", "Tokenizer",
]
