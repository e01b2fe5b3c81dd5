"""unmask: fast decoding for diffusion language models (LLaDA and friends)."""

from unmask.api import DiffusionLM, GenerateOutput, embedded_model_path, load
from unmask.decoding import CreditConfig, DecodeConfig, Factor, Frechet, Threshold, TopK

__version__ = "0.1.0"
__all__ = ["DiffusionLM", "GenerateOutput", "embedded_model_path", "load", "CreditConfig", "DecodeConfig", "Factor",
           "Frechet",
           "Threshold", "TopK", "__version__"]
