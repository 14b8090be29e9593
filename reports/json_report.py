"""``report.json``: the versioned, machine-readable form of an audit (schema in ``reports/schema.json``).

Images are not inlined: each failure image and strip frame is a PNG under ``images/`` referenced by
a relative path (``image_path``, ``original_path``, ``image_paths``). Non-finite numbers are written
as ``null`` so the file is strict JSON. :func:`load_report` validates a file against the schema and
rebuilds the :class:`robust.results.AuditResult`, images included.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from robust import __version__
from robust.errors import FileFormatError
from robust.io import read_json, write_text
from robust.results import AuditResult, audit_from_dict

from reports.images import failure_path, read_png, strip_path, write_images

SCHEMA_VERSION = 1
REPORT_NAME = "report.json"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json`` (shipped as ``reports/schema.json``)."""
    return json.loads(resources.files("reports").joinpath("schema.json").read_text(encoding="utf-8"))


def plain(obj: Any) -> Any:
    """JSON-ready data: tensors and tuples to lists, non-finite floats to ``None``, keys to strings."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return plain(obj.detach().cpu().tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # NumPy scalars
        return plain(obj.item())
    return str(obj)


def report_dict(result: AuditResult) -> dict[str, Any]:
    """The content of ``report.json`` for ``result`` (image paths included, images not)."""
    body = result.to_dict()
    for suite, suite_dict in zip(result.suites, body["suites"]):
        for ci, (case, case_dict) in enumerate(zip(suite.cases, suite_dict["cases"])):
            for k, (failure, failure_dict) in enumerate(zip(case.failures, case_dict["failures"])):
                if failure.image is not None:
                    failure_dict["image_path"] = failure_path(suite.name, ci, case.name, k)
                if failure.original is not None:
                    failure_dict["original_path"] = failure_path(suite.name, ci, case.name, k, original=True)
        for si, (strip, strip_dict) in enumerate(zip(suite.strips, suite_dict["strips"])):
            strip_dict["image_paths"] = [strip_path(suite.name, si, j) for j in range(len(strip.images))]
    return plain({"schema_version": SCHEMA_VERSION, "tool": {"name": "robust", "version": __version__}, **body})


def write_json_report(result: AuditResult, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.json`` and its images (atomically, file by file)."""
    out_dir = Path(out_dir)
    write_images(result, out_dir)
    text = json.dumps(report_dict(result), indent=2, allow_nan=False, ensure_ascii=False)
    return write_text(out_dir / REPORT_NAME, text + "\n")


def validation_errors(data: Any) -> list[str]:
    """Schema violations of a report's data, as ``"<json path>: <message>"`` lines (empty when valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in errors]


def report_path(path: str | Path) -> Path:
    """``report.json`` itself, or the folder holding it."""
    path = Path(path)
    return path / REPORT_NAME if path.is_dir() else path


def read_report_data(path: str | Path, validate: bool = True) -> dict[str, Any]:
    """The raw data of a report file, checked for its schema version (and against the schema)."""
    path = report_path(path)
    data = read_json(path)
    if not isinstance(data, dict) or "schema_version" not in data:
        raise FileFormatError(path, "a robust report.json (with a schema_version)", "a JSON file without one")
    if data["schema_version"] != SCHEMA_VERSION:
        raise FileFormatError(path, f"report schema version {SCHEMA_VERSION}", f"version {data['schema_version']!r}")
    if validate:
        errors = validation_errors(data)
        if errors:
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise FileFormatError(path, "a report matching reports/schema.json", "; ".join(errors[:3]) + more)
    return data


def _nan_for_null(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: (math.nan if v is None else v) for k, v in metrics.items()}


def load_report(path: str | Path, *, validate: bool = True, images: bool = True) -> AuditResult:
    """Read a ``report.json`` (or its folder) back into an :class:`AuditResult`.

    ``null`` metrics come back as NaN; with ``images`` the PNGs the report refers to are read back
    (a missing file raises :class:`FileFormatError`).
    """
    path = report_path(path)
    data = read_report_data(path, validate)
    for suite in data.get("suites", []):
        suite["metrics"] = _nan_for_null(suite.get("metrics", {}))
        for case in suite.get("cases", []):
            case["metrics"] = _nan_for_null(case.get("metrics", {}))
            case["per_class"] = _nan_for_null(case.get("per_class", {}))
        for curve in suite.get("curves", []):
            curve["x"] = [math.nan if v is None else v for v in curve["x"]]
            curve["y"] = [math.nan if v is None else v for v in curve["y"]]
    result = audit_from_dict(data)
    if images:
        root = path.parent
        for suite, suite_dict in zip(result.suites, data["suites"]):
            for case, case_dict in zip(suite.cases, suite_dict["cases"]):
                for failure, failure_dict in zip(case.failures, case_dict["failures"]):
                    if "image_path" in failure_dict:
                        failure.image = read_png(_inside(root, failure_dict["image_path"]))
                    if "original_path" in failure_dict:
                        failure.original = read_png(_inside(root, failure_dict["original_path"]))
            for strip, strip_dict in zip(suite.strips, suite_dict["strips"]):
                strip.images = [read_png(_inside(root, p)) for p in strip_dict.get("image_paths", [])]
    return result


def _inside(root: Path, rel: str) -> Path:
    """Resolve an image path from a report, refusing paths that leave the report's folder."""
    target = (root / rel).resolve()
    if root.resolve() not in target.parents:
        raise FileFormatError(rel, "an image path inside the report folder", "a path outside it")
    return target
