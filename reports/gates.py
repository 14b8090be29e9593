"""Gates: thresholds on metric paths (``"corruptions.mean_acc>=0.8"``) that decide whether an audit passes.

A gate reads ``<metric path> <op> <number>`` with ``op`` one of ``>= <= > < == !=`` and the number
written as ``0.8``, ``8/255`` or ``80%``. A metric that was not measured (its suite errored, was
skipped or is absent) fails its gate, with a message saying why.
"""
from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from robust.errors import InputError
from robust.results import AuditResult, GateResult

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
    "!=": lambda a, b: not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
_GATE_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)+)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>[^\s=<>!]\S*)\s*$"
)
GATE_SYNTAX = "<suite>.<metric> or <suite>.<case>.<metric>, an operator (>= <= > < == !=) and a number, e.g. pgd.linf_8.acc>=0.3"


@dataclass(frozen=True)
class Gate:
    """A parsed gate expression."""

    expression: str
    metric: str
    op: str
    threshold: float

    @property
    def suite(self) -> str:
        return self.metric.split(".", 1)[0]


def _parse_threshold(text: str, expression: str) -> float:
    try:
        if text.endswith("%"):
            value = float(text[:-1]) / 100.0
        elif "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"gate {expression!r}", "a threshold such as 0.8, 8/255 or 80%", text) from None
    if not math.isfinite(value):
        raise InputError(f"gate {expression!r}", "a finite threshold", text)
    return value


def parse_gate(expression: str | Gate) -> Gate:
    """Parse ``"corruptions.mean_acc>=0.8"``; raises :class:`InputError` showing the syntax when malformed."""
    if isinstance(expression, Gate):
        return expression
    if not isinstance(expression, str):
        raise InputError("gate", "an expression string", type(expression).__name__)
    match = _GATE_RE.match(expression)
    if not match:
        raise InputError("gate", GATE_SYNTAX, expression)
    text = "".join(expression.split())
    return Gate(text, match.group("metric"), match.group("op"), _parse_threshold(match.group("value"), expression))


def _missing_reason(result: AuditResult, gate: Gate, flat: dict[str, float]) -> str:
    names = [s.name for s in result.suites]
    if gate.suite not in names:
        return f"no suite {gate.suite!r} in this audit (suites: {', '.join(names) or 'none'})"
    suite = result.suite(gate.suite)
    if suite.status == "error":
        return f"suite {gate.suite!r} errored: {suite.error}"
    if suite.status == "skipped":
        return f"suite {gate.suite!r} was skipped: {suite.error or 'no reason given'}"
    close = difflib.get_close_matches(gate.metric, [m for m in flat if m.startswith(gate.suite + ".")], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"metric not measured{hint}"


def evaluate_gates(result: AuditResult, expressions: Iterable[str | Gate]) -> list[GateResult]:
    """Check every gate against the audit's metrics; missing or NaN metrics fail."""
    flat = result.metrics()
    out: list[GateResult] = []
    for expression in expressions:
        gate = parse_gate(expression)
        value = flat.get(gate.metric)
        if value is None:
            out.append(GateResult(gate.expression, gate.metric, gate.op, gate.threshold, None, False, _missing_reason(result, gate, flat)))
        elif math.isnan(value):
            out.append(GateResult(gate.expression, gate.metric, gate.op, gate.threshold, value, False, "metric is NaN"))
        else:
            passed = bool(OPS[gate.op](value, gate.threshold))
            out.append(GateResult(gate.expression, gate.metric, gate.op, gate.threshold, value, passed))
    return out
