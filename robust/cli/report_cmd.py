"""``robust report``: show, validate, re-render and compare audit reports (``report.json``)."""
from __future__ import annotations

import json
import sys

import click


@click.group()
def report() -> None:
    """Work with audit reports: show, validate, render, diff.

    A REPORT argument is a report.json file or the folder holding it.
    """


@report.command()
@click.argument("path", type=click.Path(exists=True))
def show(path: str) -> None:
    """Print the one-screen summary of a report.

    Example: robust report show robust-audit
    """
    from reports import format_summary, load_report
    from reports.json_report import report_path

    result = load_report(path, images=False)
    click.echo(format_summary(result, report_path(path).parent, color=sys.stdout.isatty()))


@report.command()
@click.argument("path", type=click.Path(exists=True))
def validate(path: str) -> None:
    """Check a report against the JSON Schema shipped in reports/schema.json (exit 2 when invalid).

    Example: robust report validate robust-audit/report.json
    """
    from reports import read_report_data
    from reports.json_report import report_path

    read_report_data(path, validate=True)
    click.echo(f"{report_path(path)}: valid")


@report.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--out", "-o", default=None, help="Folder to write to (default: the report's own folder).")
@click.option("--format", "formats", default="html,md,junit", show_default=True, help="Formats to write.")
def render(path: str, out: str | None, formats: str) -> None:
    """Write the HTML, Markdown and JUnit forms of a report again (e.g. after an upgrade).

    Example: robust report render robust-audit --format html
    """
    from reports import FORMATS, load_report, write_reports
    from reports.json_report import report_path
    from robust.io import check_writable

    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    for name in chosen:
        FORMATS.get(name)
    target = check_writable(out or report_path(path).parent, "--out" if out else "report folder")
    result = load_report(path)
    written = write_reports(result, target, chosen)
    for name, file in written.items():
        click.echo(f"{name}: {file}")


@report.command()
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
@click.option("--metrics", default=None, help="Only metrics matching this glob, e.g. 'pgd.*' or '*.acc'.")
@click.option("--changed", is_flag=True, help="Only metrics whose value changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def diff(a: str, b: str, metrics: str | None, changed: bool, as_json: bool) -> None:
    """Metric deltas (b - a) between two reports: two models, or two versions of one.

    Example: robust report diff baseline/ hardened/ --metrics '*.acc'
    """
    from reports import diff_reports
    from reports.json_report import plain

    result = diff_reports(a, b, metrics=metrics)
    if as_json:
        click.echo(json.dumps(plain(result.to_dict()), indent=2))
    else:
        click.echo(result.format(only_changed=changed))
