"""The evaluation grid on a tiny random checkpoint: aggregates vs a hand computation, resume, outputs."""

from __future__ import annotations

import json

import pytest

from unmask.eval.records import RECORDS, read_records
from unmask.eval.report import aggregate, pareto_front
from unmask.eval.runner import run_eval

SPECS = ["topk", "threshold:0.5+credit@dual"]
COMPARED = ("n", "accuracy", "mean_nfe", "tokens_per_nfe", "mean_tokens", "nfe_speedup")


def run(lm, task, out, **kw):
    kw = {"n": 4, "batch_size": 2, "gen_length": 64, "block_length": 32, "progress": False, **kw}
    return run_eval(lm, SPECS, [task], out, **kw)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_aggregates_equal_hand_computation(tiny_lm, stub_task, tmp_path):
    report = run(tiny_lm, stub_task, tmp_path)
    records = lines(tmp_path / RECORDS)
    assert len(records) == 8 and report.generated == 8
    assert {(r["spec"], r["id"]) for r in records} == {(s, f"stub-{i}") for s in SPECS for i in range(4)}
    for spec in SPECS:
        group = [r for r in records if r["spec"] == spec]
        row = report.row(spec, "stub")
        assert row["n"] == 4
        assert row["accuracy"] == pytest.approx(sum(r["score"] for r in group) / 4)
        assert row["mean_nfe"] == pytest.approx(sum(r["nfe"] for r in group) / 4)
        assert row["tokens_per_nfe"] == pytest.approx(sum(r["tokens"] / r["nfe"] for r in group) / 4)
        seconds = sum(r["seconds"] for r in group)  # each row's share of the engine's wall time
        assert row["tokens_per_s"] == pytest.approx(sum(r["tokens"] for r in group) / seconds)
        assert row["latency_s"] == pytest.approx(seconds / 4)
        assert all(r["seconds"] > 0 and r["batch_seconds"] > 0 for r in group)
        batches = {r["batch"]: r["batch_seconds"] for r in group}
        assert len(batches) == 4 and all(r["batch_size"] == 2 for r in group)  # each row its own latency
        assert row["batch_latency_s"] == pytest.approx(sum(batches.values()) / 4)
        for r in group:  # records are re-scorable: the score is the task's score of the completion
            example = next(e for e in stub_task.examples("test", 4) if e.id == r["id"])
            assert r["score"] == stub_task.score(example, r["completion"])
            assert 0 < r["tokens"] <= 64 and r["nfe"] >= 2
    base, other = report.row("topk", "stub"), report.row(SPECS[1], "stub")
    assert all(r["nfe"] in (32, 64) for r in records if r["spec"] == "topk")  # one token per step, per block
    assert base["nfe_speedup"] == 1.0
    assert other["nfe_speedup"] == pytest.approx(base["mean_nfe"] / other["mean_nfe"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report.rows))
    assert saved["config"]["specs"] == SPECS and saved["config"]["gen_length"] == 64
    md = (tmp_path / "results.md").read_text()
    assert "| stub | topk | 4 |" in md and "threshold:0.5+credit@dual" in md
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_after_crash(tiny_lm, stub_task, tmp_path):
    first = run(tiny_lm, stub_task, tmp_path)
    path = tmp_path / RECORDS
    records = path.read_text().splitlines(keepends=True)
    (tmp_path / "results.json").unlink()
    # a crash: keep half of the records, the last of them torn mid-write
    kept = records[: len(records) // 2 - 1]  # 3 of 8: one batch is re-decoded with a different partner
    path.write_text("".join(kept) + records[len(kept)][:25])
    second = run(tiny_lm, stub_task, tmp_path)
    assert second.generated == len(records) - len(kept)
    after = lines(path)
    keys = [(r["spec"], r["task"], r["id"]) for r in after]
    assert len(keys) == len(set(keys)) == len(records)
    for a, b in zip(first.rows, second.rows, strict=True):
        assert {k: a[k] for k in COMPARED} == pytest.approx({k: b[k] for k in COMPARED})
    assert json.loads((tmp_path / "results.json").read_text())["results"] == json.loads(json.dumps(second.rows))
    third = run(tiny_lm, stub_task, tmp_path)  # nothing left to do
    assert third.generated == 0 and len(lines(path)) == len(records)


def test_other_settings_refused_unless_overwrite(tiny_lm, stub_task, tmp_path):
    run(tiny_lm, stub_task, tmp_path, n=2, plot=False)
    with pytest.raises(ValueError, match="gen_length: 64 there, 32 now"):
        run(tiny_lm, stub_task, tmp_path, n=2, gen_length=32, plot=False)
    report = run(tiny_lm, stub_task, tmp_path, n=2, gen_length=32, overwrite=True, plot=False)
    assert report.generated == 4 and len(lines(tmp_path / RECORDS)) == 4


def test_bad_inputs(tiny_lm, stub_task, tmp_path):
    with pytest.raises(ValueError, match="bad decoding spec 'fast'"):
        run_eval(tiny_lm, ["fast"], [stub_task], tmp_path)
    with pytest.raises(ValueError, match="unknown task 'chess'"):
        run_eval(tiny_lm, ["topk"], ["chess"], tmp_path)
    with pytest.raises(ValueError, match="gsm8k=PATH"):
        run_eval(tiny_lm, ["topk"], ["gsm8k"], tmp_path)
    with pytest.raises(ValueError, match="multiple of block_length"):
        run_eval(tiny_lm, ["topk"], [stub_task], tmp_path, gen_length=50)


def test_aggregate_and_pareto_units():
    records = [
        {"spec": s, "task": "t", "id": str(i), "score": float(i % 2), "nfe": nfe, "tokens": 10,
         "tokens_per_nfe": 10 / nfe, "batch": f"{s}{i // 2}", "batch_seconds": 2.0, "seconds": 1.0}
        for s, nfe in (("topk", 40), ("factor:1", 10)) for i in range(4)
    ]
    rows = aggregate(records, ["topk", "factor:1"], ["t"])
    assert rows[1]["nfe_speedup"] == 4.0 and rows[1]["accuracy"] == 0.5 and rows[1]["tokens_per_s"] == 10.0
    assert rows[1]["batch_latency_s"] == 2.0 and rows[1]["latency_s"] == 1.0
    assert aggregate(records, ["factor:1"], ["t"])[0]["nfe_speedup"] is None  # no baseline
    assert pareto_front([(10, 0.5), (40, 0.5), (20, 0.9), (30, 0.8)]) == [0, 2]


def test_read_records_rejects_garbage(tmp_path):
    path = tmp_path / RECORDS
    good = {"spec": "topk", "task": "math", "id": "m-1", "score": 1.0, "nfe": 4, "tokens": 9, "tokens_per_nfe": 2.25,
            "seconds": 0.1, "batch": "b", "batch_seconds": 0.2}
    path.write_text(json.dumps(good) + "\nnot json\n")
    with pytest.raises(ValueError, match="records.jsonl:2 is not a valid record"):
        read_records(path)
    for line, problem in (('{"spec": "topk"}', "no 'task' field"), ("[1, 2]", "a JSON list, not an object"),
                          (json.dumps({**good, "nfe": "4"}), "field 'nfe' is '4'")):
        path.write_text(json.dumps(good) + "\n" + line + "\n")  # valid JSON, wrong schema: a message, no KeyError
        with pytest.raises(ValueError, match=f"records.jsonl:2 is not a valid record \\({problem}\\)"):
            read_records(path)
