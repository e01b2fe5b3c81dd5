"""Tiny random-weight LLaDA2.x checkpoints in the exact inclusionAI/LLaDA2.0-mini layout (``model_type:
llada2_moe``, ``architectures: ["LLaDA2MoeModelLM"]``, the real weight names), with ``llada_fixtures``'
tokenizer (whose mask/eos ids the config names)."""

from __future__ import annotations

import torch
from llada_fixtures import SPECIALS, WORDS, random_source

MASK_ID = len(WORDS) + 6
EOS_ID = len(WORDS) + 2


def tiny_llada2_config(**overrides) -> dict:
    vocab = len(WORDS) + len(SPECIALS) + 2
    cfg = {
        "architectures": ["LLaDA2MoeModelLM"], "model_type": "llada2_moe",
        "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                     "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
        "vocab_size": vocab + 20, "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 24,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "first_k_dense_replace": 1, "num_experts": 8, "num_experts_per_tok": 3, "num_shared_experts": 1,
        "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
        "score_function": "sigmoid", "moe_router_enable_expert_bias": True, "router_dtype": "fp32",
        "hidden_act": "silu", "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 600000.0,
        "partial_rotary_factor": 0.5, "rope_scaling": None, "use_qk_norm": True, "use_qkv_bias": False,
        "use_bias": False, "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": False,
        "pad_token_id": EOS_ID, "eos_token_id": EOS_ID, "mask_token_id": MASK_ID, "output_router_logits": False,
    }
    cfg.update(overrides)
    return cfg


def random_llada2_weights(cfg: dict, seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Weights scaled so that the model is confident at some positions, and the router's choice (and its groups)
    differs from token to token; the expert bias moves some selections."""
    rand = random_source(seed, dtype)
    d, E, hd = cfg["hidden_size"], cfg["num_experts"], cfg["head_dim"]
    heads = cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"]

    def mlp(prefix: str, hidden: int) -> dict[str, torch.Tensor]:
        return {prefix + "gate_proj.weight": rand(hidden, d, scale=1 / d**0.5),
                prefix + "up_proj.weight": rand(hidden, d, scale=1 / d**0.5),
                prefix + "down_proj.weight": rand(d, hidden, scale=1 / hidden**0.5)}

    w = {"model.word_embeddings.weight": rand(cfg["vocab_size"], d, scale=1.0),
         "model.norm.weight": 1 + rand(d, scale=0.1)}
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = rand(cfg["vocab_size"], d, scale=2.5 / d**0.5)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + rand(d, scale=0.1)
        w[p + "post_attention_layernorm.weight"] = 1 + rand(d, scale=0.1)
        w[p + "attention.query_key_value.weight"] = rand(heads * hd, d, scale=1 / d**0.5)
        w[p + "attention.dense.weight"] = rand(d, cfg["num_attention_heads"] * hd, scale=1 / d**0.5)
        if cfg.get("use_qk_norm", True):
            w[p + "attention.query_layernorm.weight"] = 1 + rand(hd, scale=0.3)
            w[p + "attention.key_layernorm.weight"] = 1 + rand(hd, scale=0.3)
        if i < cfg["first_k_dense_replace"]:
            w.update(mlp(p + "mlp.", cfg["intermediate_size"]))
            continue
        w[p + "mlp.gate.weight"] = rand(E, d, scale=2 / d**0.5)
        if cfg.get("moe_router_enable_expert_bias", True):
            w[p + "mlp.gate.expert_bias"] = rand(E, scale=0.2).to(torch.float32)
        for e in range(E):
            w.update(mlp(p + f"mlp.experts.{e}.", cfg["moe_intermediate_size"]))
        if cfg.get("num_shared_experts"):
            w.update(mlp(p + "mlp.shared_experts.", cfg["moe_intermediate_size"] * cfg["num_shared_experts"]))
    return w
