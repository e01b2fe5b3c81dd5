"""The block loop, scorers, commit policies and CreditDecoding."""

from unmask.decoding.config import DecodeConfig
from unmask.decoding.credit import CreditConfig, CreditState
from unmask.decoding.loop import DecodeResult, decode
from unmask.decoding.policies import (
    POLICY_NAMES,
    Factor,
    Frechet,
    Policy,
    Threshold,
    TopK,
    make_policy,
    num_transfer_tokens,
)
from unmask.decoding.scorers import SCORER_NAMES, Scorer

__all__ = [
    "CreditConfig", "CreditState", "DecodeConfig", "DecodeResult", "decode", "POLICY_NAMES", "Factor", "Frechet",
    "Policy", "Threshold", "TopK", "make_policy", "num_transfer_tokens", "SCORER_NAMES", "Scorer",
]
