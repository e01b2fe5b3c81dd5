"""Helpers for tests: tiny random-weight checkpoints in the exact GSAI-ML/LLaDA-8B-Instruct layout.

The checkpoint is written here with safetensors directly (not with unmask's writer), with a real
``tokenizers`` tokenizer and LLaDA-8B-Instruct's chat template, so loading it tests the loader.
Also the random-weight helpers the other families' fixtures share (``random_source``, ``hf_*``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
SPECIALS = [
    "<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|mdm_mask|>",
]
WORDS = [f"w{i}" for i in range(90)] + ["user", "assistant", "hello", "world", "the", "answer", "is", "a", "b", "c"]


def tiny_config(**overrides) -> dict:
    vocab = len(WORDS) + len(SPECIALS) + 2  # + [UNK] and spare
    cfg = {
        "activation_type": "silu", "alibi": False, "architectures": ["LLaDAModelLM"], "attention_layer_norm": False,
        "block_type": "llama", "d_model": 64, "embedding_size": 128, "eos_token_id": len(WORDS) + 2,
        "include_bias": False, "include_qkv_bias": False, "input_emb_norm": False, "layer_norm_type": "rms",
        "mask_token_id": len(WORDS) + 6, "max_sequence_length": 512, "mlp_hidden_size": 96, "model_type": "llada",
        "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "pad_token_id": len(WORDS) + 2, "rms_norm_eps": 1e-5,
        "rope": True, "rope_full_precision": True, "rope_theta": 10000.0, "scale_logits": False,
        "torch_dtype": "float32", "vocab_size": vocab, "weight_tying": False, "precision": "amp_bf16",
    }
    cfg.update(overrides)
    return cfg


def random_source(seed: int, dtype: torch.dtype) -> Callable[..., torch.Tensor]:
    """``rand(*shape, scale)``: float64 normal draws times ``scale`` cast to ``dtype``, all from one generator
    seeded ``seed`` (so a checkpoint's weights depend on the order they are drawn in)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    return rand


def hf_outer_weights(rand: Callable[..., torch.Tensor], cfg: dict, head_scale: float) -> dict[str, torch.Tensor]:
    """The embedding, final norm and (untied) LM head of the Hugging Face layout (Dream, LLaDA-MoE)."""
    d, V = cfg["hidden_size"], cfg["vocab_size"]
    w = {"model.embed_tokens.weight": rand(V, d, scale=1.0), "model.norm.weight": 1 + rand(d, scale=0.1)}
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = rand(V, d, scale=head_scale / d**0.5)
    return w


def hf_attention_weights(rand: Callable[..., torch.Tensor], prefix: str, cfg: dict,
                         bias: bool = False) -> dict[str, torch.Tensor]:
    """A layer's two norms and ``self_attn.{q,k,v,o}_proj`` (with q/k/v biases if ``bias``) in the Hugging
    Face layout, drawn in that order."""
    d = cfg["hidden_size"]
    hd = d // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    w = {prefix + "input_layernorm.weight": 1 + rand(d, scale=0.1),
         prefix + "post_attention_layernorm.weight": 1 + rand(d, scale=0.1)}
    for name, rows, scale in (("q_proj", q, 1.5), ("k_proj", kv, 1.5), ("v_proj", kv, 1.0)):
        w[f"{prefix}self_attn.{name}.weight"] = rand(rows, d, scale=scale / d**0.5)
        if bias:
            w[f"{prefix}self_attn.{name}.bias"] = rand(rows, scale=0.5)
    w[prefix + "self_attn.o_proj.weight"] = rand(d, q, scale=1 / d**0.5)
    return w


def random_weights(cfg: dict, seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Weights scaled so that the random model is confident at some positions and unsure at others."""
    rand = random_source(seed, dtype)
    d, f, V = cfg["d_model"], cfg["mlp_hidden_size"], cfg["embedding_size"]
    kv = cfg["n_kv_heads"] * (d // cfg["n_heads"])
    p = "model.transformer."
    w = {p + "wte.weight": rand(V, d, scale=1.0), p + "ln_f.weight": 1 + rand(d, scale=0.1)}
    if not cfg.get("weight_tying"):
        w[p + "ff_out.weight"] = rand(V, d, scale=2.5 / d**0.5)
    for i in range(cfg["n_layers"]):
        b = f"{p}blocks.{i}."
        w.update({
            b + "attn_norm.weight": 1 + rand(d, scale=0.1), b + "ff_norm.weight": 1 + rand(d, scale=0.1),
            b + "q_proj.weight": rand(d, d, scale=1.5 / d**0.5), b + "k_proj.weight": rand(kv, d, scale=1.5 / d**0.5),
            b + "v_proj.weight": rand(kv, d, scale=1 / d**0.5), b + "attn_out.weight": rand(d, d, scale=1 / d**0.5),
            b + "ff_proj.weight": rand(f, d, scale=1 / d**0.5), b + "up_proj.weight": rand(f, d, scale=1 / d**0.5),
            b + "ff_out.weight": rand(d, f, scale=1 / f**0.5),
        })
    return w


def write_tokenizer(folder: Path) -> None:
    vocab = {"[UNK]": 0}
    for word in WORDS:
        vocab[word] = len(vocab)
    for token in SPECIALS:
        vocab[token] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "chat_template": CHAT_TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast",
    }))


def write_checkpoint(folder: Path, cfg: dict, weights: dict[str, torch.Tensor], shards: int = 1,
                     tokenizer_writer=None) -> Path:
    """config.json + safetensors (sharded with an index when ``shards`` > 1) + the tokenizer files
    (``tokenizer_writer(folder)``; default: this module's LLaDA tokenizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    names = list(weights)
    if shards == 1:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
    else:
        weight_map = {}
        for s in range(shards):
            part = names[s::shards]
            file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            save_file({k: weights[k].contiguous() for k in part}, str(folder / file))
            weight_map.update(dict.fromkeys(part, file))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (tokenizer_writer or write_tokenizer)(folder)
    return folder




def left_pad(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths as one left-padded batch: (input_ids [B, P], attention_mask [B, P])."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, width - len(row):], attn[b, width - len(row):] = row, 1
    return ids, attn
