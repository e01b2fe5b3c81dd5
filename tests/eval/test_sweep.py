"""unmask sweep: grid generation, the matched-accuracy analysis on synthetic records, a tiny end-to-end
sweep that resumes and widens without re-decoding, and one-line CLI errors."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from unmask.eval.cli import sweep_command
from unmask.eval.records import RECORDS
from unmask.eval.spec import parse_spec
from unmask.eval.sweep import (
    DEFAULT_VALUES,
    SweepGrid,
    analyze,
    build_grid,
    centre_value,
    family,
    resolve_split,
    run_sweep,
)

# ----------------------------------------------------------------------------- the grid


def labels(grid: SweepGrid, gen_length: int = 256, block_length: int = 32) -> list[str]:
    return [s.label for s in grid.specs(gen_length, block_length)]


def test_default_grid():
    specs = labels(build_grid())
    assert specs[:3] == ["topk", "topk:128", "topk:64"]  # the baseline first, then topk's steps
    assert len(specs) == len(set(specs))
    for policy, knob in (("threshold", "threshold"), ("factor", "factor"), ("frechet", "margin")):
        values = DEFAULT_VALUES[knob]
        for suffix in ("", "+credit", "+credit-adaptive"):
            swept = [s for s in specs if s.startswith(policy + ":") and s.endswith(suffix)
                     and "(" not in s and (suffix or "+" not in s)]
            assert len(swept) == len(values), (policy, suffix)
    # credit's alpha x beta (3 x 3) at the default knob, the default pair being plain +credit
    assert [s for s in specs if s.startswith("threshold:0.9+credit(")] == [
        f"threshold:0.9+credit({c})" for c in ("alpha=0.3,beta=0.5", "alpha=0.3", "alpha=0.3,beta=0.9", "beta=0.5",
                                                 "beta=0.9", "alpha=1,beta=0.5", "alpha=1", "alpha=1,beta=0.9")
    ]
    assert sum("frechet:0.25+credit(" in s for s in specs) == 8
    assert not any(s.startswith("topk") and "+" in s for s in specs)  # fixed schedules run plain only
    assert len(specs) == 3 + 3 * (8 + 6 + 7) + 3 * 8


def test_custom_grid():
    grid = build_grid(["threshold,frechet"], ["threshold=0.7,0.9", "margin=0,0.5"], ["alpha=0.5"],
                      ["plain", "credit"], cache="dual")
    assert labels(grid, 64) == [
        "topk", "threshold:0.7@dual", "threshold:0.9@dual", "threshold:0.7+credit@dual", "threshold:0.9+credit@dual",
        "threshold:0.9+credit(alpha=0.5)@dual", "frechet:0@dual", "frechet:0.5@dual", "frechet:0+credit@dual",
        "frechet:0.5+credit@dual", "frechet:0.5+credit(alpha=0.5)@dual",  # 0.25 not swept: the middle value
    ]
    assert labels(build_grid(["threshold"], credit_grid=["none"], variants=["credit-adaptive"]), 64) == [
        "topk", *(f"threshold:{v:g}+credit-adaptive" for v in DEFAULT_VALUES["threshold"])]
    assert labels(build_grid(["topk"], ["topk=16,64"]), 64) == ["topk", "topk:16"]  # 64 = gen_length: the baseline
    assert centre_value("factor", (0.5, 2.0, 3.0)) == 2.0 and centre_value("factor", (1.0, 3.0)) == 1.0


def test_grid_crosses_a_policys_further_options():
    """``--grid POLICY.OPTION=...`` crosses a policy's options with its knob; defaults drop out of the labels."""
    grid = build_grid(["klass,wino"], ["klass=0.6,0.9", "klass.kl=0.01,0.02", "wino=0.7", "wino.verify=0.8,0.9"],
                      ["none"], ["plain"])
    assert labels(grid, 64) == ["topk", "klass:0.6", "klass:0.6(kl=0.02)", "klass:0.9", "klass:0.9(kl=0.02)",
                                "wino:0.7(verify=0.8)", "wino:0.7"]
    for spec in grid.specs(64, 32):
        assert parse_spec(spec.label) == spec


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"grid": ["klass.depth=2"]}, "unknown policy option 'klass.depth'; allowed: "),
        ({"policies": ["klass"], "grid": ["klass.kl=2"]}, "klass kl must be in (0, 1], got 2"),
        ({"policies": ["threshold"], "grid": ["klass.kl=0.1"]}, "--grid klass.kl: policy 'klass' is not swept"),
        ({"grid": ["threshold=0.5,2"]}, "--grid 'threshold=0.5,2': threshold must be in (0, 1], got 2"),
        ({"grid": ["threshold=abc"]}, "must be a number"),
        ({"grid": ["temperature=1"]}, "unknown policy or knob 'temperature'; allowed: topk, threshold"),
        ({"grid": ["threshold"]}, "must look like NAME=V1,V2"),
        ({"grid": ["threshold=0.5", "threshold=0.7"]}, "given twice"),
        ({"grid": ["topk=3"]}, "--grid topk: steps=3 must be a positive multiple"),
        ({"policies": ["greedy"]}, "--policy 'greedy' is unknown; allowed: topk, threshold, factor, frechet"),
        ({"policies": ["threshold"], "grid": ["factor=1"]}, "--grid factor: policy 'factor' is not swept"),
        ({"credit_grid": ["beta=1.5"]}, "--credit-grid 'beta=1.5': credit beta must be in [0, 1]"),
        ({"credit_grid": ["delta=1"]}, "unknown coefficient 'delta'; allowed: alpha, beta, gamma"),
        ({"variants": ["credits"]}, "--variants 'credits' is unknown; allowed: plain, credit, credit-adaptive"),
        ({"cache": "triple"}, "unknown cache mode 'triple'"),
    ],
)
def test_bad_grids_name_the_value(kwargs, needle):
    with pytest.raises(ValueError) as err:
        build_grid(**kwargs).specs(64, 32)
    assert needle in str(err.value)


def test_family_and_split():
    assert family(parse_spec("threshold:0.9+credit(alpha=0.5)@dual")) == "threshold+credit@dual"
    assert family(parse_spec("frechet:0.1+credit-adaptive")) == "frechet+credit-adaptive"
    assert family(parse_spec("topk:64")) == "topk"
    assert resolve_split("dev") == "validation" and resolve_split("test") == "test"
    with pytest.raises(ValueError, match="unknown split 'holdout'; allowed: dev, train, validation, test"):
        resolve_split("holdout")


# ----------------------------------------------------------------------------- the analysis


def synthetic_records(points: dict[str, tuple[int, float, float]], n: int = 100, task: str = "t") -> list[dict]:
    """Records of n examples per spec: the first ``correct`` score 1; every example has the spec's NFE,
    50 tokens and the spec's seconds."""
    return [{"spec": spec, "task": task, "id": f"e{i}", "index": i, "score": float(i < correct), "nfe": nfe,
             "tokens": 50, "seconds": seconds}
            for spec, (correct, nfe, seconds) in points.items() for i in range(n)]


POINTS = {  # spec: (examples right of 100, NFE, seconds per example)
    "topk": (80, 100.0, 1.0),
    "threshold:0.5": (70, 5.0, 0.1),
    "threshold:0.7": (65, 8.0, 0.1),  # dominated by threshold:0.5
    "threshold:0.9": (90, 10.0, 0.2),
    "frechet:0.5": (50, 3.0, 0.1),  # never reaches the baseline
}


def test_matched_accuracy_known_answers():
    (t,) = analyze(synthetic_records(POINTS), list(POINTS), ["t"], drop=0.01, samples=400, seed=0)
    assert t.n == 100 and t.target == pytest.approx(0.79)
    assert t.baseline["spec"] == "topk" and t.baseline["tokens_per_s"] == pytest.approx(50.0)
    fams = {f.family: f for f in t.families}
    th = fams["threshold"]
    assert th.front == ["threshold:0.5", "threshold:0.9"] and th.best == "threshold:0.9"
    w = (0.79 - 0.7) / (0.9 - 0.7)  # along the front from (5, 0.7) to (10, 0.9)
    assert th.nfe == pytest.approx(5 + w * 5)
    assert th.nfe_speedup == pytest.approx(100 / (5 + w * 5))
    assert th.tokens_per_s == pytest.approx(500 + w * (250 - 500))
    assert th.tokens_per_s_ratio == pytest.approx((500 + w * (250 - 500)) / 50)
    assert th.nfe_ci[0] < th.nfe < th.nfe_ci[1] and th.nfe_speedup_ci[0] < th.nfe_speedup < th.nfe_speedup_ci[1]
    assert 5.0 <= th.nfe_ci[0] and th.nfe_ci[1] <= 10.0 and th.reached == 1.0
    fr = fams["frechet"]
    assert fr.nfe is None and fr.best is None and fr.reached == 0.0 and fr.nfe_speedup_ci == [0.0, 0.0]
    assert fams["topk"].nfe == pytest.approx(100.0) and fams["topk"].nfe_speedup == pytest.approx(1.0)
    on_front = {p["spec"] for p in t.points if p["on_front"]}
    assert on_front == {"topk", "threshold:0.5", "threshold:0.9", "frechet:0.5"}
    lo, hi = t.baseline["accuracy_ci"]
    assert lo < 0.8 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.04, abs=0.03)  # sqrt(.8 * .2 / 100) = 0.04


def test_analysis_drops_incomplete_specs_and_needs_the_baseline():
    records = synthetic_records(POINTS)
    records = [r for r in records if not (r["spec"] == "threshold:0.7" and r["id"] == "e3")]
    (t,) = analyze(records, list(POINTS), ["t"], samples=50)
    assert t.incomplete == ["threshold:0.7"] and "threshold:0.7" not in {p["spec"] for p in t.points}
    with pytest.raises(ValueError, match="no records of the baseline 'topk'"):
        analyze([r for r in records if r["spec"] != "topk"], list(POINTS), ["t"], samples=50)


# ----------------------------------------------------------------------------- end to end


def test_tiny_sweep_resumes_and_widens(tiny_lm, stub_task, tmp_path):
    grid = build_grid(["threshold"], ["threshold=0.9"], ["none"], ["plain", "credit"])
    kw = {"n": 2, "batch_size": 2, "gen_length": 32, "block_length": 32, "progress": False, "samples": 100}
    first = run_sweep(tiny_lm, grid, [stub_task], tmp_path, **kw)
    assert first.eval.generated == 3 * 2
    assert first.settings["specs"] == ["topk", "threshold:0.9", "threshold:0.9+credit"]
    assert {f.family for f in first.task("stub").families} == {"topk", "threshold", "threshold+credit"}
    for name in ("sweep.json", "sweep.md", "results.json", "results.md", RECORDS, "run.json"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["config"]["split"] == "validation" and saved["tasks"][0]["task"] == "stub"
    md = (tmp_path / "sweep.md").read_text()
    assert "## stub (n = 2)" in md and "`threshold+credit`" in md and "Baseline `topk`" in md

    again = run_sweep(tiny_lm, grid, [stub_task], tmp_path, **kw)  # nothing new to decode
    assert again.eval.generated == 0
    assert json.loads((tmp_path / "sweep.json").read_text())["tasks"] == saved["tasks"]
    wider = build_grid(["threshold"], ["threshold=0.5,0.9"], ["none"], ["plain", "credit"])
    widened = run_sweep(tiny_lm, wider, [stub_task], tmp_path, **kw)
    assert widened.eval.generated == 2 * 2  # only threshold:0.5 and threshold:0.5+credit
    assert len((tmp_path / RECORDS).read_text().splitlines()) == 5 * 2
    assert len(widened.task("stub").points) == 5


# ----------------------------------------------------------------------------- the command line

app = typer.Typer()
app.command("sweep")(sweep_command)
app.command("other")(lambda: None)
runner = CliRunner()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--grid", "threshold=1.5"], "threshold must be in (0, 1], got 1.5"),
        (["--policy", "greedy"], "--policy 'greedy' is unknown"),
        (["--credit-grid", "alpha=-1"], "credit alpha must be a finite number >= 0"),
        (["--split", "holdout"], "unknown split 'holdout'"),
    ],
)
def test_cli_errors_are_one_line(args, needle):
    result = runner.invoke(app, ["sweep", "--dry-run", *args])
    assert result.exit_code == 2
    assert needle in " ".join(result.output.split())  # one message (rich wraps long lines)
    assert result.output.startswith("error:") and "Traceback" not in result.output


def test_cli_dry_run_lists_the_settings():
    result = runner.invoke(app, ["sweep", "--dry-run", "-p", "frechet", "-g", "margin=0,0.25", "--variants",
                                 "plain,credit-adaptive", "--gen-length", "64", "-n", "8"])
    assert result.exit_code == 0, result.output
    assert "5 settings x 1 task(s) x 8 examples" in result.output
    assert "topk frechet:0 frechet:0.25 frechet:0+credit-adaptive frechet:0.25+credit-adaptive" in result.output


def test_cli_sweep_runs(tiny_ckpt, tmp_path):
    out = tmp_path / "sw"
    result = runner.invoke(app, ["sweep", "-p", "threshold", "-g", "threshold=0.9", "--variants", "plain", "-t",
                                 "math", "-n", "2", "--gen-length", "32", "--model", str(tiny_ckpt), "--device", "cpu",
                                 "--no-progress", "--samples", "50", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "unmask sweep: math" in result.output and "4 example(s) decoded now" in result.output
    assert {p.name for p in out.iterdir()} >= {"sweep.md", "sweep.json", "frontier.png", "records.jsonl"}


def test_grid_sweeps_cache_modes_and_their_knobs():
    """Several cache modes separated by ';': every policy setting under each, each mode its own family."""
    grid = build_grid(["threshold"], ["threshold=0.7,0.9"], [], ["plain"], "dual; prompt_stale(every=2);prompt_stale")
    labels = [s.label for s in grid.specs(64, 32)]
    assert labels == ["topk", "threshold:0.7@dual", "threshold:0.9@dual", "threshold:0.7@prompt_stale(every=2)",
                      "threshold:0.9@prompt_stale(every=2)", "threshold:0.7@prompt_stale(every=4)",
                      "threshold:0.9@prompt_stale(every=4)"]
    with pytest.raises(ValueError, match="every must be an integer >= 1 or inf"):
        build_grid(["threshold"], [], [], ["plain"], "dual;prompt_stale(every=0)")
