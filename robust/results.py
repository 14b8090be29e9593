"""Typed results passed from the finders to the audit and the reports.

An audit produces one :class:`AuditResult` holding :class:`SuiteResult` s (``corruptions``,
``pgd``, ``natural``, ``sage``, ...); a suite holds :class:`CaseResult` s (``gaussian_noise_3``,
``linf_8``, ...) with flat metric dicts, plus curves for plots and :class:`FailureExample` s
with the images and the exact parameters that reproduce them. Metric paths such as
``"pgd.linf_8.acc"`` or ``"corruptions.mean_acc"`` address any number for gates and diffs.

Images inside results are uint8 tensors ``[C, H, W]`` on the CPU (small, exact, easy to encode);
``reports`` turns them into PNG. :meth:`AuditResult.to_dict` gives plain JSON-ready data with
images left out; ``reports`` adds them by reference.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from robust.errors import InputError
from robust.registry import format_number

STATUSES = ("ok", "error", "skipped")
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def metric_key(text: str) -> str:
    """Turn a free label (``"linf@8/255"``) into a metric-path component (``"linf_8_255"``)."""
    key = re.sub(r"[^A-Za-z0-9_\-]+", "_", text).strip("_")
    return key or "_"


def to_uint8_image(image: torch.Tensor) -> torch.Tensor:
    """A float ``[C, H, W]`` image in ``[0, 1]`` -> uint8 ``[C, H, W]`` on the CPU."""
    if image.dim() != 3:
        raise InputError("image", "shape [C, H, W]", tuple(image.shape))
    if image.dtype == torch.uint8:
        return image.detach().cpu()
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@dataclass
class FailureExample:
    """One input on which the model failed, with what it takes to reproduce it."""

    index: int  # position in the evaluated dataset (or -1 for generated images)
    label: int
    prediction: int
    confidence: float  # the model's probability for ``prediction``
    description: str = ""  # e.g. "rotation(angle=31.2)" or "class 3, stripes background"
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    image: torch.Tensor | None = None  # uint8 [C, H, W]: the failing input
    original: torch.Tensor | None = None  # uint8 [C, H, W]: the clean input, when there is one

    def __post_init__(self) -> None:
        if self.image is not None:
            self.image = to_uint8_image(self.image)
        if self.original is not None:
            self.original = to_uint8_image(self.original)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("image", "original")}


@dataclass
class Curve:
    """A line for a plot: e.g. accuracy against severity for one corruption."""

    name: str
    x: list[float]
    y: list[float]
    x_label: str = ""
    y_label: str = "accuracy"

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise InputError(f"curve {self.name!r}", "x and y of equal length", f"{len(self.x)} and {len(self.y)}")


@dataclass
class Strip:
    """A row of images with a value under each (a sweep along a direction or a severity)."""

    name: str
    images: list[torch.Tensor]  # uint8 [C, H, W]
    values: list[float]
    captions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = [to_uint8_image(im) for im in self.images]


@dataclass
class CaseResult:
    """One measured condition: a corruption at one severity, an attack at one epsilon, ..."""

    name: str
    metrics: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    n: int = 0
    per_class: dict[str, float] = field(default_factory=dict)  # class name -> accuracy
    failures: list[FailureExample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _KEY_RE.match(self.name):
            raise InputError("case name", "letters, digits, '_' or '-' (use results.metric_key)", self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metrics": dict(self.metrics),
            "params": dict(self.params),
            "n": self.n,
            "per_class": dict(self.per_class),
            "failures": [f.to_dict() for f in self.failures],
        }


@dataclass
class SuiteResult:
    """The result of one suite; ``status`` is ``ok``, ``error`` (with ``error`` text) or ``skipped``."""

    name: str
    status: str = "ok"
    metrics: dict[str, float] = field(default_factory=dict)
    cases: list[CaseResult] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    strips: list[Strip] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # suite-specific JSON data (e.g. failure modes)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InputError("suite status", " or ".join(STATUSES), self.status)
        if not _KEY_RE.match(self.name):
            raise InputError("suite name", "letters, digits, '_' or '-'", self.name)

    def case(self, name: str) -> CaseResult:
        for c in self.cases:
            if c.name == name:
                return c
        raise InputError(f"case of suite {self.name!r}", "one of " + ", ".join(c.name for c in self.cases), name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "error": self.error,
            "duration_s": self.duration_s,
            "params": dict(self.params),
            "metrics": dict(self.metrics),
            "cases": [c.to_dict() for c in self.cases],
            "curves": [asdict(c) for c in self.curves],
            "strips": [{"name": s.name, "values": list(s.values), "captions": list(s.captions)} for s in self.strips],
            "details": dict(self.details),
        }


@dataclass
class GateResult:
    """A threshold on a metric path, and whether the audit met it."""

    expression: str  # as written: "corruptions.mean_acc>=0.8"
    metric: str
    op: str
    threshold: float
    value: float | None  # None when the metric is missing (counts as failed)
    passed: bool
    message: str = ""

    def __str__(self) -> str:
        shown = "missing" if self.value is None else format_number(self.value)
        return f"{self.expression} (value {shown}){': ' + self.message if self.message else ''}"


@dataclass
class AuditResult:
    """Everything an audit measured, plus what is needed to reproduce it."""

    suites: list[SuiteResult] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)  # name, fingerprint, num_classes, input_size, ...
    data: dict[str, Any] = field(default_factory=dict)  # name, fingerprint, n, class_names, ...
    environment: dict[str, Any] = field(default_factory=dict)  # versions, device, seed, command
    created: float = field(default_factory=time.time)
    complete: bool = True  # False while an audit is still running (or was interrupted)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def suite(self, name: str) -> SuiteResult:
        for s in self.suites:
            if s.name == name:
                return s
        raise InputError("suite", "one of " + ", ".join(s.name for s in self.suites), name)

    def metrics(self) -> dict[str, float]:
        """All metrics flattened to paths: ``suite.metric`` and ``suite.case.metric``."""
        flat: dict[str, float] = {}
        for s in self.suites:
            for k, v in s.metrics.items():
                flat[f"{s.name}.{k}"] = float(v)
            for c in s.cases:
                for k, v in c.metrics.items():
                    flat[f"{s.name}.{c.name}.{k}"] = float(v)
        return flat

    def metric(self, path: str) -> float | None:
        return self.metrics().get(path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "complete": self.complete,
            "model": dict(self.model),
            "data": dict(self.data),
            "environment": dict(self.environment),
            "passed": self.passed,
            "gates": [asdict(g) for g in self.gates],
            "suites": [s.to_dict() for s in self.suites],
        }


def _build(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def audit_from_dict(data: dict[str, Any]) -> AuditResult:
    """Rebuild an :class:`AuditResult` (without images) from :meth:`AuditResult.to_dict` output.

    Strips come back with their values and captions and an empty image list.
    """
    suites = []
    for s in data.get("suites", []):
        cases = [
            _build(CaseResult, {**c, "failures": [_build(FailureExample, f) for f in c.get("failures", [])]})
            for c in s.get("cases", [])
        ]
        curves = [_build(Curve, c) for c in s.get("curves", [])]
        strips = [Strip(st["name"], [], list(st.get("values", [])), list(st.get("captions", []))) for st in s.get("strips", [])]
        suites.append(_build(SuiteResult, {**s, "cases": cases, "curves": curves, "strips": strips}))
    gates = [_build(GateResult, g) for g in data.get("gates", [])]
    return AuditResult(
        suites=suites,
        gates=gates,
        model=data.get("model", {}),
        data=data.get("data", {}),
        environment=data.get("environment", {}),
        created=data.get("created", 0.0),
        complete=bool(data.get("complete", True)),
    )
