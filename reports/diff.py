"""Comparing two reports: metric deltas between two models, or two versions of one (``robust report diff``)."""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robust.results import AuditResult

from reports.html import fmt


@dataclass
class MetricDelta:
    """One metric in both reports (``a``/``b`` None where a report lacks it)."""

    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        if self.a is None or self.b is None or math.isnan(self.a) or math.isnan(self.b):
            return None
        return self.b - self.a


@dataclass
class ReportDiff:
    """Differences between report ``a`` (the baseline) and report ``b``."""

    a_label: str
    b_label: str
    rows: list[MetricDelta] = field(default_factory=list)
    gates: list[tuple[str, bool | None, bool | None]] = field(default_factory=list)  # expression, passed in a, in b
    same_model: bool = False
    same_data: bool = False

    @property
    def common(self) -> list[MetricDelta]:
        return [r for r in self.rows if r.a is not None and r.b is not None]

    @property
    def only_a(self) -> list[str]:
        return [r.metric for r in self.rows if r.b is None]

    @property
    def only_b(self) -> list[str]:
        return [r.metric for r in self.rows if r.a is None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a_label,
            "b": self.b_label,
            "same_model": self.same_model,
            "same_data": self.same_data,
            "metrics": [{"metric": r.metric, "a": r.a, "b": r.b, "delta": r.delta} for r in self.rows],
            "gates": [{"expression": e, "a": pa, "b": pb} for e, pa, pb in self.gates],
        }

    def format(self, *, only_changed: bool = False, tolerance: float = 0.0) -> str:
        """A text table; ``only_changed`` hides metrics whose delta is within ``tolerance``."""
        rows = [r for r in self.rows if not (only_changed and r.delta is not None and abs(r.delta) <= tolerance)]
        width = max([6] + [len(r.metric) for r in rows])
        lines = [f"a: {self.a_label}", f"b: {self.b_label}",
                 f"model {'same' if self.same_model else 'different'}, data {'same' if self.same_data else 'different'}",
                 f"{'metric':<{width}}  {'a':>9}  {'b':>9}  {'b - a':>9}"]
        for r in rows:
            delta = "" if r.delta is None else f"{r.delta:+.4f}"
            lines.append(f"{r.metric:<{width}}  {fmt(r.a):>9}  {fmt(r.b):>9}  {delta:>9}")
        for expression, pa, pb in self.gates:
            shown = {True: "pass", False: "FAIL", None: "-"}
            lines.append(f"gate {expression}: {shown[pa]} -> {shown[pb]}")
        return "\n".join(lines)


def diff_reports(a: AuditResult | str | Path, b: AuditResult | str | Path, *, metrics: str | None = None) -> ReportDiff:
    """Metric-by-metric differences of ``b`` against ``a`` (results or report paths); ``metrics`` is a glob filter."""
    from reports.json_report import load_report

    labels = [str(x) if not isinstance(x, AuditResult) else str(x.model.get("source") or x.model.get("name", "report")) for x in (a, b)]
    ra = a if isinstance(a, AuditResult) else load_report(a, images=False)
    rb = b if isinstance(b, AuditResult) else load_report(b, images=False)
    ma, mb = ra.metrics(), rb.metrics()
    names = list(ma) + [m for m in mb if m not in ma]
    if metrics:
        names = [m for m in names if fnmatch.fnmatch(m, metrics)]
    rows = [MetricDelta(m, ma.get(m), mb.get(m)) for m in names]
    ga = {g.expression: g.passed for g in ra.gates}
    gb = {g.expression: g.passed for g in rb.gates}
    gates = [(e, ga.get(e), gb.get(e)) for e in list(ga) + [e for e in gb if e not in ga]]
    return ReportDiff(labels[0], labels[1], rows, gates,
                      same_model=ra.model.get("fingerprint") == rb.model.get("fingerprint"),
                      same_data=ra.data.get("fingerprint") == rb.data.get("fingerprint"))
