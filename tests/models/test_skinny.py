"""The Triton skinny matmul of the fused decode step (``unmask.models.skinny``): where it applies, that it
computes x @ W^T (every split of the reduction, ragged row counts), that a compiled bf16 model decodes with
it and its CUDA graphs replay what its kernels compute, and the two-stage greedy scorer of the fused step."""

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

from unmask.decoding import Threshold, TopK
from unmask.decoding.engine import DecodeEngine, EngineOptions, run_rows
from unmask.decoding.scorers import Scorer, _fused_argmax_confidence, argmax_confidence
from unmask.models import skinny
from unmask.models.config import LLaDAConfig
from unmask.models.loading import random_model
from unmask.models.quantize import QuantizedWeight, quantize_rows_fp8, quantize_weight

cuda = pytest.mark.skipif(not torch.cuda.is_available() or skinny.triton is None, reason="Triton kernels need CUDA")
# the kernels' indexing runs on the CPU under the Triton interpreter (TRITON_INTERPRET=1, Triton installed), in
# float16 (the interpreter's bfloat16 arithmetic is not faithful); on CUDA in bfloat16
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1" and skinny.triton is not None
KERNEL_DEVICES = ["cuda"] if torch.cuda.is_available() and skinny.triton is not None else (["cpu"] if INTERPRET else [])
kernel = pytest.mark.skipif(not KERNEL_DEVICES, reason="needs CUDA or the Triton interpreter (TRITON_INTERPRET=1)")


def test_cpu_and_float32_inputs_take_f_linear():
    x, w = torch.randn(32, 256), torch.randn(128, 256)
    assert not skinny.applies(x, w) and not skinny.applies(x.bfloat16(), w.bfloat16())  # CPU
    assert torch.equal(skinny.fast_linear(x, w), F.linear(x, w))


def test_default_config_splits_narrow_outputs():
    assert skinny.default_config(4096, 4096).split_k == 4  # 64 programs: split so that every SM streams
    assert skinny.default_config(24576, 4096).split_k == 1
    assert skinny.default_config(4096, 384).split_k == 1  # K too short to split in chunks of 128
    # the tuned table was measured on an H100: other devices (and none) take the default
    assert skinny.config_for(12288, 4096) == skinny.default_config(12288, 4096)
    skinny.prepare(torch.device("cpu"))  # nothing to prepare on the CPU
    assert not skinny.applies(torch.zeros(2, 256, dtype=torch.bfloat16), torch.zeros(128, 256, dtype=torch.bfloat16))


@pytest.mark.parametrize("m", [1, 16, 17, 32, 33, 48, 64])
def test_every_launch_fits_the_shared_memory_of_sm90(m):
    """The staged tiles of every tuned and default configuration fit 227 KiB at every row count the kernel
    takes (found on an H200: the LM head's 256-wide tile at 3 stages needs 240 KiB for 33-64 rows)."""
    configs = list(skinny.TUNED.values()) + [skinny.default_config(n, k) for n, k in skinny.TUNED]
    for config in configs:
        fitted = skinny.fit_stages(config, m, skinny.SM90_SHARED_MEMORY)
        rows = skinny.block_rows(m)
        assert rows >= m and rows in (16, 32, 64)
        assert fitted.stages * (fitted.block_n + rows) * fitted.block_k * 2 <= skinny.SM90_SHARED_MEMORY
        assert 1 <= fitted.stages <= config.stages
        if m <= 32:  # the depth the table was tuned at is kept
            assert fitted == config
    head = skinny.TUNED[(126464, 4096)]
    assert skinny.fit_stages(head, 64, skinny.SM90_SHARED_MEMORY).stages == 2  # 3 x 80 KiB would not fit


@pytest.mark.parametrize("V", [126464, 4096, 1000, 37])
def test_two_stage_greedy_scorer_equals_argmax_and_float64_probability(V):
    """Candidate = the first maximum (ties to the lowest position, as argmax); p(c) = the float64 softmax."""
    logits = torch.randn(2, 5, V, generator=torch.Generator().manual_seed(V)).bfloat16()
    logits[0, 0, 7] = logits[0, 0, V - 1] = 9.0  # a tie across chunks
    logits[1, 2, 3] = logits[1, 2, 4] = 9.0  # a tie inside a chunk
    candidates, confidence = _fused_argmax_confidence(logits)
    ref_candidates, ref_confidence = argmax_confidence(logits)
    assert torch.equal(candidates, ref_candidates) and candidates[0, 0] == 7 and candidates[1, 2] == 3
    assert confidence.dtype == torch.float64
    torch.testing.assert_close(confidence, ref_confidence, rtol=1e-12, atol=0)
    exact = torch.softmax(logits.double(), -1).gather(-1, candidates[..., None]).squeeze(-1)
    torch.testing.assert_close(confidence, exact, rtol=1e-12, atol=0)


@cuda
@pytest.mark.parametrize("rows", [1, 7, 32, 64])
@pytest.mark.parametrize("n,k,split", [(256, 512, 1), (256, 512, 2), (512, 1024, 4), (128, 384, 1)])
@pytest.mark.parametrize("swap", [True, False])
def test_skinny_partials_compute_x_at_w_transposed(rows, n, k, split, swap):
    skinny.prepare(torch.device("cuda"))
    g = torch.Generator(device="cuda").manual_seed(rows * n + k)
    x = torch.randn(rows, k, device="cuda", generator=g).bfloat16()
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.05).bfloat16()
    out = skinny.skinny_partials(x, w, skinny.SkinnyConfig(64, 128, split, 3, 4, swap))
    assert out.shape == ((rows, n) if split == 1 else (split, rows, n))
    y = out.float() if split == 1 else out.sum(0)
    ref = x.double() @ w.double().T
    torch.testing.assert_close(y.double(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())


@cuda
def test_fast_linear_takes_the_kernel_and_matches_cublas():
    skinny.prepare(torch.device("cuda"))
    if torch.cuda.get_device_capability() == (9, 0):
        assert skinny.config_for(12288, 4096, torch.device("cuda")) == skinny.TUNED[(12288, 4096)]
    x = torch.randn(2, 16, 4096, device="cuda").bfloat16()
    for n, k in [(4096, 4096), (4096, 12288)]:
        w = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
        xk = x if k == 4096 else torch.randn(2, 16, k, device="cuda").bfloat16()
        assert skinny.applies(xk, w)
        y = skinny.fast_linear(xk, w)
        assert y.shape == (2, 16, n) and y.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), F.linear(xk, w).float(), rtol=2e-2, atol=2e-2)
    big = torch.randn(65, 4096, device="cuda").bfloat16()
    assert not skinny.applies(big, w[:, :4096].contiguous())  # more rows than MAX_ROWS: cuBLAS


@cuda
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("policy", [TopK(8), Threshold(0.3)], ids=repr)
def test_bf16_fused_graphs_replay_the_skinny_kernels(cache, policy):
    """A bf16 model whose projections take the Triton kernel (dims tiled by it): the captured fused step
    gives what the same compiled kernels give eagerly, and the fused logits stay within bf16 noise of eager."""
    config = LLaDAConfig(d_model=256, n_heads=4, n_layers=2, mlp_hidden_size=512, vocab_size=1024,
                         embedding_size=1024, mask_token_id=1023, eos_token_id=1022, pad_token_id=1022)
    model = random_model(config, dtype=torch.bfloat16, device=torch.device("cuda")).fuse_projections()
    x = torch.randint(0, 1000, (2, 16), device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    eager_logits = model(x)
    model.compile_kernels(True)
    try:
        assert skinny.applies(torch.zeros(32, 256, device="cuda", dtype=torch.bfloat16), model.layers()[0].qkv_weight)
        fused_logits = model(x)
        torch.testing.assert_close(fused_logits.float(), eager_logits.float(), rtol=0.05, atol=0.05)
        opts = EngineOptions(2, 16 + 32, 32, 16, False, config.mask_token_id, cache, 0.0, False, None, (), False)
        eager = DecodeEngine(model, policy, Scorer(), None, opts)
        graph = DecodeEngine(model, policy, Scorer(), None, opts, graphs=True)
        for program in (eager, graph):
            run_rows(program, x, eager.G)
        assert torch.equal(eager.x, graph.x) and torch.equal(eager.commit_step, graph.commit_step)
    finally:
        model.compile_kernels(False)


def on(q: QuantizedWeight, device: str) -> QuantizedWeight:
    return QuantizedWeight(q.mode, q.data.to(device), q.scale.to(device), q.group_size)


@kernel
@pytest.mark.parametrize("mode", ["int8", "fp8", "int4"])
@pytest.mark.parametrize("n,k,split,block_k,group", [(128, 512, 1, 128, 128), (128, 512, 2, 256, 128),
                                                     (64, 1024, 4, 128, 256), (128, 512, 1, 256, 64)])
@pytest.mark.parametrize("rows", [1, 7, 33])
@pytest.mark.parametrize("bits", [False, True], ids=["convert", "bits"])
def test_quantized_weights_are_read_in_their_own_bytes(mode, n, k, split, block_k, group, rows, bits):
    """The kernel on a quantized weight computes x @ W'^T with W' the weight ``QuantizedWeight.dequantize`` gives
    (int8, fp8: per-row scales applied to the sums; int4: nibbles unpacked, scaled per row and group in the
    tile; groups smaller, equal to and larger than the reduction chunk), every split of the reduction."""
    device = KERNEL_DEVICES[0]
    dtype = torch.bfloat16 if device == "cuda" else torch.float16
    if device == "cuda":
        skinny.prepare(torch.device("cuda"))
        if mode == "fp8" and torch.cuda.get_device_capability() < (8, 9):
            pytest.skip("fp8 needs sm89+")
    g = torch.Generator().manual_seed(rows * n + k + group)
    q = on(quantize_weight(torch.randn(n, k, generator=g) * 0.05, mode, group), device)
    x = torch.randn(rows, k, generator=g).to(device, dtype)
    out = skinny.skinny_partials(x, q, skinny.SkinnyConfig(64, block_k, split, 2, 4), bits=bits)
    assert out.shape == ((rows, n) if split == 1 else (split, rows, n))
    assert out.dtype == (dtype if split == 1 else torch.float32)
    y = out.double() if split == 1 else out.sum(0).double()
    # int4 tiles hold W' in x's dtype (as dequantize(x.dtype)); int8/fp8 hold Q exactly and scale the sums
    w_ref = q.dequantize(dtype).double() if mode == "int4" else q.dequantize(torch.float64)
    ref = x.double() @ w_ref.T
    torch.testing.assert_close(y, ref, rtol=1e-2, atol=5e-3 * ref.abs().max().item())


@kernel
@pytest.mark.parametrize("n,k,split,block_k", [(128, 512, 1, 128), (128, 512, 2, 256), (64, 1024, 4, 128)])
@pytest.mark.parametrize("rows", [1, 7, 33])
def test_fp8_w8a8_meets_x_in_float8(n, k, split, block_k, rows):
    """fp8-w8a8: x quantized per row (``quantize_rows_fp8``) meets Q in an fp8 MMA; y = (x_q @ Q^T) s_x s, the
    formula ``scaled_mm_linear`` gives, from x in bf16/fp16 or from x_q and its scales, every split."""
    device = KERNEL_DEVICES[0]
    dtype = torch.bfloat16 if device == "cuda" else torch.float16
    if device == "cuda":
        skinny.prepare(torch.device("cuda"))
        if torch.cuda.get_device_capability() < (8, 9):
            pytest.skip("fp8 needs sm89+")
    g = torch.Generator().manual_seed(rows * n + k)
    q = on(quantize_weight(torch.randn(n, k, generator=g) * 0.05, "fp8-w8a8"), device)
    x = torch.randn(rows, k, generator=g).to(device, dtype)
    x_q, s_x = quantize_rows_fp8(x)
    ref = (x_q.double() @ q.data.double().T) * s_x.double() * q.scale.double().view(1, -1)
    config = skinny.SkinnyConfig(64, block_k, split, 2, 4)
    for out in (skinny.skinny_partials(x, q, config), skinny.skinny_partials(x_q, q, config, x_scale=s_x,
                                                                             out_dtype=dtype)):
        assert out.dtype == (dtype if split == 1 else torch.float32)
        y = out.double() if split == 1 else out.sum(0).double()
        torch.testing.assert_close(y, ref, rtol=1e-2, atol=1e-3 * ref.abs().max().item())
    # against the unquantized product: the two roundings of w8a8 (x and W to float8)
    exact = x.double() @ q.dequantize(torch.float64).T
    assert (y - exact).norm() / exact.norm() < 0.08


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_bit_trick_constants_give_exact_values(dtype):
    """The kernel's integer conversions (``BIT_CONSTANTS``), restated with torch's bit views: MAGIC | n is the float
    MAGIC_VALUE + n for every nibble; every fp8 e4m3 byte (subnormals included; not NaN) with its exponent and
    mantissa bits shifted into the 16-bit format is its value / FP8_FACTOR; int8 q + 128 = 16 hi + lo."""
    c = skinny.BIT_CONSTANTS[dtype]
    nibbles = torch.arange(16, dtype=torch.int16)
    assert torch.equal((nibbles | c["MAGIC"]).view(dtype).double(), c["MAGIC_VALUE"] + nibbles.double())
    codes = torch.arange(256, dtype=torch.int16)
    codes = codes[(codes & 0x7F) != 0x7F]  # e4m3fn's NaNs (never produced by quantize_weight)
    bits = ((codes & 0x80) << 8) | ((codes & 0x7F) << c["FP8_SHIFT"])
    fp8 = codes.to(torch.uint8).view(torch.float8_e4m3fn).double()
    assert torch.equal(bits.view(dtype).double() * c["FP8_FACTOR"], fp8)
    q = torch.arange(-128, 128, dtype=torch.int16)
    u = (q + 128) & 0xFF
    assert torch.equal(16 * (u >> 4) + (u & 0xF) - 128, q)
    # the int8 bias: 16 (B + hi) + (B + lo) = q + 128 + 17 B
    assert torch.equal(16 * ((u >> 4) + c["MAGIC_VALUE"]) + ((u & 0xF) + c["MAGIC_VALUE"]),
                       q + 128 + 17 * c["MAGIC_VALUE"])


def test_quantized_weights_the_kernel_cannot_tile_are_refused():
    x = torch.zeros(4, 688, dtype=torch.float16)
    q = quantize_weight(torch.randn(128, 688), "int4")  # group 86: neither a multiple nor a divisor of 128
    if skinny.triton is None:
        pytest.skip("needs Triton")
    with pytest.raises(ValueError, match="int4 weight \\[128, 688\\] \\(group 86\\) is not tiled"):
        skinny.skinny_partials(x, q, skinny.SkinnyConfig(64, 128, 1, 2, 4))
    w8a8 = quantize_weight(torch.randn(128, 256), "fp8-w8a8")
    with pytest.raises(ValueError, match="x_scale \\[M, 1\\] goes with a float8 x and an fp8-w8a8 weight only"):
        skinny.skinny_partials(torch.zeros(4, 256, dtype=torch.float16), w8a8, skinny.SkinnyConfig(64, 128, 1, 2, 4),
                               x_scale=torch.ones(3, 1))
    with pytest.raises(ValueError, match="reads int8, int4, fp8, fp8-w8a8 weights, not 'nf4'"):
        skinny.skinny_partials(torch.zeros(4, 344, dtype=torch.float16), QuantizedWeight("nf4", q.data, q.scale, 86),
                               skinny.SkinnyConfig(64, 128, 1, 2, 4))


def test_quantized_weights_on_the_cpu_take_their_own_linear():
    x = torch.randn(3, 256)
    for mode in ("int8", "int4", "fp8"):
        q = quantize_weight(torch.randn(128, 256), mode)
        assert not skinny.applies(x, q)
        assert torch.equal(skinny.fast_linear(x, q), q.linear(x))


def test_quantized_tiles_fit_the_shared_memory_of_sm90():
    """The quantized configurations' reduction chunks (module docstring of ``quantized_config``), and their staged
    tiles fit 227 KiB at every row count the kernel takes."""
    for (n, k), (mode, w_bytes) in itertools.product(skinny.TUNED, (("int8", 1.0), ("fp8", 1.0), ("int4", 0.5))):
        config = skinny.quantized_config(n, k, mode, 128)
        assert k % (config.split_k * config.block_k) == 0
        # int4 groups of 128: whole groups per chunk (the scale multiplies the sums); 1-byte weights: chunks of 256
        assert config.block_k == (128 if mode == "int4" else 256)
        for m in (1, 32, 64):
            fitted = skinny.fit_stages(config, m, skinny.SM90_SHARED_MEMORY, 2, w_bytes)
            need = fitted.stages * (fitted.block_n * w_bytes + skinny.block_rows(m) * 2) * fitted.block_k
            assert need <= skinny.SM90_SHARED_MEMORY and fitted.stages == config.stages


@cuda
@pytest.mark.parametrize("mode", ["int8", "fp8", "int4", "fp8-w8a8"])
def test_fast_linear_takes_the_kernel_for_quantized_weights(mode):
    skinny.prepare(torch.device("cuda"))
    if mode.startswith("fp8") and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs sm89+")
    q = on(quantize_weight(torch.randn(4096, 4096) * 0.02, mode), "cuda")
    x = torch.randn(2, 16, 4096, device="cuda").bfloat16()
    assert skinny.applies(x, q)
    y = skinny.fast_linear(x, q)
    assert y.shape == (2, 16, 4096) and y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), q.linear(x).float(), rtol=2e-2, atol=2e-2)
    assert not skinny.applies(torch.randn(65, 4096, device="cuda").bfloat16(), q)  # more rows than MAX_ROWS
