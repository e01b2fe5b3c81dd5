"""The command line: generate with each policy, JSON output, and clear errors for bad input."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from llada_fixtures import random_weights, tiny_config, write_checkpoint
from typer.testing import CliRunner

import unmask
from unmask.cli import app
from unmask.decoding import CreditConfig

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("policy_args", [
    ["--policy", "topk", "--steps", "8"],
    ["--policy", "threshold", "--threshold", "0.5", "--cache", "dual"],
    ["--policy", "factor", "--factor", "1.0", "--cache", "prefix"],
    ["--policy", "frechet", "--margin", "0.25", "--credit"],
])
def test_generate_each_policy_json(tiny_ckpt, policy_args):
    result = run("generate", "hello world", "the answer is", "-m", tiny_ckpt, "--gen-length", 16,
                 "--block-length", 8, "--json", *policy_args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["hello world", "the answer is"]
    assert all(1 <= r["nfe"] <= 16 and r["tokens"] <= 16 for r in records)


def test_generate_reads_jsonl_file(tiny_ckpt, tmp_path):
    file = tmp_path / "prompts.jsonl"
    file.write_text('{"prompt": "hello"}\n\n{"prompt": "world"}\n')
    result = run("generate", "-f", file, "-m", tiny_ckpt, "--gen-length", 8, "--block-length", 8, "--json")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2


@pytest.mark.parametrize("args,message", [
    (["--gen-length", "30", "--block-length", "8"], "gen_length=30 must be a positive multiple of block_length=8"),
    (["--policy", "threshold", "--threshold", "1.5"], "threshold must be in (0, 1], got 1.5"),
    (["--policy", "magic"], "unknown policy 'magic'"),
    (["--cache", "full"], "unknown cache mode 'full'"),
])
def test_generate_bad_options(tiny_ckpt, args, message):
    result = run("generate", "hello", "-m", tiny_ckpt, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_generate_bad_model_path(tmp_path):
    result = run("generate", "hello", "-m", tmp_path / "missing")
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())


def test_generate_bad_json_names_the_line(tiny_ckpt, tmp_path):
    file = tmp_path / "p.jsonl"
    file.write_text('{"prompt": "ok"}\n{"prompt": oops}\n')
    result = run("generate", "-f", file, "-m", tiny_ckpt)
    assert result.exit_code == 2 and "p.jsonl:2 is not valid JSON" in " ".join(result.output.split())


def test_generate_without_prompt(tiny_ckpt):
    result = run("generate", "-m", tiny_ckpt)
    assert result.exit_code == 2 and "no prompt given" in result.output


def test_bench_on_cpu_writes_tables(tmp_path):
    result = run("bench", "--random-weights", "llada-tiny", "--batch", 1, "--cache", "dual", "--prompt-length", 16,
                 "--gen-length", 32, "--block-length", 16, "--repeats", 1, "-o", tmp_path)
    assert result.exit_code == 0, result.output + repr(result.exception)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [r["cache"] for r in data["rows"]] == ["dual"]
    assert data["rows"][0]["step_ms"] > 0 and data["rows"][0]["e2e_step_ms"] > 0
    assert "| 1 | dual | eager |" in (tmp_path / "bench.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["--select", "best"], "--select must be one of all, random, high_loss, uds, uds_legacy; got 'best'"),
    (["--fraction", "0"], "--fraction must be in (0, 1], got 0.0"),
    (["--semi-ar", "1.5"], "--semi-ar must be in [0, 1], got 1.5"),
    (["--semi-ar-block", "0"], "--semi-ar-block must be >= 1 token, got 0"),
    (["--pad-extra", "-1"], "--pad-extra must be >= 0 tokens, got -1"),
])
def test_train_bad_selection_options(tmp_path, args, message):
    result = run("train", "--out", tmp_path / "out", "--config", "tiny", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())  # typer draws a box around the error
    assert not (tmp_path / "out").exists()


def test_generate_with_a_spec(tiny_ckpt):
    result = run("generate", "hello world", "-m", tiny_ckpt, "--gen-length", 16, "--block-length", 8, "--json",
                 "--spec", "frechet:0.3+credit@dual")
    assert result.exit_code == 0, result.output
    clash = run("generate", "hello", "-m", tiny_ckpt, "--spec", "threshold:0.5", "--threshold", "0.7")
    assert clash.exit_code == 2 and "give either --spec or --threshold" in " ".join(clash.output.split())


@pytest.mark.parametrize("args,message", [
    (["--policy", "threshold", "--margin", "0.3"], "margin do not apply to policy 'threshold'"),
    (["--compile", "fast"], "--compile 'fast' is not one of auto, fused, exact, off"),
])
def test_generate_rejects_options_that_do_not_apply(tiny_ckpt, args, message):
    result = run("generate", "hello", "-m", tiny_ckpt, "--gen-length", 8, "--block-length", 8, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_generate_with_knob_options(tiny_ckpt):
    ok = run("generate", "hello world", "-m", tiny_ckpt, "--gen-length", 16, "--block-length", 8, "--json",
             "--policy", "frechet", "--knob", "margin=0.3")
    assert ok.exit_code == 0, ok.output
    for args, message in [(["--knob", "margin"], "--knob 'margin' must look like NAME=VALUE"),
                          (["--policy", "threshold", "--knob", "threshold=2"], "threshold must be in (0, 1], got 2"),
                          (["--policy", "threshold", "--knob", "near=1"], "unknown decoding setting(s) near")]:
        result = run("generate", "hello", "-m", tiny_ckpt, "--gen-length", 8, "--block-length", 8, *args)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_bad_inputs_named_in_one_line(tiny_ckpt, tmp_path):
    binary = tmp_path / "prompts.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81 prompt")
    cases = [
        (["generate", "-f", tmp_path, "-m", tiny_ckpt], "is a directory"),
        (["generate", "-f", binary, "-m", tiny_ckpt], f"prompt file {str(binary)!r} is not UTF-8 text"),
        (["generate", "hello", "-m", tiny_ckpt, "--temperature", "nan"], "temperature must be a finite number"),
        (["generate", "hello", "-m", tiny_ckpt, "--credit", "--credit-alpha", "nan"], "alpha must be a finite"),
        (["compare", "-m", tiny_ckpt, "-n", "0"], "n must be >= 1 example per task, got 0"),
        (["trace", "hello", "-m", tiny_ckpt, "-o", tmp_path / "missing" / "t.png"], "does not exist"),
        (["trace", "hello", "-m", tiny_ckpt, "-o", tmp_path], "is a directory"),
        (["eval", "-s", "topk", "-t", "math", "-n", "1", "-m", tiny_ckpt, "-o", binary / "out"], "Not a directory"),
        (["train", "--config", "nosuch", "--out", tmp_path / "t"], "unknown preset 'nosuch'"),
    ]
    if not __import__("torch").cuda.is_available():
        cases.append((["generate", "hello", "-m", tiny_ckpt, "--device", "cuda"], "CUDA is not available"))
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
    assert not (tmp_path / "missing").exists()  # nothing half-written


def test_python_api_rejects_a_dict_of_prompts(tiny_ckpt):
    import unmask

    lm = unmask.load(tiny_ckpt, dtype="float32", device="cpu")
    with pytest.raises(ValueError, match="prompts must be a string, a list of strings or a token tensor, got dict"):
        lm.generate({"a": 1}, gen_length=8, block_length=8)


# ---- every decoding flag of `unmask generate` reaches the decoder ----------------------------------------
PROMPTS = ["w65 w62 w13", "w87", "w63 w42 w31 world w41", "w62"]  # stop after 11, 13, 5 and no tokens
BASE = {"gen_length": 32, "block_length": 8}


@pytest.fixture(scope="module")
def stop_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with end-of-text and end-of-turn frequent candidates: rows stop early (so the early-stop,
    logits_eos_inf and confidence_eos_eot_inf switches change the outcome)."""
    cfg = tiny_config()
    weights = random_weights(cfg)
    head = weights["model.transformer.ff_out.weight"]
    eos = cfg["eos_token_id"]
    head[eos] = head[76] * 1.06
    head[eos + 3] = head[10] * 1.2  # <|eot_id|>
    return write_checkpoint(tmp_path_factory.mktemp("cli") / "stop", cfg, weights)


@pytest.fixture(scope="module")
def stop_lm(stop_ckpt: Path) -> unmask.DiffusionLM:
    return unmask.load(stop_ckpt)  # as the CLI loads it: unmask.load(model, device=None, dtype=None, ...)


def api_records(lm: unmask.DiffusionLM, **settings: Any) -> list[tuple[str, int, int, int]]:
    """(response, tokens, nfe, batch_nfe) per prompt, from the Python API."""
    chat = settings.pop("chat", True)
    out = lm.generate(PROMPTS, **{**BASE, **settings}, chat=chat)
    return [(text, int(n), int(nfe), out.nfe) for text, n, nfe in zip(out.texts, out.lengths, out.nfe_per_row,
                                                                         strict=True)]


# (CLI flags, the same settings through the API, the settings without the flag: the flag must change the result)
FLAG_CASES = {
    "steps": (["--steps", "16"], {"steps": 16}, {}),
    "policy-threshold": (["--policy", "threshold", "--threshold", "0.3"], {"policy": "threshold", "threshold": 0.3},
                         {"policy": "threshold"}),
    "policy-factor": (["--policy", "factor", "--factor", "2.0"], {"policy": "factor", "factor": 2.0},
                      {"policy": "factor"}),
    "policy-frechet": (["--policy", "frechet", "--margin", "-0.5"], {"policy": "frechet", "margin": -0.5},
                       {"policy": "frechet"}),
    "knob": (["--policy", "threshold", "--knob", "threshold=0.3"], {"policy": "threshold", "threshold": 0.3},
             {"policy": "threshold"}),
    "spec": (["--spec", "threshold:0.3+credit(alpha=3)@prefix"],
             {"policy": "threshold", "threshold": 0.3, "credit": CreditConfig(alpha=3.0), "cache": "prefix"},
             {"policy": "threshold", "threshold": 0.3}),
    "cache-prefix": (["--cache", "prefix"], {"cache": "prefix"}, {}),
    "cache-dual": (["--cache", "dual"], {"cache": "dual"}, {}),
    "credit": (["--credit"], {"credit": True}, {}),
    "credit-alpha": (["--credit", "--credit-alpha", "3"], {"credit": CreditConfig(alpha=3.0)}, {"credit": True}),
    "credit-beta": (["--credit", "--credit-beta", "1.0"], {"credit": CreditConfig(beta=1.0)}, {"credit": True}),
    "credit-gamma": (["--credit", "--credit-gamma", "2.0"], {"credit": CreditConfig(gamma=2.0)}, {"credit": True}),
    "credit-adaptive": (["--credit", "--credit-adaptive"], {"credit": CreditConfig(adaptive=True)},
                        {"credit": True}),
    "temperature": (["--temperature", "1.0", "--seed", "0"], {"temperature": 1.0, "seed": 0}, {}),
    "seed": (["--temperature", "1.0", "--seed", "1"], {"temperature": 1.0, "seed": 1},
             {"temperature": 1.0, "seed": 0}),
    "scorer-margin": (["--scorer", "margin"], {"scorer": "margin"}, {}),
    "scorer-entropy": (["--scorer", "entropy"], {"scorer": "entropy"}, {}),
    "scorer-random": (["--scorer", "random", "--seed", "0"], {"scorer": "random", "seed": 0}, {}),
    "cfg-scale": (["--cfg-scale", "1.0"], {"cfg_scale": 1.0}, {}),
    "gen-length": (["--gen-length", "16"], {"gen_length": 16}, {}),
    "block-length": (["--block-length", "16"], {"block_length": 16}, {}),
    "no-early-stop": (["--no-early-stop"], {"early_stop": False}, {}),
    "logits-eos-inf": (["--logits-eos-inf"], {"logits_eos_inf": True}, {}),
    "confidence-eos-eot-inf": (["--confidence-eos-eot-inf"], {"confidence_eos_eot_inf": True}, {}),
    "raw": (["--raw"], {"chat": False}, {}),
}


@pytest.mark.parametrize("case", FLAG_CASES)
def test_generate_flag_reaches_the_decoder(stop_ckpt: Path, stop_lm: unmask.DiffusionLM, case: str) -> None:
    flags, settings, without = FLAG_CASES[case]
    result = run("generate", *PROMPTS, "-m", stop_ckpt, "--gen-length", BASE["gen_length"], "--block-length",
                 BASE["block_length"], "--json", *flags)  # a later --gen-length/--block-length wins
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["prompt"] for r in records] == PROMPTS
    got = [(r["response"], r["tokens"], r["nfe"], r["batch_nfe"]) for r in records]
    expected = api_records(stop_lm, **settings)
    assert got == expected
    assert expected != api_records(stop_lm, **without), f"{case}: the fixture does not show the flag's effect"


def test_generate_passes_model_options_to_load(stop_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--device, --dtype, --compile / --no-compile, --quantize reach unmask.load, and the CLI decodes with the model
    loaded so (on the CPU the compile modes leave the tokens as they are: exact runs eagerly there)."""
    calls = []
    real_load = unmask.load

    def spy(*args: Any, **kwargs: Any) -> unmask.DiffusionLM:
        lm = real_load(*args, **kwargs)
        calls.append((args, kwargs, lm.model.dtype))
        return lm

    monkeypatch.setattr(unmask, "load", spy)
    for flags, expected, dtype in [
        ([], {"device": None, "dtype": None, "compile": None, "quantize": None}, torch.float32),
        (["--device", "cpu", "--dtype", "float64", "--compile", "exact"],
         {"device": "cpu", "dtype": "float64", "compile": "exact", "quantize": None}, torch.float64),
        (["--dtype", "bfloat16", "--no-compile", "--quantize", "int8"],
         {"device": None, "dtype": "bfloat16", "compile": False, "quantize": "int8"}, torch.bfloat16),
    ]:
        calls.clear()
        result = run("generate", *PROMPTS, "-m", stop_ckpt, "--gen-length", 16, "--block-length", 8, "--json",
                     *flags)
        assert result.exit_code == 0, result.output
        assert calls == [((str(stop_ckpt),), expected, dtype)]
        lm = real_load(stop_ckpt, **expected)
        assert [json.loads(line)["response"] for line in result.stdout.splitlines()] == \
            lm.generate(PROMPTS, gen_length=16, block_length=8).texts


def test_generate_file_that_is_not_a_regular_file(tiny_ckpt):
    result = run("generate", "-f", "/dev/zero", "-m", tiny_ckpt)
    assert result.exit_code == 2 and "is not a regular file" in " ".join(result.output.split())


def test_knob_message_says_what_is_allowed_once(tiny_ckpt):
    result = run("generate", "hi", "-m", tiny_ckpt, "--policy", "frechet", "--knob", "margin=abc")
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "margin must be a finite number, got 'abc'" in text, text


def test_lm_eval_entry_without_the_extra_gives_an_install_hint(monkeypatch, capsys):
    import sys

    from unmask.eval import lm_eval_adapter

    monkeypatch.setitem(sys.modules, "lm_eval.__main__", None)  # import fails as without the package
    with pytest.raises(SystemExit) as exit_info:
        lm_eval_adapter.main([])
    assert exit_info.value.code == 2 and "pip install 'unmask[lm-eval]'" in capsys.readouterr().err


@pytest.mark.parametrize("mode,words", [("fused", "many times slower than eager"), ("exact", "decodes eagerly")])
def test_graph_compile_modes_on_the_cpu_warn(tiny_ckpt, mode, words):
    result = run("generate", "hi", "-m", tiny_ckpt, "--gen-length", 8, "--block-length", 8, "--compile", mode,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"warning: --compile {mode} on the CPU" in result.stderr and words in result.stderr


def test_tables_are_not_cut_when_piped(tmp_path):
    """Off a terminal the consoles are PIPED_WIDTH wide: a long spec label stays whole in a table."""
    from rich.table import Table

    from unmask.cli_errors import PIPED_WIDTH, make_console

    console = make_console()  # pytest captures stdout: not a terminal
    assert console.width == PIPED_WIDTH
    table = Table("policy", "task", "accuracy")
    label = "frechet:0.25+credit(alpha=0.5,beta=0.9)@prompt_stale(every=4)"
    table.add_row(label, "math (validation)", "0.703")
    with console.capture() as captured:
        console.print(table)
    assert label in captured.get()


def test_bench_that_cannot_fit_in_memory_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr("unmask.models.loading.available_memory", lambda device: 1 << 20)  # 1 MiB free
    result = run("bench", "--random-weights", "llada-tiny", "--batch", 1, "--cache", "dual", "--device", "cpu",
                 "-o", tmp_path)
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "a random-weight model needs" in text and "only 0.0 GiB is available" in text
    assert "Traceback" not in result.output
