"""``index.html``: one self-contained page (plots and images embedded as data URIs, no script, no network).

The page is built from a plain view model (:func:`html_view`) rendered by a Jinja2 template with
autoescaping on, so every user-provided string (class names, descriptions, error messages) is
escaped. A Content-Security-Policy forbids scripts and any fetch but inline images.

The renderer is generic: any suite's curves, per-case accuracy bars, per-class breakdown, strips,
failure galleries and ``details`` are drawn without suite-specific code. ``details`` keys the page
understands: ``tables`` (``[{title, columns, rows}]``), ``confusion`` (``{labels, matrix}``),
``notes`` (paragraphs), ``traceback``, ``plot_cases`` (a case metric to draw as bars),
``curve_layout`` (``"grid"``: one small panel per curve); anything else is shown as JSON.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robust.io import png_bytes, write_text
from robust.registry import format_number
from robust.results import AuditResult, CaseResult, SuiteResult

from reports.images import data_uri
from reports.json_report import plain
from reports.plots import bars_png, confusion_png, curves_png, per_class_png

HTML_NAME = "index.html"
MAX_PER_CLASS_COLUMNS = 6
MAX_BARS = 30
_KNOWN_DETAILS = ("tables", "confusion", "notes", "traceback", "plot_cases", "curve_layout")


def fmt(value: Any) -> str:
    """Numbers as 4 significant digits (round-off below 1e-6 as 0), ``n/a`` for missing or NaN, anything else as text."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return format_number(value)
    return str(value)


def class_names(result: AuditResult) -> list[str]:
    names = result.data.get("class_names") or result.model.get("class_names") or []
    return [str(n) for n in names]


def class_name(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)


def headline(suite: SuiteResult, limit: int = 4) -> str:
    """A suite's first metrics in one line (``acc 0.93, ece 0.04``)."""
    items = list(suite.metrics.items())[:limit]
    more = " ..." if len(suite.metrics) > limit else ""
    return ", ".join(f"{k} {fmt(v)}" for k, v in items) + more


def verdict(result: AuditResult) -> tuple[str, str]:
    """(word, css class) for the banner."""
    if not result.complete:
        return "incomplete", "warn"
    if any(s.status == "error" for s in result.suites) and (not result.gates or result.passed):
        return "suite error", "fail"
    if not result.gates:
        return "no gates", "neutral"
    return ("passed", "pass") if result.passed else ("failed", "fail")


def _time(ts: float) -> str:
    if not ts:
        return "n/a"
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _acc_cases(suite: SuiteResult, metric: str) -> list[CaseResult]:
    return [c for c in suite.cases if metric in c.metrics]


def _plots(suite: SuiteResult, names: list[str]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    groups: dict[tuple[str, str], list] = {}
    for curve in suite.curves:
        groups.setdefault((curve.x_label, curve.y_label), []).append(curve)
    for (x_label, y_label), curves in groups.items():
        title = f"{suite.name}: {y_label} vs {x_label}" if x_label else f"{suite.name}: {y_label}"
        out.append({"title": title, "uri": data_uri(curves_png(curves, title, grid=suite.details.get("curve_layout") == "grid")),
                    "alt": f"{y_label} against {x_label} for " + ", ".join(c.name for c in curves)})
    metric = suite.details.get("plot_cases")
    if metric is None and not suite.curves:
        metric = "acc"
    if isinstance(metric, str):
        cases = _acc_cases(suite, metric)
        if 2 <= len(cases) <= MAX_BARS:
            title = f"{suite.name}: {metric} per case"
            out.append({"title": title, "uri": data_uri(bars_png([c.name for c in cases], [c.metrics[metric] for c in cases], title, metric)),
                        "alt": f"{metric} of " + ", ".join(f"{c.name} {fmt(c.metrics[metric])}" for c in cases)})
    per_class = _per_class_columns(suite)
    if per_class:
        title = f"{suite.name}: accuracy per class"
        out.append({"title": title, "uri": data_uri(per_class_png(per_class, title)), "alt": "accuracy of each class"})
    confusion = suite.details.get("confusion")
    if isinstance(confusion, dict) and confusion.get("matrix"):
        labels = confusion.get("labels") or names
        out.append({"title": f"{suite.name}: confusion matrix", "uri": data_uri(confusion_png(confusion["matrix"], labels)),
                    "alt": "confusion matrix, rows are true classes"})
    return out


def _per_class_columns(suite: SuiteResult) -> dict[str, dict[str, float]]:
    cases = [c for c in suite.cases if c.per_class][:MAX_PER_CLASS_COLUMNS]
    return {c.name: dict(c.per_class) for c in cases}


def _per_class_table(suite: SuiteResult) -> dict[str, Any] | None:
    columns = _per_class_columns(suite)
    if not columns:
        return None
    classes: list[str] = []
    for col in columns.values():
        classes += [k for k in col if k not in classes]
    rows = [[name] + [fmt(columns[c].get(name)) for c in columns] for name in classes]
    return {"title": "accuracy per class", "columns": ["class", *columns], "rows": rows}


def _failure_view(failure, names: list[str]) -> dict[str, Any]:
    return {
        "uri": data_uri(png_bytes(failure.image)) if failure.image is not None else None,
        "original": data_uri(png_bytes(failure.original)) if failure.original is not None else None,
        "true": class_name(names, failure.label),
        "predicted": class_name(names, failure.prediction),
        "confidence": fmt(failure.confidence),
        "description": failure.description,
        "index": failure.index,
        "repro": ", ".join(f"{k}={fmt(v)}" for k, v in failure.params.items()) + (f" seed={failure.seed}" if failure.seed is not None else ""),
    }


def _details_view(details: dict[str, Any]) -> dict[str, Any]:
    tables = []
    for table in details.get("tables", []) or []:
        if isinstance(table, dict):
            tables.append({"title": str(table.get("title", "")), "columns": [str(c) for c in table.get("columns", [])],
                           "rows": [[fmt(v) for v in row] for row in table.get("rows", [])]})
    notes = [str(n) for n in details.get("notes", []) or []]
    rest = {k: v for k, v in details.items() if k not in _KNOWN_DETAILS}
    return {
        "tables": tables,
        "notes": notes,
        "traceback": details.get("traceback"),
        "json": json.dumps(plain(rest), indent=2, ensure_ascii=False) if rest else None,
    }


def suite_view(suite: SuiteResult, names: list[str]) -> dict[str, Any]:
    return {
        "name": suite.name,
        "anchor": f"suite-{suite.name}",
        "status": suite.status,
        "spec": str(suite.params.get("spec", suite.name)),
        "error": suite.error,
        "duration": f"{suite.duration_s:.1f} s",
        "metrics": [(k, fmt(v)) for k, v in suite.metrics.items()],
        "params": [(k, fmt(v)) for k, v in suite.params.items() if k != "spec"],
        "plots": _plots(suite, names) if suite.status == "ok" else [],
        "per_class": _per_class_table(suite),
        "cases": [{"name": c.name, "n": c.n, "metrics": ", ".join(f"{k} {fmt(v)}" for k, v in c.metrics.items())} for c in suite.cases],
        "strips": [
            {"name": s.name, "frames": [{"uri": data_uri(png_bytes(im)), "value": fmt(s.values[j]) if j < len(s.values) else "",
                                          "caption": s.captions[j] if j < len(s.captions) else ""} for j, im in enumerate(s.images)]}
            for s in suite.strips if s.images
        ],
        "galleries": [{"case": c.name, "failures": [_failure_view(f, names) for f in c.failures]} for c in suite.cases if c.failures],
        "details": _details_view(suite.details),
    }


def _facts(result: AuditResult) -> list[tuple[str, str]]:
    env, model, data = result.environment, result.model, result.data
    shape = data.get("image_shape")
    facts = [
        ("model", str(model.get("source") or model.get("name", "n/a"))),
        ("model fingerprint", str(model.get("fingerprint", "n/a"))),
        ("data", str(data.get("source") or data.get("name", "n/a"))),
        ("data fingerprint", str(data.get("fingerprint", "n/a"))),
        ("images evaluated", fmt(data.get("n"))),
        ("image shape", "x".join(str(s) for s in shape) if shape else "n/a"),
        ("classes", fmt(data.get("num_classes") or model.get("num_classes"))),
        ("seed", fmt(env.get("seed"))),
        ("device", str(env.get("device", "n/a"))),
        ("started", _time(result.created)),
        ("duration", f"{env['duration_s']:.1f} s" if isinstance(env.get("duration_s"), (int, float)) else "n/a"),
    ]
    if env.get("generator"):
        facts.insert(4, ("generator", str(env["generator"].get("source", "n/a")) + f" ({env['generator'].get('fingerprint', 'n/a')})"))
    return facts


def _environment(env: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in env.items():
        if key == "packages" and isinstance(value, dict):
            rows += [(f"package {k}", fmt(v)) for k, v in value.items()]
        elif key != "command":
            rows.append((key, json.dumps(plain(value), ensure_ascii=False) if isinstance(value, (dict, list)) else fmt(value)))
    return rows


def html_view(result: AuditResult) -> dict[str, Any]:
    """The page's content as plain data (strings, numbers, data URIs); the template only lays it out."""
    names = class_names(result)
    word, css = verdict(result)
    model_name = str(result.model.get("name") or result.model.get("source") or "model")
    return {
        "title": f"Robustness audit: {model_name}",
        "verdict": word,
        "verdict_class": css,
        "facts": _facts(result),
        "gates": [{"expression": g.expression, "value": fmt(g.value), "passed": g.passed, "message": g.message} for g in result.gates],
        "suites": [{"name": s.name, "anchor": f"suite-{s.name}", "status": s.status, "headline": headline(s) if s.status == "ok" else (s.error or ""),
                    "duration": f"{s.duration_s:.1f} s"} for s in result.suites],
        "sections": [suite_view(s, names) for s in result.suites],
        "environment": _environment(result.environment),
        "command": str(result.environment.get("command", "")),
        "counts": {
            "gates_failed": sum(not g.passed for g in result.gates),
            "gates": len(result.gates),
            "errored": sum(s.status == "error" for s in result.suites),
            "skipped": sum(s.status == "skipped" for s in result.suites),
        },
    }


def render_html(result: AuditResult) -> str:
    """The full HTML page for ``result``."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html").render(**html_view(result))


def write_html_report(result: AuditResult, out_dir: str | Path) -> Path:
    return write_text(Path(out_dir) / HTML_NAME, render_html(result))
