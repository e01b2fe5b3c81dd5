"""Helpers for tests: tiny random-weight checkpoints in the exact Dream-org/Dream-v0-Instruct-7B layout.

Weights are written with safetensors directly (not with unmask's writer) under the checkpoint's names,
``config.json`` with its field names, and the tokenizer as the hub ships it: ``vocab.json`` +
``merges.txt`` of a byte-level BPE (no ``tokenizer.json``) and a ``tokenizer_config.json`` whose
``added_tokens_decoder`` puts the special tokens after the vocabulary, with a Qwen2-style chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

import llada_fixtures
import torch
from tokenizers import pre_tokenizers

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ALPHABET = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 byte-level symbols
MERGES = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("Ġwor", "l"),
          ("Ġworl", "d"), ("Ġ", "t"), ("Ġt", "he"), ("a", "n"), ("Ġ", "a"), ("Ġa", "n")]
VOCAB = ALPHABET + ["".join(pair) for pair in MERGES]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"]
SPECIAL_IDS = {token: len(VOCAB) + i for i, token in enumerate(SPECIALS)}


def tiny_config(**overrides) -> dict:
    eos = SPECIAL_IDS["<|endoftext|>"]
    cfg = {
        "architectures": ["DreamModel"], "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": eos, "eos_token_id": eos, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 96, "mask_token_id": SPECIAL_IDS["<|mask|>"], "max_position_embeddings": 512,
        "max_window_layers": 2, "model_type": "Dream", "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "pad_token_id": eos, "rms_norm_eps": 1e-6, "rope_scaling": None,
        "rope_theta": 10000.0, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.46.2", "use_cache": False, "use_sliding_window": False, "vocab_size": 320,
    }
    cfg.update(overrides)
    return cfg


def random_weights(cfg: dict, seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Weights scaled so that the random model is confident at some positions and unsure at others."""
    rand = llada_fixtures.random_source(seed, dtype)
    d, f = cfg["hidden_size"], cfg["intermediate_size"]
    w = llada_fixtures.hf_outer_weights(rand, cfg, head_scale=4)
    for i in range(cfg["num_hidden_layers"]):
        b = f"model.layers.{i}."
        w.update(llada_fixtures.hf_attention_weights(rand, b, cfg, bias=True))
        w.update({
            b + "mlp.gate_proj.weight": rand(f, d, scale=1 / d**0.5),
            b + "mlp.up_proj.weight": rand(f, d, scale=1 / d**0.5),
            b + "mlp.down_proj.weight": rand(d, f, scale=1 / f**0.5),
        })
    return w


def write_tokenizer(folder: Path) -> None:
    """vocab.json + merges.txt + tokenizer_config.json, as Dream-org/Dream-v0-Instruct-7B ships them."""
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for t, i in SPECIAL_IDS.items()}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": "<|beginoftext|>", "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>", "errors": "replace", "mask_token": "<|mask|>", "model_max_length": 131072,
        "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "DreamTokenizer",
        "unk_token": None,
    }))


def write_checkpoint(folder: Path, cfg: dict, weights: dict[str, torch.Tensor], shards: int = 1) -> Path:
    """The checkpoint as llada_fixtures writes it, with Dream's vocab.json + merges.txt tokenizer."""
    return llada_fixtures.write_checkpoint(folder, cfg, weights, shards, tokenizer_writer=write_tokenizer)
