"""Decoding specs: one short string names a policy, its hyper-parameter, credit fusion and the cache mode.

Grammar: ``POLICY[:VALUE][+credit|+credit-adaptive][@CACHE]``, for example

- ``topk``                      LLaDA baseline, one token per step (``topk:64``: 64 steps in all)
- ``threshold:0.9``             Fast-dLLM threshold tau (default 0.9)
- ``factor:1.0``                Fast-dLLM factor f (default 1.0)
- ``frechet:0.25``              Fast-dLLM++ Fréchet margin delta (default 0.25)
- ``threshold:0.9+credit@dual`` CreditDecoding fused with the threshold rule, dual KV cache
- ``threshold:0.9+credit(alpha=0.5,beta=0.9)``  credit with other coefficients (``alpha``, ``beta``,
  ``gamma`` of ``CreditConfig``; the label keeps only those that differ from the defaults)
- ``klass:0.6(kl=0.015)``        a policy's further options in parentheses after its value (the label keeps
  only those that differ from the defaults)

Commas inside the parentheses do not separate specs in ``parse_specs``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from unmask.decoding.credit import CreditConfig
from unmask.decoding.policies import REGISTRY, get_policy_class
from unmask.models.cache import cache_forms, canonical_cache

CREDIT_OPTIONS = ("credit", "credit-adaptive")
CREDIT_PARAMS = ("alpha", "beta", "gamma")  # the CreditConfig coefficients a spec may set
_CREDIT_DEFAULTS = {name: getattr(CreditConfig(), name) for name in CREDIT_PARAMS}
SPEC_FORMS = (
    "POLICY[:VALUE][(OPTION=V,...)][+credit[(alpha=A,beta=B,gamma=G)]|+credit-adaptive][@CACHE] with POLICY in {"
    + ", ".join(REGISTRY) + "}, CACHE in {" + cache_forms() + "}; VALUE: "
    + ", ".join(f"{name} {cls.knob.name} {cls.knob.allowed}" for name, cls in REGISTRY.items())
    + "; e.g. topk, threshold:0.9, factor:1.0, frechet:0.25, threshold:0.9+credit@dual, "
    "frechet:0.1+credit(alpha=0.5,beta=0.9)"
)
_OPTION = r"\+[a-z-]+(?:\([^()]*\))?"
_CACHE = r"[a-z_]*(?:\([^()]*\))?"  # a registered cache mode, with its knobs: dual, prompt_stale(every=4)
_SPEC_RE = re.compile(
    rf"^(?P<policy>[a-z_]+)(?::(?P<value>[^+@()]*))?(?:\((?P<params>[^()]*)\))?(?P<options>(?:{_OPTION})*)"
    rf"(?:@(?P<cache>{_CACHE}))?$"
)
_OPTION_RE = re.compile(r"\+(?P<name>[a-z-]+)(?:\((?P<params>[^()]*)\))?")
_SEPARATOR_RE = re.compile(r"(?:\s*,\s*|\s+)(?![^()]*\))")  # a comma or blank outside parentheses


@dataclass(frozen=True)
class DecodeSpec:
    """A parsed spec. ``value`` is the policy's hyper-parameter (None: the policy's default)."""

    policy: str
    value: float | int | None = None
    credit: str | None = None  # None, "credit" or "credit-adaptive"
    cache: str = "none"
    # credit coefficients that differ from CreditConfig's defaults, as sorted (name, value) pairs
    credit_params: tuple[tuple[str, float], ...] = ()
    # the policy's further options that differ from their defaults, in the policy's order
    policy_params: tuple[tuple[str, float | int], ...] = ()

    def __post_init__(self) -> None:
        options = {o.name: o for o in get_policy_class(self.policy).options}
        given = dict(self.policy_params)
        unknown = sorted(k for k in given if k not in options)
        if unknown:
            raise ValueError(f"policy {self.policy!r} has no option(s) {', '.join(unknown)} "
                             f"(its options: {', '.join(options) or 'none'})")
        object.__setattr__(self, "policy_params", tuple(
            (k, given[k]) for k in options if k in given and given[k] != options[k].default))
        params = dict(self.credit_params)
        if params and self.credit != "credit":
            raise ValueError(f"credit coefficients {params} need credit='credit', got {self.credit!r}")
        canonical = tuple((k, float(params[k])) for k in CREDIT_PARAMS if k in params
                          and float(params[k]) != _CREDIT_DEFAULTS[k])
        object.__setattr__(self, "credit_params", canonical)

    @property
    def label(self) -> str:
        """The canonical spec string (parses back to an equal spec)."""
        text = self.policy
        if self.value is not None:
            text += f":{self.value:g}" if isinstance(self.value, float) else f":{self.value}"
        if self.policy_params:
            text += "(" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in self.policy_params) + ")"
        if self.credit:
            text += f"+{self.credit}"
        if self.credit_params:
            text += "(" + ",".join(f"{k}={v:g}" for k, v in self.credit_params) + ")"
        if self.cache != "none":
            text += f"@{self.cache}"
        return text

    @property
    def is_baseline(self) -> bool:
        """The LLaDA baseline: topk with one token per step, no credit, no cache."""
        return self.policy == "topk" and self.value is None and not self.credit and self.cache == "none"

    def generate_kwargs(self) -> dict:
        """Keyword arguments of ``DiffusionLM.generate`` for this spec."""
        kwargs: dict = {"policy": self.policy, "cache": self.cache}
        if self.value is not None:
            kwargs[get_policy_class(self.policy).knob.name] = self.value
        kwargs.update(self.policy_params)
        if self.credit == "credit":
            kwargs["credit"] = CreditConfig(**dict(self.credit_params)) if self.credit_params else True
        elif self.credit == "credit-adaptive":
            kwargs["credit"] = CreditConfig(adaptive=True)
        return kwargs

    def __str__(self) -> str:
        return self.label


def parse_spec(text: str) -> DecodeSpec:
    """Parse one spec string; a ``ValueError`` names the bad spec and the allowed forms."""
    if not isinstance(text, str):
        raise ValueError(f"decoding spec must be a string, got {text!r}; allowed: {SPEC_FORMS}")
    raw = text.strip().lower()
    match = _SPEC_RE.match(raw)
    if not match:
        raise ValueError(f"bad decoding spec {text!r}; allowed: {SPEC_FORMS}")
    policy = match["policy"]
    if policy not in REGISTRY:
        raise ValueError(f"bad decoding spec {text!r}: unknown policy {policy!r}; allowed: {SPEC_FORMS}")
    value: float | int | None = None
    if match["value"] is not None:
        value = _parse_value(text, policy, match["value"])
    policy_params: tuple[tuple[str, float | int], ...] = ()
    if match["params"] is not None:
        policy_params = _parse_policy_params(text, policy, match["params"])
    credit = None
    params: tuple[tuple[str, float], ...] = ()
    for option in _OPTION_RE.finditer(match["options"]):
        name = option["name"]
        if name not in CREDIT_OPTIONS:
            raise ValueError(f"bad decoding spec {text!r}: unknown option '+{name}'; allowed: {SPEC_FORMS}")
        if credit is not None:
            raise ValueError(f"bad decoding spec {text!r}: credit given twice; allowed: {SPEC_FORMS}")
        credit = name
        if option["params"] is not None:
            if name != "credit":
                raise ValueError(f"bad decoding spec {text!r}: '+{name}' takes no coefficients "
                                 f"(it sets them itself); allowed: {SPEC_FORMS}")
            params = _parse_credit_params(text, option["params"])
    cache = "none" if match["cache"] is None else match["cache"]
    try:
        cache = canonical_cache(cache)
    except ValueError as err:
        raise ValueError(f"bad decoding spec {text!r}: {err}; allowed: {SPEC_FORMS}") from None
    return DecodeSpec(policy=policy, value=value, credit=credit, cache=cache, credit_params=params,
                      policy_params=policy_params)


def _parse_policy_params(text: str, policy: str, params_text: str) -> tuple[tuple[str, float | int], ...]:
    """``kl=0.015,history=3`` -> (("kl", 0.015), ("history", 3)), each checked by its knob."""
    options = {o.name: o for o in get_policy_class(policy).options}
    params: dict[str, float | int] = {}
    for item in params_text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or name not in options:
            allowed = ", ".join(options) if options else "none (it has no options)"
            raise ValueError(f"bad decoding spec {text!r}: {policy} option {item.strip()!r} must be NAME=VALUE "
                             f"with NAME in {{{allowed}}}; allowed: {SPEC_FORMS}")
        if name in params:
            raise ValueError(f"bad decoding spec {text!r}: {policy} option {name} given twice; allowed: {SPEC_FORMS}")
        try:
            params[name] = options[name].parse(value, policy, text=True)
        except ValueError as err:
            raise ValueError(f"bad decoding spec {text!r}: {err}; allowed: {SPEC_FORMS}") from None
    return tuple(params.items())


def _parse_credit_params(text: str, params_text: str) -> tuple[tuple[str, float], ...]:
    """``alpha=0.5,beta=0.9`` -> (("alpha", 0.5), ("beta", 0.9)), checked by ``CreditConfig``."""
    params: dict[str, float] = {}
    for item in params_text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or name not in CREDIT_PARAMS:
            raise ValueError(f"bad decoding spec {text!r}: credit coefficient {item.strip()!r} must be NAME=VALUE "
                             f"with NAME in {{{', '.join(CREDIT_PARAMS)}}}; allowed: {SPEC_FORMS}")
        if name in params:
            raise ValueError(f"bad decoding spec {text!r}: credit {name} given twice; allowed: {SPEC_FORMS}")
        try:
            params[name] = float(value)
        except ValueError:
            raise ValueError(f"bad decoding spec {text!r}: credit {name} must be a number, got {value!r}; "
                             f"allowed: {SPEC_FORMS}") from None
    try:
        CreditConfig(**params)
    except ValueError as err:
        raise ValueError(f"bad decoding spec {text!r}: {err}; allowed: {SPEC_FORMS}") from None
    return tuple(params.items())


def _parse_value(text: str, policy: str, value_text: str) -> float | int:
    try:
        return get_policy_class(policy).knob.parse(value_text, policy, text=True)
    except ValueError as err:
        raise ValueError(f"bad decoding spec {text!r}: {err}; allowed: {SPEC_FORMS}") from None


def parse_specs(texts: str | list[str]) -> list[DecodeSpec]:
    """Parse specs given as a list or one comma/space-separated string (separators inside a credit
    option's parentheses do not count); duplicates are an error."""
    items = [texts] if isinstance(texts, str) else list(texts) if isinstance(texts, (list, tuple)) else None
    if items is None or not all(isinstance(item, str) for item in items):
        raise ValueError(f"decoding specs must be a string or a list of strings, got {texts!r}; allowed: {SPEC_FORMS}")
    texts = [t for item in items for t in _SEPARATOR_RE.split(item.strip()) if t]
    if not texts:
        raise ValueError(f"no decoding spec given; allowed: {SPEC_FORMS}")
    specs = [parse_spec(t) for t in texts]
    labels = [s.label for s in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"decoding spec(s) given twice: {', '.join(duplicates)}")
    seen: dict[str, str] = {}
    for spec in specs:  # 'threshold' and 'threshold:0.9' are one setting (the knob's default)
        kwargs = spec.generate_kwargs()
        knob = get_policy_class(spec.policy).knob
        kwargs[knob.name] = kwargs.get(knob.name, knob.default)  # the default given or not
        key = json.dumps(kwargs, sort_keys=True, default=repr)
        if key in seen:
            raise ValueError(f"decoding specs {seen[key]!r} and {spec.label!r} are the same setting: give one")
        seen[key] = spec.label
    return specs
