"""The CPU thread rule (``unmask.threads.cpu_threads``): a pure function of cores, load, environment, request."""

import pytest
import torch

from unmask.threads import cpu_threads, set_cpu_threads


@pytest.mark.parametrize(("cores", "load", "env", "requested", "threads"), [
    (8, 0.0, {}, None, 8),  # idle: every core
    (8, 0.4, {}, None, 8),  # a little background work: still every core
    (8, 3.0, {}, None, 5),  # three cores busy: the five idle ones
    (8, 7.5, {}, None, 1),  # ceil(0.5)
    (2, 8.5, {}, None, 1),  # cores busier than they are many: one thread, never zero
    (4, None, {}, None, 4),  # no load average on this system
    (4, float("nan"), {}, None, 4),
    (4, 9.0, {"OMP_NUM_THREADS": "3"}, None, 3),  # the environment wins over the load
    (4, 0.0, {"UNMASK_THREADS": "2", "OMP_NUM_THREADS": "3"}, None, 2),  # ours before OpenMP's
    (4, 0.0, {"OMP_NUM_THREADS": "4,2"}, None, 4),  # OpenMP's nested syntax: not ours, ignored
    (4, 0.0, {"UNMASK_THREADS": " "}, None, 4),  # blank: unset
    (4, 9.0, {"UNMASK_THREADS": "2"}, 6, 6),  # --threads wins over everything
    (0, 0.0, {}, None, 1),  # at least one
])
def test_the_thread_rule(cores, load, env, requested, threads):
    assert cpu_threads(cores, load, env, requested) == threads


@pytest.mark.parametrize(("env", "requested", "message"), [
    ({"UNMASK_THREADS": "0"}, None, "UNMASK_THREADS must be an integer in [1, 4096], got '0'"),
    ({"UNMASK_THREADS": "many"}, None, "UNMASK_THREADS must be an integer in [1, 4096], got 'many'"),
    ({"OMP_NUM_THREADS": "0"}, None, "OMP_NUM_THREADS must be an integer in [1, 4096], got '0'"),
    ({}, 0, "--threads must be an integer in [1, 4096], got 0"),
    ({}, 10**6, "--threads must be an integer in [1, 4096], got 1000000"),
    ({}, True, "--threads must be an integer in [1, 4096], got True"),
])
def test_bad_thread_counts_are_named(env, requested, message):
    with pytest.raises(ValueError) as err:
        cpu_threads(4, 0.0, env, requested)
    assert str(err.value) == message


def test_set_cpu_threads_applies_on_the_cpu_only():
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads("cpu", 1) == 1 and torch.get_num_threads() == 1
        threads = set_cpu_threads("cpu")
        assert threads >= 1 and torch.get_num_threads() == threads
        if not torch.cuda.is_available():
            with pytest.raises(ValueError, match="CUDA is not available"):
                set_cpu_threads("cuda")  # a device this machine lacks fails before anything loads
    finally:
        torch.set_num_threads(before)
