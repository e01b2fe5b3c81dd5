"""Tiny random-weight LLaDA-MoE checkpoints in the exact inclusionAI/LLaDA-MoE-7B-A1B layout.

The config uses the real ``config.json`` field names (``model_type: llada`` with ``architectures:
["LLaDAMoEModelLM"]``, as the hub checkpoints); weights are written with safetensors directly, with the
tokenizer of ``llada_fixtures`` (whose mask/eos ids the config names), so loading tests the loader.
"""

from __future__ import annotations

import torch
from llada_fixtures import SPECIALS, WORDS, hf_attention_weights, hf_outer_weights, random_source

MASK_ID = len(WORDS) + 6  # <|mdm_mask|> in llada_fixtures' tokenizer
EOS_ID = len(WORDS) + 2  # <|endoftext|>


def tiny_moe_config(**overrides) -> dict:
    vocab = len(WORDS) + len(SPECIALS) + 2
    cfg = {
        "architectures": ["LLaDAMoEModelLM"], "model_type": "llada",
        "auto_map": {"AutoConfig": "configuration_lladamoe.LLaDAConfig",
                     "AutoModel": "modeling_lladamoe.LLaDAMoEModelLM"},
        "attention_bias": False, "attention_dropout": 0.0, "clip_qkv": None, "dense_intermediate_size": 96,
        "eos_token_id": EOS_ID, "pad_token_id": EOS_ID, "expert_intermediate_size": 32, "hidden_act": "silu",
        "hidden_size": 64, "initializer_range": 0.02, "max_position_embeddings": 512, "moe_layer_freq": [1, 1],
        "moe_router_enable_expert_bias": False, "moe_router_score_function": "softmax", "norm_topk_prob": False,
        "num_attention_heads": 4, "num_key_value_heads": 4, "num_experts": 8, "num_experts_per_tok": 3,
        "num_hidden_layers": 2, "output_router_logits": False, "partial_rotary_factor": 1, "qk_layernorm": True,
        "rms_norm_eps": 1e-5, "rope_scaling": None, "rope_theta": 10000.0, "router_aux_loss_coef": 0.01,
        "shared_expert_intermediate_size": None, "tie_word_embeddings": False, "torch_dtype": "float32",
        "use_cache": False, "vocab_size": vocab + 20, "mask_token_id": MASK_ID,
    }
    cfg.update(overrides)
    return cfg


def random_moe_weights(cfg: dict, seed: int = 0, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Weights scaled so that the random model is confident at some positions and unsure at others, and
    the router's top-k differs from token to token."""
    rand = random_source(seed, dtype)
    d, E = cfg["hidden_size"], cfg["num_experts"]
    hd = d // cfg["num_attention_heads"]

    def mlp(prefix: str, hidden: int) -> dict[str, torch.Tensor]:
        return {prefix + "gate_proj.weight": rand(hidden, d, scale=1 / d**0.5),
                prefix + "up_proj.weight": rand(hidden, d, scale=1 / d**0.5),
                prefix + "down_proj.weight": rand(d, hidden, scale=1 / hidden**0.5)}

    w = hf_outer_weights(rand, cfg, head_scale=2.5)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.update(hf_attention_weights(rand, p, cfg))
        if cfg.get("qk_layernorm"):
            w[p + "self_attn.q_norm.weight"] = 1 + rand(hd, scale=0.3)
            w[p + "self_attn.k_norm.weight"] = 1 + rand(hd, scale=0.3)
        freq = cfg.get("moe_layer_freq")
        if freq is not None and freq[i] == 0:
            w.update(mlp(p + "mlp.", cfg["dense_intermediate_size"]))
            continue
        w[p + "mlp.gate.weight"] = rand(E, d, scale=2 / d**0.5)
        for e in range(E):
            w.update(mlp(f"{p}mlp.experts.{e}.", cfg["expert_intermediate_size"]))
        if cfg.get("moe_router_enable_expert_bias"):
            w[p + "mlp.expert_bias"] = rand(E, scale=0.05)
        if cfg.get("shared_expert_intermediate_size") is not None:
            w.update(mlp(p + "shared_expert.", cfg["shared_expert_intermediate_size"]))
    return w
