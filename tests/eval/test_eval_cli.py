"""The typer commands, mounted on a local app the way ``unmask.cli`` mounts them."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from unmask.eval.cli import compare_command, eval_command, trace_command

app = typer.Typer()
app.command("eval")(eval_command)
app.command("compare")(compare_command)
app.command("trace")(trace_command)
runner = CliRunner()


def test_trace_command(tiny_ckpt, tmp_path):
    out = tmp_path / "t.png"
    result = runner.invoke(app, ["trace", "hello w1", "--model", str(tiny_ckpt), "--spec", "threshold:0.5@dual",
                                 "--gen-length", "32", "--out", str(out), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert out.is_file() and sum(summary["step_counts"]) + summary["early_stop_filled"] == 32


def test_eval_command_and_bad_spec(tiny_ckpt, tmp_path):
    result = runner.invoke(app, ["eval", "--spec", "nonsense:1", "--model", str(tiny_ckpt)])
    assert result.exit_code == 2
    out = tmp_path / "ev"
    result = runner.invoke(app, ["eval", "--spec", "topk,threshold:0.5", "--task", "math", "--n", "2", "--out",
                                 str(out), "--model", str(tiny_ckpt), "--gen-length", "32", "--device", "cpu",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [(r["spec"], r["task"], r["n"]) for r in rows] == [("topk", "math", 2), ("threshold:0.5", "math", 2)]
    assert (out / "pareto.png").is_file() and (out / "results.md").is_file()


def test_compare_command(tiny_ckpt, tmp_path):
    result = runner.invoke(app, ["compare", "--model", str(tiny_ckpt), "--n", "1", "--gen-length", "32",
                                 "--device", "cpu", "--no-progress", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "cmp" / "results.json").read_text())["results"]
    assert len(rows) == 12  # 6 specs x (math, code)
    assert "threshold:0.9+credit" in result.output and "speedup" in result.output


def test_eval_command_on_a_local_benchmark(tiny_ckpt, tmp_path):
    data = tmp_path / "gsm8k_test.jsonl"
    rows = [{"question": f"hello w{i}", "answer": f"w1\n#### {i}"} for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ev"
    result = runner.invoke(app, ["eval", "-s", "threshold:0.5", "--task", f"gsm8k={data}", "--n", "0", "--out",
                                 str(out), "--model", str(tiny_ckpt), "--gen-length", "32", "--device", "cpu",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["results"]
    assert rows[0]["task"] == "gsm8k" and rows[0]["n"] == 3 and rows[0]["nfe_speedup"] is None
