"""The shipped testbed model: within the issue's size caps, in LLaDA's layout, and actually trained.

A regression guard for the artifact in ``src/unmask/assets/testbed``: a broken or untrained set of
weights would pass every other test (they use random-weight checkpoints). The accuracy checks are
loose lower bounds on a few test-split problems (the measured numbers live in
docs/benchmarks/testbed.md), greedy on the CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

import unmask
from unmask.api import embedded_model_path
from unmask.tasks.registry import get_task

MAX_PARAMS = 25_000_000
MAX_WEIGHT_BYTES = 40_000_000


@pytest.fixture(scope="module")
def lm() -> unmask.DiffusionLM:
    return unmask.load(device="cpu")


def test_shipped_files_in_llada_layout_within_caps():
    folder = embedded_model_path()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llada"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert all((folder / s).is_file() for s in shards)
    assert sum((folder / s).stat().st_size for s in shards) < MAX_WEIGHT_BYTES
    assert "model.transformer.wte.weight" in index["weight_map"]
    template = json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
    assert "<|start_header_id|>" in template and "<|eot_id|>" in template


def test_loads_as_default_model(lm):
    assert sum(p.numel() for p in lm.model.parameters()) <= MAX_PARAMS
    assert lm.path == embedded_model_path()
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}])
    assert prompt.startswith("<|startoftext|>") and prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


@torch.inference_mode()
def test_solves_math_test_problems(lm):
    task = get_task("math")
    examples = task.examples("test", 8, seed=0)
    out = lm.generate([e.prompt for e in examples], policy="threshold", threshold=0.9, gen_length=128,
                      block_length=32)
    right = sum(task.score(e, text) for e, text in zip(examples, out.texts, strict=True))
    assert right >= 6, list(zip([e.reference for e in examples], out.texts, strict=True))
    assert out.nfe < 128  # parallel commits: far fewer forwards than tokens


@torch.inference_mode()
def test_writes_passing_code(lm):
    task = get_task("code")
    examples = task.examples("test", 4, seed=0)
    out = lm.generate([e.prompt for e in examples], policy="topk", gen_length=64, block_length=32)
    right = sum(task.score(e, text) for e, text in zip(examples, out.texts, strict=True))
    assert right >= 3, out.texts
