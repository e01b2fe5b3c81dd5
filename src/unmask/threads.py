"""How many threads torch uses on the CPU: the one rule, applied at the start of every CLI command.

``cpu_threads(cores, load, env, requested)`` (pure, unit-tested):

1. ``--threads N`` (``requested``), if given;
2. else ``UNMASK_THREADS``, then ``OMP_NUM_THREADS``, if set to a positive integer;
3. else the idle cores: ``cores - load`` rounded up, between 1 and ``cores``, where ``cores`` is the
   number of CPUs this process may run on (``os.sched_getaffinity``: a container's or ``taskset``'s
   limit, not the machine's count) and ``load`` the 1-minute load average. On an idle machine that is
   every core; on one whose cores are already busy (load >= cores) a single thread, since intra-op
   threads that wait for a core stall each other at every barrier.

torch's own default is every core of the machine, which oversubscribes a shared or busy machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

THREAD_ENV = ("UNMASK_THREADS", "OMP_NUM_THREADS")  # in order of precedence
MAX_THREADS = 4096
THREADS_HELP = ("CPU threads for torch (default: UNMASK_THREADS or OMP_NUM_THREADS, else the idle cores "
                "of those this process may use).")


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the system has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def check_threads(value: object, name: str = "--threads") -> int:
    """``value`` as a thread count in [1, MAX_THREADS] (an int or its string); else a ``ValueError`` naming it."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not 1 <= number <= MAX_THREADS:
        raise ValueError(f"{name} must be an integer in [1, {MAX_THREADS}], got {value!r}")
    return number


def cpu_threads(cores: int, load: float | None, env: Mapping[str, str], requested: int | None = None) -> int:
    """The number of torch threads for the CPU (the rule in the module docstring)."""
    if requested is not None:
        return check_threads(requested)
    for name in THREAD_ENV:
        value = env.get(name, "").strip()
        if value:
            if name == "OMP_NUM_THREADS" and not value.isdigit():
                continue  # OpenMP's own syntax (e.g. "4,2"): not ours to judge
            return check_threads(value, name)
    cores = max(1, cores)
    if load is None or not math.isfinite(load):
        return cores
    return min(cores, max(1, math.ceil(cores - load)))


def set_cpu_threads(device: object = None, requested: int | None = None) -> int | None:
    """Apply ``cpu_threads`` when ``device`` resolves to the CPU (or ``--threads`` was given); the count set,
    or ``None`` where nothing was changed (a CUDA device, no ``--threads``)."""
    import torch

    if requested is not None:
        requested = check_threads(requested)
    elif device is not None or torch.cuda.is_available():
        from unmask.models.loading import resolve_device

        if resolve_device(device).type != "cpu":
            return None
    threads = cpu_threads(available_cores(), load_average(), os.environ, requested)
    torch.set_num_threads(threads)
    return threads
