"""Robustness assertions for test suites: invariance, accuracy floors and attack budgets.

Each raises :class:`RobustnessFailure` (an ``AssertionError``) naming the transform or attack, its
parameters, the failing samples and the PNG of their images (under pytest with the ``robust``
plugin, in the test's folder; elsewhere in ``./.robust-failures/``), and records its result.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robust.data import ImageSet, load_dataset
from robust.errors import InputError
from robust.io import write_json, write_png
from robust.models import Classifier, load_classifier
from robust.plugins import load_all
from robust.registry import Spec, parse_spec
from robust.results import CaseResult, FailureExample, metric_key
from robust.seeding import derive_seed
from robust.transforms import TRANSFORMS, Params, Transform, check_severity, get_transform, severity_from_spec
from robust.validation import check_images, check_labels, check_number

DEFAULT_FAILURE_DIR = ".robust-failures"
_IDENTITY_TOLERANCE = 1e-6  # grid points this close to the identity (relative to the range) are the identity
#: Failing images are shown at least this many pixels high, so 16-px samples stay legible.
MIN_SHOWN_SIZE = 64


class RobustnessFailure(AssertionError):
    """A robustness assertion failed; ``failures`` reproduce it, ``path`` is the image file (if written)."""

    def __init__(self, message: str, failures: Sequence[FailureExample] = (), path: Path | None = None):
        super().__init__(message)
        self.failures = list(failures)
        self.path = path


# -- inputs ---------------------------------------------------------------------------------------

@dataclass
class _Inputs:
    images: torch.Tensor  # float [N, C, H, W] in [0, 1], on the CPU
    labels: torch.Tensor | None
    indices: list[int]  # position of each image in its dataset
    class_names: list[str] | None


def _inputs(images: Any, labels: Any = None, name: str = "images") -> _Inputs:
    """Tensors, an ImageSet, a strategies Batch, or an ``(images, labels)`` pair -> one form."""
    indices = None
    class_names = None
    if isinstance(images, ImageSet):
        images, labels, class_names = images.images, images.labels if labels is None else labels, images.class_names
    elif hasattr(images, "images") and hasattr(images, "indices"):
        batch = images
        images, indices = batch.images, list(batch.indices)
        labels = getattr(batch, "labels", None) if labels is None else labels
        class_names = list(getattr(batch, "class_names", []) or []) or None
    elif isinstance(images, (tuple, list)) and len(images) == 2 and isinstance(images[0], torch.Tensor):
        images, labels = images[0], images[1] if labels is None else labels
    elif isinstance(images, str):
        data = load_dataset(images)
        images, labels, class_names = data.images, data.labels if labels is None else labels, data.class_names
    images = check_images(images, name)
    n = images.shape[0]
    if labels is not None:
        labels = check_labels(labels, n, None, f"{name} labels")
    if indices is None:
        indices = list(range(n))
    return _Inputs(images.detach(), labels, indices, class_names)


def _classifier(model: Any, inputs: _Inputs) -> Classifier:
    """Any model spec :func:`load_classifier` reads; the images give the input size (for an nn.Module or ONNX file)."""
    return load_classifier(model, input_size=tuple(inputs.images.shape[1:]))


def _class(clf: Classifier, k: int) -> str:
    name = clf.class_names[k] if 0 <= k < len(clf.class_names) else str(k)
    return f"class {k}" if name == str(k) else f"{name!r} (class {k})"


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


# -- transforms -----------------------------------------------------------------------------------

@dataclass
class _Setting:
    """A transform with per-image parameters for the whole batch."""

    transform: Transform
    params: Params
    label: str  # short name for files and report cases: "brightness", "corruptions:fog@3"

    def describe(self, i: int) -> str:
        return self.transform.describe(self.params, i)

    def values(self, i: int) -> dict[str, float]:
        kinds = {p.name: p.kind for p in self.transform.params}
        # Seven significant digits: all a float32 holds, so 0.3005 prints as 0.3005, not 0.30050000548.
        return {k: int(v[i]) if kinds.get(k) == "seed" else float(f"{float(v[i]):.7g}") for k, v in self.params.items()}

    def apply(self, images: torch.Tensor, part: slice) -> torch.Tensor:
        params = {k: v[part].to(images.device) for k, v in self.params.items()}
        return self.transform.apply(images, params)


def _transform(spec: Any) -> Transform:
    if isinstance(spec, str):
        load_all()
        return get_transform(spec)
    if isinstance(spec, Transform):
        return spec
    raise InputError("transform", "a registered transform name, a Transform or a strategies TransformCase", type(spec).__name__)


def _case_setting(case: Any, n: int) -> _Setting:
    return _Setting(case.transform, {k: v.cpu() for k, v in case.params(n).items()}, case.name)


def _is_case(obj: Any) -> bool:
    """A :class:`robust.strategies.TransformCase` (only possible once strategies, which needs hypothesis, is imported)."""
    strategies = sys.modules.get("robust.strategies")
    return strategies is not None and isinstance(obj, strategies.TransformCase)


def _distance_from_identity(tf: Transform, point: Mapping[str, float]) -> float:
    total = 0.0
    for p in tf.params:
        if p.name in point and p.kind == "magnitude" and p.high > p.low:
            total += abs(point[p.name] - p.identity) / (p.high - p.low)
    return total


def _invariance_settings(transform: Any, params: Any, severity: Any, indices: list[int], seed: int, grid_steps: int) -> list[_Setting]:
    n = len(indices)
    if _is_case(transform):
        if params is not None or severity is not None:
            raise InputError("params/severity", "nothing with a TransformCase (it carries its parameters)", "both")
        return [_case_setting(transform, n)]
    tf = _transform(transform)
    label = tf.name
    if params is not None and severity is not None:
        raise InputError("params/severity", "one of params or severity", "both")
    if params is not None:
        if not isinstance(params, Mapping):
            raise InputError("params", "a dict of numbers or [N] tensors", type(params).__name__)
        return [_Setting(tf, tf.expand(params, n, seed=seed), label)]
    if severity is not None:
        return [_severity_setting(tf, check_severity(severity), indices, seed, label)]
    steps = int(check_number(grid_steps, "grid_steps", low=2, integer=True))
    points = sorted(tf.grid(steps), key=lambda point: _distance_from_identity(tf, point))
    # float32 grids hold the identity as a round-off neighbour (-3e-8): that is the identity too.
    points = [pt for pt in points if _distance_from_identity(tf, pt) > _IDENTITY_TOLERANCE]
    return [_Setting(tf, tf.expand(pt, n, seed=seed), label) for pt in points]


def _severity_setting(tf: Transform, severity: float, indices: Sequence[int], seed: int, label: str) -> _Setting:
    """Parameters at ``severity``; each image's draw follows its dataset index (not its place in the batch)."""
    seeds = torch.as_tensor(list(indices), dtype=torch.int64) + derive_seed(seed, "robust.testing", label, severity) % (1 << 62)
    return _Setting(tf, tf.at_severity(severity, seeds, device="cpu"), f"{label}@{severity:g}")


def _expand_names(name: str) -> list[str]:
    if any(c in name for c in "*?["):
        names = TRANSFORMS.names(name)
        if not names:
            raise InputError("suite", "a pattern matching registered transforms (" + ", ".join(TRANSFORMS.names()) + ")", name)
        return names
    if name == "corruptions" or name.startswith("corruptions:"):  # a set of corruptions, or one
        from augment.corruptions import parse_corruption_set

        return [f"corruptions:{n}" for n in parse_corruption_set(name, "suite")[0]]
    return [name]


def _suite_settings(suite: Any, indices: list[int], seed: int) -> list[_Setting | None]:
    """``None`` entries stand for the clean images."""
    n = len(indices)
    if suite is None or suite == "clean":
        return [None]
    if _is_case(suite):
        return [_case_setting(suite, n)]
    if isinstance(suite, (list, tuple)):
        return [s for item in suite for s in _suite_settings(item, indices, seed)]
    if not isinstance(suite, str):
        tf = _transform(suite)
        raise InputError("suite", f"{tf.name} with a severity or parameters: a spec such as '{tf.name}@3' or a TransformCase", type(suite).__name__)
    load_all()
    head, sep, tail = suite.partition("@") if "@" in suite else suite.partition(",")
    settings: list[_Setting | None] = []
    for name in _expand_names(head.strip()):
        spec: Spec = parse_spec(name + sep + tail, "suite")
        key = spec.name if spec.target is None else f"{spec.name}:{spec.target}"
        tf = get_transform(key)
        if spec.at is None and not spec.options:
            raise InputError(f"suite {suite!r}", f"a severity or parameters ('{key}@3' or '{key},{tf.params[0].name}=...')", "neither")
        if spec.at is not None:
            setting = _severity_setting(tf, severity_from_spec(spec.at), indices, seed, key)
            if spec.options:
                setting.params.update({k: v for k, v in tf.expand(spec.options, n, seed=seed).items() if k in spec.options})
                setting.label = str(spec)
        else:
            setting = _Setting(tf, tf.expand(spec.options, n, seed=seed), str(spec))
        settings.append(setting)
    return settings


# -- where failures go ----------------------------------------------------------------------------

def _plugin() -> Any:
    return sys.modules.get("robust.pytest_plugin")


def failure_dir(save_dir: str | Path | None = None) -> Path:
    """The folder failing images go to: ``save_dir``, else the running test's folder, else ``.robust-failures``."""
    if save_dir is not None:
        return Path(save_dir)
    plugin = _plugin()
    folder = plugin.current_failure_dir() if plugin is not None else None
    return folder if folder is not None else Path(DEFAULT_FAILURE_DIR)


def _final_attempt() -> bool:
    """False while hypothesis explores or shrinks; only its final replay writes files and records."""
    control = sys.modules.get("hypothesis.control")
    if control is None or not control.currently_in_test_context():
        return True
    return bool(control.current_build_context().is_final)


def _shown(image: torch.Tensor, height: int) -> torch.Tensor:
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    image = image[:3]
    if image.shape[1] != height:
        scale = height / image.shape[1]
        size = (height, max(1, round(image.shape[2] * scale)))
        image = F.interpolate(image[None], size=size, mode="nearest" if scale >= 1 else "area")[0]
    return image


def save_image_rows(path: str | Path, rows: Sequence[Sequence[torch.Tensor]]) -> Path:
    """Write rows of ``[C, H, W]`` images in ``[0, 1]`` as one PNG grid (atomically); returns the path."""
    if not rows or not rows[0]:
        raise InputError("rows", "at least one row of images", "none")
    height = max(MIN_SHOWN_SIZE, max(im.shape[1] for row in rows for im in row))
    shown = [[_shown(im, height) for im in row] for row in rows]
    width = max(im.shape[2] for row in shown for im in row)
    columns = max(len(row) for row in shown)
    pad = 4
    canvas = torch.ones(3, pad + len(shown) * (height + pad), pad + columns * (width + pad))
    for r, row in enumerate(shown):
        for c, im in enumerate(row):
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            canvas[:, top : top + height, left : left + im.shape[2]] = im
    return write_png(path, canvas)


def _write_failures(kind: str, label: str, rows: list[list[torch.Tensor]], failures: list[FailureExample],
                    columns: str, save_dir: str | Path | None) -> Path:
    folder = failure_dir(save_dir)
    stem = f"{kind}-{metric_key(label)}"
    path = save_image_rows(folder / f"{stem}.png", rows)
    write_json(folder / f"{stem}.json", {"kind": kind, "label": label, "columns": columns, "failures": [f.to_dict() for f in failures]})
    return path


def _record(kind: str, case: CaseResult | None, model: Classifier, inputs: _Inputs) -> None:
    """Hand the case to the session report (``None``: an attempt hypothesis will not report)."""
    plugin = _plugin()
    if plugin is not None:
        tensors = (inputs.images,) if inputs.labels is None else (inputs.images, inputs.labels)
        plugin.record_case(kind, case, model, tensors)


def _finish(kind: str, label: str, case: CaseResult, model: Classifier, inputs: _Inputs, message: str,
            rows: list[list[torch.Tensor]], columns: str, save_dir: str | Path | None) -> CaseResult:
    """Record the case; on failure write the images and raise with ``message`` and their path."""
    final = _final_attempt()
    _record(kind, case if final else None, model, inputs)
    if not case.failures and case.metrics.get("passed", 1.0) >= 1.0:
        return case
    path = None
    if final and rows:
        path = _write_failures(kind, label, rows, case.failures, columns, save_dir)
        message += f"\n  failing images: {path} ({columns})"
    raise RobustnessFailure(message, case.failures, path)


def _failure(inputs: _Inputs, i: int, prediction: int, confidence: float, description: str = "",
             params: dict[str, Any] | None = None, image: torch.Tensor | None = None, label: int | None = None) -> FailureExample:
    true = int(inputs.labels[i]) if inputs.labels is not None else label
    return FailureExample(index=inputs.indices[i], label=-1 if true is None else true, prediction=prediction,
                          confidence=confidence, description=description, params=dict(params or {}),
                          seed=(params or {}).get("seed"), image=image, original=inputs.images[i])


# -- assertions -----------------------------------------------------------------------------------

def assert_invariant(
    model: Any,
    images: Any,
    transform: Any,
    *,
    params: Mapping[str, Any] | None = None,
    severity: float | None = None,
    labels: Any = None,
    margin: float = 0.0,
    max_drop: float | None = None,
    grid_steps: int = 5,
    seed: int = 0,
    save_dir: str | Path | None = None,
    max_reported: int = 8,
) -> CaseResult:
    """Assert the model's prediction survives ``transform``.

    ``images``: a tensor ``[N, C, H, W]`` in ``[0, 1]``, an ImageSet, a strategies Batch or
    ``(images, labels)``. ``transform``: a name, a Transform, or a strategies TransformCase (which
    carries its parameters). Parameters come from ``params`` (numbers or ``[N]`` tensors; missing
    ones stay at the identity), or ``severity`` (``Transform.at_severity``, seeded by ``seed``), or
    else every point of the transform's ``grid(grid_steps)``; for each image the mildest failing
    point is reported.

    A sample passes when the clean top-1 class is still top-1 on the transformed image, up to
    ``margin``: its probability may trail the new top class by at most ``margin`` (0 = the
    prediction is unchanged). ``max_drop``, when given, also fails a sample whose clean top-1
    probability falls by more than that. Returns the recorded :class:`CaseResult`.
    """
    inputs = _inputs(images, labels)
    clf = _classifier(model, inputs)
    margin = check_number(margin, "margin", low=0, high=1)
    if max_drop is not None:
        max_drop = check_number(max_drop, "max_drop", low=0, high=1)
    n = inputs.images.shape[0]
    settings = _invariance_settings(transform, params, severity, inputs.indices, seed, grid_steps)
    if not settings:
        raise InputError("transform", "a transform with at least one non-identity grid point", "none")
    found = _first_failures(clf, inputs, settings, margin, max_drop)
    bad = (found.failed_at >= 0).nonzero().squeeze(1).tolist()
    label = settings[0].label
    failures, rows, lines = _invariance_failures(clf, inputs, settings, found, bad[: max(1, max_reported)])
    rule = "prediction unchanged" if margin == 0 else f"clean top-1 within {margin:g} of the top"
    if max_drop is not None:
        rule += f", confidence drop <= {max_drop:g}"
    case = CaseResult(
        name=metric_key(label),
        metrics={"n": float(n), "failures": float(len(bad)), "invariant_rate": 1.0 - len(bad) / n, "passed": float(not bad)},
        params={"transform": label, "points": len(settings), "margin": margin, "max_drop": max_drop},
        n=n,
        failures=failures,
    )
    more = f"\n  ... and {len(bad) - len(failures)} more" if len(bad) > len(failures) else ""
    message = (f"assert_invariant: {len(bad)} of {n} images changed under {label} "
               f"({len(settings)} parameter setting(s); rule: {rule})\n" + "\n".join(lines) + more)
    return _finish("invariance", label, case, clf, inputs, message, rows, "left: clean, right: transformed", save_dir)


@dataclass
class _FirstFailures:
    """Per image: the clean top-1 class and its probability, the first failing setting (-1: none) and
    the prediction and confidence there."""

    reference: torch.Tensor
    ref_clean: torch.Tensor
    failed_at: torch.Tensor
    pred: torch.Tensor
    conf: torch.Tensor


def _first_failures(clf: Classifier, inputs: _Inputs, settings: list[_Setting], margin: float, max_drop: float | None) -> _FirstFailures:
    """Try the settings in order (mildest first), each only while some image has not failed yet."""
    n = inputs.images.shape[0]
    device, size = clf.device, clf.batch_size
    clean = torch.cat([clf.probabilities(inputs.images[part].to(device)).cpu() for part in _chunks(n, size)])
    reference = clean.argmax(1)
    found = _FirstFailures(reference, clean.gather(1, reference[:, None])[:, 0], torch.full((n,), -1, dtype=torch.long),
                           torch.zeros(n, dtype=torch.long), torch.zeros(n))
    for s, setting in enumerate(settings):
        if not bool((found.failed_at < 0).any()):
            break
        for part in _chunks(n, size):
            probs = clf.probabilities(setting.apply(inputs.images[part].to(device), part)).cpu()
            kept = probs.gather(1, reference[part][:, None])[:, 0]
            ok = kept >= probs.max(1).values - margin
            if max_drop is not None:
                ok &= found.ref_clean[part] - kept <= max_drop
            fresh = (~ok) & (found.failed_at[part] < 0)
            idx = torch.arange(part.start, part.stop)[fresh]
            found.failed_at[idx] = s
            found.pred[idx] = probs.argmax(1)[fresh]
            found.conf[idx] = probs.max(1).values[fresh]
    return found


def _invariance_failures(clf: Classifier, inputs: _Inputs, settings: list[_Setting], found: _FirstFailures,
                         shown: list[int]) -> tuple[list[FailureExample], list[list[torch.Tensor]], list[str]]:
    """The failure records, image rows (clean, transformed) and message lines of the images ``shown``."""
    failures, rows, lines = [], [], []
    for i in shown:
        setting = settings[int(found.failed_at[i])]
        one = slice(i, i + 1)
        transformed = setting.apply(inputs.images[one].to(clf.device), one)[0].cpu()
        pred, conf, expected = int(found.pred[i]), float(found.conf[i]), int(found.reference[i])
        desc = setting.describe(i)
        failures.append(_failure(inputs, i, pred, conf, desc, setting.values(i), transformed, label=expected))
        rows.append([inputs.images[i], transformed])
        truth = f"; true label {_class(clf, int(inputs.labels[i]))}" if inputs.labels is not None else ""
        lines.append(
            f"  sample {i} (index {inputs.indices[i]}) under {desc}: predicted {_class(clf, pred)} (p={conf:.3f}), "
            f"expected {_class(clf, expected)} (clean p={float(found.ref_clean[i]):.3f}{truth})"
        )
    return failures, rows, lines


def _data(data: Any, max_samples: int | None, seed: int) -> _Inputs:
    if max_samples is not None:
        max_samples = int(check_number(max_samples, "max_samples", low=1, integer=True))
    if isinstance(data, (str, Path)):
        data = load_dataset(data, n=max_samples, seed=seed)
    elif isinstance(data, ImageSet):
        data = data.take(max_samples, seed)
    inputs = _inputs(data, name="data")
    if inputs.labels is None:
        raise InputError("data", "labelled images (an ImageSet, a Batch or (images, labels))", "images without labels")
    if max_samples is not None and inputs.images.shape[0] > max_samples:
        keep = slice(0, max_samples)
        inputs = _Inputs(inputs.images[keep], inputs.labels[keep], inputs.indices[:max_samples], inputs.class_names)
    return inputs


def assert_accuracy(
    model: Any,
    data: Any,
    suite: Any = None,
    *,
    at_least: float,
    seed: int = 0,
    max_samples: int | None = None,
    save_dir: str | Path | None = None,
    max_reported: int = 8,
) -> list[CaseResult]:
    """Assert accuracy ``>= at_least`` on ``data`` under every case of ``suite``.

    ``suite``: ``None``/``"clean"``; a spec ``name[@severity][,param=value...]`` where the name may
    be a pattern (``"corruptions:*@3"``, ``"rotation,angle=15"``) or a corruption set
    (``"corruptions:heldout@3"``, as :func:`augment.corruptions.parse_corruption_set` reads it); a
    strategies TransformCase; or a list of these. ``data``: an ImageSet, a Batch, ``(images, labels)`` or a dataset spec
    (``max_samples`` keeps a seeded, class-balanced subset). Returns one CaseResult per case.
    """
    floor = check_number(at_least, "at_least", low=0, high=1)
    inputs = _data(data, max_samples, seed)
    clf = _classifier(model, inputs)
    n = inputs.images.shape[0]
    labels = inputs.labels
    device, size = clf.device, clf.batch_size
    results, lines, rows, failures_all, failing_labels = [], [], [], [], []
    for setting in _suite_settings(suite, inputs.indices, seed):
        label = "clean" if setting is None else setting.label
        preds, confs = [], []
        for part in _chunks(n, size):
            x = inputs.images[part].to(device)
            probs = clf.probabilities(x if setting is None else setting.apply(x, part)).cpu()
            preds.append(probs.argmax(1))
            confs.append(probs.max(1).values)
        pred, conf = torch.cat(preds), torch.cat(confs)
        wrong = (pred != labels).nonzero().squeeze(1).tolist()
        acc = 1.0 - len(wrong) / n
        passed = acc >= floor
        failures = []
        if not passed:
            failing_labels.append(label)
            lines.append(f"  {label}: accuracy {acc:.3f} < {floor:g} ({len(wrong)} of {n} wrong)")
            for i in wrong[: max(1, max_reported)]:
                one = slice(i, i + 1)
                x = inputs.images[one].to(device)
                shown = (x if setting is None else setting.apply(x, one))[0].cpu()
                desc = "clean" if setting is None else setting.describe(i)
                values = {} if setting is None else setting.values(i)
                failures.append(_failure(inputs, i, int(pred[i]), float(conf[i]), desc, values, shown))
                rows.append([inputs.images[i], shown])
                lines.append(f"    sample {i} (index {inputs.indices[i]}) under {desc}: predicted {_class(clf, int(pred[i]))} "
                             f"(p={float(conf[i]):.3f}), expected {_class(clf, int(labels[i]))}")
            failures_all.extend(failures)
        results.append(CaseResult(
            name=metric_key(label),
            metrics={"acc": acc, "at_least": floor, "n": float(n), "passed": float(passed)},
            params={"suite": label},
            n=n,
            failures=failures,
        ))
    final = _final_attempt()
    for case in results:
        _record("accuracy", case if final else None, clf, inputs)
    if not failing_labels:
        return results
    message = f"assert_accuracy: {len(failing_labels)} of {len(results)} case(s) below accuracy {floor:g}\n" + "\n".join(lines)
    path = None
    if final:
        path = _write_failures("accuracy", "-".join(failing_labels)[:80], rows, failures_all, "left: clean, right: as evaluated", save_dir)
        message += f"\n  failing images: {path} (left: clean, right: as evaluated)"
    raise RobustnessFailure(message, failures_all, path)


def assert_no_failures(
    model: Any,
    data: Any,
    attack: Any,
    *,
    budget: float | None = None,
    allowed: int = 0,
    seed: int = 0,
    max_samples: int | None = None,
    save_dir: str | Path | None = None,
    max_reported: int = 8,
    **attack_options: Any,
) -> CaseResult:
    """Assert that ``attack`` breaks at most ``allowed`` of the correctly classified images.

    ``attack``: a spec of the ``attacks`` package (``"pgd:linf@8/255,steps=10"``) or an Attack
    object; ``budget`` sets (or replaces) the spec's epsilon; ``attack_options`` go to
    ``attacks.get_attack``. Images the model already misclassifies are not counted as failures.
    """
    allowed = int(check_number(allowed, "allowed", low=0, integer=True))
    inputs = _data(data, max_samples, seed)
    clf = _classifier(model, inputs)
    atk, label = _attack(attack, budget, attack_options)
    device = clf.device
    x, y = inputs.images.to(device), inputs.labels.to(device)
    result = atk(clf, x, y, seed=seed)
    success = result.success.detach().cpu().bool()
    clean_correct = result.clean_correct.detach().cpu().bool()
    broken = (success & clean_correct).nonzero().squeeze(1).tolist()
    adversarial = result.adversarial.detach().cpu()
    predictions = result.predictions.detach().cpu()
    n, correct = x.shape[0], int(clean_correct.sum())
    failures, rows, lines = [], [], []
    for i in broken[: max(1, max_reported)]:
        delta = adversarial[i] - inputs.images[i]
        linf, l2 = float(delta.abs().max()), float(delta.norm())
        conf = float(clf.probabilities(adversarial[i : i + 1].to(device))[0].max())
        failures.append(_failure(inputs, i, int(predictions[i]), conf, f"{label} (linf {linf:.4g}, l2 {l2:.4g})",
                                 {"attack": label, "linf": linf, "l2": l2, "seed": seed}, adversarial[i]))
        peak = float(delta.abs().max())
        rows.append([inputs.images[i], adversarial[i], (0.5 + 0.5 * delta / peak) if peak > 0 else delta + 0.5])
        lines.append(f"  sample {i} (index {inputs.indices[i]}): predicted {_class(clf, int(predictions[i]))} (p={conf:.3f}), "
                     f"expected {_class(clf, int(inputs.labels[i]))}; perturbation linf {linf:.4g}, l2 {l2:.4g}")
    robust_acc = float((clean_correct & ~success).float().mean())
    case = CaseResult(
        name=metric_key(label),
        metrics={"robust_acc": robust_acc, "clean_acc": correct / n, "broken": float(len(broken)),
                 "allowed": float(allowed), "n": float(n), "queries": float(getattr(result, "queries", 0)),
                 "passed": float(len(broken) <= allowed)},
        params={"attack": label, "seed": seed},
        n=n,
        failures=failures if len(broken) > allowed else [],
    )
    more = f"\n  ... and {len(broken) - len(failures)} more" if len(broken) > len(failures) else ""
    message = (f"assert_no_failures: {label} broke {len(broken)} of {correct} correctly classified images "
               f"(allowed {allowed}; {n - correct} of {n} were misclassified before the attack)\n" + "\n".join(lines) + more)
    return _finish("attacks", label, case, clf, inputs, message, rows, "left: clean, middle: adversarial, right: perturbation, amplified", save_dir)


def _attack(attack: Any, budget: float | None, options: dict[str, Any]) -> tuple[Callable[..., Any], str]:
    if isinstance(attack, str):
        try:
            import attacks
        except ModuleNotFoundError:
            raise InputError("attack", "the attacks package (robust's pixel attacks) installed", attack) from None
        spec = parse_spec(attack, "attack")
        if budget is not None:
            eps = check_number(budget, "budget", low=0)
            spec = Spec(spec.name, spec.target, f"{eps:.6g}", spec.options)
        elif spec.at is None:
            raise InputError("budget", f"an epsilon (budget=8/255 or '{attack}@8/255')", None)
        text = str(spec)
        return attacks.get_attack(text, **options), text
    if callable(attack):
        if options:
            raise InputError("attack options", "nothing with an Attack object (configure the object itself)", sorted(options))
        if budget is not None:
            with_eps = getattr(attack, "with_eps", None)
            if not callable(with_eps):
                raise InputError("budget", "no budget with an attack object without with_eps() (configure it itself)", budget)
            attack = with_eps(check_number(budget, "budget", low=0))
        spec = getattr(attack, "spec", None)
        label = spec if isinstance(spec, str) else getattr(attack, "__name__", None) or type(attack).__name__
        return attack, label
    raise InputError("attack", "an attack spec such as 'pgd:linf@8/255' or an Attack object", type(attack).__name__)


__all__ = [
    "RobustnessFailure",
    "assert_accuracy",
    "assert_invariant",
    "assert_no_failures",
    "failure_dir",
    "save_image_rows",
]

