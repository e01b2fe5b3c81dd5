"""The policy registry: a new policy is one class, and the spec parser, the API, the lm-eval adapter and
the loop pick it up by name; options of another policy are errors."""

from dataclasses import dataclass

import pytest
import torch

from unmask.decoding import decode
from unmask.decoding.policies import REGISTRY, CommitPolicy, Knob, make_policy, register
from unmask.eval.spec import parse_spec


@pytest.fixture
def near_top():
    """docs/design.md's worked example: commit every masked position within ``near`` of the row's best."""

    @register
    @dataclass
    class NearTop(CommitPolicy):
        near: float = 0.1
        name = "near_top"
        knob = Knob("near", float, 0.1, "in [0, 1]", lambda v: 0 <= v <= 1, "near_top: distance to the best")

        def __call__(self, confidence, masked, step, schedule):
            best = confidence.max(dim=-1, keepdim=True).values
            return masked & (confidence >= best - self.near)

    yield NearTop
    del REGISTRY["near_top"]


def test_a_registered_policy_is_usable_everywhere(near_top, tiny_ckpt):
    import unmask

    assert make_policy("near_top", near=0.2) == near_top(0.2)
    spec = parse_spec("near_top:0.3@dual")
    assert spec.generate_kwargs() == {"policy": "near_top", "cache": "dual", "near": 0.3}
    with pytest.raises(ValueError, match=r"near_top near must be in \[0, 1\], got 2"):
        parse_spec("near_top:2")
    lm = unmask.load(tiny_ckpt, dtype="float64", device="cpu")
    out = lm.generate("hello world", gen_length=16, block_length=8, **spec.generate_kwargs())
    assert 2 <= out.nfe <= 16
    x = torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(0))
    wide = decode(lm.model, x, near_top(1.0), mask_id=lm.mask_id, gen_length=16, block_length=8, early_stop=False)
    assert wide.nfe == 2  # within 1.0 of the best: the whole block at once


def test_a_module_dropped_into_the_package_is_registered(tmp_path):
    """Adding a policy is one file: a module in decoding/policies/ is found and registered on import."""
    import subprocess
    import sys
    from pathlib import Path

    import unmask.decoding.policies as package

    folder = Path(package.__file__).parent
    module = folder / "zz_test_policy.py"
    module.write_text(
        "from dataclasses import dataclass\n"
        "from unmask.decoding.policies.base import CommitPolicy, Knob, register\n\n\n"
        "@register\n@dataclass\nclass Everything(CommitPolicy):\n"
        "    all: float = 1.0\n    name = 'everything'\n"
        "    knob = Knob('all', float, 1.0, '> 0', lambda v: v > 0, 'everything: unused')\n\n"
        "    def __call__(self, confidence, masked, step, schedule):\n        return masked\n"
    )
    try:
        code = ("from unmask.decoding.policies import POLICY_NAMES, make_policy; "
                "print(POLICY_NAMES[-1], make_policy('everything', all=2.0))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    finally:
        module.unlink()
    assert out.strip() == "everything Everything(all=2.0)"


def test_registering_a_name_twice_fails(near_top):
    with pytest.raises(ValueError, match="registered twice"):
        register(near_top)


@pytest.mark.parametrize("name,knobs,message", [
    ("threshold", {"margin": 0.3}, "margin do not apply to policy 'threshold'"),
    ("frechet", {"margin": 0.2, "factor": 0.5}, "one of factor, margin, not several"),
    ("factor", {"facter": 1.0}, "unknown policy option 'facter'"),
    ("topk", {"steps": 7}, r"steps=7 must be a positive multiple of the number of blocks \(2\)"),
    ("topk", {"steps": 2.5}, "topk steps must be an integer"),
    ("threshold", {"threshold": "high"}, "threshold must be a number in"),
    ("threshold", {"threshold": float("nan")}, r"threshold must be in \(0, 1\], got nan"),
])
def test_policy_options_are_checked(name, knobs, message):
    with pytest.raises(ValueError, match=message):
        make_policy(name, gen_length=64, block_length=32, **knobs)


def test_frechet_factor_alias_sets_the_margin():
    assert make_policy("frechet", factor=0.75).margin == pytest.approx(0.25)
    assert make_policy("frechet").margin == 0.25


def test_generate_rejects_options_of_another_policy(tiny_ckpt):
    import unmask

    lm = unmask.load(tiny_ckpt, dtype="float64", device="cpu")
    with pytest.raises(ValueError, match="margin do not apply to policy 'threshold'"):
        lm.generate("hello", policy="threshold", margin=0.3, gen_length=8, block_length=8)
    with pytest.raises(ValueError, match="unknown decoding setting.s. temprature .settings: .*temperature"):
        lm.generate("hello", temprature=0.5, gen_length=8, block_length=8)
