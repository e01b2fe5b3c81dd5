"""Bad input, property-based (hypothesis): random bad values at the API boundary and on the command line.

API (``DecodeConfig.create``, ``DiffusionLM.generate``, ``decode``, ``CreditConfig``, eval specs): every bad value of
every setting raises a ``ValueError`` whose message names the value (or the option and its value), never
an AttributeError / TypeError / ZeroDivisionError / IndexError, and never a silent success.

CLI (``generate``, ``eval``, ``compare``, ``trace``, ``sweep``, ``tune``, ``bench``, ``train``, ``serve``,
``playground``): exit code 2, no traceback, one line naming the bad value. ``train``, ``serve`` and ``playground``
must refuse before any work: their training run and server are replaced by a tripwire.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llada_fixtures import random_weights, tiny_config, write_checkpoint
from typer.testing import CliRunner

from unmask.decoding import CreditConfig, DecodeConfig, decode, make_policy
from unmask.decoding.scorers import Scorer

SETTINGS = settings(max_examples=30, deadline=None, database=None, derandomize=bool(os.environ.get("CI")),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
CLI_SETTINGS = settings(SETTINGS, max_examples=25)
GEN, BLOCK = 16, 8  # two blocks

NAN, INF = float("nan"), float("inf")
nonfinite = st.sampled_from([NAN, INF, -INF])
huge_ints = st.sampled_from([2**64, 2**70, -(2**70), 10**30])
words = st.text(alphabet="abcxyz_-?", min_size=1, max_size=6)  # short: the message shows them whole
junk = st.one_of(words, st.lists(st.integers(-3, 3), max_size=2), st.dictionaries(words, st.integers(0, 3),
                 max_size=1), st.none(), st.tuples(st.integers(0, 3)), st.binary(min_size=1, max_size=3))
bools = st.booleans()


def not_number(*, none_ok: bool = False, bool_ok: bool = False) -> st.SearchStrategy:
    """Values of the wrong type for a number setting (``None``/bools excluded where they are allowed)."""
    options = [words, st.lists(st.integers(-3, 3), max_size=2), st.dictionaries(words, st.integers(0, 3), max_size=1),
               st.tuples(st.integers(0, 3)), st.binary(min_size=1, max_size=3)]
    if not none_ok:
        options.append(st.none())
    if not bool_ok:
        options.append(bools)
    return st.one_of(*options)


def non_negative_number_bad() -> st.SearchStrategy:
    """Bad values of a finite number >= 0 (temperature, cfg_scale, credit alpha)."""
    return st.one_of(nonfinite, st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                     st.integers(max_value=-1), st.just(10**400), not_number())


# setting -> (extra settings, strategy of bad values); gen_length 16, block_length 8 unless overridden
API_BAD: dict[str, tuple[dict, st.SearchStrategy]] = {
    "gen_length": ({}, st.one_of(st.integers(max_value=0), st.integers(1, 10_000).filter(lambda v: v % BLOCK),
                                 st.floats(allow_nan=True), not_number())),
    "block_length": ({}, st.one_of(st.integers(max_value=0), st.integers(1, 10_000).filter(lambda v: GEN % v),
                                   st.floats(allow_nan=True), not_number())),
    "policy": ({}, st.one_of(words.filter(lambda w: w not in ("topk", "threshold", "factor", "frechet")),
                             st.integers(), st.floats(), not_number())),
    "steps": ({"policy": "topk"}, st.one_of(st.integers(max_value=0), st.integers(1, 10**6).filter(lambda v: v % 2),
                                            st.integers(GEN + 1, 10**6).filter(lambda v: v % 2 == 0), huge_ints,
                                            st.floats(0.01, 1e6).filter(lambda v: not v.is_integer()), nonfinite,
                                            not_number(none_ok=True))),
    "threshold": ({"policy": "threshold"}, st.one_of(st.floats(max_value=0), st.floats(min_value=1.0001),
                                                     nonfinite, huge_ints, not_number(none_ok=True))),
    "factor": ({"policy": "factor"}, st.one_of(st.floats(max_value=0), st.integers(max_value=0), nonfinite,
                                               not_number(none_ok=True))),
    "margin": ({"policy": "frechet"}, st.one_of(nonfinite, not_number(none_ok=True))),
    "credit": ({}, st.one_of(st.integers(), st.floats(), words, st.lists(st.integers(), max_size=2), st.none(),
                             st.dictionaries(words, st.integers(0, 3), max_size=1))),
    "cache": ({}, st.one_of(words.filter(lambda w: w not in ("none", "prefix", "dual")), st.integers(),
                            not_number())),
    "temperature": ({}, non_negative_number_bad()),
    "cfg_scale": ({}, non_negative_number_bad()),
    "scorer": ({}, st.one_of(words.filter(lambda w: w not in ("confidence", "margin", "entropy", "random")),
                             st.integers(), not_number())),
    "seed": ({}, st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64), st.floats(), words, bools,
                           st.lists(st.integers(), max_size=2))),
    "early_stop": ({}, st.one_of(st.integers(), st.floats(), words, st.none(), st.lists(st.integers(), max_size=1))),
    "logits_eos_inf": ({}, st.one_of(st.integers(), st.floats(), words, st.none())),
    "compile": ({}, st.one_of(words.filter(lambda w: w not in ("fused", "exact", "off")), st.integers(),
                              st.floats(), st.lists(st.integers(), max_size=1))),
    "options": ({}, st.one_of(st.integers(), st.floats(), words, st.none(), bools, st.lists(st.integers(),
                                                                                          max_size=2))),
}
OWN_KNOB = {"topk": "steps", "threshold": "threshold", "factor": "factor", "frechet": "margin"}


def shown(message: str, value: object) -> bool:
    """Whether ``message`` names ``value`` (its repr or str; an integral float also as an int)."""
    forms = {repr(value), str(value)}
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        forms.add(str(int(value)))
    return any(form in message for form in forms)


def refused(fn, value: object, *names: str) -> str:
    """``fn()`` raises a ValueError naming ``value`` (and ``names``); returns the message."""
    try:
        fn()
    except ValueError as err:
        message = str(err)
    else:
        raise AssertionError(f"accepted {value!r} silently")
    assert shown(message, value), f"message does not name {value!r}: {message}"
    for name in names:
        assert name in message, f"message does not name {name!r}: {message}"
    return message


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    import unmask

    cfg = tiny_config()
    folder = write_checkpoint(tmp_path_factory.mktemp("bad-input") / "tiny-llada", cfg, random_weights(cfg))
    return unmask.load(folder, device="cpu", dtype="float32")


@pytest.mark.parametrize("setting", list(API_BAD))
def test_decode_config_refuses_every_bad_value(setting):
    extra, values = API_BAD[setting]

    @SETTINGS
    @given(values)
    def check(value):
        refused(lambda: DecodeConfig.create(**{"gen_length": GEN, "block_length": BLOCK, **extra, setting: value}),
                value)

    check()


@pytest.mark.parametrize("setting", ["gen_length", "steps", "threshold", "temperature", "seed", "cache", "credit"])
def test_generate_refuses_every_bad_value(lm, setting):
    extra, values = API_BAD[setting]

    @settings(SETTINGS, max_examples=10)
    @given(values)
    def check(value):
        refused(lambda: lm.generate("hello", **{"gen_length": GEN, "block_length": BLOCK, **extra, setting: value}),
                value)

    check()


@SETTINGS
@given(policy=st.sampled_from(list(OWN_KNOB)), knob=st.sampled_from(["steps", "threshold", "factor", "margin"]),
       value=st.one_of(st.floats(0.1, 0.9), st.integers(1, 4)))
def test_a_knob_of_another_policy_is_an_error(policy, knob, value):
    if knob == OWN_KNOB[policy] or (policy == "frechet" and knob == "factor"):  # frechet's budget alias
        return
    refused(lambda: DecodeConfig.create(policy=policy, gen_length=GEN, block_length=BLOCK, **{knob: value}), value,
            knob, policy)


CREDIT_BAD = {
    "alpha": st.floats(max_value=-1e-9, allow_nan=False),
    "beta": st.one_of(st.floats(max_value=-1e-9, allow_nan=False), st.floats(min_value=1.0001, allow_nan=False)),
    "gamma": st.one_of(st.floats(max_value=0, allow_nan=False), st.integers(max_value=0)),
}


@SETTINGS
@given(st.sampled_from(sorted(CREDIT_BAD)).flatmap(lambda name: st.tuples(st.just(name), st.one_of(
    CREDIT_BAD[name], nonfinite, st.just(10**400), not_number()))))
def test_credit_coefficients_refuse_bad_values(name_value):
    name, value = name_value
    refused(lambda: CreditConfig(**{name: value}), value, name)


@SETTINGS
@given(value=st.one_of(st.integers(), st.floats(), words, st.none(), st.lists(st.integers(), max_size=2)))
def test_credit_adaptive_must_be_a_bool(value):
    refused(lambda: CreditConfig(adaptive=value), value, "adaptive")


@settings(SETTINGS, max_examples=30)
@given(value=st.one_of(
    st.integers(), st.floats(), st.none(), bools, st.dictionaries(words, st.integers(0, 3), max_size=1),
    st.binary(min_size=1, max_size=3), st.just([]), st.lists(st.sampled_from(["", "  "]), min_size=1, max_size=2),
    st.lists(st.one_of(st.integers(), st.none()), min_size=1, max_size=2)))
def test_generate_refuses_bad_prompts(lm, value):
    if not isinstance(value, list):
        refused(lambda: lm.generate(value, gen_length=GEN, block_length=BLOCK), value)
        return
    with pytest.raises(ValueError) as err:  # a list: the message names the bad element, or says it is empty
        lm.generate(value, gen_length=GEN, block_length=BLOCK)
    message = str(err.value)
    assert (not value and "empty" in message) or any(shown(message, v) for v in value), message


@settings(SETTINGS, max_examples=10)
@given(ids=st.one_of(st.lists(st.integers(min_value=128, max_value=10**6), min_size=1, max_size=3),
                     st.lists(st.integers(max_value=-1, min_value=-(10**6)), min_size=1, max_size=3)))
def test_generate_refuses_token_ids_outside_the_vocabulary(lm, ids):
    with pytest.raises(ValueError, match="outside the vocabulary") as err:
        lm.generate(torch.tensor([[5, *ids]]), gen_length=GEN, block_length=BLOCK)
    assert any(shown(str(err.value), i) for i in ids), str(err.value)


@settings(SETTINGS, max_examples=15)
@given(name=st.sampled_from(["device", "dtype", "compile", "path"]), value=st.one_of(
    words, st.integers(), st.floats(), st.lists(st.integers(), max_size=2), st.binary(min_size=1, max_size=3)))
def test_load_refuses_bad_arguments(lm, name, value):
    import unmask

    if name == "path":
        refused(lambda: unmask.load(value, device="cpu"), value)
    elif not (name == "compile" and value in (0, 1)):  # 0 / 1 == False / True
        refused(lambda: unmask.load(lm.path, **{name: value}), value)


@pytest.mark.parametrize(("settings_", "message"), [
    ({"chat": "no"}, "chat must be True or False, got 'no'"),
    ({"on_block": "x"}, "on_block must be a function (blocks_done, blocks) or None, got 'x'"),
    ({"attention_mask": torch.ones(1, 3)}, "attention_mask goes with token prompts only"),
    ({"time_steps": 1}, "time_steps must be True or False, got 1"),
])
def test_generate_refuses_bad_call_options(lm, settings_, message):
    with pytest.raises(ValueError) as err:
        lm.generate("hello", gen_length=GEN, block_length=BLOCK, **settings_)
    assert message in str(err.value)


def test_generate_refuses_float_token_prompts(lm):
    with pytest.raises(ValueError, match="integer tensor, got a torch.float32 tensor of shape"):
        lm.generate(torch.zeros(1, 3), gen_length=GEN, block_length=BLOCK)


DECODE_BAD = {
    "gen_length": st.one_of(st.integers(max_value=0), huge_ints.filter(lambda v: v > 0 and v % BLOCK == 0),
                            st.floats(), not_number()),
    "cfg_scale": non_negative_number_bad(),
    "mask_id": st.one_of(st.integers(max_value=-1), st.integers(min_value=128), st.floats(), not_number()),
    "early_stop": st.one_of(st.integers(), st.floats(), words, st.none()),
    "credit": st.one_of(st.integers(), st.floats(), words, st.dictionaries(words, st.integers(0, 3), max_size=1),
                        bools),
    "scorer": st.one_of(st.integers(min_value=1), st.floats(), words, st.lists(st.integers(), max_size=1)),
    "stop_ids": st.one_of(st.integers(), st.floats(), st.lists(st.integers(min_value=128), min_size=1, max_size=2),
                          st.lists(words, min_size=1, max_size=1)),
    "cache": st.one_of(words.filter(lambda w: w not in ("none", "prefix", "dual")), st.integers()),
    "compile": st.one_of(words.filter(lambda w: w not in ("fused", "exact", "off")), st.integers(), st.floats()),
}


@pytest.mark.parametrize("setting", list(DECODE_BAD))
def test_decode_refuses_every_bad_value(lm, setting):
    ids = lm.encode_prompts(["hello"])[0]
    policy = make_policy("topk", gen_length=GEN, block_length=BLOCK)

    @settings(SETTINGS, max_examples=10)
    @given(DECODE_BAD[setting])
    def check(value):
        kwargs = {"mask_id": lm.mask_id, "gen_length": GEN, "block_length": BLOCK, "stop_ids": lm.tokenizer.stop_ids,
                  setting: value}
        refused(lambda: decode(lm.model, ids, policy, **kwargs), value)

    check()


@settings(SETTINGS, max_examples=10)
@given(value=st.one_of(st.integers(), st.floats(), words, st.none(), st.lists(st.integers(), max_size=2), bools))
def test_decode_refuses_bad_policies_and_prompts(lm, value):
    ids = lm.encode_prompts(["hello"])[0]
    policy = make_policy("topk", gen_length=GEN, block_length=BLOCK)
    common = {"mask_id": lm.mask_id, "gen_length": GEN, "block_length": BLOCK, "stop_ids": lm.tokenizer.stop_ids}
    refused(lambda: decode(lm.model, ids, value, scorer=Scorer(), **common), value)
    refused(lambda: decode(lm.model, value, policy, **common), value)


SPEC_CHARS = st.sampled_from(list("topkthresholdfactorfrechetcreditadaptivealphabetagammadualprefix:+@()=,.-019 "))


@settings(SETTINGS, max_examples=200)
@given(text=st.one_of(st.text(SPEC_CHARS, max_size=30), st.builds(
    lambda policy, value, option: f"{policy}:{value}{option}", st.sampled_from(list(OWN_KNOB)),
    st.one_of(st.floats().map(repr), st.integers().map(str), words),
    st.sampled_from(["", "+credit", "+credit(alpha=nan)", "+credit(beta=1e400)", "@dual", "+credit-adaptive(alpha=1)",
                     "+credit(gamma=-1)", "@full"]))))
def test_eval_specs_parse_or_name_the_spec(text):
    from unmask.eval.spec import parse_spec, parse_specs

    for parse in (parse_spec, parse_specs):
        try:
            parse(text)
        except ValueError as err:
            message = str(err)  # it quotes the spec, or the bad one among several (a piece of the text)
            pieces = {text} | {text[i:j] for i in range(len(text)) for j in range(i + 1, len(text) + 1)}
            assert any(repr(piece) in message for piece in pieces) or "given twice" in message \
                or (not text.replace(",", " ").strip() and "no decoding spec given" in message), message


@SETTINGS
@given(value=st.one_of(st.integers(), st.floats(), st.none(), st.lists(st.one_of(st.integers(), st.none()),
                                                                       min_size=1, max_size=2)))
def test_eval_specs_of_the_wrong_type(value):
    from unmask.eval.spec import parse_spec, parse_specs

    refused(lambda: parse_spec(value), value)
    refused(lambda: parse_specs(value), value)


# ------------------------------------------------------------------------------------------- CLI


class Tripwire(Exception):
    """Raised where the command line started real work (training, serving) with a bad value."""


@pytest.fixture(scope="module")
def cli(lm, tmp_path_factory):
    """(invoke, tiny checkpoint, a scratch folder): train's run and uvicorn's server raise Tripwire."""
    import uvicorn

    import unmask.train.pipeline as pipeline
    from unmask.cli import app

    def tripwire(*args, **kwargs):
        raise Tripwire("reached the real work with a bad value")

    threads = torch.get_num_threads()
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uvicorn, "run", tripwire)
        patch.setattr(uvicorn.Server, "run", tripwire)
        patch.setattr(pipeline, "run", tripwire)

        def invoke(*args, env=None):
            return runner.invoke(app, [str(a) for a in args], env=env)

        yield invoke, str(lm.path), tmp_path_factory.mktemp("bad-input-cli")
    torch.set_num_threads(threads)


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def assert_refused(result, value: str, args) -> None:
    output = result.output
    assert not isinstance(result.exception, Tripwire), f"{args}: started the real work with {value!r}"
    assert result.exit_code == 2, f"{args}: exit {result.exit_code}, {result.exception!r}\n{output}"
    assert "Traceback" not in output, f"{args}:\n{output}"
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), f"{args}: not one error line:\n{output}"
    text = flat(output)
    try:  # a number is named as the command line parsed it: 1e400 -> inf, 2 -> 2.0
        number = float(value)
    except ValueError:
        number = None
    forms = {value, repr(value)}
    if number is not None:
        forms |= {str(number), repr(number)}
        if math.isfinite(number) and number.is_integer():
            forms.add(str(int(number)))
    assert any(form.lower() in text.lower() for form in forms), f"{args}: {value!r} not named in: {text}"


BAD_INT = st.one_of(st.integers(max_value=0), st.integers(min_value=2**70, max_value=2**72)).map(str)
BAD_NON_NEGATIVE_FLOAT = st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e400"]),
                                   st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False).map(repr))
BAD_POSITIVE_FLOAT = st.one_of(BAD_NON_NEGATIVE_FLOAT, st.just("0"))
NOT_A_NUMBER = st.sampled_from(["abc", "1.2.3", "x1", "--", "one"])
BAD_WORD = st.sampled_from(["bogus", "x?y", "NONE", "dual2", "a=b", "1"])
BAD_UNIT = st.one_of(st.sampled_from(["nan", "inf", "-inf", "0", "-0.5"]),
                     st.floats(min_value=1.0001, max_value=1e9).map(repr))
BAD_THREADS = st.one_of(st.integers(max_value=0), st.integers(min_value=5000, max_value=10**6)).map(str)

CLI_BAD: dict[str, dict[str, st.SearchStrategy]] = {
    "generate": {"--gen-length": st.one_of(BAD_INT, NOT_A_NUMBER), "--block-length": BAD_INT,
                 "--steps": st.one_of(BAD_INT, st.integers(17, 10**6).map(str)),
                 "--temperature": BAD_NON_NEGATIVE_FLOAT, "--cfg-scale": BAD_NON_NEGATIVE_FLOAT,
                 "--seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64)).map(str),
                 "--cache": BAD_WORD, "--scorer": BAD_WORD, "--policy": BAD_WORD, "--compile": BAD_WORD,
                 "--spec": BAD_WORD, "--dtype": BAD_WORD, "--device": BAD_WORD, "--threads": BAD_THREADS,
                 "--threshold": BAD_UNIT, "--credit-alpha": BAD_NON_NEGATIVE_FLOAT, "--confidence-dtype": BAD_WORD,
                 "--top-p": BAD_UNIT, "--top-k": st.integers(max_value=0).map(str), "--confidence-from": BAD_WORD,
                 "--quantize": BAD_WORD},
    "eval": {"--n": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**40)).map(str),
             "--batch-size": st.integers(max_value=0).map(str), "--gen-length": BAD_INT,
             "--temperature": BAD_NON_NEGATIVE_FLOAT, "--spec": BAD_WORD, "--task": BAD_WORD, "--split": BAD_WORD,
             "--compile": BAD_WORD, "--threads": BAD_THREADS},
    "compare": {"--n": st.one_of(st.integers(max_value=0), st.integers(min_value=2**40)).map(str),
                "--batch-size": st.integers(max_value=0).map(str), "--block-length": BAD_INT,
                "--dtype": BAD_WORD, "--threads": BAD_THREADS},
    "trace": {"--spec": BAD_WORD, "--gen-length": BAD_INT, "--block-length": BAD_INT, "--device": BAD_WORD},
    "sweep": {"--drop": st.one_of(BAD_UNIT.filter(lambda v: v not in ("0",))), "--samples": BAD_INT,
              "--confidence": BAD_UNIT, "--boot-seed": st.integers(max_value=-1).map(str),
              "--grid": st.sampled_from(["threshold=nan", "threshold=2", "factor=-1", "bogus=1"]),
              "--policy": BAD_WORD, "--n": st.integers(max_value=-1).map(str)},
    "tune": {"--eps": st.one_of(st.sampled_from(["nan", "inf", "1", "-0.5"])), "--test-n": st.integers(
        max_value=-1).map(str), "--samples": BAD_INT, "--confidence": BAD_UNIT},
    "bench": {"--batch": BAD_INT, "--prompt-length": BAD_INT, "--repeats": BAD_INT, "--cache": BAD_WORD,
              "--mode": BAD_WORD, "--random-weights": BAD_WORD, "--gen-length": BAD_INT, "--threads": BAD_THREADS,
              "--quantize": BAD_WORD},
    "train": {"--steps": st.integers(max_value=0).map(str), "--batch-size": BAD_INT, "--lr": BAD_POSITIVE_FLOAT,
              "--max-minutes": st.sampled_from(["nan", "inf", "-1", "-0.5"]), "--seq-len": BAD_INT,
              "--tokenizer-vocab": BAD_INT, "--workers": st.integers(max_value=-1).map(str),
              "--eval-every": st.integers(max_value=-1).map(str), "--uds-alpha": BAD_NON_NEGATIVE_FLOAT,
              "--seed": st.integers(max_value=-1).map(str), "--fraction": BAD_UNIT, "--semi-ar": BAD_UNIT.filter(
                  lambda v: v not in ("0",)), "--device": BAD_WORD, "--select": BAD_WORD,
              "--train-sizes": st.sampled_from(["bogus=5", "math=x", "math"]), "--init": BAD_WORD,
              "--threads": BAD_THREADS},
    "serve": {"--port": st.one_of(st.integers(max_value=0), st.integers(min_value=65536)).map(str),
              "--max-batch": BAD_INT, "--max-tokens": BAD_INT, "--block-length": BAD_INT,
              "--max-queue": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**40)).map(str),
              "--request-timeout": BAD_POSITIVE_FLOAT, "--log-level": BAD_WORD, "--spec": BAD_WORD,
              "--threads": BAD_THREADS, "--quantize": BAD_WORD,
              "--warm-prompt-tokens": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**40)).map(str),
              "--admission-wait-ms": st.one_of(st.sampled_from(["nan", "inf", "-1", "10001"]),
                                               st.floats(min_value=10000.5, max_value=1e12).map(repr))},
    "playground": {"--port": st.one_of(st.integers(max_value=0), st.integers(min_value=65536)).map(str),
                   "--max-batch": BAD_INT, "--block-length": BAD_INT, "--log-level": BAD_WORD, "--spec": BAD_WORD,
                   "--compile": BAD_WORD, "--threads": BAD_THREADS},
}


def base_args(command: str, model: str, scratch) -> list[str]:
    """Valid, small settings of ``command`` (the bad option comes after them and wins)."""
    small = ["--gen-length", GEN, "--block-length", BLOCK]
    return {
        "generate": ["hello", "-m", model, *small, "--json"],
        "eval": ["-m", model, "-n", 1, *small, "-s", "topk", "-t", "math", "-o", scratch / "eval", "--overwrite"],
        "compare": ["-m", model, "-n", 1, *small],
        "trace": ["hello", "-m", model, *small, "-o", scratch / "trace.png", "--json"],
        "sweep": ["-m", model, "-n", 1, *small, "-p", "threshold", "--variants", "plain", "--credit-grid", "none",
                  "-o", scratch / "sweep", "--overwrite"],
        "tune": ["-m", model, "-n", 1, *small, "-p", "threshold", "-g", "threshold=0.9", "--variants", "plain",
                 "--credit-grid", "none", "-o", scratch / "tune", "--overwrite"],
        "bench": ["--random-weights", "llada-tiny", "--batch", 1, "--cache", "dual", "--prompt-length", 8, *small,
                  "--repeats", 1, "--device", "cpu"],
        "train": ["--out", scratch / "train", "--config", "tiny", "--steps", 1],
        "serve": ["-m", model],
        "playground": ["-m", model, "--no-browser"],
    }[command]


@pytest.mark.parametrize("command", list(CLI_BAD))
def test_cli_refuses_bad_values_in_one_line(cli, command):
    invoke, model, scratch = cli
    options = CLI_BAD[command]

    @CLI_SETTINGS
    @given(st.sampled_from(sorted(options)).flatmap(lambda opt: st.tuples(st.just(opt), options[opt])))
    def check(option_value):
        option, value = option_value
        args = [command, *base_args(command, model, scratch), option, value]
        assert_refused(invoke(*args), value, args)

    check()


@pytest.mark.parametrize("command", ["generate", "bench", "train", "serve", "playground"])
def test_cli_refuses_a_bad_thread_count_from_the_environment(cli, command):
    invoke, model, scratch = cli
    for value in ("0", "-2", "many"):
        args = [command, *base_args(command, model, scratch)]
        assert_refused(invoke(*args, env={"UNMASK_THREADS": value}), value, args)
