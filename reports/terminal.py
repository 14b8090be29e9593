"""The one-screen terminal summary of an audit: suites with their headline metrics, then the gates."""
from __future__ import annotations

import shutil
from pathlib import Path

from robust.results import AuditResult

from reports.html import fmt, headline, verdict


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def format_summary(result: AuditResult, report_dir: str | Path | None = None, *, color: bool = False, width: int | None = None) -> str:
    """A plain-text table (colour codes only with ``color``), at most ``width`` columns wide."""
    import click

    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)

    def paint(text: str, fg: str) -> str:
        return click.style(text, fg=fg, bold=True) if color else text

    word, css = verdict(result)
    tone = {"pass": "green", "fail": "red", "warn": "yellow", "neutral": "blue"}[css]
    model = result.model.get("source") or result.model.get("name", "model")
    data = result.data.get("source") or result.data.get("name", "data")
    header = (f"robust audit of {model} on {data} ({fmt(result.data.get('n'))} images, seed {fmt(result.environment.get('seed'))}, "
              f"{result.environment.get('device', 'n/a')})")
    lines = [_clip(header, width - len(word) - 2) + "  " + paint(word.upper(), tone)]
    name_w = max([5] + [len(s.name) for s in result.suites])
    lines.append(f"{'suite':<{name_w}}  {'status':<7}  {'time':>7}  headline")
    room = max(10, width - name_w - 22)
    for s in result.suites:
        status = paint(f"{s.status:<7}", {"ok": "green", "error": "red", "skipped": "yellow"}[s.status])
        text = headline(s) if s.status == "ok" else (s.error or "")
        lines.append(f"{s.name:<{name_w}}  {status}  {s.duration_s:>6.1f}s  {_clip(' '.join(text.split()), room)}")
    if result.gates:
        lines.append("gates:")
        for g in result.gates:
            mark = paint("PASS", "green") if g.passed else paint("FAIL", "red")
            note = f"  ({g.message})" if g.message else ""
            lines.append(f"  {mark} " + _clip(f"{g.expression}  value {fmt(g.value)}{note}", width - 7))
    else:
        lines.append("gates: none set")
    if not result.complete:
        lines.append("incomplete: rerun with --resume to finish")
    if report_dir is not None:
        lines.append(f"report: {Path(report_dir) / 'index.html'}")
    return "\n".join(lines)
