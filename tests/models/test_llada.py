"""The native LLaDA forward equals a plain restatement of modeling_llada.py, with and without cache."""

import pytest
import torch
from llada_fixtures import random_weights, tiny_config, write_checkpoint
from reference import ref_forward

import unmask
from unmask.models import StaticKVCache, load_model
from unmask.models.cache import recompute_columns


@pytest.mark.parametrize("overrides", [{}, {"n_kv_heads": 2}, {"weight_tying": True}])
def test_logits_match_plain_restatement(tmp_path, overrides):
    cfg = tiny_config(**overrides)
    w = random_weights(cfg, seed=3)
    model = load_model(write_checkpoint(tmp_path / "m", cfg, w), dtype="float64")
    x = torch.randint(0, cfg["vocab_size"], (3, 17))
    ref, _ = ref_forward(w, cfg, x)
    torch.testing.assert_close(model(x), ref, rtol=1e-10, atol=1e-10)


def test_padding_masks_keys_and_keeps_relative_positions(tiny_ckpt, tiny_cfg, tiny_weights):
    model = load_model(tiny_ckpt, dtype="float64")
    x = torch.randint(0, 100, (2, 15))
    mask = torch.ones(2, 15, dtype=torch.long)
    mask[0, :6] = 0
    padded = model(x, attention_mask=mask)
    alone = model(x[:1, 6:])
    torch.testing.assert_close(padded[0, 6:], alone[0], rtol=1e-10, atol=1e-10)
    # the reference (plain positions, key mask) gives the same logits: RoPE is relative
    ref, _ = ref_forward(tiny_weights, tiny_cfg, x, key_mask=mask)
    torch.testing.assert_close(padded[0, 6:], ref[0, 6:], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cache_window_equals_fastdllm_cache(tiny_ckpt, tiny_cfg, tiny_weights, mode):
    model = load_model(tiny_ckpt, dtype="float64")
    x = torch.randint(0, 100, (2, 24))
    cache = StaticKVCache.for_model(model.config, 2, 24, model.dtype, model.device)
    cos, sin = model.rotary(torch.arange(24)[None])
    full = model.forward_window(x, cos, sin, None, cache)  # the refresh writes every column
    torch.testing.assert_close(full, ref_forward(tiny_weights, tiny_cfg, x)[0], rtol=1e-10, atol=1e-10)
    _, past = ref_forward(tiny_weights, tiny_cfg, x)
    s, e = 8, 16
    x2 = x.clone()
    x2[:, s:e] = torch.randint(0, 100, (2, e - s))  # the block changed since the refresh
    ws, we = recompute_columns(mode, s, e, 24)
    columns = torch.arange(ws, we)
    got = model.forward_window(x2[:, ws:we], cos[:, :, ws:we], sin[:, :, ws:we], None, cache, columns)
    if mode == "prefix":
        ref, _ = ref_forward(tiny_weights, tiny_cfg, x2[:, s:], past=[(k[:, :, :s], v[:, :, :s]) for k, v in past],
                             query_start=s)
    else:
        ref, _ = ref_forward(tiny_weights, tiny_cfg, x2[:, s:e], past=past, query_start=s, replace=(s, e))
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("overrides", [{}, {"n_kv_heads": 2}])
def test_fused_projections_keep_logits_and_checkpoint_layout(tmp_path, overrides):
    from unmask.models import save_pretrained
    from unmask.models.loading import load_state_dict

    cfg = tiny_config(**overrides)
    w = random_weights(cfg, seed=5)
    model = load_model(write_checkpoint(tmp_path / "m", cfg, w), dtype="float64")
    x = torch.randint(0, cfg["vocab_size"], (2, 11))
    before = model(x)
    n_params = sum(p.numel() for p in model.parameters())
    model.fuse_projections()
    assert model.transformer.blocks[0].qkv_weight.shape[0] == (cfg["n_heads"] + 2 * model.config.n_kv_heads) * (
        cfg["d_model"] // cfg["n_heads"])
    torch.testing.assert_close(model(x), before, rtol=1e-12, atol=1e-12)
    assert sum(p.numel() for p in model.parameters()) == n_params  # the fused buffers add no parameters
    assert set(model.state_dict()) == set(w)  # the checkpoint's names, no fused extras
    saved = load_state_dict(save_pretrained(model, tmp_path / "saved", dtype="float64"))
    assert all(torch.equal(saved[k], w[k].double()) for k in w)


def test_logits_range_slices_the_head(tiny_ckpt):
    model = load_model(tiny_ckpt, dtype="float64")
    x = torch.randint(0, 100, (1, 12))
    torch.testing.assert_close(model(x, logits_range=(4, 9)), model(x)[:, 4:9])


def test_bf16_forward_close_to_fp32(tiny_ckpt):
    x = torch.randint(0, 100, (1, 12))
    ref = load_model(tiny_ckpt, dtype="float32")(x)
    got = load_model(tiny_ckpt, dtype="bfloat16")(x).float()
    assert (got - ref).norm() / ref.norm() < 3e-2


def test_load_api_returns_tokenizer_with_special_ids(tiny_ckpt, tiny_cfg):
    lm = unmask.load(tiny_ckpt, dtype="float32", device="cpu")
    assert lm.mask_id == tiny_cfg["mask_token_id"]
    assert lm.tokenizer.eos_id == tiny_cfg["eos_token_id"]
    assert lm.tokenizer.eot_id is not None and lm.tokenizer.eot_id in lm.tokenizer.stop_ids
    text = lm.tokenizer.apply_chat_template([{"role": "user", "content": " hello world "}])
    assert text == (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhello world<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
