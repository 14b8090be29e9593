"""The audit runner: named suites measured on one classifier and one dataset, gated and reported.

A suite is one registered function ``fn(ctx: AuditContext, spec: Spec) -> SuiteResult``
(:data:`SUITES`; the built-in ones live in :mod:`robust.suites`). :func:`run_audit` loads the
model, data and generator as the adapters accept them, runs each suite in isolation (an exception
marks that suite ``error`` and the others go on), writes ``report.json`` after every suite so an
interrupted audit keeps what it measured (``resume=True`` skips the suites already done), then
evaluates the gates and writes every report format. The report records what reproduces the run:
package versions, seed, device, fingerprints of the model, data and generator, and the command.
"""
from __future__ import annotations

import importlib
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from robust import __version__
from robust.data import ImageSet, load_dataset, split_options
from robust.errors import InputError, RobustError
from robust.io import check_writable
from robust.models import Classifier, load_classifier
from robust.progress import progress
from robust.provenance import command_line, processor
from robust.registry import Registry, Spec, parse_spec
from robust.results import AuditResult, CaseResult, FailureExample, SuiteResult, metric_key
from robust.seeding import derive_seed, resolve_device, seed_everything

if TYPE_CHECKING:  # robust.train imports this module
    from robust.train.distributed import World

SuiteFn = Callable[["AuditContext", Spec], SuiteResult]

#: Suites by name; ``@SUITES.register("name", description=...)`` adds one.
SUITES: Registry[SuiteFn] = Registry("suite")

#: What ``robust audit`` runs when no suite is named (``shift`` skips itself on non-synthetic data).
DEFAULT_SUITES: tuple[str, ...] = ("clean", "shift", "corruptions", "pgd:linf@8/255", "transforms")
#: Added to the defaults when a generator is given and the suite is registered.
GENERATOR_SUITES: tuple[str, ...] = ("natural", "sage")
#: Spec options the runner reads itself (not passed on to a suite's own parameters).
RUNNER_OPTIONS = ("name",)
FAILURES_PER_CASE = 8
EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_SUITE_ERROR = 0, 1, 2, 3
_PACKAGES = ("torch", "torchvision", "numpy", "timm", "kornia", "onnxruntime", "safetensors", "matplotlib", "jinja2", "jsonschema")


class SuiteSkipped(RobustError):
    """Raised by a suite that does not apply (e.g. ``shift`` without synthetic data): status ``skipped``."""


def load_suites() -> Registry[SuiteFn]:
    """Import :mod:`robust.suites` (which registers every built-in suite); returns :data:`SUITES`."""
    importlib.import_module("robust.suites")
    return SUITES


# -- the context a suite runs in ----------------------------------------------------------------

@dataclass
class AuditContext:
    """Everything a suite needs: the classifier, the evaluated data, budgets, seeds and helpers.

    ``data`` is the evaluation set (already cut to ``max_samples``, images on the CPU);
    ``data_source`` is what the user passed (a spec string such as ``synthetic:test_iid`` lets a
    suite rebuild the benchmark). ``deadline`` is a ``time.monotonic()`` value or None.

    Training's per-epoch evaluation (:mod:`robust.train.evaluation`) sets ``metrics_only``: suites
    that support it (clean, corruptions, the attacks, natra) skip failure images, strips and
    curves, count correct predictions on this process's :meth:`shard` of the data and sum the
    counts over the processes of ``world`` (a :class:`robust.train.distributed.World`; None: the
    whole data on this process) with :meth:`total`, so every rank gets the same numbers. Other
    suites evaluate the whole data on every rank (:meth:`evaluate` keeps no failures). ``batch_size`` and
    ``amp`` (bf16 autocast) apply to the model's forward passes; ``cache`` keeps preparations
    (natra's inverted codes) between runs of a suite on the same data.
    """

    classifier: Classifier
    data: ImageSet
    data_source: Any = None
    generator: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    max_samples: int | None = None
    deadline: float | None = None
    failures_per_case: int = FAILURES_PER_CASE
    progress: bool | None = None
    suite_key: str = ""
    metrics_only: bool = False
    world: World | None = None
    batch_size: int | None = None
    amp: bool = False
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.data.class_names)

    def seed_for(self, *names: object) -> int:
        """A seed for one random choice of the running suite (independent of the other suites)."""
        return derive_seed(self.seed, "audit", self.suite_key, *names)

    def time_left(self) -> float | None:
        """Seconds left of the audit's time budget (None without a budget)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def out_of_time(self) -> bool:
        left = self.time_left()
        return left is not None and left <= 0

    def sample_count(self, spec: Spec, default: int) -> int:
        """Images a suite should use: its ``n=`` option, else the audit's ``max_samples``, else ``default``."""
        check_count(spec)
        return int(spec.options.get("n", self.max_samples if self.max_samples is not None else default))

    def subset(self, n: int) -> ImageSet:
        """At most ``n`` images of the evaluation data (seeded, class-balanced)."""
        return self.data.take(n, self.seed)

    def progress_bar(self, iterable: Any = None, total: int | None = None, desc: str = "", unit: str = "") -> Any:
        """Progress of a suite's loop (:func:`robust.progress.progress`): a bar on a terminal, lines in logs,
        nothing when ``progress`` is False."""
        return progress(iterable, total=total, desc=desc, unit=unit, enabled=self.progress)

    def autocast(self) -> Any:
        """bf16 autocast on the model's device when ``amp`` is set (a no-op otherwise)."""
        return torch.autocast(self.classifier.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (CPU, float32) of images in ``[0, 1]``, batched without gradients."""
        with self.autocast():
            return self.classifier.logits(images, self.batch_size).float().cpu()

    def shard(self, data: ImageSet) -> tuple[ImageSet, torch.Tensor]:
        """This process's share of ``data`` and the positions of its images in ``data``.

        Rank ``r`` of ``W`` processes takes images ``r, r + W, ...``; without a distributed world, all of them.
        """
        if self.world is None or not self.world.distributed:
            return data, torch.arange(len(data))
        from robust.train.distributed import shard_range

        indices = shard_range(len(data), self.world)
        return data[indices], indices

    def count(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """Correct predictions and summed cross-entropy over ``images`` (computed on the model's device)."""
        if not images.shape[0]:
            return 0.0, 0.0
        with self.autocast():
            logits = self.classifier.logits(images.to(self.classifier.device), self.batch_size).float()
        labels = labels.to(logits.device)
        return float((logits.argmax(1) == labels).sum()), float(F.cross_entropy(logits, labels, reduction="sum"))

    def total(self, *values: float) -> list[float]:
        """``values`` summed over the processes of ``world`` (float64; as they are without a distributed world)."""
        if self.world is None or not self.world.distributed:
            return [float(v) for v in values]
        from robust.train.distributed import all_reduce_sum

        # On the model's device: NCCL reduces CUDA tensors only.
        summed = all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=self.classifier.device), self.world)
        return summed.tolist()

    def evaluate(
        self,
        name: str,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        logits: torch.Tensor | None = None,
        originals: torch.Tensor | None = None,
        describe: Callable[[int], str] | None = None,
        failure_params: Callable[[int], dict[str, Any]] | None = None,
        seeds: Sequence[int] | torch.Tensor | None = None,
        params: dict[str, Any] | None = None,
        failures: int | None = None,
        per_class: bool = True,
        failure_mask: torch.Tensor | None = None,
    ) -> CaseResult:
        """A :class:`CaseResult` with accuracy, per-class accuracy and the most confident mistakes.

        ``images`` are what the model saw, in data order; ``originals`` the clean inputs they came
        from (shown beside each failure); ``describe(i)`` / ``failure_params(i)`` / ``seeds[i]`` say
        how to reproduce image ``i``.
        ``per_class=False`` leaves the per-class breakdown out (for suites with many cases);
        ``failure_mask`` restricts the failures shown to some images (e.g. those an attack broke).
        """
        labels = labels.cpu()
        if logits is None:
            logits = self.logits(images)
        logits = logits.float().cpu()
        probs = logits.softmax(1)
        confidence, predictions = probs.max(1)
        correct = predictions == labels
        by_class: dict[str, float] = {}
        for c, cname in enumerate(self.class_names if per_class else []):
            mask = labels == c
            if bool(mask.any()):
                by_class[cname] = float(correct[mask].float().mean())
        metrics = {"acc": float(correct.float().mean())}
        limit = 0 if self.metrics_only else self.failures_per_case if failures is None else failures
        shown = ~correct if failure_mask is None else ~correct & failure_mask.cpu().bool()
        wrong = shown.nonzero().squeeze(1)
        # Most confident mistakes first; a stable sort keeps ties in data order (deterministic).
        order = wrong[torch.argsort(-confidence[wrong], stable=True)][:limit].tolist()
        examples = []
        for i in order:
            examples.append(FailureExample(
                index=i,
                label=int(labels[i]),
                prediction=int(predictions[i]),
                confidence=float(confidence[i]),
                description=describe(i) if describe else "",
                params=failure_params(i) if failure_params else {},
                seed=int(seeds[i]) if seeds is not None else None,
                image=images[i],
                original=originals[i] if originals is not None else None,
            ))
        return CaseResult(metric_key(name), metrics, dict(params or {}), n=int(labels.numel()), per_class=by_class, failures=examples)


# -- loading the inputs ---------------------------------------------------------------------------

def resolve_generator(generator: Any, device: torch.device) -> Any:
    """``None``; ``"demo"``/``"demo-swap"`` (the shipped models); a model file (a generator or a structure/appearance model); or a module."""
    if generator is None:
        return None
    if isinstance(generator, torch.nn.Module):
        return generator.to(device)
    try:
        gan = importlib.import_module("robust.gan")
    except ImportError as exc:
        raise InputError("generator", "robust.gan (the generator package) to be installed", f"an import error ({exc})") from None
    return gan.load_model(generator, device)


def _fingerprint_module(module: Any) -> str | None:
    from robust.io import fingerprint_tensors

    if isinstance(module, torch.nn.Module):
        return fingerprint_tensors(*[t for _, t in sorted(module.state_dict().items())])
    return None


def environment(seed: int, device: torch.device, command: str | None) -> dict[str, Any]:
    """Versions, platform, device, seed and command: what it takes to reproduce an audit."""
    from importlib import metadata

    packages: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else processor()
    return {
        "robust": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "device": str(device),
        "device_name": device_name,
        "threads": torch.get_num_threads(),
        "seed": int(seed),
        "command": command if command is not None else command_line(),
    }


# -- specs ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedSuite:
    """A suite to run: its result name (metric-path prefix), the spec it gets and the spec as written."""

    name: str
    spec: Spec
    key: str


def check_count(spec: Spec) -> None:
    """A suite's ``n=`` option, when given, must be a positive whole number of images."""
    n = spec.options.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise InputError(f"{spec.name} option n", "a positive whole number of images", n)


def check_suite(spec: Spec, argument: str | None = None) -> None:
    """Parse ``spec`` as its suite will, without running anything: the name, ``n=`` and the suite's own
    ``check`` (registered as ``SUITES.register(name, check=fn)``: it reads the spec through the same
    functions the suite uses, such as :func:`attacks.get_attack`).

    Raises :class:`InputError` naming ``argument`` (default ``suite '<spec>'``) and what in it is wrong.
    """
    load_suites()
    argument = argument or f"suite {str(spec)!r}"
    SUITES.get(spec.name)
    check = SUITES.meta(spec.name).get("check")
    try:
        check_count(spec)
        if check is not None:
            check(spec)
    except InputError as exc:
        raise InputError(f"{argument}: {exc.name}", exc.expected, exc.got) from None
    except RobustError:
        raise
    except (TypeError, ValueError) as exc:  # a plain int()/float() of an option: still the user's spec at fault
        raise InputError(argument, f"options the {spec.name} suite accepts", str(exc)) from None


def plan_suites(suites: Iterable[str | Spec]) -> list[PlannedSuite]:
    """Parse and check suite specs (:func:`check_suite`) and that their result names are unique.

    ``name=`` in a spec renames its result (``pgd:l2@0.5,name=pgd_l2``) so one suite can run twice.
    Every spec is checked before any suite runs, so a typo in the last one costs no time.
    """
    load_suites()
    planned: list[PlannedSuite] = []
    seen: set[str] = set()
    for item in suites:
        spec = item if isinstance(item, Spec) else parse_spec(str(item), "suite")
        SUITES.get(spec.name)
        options = dict(spec.options)
        name = str(options.pop("name", spec.name))
        if name != metric_key(name):
            raise InputError(f"suite {spec} name", "letters, digits, '_' or '-'", name)
        if name in seen:
            raise InputError("suites", "distinct result names (add name=... to one of the specs)", f"{name!r} twice")
        seen.add(name)
        suite_spec = Spec(spec.name, spec.target, spec.at, options)
        check_suite(suite_spec, f"suite {str(spec)!r}")
        planned.append(PlannedSuite(name, suite_spec, str(spec)))
    if not planned:
        raise InputError("suites", "at least one suite (" + ", ".join(SUITES.names()) + ")", "none")
    return planned


def default_suites(generator: Any = None) -> list[str]:
    load_suites()
    suites = [s for s in DEFAULT_SUITES if parse_spec(s).name in SUITES]
    if generator is not None:
        suites += [s for s in GENERATOR_SUITES if s in SUITES]
    return suites


# -- running --------------------------------------------------------------------------------------

def _run_one(ctx: AuditContext, planned: PlannedSuite) -> SuiteResult:
    fn = SUITES.get(planned.spec.name)
    ctx.suite_key = planned.key
    # Code that draws from the global generators still repeats itself per suite.
    seed_everything(derive_seed(ctx.seed, "audit-global", planned.key) % (2**31))
    start = time.perf_counter()
    try:
        if ctx.out_of_time():
            raise SuiteSkipped("the audit's time budget ran out before this suite started")
        suite = fn(ctx, planned.spec)
        if not isinstance(suite, SuiteResult):
            raise TypeError(f"suite {planned.spec.name!r} returned {type(suite).__name__}, not a SuiteResult")
        suite.name = planned.name
    except SuiteSkipped as exc:
        suite = SuiteResult(planned.name, status="skipped", error=str(exc))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a failing suite is reported, and the others still run
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
        lines = traceback.format_exception(exc)
        suite = SuiteResult(planned.name, status="error", error=f"{type(exc).__name__}: {exc}",
                            details={"traceback": "".join(lines[-12:])})
    suite.duration_s = time.perf_counter() - start
    suite.params = {"spec": planned.key, **suite.params}
    return suite


def _previous(out: Path, current: AuditResult) -> dict[str, SuiteResult]:
    """Finished suites of an earlier run of the same audit (same model, data, generator, seed) in ``out``."""
    from reports import load_report

    path = out / "report.json"
    if not path.is_file():
        return {}
    previous = load_report(path)
    checks = [("model", previous.model.get("fingerprint"), current.model.get("fingerprint")),
              ("data", previous.data.get("fingerprint"), current.data.get("fingerprint")),
              ("generator", (previous.environment.get("generator") or {}).get("fingerprint"),
               (current.environment.get("generator") or {}).get("fingerprint")),
              ("seed", previous.environment.get("seed"), current.environment.get("seed"))]
    for what, before, now in checks:
        if before != now:
            raise InputError(f"resume from {path}", f"a report of the same {what} ({now})", f"{what} {before}")
    return {s.params.get("spec"): s for s in previous.suites if s.status == "ok"}


@dataclass
class AuditConfig:
    """How an audit runs: the settings of ``robust audit`` and of its configuration file.

    ``suites``: specs such as ``"corruptions"`` or ``"pgd:linf@8/255"`` (None: the defaults).
    ``gates``: expressions such as ``"clean.acc>=0.9"`` (checked before anything runs). ``out``:
    folder for the reports (``report.json`` is rewritten after every suite); ``resume`` keeps the
    finished suites of the report already there. ``max_samples``: cap on evaluated images;
    ``time_budget``: seconds, after which the remaining suites are skipped. ``model_options`` go to
    :func:`robust.models.load_classifier` (num_classes, input_size, weights, mean, std).
    ``command``: the command recorded (default: this process's). ``progress``: None shows progress
    bars on a terminal and progress lines in logs (:mod:`robust.progress`), False neither.
    """

    suites: Iterable[str | Spec] | None = None
    gates: Iterable[str] = ()
    out: str | Path | None = None
    seed: int = 0
    resume: bool = False
    max_samples: int | None = None
    device: str | torch.device = "auto"
    time_budget: float | None = None
    formats: Iterable[str] = ("json", "html", "md", "junit")
    failures_per_case: int = FAILURES_PER_CASE
    model_options: dict[str, Any] | None = None
    command: str | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.max_samples is not None and (not isinstance(self.max_samples, int) or self.max_samples < 1):
            raise InputError("max_samples", "a positive whole number", self.max_samples)
        budget = self.time_budget
        if budget is not None and not (isinstance(budget, (int, float)) and budget > 0 and math.isfinite(budget)):
            raise InputError("time_budget", "a positive number of seconds", budget)
        if self.resume and self.out is None:
            raise InputError("resume", "an output folder (out=...) holding the report to resume", None)
        self.suites = list(self.suites) if self.suites is not None else None
        self.gates = list(self.gates)
        self.formats = list(self.formats)
        self.model_options = dict(self.model_options or {})


def _plan(config: AuditConfig, generator: Any) -> tuple[list[PlannedSuite], list[Any]]:
    """The suites to run and the parsed gates, checked against each other; the report formats checked."""
    from reports import FORMATS, parse_gate

    planned = plan_suites(config.suites if config.suites is not None else default_suites(generator))
    gates = [parse_gate(g) for g in config.gates]
    names = {p.name for p in planned}
    for gate in gates:
        if gate.suite not in names:
            raise InputError(f"gate {gate.expression!r}", "a metric of one of the suites " + ", ".join(sorted(names)), f"suite {gate.suite!r}")
    for name in config.formats:
        FORMATS.get(name)
    return planned, gates


def _context(model: Any, data: Any, generator: Any, config: AuditConfig, device: torch.device, clock: float) -> AuditContext:
    """Load the data, the model (its defaults from the data) and the generator into a context for the suites."""
    dataset = load_dataset(data, n=config.max_samples, seed=config.seed)
    classifier = load_classifier(model, data=dataset, device=device, **config.model_options)
    classifier.check_compatible(dataset)
    if classifier.has_gradients:
        classifier.to(device)
    gen = resolve_generator(generator, device)
    return AuditContext(classifier, dataset, data_source=data, generator=gen, device=device, seed=config.seed,
                        max_samples=config.max_samples, deadline=None if config.time_budget is None else clock + float(config.time_budget),
                        failures_per_case=config.failures_per_case, progress=config.progress)


def _new_result(ctx: AuditContext, model: Any, generator: Any, config: AuditConfig, planned: list[PlannedSuite],
                gates: list[Any], started: float) -> AuditResult:
    """An empty result recording the model, data, generator and environment of the run."""
    data = ctx.data_source
    env = environment(config.seed, ctx.device, config.command)
    env.update({"suites": [p.key for p in planned], "gates": [g.expression for g in gates],
                "max_samples": config.max_samples, "time_budget": config.time_budget})
    if ctx.generator is not None:
        env["generator"] = {"source": str(generator) if not isinstance(generator, torch.nn.Module) else type(generator).__name__,
                            "fingerprint": _fingerprint_module(ctx.generator)}
    classifier, dataset = ctx.classifier, ctx.data
    model_info = {**classifier.describe(), "source": str(model) if isinstance(model, (str, Path)) else classifier.name}
    data_info = {**dataset.describe(), "source": str(data) if isinstance(data, (str, Path)) else dataset.name, "max_samples": config.max_samples}
    return AuditResult(model=model_info, data=data_info, environment=env, created=started, complete=False)


def run_audit(model: Any, data: Any, config: AuditConfig | None = None, *, generator: Any = None,
              on_suite: Callable[[SuiteResult], None] | None = None) -> AuditResult:
    """Audit ``model`` on ``data`` as ``config`` says (default: the default suites, no gates, no files).

    ``model``: any spec :func:`robust.models.load_classifier` accepts (the data supplies its class
    count, image shape and class names). ``data``: anything :func:`robust.data.load_dataset`
    accepts. ``generator``: None, ``"demo"``, a generator checkpoint or module (see
    :func:`resolve_generator`). ``on_suite`` is called with each finished suite.
    """
    from reports import evaluate_gates, write_reports

    config = config if config is not None else AuditConfig()
    started = time.time()
    clock = time.monotonic()
    dev = resolve_device(config.device)
    planned, gates = _plan(config, generator)
    out_dir = check_writable(config.out, "out") if config.out is not None else None
    ctx = _context(model, data, generator, config, dev, clock)
    result = _new_result(ctx, model, generator, config, planned, gates, started)
    done = _previous(out_dir, result) if config.resume and out_dir else {}
    if done:
        result.environment["resumed"] = sorted(k for k in done if k in {p.key for p in planned})

    # Off a terminal the caller's on_suite reports each suite; a bar is for terminals only.
    for planned_suite in progress(planned, desc="audit", unit="suite", enabled=config.progress, lines=False):
        if planned_suite.key in done:
            suite = done[planned_suite.key]
            suite.name = planned_suite.name
        else:
            suite = _run_one(ctx, planned_suite)
        result.suites.append(suite)
        if out_dir is not None:
            write_reports(result, out_dir, ["json"])
        if on_suite is not None:
            on_suite(suite)

    result.gates = evaluate_gates(result, gates)
    result.complete = True
    result.environment["duration_s"] = time.monotonic() - clock
    if out_dir is not None:
        write_reports(result, out_dir, config.formats if "json" in config.formats else ["json", *config.formats])
    return result


def exit_code(result: AuditResult, allow_errors: bool = False) -> int:
    """0: every gate passed and no suite errored; 1: a gate failed; 3: a suite errored (unless allowed)."""
    if not result.passed:
        return EXIT_GATE_FAILED
    if not allow_errors and any(s.status == "error" for s in result.suites):
        return EXIT_SUITE_ERROR
    return EXIT_OK


# -- configuration files ----------------------------------------------------------------------------

CONFIG_KEYS = {
    "model": str, "data": str, "generator": str, "suites": list, "gates": list, "out": str, "seed": int,
    "max_samples": int, "time_budget": (int, float), "device": str, "formats": list, "failures": int,
    "resume": bool, "allow_errors": bool, "model_options": dict,
}


def load_config(path: str | Path) -> dict[str, Any]:
    """Read an audit configuration (TOML) holding the same settings as the command line.

    Keys: model, data, generator, suites (list of specs), gates (list of expressions), out, seed,
    max_samples, time_budget, device, formats, failures, resume, allow_errors, and a
    ``[model_options]`` table (num_classes, input_size, weights, mean, std). ``out`` and
    ``weights`` are relative to the file; so are model, data and generator when such a file (or a
    checkpoint of that prefix) exists.
    """
    from robust.errors import FileFormatError

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise InputError("config", "Python 3.11+ or the tomli package for TOML files", "Python 3.10 without tomli") from None
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(path, "an existing TOML file", "no such file")
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(path, "valid TOML", f"unreadable ({exc})") from None
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise InputError(f"config {path.name}", "keys " + ", ".join(CONFIG_KEYS), "unknown " + ", ".join(unknown))
    for key, kind in CONFIG_KEYS.items():
        if key in config and (not isinstance(config[key], kind) or (kind is int and isinstance(config[key], bool))):
            raise InputError(f"config {path.name}: {key}", f"a {getattr(kind, '__name__', 'number')}", config[key])
    options = config.get("model_options", {})
    allowed = {"num_classes", "input_size", "weights", "mean", "std"}
    if set(options) - allowed:
        raise InputError(f"config {path.name}: model_options", "keys " + ", ".join(sorted(allowed)), sorted(set(options) - allowed))
    base = path.parent
    for key in ("model", "data", "generator"):
        if key in config and not Path(config[key]).is_absolute():
            # A data spec may end in options (``shapes/val,size=48``): the path is what comes before them.
            source, options = split_options(config[key]) if key == "data" else (config[key], "")
            local = base / source
            # A checkpoint is often named by its prefix (``runs/x/best`` for best.safetensors + best.json).
            siblings = (local, local.with_name(local.name + ".json"), local.with_name(local.name + ".safetensors"))
            if any(p.exists() for p in siblings):
                config[key] = str(local) + options
    if "out" in config and not Path(config["out"]).is_absolute():
        config["out"] = str(base / config["out"])
    if "weights" in options and not Path(options["weights"]).is_absolute():
        options["weights"] = str(base / options["weights"])
    return config

