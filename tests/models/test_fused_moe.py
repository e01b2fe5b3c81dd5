"""The fused MoE path (unmask.models.fused_moe): its block layout everywhere, its kernels on CUDA or under the
Triton interpreter (``TRITON_INTERPRET=1`` with Triton installed: a CPU check of the kernels' indexing)."""

import os

import pytest
import torch

from unmask.models.fused_moe import expert_blocks, fused_available, max_blocks
from unmask.models.llada_moe import route, run_experts

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = ["cuda"] if torch.cuda.is_available() else (["cpu"] if INTERPRET else [])


def router_logits(N: int, E: int, case: str, generator: torch.Generator) -> torch.Tensor:
    """Router logits [N, E] of a routing case: random, one expert for all, half the experts empty, skewed."""
    logits = torch.randn(N, E, generator=generator)
    if case == "one_expert":
        logits[:, 3] = 100.0
    elif case == "empty_experts":
        logits[:, : E // 2] = -100.0
    elif case == "skewed":
        logits[:, :2] += 3.0
    return logits


@pytest.mark.parametrize("case", ["random", "one_expert", "empty_experts", "skewed"])
@pytest.mark.parametrize(("N", "E", "k", "block_m"), [(1, 8, 2, 16), (32, 64, 8, 16), (37, 8, 3, 4), (300, 16, 4, 16)])
def test_expert_blocks_cover_every_pair_once_in_expert_order(case, N, E, k, block_m):
    experts = route(router_logits(N, E, case, torch.Generator().manual_seed(0)), min(k, E))[1]
    k = experts.shape[1]
    blocks = expert_blocks(experts, E, block_m)
    flat = experts.reshape(-1)
    counts = torch.bincount(flat, minlength=E)
    used = int(((counts + block_m - 1) // block_m).sum())
    assert blocks.num_blocks == max_blocks(N * k, E, block_m) >= used
    assert (blocks.block_expert[used:] == E).all()
    assert (blocks.pair_ids[used * block_m:] == N * k).all()
    rows = blocks.pair_ids[: used * block_m].view(used, block_m).long()
    real = rows < N * k
    assert sorted(rows[real].tolist()) == list(range(N * k))  # every pair exactly once
    for b in range(used):  # a block holds pairs of its own expert, first rows first, ascending pair index
        pairs = rows[b][real[b]]
        assert (flat[pairs] == blocks.block_expert[b]).all()
        assert real[b].tolist() == sorted(real[b].tolist(), reverse=True)
        assert pairs.tolist() == sorted(pairs.tolist())
    assert blocks.block_expert[:used].tolist() == sorted(blocks.block_expert[:used].tolist())


@pytest.mark.skipif(not DEVICES, reason="needs CUDA or the Triton interpreter (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["random", "one_expert", "empty_experts", "skewed"])
@pytest.mark.parametrize(("N", "d", "f", "E", "k"), [(32, 256, 128, 64, 8), (5, 200, 96, 8, 2), (130, 128, 64, 16, 4)])
def test_fused_path_equals_loop_path(device, case, N, d, f, E, k):
    """Every pair's expert output and the weighted sum equal the per-expert loop (ragged d and F exercise
    the masks; empty and overfull experts the block layout)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, d, generator=g).to(device, dtype)
    gate_up = (torch.randn(E, 2 * f, d, generator=g) / d**0.5).to(device, dtype)
    down = (torch.randn(E, d, f, generator=g) / f**0.5).to(device, dtype)
    weights, experts = route(router_logits(N, E, case, g).to(device), k)
    assert fused_available(x)
    fused = run_experts(x, weights, experts, gate_up, down, path="fused")
    loop = run_experts(x, weights, experts, gate_up, down, path="loop")
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, loop, **tol)
    if dtype == torch.bfloat16:  # most elements equal to the last bit: only reduction order differs
        assert (fused == loop).float().mean() > 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_fused_path_replays_in_a_cuda_graph():
    """Static shapes and no host sync: captured once, replayed on new tokens and a new routing."""
    torch.manual_seed(0)
    N, d, f, E, k = 32, 256, 128, 64, 8
    x = torch.randn(N, d, device="cuda", dtype=torch.bfloat16)
    gate_up = torch.randn(E, 2 * f, d, device="cuda", dtype=torch.bfloat16) / d**0.5
    down = torch.randn(E, d, f, device="cuda", dtype=torch.bfloat16) / f**0.5
    logits = torch.randn(N, E, device="cuda")
    run = lambda: run_experts(x, *route(logits, k), gate_up, down, path="fused")  # noqa: E731
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        run()  # compile the kernels outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    x.copy_(torch.randn_like(x))
    logits.copy_(torch.randn_like(logits))
    graph.replay()
    torch.testing.assert_close(out, run(), rtol=0, atol=0)



@pytest.mark.skipif(not DEVICES, reason="needs CUDA or the Triton interpreter (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["llada-moe", "llada2"])
def test_models_give_the_same_logits_on_the_fused_path(tmp_path, device, family):
    """A whole forward of each MoE family (LLaDA2 with its grouped routing and float32 slot sum) agrees with
    the loop path; bf16 on CUDA (where the two differ only in reduction order), float32 under the interpreter."""
    from llada2_fixtures import random_llada2_weights, tiny_llada2_config
    from llada_fixtures import write_checkpoint
    from llada_moe_fixtures import random_moe_weights, tiny_moe_config

    from unmask.models import load_model

    config, weights = ((tiny_moe_config(), random_moe_weights) if family == "llada-moe"
                       else (tiny_llada2_config(), random_llada2_weights))
    path = write_checkpoint(tmp_path / "m", config, weights(config))
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = load_model(path, dtype=dtype, device=device)
    ids = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(0)).to(device)
    loop = model.set_expert_path("loop")(ids).float()
    fused = model.set_expert_path("fused")(ids).float()
    tol = dict(rtol=3e-2, atol=3e-2) if dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused, loop, **tol)
    assert (fused.argmax(-1) == loop.argmax(-1)).float().mean() > 0.95
