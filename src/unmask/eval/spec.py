"""Decoding specs: one short string names a policy, its hyper-parameter, credit fusion and the cache mode.

Grammar: ``POLICY[:VALUE][+credit|+credit-adaptive][@CACHE]``, for example

- ``topk``                      LLaDA baseline, one token per step (``topk:64``: 64 steps in all)
- ``threshold:0.9``             Fast-dLLM threshold tau (default 0.9)
- ``factor:1.0``                Fast-dLLM factor f (default 1.0)
- ``frechet:0.25``              Fast-dLLM++ Fréchet margin delta (default 0.25)
- ``threshold:0.9+credit@dual`` CreditDecoding fused with the threshold rule, dual KV cache
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from unmask.decoding.credit import CreditConfig
from unmask.decoding.policies import REGISTRY, get_policy_class
from unmask.models.cache import CACHE_MODES

CREDIT_OPTIONS = ("credit", "credit-adaptive")
SPEC_FORMS = (
    "POLICY[:VALUE][+credit|+credit-adaptive][@CACHE] with POLICY in {" + ", ".join(REGISTRY) + "}, "
    "CACHE in {" + ", ".join(CACHE_MODES) + "}; VALUE: "
    + ", ".join(f"{name} {cls.knob.name} {cls.knob.allowed}" for name, cls in REGISTRY.items())
    + "; e.g. topk, threshold:0.9, factor:1.0, frechet:0.25, threshold:0.9+credit@dual"
)
_SPEC_RE = re.compile(r"^(?P<policy>[a-z_]+)(?::(?P<value>[^+@]*))?(?P<options>(?:\+[a-z-]+)*)(?:@(?P<cache>[a-z]*))?$")


@dataclass(frozen=True)
class DecodeSpec:
    """A parsed spec. ``value`` is the policy's hyper-parameter (None: the policy's default)."""

    policy: str
    value: float | int | None = None
    credit: str | None = None  # None, "credit" or "credit-adaptive"
    cache: str = "none"

    @property
    def label(self) -> str:
        """The canonical spec string (parses back to an equal spec)."""
        text = self.policy
        if self.value is not None:
            text += f":{self.value:g}" if isinstance(self.value, float) else f":{self.value}"
        if self.credit:
            text += f"+{self.credit}"
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
        if self.credit == "credit":
            kwargs["credit"] = True
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
    options = [o for o in match["options"].split("+") if o]
    credit = None
    for option in options:
        if option not in CREDIT_OPTIONS:
            raise ValueError(f"bad decoding spec {text!r}: unknown option '+{option}'; allowed: {SPEC_FORMS}")
        if credit is not None:
            raise ValueError(f"bad decoding spec {text!r}: credit given twice; allowed: {SPEC_FORMS}")
        credit = option
    cache = "none" if match["cache"] is None else match["cache"]
    if cache not in CACHE_MODES:
        raise ValueError(f"bad decoding spec {text!r}: unknown cache mode {cache!r}; allowed: {SPEC_FORMS}")
    return DecodeSpec(policy=policy, value=value, credit=credit, cache=cache)


def _parse_value(text: str, policy: str, value_text: str) -> float | int:
    try:
        return get_policy_class(policy).knob.parse(value_text, policy)
    except ValueError as err:
        raise ValueError(f"bad decoding spec {text!r}: {err}; allowed: {SPEC_FORMS}") from None


def parse_specs(texts: str | list[str]) -> list[DecodeSpec]:
    """Parse specs given as a list or one comma/space-separated string; duplicates are an error."""
    if isinstance(texts, str):
        texts = [t for t in re.split(r"[,\s]+", texts) if t]
    else:
        texts = [t for item in texts for t in re.split(r"[,\s]+", item) if t]
    if not texts:
        raise ValueError(f"no decoding spec given; allowed: {SPEC_FORMS}")
    specs = [parse_spec(t) for t in texts]
    labels = [s.label for s in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"decoding spec(s) given twice: {', '.join(duplicates)}")
    return specs
