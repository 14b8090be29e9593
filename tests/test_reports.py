"""Reports: gates, report.json (schema, loader), HTML, Markdown, JUnit, plots, diffs and the report CLI."""
from __future__ import annotations

import base64
import io
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import reports
from reports import plots
from reports.gates import parse_gate
from robust.cli import cli
from robust.errors import FileFormatError, InputError
from robust.results import (
    AuditResult,
    CaseResult,
    Curve,
    FailureExample,
    Strip,
    SuiteResult,
)

EVIL = "<img src=x onerror=alert(1)>"


def _image(seed: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(channels, 8, 8, generator=torch.Generator().manual_seed(seed))


def make_result(acc: float = 0.8) -> AuditResult:
    names = ["cat", EVIL, "dollar $x$"]
    failure = FailureExample(4, 1, 0, 0.91, f"noise on {EVIL}", {"severity": 3.0}, seed=7, image=_image(1), original=_image(2))
    grey = FailureExample(5, 2, 1, 0.5, "grey", image=_image(3, channels=1))
    cases = [
        CaseResult("noise_3", {"acc": acc}, {"severity": 3}, n=12, per_class={n: 0.5 for n in names}, failures=[failure, grey]),
        CaseResult("noise_5", {"acc": acc - 0.2}, n=12),
    ]
    ok = SuiteResult(
        "corruptions", metrics={"mean_acc": acc - 0.1, "undefined": math.nan, "never": math.inf}, cases=cases,
        curves=[Curve("noise", [0, 3, 5], [0.9, acc, acc - 0.2], "severity")],
        strips=[Strip(f"noise {EVIL}", [_image(4), _image(5)], [0.9, acc], ["s0", EVIL])],
        details={"confusion": {"labels": names, "matrix": [[3, 1, 0], [0, 2, 2], [1, 0, 4]]},
                 "tables": [{"title": EVIL, "columns": ["class", "acc"], "rows": [[EVIL, 0.5]]}], "notes": [EVIL], "extra": {"k": EVIL}},
        params={"spec": "corruptions"}, duration_s=1.5)
    broken = SuiteResult("pgd", status="error", error=f"RuntimeError: {EVIL}", details={"traceback": "Traceback\n  boom"}, params={"spec": "pgd:linf@8/255"})
    skipped = SuiteResult("shift", status="skipped", error="not synthetic data", params={"spec": "shift"})
    result = AuditResult([ok, broken, skipped], model={"name": "m", "source": f"models/{EVIL}", "fingerprint": "ab12", "class_names": names},
                         data={"name": "d", "fingerprint": "cd34", "n": 12, "num_classes": 3, "class_names": names},
                         environment={"seed": 0, "device": "cpu", "command": f"robust audit --model '{EVIL}'", "packages": {"torch": "2"}},
                         created=1_700_000_000.0)
    result.gates = reports.evaluate_gates(result, ["corruptions.mean_acc>=0.5", "pgd.acc>=0.1", "corruptions.noise_3.acc==0.8"])
    return result


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditResult, Path, dict[str, Path]]:
    result = make_result()
    out = tmp_path_factory.mktemp("report")
    return result, out, reports.write_reports(result, out)


# -- gates ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, op, threshold", [
    ("clean.acc>=0.9", ">=", 0.9), ("pgd.linf_8.acc > 8/255", ">", 8 / 255), ("a.b<=80%", "<=", 0.8),
    ("a.b.c==1", "==", 1.0), ("a.b!=0", "!=", 0.0), ("a.b<1e-3", "<", 1e-3),
])
def test_gates_parse_operators_and_numbers(text: str, op: str, threshold: float) -> None:
    gate = parse_gate(text)
    assert gate.op == op and gate.threshold == pytest.approx(threshold)
    assert gate.expression == "".join(text.split())


@pytest.mark.parametrize("text", ["clean.acc", "acc>=0.5", "clean.acc>=high", "clean.acc=>0.5", "clean.acc>=inf", ""])
def test_malformed_gates_raise_input_error_with_the_syntax(text: str) -> None:
    with pytest.raises(InputError, match="gate"):
        parse_gate(text)


def test_gates_pass_fail_and_explain_missing_metrics() -> None:
    result = make_result(acc=0.8)
    gates = reports.evaluate_gates(result, ["corruptions.mean_acc>=0.6", "corruptions.mean_acc>0.9", "pgd.acc>=0.1",
                                            "shift.acc>=0", "nope.acc>=0", "corruptions.mean_ac>=0", "corruptions.undefined>=0"])
    passed = [g.passed for g in gates]
    assert passed == [True, False, False, False, False, False, False]
    assert "errored" in gates[2].message and gates[2].value is None
    assert "skipped" in gates[3].message
    assert "no suite 'nope'" in gates[4].message
    assert "corruptions.mean_acc" in gates[5].message  # the close match is suggested
    assert "NaN" in gates[6].message
    assert not result.passed


# -- report.json ------------------------------------------------------------------------------------

def test_write_reports_writes_every_format_and_images(written) -> None:
    result, out, paths = written
    assert set(paths) == {"json", "html", "md", "junit"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    data = json.loads(paths["json"].read_text())
    failure = data["suites"][0]["cases"][0]["failures"][0]
    assert (out / failure["image_path"]).is_file() and (out / failure["original_path"]).is_file()
    assert all((out / p).is_file() for p in data["suites"][0]["strips"][0]["image_paths"])


def test_report_json_is_strict_json_valid_against_the_schema(written) -> None:
    _, _, paths = written
    text = paths["json"].read_text()

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    data = json.loads(text, parse_constant=reject)
    jsonschema.validate(data, reports.schema(), cls=jsonschema.Draft202012Validator)
    assert reports.validation_errors(data) == []
    assert data["schema_version"] == reports.SCHEMA_VERSION
    assert data["suites"][0]["metrics"]["undefined"] is None and data["suites"][0]["metrics"]["never"] is None


def test_schema_rejects_malformed_reports(written) -> None:
    _, _, paths = written
    data = json.loads(paths["json"].read_text())
    data["suites"][0]["status"] = "exploded"
    del data["suites"][1]["cases"]
    errors = reports.validation_errors(data)
    assert any("exploded" in e for e in errors) and any("cases" in e for e in errors)


def test_load_report_round_trips_metrics_gates_and_images(written) -> None:
    result, out, _ = written
    loaded = reports.load_report(out)
    a, b = result.metrics(), loaded.metrics()
    assert set(a) == set(b)
    for key in a:
        # Non-finite numbers are stored as null and come back as NaN.
        assert (b[key] == a[key]) or (math.isnan(b[key]) and not math.isfinite(a[key]))
    assert [(g.expression, g.passed) for g in loaded.gates] == [(g.expression, g.passed) for g in result.gates]
    before, after = result.suites[0].cases[0].failures, loaded.suites[0].cases[0].failures
    assert torch.equal(before[0].image, after[0].image) and torch.equal(before[0].original, after[0].original)
    assert after[1].image.shape == (1, 8, 8) and torch.equal(before[1].image, after[1].image)
    assert all(torch.equal(x, y) for x, y in zip(result.suites[0].strips[0].images, loaded.suites[0].strips[0].images))
    assert loaded.suites[1].status == "error" and EVIL in loaded.suites[1].error
    assert loaded.complete and loaded.suites[0].strips[0].captions == ["s0", EVIL]


def test_load_report_refuses_other_versions_and_paths_outside(tmp_path: Path, written) -> None:
    _, out, paths = written
    data = json.loads(paths["json"].read_text())
    bad = tmp_path / "report.json"
    bad.write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(FileFormatError, match="schema version"):
        reports.load_report(bad)
    data["suites"][0]["cases"][0]["failures"][0]["image_path"] = "../../etc/passwd"
    bad.write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match="inside the report folder"):
        reports.load_report(bad)


# -- HTML, Markdown, JUnit --------------------------------------------------------------------------

def test_html_is_self_contained_and_embeds_decodable_pngs(written) -> None:
    _, _, paths = written
    html = paths["html"].read_text()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(sources) >= 8  # plots, strip frames, failures and originals
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.format == "PNG" and im.size[0] > 0
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "Content-Security-Policy" in html


def test_html_escapes_every_user_string(written) -> None:
    _, _, paths = written
    html = paths["html"].read_text()
    assert EVIL not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_markdown_summarises_gates_and_suites_escaped(written) -> None:
    _, _, paths = written
    md = paths["md"].read_text()
    assert md.startswith("## robust audit: FAILED")
    assert "| `corruptions.mean_acc>=0.5` | 0.7 | pass |" in md
    assert "**FAIL**" in md and "| pgd | **error** |" in md
    # Outside code blocks (which Markdown shows literally) user text is escaped.
    prose = re.sub(r"(`{3,})\n.*?\n\1", "", md, flags=re.S)
    assert EVIL not in prose and "&lt;img src=x onerror=alert(1)&gt;" in prose
    assert f"robust audit --model '{EVIL}'" in md


def test_junit_has_one_case_per_gate_and_suite_errors(written) -> None:
    result, _, paths = written
    root = ET.fromstring(paths["junit"].read_bytes())
    gates, suites = root.findall("testsuite")
    assert gates.get("name") == "robust.gates"
    cases = gates.findall("testcase")
    assert [c.get("name") for c in cases] == [g.expression for g in result.gates]
    assert [c.find("failure") is not None for c in cases] == [not g.passed for g in result.gates]
    assert int(gates.get("failures")) == sum(not g.passed for g in result.gates)
    by_name = {c.get("name"): c for c in suites.findall("testcase")}
    assert by_name["pgd:linf@8/255"].find("error") is not None
    assert by_name["shift"].find("skipped") is not None
    assert int(root.get("tests")) == len(result.gates) + len(result.suites)


def test_terminal_summary_fits_the_width_and_lists_gates() -> None:
    text = reports.format_summary(make_result(), "out", width=80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert any(line.strip().startswith("FAIL pgd.acc>=0.1") for line in lines)
    assert lines[-1] == f"report: {Path('out') / 'index.html'}"


# -- plots and diffs --------------------------------------------------------------------------------

def test_plots_are_deterministic_pngs_and_take_literal_labels() -> None:
    curves = [Curve(f"c{i} $x$", [0, 1, 2], [1.0, 0.5, 0.25]) for i in range(8)]
    first, second = plots.curves_png(curves), plots.curves_png(curves)
    assert first == second and first[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.bars_png(["a$", "b"], [0.5, math.nan], reference=0.9)[:4] == b"\x89PNG"
    assert plots.per_class_png({"x": {"a": 0.1}, "y": {"a": 0.2, "b": 0.3}})[:4] == b"\x89PNG"


def test_diff_reports_gives_deltas_and_changes(tmp_path: Path) -> None:
    a, b = make_result(acc=0.8), make_result(acc=0.6)
    b.suites[0].metrics["new"] = 1.0
    b.gates = reports.evaluate_gates(b, ["corruptions.mean_acc>=0.6"])
    diff = reports.diff_reports(a, b)
    rows = {r.metric: r for r in diff.rows}
    assert rows["corruptions.mean_acc"].delta == pytest.approx(-0.2)
    assert rows["corruptions.undefined"].delta is None
    assert diff.only_b == ["corruptions.new"] and diff.same_model
    text = diff.format()
    assert "corruptions.noise_3.acc" in text and "-0.2000" in text
    assert ("corruptions.mean_acc>=0.5", True, None) in diff.gates


def test_report_cli_show_validate_render_and_diff(tmp_path: Path) -> None:
    runner = CliRunner()
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    reports.write_reports(make_result(acc=0.8), a_dir, ["json"])
    reports.write_reports(make_result(acc=0.6), b_dir, ["json"])
    shown = runner.invoke(cli, ["report", "show", str(a_dir)])
    assert shown.exit_code == 0 and "FAIL pgd.acc>=0.1" in shown.output
    valid = runner.invoke(cli, ["report", "validate", str(a_dir / "report.json")])
    assert valid.exit_code == 0 and "valid" in valid.output
    rendered = runner.invoke(cli, ["report", "render", str(a_dir), "--format", "html,md"])
    assert rendered.exit_code == 0 and (a_dir / "index.html").is_file() and (a_dir / "report.md").is_file()
    diffed = runner.invoke(cli, ["report", "diff", str(a_dir), str(b_dir), "--metrics", "*.acc", "--json"])
    assert diffed.exit_code == 0
    rows = {r["metric"]: r for r in json.loads(diffed.output)["metrics"]}
    assert rows["corruptions.noise_3.acc"]["delta"] == pytest.approx(-0.2)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema_version": 1, "suites": "no"}))
    invalid = runner.invoke(cli, ["report", "validate", str(broken)])
    assert invalid.exit_code == 2 and "schema" in invalid.output
