"""Small value checks for settings: each returns the value or raises a ``ValueError`` that names the
setting, what is allowed and the value given (``bool`` is never taken for a number; NaN, infinities and
ints too large for a float fail the float checks)."""

from __future__ import annotations

import math
from typing import Any


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer in ``[low, high]`` (``high`` None: no upper bound)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    return value


def check_float(name: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False,
                high_open: bool = False) -> float:
    """A finite number in ``[low, high]`` (``(`` / ``)`` where open), as a float."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        ok = False
    if ok:
        number = float(value)
        ok = (number > low if low_open else number >= low) and (number < high if high_open else number <= high)
    if not ok:
        if high == math.inf:
            allowed = f"{'>' if low_open else '>='} {low:g}"
        else:
            allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: Any, allowed: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {name} {value!r} (allowed: {', '.join(allowed)})")
    return value
