"""Weight-only quantization (models/quantize.py): the formulas against a plain restatement, every family's
quantized model against its unquantized logits, the compiled kernels and the engine on quantized weights,
saving and loading back without quantizing again, and the errors."""

from __future__ import annotations

import json

import dream_fixtures
import pytest
import torch
from llada_fixtures import random_weights, tiny_config, write_checkpoint
from llada_moe_fixtures import random_moe_weights, tiny_moe_config
from safetensors.torch import load_file

import unmask
from unmask.decoding import Threshold, decode
from unmask.models import load_model
from unmask.models.loading import CheckpointError, save_pretrained
from unmask.models.quantize import (
    QuantizedLinear,
    QuantizedWeight,
    pack_int4,
    parameter_count,
    quantize_model,
    quantize_weight,
    unpack_int4,
    weight_bytes,
)

MODES = ("int8", "int4", "fp8", "fp8-w8a8")
TOLERANCE = {"int8": 0.01, "int4": 0.15, "fp8": 0.05, "fp8-w8a8": 0.05}  # relative Frobenius error of the weights


def reference_quantize(w: torch.Tensor, mode: str, group: int) -> torch.Tensor:
    """The dequantized weight, restated in float32: per row (int4: per row and group of columns)
    s = max|w| / qmax (1 for an all-zero row), q = round(w / s) clamped (fp8: w / s in float8), w' = q * s."""
    w = w.float()
    rows = w.view(w.shape[0], -1, group) if mode == "int4" else w[:, None, :]
    qmax = {"int8": 127.0, "int4": 7.0, "fp8": 448.0, "fp8-w8a8": 448.0}[mode]
    s = rows.abs().amax(-1, keepdim=True) / qmax
    s = torch.where(s > 0, s, torch.ones_like(s))
    if mode.startswith("fp8"):
        q = (rows / s).to(torch.float8_e4m3fn).float()
    else:
        q = (rows / s).round().clamp(-8 if mode == "int4" else -127, 7 if mode == "int4" else 127)
    return (q * s).view_as(w)


@pytest.mark.parametrize("mode", MODES)
def test_weights_quantize_as_the_formula_says(mode):
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(0)) * 0.05
    w[3] = 0.0  # a zero row: scale 1, no division by zero
    q = quantize_weight(w, mode, group_size=16)
    assert q.shape == w.shape and q.data.dtype == {"int8": torch.int8, "int4": torch.uint8,
                                                   "fp8": torch.float8_e4m3fn, "fp8-w8a8": torch.float8_e4m3fn}[mode]
    assert torch.equal(q.dequantize(torch.float32), reference_quantize(w, mode, 16))
    assert float((w - q.dequantize(torch.float32)).norm() / w.norm()) < TOLERANCE[mode]
    assert torch.equal(q.dequantize(torch.float32)[3], torch.zeros(64))
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    if mode == "fp8-w8a8":  # the activations quantized per row too: x' = (x / s_x in fp8) * s_x
        s_x = x.abs().amax(-1, keepdim=True) / 448
        x = (x / s_x).to(torch.float8_e4m3fn).float() * s_x
    assert torch.allclose(q.linear(x), x @ q.dequantize(torch.float32).T, rtol=1e-5, atol=1e-6)


def test_int4_packs_two_per_byte():
    q = torch.randint(-8, 8, (6, 10), generator=torch.Generator().manual_seed(2))
    packed = pack_int4(q)
    assert packed.shape == (6, 5) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), q.to(torch.int8))
    assert quantize_weight(torch.randn(4, 688), "int4").group_size == 86  # 688 = 8 x 86: the largest even divisor
    assert quantize_weight(torch.randn(4, 256), "int4", group_size=24).group_size == 16
    with pytest.raises(ValueError, match="the weight's 63 columns must be even"):
        quantize_weight(torch.randn(4, 63), "int4")


def families(tmp_path):
    """(name, checkpoint folder) of a tiny LLaDA, Dream and LLaDA-MoE (group size 16 divides their widths)."""
    llada = write_checkpoint(tmp_path / "llada", tiny_config(), random_weights(tiny_config()))
    dcfg = dream_fixtures.tiny_config()
    dream = dream_fixtures.write_checkpoint(tmp_path / "dream", dcfg, dream_fixtures.random_weights(dcfg))
    mcfg = tiny_moe_config()
    moe = write_checkpoint(tmp_path / "moe", mcfg, random_moe_weights(mcfg))
    return [("llada", llada), ("dream", dream), ("moe", moe)]


@pytest.mark.parametrize("mode", MODES)
def test_every_family_quantizes_close_to_its_logits(tmp_path, mode):
    torch.manual_seed(0)
    for name, folder in families(tmp_path):
        full = load_model(folder, dtype="float32").fuse_projections()
        quantized = load_model(folder, dtype="float32")
        quantize_model(quantized, mode, group_size=16)
        quantized.fuse_projections()
        names = quantized.quantization_config["modules"]
        assert names and all(isinstance(quantized.get_submodule(n), QuantizedLinear) for n in names)
        assert not any("experts" in n.split(".") or n.endswith(".gate") for n in names), name  # MoE: kept
        assert not any(n in ("lm_head", "model.transformer.ff_out") for n in names), name  # the head: kept
        x = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(3)).to(full.device)
        a, b = full.forward(x), quantized.forward(x)
        assert float((a - b).norm() / a.norm()) < 2 * TOLERANCE[mode], (name, mode)
        assert weight_bytes(quantized) < weight_bytes(full) and parameter_count(quantized) == parameter_count(full)


@pytest.mark.parametrize("mode", MODES)
def test_engine_and_compiled_kernels_on_quantized_weights(tiny_ckpt, mode):
    """Eager and compiled kernels (torch.compile on the CPU) decode a quantized model to the same tokens, in
    every cache mode."""
    model = load_model(tiny_ckpt, dtype="float32")
    quantize_model(model, mode, group_size=16)
    model.fuse_projections()
    x = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(2))
    for cache in ("none", "dual"):
        kw = dict(mask_id=model.config.mask_token_id, gen_length=16, block_length=8, cache=cache, early_stop=False)
        eager = decode(model, x, Threshold(0.3), compile=False, **kw)
        fused = decode(model, x, Threshold(0.3), compile="fused", **kw)
        assert torch.equal(eager.sequences, fused.sequences), (mode, cache)


@pytest.mark.parametrize("mode", MODES)
def test_saved_quantized_checkpoint_loads_back_as_saved(tmp_path, tiny_ckpt, mode):
    lm = unmask.load(str(tiny_ckpt), dtype="float32", quantize=mode)
    out = lm.save_pretrained(tmp_path / "saved")
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["mode"] == mode
    tensors = {k: v for f in out.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    name = "model.transformer.blocks.0.q_proj"
    assert tensors[name + ".weight"].dtype == lm.model.get_submodule(name).qweight.dtype
    assert tensors[name + ".weight_scale"].dtype == torch.float32
    assert (out / "tokenizer.json").is_file()
    back = unmask.load(str(out), dtype="float32")
    assert isinstance(back.model.get_submodule(name), QuantizedLinear)
    x = torch.randint(0, 100, (1, 10), device=lm.model.device)  # on CUDA the model loads onto the GPU
    assert torch.equal(back.model.forward(x), lm.model.forward(x))  # the same stored weights, not re-quantized
    assert unmask.load(str(out), quantize=mode).model.quantization_config["mode"] == mode
    other = next(m for m in MODES if m != mode)
    with pytest.raises(CheckpointError, match=f"saved quantized as '{mode}'"):
        unmask.load(str(out), quantize=other)


def test_head_is_quantized_only_when_asked(tiny_ckpt):
    lm = unmask.load(str(tiny_ckpt), quantize="int8", quantize_head=True)
    head = lm.model.head_weight()
    assert isinstance(head, QuantizedWeight)
    assert not isinstance(unmask.load(str(tiny_ckpt), quantize="int8").model.head_weight(), QuantizedWeight)


def test_bad_quantize_settings_are_named(tmp_path, tiny_ckpt):
    with pytest.raises(ValueError, match="quantize must be one of int8, int4, fp8, fp8-w8a8.*got 'int3'"):
        unmask.load(str(tiny_ckpt), quantize="int3")
    with pytest.raises(ValueError, match="quantize_head must be True or False"):
        unmask.load(str(tiny_ckpt), quantize="int8", quantize_head="yes")
    model = load_model(tiny_ckpt).fuse_projections()
    with pytest.raises(ValueError, match="before fusing"):
        quantize_model(model, "int8")
    # a saved checkpoint whose quantization_config names a module the model lacks
    lm = unmask.load(str(tiny_ckpt), quantize="int8")
    out = save_pretrained(lm.model, tmp_path / "broken", dtype=lm.model.dtype)
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["modules"].append("model.transformer.blocks.9.q_proj")
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="names a module the model does not have"):
        load_model(out)
