"""Shared fixtures: tiny models and data, built in the tests (no network, no GPU)."""
from __future__ import annotations

import pytest
import torch

# The tests use tiny tensors, for which one thread is fastest (thread hand-offs cost more than the
# work); it also keeps two-process tests (DDP) from oversubscribing CI's two cores.
torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for every test module, restored afterwards (commands under test may set others)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_synthetic():
    from robust.synthetic import SyntheticBenchmark

    return SyntheticBenchmark(size=16, seed=0)
