"""Evaluation under torchrun on the CPU (gloo, 2 processes, the embedded model): the merged results equal a
single process's, a lost tail of one rank's records is decoded again and nothing else, no example is ever
counted twice, and a second run in the same folder is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import unmask
from unmask.eval.distributed import DistributedError, Shard, current_shard
from unmask.eval.records import RANK_RECORDS, RECORDS, RunLock, read_run_records
from unmask.eval.runner import run_eval
from unmask.eval.spec import parse_spec
from unmask.eval.sweep import build_grid, run_sweep
from unmask.tasks.registry import get_task

SPECS = ["topk:8", "threshold:0.7+credit@dual"]  # topk:8: 8 steps, 4 per block
TASKS = ["math", "code"]
EVAL = {"n": 5, "batch_size": 2, "gen_length": 32, "block_length": 32}  # 3 batches (2, 2, 1) per spec and task
EVAL_ARGS = ["-s", ",".join(SPECS), "-t", "math", "-t", "code", "-n", "5", "-b", "2", "--gen-length", "32",
             "--block-length", "32", "--device", "cpu", "--no-progress"]
SWEEP = {"n": 4, "batch_size": 2, "gen_length": 16, "block_length": 16, "samples": 50}
SWEEP_ARGS = ["-p", "threshold", "-g", "threshold=0.7", "--variants", "plain", "--credit-grid", "none", "-t", "math",
              "-n", "4", "-b", "2", "--gen-length", "16", "--block-length", "16", "--samples", "50", "--device", "cpu",
              "--no-progress"]
DECODED = ("spec", "task", "id", "index", "score", "nfe", "tokens", "tokens_per_nfe", "completion", "batch_size",
           "batch_nfe")  # everything in a record but its batch id and timings
ROW = ("spec", "task", "n", "accuracy", "mean_nfe", "tokens_per_nfe", "mean_tokens", "nfe_speedup")


@pytest.fixture(scope="module")
def lm():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers (OMP_NUM_THREADS=1): the same float sums
    yield unmask.load(None, device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def single(lm, tmp_path_factory):
    """The single-process eval of the grid: the reference."""
    out = tmp_path_factory.mktemp("single")
    run_eval(lm, SPECS, TASKS, out, progress=False, **EVAL)
    return out


def torchrun(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "unmask.cli", *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return " ".join(done.stdout.split())


def decoded(records: list[dict]) -> list[dict]:
    return [{k: r[k] for k in DECODED} for r in records]


def by_key(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: (r["spec"], r["task"], r["id"]))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rows(out: Path) -> list[dict]:
    return [{k: r[k] for k in ROW} for r in json.loads((out / "results.json").read_text())["results"]]


def crash_state(out: Path, lost: int) -> list[dict]:
    """Turn a finished 2-rank folder into the one a crash of rank 1 leaves: each rank's records file (batch j
    went to rank j % 2) with rank 1's last ``lost`` records missing, no merged file, no results. Returns the lost."""
    records = lines(out / RECORDS)
    batches = list(dict.fromkeys(r["batch"] for r in records))
    files: list[list[dict]] = [[], []]
    for r in records:
        files[batches.index(r["batch"]) % 2].append(r)
    gone = files[1][-lost:]
    files[1] = files[1][:-lost]
    for rank, kept in enumerate(files):
        (out / RANK_RECORDS.format(rank)).write_text("".join(json.dumps(r) + "\n" for r in kept))
    for name in (RECORDS, "results.json", "results.md", "pareto.png"):
        (out / name).unlink()
    return gone


# ----------------------------------------------------------------------------- sharding


def test_shards_are_disjoint_complete_and_stable():
    items = list(range(23))
    for world in (1, 2, 3, 8):
        parts = [Shard(rank, world).take(items) for rank in range(world)]
        assert sorted(x for p in parts for x in p) == items  # every item once
        assert all(len(p) in (len(items) // world, -(-len(items) // world)) for p in parts)  # balanced
        assert parts == [Shard(rank, world).take(list(items)) for rank in range(world)]  # the same every time
        assert all(Shard(rank, world).owns(i) == (i in parts[rank]) for rank in range(world) for i in items)
    with pytest.raises(ValueError, match="rank must be in"):
        Shard(2, 2)


def test_torchrun_environment_without_master_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(DistributedError, match="WORLD_SIZE=2, RANK=1 is set but MASTER_ADDR"):
        current_shard()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(DistributedError, match=r"RANK=2 is not in \[0, WORLD_SIZE=2\)"):
        current_shard()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc-per-node 1: a single process, no group
    monkeypatch.setenv("RANK", "0")
    assert current_shard() == Shard()


def test_rows_do_not_depend_on_batch_mates(lm):
    """What resuming relies on: at temperature 0 in float32 a row decodes the same alone or in any batch."""
    prompts = [e.prompt for e in get_task("math").examples("test", 4, 0)]
    for spec in SPECS:
        kw = parse_spec(spec).generate_kwargs()
        together = lm.generate(prompts, gen_length=32, block_length=32, **kw)
        for i, prompt in enumerate(prompts):
            alone = lm.generate([prompt], gen_length=32, block_length=32, **kw)
            assert alone.texts[0] == together.texts[i]
            assert int(alone.nfe_per_row[0]) == int(together.nfe_per_row[i])


# ----------------------------------------------------------------------------- merged records


def test_two_processes_in_one_folder_refused(lm, tmp_path):
    held = RunLock(tmp_path)  # another run (torchrun or not) writing this folder
    try:
        with pytest.raises(ValueError, match="in use by another unmask run"):
            run_eval(lm, SPECS, TASKS, tmp_path, progress=False, **EVAL)
    finally:
        held.release()
    assert not (tmp_path / "results.json").exists()


def test_duplicates_are_counted_once(lm, single, tmp_path):
    """The same examples in records.jsonl twice and in a rank's file (two processes that decoded them):
    results.json counts each once."""
    records = lines(single / RECORDS)
    (tmp_path / "run.json").write_text((single / "run.json").read_text())
    (tmp_path / RECORDS).write_text("".join(json.dumps(r) + "\n" for r in records + records[:3]))
    (tmp_path / RANK_RECORDS.format(1)).write_text("".join(json.dumps(r) + "\n" for r in records[-4:]))
    assert decoded(read_run_records(tmp_path)) == decoded(records)
    report = run_eval(lm, SPECS, TASKS, tmp_path, progress=False, **EVAL)
    assert report.generated == 0 and all(r["n"] == 5 for r in report.rows)
    assert rows(tmp_path) == rows(single)
    assert not (tmp_path / RANK_RECORDS.format(1)).exists()  # folded into records.jsonl


def test_one_process_resumes_what_two_left(lm, single, tmp_path):
    for path in single.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    gone = crash_state(tmp_path, lost=3)
    report = run_eval(lm, SPECS, TASKS, tmp_path, progress=False, **EVAL)
    assert report.generated == 3
    after = lines(tmp_path / RECORDS)  # the 3 decoded now, then the ranks' records folded in
    assert decoded(by_key(after[:3])) == decoded(by_key(gone))
    assert decoded(by_key(after)) == decoded(by_key(lines(single / RECORDS)))
    assert rows(tmp_path) == rows(single)
    assert not list(tmp_path.glob("records.rank*"))


# ----------------------------------------------------------------------------- torchrun, 2 processes


def test_torchrun_eval_equals_one_process_and_resumes(single, tmp_path):
    out = tmp_path / "dist"
    printed = torchrun("eval", *EVAL_ARGS, "-o", str(out))
    assert "20 example(s) decoded now" in printed and printed.count("unmask eval") == 1  # rank 0 prints
    assert sorted(p.name for p in out.iterdir()) == [".lock", "pareto.png", RECORDS, "results.json", "results.md",
                                                     "run.json"]
    # the same records (one process writes them as rows finish, the fold orders them by the grid)
    assert decoded(by_key(lines(out / RECORDS))) == decoded(by_key(lines(single / RECORDS)))
    assert rows(out) == rows(single)
    assert json.loads((out / "results.json").read_text())["config"]["device"] == "cpu x2"

    crash_state(out, lost=3)  # rank 1 died after writing all but its last 3 records
    printed = torchrun("eval", *EVAL_ARGS, "-o", str(out))
    assert "3 example(s) decoded now" in printed  # those 3 only
    assert decoded(by_key(lines(out / RECORDS))) == decoded(by_key(lines(single / RECORDS)))
    assert rows(out) == rows(single)
    assert not list(out.glob("records.rank*"))


def test_torchrun_sweep_equals_one_process(lm, tmp_path):
    grid = build_grid(["threshold"], ["threshold=0.7"], ["none"], ["plain"])
    one = run_sweep(lm, grid, ["math"], tmp_path / "one", progress=False, **SWEEP)
    printed = torchrun("sweep", *SWEEP_ARGS, "-o", str(tmp_path / "two"))
    assert "8 example(s) decoded now" in printed
    two = json.loads((tmp_path / "two" / "sweep.json").read_text())

    def timing_free(tasks: list[dict]) -> list[dict]:
        return [{"task": t["task"], "n": t["n"], "target": t["target"],
                 "points": [{k: p[k] for k in ("spec", "accuracy", "accuracy_ci", "mean_nfe", "on_front")}
                            for p in t["points"]],
                 "families": [{k: f[k] for k in ("family", "front", "best", "nfe", "nfe_ci", "nfe_speedup",
                                                 "nfe_speedup_ci", "reached")} for f in t["families"]]}
                for t in tasks]

    ours = json.loads((tmp_path / "one" / "sweep.json").read_text())
    assert timing_free(two["tasks"]) == timing_free(ours["tasks"]) and len(one.eval.records) == 8
    assert decoded(by_key(lines(tmp_path / "two" / RECORDS))) == decoded(by_key(lines(tmp_path / "one" / RECORDS)))
    assert rows(tmp_path / "two") == rows(tmp_path / "one")


def test_random_weight_model_for_benchmarks():
    lm = unmask.load("random:llada-tiny", device="cpu")  # what gpu_distributed.sh times at the 8B shape
    out = lm.generate(["hello"], gen_length=16, block_length=16, policy="threshold", early_stop=False)
    assert out.nfe >= 1 and out.tokens.shape == (1, 16)
    again = unmask.load("random:llada-tiny", device="cpu")  # the same weights in every process
    assert all(torch.equal(a, b) for a, b in zip(lm.model.parameters(), again.model.parameters(), strict=True))
    with pytest.raises(ValueError, match="unknown random-weight shape 'llada-9b'"):
        unmask.load("random:llada-9b")
