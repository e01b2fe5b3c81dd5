"""DecodeConfig: one validated object for every decoding setting; generate() takes it or its keywords."""

import dataclasses

import pytest
import torch

from unmask.decoding import CreditConfig, DecodeConfig, Threshold


def test_create_sorts_policy_options_and_keeps_the_rest():
    config = DecodeConfig.create(policy="threshold", threshold=0.8, cache="dual", gen_length=64)
    assert config.options == {"threshold": 0.8} and config.cache == "dual" and config.gen_length == 64
    assert config.build_policy() == Threshold(0.8)
    other = DecodeConfig.create(config, policy="frechet")  # a new policy drops the old one's option
    assert other.options == {} and other.build_policy().margin == 0.25 and other.cache == "dual"
    same = DecodeConfig.create(config, threshold=0.6)
    assert same.build_policy() == Threshold(0.6)
    assert DecodeConfig.create(credit=True).credit_config == CreditConfig()


@pytest.mark.parametrize("settings,message", [
    ({"gen_length": "64"}, "gen_length must be a positive integer, got '64'"),
    ({"gen_length": 60}, "gen_length=60 must be a positive multiple of block_length=32"),
    ({"temperature": float("nan")}, "temperature must be a finite number >= 0, got nan"),
    ({"temperature": -1.0}, "temperature must be a finite number >= 0, got -1.0"),
    ({"cfg_scale": float("inf")}, "cfg_scale must be a finite number >= 0"),
    ({"policy": 123}, "policy must be a name .* or a policy object, got 123"),
    ({"policy": "greedy"}, "unknown policy 'greedy'"),
    ({"credit": "yes"}, "credit must be True, False or a CreditConfig, got 'yes'"),
    ({"cache": "full"}, "unknown cache mode 'full'"),
    ({"scorer": "best"}, "unknown scorer 'best'"),
    ({"early_stop": "no"}, "early_stop must be True or False, got 'no'"),
    ({"seed": 1.5}, "seed must be an integer or None, got 1.5"),
    ({"compile": "fast"}, "unknown compile mode 'fast'"),
    ({"policy": "topk", "threshold": 0.5}, "threshold do not apply to policy 'topk'"),
    ({"policy": Threshold(0.5), "threshold": 0.7}, "give the options of a policy object to its constructor"),
])
def test_every_setting_is_checked(settings, message):
    with pytest.raises(ValueError, match=message):
        DecodeConfig.create(**settings)


def test_generate_takes_a_config_or_keywords(tiny_ckpt):
    import unmask

    lm = unmask.load(tiny_ckpt, dtype="float64", device="cpu")
    config = unmask.DecodeConfig.create(policy="threshold", threshold=0.3, gen_length=16, block_length=8)
    a = lm.generate(["hello world", "the answer is"], config)
    b = lm.generate(["hello world", "the answer is"], policy="threshold", threshold=0.3, gen_length=16,
                    block_length=8)
    assert a.texts == b.texts and torch.equal(a.sequences, b.sequences) and a.nfe == b.nfe
    assert a.config == config
    c = lm.generate(["hello world"], config, cache="dual")  # keywords override the config
    assert c.config.cache == "dual" and c.config.options == {"threshold": 0.3}
    assert set(f.name for f in dataclasses.fields(a)) >= {"sequences", "tokens", "commit_step", "texts", "prompt_ids"}


def test_api_knobs_are_numbers_as_temperature_is():
    """The Python API takes numbers: "0.9" for threshold is refused as "0" for temperature is (text is read only
    in specs, sweep grids and on the command line)."""
    import pytest

    from unmask.decoding.config import DecodeConfig
    from unmask.eval.spec import parse_spec

    for settings, message in (({"policy": "threshold", "threshold": "0.9"}, "threshold must be a number"),
                              ({"policy": "topk", "steps": "8"}, "steps must be an integer"),
                              ({"temperature": "0"}, "temperature")):
        with pytest.raises(ValueError, match=message):
            DecodeConfig.create(gen_length=16, block_length=8, **settings)
    assert parse_spec("threshold:0.9").generate_kwargs()["threshold"] == 0.9  # text in a spec is read


def test_the_default_is_the_fast_spec_and_the_baseline_one_keyword_away():
    """No policy: ``DEFAULT_SPEC`` (the tuned fast default, the same settings as the spec grammar's); options given
    without a policy go to the default when they are its own, to topk when they name its steps (LLaDA's calls),
    else an error that names the policies they belong to."""
    from unmask.decoding.config import DEFAULT_SPEC
    from unmask.eval.spec import parse_spec

    default = DecodeConfig()
    assert repr(default.build_policy()) == repr(DecodeConfig.create(**parse_spec(DEFAULT_SPEC).generate_kwargs())
                                                .build_policy())
    assert repr(default.build_policy()) == "EntropyBounded(gamma=0.01)" and default.cache == "none"
    assert DecodeConfig.create(gamma=0.1).build_policy().gamma == 0.1
    assert DecodeConfig.create(policy="topk").build_policy().name == "topk"
    assert DecodeConfig.create(steps=64).build_policy().name == "topk"
    assert DecodeConfig.create(policy="threshold").options == {}  # another policy: the default's option goes
    assert DecodeConfig(policy="threshold").build_policy() == Threshold(0.9)
    # a named policy takes its own default, as the spec grammar does ("eb": gamma 0.15); the unnamed default: 0.01
    assert repr(DecodeConfig.create(policy="eb").build_policy()) == repr(DecodeConfig.create(
        **parse_spec("eb").generate_kwargs()).build_policy()) == "EntropyBounded(gamma=0.15)"
    with pytest.raises(ValueError, match="threshold=0.8 given without a policy: they belong to threshold, .*klass"):
        DecodeConfig.create(threshold=0.8)
