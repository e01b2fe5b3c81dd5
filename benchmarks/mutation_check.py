"""Mutation check (issue 31): do the decoding tests notice one-line bugs in the decoder?

A fixed list of one-line mutations of ``src/unmask/decoding/`` (engine, loop, credit, scorers, policies),
``src/unmask/models/cache.py`` and ``src/unmask/cli.py``. For each mutation the script copies ``src/`` into a
fresh temporary directory (``tempfile.mkdtemp``; the working tree's ``src/`` is never touched), replaces the one
line there (the original line must occur exactly once, else the script stops), and runs the relevant test files
against the copy (``PYTHONPATH=<copy>/src`` prepended; the script checks once that the copy is what gets
imported)::

    OMP_NUM_THREADS=1 python -m pytest -x -q -p no:cacheprovider <tests>

A mutant is *killed* when the tests fail, *survived* when they pass. Run from the repository root::

    python benchmarks/mutation_check.py --out docs/benchmarks/mutation.json [--only SUBSTRING]

``--only`` keeps the mutations whose file, original or mutant line contains SUBSTRING. The JSON holds
``{"mutations": N, "survived": M, "rows": [{file, original, mutant, tests, killed, seconds, note}]}``.

Target: M = 0, or every survivor shown to be an equivalent mutant (same behaviour for every input) in its
``note``. A survivor without such a note is a gap in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 240  # a mutant that hangs the decode (no commit, endless loop) counts as killed

POLICIES = "tests/decoding/test_policies.py"
REF_POLICIES = "tests/decoding/test_reference_policies.py"
REF_EQ = "tests/decoding/test_reference_equivalence.py"
LOOP = "tests/decoding/test_loop.py"
SCORERS = "tests/decoding/test_scorers.py"
CREDIT = "tests/decoding/test_credit.py"
CLI = "tests/test_cli.py"


@dataclass
class Mutation:
    file: str  # relative to src/unmask
    original: str  # one whole line, stripped of its indentation
    mutant: str  # its replacement (the indentation is kept)
    tests: list[str]
    note: str = ""
    extra: list[str] = field(default_factory=list)  # further pytest arguments (-k ...)


D = "decoding/"
P = "decoding/policies/"
MUTATIONS: list[Mutation] = [
    # ---- policies
    Mutation(P + "frechet.py", "admitted = (score > self.margin) & valid",
             "admitted = (score >= self.margin) & valid", [POLICIES, REF_POLICIES]),
    Mutation(P + "frechet.py", "admitted[:, 0] = True  # the reference counts admitted n (not a prefix scan); "
             "G_n is monotone anyway", "pass", [POLICIES, REF_POLICIES]),
    Mutation(P + "frechet.py", "score = finite.cumsum(dim=-1) - ranks.to(values.dtype) - (1 - finite)  "
             "# L_n - U_n, n = rank + 1", "score = finite.cumsum(dim=-1) - ranks.to(values.dtype)",
             [POLICIES, REF_POLICIES]),
    Mutation(P + "factor.py", "passes = values >= 1 - self.f / (m + 1)", "passes = values > 1 - self.f / (m + 1)",
             [POLICIES, REF_POLICIES]),
    Mutation(P + "factor.py", "passes[:, 0] = True", "pass", [POLICIES, REF_POLICIES]),
    Mutation(P + "factor.py", "n = torch.where(n == count - 1, count, n)", "n = torch.where(n == count, count, n)",
             [POLICIES, REF_POLICIES]),
    Mutation(P + "threshold.py", "return masked & ((confidence >= self.tau) | top1)",
             "return masked & ((confidence > self.tau) | top1)", [POLICIES, REF_POLICIES]),
    Mutation(P + "threshold.py", "return masked & ((confidence >= self.tau) | top1)",
             "return masked & (confidence >= self.tau)", [POLICIES, REF_POLICIES]),
    Mutation(P + "topk.py", "return base[:, None] + (step_index[None, :] < remainder[:, None]).long()",
             "return base[:, None] + (step_index[None, :] <= remainder[:, None]).long()", [POLICIES, REF_EQ]),
    # ---- scorers
    Mutation(D + "scorers.py", "return (logits.double() - temperature * torch.log(-torch.log(uniform))).argmax(dim=-1)",
             "return (logits.double() + temperature * torch.log(-torch.log(uniform))).argmax(dim=-1)", [SCORERS]),
    Mutation(D + "scorers.py", "return candidates, top2[..., 0] - top2[..., 1]",
             "return candidates, top2[..., 1] - top2[..., 0]", [SCORERS]),
    Mutation(D + "scorers.py", "return candidates, torch.nan_to_num(probs * log_probs).sum(-1)  # 0 * log 0 = 0",
             "return candidates, -torch.nan_to_num(probs * log_probs).sum(-1)", [SCORERS]),
    # ---- credit
    Mutation(D + "credit.py", "free = torch.where(self.tokens < 0, -1.0, self.credit).argmin(dim=-1, keepdim=True)",
             "free = torch.where(self.tokens < 0, -1.0, self.credit).argmax(dim=-1, keepdim=True)", [CREDIT]),
    Mutation(D + "credit.py", "bonus = alpha * torch.log1p(self.credit) * (self.tokens >= 0)",
             "bonus = alpha * self.credit * (self.tokens >= 0)", [CREDIT]),
    Mutation(D + "credit.py", "keep = 1.0 - masked.float().mean(dim=-1)[:, None, None]  # 1 - mask ratio, per row",
             "keep = masked.float().mean(dim=-1)[:, None, None]", [CREDIT]),
    Mutation(D + "credit.py", "self.credit.mul_(beta)", "pass", [CREDIT]),
    Mutation(D + "credit.py", "boost = p_top.float().pow(gamma) * masked[..., None]",
             "boost = p_top.float().pow(gamma)", [CREDIT]),
    # ---- engine
    Mutation(D + "engine.py", "self.credit.head(hi).reset_where(advance)", "pass", [CREDIT, REF_POLICIES]),
    Mutation(D + "engine.py", "self.credit.tokens.index_fill_(0, index, -1)", "pass", [CREDIT, LOOP],
             note="equivalent: the next line zeroes the slot's credits, and a token with credit 0 acts as an "
                  "empty slot: its bonus is alpha * log1p(0) = 0, a hit on it gives 0 * beta + boost as a new slot "
                  "does, and with the default exact slots nothing live is ever evicted (with slots=k only the "
                  "tie-break among exactly equal live credits could differ); removing both reset lines is caught by "
                  "test_loop.py::test_rows_queued_through_one_slot_with_credit_equal_alone"),
    Mutation(D + "engine.py", "self.credit.credit.index_fill_(0, index, 0.0)", "pass", [CREDIT, LOOP],
             note="equivalent: with the row's tokens reset to -1 its stale credits are never read: the bonus is "
                  "multiplied by (tokens >= 0), no slot with token -1 can be hit (top >= 0), and a slot taken by a "
                  "new token has its credit set to 0 first (torch.where(new_slot, 0.0, credit)); the eviction "
                  "choice ranks every empty slot at -1.0 whatever its credit"),
    Mutation(D + "engine.py", "decoded_prefix = (gen != opts.mask_id).long().cumprod(dim=-1).bool()",
             "decoded_prefix = torch.ones_like(gen, dtype=torch.bool)", [LOOP]),
    Mutation(D + "engine.py", "x.copy_(torch.where(fill_columns, opts.stop_ids[0], x))",
             "x.copy_(torch.where(fill_columns, opts.mask_id, x))", [LOOP]),
    Mutation(D + "engine.py", "block_done = ~after.any(dim=-1) | (step >= fixed)", "block_done = step >= fixed",
             [LOOP, REF_EQ],
             note="equivalent for the fixed schedules make_policy builds: topk has steps per block <= block_length, "
                  "so every step commits >= 1 token and the block's last mask goes at step steps_per_block; dream "
                  "commits floor(n_i (1 - t_(i+1)/t_i)) < n_i before its last step; a block starts fully masked "
                  "(an early-stop fill finishes the row, and a finished row never advances)"),
    Mutation(D + "engine.py", "advance = active & block_done & ~finished", "advance = active & block_done",
             [LOOP, "tests/test_progress.py"]),  # killed by test_progress_counts_only_blocks_a_row_decoded
    Mutation(D + "engine.py", "record = self.nfe[:hi, None] - 1", "record = self.nfe[:hi, None]", [LOOP, REF_EQ]),
    Mutation(D + "engine.py", "return uncond + (self.opts.cfg_scale + 1) * (cond - uncond)",
             "return uncond + self.opts.cfg_scale * (cond - uncond)", [REF_EQ]),
    Mutation(D + "engine.py", "logits[..., opts.eos_id] = -torch.inf", "pass", [REF_EQ, LOOP]),
    Mutation(D + "engine.py", "self.nfe[:hi] += masked.any(dim=-1).long()", "self.nfe[:hi] += active.long()",
             [LOOP, REF_EQ],
             note="equivalent: an active row always has a masked position in its current block (a block advances "
                  "as soon as it has none, with the schedules of make_policy; see block_done above; a finished "
                  "row is no longer active)"),
    # ---- loop
    Mutation(D + "loop.py", "return torch.where(is_stop.any(-1), is_stop.int().argmax(-1) + 1, gen.shape[-1])",
             "return torch.where(is_stop.any(-1), is_stop.int().argmax(-1), gen.shape[-1])", [LOOP]),
    # ---- cache
    Mutation("models/cache.py", "buffer.scatter_(3, columns[None, :, None, :, None].expand_as(fresh), fresh)",
             "buffer.scatter_(3, (columns - 1)[None, :, None, :, None].expand_as(fresh), fresh)", [LOOP, REF_EQ]),
    Mutation("models/cache.py", "buffer[:, :, :, columns] = fresh  # index_put_: under torch.compile it fuses with "
             "its producers", "buffer[:, :, :, columns - 1] = fresh", [REF_EQ, LOOP]),
    # ---- cli
    Mutation("cli.py", '"credit": build_credit(credit, credit_alpha, credit_beta, credit_gamma, credit_adaptive) '
             'or False,', '"credit": build_credit(credit, credit_alpha, credit_beta, credit_gamma, credit_adaptive) '
             'and False,', [CLI], extra=["-k", "flag_reaches and credit"]),
    Mutation("cli.py", 'decoding = {"policy": "topk" if policy is None else policy, "cache": cache,',
             'decoding = {"policy": "topk" if policy is None else policy, "cache": "none",', [CLI],
             extra=["-k", "flag_reaches and cache"]),
]


def apply(src: Path, m: Mutation) -> None:
    """Replace the one line of ``src/unmask/<m.file>`` whose stripped text is ``m.original``; stop loudly if it
    is not there exactly once."""
    path = src / "unmask" / m.file
    lines = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip() == m.original]
    if len(hits) != 1:
        raise SystemExit(f"mutation check: {m.file}: the line {m.original!r} occurs {len(hits)} times, not once "
                         f"(the source changed: update the mutation)")
    line = lines[hits[0]]
    indent = line[:len(line) - len(line.lstrip())]
    lines[hits[0]] = indent + m.mutant + "\n"
    path.write_text("".join(lines))


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def copy_src() -> Path:
    copy = Path(tempfile.mkdtemp(prefix="unmask-mutant-"))
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return copy


def check_import() -> None:
    """The tests must import the copy, not the working tree's (editable) install."""
    copy = copy_src()
    try:
        out = subprocess.run([sys.executable, "-c", "import unmask; print(unmask.__file__)"], env=environment(copy),
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        if not Path(out).resolve().is_relative_to(copy.resolve()):
            raise SystemExit(f"mutation check: unmask imports from {out}, not the copy under {copy}")
        print(f"imports the copy: {out}")
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def run(m: Mutation) -> dict:
    copy = copy_src()
    try:
        apply(copy / "src", m)
        tic = time.perf_counter()
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests, *m.extra]
        note = m.note
        try:
            proc = subprocess.run(cmd, env=environment(copy), cwd=ROOT, capture_output=True, text=True,
                                  timeout=TIMEOUT_S)
            killed = proc.returncode != 0
            if proc.returncode not in (0, 1):  # 5: no tests collected, 2/3/4: errors
                note = (note + "; " if note else "") + f"pytest exit code {proc.returncode}"
            if killed and not note:
                failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
                note = f"killed by {failed[0].split(' - ')[0]}" if failed else ""
        except subprocess.TimeoutExpired:
            killed = True
            note = (note + "; " if note else "") + f"killed by a timeout ({TIMEOUT_S} s: the decode hangs)"
        seconds = round(time.perf_counter() - tic, 1)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return {"file": f"src/unmask/{m.file}", "original": m.original, "mutant": m.mutant,
            "tests": [*m.tests, *m.extra], "killed": killed, "seconds": seconds, "note": note}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/mutation.json")
    parser.add_argument("--only", default=None, help="keep mutations whose file/original/mutant contain this")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.only is None or any(args.only in s for s in (m.file, m.original, m.mutant))]
    for m in chosen:  # every line is found exactly once before anything runs
        lines = (ROOT / "src/unmask" / m.file).read_text().splitlines()
        if sum(line.strip() == m.original for line in lines) != 1:
            raise SystemExit(f"mutation check: {m.file}: {m.original!r} does not occur exactly once")
    check_import()
    rows, tic = [], time.perf_counter()
    for i, m in enumerate(chosen, 1):
        row = run(m)
        rows.append(row)
        status = "killed" if row["killed"] else "SURVIVED"
        print(f"[{i:2}/{len(chosen)}] {status:8} {row['seconds']:6.1f}s {m.file}: {m.mutant[:70]}", flush=True)
    survived = sum(not r["killed"] for r in rows)
    report = {"mutations": len(rows), "survived": survived, "seconds": round(time.perf_counter() - tic, 1),
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"{'status':8} {'s':>6}  {'file':38} mutant / note")
    for r in rows:
        print(f"{'killed' if r['killed'] else 'SURVIVED':8} {r['seconds']:6.1f}  {r['file']:38} {r['mutant'][:60]}")
        if r["note"]:
            print(f"{'':55} {r['note'][:110]}")
    print(f"\n{len(rows)} mutations, {survived} survived, {report['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
