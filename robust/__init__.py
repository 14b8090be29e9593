"""robust: find, fix and prove the robustness of image classifiers.

Core modules: :mod:`robust.models` (classifier adapters), :mod:`robust.data` (datasets and the
synthetic benchmark in :mod:`robust.synthetic`), :mod:`robust.transforms` (the transform
interface), :mod:`robust.results` (typed results). See the README for the architecture.
"""
from __future__ import annotations

__version__ = "0.1.0"
