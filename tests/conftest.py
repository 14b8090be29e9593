"""Shared fixtures: tiny models and data, built in the tests (no network, no GPU)."""
from __future__ import annotations

import os

import pytest
import torch

# Two cores in CI: keep torch from oversubscribing them when tests run in one process.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_synthetic():
    from robust.synthetic import SyntheticBenchmark

    return SyntheticBenchmark(size=16, seed=0)
