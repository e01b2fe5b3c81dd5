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
import itertools
import json
from pathlib import Path

import numpy as np

from unmask.eval.frontier import bootstrap_counts, percentile_ci, resampled_mean, resampled_ratio
from unmask.eval.records import read_run_records

DEFAULT_PAIRS = [
    ("threshold:0.9", "topk"),  # Fast-dLLM's threshold rule against LLaDA's baseline
    ("frechet:0.25", "threshold:0.9"),  # Fast-dLLM++'s setting against Fast-dLLM's
    ("frechet:0.5", "threshold:0.9"),
    ("threshold:0.9+credit", "threshold:0.9"),  # what CreditDecoding adds to a rule
    ("threshold:0.95+credit", "threshold:0.95"),
    ("threshold:0.95+credit", "topk"),  # CreditDecoding's recipe against LLaDA's baseline
]


def load(run: Path, task: str | None = None) -> dict[str, dict[str, tuple[float, int, int]]]:
    """spec -> example id -> (score, nfe, tokens) from the run's records (every rank's file, as the sweep);
    ``task``: only that task's records."""
    by: dict[str, dict[str, tuple[float, int, int]]] = {}
    for r in read_run_records(run):
        if task is None or r.get("task") == task:
            by.setdefault(r["spec"], {})[r["id"]] = (r["score"], r["nfe"], r["tokens"])
    return by


def split_pair(text: str) -> tuple[str, str]:
    """``A,B`` at the comma outside parentheses (a spec may hold ``partial(budget=16,every=2)``)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            return text[:i], text[i + 1:]
    raise SystemExit(f"--pair needs A,B: got {text!r}")


def compare(a: np.ndarray, b: np.ndarray, samples: int, seed: int, level: float = 0.95) -> dict:
    """``a``, ``b`` [n, 3] (score, nfe, tokens) of the same examples: A - B accuracy and B's NFE over A's,
    with the sweep's paired percentile bootstrap (``eval/frontier.py``)."""
    counts = bootstrap_counts(len(a), samples, seed)
    acc = resampled_mean(counts, np.stack([a[:, 0], b[:, 0]]))  # [samples, 2]
    ratio = resampled_ratio(counts, b[None, :, 1], a[None, :, 1])[:, 0]
    (diff_lo, ratio_lo), (diff_hi, ratio_hi) = percentile_ci(np.stack([acc[:, 0] - acc[:, 1], ratio], -1), level)
    return {"n": len(a), "acc_a": a[:, 0].mean(), "acc_b": b[:, 0].mean(), "nfe_a": a[:, 1].mean(),
            "nfe_b": b[:, 1].mean(), "acc_diff": a[:, 0].mean() - b[:, 0].mean(), "acc_diff_ci": [diff_lo, diff_hi],
            "nfe_ratio": b[:, 1].sum() / a[:, 1].sum(), "nfe_ratio_ci": [ratio_lo, ratio_hi],
            "tokens_per_forward_a": a[:, 2].sum() / a[:, 1].sum()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="sweep output folders (with records.jsonl)")
    parser.add_argument("--pair", action="append", default=None,
                        help="A,B (repeat; a comma inside a spec's parentheses is kept); default: the claims' pairs")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", action="append", default=None,
                        help="compare per task (repeat); default: all of a run's records together")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    pairs = [split_pair(p) for p in args.pair] if args.pair else DEFAULT_PAIRS
    out = []
    for run, task in itertools.product(args.runs, args.task or [None]):
        by = load(run, task)
        for a, b in pairs:
            if a not in by or b not in by:
                print(f"{run.name}: {a} or {b} not swept, skipped")
                continue
            ids = sorted(set(by[a]) & set(by[b]))
            a_rows, b_rows = (np.array([by[s][i] for i in ids], dtype=float) for s in (a, b))
            stats = compare(a_rows, b_rows, args.samples, args.seed)
            row = {"run": run.name, "task": task, "a": a, "b": b,
                   **{k: np.asarray(v).tolist() for k, v in stats.items()}}
            out.append(row)
            print(f"{run.name:22} {task or '':5} {a:22} vs {b:16}: acc {row['acc_a']:.3f} vs {row['acc_b']:.3f}, diff "
                  f"{row['acc_diff'] * 100:+.1f} pts [{row['acc_diff_ci'][0] * 100:+.1f}, "
                  f"{row['acc_diff_ci'][1] * 100:+.1f}]; NFE {row['nfe_a']:.1f} vs {row['nfe_b']:.1f}: "
                  f"{row['nfe_ratio']:.2f}x fewer [{row['nfe_ratio_ci'][0]:.2f}, {row['nfe_ratio_ci'][1]:.2f}]; "
                  f"tokens/forward {row['tokens_per_forward_a']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
