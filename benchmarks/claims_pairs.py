"""Paired comparisons behind docs/benchmarks/claims.md, from the records of `unmask sweep` runs.

For each pair of specs (A, B) decoded on the same examples: the accuracy difference A - B in points and
B's mean NFE over A's (how many times fewer forwards A needs), each with a paired bootstrap interval over
the examples, and A's answer tokens per forward (sum of tokens up to end-of-text / sum of forwards, the
definition behind "LLaDA-8B commits about 3.2 tokens per forward on GSM8K": Fast-dLLM++'s forwards summed
over the problems).

    python benchmarks/claims_pairs.py RUN_DIR [RUN_DIR ...] [--pair A,B ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

DEFAULT_PAIRS = [
    ("threshold:0.9", "topk"),  # Fast-dLLM's threshold rule against LLaDA's baseline
    ("frechet:0.25", "threshold:0.9"),  # Fast-dLLM++'s setting against Fast-dLLM's
    ("frechet:0.5", "threshold:0.9"),
    ("threshold:0.9+credit", "threshold:0.9"),  # what CreditDecoding adds to a rule
    ("threshold:0.95+credit", "threshold:0.95"),
    ("threshold:0.95+credit", "topk"),  # CreditDecoding's recipe against LLaDA's baseline
]


def load(run: Path) -> dict[str, dict[str, tuple[float, int, int]]]:
    """spec -> example id -> (score, nfe, tokens) from ``run/records.jsonl``."""
    by: dict[str, dict[str, tuple[float, int, int]]] = {}
    with open(run / "records.jsonl") as f:
        for line in f:
            r = json.loads(line)
            by.setdefault(r["spec"], {})[r["id"]] = (r["score"], r["nfe"], r["tokens"])
    return by


def compare(a: list[tuple[float, int, int]], b: list[tuple[float, int, int]], samples: int, seed: int,
            level: float = 0.95) -> dict:
    n = len(a)
    rng = random.Random(seed)

    def stat(idx: list[int]) -> tuple[float, float]:
        diff = (sum(a[i][0] for i in idx) - sum(b[i][0] for i in idx)) / n
        return diff, sum(b[i][1] for i in idx) / sum(a[i][1] for i in idx)

    point = stat(list(range(n)))
    boots = [stat([rng.randrange(n) for _ in range(n)]) for _ in range(samples)]
    lo, hi = int((1 - level) / 2 * samples), int((1 + level) / 2 * samples) - 1
    diffs, ratios = sorted(x[0] for x in boots), sorted(x[1] for x in boots)
    return {"n": n, "acc_a": sum(x[0] for x in a) / n, "acc_b": sum(x[0] for x in b) / n,
            "nfe_a": sum(x[1] for x in a) / n, "nfe_b": sum(x[1] for x in b) / n,
            "acc_diff": point[0], "acc_diff_ci": [diffs[lo], diffs[hi]],
            "nfe_ratio": point[1], "nfe_ratio_ci": [ratios[lo], ratios[hi]],
            "tokens_per_forward_a": sum(x[2] for x in a) / sum(x[1] for x in a)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="sweep output folders (with records.jsonl)")
    parser.add_argument("--pair", action="append", default=None, help="A,B (repeat); default: the claims' pairs")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    pairs = [tuple(p.split(",", 1)) for p in args.pair] if args.pair else DEFAULT_PAIRS
    out = []
    for run in args.runs:
        by = load(run)
        for a, b in pairs:
            if a not in by or b not in by:
                print(f"{run.name}: {a} or {b} not swept, skipped")
                continue
            ids = sorted(set(by[a]) & set(by[b]))
            row = {"run": run.name, "a": a, "b": b,
                   **compare([by[a][i] for i in ids], [by[b][i] for i in ids], args.samples, args.seed)}
            out.append(row)
            print(f"{run.name:22} {a:22} vs {b:16}: acc {row['acc_a']:.3f} vs {row['acc_b']:.3f}, diff "
                  f"{row['acc_diff'] * 100:+.1f} pts [{row['acc_diff_ci'][0] * 100:+.1f}, "
                  f"{row['acc_diff_ci'][1] * 100:+.1f}]; NFE {row['nfe_a']:.1f} vs {row['nfe_b']:.1f}: "
                  f"{row['nfe_ratio']:.2f}x fewer [{row['nfe_ratio_ci'][0]:.2f}, {row['nfe_ratio_ci'][1]:.2f}]; "
                  f"tokens/forward {row['tokens_per_forward_a']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
