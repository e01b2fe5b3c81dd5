"""``DecodeConfig``: every decoding setting of ``DiffusionLM.generate`` in one validated object.

Like Hugging Face's ``GenerationConfig`` or vLLM's ``SamplingParams``: build it once (or pass the same
settings as keywords to ``generate``), and every value is checked at construction, with an error that
names the value and what is allowed. The policy's own option (``threshold=0.9``, ``margin=0.25``, ...)
comes from the policy registry (docs/design.md §6a).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from unmask.decoding.credit import CreditConfig
from unmask.decoding.loop import check_lengths, resolve_compile
from unmask.decoding.policies import (
    REGISTRY,
    CommitPolicy,
    get_policy_class,
    knob_names,
    make_policy,
    policy_names,
)
from unmask.decoding.scorers import CONFIDENCE_DTYPES, CONFIDENCE_FROM, SCORER_NAMES, Scorer
from unmask.models.cache import canonical_cache

# The default spec of generate(), the CLI and eval's Python API: the cheapest spec (fewest forwards) whose dev accuracy
# is within 0.5 point of LLaDA's baseline (topk) on both embedded testbeds, math and code (``unmask tune``; docs/
# benchmarks/rules.md). The baseline is one keyword away: ``policy="topk"``.
DEFAULT_POLICY = "eb"
DEFAULT_OPTIONS: dict[str, Any] = {"gamma": 0.01}
DEFAULT_SPEC = f"{DEFAULT_POLICY}:{DEFAULT_OPTIONS['gamma']:g}"  # the same in the spec grammar


class _Unnamed:
    """The ``policy`` field left out (``None`` stays an error, as any other bad value)."""

    def __repr__(self) -> str:
        return "<unnamed: the policy the options belong to>"


UNNAMED = _Unnamed()


def policy_of_options(options: dict[str, Any]) -> str:
    """The policy that options given without one belong to: the default's if they are its own, else LLaDA's baseline
    topk if they name its knob (``steps=128``), else the one policy whose main knob they name; an error where that
    is not one policy."""
    if set(options) <= REGISTRY[DEFAULT_POLICY].option_keywords():
        return DEFAULT_POLICY
    named = [name for name, cls in REGISTRY.items() if set(options) <= cls.option_keywords()
             and set(options) & cls.knob_keywords()]
    if "topk" in named or len(named) == 1:
        return "topk" if "topk" in named else named[0]
    given = ", ".join(f"{k}={v!r}" for k, v in options.items())
    owners = ", ".join(named) or "no single policy"
    raise ValueError(f"policy option(s) {given} given without a policy: they belong to {owners}; name the policy, "
                     f"e.g. policy={(named or ['topk'])[0]!r} (the default policy is {DEFAULT_SPEC}: "
                     f"{REGISTRY[DEFAULT_POLICY].knob.name} only)")


@dataclass
class DecodeConfig:
    """Decoding settings (defaults: the fast default ``DEFAULT_SPEC``, EB-Sampler at gamma 0.01, block 32, no
    cache; ``policy="topk"`` is LLaDA's baseline, one token per step).

    policy: a registered policy name or a policy object; ``options`` holds the named policy's option,
    e.g. ``{"threshold": 0.9}`` (``DecodeConfig.create(policy="threshold", threshold=0.9)`` sorts the
    keywords). credit: ``True`` (paper defaults) or a ``CreditConfig``. cache: none | prefix | dual.
    temperature: Gumbel sampling temperature (0: greedy). scorer: confidence | margin | entropy | random.
    cfg_scale: LLaDA's unsupervised classifier-free guidance. compile: ``None`` = the model's setting.
    confidence_dtype: ``float64`` (Fast-dLLM, LLaDA's earlier generate.py) or ``logits`` (LLaDA's generate.py at
    HEAD: the confidence softmax in the logits' dtype, bf16 on a GPU); float32/float64 models: the same result.
    top_p / top_k: Dream's sampling filters (nucleus, then top-k) on logits / temperature before the candidate is
    drawn (at temperature 0 they change only a ``sampling`` confidence). confidence_from: ``logits`` (the model's
    softmax; LLaDA, Fast-dLLM) or ``sampling`` (the distribution the candidate is drawn from; Dream).
    """

    policy: str | CommitPolicy = UNNAMED  # left out: ``policy_of_options(options)``, the default without options
    options: dict[str, Any] = field(default_factory=dict)
    gen_length: int = 128
    block_length: int = 32
    credit: bool | CreditConfig = False
    cache: str = "none"
    temperature: float = 0.0
    scorer: str = "confidence"
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    early_stop: bool = True
    seed: int | None = None
    compile: bool | str | None = None
    confidence_dtype: str = "float64"
    top_p: float | None = None
    top_k: int | None = None
    confidence_from: str = "logits"

    def __post_init__(self) -> None:
        check_lengths(self.gen_length, self.block_length)
        if not isinstance(self.options, dict):
            raise ValueError(f"options must be a dict of the policy's option, e.g. {{'threshold': 0.9}}, "
                             f"got {self.options!r}")
        if self.policy is UNNAMED or isinstance(self.policy, str):
            self.options = {k: v for k, v in dict(self.options).items() if v is not None}
            if self.policy is UNNAMED:  # the policy the options belong to, with the default's option where not given
                self.policy = policy_of_options(self.options)
                if self.policy == DEFAULT_POLICY:
                    self.options = {**DEFAULT_OPTIONS, **self.options}
            self.build_policy()  # the policy's name and option are checked here
        elif not isinstance(self.policy, CommitPolicy):
            raise ValueError(f"policy must be a name ({', '.join(policy_names())}) or a policy object, "
                             f"got {self.policy!r}")
        elif self.options:
            raise ValueError(f"give the options of a policy object to its constructor, not {', '.join(self.options)}")
        if not isinstance(self.credit, (bool, CreditConfig)):
            raise ValueError(f"credit must be True, False or a CreditConfig, got {self.credit!r}")
        self.cache = canonical_cache(self.cache)  # checked; one spelling per mode (batch signatures, engines)
        policy_class = type(self.policy) if isinstance(self.policy, CommitPolicy) else get_policy_class(self.policy)
        if policy_class.shadow_block and self.cache != "none":
            raise ValueError(f"policy {policy_class.name!r} verifies with a shadow block in a forward over the whole "
                             f"canvas: cache must be 'none', got {self.cache!r}")
        self.temperature = _check_number("temperature", self.temperature, ">= 0", lambda v: v >= 0)
        self.cfg_scale = _check_number("cfg_scale", self.cfg_scale, ">= 0", lambda v: v >= 0)
        if not isinstance(self.scorer, str) or self.scorer not in SCORER_NAMES:
            raise ValueError(f"unknown scorer {self.scorer!r} (allowed: {', '.join(SCORER_NAMES)})")
        if not isinstance(self.confidence_dtype, str) or self.confidence_dtype not in CONFIDENCE_DTYPES:
            raise ValueError(f"confidence_dtype must be one of {', '.join(CONFIDENCE_DTYPES)}, "
                             f"got {self.confidence_dtype!r}")
        if self.top_p is not None:
            self.top_p = _check_number("top_p", self.top_p, "in (0, 1]", lambda v: 0 < v <= 1)
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 or None, got {self.top_k!r}")
        if not isinstance(self.confidence_from, str) or self.confidence_from not in CONFIDENCE_FROM:
            raise ValueError(f"confidence_from must be one of {', '.join(CONFIDENCE_FROM)}, "
                             f"got {self.confidence_from!r}")
        for name in ("logits_eos_inf", "confidence_eos_eot_inf", "early_stop"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
        if self.seed is not None and not 0 <= self.seed < 2**64:  # torch.Generator's seeds
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        resolve_compile(self.compile, torch.device("cpu"))  # checks the value

    @classmethod
    def create(cls, config: DecodeConfig | None = None, **settings: Any) -> DecodeConfig:
        """``config`` (or the defaults) with ``settings`` replaced; policy options go to ``options``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in settings if k not in fields and k not in knob_names())
        if unknown:
            raise ValueError(f"unknown decoding setting(s) {', '.join(unknown)} (settings: "
                             f"{', '.join(sorted(fields))}; policy options: {', '.join(sorted(knob_names()))})")
        if config is not None and not isinstance(config, DecodeConfig):
            raise ValueError(f"config must be a DecodeConfig or None (settings go as keywords: policy=..., "
                             f"threshold=...), got {config!r}")
        if not isinstance(settings.get("options", {}), dict):
            raise ValueError(f"options must be a dict of the policy's option, e.g. {{'threshold': 0.9}}, "
                             f"got {settings['options']!r}")
        options = {k: settings.pop(k) for k in list(settings) if k not in fields}
        if config is None:  # from the defaults: an unnamed policy is the one the options belong to (__post_init__)
            return cls(**{**settings, "options": {**options, **settings.get("options", {})}})
        base = config
        if "policy" in settings and settings["policy"] != base.policy:
            base = dataclasses.replace(base, options={})  # another policy: the old policy's option goes
        merged = {**base.options, **options, **settings.pop("options", {})}
        return dataclasses.replace(base, options=merged, **settings)

    def build_policy(self) -> CommitPolicy:
        if isinstance(self.policy, CommitPolicy):
            return self.policy
        return make_policy(self.policy, gen_length=self.gen_length, block_length=self.block_length, **self.options)

    def build_scorer(self, eot_id: int | None = None, generator: torch.Generator | None = None) -> Scorer:
        """The scorer of these settings (``eot_id``: the tokenizer's end of turn, for ``confidence_eos_eot_inf``)."""
        exclude = (eot_id,) if self.confidence_eos_eot_inf and eot_id is not None else ()
        return Scorer(self.scorer, self.temperature, generator, exclude, self.confidence_dtype, self.top_p, self.top_k,
                      self.confidence_from)

    @property
    def credit_config(self) -> CreditConfig | None:
        return CreditConfig() if self.credit is True else (self.credit or None)


def _check_number(name: str, value: Any, allowed: str, check) -> float:
    """``value`` as a float if it is a finite number (not a bool) that passes ``check``; else a ``ValueError``."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok or not check(value):
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return float(value)
