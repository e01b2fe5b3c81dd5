"""Shared fixtures: tiny random-weight LLaDA checkpoints in the real layout (see llada_fixtures.py)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from llada_fixtures import random_weights, tiny_config, write_checkpoint  # noqa: E402


@pytest.fixture
def tiny_cfg() -> dict:
    return tiny_config()


@pytest.fixture
def tiny_weights(tiny_cfg) -> dict[str, torch.Tensor]:
    return random_weights(tiny_cfg)


@pytest.fixture
def tiny_ckpt(tmp_path, tiny_cfg, tiny_weights) -> Path:
    return write_checkpoint(tmp_path / "tiny-llada", tiny_cfg, tiny_weights)
