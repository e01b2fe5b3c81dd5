"""Do the compile modes change what a trained model answers? Compare two ``unmask eval`` folders.

Per (spec, task, example) it reports whether the completions are identical, and each folder's accuracy.

    unmask eval -s topk -t math -n 128 --compile off -o A; unmask eval ... --compile fused -o B
    python benchmarks/compile_agreement.py A B
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def load(folder: Path) -> dict[tuple, dict]:
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line.strip()]
    return {(r["spec"], r["task"], r["id"]): r for r in records}


def main() -> None:
    a, b = (load(Path(p)) for p in sys.argv[1:3])
    groups: dict[tuple, list] = defaultdict(list)
    for key in sorted(set(a) & set(b)):
        groups[key[:2]].append((a[key]["completion"] == b[key]["completion"], a[key]["score"], b[key]["score"]))
    print(f"| spec | task | n | identical completions | accuracy {sys.argv[1]} | accuracy {sys.argv[2]} |")
    print("|---|---|---:|---:|---:|---:|")
    for (spec, task), rows in groups.items():
        n = len(rows)
        print(f"| {spec} | {task} | {n} | {sum(r[0] for r in rows) / n:.3f} | {sum(r[1] for r in rows) / n:.3f} | "
              f"{sum(r[2] for r in rows) / n:.3f} |")


if __name__ == "__main__":
    main()
