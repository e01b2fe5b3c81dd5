"""Progress bars and chatter: a bar only on a terminal, none in logs, nothing with --quiet."""

import io
import json

from rich.console import Console
from typer.testing import CliRunner

from unmask.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_generate_quiet_prints_only_the_responses(tiny_ckpt):
    loud = run("generate", "hello", "the answer is", "-m", tiny_ckpt, "--gen-length", 8, "--block-length", 8)
    quiet = run("generate", "hello", "the answer is", "-m", tiny_ckpt, "--gen-length", 8, "--block-length", 8,
                "--quiet")
    assert loud.exit_code == 0 and quiet.exit_code == 0, loud.output + quiet.output
    assert "prompt 1" in loud.output and "tokens/NFE" in loud.output
    assert "prompt 1" not in quiet.output and "tokens/NFE" not in quiet.output and "decoding" not in quiet.output
    as_json = run("generate", "hello", "-m", tiny_ckpt, "--gen-length", 8, "--block-length", 8, "--json", "-q")
    assert [json.loads(line)["prompt"] for line in as_json.stdout.splitlines()] == ["hello"]


def test_eval_bar_only_on_a_terminal(monkeypatch):
    import unmask.eval.cli as eval_cli

    assert not eval_cli.show_progress(True, False)  # under the test runner stdout is no terminal
    monkeypatch.setattr(eval_cli, "console", Console(file=io.StringIO(), force_terminal=True))
    assert eval_cli.show_progress(True, False)
    assert not eval_cli.show_progress(True, True)  # --quiet
    assert not eval_cli.show_progress(False, False)  # --no-progress


def test_eval_quiet_keeps_the_table_and_drops_the_chatter(tiny_ckpt, tmp_path):
    args = ["eval", "-m", tiny_ckpt, "-s", "topk", "-t", "math", "-n", 1, "--gen-length", 8, "--block-length", 8]
    loud = run(*args, "-o", tmp_path / "a")
    quiet = run(*args, "-o", tmp_path / "b", "--quiet")
    assert loud.exit_code == 0 and quiet.exit_code == 0, loud.output + quiet.output
    assert "decoded now" in loud.output and "decoded now" not in quiet.output
    assert "unmask eval" in quiet.output  # the results table stays


def test_train_bar_needs_a_terminal_and_quiet_silences_the_lines(capsys, monkeypatch):
    import sys

    from unmask.train.trainer import _progress

    bar = _progress(10, enabled=True)  # pytest's stderr is no terminal: plain lines instead of a bar
    assert bar.bar is None
    bar.write("validation line")
    quiet = _progress(10, enabled=True, quiet=True)
    quiet.update(5, "loss 1.0")
    quiet.write("not shown")
    assert capsys.readouterr().out == "validation line\n"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    on_terminal = _progress(10, enabled=True)
    assert on_terminal.bar is not None
    on_terminal.close()
