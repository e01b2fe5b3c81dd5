"""Per-step cost of UDS selection beside a training step, one process alone on the device.

Times, for a model folder (default: the embedded testbed model) at batch ``--batch`` x ``--seq-len``:
one training step (bf16 autocast forward + backward + AdamW), the no-grad scoring forward over a
candidate batch of ``batch / budget`` rows, and ``UDSSelector.select`` on its logits (nuclear norms +
JL embeddings + buffer distances + top-k; the buffer filled first), each the median of 10 calls
(``unmask.eval.speed.timed``). Random token ids: the cost does not depend on them.

    python benchmarks/uds_overhead.py --budgets 0.25 0.1
"""

from __future__ import annotations

import argparse

import torch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="model folder (default: the embedded testbed model)")
    ap.add_argument("--batch", type=int, default=64, help="rows trained per step")
    ap.add_argument("--seq-len", type=int, default=121, help="canvas length (the experiment's mean trimmed width)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.1])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    from unmask.api import embedded_model_path
    from unmask.eval.speed import timed
    from unmask.models.loading import load_model
    from unmask.train.selection import Candidates, UDSSelector

    device = torch.device(args.device)
    model = load_model(args.model or embedded_model_path(), device=device).float().requires_grad_(True).train()
    vocab, L = model.config.vocab_size, args.seq_len
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
    print(f"{device}: train step {args.batch} x {L}: {step_ms:.1f} ms")
    for budget in args.budgets:
        n = round(args.batch / budget)
        cand = torch.randint(3, vocab, (n, L), device=device)

        def score_forward(cand=cand) -> torch.Tensor:
            with torch.no_grad(), autocast:
                return model(cand)

        logits = score_forward()
        masked = torch.rand(n, L, device=device) < 0.5
        selector = UDSSelector(vocab, L)
        batch = Candidates(logits, masked, None, cand, torch.zeros(n, dtype=torch.long, device=device))
        for _ in range(20):  # fill part of the buffer, as after a few steps
            selector.select(batch, args.batch)
        fwd_ms = timed(score_forward, device)
        sel_ms = timed(lambda s=selector, b=batch: s.select(b, args.batch), device)
        print(f"budget {budget:.0%} ({n} candidates): scoring forward {fwd_ms:.1f} ms ({fwd_ms / step_ms:.2f} x step), "
              f"UDS selection {sel_ms:.1f} ms ({sel_ms / step_ms:.2f} x step)")


if __name__ == "__main__":
    main()
