"""``junit.xml``: gates (one test case each) and suites as JUnit results for CI systems.

Test suite ``robust.gates`` has one test case per gate (a failed gate is a ``<failure>``); test suite
``robust.suites`` has one per audit suite (an errored suite is an ``<error>``, a skipped one
``<skipped>``).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from robust.io import write_bytes
from robust.results import AuditResult

from reports.html import fmt

JUNIT_NAME = "junit.xml"
# Characters XML 1.0 cannot hold at all (escaping does not help).
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: object) -> str:
    return _INVALID_XML.sub("?", str(value))


def render_junit(result: AuditResult) -> bytes:
    root = ET.Element("testsuites", name="robust audit")
    gates = ET.SubElement(root, "testsuite", name="robust.gates")
    failures = 0
    for g in result.gates:
        case = ET.SubElement(gates, "testcase", classname="robust.gates", name=_text(g.expression), time="0")
        if not g.passed:
            failures += 1
            message = f"{g.metric} = {fmt(g.value)}, required {g.op} {g.threshold:g}" + (f": {g.message}" if g.message else "")
            node = ET.SubElement(case, "failure", message=_text(message), type="GateFailure")
            node.text = _text(message)
    gates.set("tests", str(len(result.gates)))
    gates.set("failures", str(failures))
    gates.set("errors", "0")
    gates.set("skipped", "0")
    gates.set("time", "0")

    suites = ET.SubElement(root, "testsuite", name="robust.suites")
    errors = skipped = 0
    total_time = 0.0
    for s in result.suites:
        total_time += s.duration_s
        case = ET.SubElement(suites, "testcase", classname="robust.suites", name=_text(s.params.get("spec", s.name)), time=f"{s.duration_s:.3f}")
        if s.status == "error":
            errors += 1
            node = ET.SubElement(case, "error", message=_text(s.error or "error"), type="SuiteError")
            node.text = _text(s.details.get("traceback") or s.error or "")
        elif s.status == "skipped":
            skipped += 1
            ET.SubElement(case, "skipped", message=_text(s.error or "skipped"))
        else:
            out = ET.SubElement(case, "system-out")
            out.text = _text(", ".join(f"{k}={fmt(v)}" for k, v in s.metrics.items()))
    suites.set("tests", str(len(result.suites)))
    suites.set("failures", "0")
    suites.set("errors", str(errors))
    suites.set("skipped", str(skipped))
    suites.set("time", f"{total_time:.3f}")

    root.set("tests", str(len(result.gates) + len(result.suites)))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    root.set("skipped", str(skipped))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit_report(result: AuditResult, out_dir: str | Path) -> Path:
    return write_bytes(Path(out_dir) / JUNIT_NAME, render_junit(result))
