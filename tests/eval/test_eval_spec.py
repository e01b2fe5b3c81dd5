"""The decoding-spec parser: good specs, canonical labels, and clear errors for bad ones."""

import pytest

from unmask.decoding.credit import CreditConfig
from unmask.eval.spec import DecodeSpec, parse_spec, parse_specs


@pytest.mark.parametrize(
    "text, expected",
    [
        ("topk", DecodeSpec("topk")),
        ("topk:64", DecodeSpec("topk", 64)),
        ("threshold:0.9", DecodeSpec("threshold", 0.9)),
        ("threshold", DecodeSpec("threshold")),
        ("factor:1.0", DecodeSpec("factor", 1.0)),
        ("frechet:0.25", DecodeSpec("frechet", 0.25)),
        ("frechet:-0.1", DecodeSpec("frechet", -0.1)),
        ("threshold:0.9+credit@dual", DecodeSpec("threshold", 0.9, "credit", "dual")),
        ("factor:2+credit-adaptive", DecodeSpec("factor", 2.0, "credit-adaptive")),
        ("topk@prefix", DecodeSpec("topk", None, None, "prefix")),
        (" Threshold:0.5@none ", DecodeSpec("threshold", 0.5)),
    ],
)
def test_good_specs(text, expected):
    spec = parse_spec(text)
    assert spec == expected
    assert parse_spec(spec.label) == spec


def test_labels_and_kwargs():
    assert parse_spec("threshold:0.9+credit@dual").label == "threshold:0.9+credit@dual"
    assert parse_spec("factor:1.0").label == "factor:1"
    assert parse_spec("topk").is_baseline and not parse_spec("topk@dual").is_baseline
    assert parse_spec("threshold:0.9+credit@dual").generate_kwargs() == {
        "policy": "threshold", "cache": "dual", "threshold": 0.9, "credit": True}
    assert parse_spec("frechet:0.3").generate_kwargs() == {"policy": "frechet", "cache": "none", "margin": 0.3}
    assert parse_spec("topk:64").generate_kwargs()["steps"] == 64
    assert parse_spec("topk+credit-adaptive").generate_kwargs()["credit"] == CreditConfig(adaptive=True)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("greedy", "unknown policy 'greedy'"),
        ("threshold:abc", "must be a number"),
        ("threshold:1.5", "in (0, 1]"),
        ("threshold:0", "in (0, 1]"),
        ("factor:-1", "> 0"),
        ("topk:0.5", "must be an integer"),
        ("topk:0", "> 0"),
        ("frechet:nan", "finite"),
        ("threshold:0.9+cache", "unknown option '+cache'"),
        ("threshold+credit+credit", "credit given twice"),
        ("threshold@triple", "unknown cache mode 'triple'"),
        ("threshold:0.9@dual+credit", "bad decoding spec"),
        ("", "bad decoding spec"),
        ("topk::3", "bad decoding spec"),
    ],
)
def test_bad_specs_name_the_spec_and_the_forms(text, needle):
    with pytest.raises(ValueError) as err:
        parse_spec(text)
    message = str(err.value)
    assert needle in message
    assert repr(text) in message
    assert "POLICY[:VALUE]" in message


def test_parse_specs_lists_and_duplicates():
    assert [s.label for s in parse_specs("topk, threshold:0.9 factor:1")] == ["topk", "threshold:0.9", "factor:1"]
    assert [s.label for s in parse_specs(["topk,frechet:0.25", "threshold:0.9+credit"])] == [
        "topk", "frechet:0.25", "threshold:0.9+credit"]
    with pytest.raises(ValueError, match="given twice: factor:1"):
        parse_specs(["factor:1.0", "factor:1"])
    with pytest.raises(ValueError, match="no decoding spec"):
        parse_specs([])


def test_credit_coefficients_in_the_spec():
    spec = parse_spec("threshold:0.9+credit(alpha=0.5, beta=0.9)@dual")
    assert spec == DecodeSpec("threshold", 0.9, "credit", "dual", (("alpha", 0.5), ("beta", 0.9)))
    assert spec.label == "threshold:0.9+credit(alpha=0.5,beta=0.9)@dual" and parse_spec(spec.label) == spec
    assert spec.generate_kwargs()["credit"] == CreditConfig(alpha=0.5, beta=0.9)
    # canonical: the order of the coefficients does not matter and defaults are dropped
    assert parse_spec("frechet+credit(gamma=1,alpha=2)").label == "frechet+credit(alpha=2,gamma=1)"
    assert parse_spec("frechet+credit(alpha=0.65,beta=0.7)") == parse_spec("frechet+credit")
    assert parse_spec("frechet+credit(alpha=0.65)").generate_kwargs()["credit"] is True
    # commas inside the parentheses do not separate specs
    assert [s.label for s in parse_specs("topk, factor:1+credit(alpha=0.3,beta=0.5) frechet:0.1")] == [
        "topk", "factor:1+credit(alpha=0.3,beta=0.5)", "frechet:0.1"]
    with pytest.raises(ValueError, match="need credit='credit'"):
        DecodeSpec("threshold", 0.9, "credit-adaptive", "none", (("alpha", 0.5),))


@pytest.mark.parametrize(
    "text, needle",
    [
        ("threshold+credit(alpha=x)", "credit alpha must be a number, got 'x'"),
        ("threshold+credit(delta=1)", "'delta=1' must be NAME=VALUE with NAME in {alpha, beta, gamma}"),
        ("threshold+credit(alpha=1,alpha=2)", "credit alpha given twice"),
        ("threshold+credit(beta=2)", "credit beta must be in [0, 1], got 2.0"),
        ("threshold+credit-adaptive(alpha=1)", "'+credit-adaptive' takes no coefficients"),
        ("threshold+credit()", "credit coefficient ''"),
        ("threshold+credit(alpha=1", "bad decoding spec"),
    ],
)
def test_bad_credit_coefficients(text, needle):
    with pytest.raises(ValueError) as err:
        parse_spec(text)
    assert needle in str(err.value) and repr(text) in str(err.value)


def test_the_same_setting_twice_is_refused():
    from unmask.eval.spec import parse_specs

    with pytest.raises(ValueError, match="'threshold' and 'threshold:0.9' are the same setting"):
        parse_specs(["threshold", "threshold:0.9"])
    assert [s.label for s in parse_specs(["threshold", "threshold:0.8"])] == ["threshold", "threshold:0.8"]
