"""unmask tune: selection on synthetic dev results, the paired test comparison, the dev/test leak check,
and a tiny end-to-end run that reuses its sweep."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from unmask.eval.cli import tune_command
from unmask.eval.sweep import analyze, build_grid, example_table
from unmask.eval.tune import check_disjoint, compare, run_tune, select
from unmask.tasks.base import Example, Task
from unmask.tasks.registry import get_task

# spec: (examples right of 100, NFE, seconds) on two tasks
MATH = {"topk": (80, 100.0, 1.0), "threshold:0.9": (80, 10.0, 0.2), "threshold:0.5": (79, 5.0, 0.1),
        "frechet:0.1": (75, 3.0, 0.1), "factor:1": (85, 9.0, 0.2)}
CODE = {"topk": (50, 40.0, 1.0), "threshold:0.9": (50, 4.0, 0.2), "threshold:0.5": (50, 2.0, 0.1),
        "frechet:0.1": (60, 1.0, 0.1), "factor:1": (49, 2.0, 0.2)}


def synthetic_records(points: dict[str, tuple[int, float, float]], n: int = 100, task: str = "t") -> list[dict]:
    """n examples per spec: the first ``correct`` score 1; each has the spec's NFE, 50 tokens, its seconds."""
    return [{"spec": spec, "task": task, "id": f"e{i}", "index": i, "score": float(i < correct), "nfe": nfe,
             "tokens": 50, "seconds": seconds}
            for spec, (correct, nfe, seconds) in points.items() for i in range(n)]


def frontiers(tasks: dict[str, dict[str, tuple[int, float, float]]]):
    records = [r for name, points in tasks.items() for r in synthetic_records(points, task=name)]
    specs = list(dict.fromkeys(s for points in tasks.values() for s in points))
    return analyze(records, specs, list(tasks), samples=50)


def test_select_cheapest_admissible():
    both = frontiers({"math": MATH, "code": CODE})
    # eps 0.01: threshold:0.5 (math 0.79, code 0.50) passes; frechet:0.1 fails math, factor:1 fails code (0.49)
    chosen = select(both, 0.01)
    assert chosen.spec == "threshold:0.5"
    assert chosen.cost == pytest.approx((5 / 100 + 2 / 40) / 2)
    assert [c["spec"] for c in chosen.candidates] == ["threshold:0.5", "factor:1", "threshold:0.9", "topk"]
    assert select(both, 0.0).spec == "threshold:0.9"  # no drop allowed: 0.79 and 0.49 fail
    assert select(both, 0.05).spec == "frechet:0.1"  # math 0.75 >= 0.80 - 0.05
    assert select(frontiers({"code": CODE}), 0.0).spec == "frechet:0.1"  # one task: the lowest NFE
    strict = frontiers({"math": {"topk": (80, 100.0, 1.0), "threshold:0.5": (70, 5.0, 0.1)}})
    assert select(strict, 0.01).spec == "topk"  # nothing else admissible: the baseline
    with pytest.raises(ValueError, match="eps .* must be in \\[0, 1\\), got -0.1"):
        select(both, -0.1)


def test_compare_is_paired():
    records = synthetic_records(MATH)
    table = example_table(records, "t", list(MATH))
    result = compare(table, "factor:1", samples=300, seed=0)
    assert result["n"] == 100
    assert result["baseline"]["accuracy"] == 0.8 and result["spec"]["accuracy"] == 0.85
    assert result["accuracy_diff"] == pytest.approx(0.05)
    # factor:1 is right on every example the baseline is right on, plus 5: paired, the difference is the share
    # of those 5 in a resample, never below 0 (unpaired: standard error sqrt(.8 * .2 / 100 + .85 * .15 / 100)
    # = 0.054, an interval about 0.21 wide that includes 0)
    lo, hi = result["accuracy_diff_ci"]
    assert 0.0 < lo <= 0.05 <= hi and hi - lo < 0.12
    assert result["nfe_speedup"] == pytest.approx(100 / 9) and result["nfe_speedup_ci"] == pytest.approx([100 / 9] * 2)
    assert result["tokens_per_s_ratio"] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="'frechet:0.9' has no complete records"):
        compare(table, "frechet:0.9")


class SplitStub(Task):
    """The stub task (conftest) with ids that differ between splits: a real dev split."""

    name = "stub"

    def __init__(self, stub: Task) -> None:
        self.stub = stub

    def examples(self, split: str, n: int, seed: int = 0) -> list[Example]:
        return [Example(e.task, f"{split}-{e.id}", e.prompt, e.target, e.reference)
                for e in self.stub.examples(split, n, seed + (split == "test"))]

    def score(self, example: Example, completion: str) -> float:
        return self.stub.score(example, completion)


def test_dev_and_test_must_not_share_examples(stub_task, tmp_path):
    check_disjoint({"math": get_task("math"), "stub": SplitStub(stub_task)}, "validation", "test", 64, 64, 0)
    with pytest.raises(ValueError, match="task 'stub': its validation and test examples share 4 id"):
        check_disjoint({"stub": stub_task}, "validation", "test", 4, 8, 0)
    data = tmp_path / "gsm8k.jsonl"  # one file serves every split
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) + "\n" for i in range(3)))
    with pytest.raises(ValueError, match="one file gives the same records for every split"):
        check_disjoint({"gsm8k": get_task("gsm8k", path=data)}, "validation", "test", 0, 0, 0)


def test_tiny_tune_end_to_end(tiny_lm, stub_task, tmp_path):
    grid = build_grid(["threshold"], ["threshold=0.5,0.9"], ["none"], ["plain"])
    kw = {"eps": 0.5, "n": 2, "batch_size": 2, "gen_length": 32, "block_length": 32, "progress": False,
          "samples": 50, "plot": False}
    report = run_tune(tiny_lm, grid, [SplitStub(stub_task)], tmp_path, **kw)
    assert report.sweep.eval.generated == 3 * 2 and report.sweep.out_dir == tmp_path / "dev"
    assert report.selection.spec == select(report.sweep.tasks, 0.5).spec
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert saved["chosen"] == report.selection.spec and set(saved["test"]) == {"stub"}
    assert saved["settings"]["dev_split"] == "validation" and saved["settings"]["test_split"] == "test"
    test_ids = {json.loads(line)["id"] for line in (tmp_path / "test" / "records.jsonl").read_text().splitlines()}
    assert test_ids == {"test-stub-0", "test-stub-1"}
    md = (tmp_path / "tune.md").read_text()
    assert f"Chosen: **`{report.selection.spec}`**" in md and "| stub | test (2) |" in md
    again = run_tune(tiny_lm, grid, [SplitStub(stub_task)], tmp_path, **kw)  # the sweep and the test run are reused
    assert again.sweep.eval.generated == 0 and again.test == report.test


app = typer.Typer()
app.command("tune")(tune_command)
app.command("other")(lambda: None)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--eps", "2"], "--eps must be in [0, 1)"),
        (["--grid", "factor=0"], "factor must be > 0, got 0"),
        (["--test-split", "final"], "unknown split 'final'"),
    ],
)
def test_cli_errors_are_one_line(args, needle):
    result = CliRunner().invoke(app, ["tune", *args])
    assert result.exit_code == 2
    assert needle in " ".join(result.output.split()) and "Traceback" not in result.output


def test_a_sweep_dir_of_another_grid_is_refused(tmp_path):
    """--sweep-dir reuses a sweep: a grid with settings it never decoded is refused before anything is decoded."""
    import json

    from unmask.eval.sweep import build_grid
    from unmask.eval.tune import check_sweep_dir

    folder = tmp_path / "sweep"
    folder.mkdir()
    small = build_grid(["threshold"], ["threshold=0.7,0.9"], [], ["plain"], "none")
    labels = [s.label for s in small.specs(64, 32)]
    (folder / "sweep.json").write_text(json.dumps({"settings": {"specs": labels}}))
    check_sweep_dir(folder, small, 64, 32)  # the same grid: fine
    check_sweep_dir(folder, ["threshold:0.9"], 64, 32)  # a part of it: fine
    larger = build_grid(["threshold", "factor"], ["threshold=0.7,0.9"], [], ["plain"], "none")
    with pytest.raises(ValueError, match=r"holds a sweep of 3 settings, and this tune's grid asks for \d+ it never "
                                         r"decoded \(e\.g\. factor"):
        check_sweep_dir(folder, larger, 64, 32)
    check_sweep_dir(tmp_path / "new", larger, 64, 32)  # no sweep there yet: it is made
