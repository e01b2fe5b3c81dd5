"""Per-step cost of UDS selection beside a training step, one process alone on the device.

Times, for a model folder (default: the embedded testbed model) at batch ``--batch`` x ``--seq-len``:
one training step (bf16 autocast forward + backward + AdamW), the no-grad scoring forward over a
candidate batch of ``batch / budget`` rows, and the selection on its logits, each the median of 10 calls
(``unmask.eval.speed.timed``), for ``uds_legacy`` (nuclear norms + JL embeddings + buffer distances +
top-k) and ``uds`` (the shared scoring noise draw, then the same scores on per-token matrices and
``batch`` greedy picks); the buffer is filled first. Random token ids: the cost does not depend on them.

    python benchmarks/uds_overhead.py --budgets 0.25 0.1 --json overhead.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="model folder (default: the embedded testbed model)")
    ap.add_argument("--batch", type=int, default=64, help="rows trained per step")
    ap.add_argument("--seq-len", type=int, default=121, help="canvas length (the experiment's mean trimmed width)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.1])
    ap.add_argument("--selectors", nargs="+", default=["uds_legacy", "uds"], choices=["uds_legacy", "uds"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)

    from unmask.api import embedded_model_path
    from unmask.eval.speed import timed
    from unmask.models.loading import load_model
    from unmask.train.selection import Candidates, make_selector

    device = torch.device(args.device)
    model = load_model(args.model or embedded_model_path(), device=device).float().requires_grad_(True).train()
    vocab, L, mask_id = model.config.vocab_size, args.seq_len, model.config.mask_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    x = torch.randint(3, vocab, (args.batch, L), device=device)

    def train_step() -> None:
        with autocast:
            loss = model(x).float().logsumexp(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step_ms = timed(train_step, device)
    out: dict = {"device": str(device), "batch": args.batch, "seq_len": L, "train_step_ms": step_ms, "budgets": []}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    print(f"{device}: train step {args.batch} x {L}: {step_ms:.1f} ms")
    for budget in args.budgets:
        n = round(args.batch / budget)
        cand = torch.randint(3, vocab, (n, L), device=device)
        plen = torch.full((n,), L // 4, dtype=torch.long, device=device)

        def score_forward(cand=cand) -> torch.Tensor:
            with torch.no_grad(), autocast:
                return model(cand)

        logits = score_forward()
        fwd_ms = timed(score_forward, device)
        rec = {"budget": budget, "candidates": n, "score_forward_ms": fwd_ms}
        for name in args.selectors:
            selector = make_selector(name, vocab_size=vocab, max_len=L)
            if name == "uds":
                masked = selector.scoring_noise(cand, plen, mask_id)[1]
            else:
                masked = (torch.rand(n, L, device=device) < 0.5) & (torch.arange(L, device=device) >= L // 4)
            batch = Candidates(logits, masked, None, cand, plen)
            for _ in range(20):  # fill part of the buffer, as after a few steps
                selector.select(batch, args.batch)

            def select(s=selector, b=batch, name=name, cand=cand, plen=plen) -> None:
                if name == "uds":
                    s.scoring_noise(cand, plen, mask_id)  # part of this selector's per-step cost
                s.select(b, args.batch)

            sel_ms = timed(select, device)
            rec[f"{name}_select_ms"] = sel_ms
            print(
                f"budget {budget:.0%} ({n} candidates): scoring forward {fwd_ms:.1f} ms ({fwd_ms / step_ms:.2f} x "
                f"step), {name} selection {sel_ms:.1f} ms ({sel_ms / step_ms:.2f} x step)"
            )
        out["budgets"].append(rec)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
