"""Presentation of audit results: report.json (versioned schema), index.html, report.md, junit.xml, gates, diffs.

``write_reports(result, out_dir)`` writes every format; formats are registered by name in
:data:`FORMATS` (``json``, ``html``, ``md``, ``junit``). This package reads only
:mod:`robust.results` types (plus :mod:`robust.io` for atomic writes).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from robust.errors import InputError
from robust.registry import Registry
from robust.results import AuditResult

from reports.diff import MetricDelta, ReportDiff, diff_reports
from reports.gates import Gate, evaluate_gates, parse_gate
from reports.html import render_html, write_html_report
from reports.json_report import SCHEMA_VERSION, load_report, read_report_data, report_dict, schema, validation_errors, write_json_report
from reports.junit import render_junit, write_junit_report
from reports.markdown import render_markdown, write_markdown_report
from reports.terminal import format_summary

Writer = Callable[[AuditResult, Path], Path]

FORMATS: Registry[Writer] = Registry("report format")
FORMATS.add("json", write_json_report, file="report.json")
FORMATS.add("html", write_html_report, file="index.html")
FORMATS.add("md", write_markdown_report, file="report.md")
FORMATS.add("junit", write_junit_report, file="junit.xml")
ALL_FORMATS = ("json", "html", "md", "junit")


def write_reports(result: AuditResult, out_dir: str | Path, formats: Iterable[str] = ALL_FORMATS) -> dict[str, Path]:
    """Write ``result`` in each of ``formats`` into ``out_dir``; returns format -> path written."""
    formats = list(formats)
    if not formats:
        raise InputError("formats", "at least one of " + ", ".join(FORMATS.names()), "none")
    writers = {name: FORMATS.get(name) for name in formats}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {name: writer(result, out) for name, writer in writers.items()}


__all__ = [
    "ALL_FORMATS", "FORMATS", "Gate", "MetricDelta", "ReportDiff", "SCHEMA_VERSION", "diff_reports", "evaluate_gates",
    "format_summary", "load_report", "parse_gate", "read_report_data", "render_html", "render_junit", "render_markdown",
    "report_dict", "schema", "validation_errors", "write_reports",
]
