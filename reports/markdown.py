"""``report.md``: a short Markdown summary for pull-request comments (verdict, gates, suites, errors)."""
from __future__ import annotations

import re
from pathlib import Path

from robust.io import write_text
from robust.results import AuditResult

from reports.html import fmt, headline, verdict

MD_NAME = "report.md"
_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(text: object) -> str:
    """Text that Markdown (and the HTML it may contain) shows literally, on one line."""
    escaped = _SPECIAL.sub(r"\\\1", str(text))
    escaped = escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(escaped.split())


def _fence(text: str) -> str:
    """A fenced code block longer than any backtick run inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def render_markdown(result: AuditResult) -> str:
    word, _ = verdict(result)
    model = result.model.get("source") or result.model.get("name", "model")
    data = result.data.get("source") or result.data.get("name", "data")
    env = result.environment
    lines = [
        f"## robust audit: {word.upper()}",
        "",
        f"Model {md_escape(model)} (`{md_escape(result.model.get('fingerprint', 'n/a'))}`) on {md_escape(data)} "
        f"({fmt(result.data.get('n'))} images, `{md_escape(result.data.get('fingerprint', 'n/a'))}`), "
        f"seed {fmt(env.get('seed'))}, {md_escape(env.get('device', 'n/a'))}, robust {md_escape(env.get('robust', 'n/a'))}.",
        "",
    ]
    if result.gates:
        lines += ["| gate | value | result |", "|---|---:|---|"]
        for g in result.gates:
            note = f" ({md_escape(g.message)})" if g.message else ""
            lines.append(f"| `{g.expression}` | {fmt(g.value)} | {'pass' if g.passed else '**FAIL**'}{note} |")
        lines.append("")
    else:
        lines += ["No gates were set.", ""]
    lines += ["| suite | status | headline | time |", "|---|---|---|---:|"]
    for s in result.suites:
        summary = headline(s) if s.status == "ok" else (s.error or "")
        status = s.status if s.status == "ok" else f"**{s.status}**"
        lines.append(f"| {s.name} | {status} | {md_escape(summary)} | {s.duration_s:.1f} s |")
    lines.append("")
    if not result.complete:
        lines += ["The audit did not finish; rerun it with `--resume` to complete it.", ""]
    command = env.get("command")
    if command:
        lines += ["<details><summary>command</summary>", "", _fence(str(command)), "", "</details>", ""]
    return "\n".join(lines)


def write_markdown_report(result: AuditResult, out_dir: str | Path) -> Path:
    return write_text(Path(out_dir) / MD_NAME, render_markdown(result))
