"""pytest plugin (registered through the ``pytest11`` entry point ``robust``).

It adds robustness fixtures, options and a marker; see :mod:`robust.strategies` and
:mod:`robust.testing` for what tests call.
"""
from __future__ import annotations
