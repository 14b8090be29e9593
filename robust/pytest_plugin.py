"""pytest plugin (entry point ``pytest11`` ``robust``): fixtures, options and the ``robust`` marker.

Options (``--robust-model``, ``--robust-data``, ``--robust-generator``, ``--robust-device``,
``--robust-report``, ``--robust-profile``, ``--robust-seed``) are described in ``pytest --help``
and README's pytest section; a fixture whose option is missing skips its test. Importing this module
imports neither torch nor hypothesis.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

MARKER = "robust: a robustness test (select with -m robust, deselect with -m 'not robust')"
PROFILES = ("ci", "nightly")
ROBUST_FIXTURES = frozenset({
    "robust_model", "robust_data", "robust_generator", "robust_device", "robust_options", "robust_seed", "robust_failure_dir",
})
REPORT_FAILURES = "failures"
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_NAME_RE = re.compile(r"^[A-Za-z_][\w\-]*$")
_BUILTIN_DATA = ("synthetic", "digits")
_SAFE_RE = re.compile(r"[^A-Za-z0-9_.\-]+")


# -- option values ----------------------------------------------------------------------------------

def _checkpoint_exists(text: str) -> bool:
    path = Path(text)
    return path.exists() or Path(text + ".json").is_file() or Path(text + ".safetensors").is_file()


def _model_spec(value: str) -> str:
    if _checkpoint_exists(value) or value.startswith("timm:") or _NAME_RE.match(value):
        return value
    raise argparse.ArgumentTypeError(
        f"expected an existing checkpoint or .onnx file, timm:<name> or an architecture name, got {value!r} (no such file)")


def _data_spec(value: str) -> str:
    if Path(value).exists() or value.split(":", 1)[0].split(",", 1)[0] in _BUILTIN_DATA:
        return value
    raise argparse.ArgumentTypeError(
        f"expected an image folder, a .npz/.pt file, synthetic:<split> or digits[:train|test], got {value!r} (no such file)")


def _generator_spec(value: str) -> str:
    if value == "demo" or _checkpoint_exists(value):
        return value
    raise argparse.ArgumentTypeError(f"expected 'demo' or an existing generator checkpoint, got {value!r} (no such file)")


def _device(value: str) -> str:
    if _DEVICE_RE.match(value):
        return value
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {value!r}")


def _report_dir(value: str) -> Path:
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder for the report, got {value!r} (an existing file)")
    return path


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return number


def _seed(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative whole number, got {value!r}")
    return number


@dataclass(frozen=True)
class RobustOptions:
    """The ``--robust-*`` options of a session (validated)."""

    model: str | None = None
    data: str | None = None
    generator: str | None = None
    device: str = "auto"
    report: Path | None = None
    profile: str | None = None
    max_samples: int | None = None
    seed: int = 0

    @property
    def used(self) -> bool:
        return any(v is not None for v in (self.model, self.data, self.generator, self.report, self.profile, self.max_samples)) \
            or self.device != "auto" or self.seed != 0


OPTIONS_KEY = pytest.StashKey[RobustOptions]()
_PREVIOUS_PROFILE_KEY = pytest.StashKey[str]()
_REPORT_KEY = pytest.StashKey["ReportSession"]()
_LOADED_KEY = pytest.StashKey[dict]()

# The configs of the sessions running in this process, innermost last (pytester nests them).
_CONFIGS: list[pytest.Config] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robust", "robustness testing (robust)")
    group.addoption("--robust-model", type=_model_spec, default=None, metavar="SPEC",
                    help="classifier for the robust_model fixture: checkpoint, .onnx, timm:<name> or architecture name")
    group.addoption("--robust-data", type=_data_spec, default=None, metavar="SPEC",
                    help="dataset for robust_data: image folder, .npz/.pt, synthetic:<split> or digits[:test]")
    group.addoption("--robust-generator", type=_generator_spec, default=None, metavar="PATH",
                    help="generator for robust_generator: a checkpoint or 'demo'")
    group.addoption("--robust-device", type=_device, default="auto", metavar="DEVICE",
                    help="device for robust_model: auto (default), cpu, cuda, cuda:N or mps")
    group.addoption("--robust-report", type=_report_dir, default=None, metavar="DIR",
                    help="write an audit report of the session's robustness tests (json, html, md, junit) to DIR")
    group.addoption("--robust-profile", choices=PROFILES, default=None,
                    help="hypothesis settings profile: ci (quick, derandomized) or nightly (long search)")
    group.addoption("--robust-max-samples", type=_count, default=None, metavar="N",
                    help="keep a seeded, class-balanced subset of N images of --robust-data")
    group.addoption("--robust-seed", type=_seed, default=0, metavar="N", help="seed for robust_seed and data subsets (default 0)")


def _options(config: pytest.Config) -> RobustOptions:
    return RobustOptions(
        model=config.getoption("robust_model"),
        data=config.getoption("robust_data"),
        generator=config.getoption("robust_generator"),
        device=config.getoption("robust_device"),
        report=config.getoption("robust_report"),
        profile=config.getoption("robust_profile"),
        max_samples=config.getoption("robust_max_samples"),
        seed=config.getoption("robust_seed"),
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # tryfirst: the robust-* hypothesis profiles must exist before hypothesis's plugin loads one.
    config.addinivalue_line("markers", MARKER)
    options = _options(config)
    config.stash[OPTIONS_KEY] = options
    config.stash[_LOADED_KEY] = {}  # what the robust_model / robust_data fixtures loaded
    _configure_profile(config, options)
    if options.report is not None:
        session = ReportSession(config, options.report)
        config.stash[_REPORT_KEY] = session
        config.pluginmanager.register(session, "robust-report")
    _CONFIGS.append(config)


def _configure_profile(config: pytest.Config, options: RobustOptions) -> None:
    hypothesis_profile = config.getoption("hypothesis_profile", default=None)
    if options.profile is None and not (hypothesis_profile or "").startswith("robust-"):
        return
    if options.profile is not None and hypothesis_profile:
        raise pytest.UsageError("--robust-profile and --hypothesis-profile both given: choose one")
    try:
        from hypothesis import settings
    except ModuleNotFoundError:
        raise pytest.UsageError("--robust-profile needs hypothesis (pip install hypothesis)") from None
    from robust.plugins import register_profiles

    register_profiles()
    if options.profile is not None:
        config.stash[_PREVIOUS_PROFILE_KEY] = settings.get_current_profile_name()
        settings.load_profile(f"robust-{options.profile}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if config in _CONFIGS:
        _CONFIGS.remove(config)
    previous = config.stash.get(_PREVIOUS_PROFILE_KEY, None)
    if previous is not None:
        from hypothesis import settings

        settings.load_profile(previous)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    options = config.stash.get(OPTIONS_KEY, None)
    if options is None or not options.used:
        return None
    shown = {k: v for k, v in (("model", options.model), ("data", options.data), ("generator", options.generator),
                                ("device", options.device), ("profile", options.profile), ("report", options.report),
                                ("seed", options.seed)) if v is not None}
    return ["robust: " + ", ".join(f"{k}={v}" for k, v in shown.items())]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if ROBUST_FIXTURES.intersection(getattr(item, "fixturenames", ())) and item.get_closest_marker("robust") is None:
            item.add_marker("robust")


# -- used by robust.testing ---------------------------------------------------------------------------

def _current_config() -> pytest.Config | None:
    return _CONFIGS[-1] if _CONFIGS else None


def _current_test() -> str | None:
    text = os.environ.get("PYTEST_CURRENT_TEST")
    return text.rsplit(" (", 1)[0] if text else None


def _safe(text: str) -> str:
    return _SAFE_RE.sub("_", text).strip("_.")[:150] or "test"


def _failure_root(config: pytest.Config) -> Path:
    options = config.stash[OPTIONS_KEY]
    if options.report is not None:
        return options.report / REPORT_FAILURES
    # pytest keeps its TempPathFactory here (its tmp_path fixtures read it too); the robust_failure_dir
    # fixture cannot be required of every test that calls an assertion.
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        return factory.getbasetemp() / "robust-failures"
    return config.rootpath / ".robust-failures"


def current_failure_dir() -> Path | None:
    """The folder for the running test's failing images (``None`` outside a pytest session)."""
    config = _current_config()
    if config is None or OPTIONS_KEY not in config.stash:
        return None
    nodeid = _current_test()
    root = _failure_root(config)
    return root / _safe(nodeid) if nodeid else root


def set_report_subject(config: pytest.Config, *, model: Any = None, data: Any = None) -> None:
    """Name the classifier and the dataset the session report describes.

    The ``robust_model`` / ``robust_data`` fixtures do this themselves; call it from ``conftest.py``
    fixtures that supply a model or data in code.
    """
    loaded = config.stash[_LOADED_KEY]
    if model is not None:
        loaded["model"] = model
    if data is not None:
        loaded["data"] = data


def _report_session() -> ReportSession | None:
    config = _current_config()
    return config.stash.get(_REPORT_KEY, None) if config is not None else None


def record_case(kind: str, case: Any, model: Any = None, inputs: tuple[Any, ...] = ()) -> None:
    """Add one assertion's result, the classifier and the input tensors it used to the session report.

    ``case`` is ``None`` for an attempt that is not reported (hypothesis exploring): the running
    test still counts as a robustness test. A no-op without ``--robust-report``.
    """
    session = _report_session()
    if session is not None:
        session.add_case(kind, _current_test(), case, model, inputs)


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def robust_options(pytestconfig: pytest.Config) -> RobustOptions:
    """The session's validated ``--robust-*`` options."""
    return pytestconfig.stash[OPTIONS_KEY]


@pytest.fixture(scope="session")
def robust_seed(robust_options: RobustOptions) -> int:
    """``--robust-seed`` (default 0): seed every random choice of a robustness test with it."""
    return robust_options.seed


@pytest.fixture(scope="session")
def robust_device(robust_options: RobustOptions) -> Any:
    """``--robust-device`` resolved to a ``torch.device`` (``auto``: cuda when available)."""
    from robust.errors import RobustError
    from robust.seeding import resolve_device

    try:
        return resolve_device(robust_options.device)
    except RobustError as exc:
        pytest.fail(f"--robust-device={robust_options.device}: {exc}", pytrace=False)


def load_data(options: RobustOptions) -> Any:
    """``--robust-data`` as an ImageSet (``--robust-max-samples`` subset, ``--robust-seed``); fails the test on bad data."""
    from robust.data import load_dataset
    from robust.errors import RobustError

    try:
        return load_dataset(options.data, n=options.max_samples, seed=options.seed)
    except RobustError as exc:
        pytest.fail(f"--robust-data={options.data}: {exc}", pytrace=False)


def load_model(options: RobustOptions, device: Any, data: Any = None) -> Any:
    """``--robust-model`` as a Classifier on ``device``; an architecture name takes its classes and size from ``data``."""
    from robust.errors import RobustError
    from robust.models import load_classifier

    kwargs: dict[str, Any] = {}
    if data is not None and not _checkpoint_exists(options.model):
        kwargs = {"num_classes": data.num_classes, "input_size": (data.channels, *data.size), "class_names": data.class_names}
    try:
        return load_classifier(options.model, device=device, **kwargs)
    except RobustError as exc:
        pytest.fail(f"--robust-model={options.model}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def robust_data(robust_options: RobustOptions, pytestconfig: pytest.Config) -> Any:
    """``--robust-data`` loaded as a :class:`robust.data.ImageSet` (skips the test when not given)."""
    if robust_options.data is None:
        pytest.skip("robust_data: no --robust-data given (or override the fixture in conftest.py)")
    data = load_data(robust_options)
    pytestconfig.stash[_LOADED_KEY]["data"] = data
    return data


@pytest.fixture(scope="session")
def robust_model(robust_options: RobustOptions, robust_device: Any, request: pytest.FixtureRequest) -> Any:
    """``--robust-model`` loaded as a :class:`robust.models.Classifier` on ``robust_device``.

    Skips the test when not given. An architecture name (``timm:<name>``, ``smallcnn``) takes its
    class count and input size from ``robust_data``.
    """
    if robust_options.model is None:
        pytest.skip("robust_model: no --robust-model given (or override the fixture in conftest.py)")
    data = None if _checkpoint_exists(robust_options.model) else request.getfixturevalue("robust_data")
    model = load_model(robust_options, robust_device, data)
    request.config.stash[_LOADED_KEY]["model"] = model
    return model


@pytest.fixture(scope="session")
def robust_generator(robust_options: RobustOptions, robust_device: Any) -> Any:
    """``--robust-generator`` loaded with ``robust.gan`` (``demo``: the shipped demo generator)."""
    spec = robust_options.generator
    if spec is None:
        pytest.skip("robust_generator: no --robust-generator given (or override the fixture in conftest.py)")
    from robust.errors import RobustError

    try:
        import robust.gan as gan

        generator = gan.load_demo() if spec == "demo" else gan.load(spec)
    except (RobustError, ImportError, AttributeError) as exc:
        pytest.fail(f"--robust-generator={spec}: {exc}", pytrace=False)
    return generator.to(robust_device)


@pytest.fixture
def robust_failure_dir() -> Path:
    """The folder this test's failing images are written to (created)."""
    folder = current_failure_dir()
    assert folder is not None
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- the session report ---------------------------------------------------------------------------

@dataclass
class _TestOutcome:
    nodeid: str
    outcome: str = "passed"
    duration: float = 0.0
    message: str = ""


@dataclass(eq=False)  # registered as a plugin: pytest needs it hashable by identity
class ReportSession:
    """Collects robustness results during a session and writes the audit report at its end."""

    config: pytest.Config
    out_dir: Path
    cases: dict[str, list[tuple[str | None, Any]]] = field(default_factory=dict)
    tests: dict[str, _TestOutcome] = field(default_factory=dict)
    robust_tests: set[str] = field(default_factory=set)
    models: dict[int, dict[str, Any]] = field(default_factory=dict)  # id(classifier) -> describe()
    inputs: dict[str, int] = field(default_factory=dict)  # input fingerprint -> number of images
    written: dict[str, Path] = field(default_factory=dict)
    error: str | None = None
    started: float = field(default_factory=time.time)

    def add_case(self, kind: str, nodeid: str | None, case: Any, model: Any = None, inputs: tuple[Any, ...] = ()) -> None:
        from robust.io import fingerprint_tensors

        if nodeid:
            self.robust_tests.add(nodeid)
        if case is None:
            return
        if model is not None:
            # Fingerprints identify what each case evaluated; weights are hashed once per classifier.
            if id(model) not in self.models:
                self.models[id(model)] = model.describe()
            case.params["model"] = self.models[id(model)]["fingerprint"]
        if inputs:
            case.params["data"] = fingerprint_tensors(*inputs)
            self.inputs.setdefault(case.params["data"], int(inputs[0].shape[0]))
        self.cases.setdefault(kind, []).append((nodeid, case))

    @pytest.hookimpl(trylast=True)  # after the marker is added to tests that use robust fixtures
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.robust_tests.update(item.nodeid for item in items if item.get_closest_marker("robust") is not None)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self.tests.setdefault(report.nodeid, _TestOutcome(report.nodeid))
        test.duration += report.duration
        if report.failed and test.outcome != "failed":
            test.outcome = "failed"
            test.message = str(report.longrepr.reprcrash.message) if hasattr(report.longrepr, "reprcrash") else str(report.longrepr)[:500]
        elif report.skipped and test.outcome == "passed":
            # A strict-xfail test that fails as expected is a known weakness, not a skipped test.
            test.outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from robust.errors import RobustError

        result = self.build()
        try:
            from reports import write_reports
        except ImportError:
            self.error = "the reports package is not installed: wrote report.json without images, html, md or junit"
            from robust.io import write_json

            self.written = {"json": write_json(self.out_dir / "report.json", result.to_dict())}
            return
        try:
            self.written = write_reports(result, self.out_dir)
        except (RobustError, OSError) as exc:
            self.error = f"could not write the report: {exc}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.error:
            terminalreporter.write_line(f"robust: {self.error}", red=True)
        if self.written:
            files = ", ".join(f"{k} ({p.name})" for k, p in self.written.items())
            terminalreporter.write_line(f"robust: audit report written to {self.out_dir}: {files}")

    def build(self) -> Any:
        """The session as an :class:`robust.results.AuditResult`: one suite per assertion kind, plus ``tests``."""
        import platform

        from robust import __version__
        from robust.results import AuditResult, CaseResult, GateResult, SuiteResult, metric_key

        suites = []
        for kind, entries in sorted(self.cases.items()):
            cases, names = [], set()
            for nodeid, case in entries:
                name = metric_key(f"{nodeid.rsplit('::', 1)[-1]}-{case.name}" if nodeid else case.name)
                unique, k = name, 2
                while unique in names:
                    unique, k = f"{name}-{k}", k + 1
                names.add(unique)
                cases.append(CaseResult(unique, dict(case.metrics), {**case.params, "test": nodeid}, case.n, case.per_class, case.failures))
            failed = sum(1 for c in cases if c.metrics.get("passed", 1.0) < 1.0)
            suites.append(SuiteResult(kind, metrics={"cases": float(len(cases)), "failed": float(failed),
                                                     "pass_rate": 1.0 - failed / len(cases)}, cases=cases))
        tests = [self.tests[n] for n in sorted(self.robust_tests) if n in self.tests]
        test_cases, names = [], set()
        for t in tests:
            name, k = metric_key(t.nodeid), 2
            while name in names:
                name, k = f"{metric_key(t.nodeid)}-{k}", k + 1
            names.add(name)
            metrics = {o: float(t.outcome == o) for o in ("passed", "skipped", "xfailed")}
            test_cases.append(CaseResult(name, {**metrics, "duration_s": t.duration},
                                         {"nodeid": t.nodeid, "outcome": t.outcome, "message": t.message}))
        counts = {o: float(sum(1 for t in tests if t.outcome == o)) for o in ("passed", "failed", "skipped", "xfailed")}
        ran = counts["passed"] + counts["failed"]
        suites.append(SuiteResult("tests", metrics={**counts, "pass_rate": counts["passed"] / ran if ran else 1.0}, cases=test_cases,
                                  duration_s=time.time() - self.started))
        failed_ids = [t.nodeid for t in tests if t.outcome == "failed"]
        gate = GateResult("tests.failed<=0", "tests.failed", "<=", 0.0, counts["failed"], not failed_ids,
                          "failed: " + ", ".join(failed_ids[:10]) if failed_ids else "")
        options = self.config.stash[OPTIONS_KEY]
        environment = {
            "command": "pytest " + " ".join(str(a) for a in self.config.invocation_params.args),
            "python": platform.python_version(),
            "pytest": pytest.__version__,
            "robust": __version__,
            "seed": options.seed,
            "device": options.device,
        }
        if "torch" in sys.modules:
            environment["torch"] = sys.modules["torch"].__version__
        return AuditResult(suites=suites, gates=[gate], model=self._model(), data=self._data(), environment=environment)

    def _model(self) -> dict[str, Any]:
        loaded = self.config.stash.get(_LOADED_KEY, {})
        if "model" in loaded:
            return loaded["model"].describe()
        if self.models:
            first = dict(next(iter(self.models.values())))
            if len(self.models) > 1:
                first["others"] = [m["fingerprint"] for m in list(self.models.values())[1:]]
            return first
        return {"name": "(no classifier evaluated)", "fingerprint": ""}

    def _data(self) -> dict[str, Any]:
        import hashlib

        loaded = self.config.stash.get(_LOADED_KEY, {})
        if "data" in loaded:
            return loaded["data"].describe()
        if not self.inputs:
            return {"name": "(no images evaluated)", "fingerprint": "", "n": 0}
        digest = hashlib.sha256(":".join(sorted(self.inputs)).encode()).hexdigest()[:16]
        # The inputs of every assertion, identified together (each case names its own in params.data).
        return {"name": "pytest session inputs", "fingerprint": digest, "n": sum(self.inputs.values()),
                "parts": len(self.inputs)}
