"""unmask beside NVlabs Fast-dLLM's own ``generate*`` functions, same weights, same process, one GPU.

Fast-dLLM's code is not part of unmask: fetch it yourself (github.com/NVlabs/Fast-dLLM) and pass the
checkout with ``--fastdllm``; it needs ``transformers`` and ``einops``. Both models share one set of
random weights at the LLaDA-8B shape (speed does not depend on weight values): Fast-dLLM's
``LLaDAModelLM`` is built on the meta device and assigned unmask's tensors, so no second copy exists.

For batch 1, one token per step (``steps = gen_length``, LLaDA's schedule), per cache mode (Fast-dLLM
``generate`` / ``generate_with_prefix_cache`` / ``generate_with_dual_cache``), it reports ms per
forward of each side and whether the tokens are equal: Fast-dLLM's against unmask's eager path with
the checkpoint's separate projections (the reference arithmetic), with fused projections, with the
eager kernels captured in CUDA graphs (``compile="exact"``) and with the fused CUDA-graph step
(``compile="fused"``, the default on a GPU).

    python benchmarks/fastdllm_side_by_side.py --fastdllm PATH/Fast-dLLM --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from unmask.decoding import TopK, decode
from unmask.models.config import LLADA_8B
from unmask.models.llada import LLaDAModel
from unmask.models.loading import random_model

FUNCTIONS = {"none": "generate", "prefix": "generate_with_prefix_cache", "dual": "generate_with_dual_cache"}


def fastdllm_model(folder: Path, ours: LLaDAModel):
    sys.path.insert(0, str(folder / "llada"))
    from model.configuration_llada import LLaDAConfig  # Fast-dLLM's
    from model.modeling_llada import LLaDAModel as FastModel
    from model.modeling_llada import LLaDAModelLM, create_model_config_from_pretrained_config

    config = LLaDAConfig(**ours.config.to_dict())
    # transformers 5 no longer keeps these generic fields on a custom config; Fast-dLLM reads them
    for name, value in (("use_cache", False), ("use_return_dict", True), ("output_hidden_states", False)):
        if not hasattr(config, name):
            setattr(config, name, value)
    model_config = create_model_config_from_pretrained_config(config)
    model_config.init_device = "meta"
    theirs = LLaDAModelLM(config, model=FastModel(model_config, init_params=False))
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False, assign=True)
    left = [n for n, t in list(theirs.named_parameters()) + list(theirs.named_buffers()) if t.is_meta]
    if unexpected or left:
        raise RuntimeError(f"weights do not map onto Fast-dLLM's model: unexpected {unexpected[:4]}, meta {left[:4]}")
    return theirs.eval()


def timed_run(fn):
    torch.cuda.synchronize()
    tic = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - tic) * 1e3


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    diff = (a != b).flatten().nonzero()
    return None if diff.numel() == 0 else int(diff[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fastdllm", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--prompt-length", type=int, default=256)
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--cache", action="append", default=None)
    args = parser.parse_args()
    P, G, BL = args.prompt_length, args.gen_length, args.block_length
    device = torch.device("cuda")
    separate = random_model(LLADA_8B, dtype=torch.bfloat16, device=device)  # the checkpoint's layout
    theirs = fastdllm_model(args.fastdllm, separate)
    import generate as fastdllm_generate  # Fast-dLLM's llada/generate.py

    fused = LLaDAModel(LLADA_8B)
    fused.load_state_dict(separate.state_dict(), assign=True)
    fused = fused.eval().requires_grad_(False).fuse_projections()  # one fused copy of q/k/v and gate/up
    mask_id = LLADA_8B.mask_token_id
    seeded = torch.Generator(device).manual_seed(0)
    prompt = torch.randint(0, LLADA_8B.vocab_size, (1, P), device=device, generator=seeded)
    rows = []
    for cache in args.cache or ["none", "prefix", "dual"]:
        fn = getattr(fastdllm_generate, FUNCTIONS[cache])
        with torch.no_grad():
            fn(theirs, prompt, steps=BL, gen_length=BL, block_length=BL, mask_id=mask_id)  # warm-up
            (ref, ref_nfe), ref_ms = timed_run(lambda fn=fn: fn(theirs, prompt, steps=G, gen_length=G,
                                                                block_length=BL, mask_id=mask_id))
        row = {"cache": cache, "fastdllm_function": FUNCTIONS[cache], "fastdllm_ms_per_forward": ref_ms / ref_nfe,
               "fastdllm_nfe": ref_nfe}
        for name, model, compile in (("separate_eager", separate, False), ("fused_eager", fused, False),
                                     ("exact_graph", fused, "exact"), ("fused_graph", fused, "fused")):
            def ours(model=model, compile=compile, cache=cache):
                return decode(model, prompt, TopK(BL), mask_id=mask_id, gen_length=G, block_length=BL, cache=cache,
                              early_stop=False, compile=compile)
            ours()  # warm-up (compiles and captures for the graph path)
            out, ms = timed_run(ours)
            row[f"{name}_ms_per_forward"] = ms / out.nfe
            row[f"{name}_tokens_equal_fastdllm"] = bool(torch.equal(out.sequences, ref))
            row[f"{name}_first_difference"] = first_difference(out.sequences[:, P:], ref[:, P:])
            row[f"{name}_nfe"] = out.nfe
        row["speedup_graph_vs_fastdllm"] = row["fastdllm_ms_per_forward"] / row["fused_graph_ms_per_forward"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fastdllm_side_by_side.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name(device), "torch": torch.__version__, "prompt_length": P,
         "gen_length": G, "block_length": BL, "rows": rows}, indent=2))
    print("\n| cache | Fast-dLLM ms/forward | unmask eager | exact | fused | speedup (fused) "
          "| tokens equal to Fast-dLLM (separate/fused eager/exact/fused) |")
    for r in rows:
        print(f"| {r['cache']} | {r['fastdllm_ms_per_forward']:.2f} | {r['fused_eager_ms_per_forward']:.2f} | "
              f"{r['exact_graph_ms_per_forward']:.2f} | {r['fused_graph_ms_per_forward']:.2f} | "
              f"{r['speedup_graph_vs_fastdllm']:.2f}x | {r['separate_eager_tokens_equal_fastdllm']}/"
              f"{r['fused_eager_tokens_equal_fastdllm']}/{r['exact_graph_tokens_equal_fastdllm']}/"
              f"{r['fused_graph_tokens_equal_fastdllm']} |")


if __name__ == "__main__":
    main()
