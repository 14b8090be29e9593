"""Suites that need only the core: ``clean`` (the data as given) and ``shift`` (the synthetic benchmark's
distribution shifts, which expose shortcut learning).

``clean``: accuracy, balanced accuracy, per-class accuracy, confusion matrix, calibration (ECE,
reliability curve) and the most confident mistakes; ``acc`` and ``nll`` alone with ``metrics_only``.

``shift`` (synthetic data only): accuracy on ``test_iid`` (shortcuts intact), ``test_shift``
(every factor independent of the class) and ``shift_<factor>`` (one shortcut broken); how often
the model follows each shortcut when it disagrees with the shape (``follow_<factor>``); and a
sweep of every factor with ground truth (same objects re-rendered with one factor changed; image
strips for the four factors the model is most sensitive to).
Options: ``n`` images per split, ``factors=a+b`` (or ``all``) for the shift splits, ``sweep=a+b``
(or ``all``, ``none``), ``sweep_n``, ``steps``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from robust.audit import SUITES, AuditContext, SuiteSkipped
from robust.errors import InputError
from robust.registry import Spec, format_number
from robust.results import CaseResult, Curve, Strip, SuiteResult
from robust.suites.strips import failing_image
from robust.synthetic import FACTOR_NAMES, NUM_CLASSES, SHIFT_PREFIX, SyntheticBenchmark, factor, parse_synthetic
from robust.validation import check_number

ECE_BINS = 15
CONFUSION_MAX_CLASSES = 50
MAX_SWEEP_STRIPS = 4


# -- clean ----------------------------------------------------------------------------------------

def calibration(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> tuple[float, list[float], list[float]]:
    """Expected calibration error over equal-width confidence bins, and the reliability curve (non-empty bins)."""
    edges = torch.linspace(0, 1, bins + 1)
    ece, xs, ys = 0.0, [], []
    n = confidence.numel()
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        count = int(mask.sum())
        if count:
            conf = float(confidence[mask].mean())
            acc = float(correct[mask].float().mean())
            ece += count / n * abs(conf - acc)
            xs.append(conf)
            ys.append(acc)
    return ece, xs, ys


def check_clean_suite(spec: Spec) -> None:
    unknown = sorted(set(spec.options) - {"n"})
    if unknown:
        raise InputError("clean suite options", "n", unknown)


@SUITES.register("clean", description="accuracy, per-class accuracy, confusion matrix, calibration and the most confident mistakes",
                 check=check_clean_suite)
def clean_suite(ctx: AuditContext, spec: Spec) -> SuiteResult:
    data = ctx.subset(ctx.sample_count(spec, len(ctx.data)))
    if ctx.metrics_only:  # accuracy and mean cross-entropy, counted over the shards
        part, _ = ctx.shard(data)
        correct, loss, n = ctx.total(*ctx.count(part.images, part.labels), len(part))
        return SuiteResult("clean", metrics={"acc": correct / n, "nll": loss / n}, params={"n": len(data)})
    logits = ctx.logits(data.images)
    case = ctx.evaluate("all", data.images, data.labels, logits=logits)
    labels = data.labels
    probs = logits.softmax(1)
    confidence, predictions = probs.max(1)
    correct = predictions == labels
    k = data.num_classes
    ece, xs, ys = calibration(confidence, correct)
    nll = float(torch.nn.functional.cross_entropy(logits, labels))
    confusion = torch.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)
    per_class = list(case.per_class.values())
    metrics = {
        "acc": case.metrics["acc"],
        "error": 1.0 - case.metrics["acc"],
        "balanced_acc": sum(per_class) / len(per_class),
        "worst_class_acc": min(per_class),
        "ece": ece,
        "nll": nll,
        "mean_confidence": float(confidence.mean()),
    }
    rows = []
    for c, name in enumerate(data.class_names):
        row = confusion[c].clone()
        total = int(row.sum())
        if not total:
            continue
        row[c] = -1
        confused = int(row.argmax())
        rows.append([name, total, float(confusion[c, c]) / total,
                     f"{data.class_names[confused]} ({int(confusion[c, confused])})" if int(confusion[c, confused]) > 0 else "-"])
    details: dict[str, Any] = {"tables": [{"title": "classes", "columns": ["class", "n", "accuracy", "most often predicted instead"], "rows": rows}]}
    if k <= CONFUSION_MAX_CLASSES:
        details["confusion"] = {"labels": list(data.class_names), "matrix": confusion.tolist()}
    curves = [Curve("model", xs, ys, "confidence", "accuracy"), Curve("perfect calibration", [0.0, 1.0], [0.0, 1.0], "confidence", "accuracy")]
    return SuiteResult("clean", metrics=metrics, cases=[case], curves=curves, details=details, params={"n": len(data)})


# -- shift ----------------------------------------------------------------------------------------

def synthetic_benchmark(ctx: AuditContext) -> SyntheticBenchmark:
    """The benchmark the audited data came from (rebuilt from its spec string), or :class:`SuiteSkipped`."""
    source = ctx.data_source
    if isinstance(source, str) and (source == "synthetic" or source.startswith(("synthetic:", "synthetic,"))):
        return parse_synthetic(source, size=ctx.data.size[0], seed=ctx.seed).benchmark
    if ctx.data.name.startswith("synthetic:") and ctx.data.factors and ctx.data.num_classes == NUM_CLASSES:
        return SyntheticBenchmark(size=ctx.data.size[0], seed=ctx.seed)
    raise SuiteSkipped("shift needs the synthetic benchmark as data (e.g. --data synthetic:test_iid)")


def _factor_list(value: Any, default: tuple[str, ...], option: str) -> tuple[str, ...]:
    if value is None:
        return default
    text = str(value)
    if text == "all":
        return FACTOR_NAMES
    if text == "none":
        return ()
    names = tuple(text.split("+"))
    for name in names:
        try:
            factor(name)
        except InputError:
            raise InputError(f"shift option {option}", "factor names joined by + (or all, none): " + ", ".join(FACTOR_NAMES), text) from None
    return names


def shortcut_classes(name: str, values: torch.Tensor) -> torch.Tensor:
    """``[N, NUM_CLASSES]`` mask of the classes whose shortcut value ``values`` matches (see ``class_linked_value``)."""
    f = factor(name)
    classes = torch.arange(NUM_CLASSES)
    if f.is_categorical:
        return (classes[None, :] % len(f.categories)) == values.long()[:, None]
    width = (f.high - f.low) / NUM_CLASSES
    bins = ((values.float() - f.low) / width).floor().long().clamp(0, NUM_CLASSES - 1)
    return classes[None, :] == bins[:, None]


def _value_text(name: str, value: torch.Tensor) -> str:
    f = factor(name)
    return f.categories[int(value)] if f.is_categorical else format_number(float(value), 3, f.high - f.low)


def follow_rates(name: str, values: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor) -> tuple[float, float, int]:
    """Among images whose ``name`` points away from their class: share of predictions that follow it, chance level, count."""
    mask = shortcut_classes(name, values)
    disagree = ~mask[torch.arange(labels.numel()), labels]
    count = int(disagree.sum())
    if not count:
        return math.nan, math.nan, 0
    followed = mask[torch.arange(labels.numel()), predictions][disagree].float().mean()
    chance = mask[disagree].float().sum(1).mean() / NUM_CLASSES
    return float(followed), float(chance), count


def _sweep_values(name: str, steps: int) -> tuple[list[float], list[str]]:
    f = factor(name)
    if f.is_categorical:
        return [float(i) for i in range(len(f.categories))], list(f.categories)
    if f.circular:
        values = [f.low + (f.high - f.low) * j / steps for j in range(steps)]
    else:
        values = [f.low + (f.high - f.low) * j / (steps - 1) for j in range(steps)]
    return values, [f"{v:.2f}" for v in values]


def _split_cases(ctx: AuditContext, bench: SyntheticBenchmark, splits: list[str], n: int) -> tuple[list[CaseResult], dict[str, float], list[list[Any]]]:
    """One case per split, the accuracy metrics, and how often predictions follow each shortcut on ``test_shift``."""
    names = ctx.class_names
    cases, follow_rows, follow = [], [], {}
    for split in ctx.progress_bar(splits, desc="shift"):
        data = bench.split(split, n)
        factors = data.factors
        logits = ctx.logits(data.images)

        def describe(i: int, factors: dict[str, torch.Tensor] = factors) -> str:
            parts = []
            for f in bench.correlated:
                like = [names[c] for c in shortcut_classes(f, factors[f][i : i + 1])[0].nonzero().squeeze(1).tolist()]
                parts.append(f"{f}={_value_text(f, factors[f][i])} (as in {'/'.join(like)})")
            return "; ".join(parts)

        def params(i: int, factors: dict[str, torch.Tensor] = factors, split: str = split) -> dict[str, Any]:
            return {"split": split, **{f: (int(v[i]) if not v.is_floating_point() else float(v[i])) for f, v in factors.items()}}

        case = ctx.evaluate(split, data.images, data.labels, logits=logits, describe=describe, failure_params=params,
                            seeds=[bench.seed] * len(data), params={"split": split, "n": len(data)})
        cases.append(case)
        if split == "test_shift":
            predictions = logits.argmax(1)
            for f in bench.correlated:
                followed, chance, count = follow_rates(f, factors[f], data.labels, predictions)
                follow[f"follow_{f}"] = followed
                follow_rows.append([f, count, followed, chance])
    by_name = {c.name: c.metrics["acc"] for c in cases}
    metrics = {
        "iid_acc": by_name["test_iid"],
        "shift_acc": by_name["test_shift"],
        "gap": by_name["test_iid"] - by_name["test_shift"],
        "worst_acc": min(by_name.values()),
        **follow,
    }
    return cases, metrics, follow_rows


@dataclass
class _Sweeps:
    """Factor sweeps, most sensitive factor first: one case, curve and table row each, strips for the top ones."""

    cases: list[CaseResult] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    strips: list[Strip] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)


def _factor_sweeps(ctx: AuditContext, bench: SyntheticBenchmark, swept: tuple[str, ...], sweep_n: int, steps: int) -> _Sweeps:
    """The same ``test_iid`` objects re-rendered with one factor set to each of its values."""
    names = ctx.class_names
    out = _Sweeps()
    if swept:
        base = bench.split("test_iid", sweep_n)
        for name in ctx.progress_bar(swept, desc="factor sweeps"):
            values, labels_text = _sweep_values(name, steps)
            accs, rendered, predicted = [], [], []
            for value in values:
                factors = {k: v.clone() for k, v in base.factors.items()}
                f = factor(name)
                factors[name] = torch.full_like(factors[name], int(value) if f.is_categorical else value)
                images = bench.render(base.labels, factors)
                predictions = ctx.logits(images).argmax(1)
                accs.append(float((predictions == base.labels).float().mean()))
                rendered.append(images)
                predicted.append(predictions)
            shown = failing_image(torch.stack(predicted) == base.labels)
            frames = [images[shown] for images in rendered]
            captions = [f"{name}={text}: {names[int(p[shown])]}" for text, p in zip(labels_text, predicted)]
            out.curves.append(Curve(name, values, accs, "factor value", "accuracy"))
            out.strips.append(Strip(f"{name} (object: {names[int(base.labels[shown])]}; value = accuracy over {sweep_n} images)", frames, accs, captions))
            out.cases.append(CaseResult(f"sweep_{name}", {"min_acc": min(accs), "max_acc": max(accs), "range": max(accs) - min(accs)},
                                        params={"factor": name, "values": values}, n=sweep_n * len(values)))
            out.rows.append([name, min(accs), max(accs), max(accs) - min(accs)])
    # Most sensitive factors first (stable, so ties keep the factor order); strips only for the top ones.
    order = sorted(range(len(out.rows)), key=lambda i: -out.rows[i][3])
    out.rows = [out.rows[i] for i in order]
    out.curves = [out.curves[i] for i in order]
    out.strips = [out.strips[i] for i in order][:MAX_SWEEP_STRIPS]
    return out


SHIFT_OPTIONS = ("n", "factors", "sweep", "sweep_n", "steps")


def shift_options(spec: Spec, n: int, correlated: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], int, int]:
    """The shifted factors, swept factors, images per sweep and sweep steps of a ``shift`` spec (also its check)."""
    unknown = sorted(set(spec.options) - set(SHIFT_OPTIONS))
    if unknown:
        raise InputError("shift suite options", "some of " + ", ".join(SHIFT_OPTIONS), unknown)
    shifted = _factor_list(spec.options.get("factors"), correlated, "factors")
    swept = _factor_list(spec.options.get("sweep"), FACTOR_NAMES, "sweep")
    sweep_n = check_number(spec.options.get("sweep_n", min(n, 200)), "shift option sweep_n", low=1, integer=True)
    steps = check_number(spec.options.get("steps", 8), "shift option steps", low=2, integer=True)
    return shifted, swept, sweep_n, steps


@SUITES.register("shift", description="synthetic benchmark: accuracy under distribution shift, shortcut following, factor sweeps",
                 check=lambda spec: shift_options(spec, 1000, ()))
def shift_suite(ctx: AuditContext, spec: Spec) -> SuiteResult:
    bench = synthetic_benchmark(ctx)
    if (3, bench.size, bench.size) != (ctx.data.channels, *ctx.data.size):
        raise InputError("shift data", f"3x{bench.size}x{bench.size} images (the benchmark's)", f"{ctx.data.channels}x{ctx.data.size[0]}x{ctx.data.size[1]}")
    n = ctx.sample_count(spec, 1000)
    shifted, swept, sweep_n, steps = shift_options(spec, n, bench.correlated)

    cases, metrics, follow_rows = _split_cases(ctx, bench, ["test_iid", "test_shift"] + [SHIFT_PREFIX + f for f in shifted], n)
    sweeps = _factor_sweeps(ctx, bench, swept, sweep_n, steps)
    tables = [{"title": "shortcut following on test_shift (images whose factor points to another class)",
               "columns": ["factor", "images", "prediction follows the factor", "chance"], "rows": follow_rows}]
    if sweeps.rows:
        tables.append({"title": "sensitivity: accuracy when one factor is set to each value (most sensitive first)",
                       "columns": ["factor", "min accuracy", "max accuracy", "range"], "rows": sweeps.rows})
    notes = [f"Shortcut factors in training: {', '.join(bench.correlated) or 'none'} (strength {bench.strength:g}). "
             f"Accuracy falls from {metrics['iid_acc']:.3f} with the shortcuts intact to {metrics['shift_acc']:.3f} without them."]
    return SuiteResult("shift", metrics=metrics, cases=cases + sweeps.cases, curves=sweeps.curves, strips=sweeps.strips,
                       details={"tables": tables, "notes": notes, "plot_cases": "acc", "curve_layout": "grid", "benchmark": bench.describe()},
                       params={"n": n, "factors": "+".join(shifted), "sweep": "+".join(swept), "sweep_n": sweep_n, "steps": steps})
