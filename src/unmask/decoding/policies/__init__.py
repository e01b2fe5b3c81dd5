"""Commit policies, one module each, registered by name (docs/design.md §6, §6a).

Every module of this package is imported here (the built-in rules first, in the order the help texts
list them), and each registers its policy with ``@register``: adding a policy is one module in this
folder and its test. ``make_policy(name, **option)`` builds one; ``REGISTRY`` / ``policy_names()``
list them.
"""

import importlib
import pkgutil

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

_BUILT_IN = ("topk", "threshold", "factor", "frechet")
_OTHERS = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in (*_BUILT_IN, "base"))
for _module in (*_BUILT_IN, *_OTHERS):
    importlib.import_module(f"{__name__}.{_module}")

from unmask.decoding.policies.factor import Factor  # noqa: E402 (registered above)
from unmask.decoding.policies.frechet import Frechet  # noqa: E402
from unmask.decoding.policies.threshold import Threshold  # noqa: E402
from unmask.decoding.policies.topk import TopK, num_transfer_tokens  # noqa: E402

Policy = CommitPolicy
POLICY_NAMES: tuple[str, ...] = policy_names()

__all__ = [
    "REGISTRY", "CommitPolicy", "Knob", "Policy", "POLICY_NAMES", "TopK", "Threshold", "Factor", "Frechet",
    "commit_top_n", "get_policy_class", "knob_names", "make_policy", "num_transfer_tokens", "policy_names",
    "register", "sorted_confidence",
]
