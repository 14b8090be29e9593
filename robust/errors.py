"""Exceptions raised by robust: one class per kind of fault, each message naming what was expected."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class RobustError(Exception):
    """Base class of every error robust raises on purpose (the CLI prints these in one line)."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


class InputError(RobustError, ValueError):
    """An argument or file does not have the shape, type, range or content that was expected.

    The message always reads ``"<name>: expected <expected>, got <got>"``.
    """

    def __init__(self, name: str, expected: str, got: Any):
        self.name = name
        self.expected = expected
        self.got = got if isinstance(got, str) else _describe(got)
        super().__init__(f"{name}: expected {expected}, got {self.got}")


class UnknownNameError(InputError, KeyError):
    """A name looked up in a registry does not exist; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        self.valid = sorted(valid)
        super().__init__(kind, f"one of {', '.join(self.valid) or '(none registered)'}", repr(name))

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class GradientUnavailableError(RobustError, TypeError):
    """A gradient-based method was asked of a classifier without gradients (e.g. an ONNX model)."""


class FileFormatError(InputError):
    """A file is missing, unreadable, or not in the format its name or the caller implies."""

    def __init__(self, path: Any, expected: str, got: Any):
        super().__init__(f"file {str(path)!r}", expected, got)


class GateFailure(RobustError):
    """One or more audit gates failed (carries the failing gates)."""

    def __init__(self, failed: list[Any]):
        self.failed = failed
        super().__init__(f"{len(failed)} gate(s) failed: " + "; ".join(str(g) for g in failed))
