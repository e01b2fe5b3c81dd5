"""Can the model *compute* the result of an equation, or only copy it? A teacher-forced probe.

For each equation ``a op b = c`` in the reference answers of the synthetic math test split, the
canvas is the prompt + reference answer + end-of-text padding (``--gen-length``), and two
noisings are scored by one forward each (greedy argmax, all digits of ``c`` must be right):

- ``result only``: just the digits of ``c`` are masked; later lines (which reuse ``c``) stay visible,
  so copying from the right is enough;
- ``result + rest``: ``c`` and everything after it are masked, as in semi-autoregressive block
  decoding, where the left context is all the model has.

A large gap means the model learned to copy rather than to compute (what ``unmask train --semi-ar``
addresses).

    python benchmarks/math_probe.py [-m MODEL] [-n 128]
"""

from __future__ import annotations

import argparse

import torch

from unmask.tasks.arithmetic import LINE_RE


def probe(model_path: str | None, n: int, gen_length: int, device: str | None, batch: int = 64) -> dict[str, float]:
    import unmask
    from unmask.tasks.registry import get_task

    lm = unmask.load(model_path, device=device) if model_path else unmask.load(device=device)
    tok, model = lm.tokenizer, lm.model
    cases: list[tuple[list[int], list[int]]] = []  # (canvas, token positions of c)
    for ex in get_task("math").examples("test", n, 0):
        prompt = tok.apply_chat_template([{"role": "user", "content": ex.prompt}])
        p_len = len(tok.encode(prompt))
        enc = tok.tokenizer.encode(prompt + ex.target, add_special_tokens=False)
        ids = enc.ids + [tok.eot_id] + [tok.eos_id] * max(0, p_len + gen_length - len(enc.ids) - 1)
        for m in LINE_RE.finditer(ex.target):
            start, end = len(prompt) + m.start(4), len(prompt) + m.end(4)
            positions = [i for i, (a, b) in enumerate(enc.offsets) if a >= start and b <= end]
            cases.append((ids, positions))
    right = {"result only": 0, "result + rest": 0}
    for lo in range(0, len(cases), batch):
        chunk = cases[lo : lo + batch]
        width = max(len(ids) for ids, _ in chunk)
        x0 = torch.full((len(chunk), width), tok.eos_id, dtype=torch.long)
        for r, (ids, _) in enumerate(chunk):
            x0[r, : len(ids)] = torch.tensor(ids)
        x0 = x0.to(lm.device)
        for mode in right:
            x = x0.clone()
            for r, (_, pos) in enumerate(chunk):
                if mode == "result only":
                    x[r, pos] = lm.mask_id
                else:
                    x[r, pos[0] :] = lm.mask_id
            with torch.no_grad():
                pred = model(x).argmax(-1)
            for r, (_, pos) in enumerate(chunk):
                right[mode] += bool((pred[r, pos] == x0[r, pos]).all())
    return {mode: count / len(cases) for mode, count in right.items()} | {"equations": len(cases)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=None, help="model folder or hub id (default: the embedded model)")
    ap.add_argument("-n", type=int, default=128, help="test problems")
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    result = probe(args.model, args.n, args.gen_length, args.device)
    print(f"{args.model or 'embedded'}: {result['equations']} equations; result right when only the result is "
          f"masked {result['result only']:.3f}, when the result and the rest are masked {result['result + rest']:.3f}")


if __name__ == "__main__":
    main()
