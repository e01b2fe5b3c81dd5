"""Fixtures of the model tests."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny (mostly float64) matmuls: two threads on a shared 2-core machine spin far longer than they
    compute, so each model test module runs on one (the previous count restored after it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
