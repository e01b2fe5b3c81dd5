# ruff: noqa: I001 (the imports below register the policies, in the order the help texts list them)
"""Commit policies, one module each, registered by name (docs/design.md §6).

Importing this package registers the built-in policies; ``make_policy(name, **knob)`` builds one,
``REGISTRY`` / ``policy_names()`` list them. A new policy is a module here that defines a
``CommitPolicy`` dataclass with ``name``, ``knob`` and ``__call__``, decorated with ``@register``,
and is imported below.
"""

from unmask.decoding.policies.base import (
    REGISTRY,
    CommitPolicy,
    Knob,
    commit_top_n,
    get_policy_class,
    knob_names,
    make_policy,
    policy_names,
    register,
    sorted_confidence,
)
from unmask.decoding.policies.topk import TopK, num_transfer_tokens
from unmask.decoding.policies.threshold import Threshold
from unmask.decoding.policies.factor import Factor
from unmask.decoding.policies.frechet import Frechet

Policy = CommitPolicy
POLICY_NAMES: tuple[str, ...] = policy_names()

__all__ = [
    "REGISTRY", "CommitPolicy", "Knob", "Policy", "POLICY_NAMES", "TopK", "Threshold", "Factor", "Frechet",
    "commit_top_n", "get_policy_class", "knob_names", "make_policy", "num_transfer_tokens", "policy_names",
    "register", "sorted_confidence",
]
