"""Where the math answers of an eval run go wrong: arithmetic slips vs structure (extra/missing steps).

Reads ``records.jsonl`` of ``unmask eval`` (task ``math``, synthetic test split) and reports, per spec:
accuracy, the share of equations ``a op b = c`` in the completions whose arithmetic is wrong, and
the distribution of (completion lines - reference lines), then the wrong share per operation and
operand digits (``--by-op``: e.g. ``a * b, 2x1 digits``), where the slips sit.

    python benchmarks/math_errors.py runs/eval/records.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from unmask.tasks.arithmetic import LINE_RE


def check(a: int, op: str, b: int, c: int) -> bool:
    if op == "/":
        return b != 0 and a == b * c
    return {"+": a + b, "-": a - b, "*": a * b}[op] == c


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("records", type=Path)
    ap.add_argument("--by-op", action="store_true", help="Also tabulate wrong equations per operation and digits.")
    args = ap.parse_args(argv)

    from unmask.tasks.registry import get_task

    task = get_task("math")
    records = [json.loads(line) for line in args.records.read_text().splitlines() if line.strip()]
    records = [r for r in records if r["task"] == "math"]
    if not records:
        raise SystemExit(f"{args.records}: no math records")
    examples = {e.id: e for e in task.examples("test", max(r["index"] for r in records) + 1, 0)}
    for spec in dict.fromkeys(r["spec"] for r in records):
        rows = [r for r in records if r["spec"] == spec and r["id"] in examples]
        equations = wrong = 0
        line_diff: collections.Counter = collections.Counter()
        by_op: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])  # kind -> [equations, wrong]
        for r in rows:
            for m in LINE_RE.finditer(r["completion"]):
                bad = not check(int(m[1]), m[2], int(m[3]), int(m[4]))
                equations += 1
                wrong += bad
                kind = by_op[f"a {m[2]} b, {len(m[1])}x{len(m[3])} digits"]
                kind[0] += 1
                kind[1] += bad
            ref = examples[r["id"]].target.strip().split("\n")
            line_diff[len(r["completion"].strip().split("\n")) - len(ref)] += 1
        acc = sum(r["score"] for r in rows) / len(rows)
        diffs = ", ".join(f"{d:+d}: {n / len(rows):.0%}" for d, n in sorted(line_diff.items()))
        print(f"{spec}: n={len(rows)} accuracy {acc:.3f}; equations {equations}, arithmetic wrong "
              f"{wrong / max(1, equations):.1%}; lines vs reference {{{diffs}}}")
        if args.by_op:
            print("| operation | equations | wrong |\n|---|---:|---:|")
            for kind, (n, bad) in sorted(by_op.items()):
                print(f"| `{kind}` | {n} | {bad / n:.1%} |")


if __name__ == "__main__":
    main()
