"""Suite ``transforms``: worst-case search over the parameters of the core transforms (rotation, hue, ...).

For each transform: the accuracy when every image meets its worst parameters
(:func:`attacks.transform_search`), the accuracy under random parameters, and a sweep of its first
parameter across its range (a curve and an image strip). Spec: ``transforms`` (every registered
core transform) or ``transforms:rotation``; options ``names=rotation+hue``, ``method``
(grid/random/gradient), ``steps``, ``k``, ``n``, ``sweep_steps``.
"""
from __future__ import annotations

from typing import Any

import torch

from robust.audit import SUITES, AuditContext
from robust.errors import InputError
from robust.registry import Spec, format_number
from robust.results import Curve, Strip, SuiteResult
from robust.seeding import make_generator
from robust.validation import check_number
from robust.transforms import Params, Transform, get_transform, load_builtin_transforms


def transform_names(spec: Spec) -> list[str]:
    available = [n for n in load_builtin_transforms().names() if ":" not in n]
    if spec.target is not None and "names" in spec.options:
        raise InputError("transforms suite", "a target or names=..., not both", str(spec))
    chosen = [spec.target] if spec.target is not None else str(spec.options["names"]).split("+") if "names" in spec.options else available
    for name in chosen:
        if name not in available:
            raise InputError("transforms suite transform", "one of " + ", ".join(available), name)
    return chosen


def _random_params(tf: Transform, n: int, generator: torch.Generator) -> Params:
    """Uniform parameters for the random case, drawn in order from one batch generator.

    The one random draw of the project not keyed per image: it keeps the suite's ``random_acc``
    figures (and the demo's report) as they were; ``tf.sample(seeds)`` is the per-image draw.
    """
    out: Params = {}
    for p in tf.params:
        if p.kind == "seed":
            out[p.name] = torch.randint(0, 2**62, (n,), generator=generator, device=generator.device, dtype=torch.int64)
        else:
            out[p.name] = p.from_unit(torch.rand(n, generator=generator, device=generator.device))
    return out


def _sweep(ctx: AuditContext, tf: Transform, images: torch.Tensor, labels: torch.Tensor,
           steps: int) -> tuple[str, list[float], list[float], list[torch.Tensor], list[str]] | None:
    """Accuracy along the transform's first searchable parameter (None when it has none)."""
    param = next((p for p in tf.params if p.optimisable), None)
    if param is None:
        return None
    values = param.grid(steps)
    accs, frames, captions = [], [], []
    for value in values:
        params = tf.expand({param.name: value}, images.shape[0], images.device, seed=ctx.seed_for(tf.name, "sweep"))
        out = tf(images, params)
        predictions = ctx.logits(out).argmax(1)
        accs.append(float((predictions == labels).float().mean()))
        frames.append(out[0])
        captions.append(f"{param.name}={format_number(value, 3, param.high - param.low)}: {ctx.class_names[int(predictions[0])]}")
    return param.name, values, accs, frames, captions


SUITE_OPTIONS = ("names", "method", "steps", "k", "n", "sweep_steps")


def check_transforms_suite(spec: Spec) -> None:
    """The spec's transforms, search settings (as :func:`attacks.transform_search` checks them) and options."""
    from attacks.transform_search import TransformSearchConfig

    unknown = sorted(set(spec.options) - set(SUITE_OPTIONS))
    if unknown:
        raise InputError("transforms suite options", "some of " + ", ".join(SUITE_OPTIONS), unknown)
    transform_names(spec)
    TransformSearchConfig(method=str(spec.options.get("method", "grid")), steps=spec.options.get("steps"), k=spec.options.get("k"))
    check_number(spec.options.get("sweep_steps", 7), "transforms option sweep_steps", low=2, integer=True)


@SUITES.register("transforms", description="worst-case and random parameters of the core transforms, with parameter sweeps",
                 check=check_transforms_suite)
def transforms_suite(ctx: AuditContext, spec: Spec) -> SuiteResult:
    import attacks

    names = transform_names(spec)
    method = str(spec.options.get("method", "grid"))
    steps = spec.options.get("steps")
    k = spec.options.get("k")
    sweep_steps = int(spec.options.get("sweep_steps", 7))
    if sweep_steps < 2:
        raise InputError("transforms option sweep_steps", "at least 2", sweep_steps)
    data = ctx.subset(ctx.sample_count(spec, 500))
    images, labels = data.images.to(ctx.device), data.labels
    clean_acc = float((ctx.logits(images).argmax(1) == labels).float().mean())
    cases, curves, strips, rows = [], [], [], []
    for name in ctx.progress_bar(names, desc="transforms"):
        tf = get_transform(name)
        seed = ctx.seed_for(name)
        found = attacks.transform_search(ctx.classifier, images, labels, tf, method=method, steps=steps, k=k, seed=seed)
        worst = found.images.cpu()
        broke = (found.success & found.clean_correct).cpu()
        random_images = tf(images, _random_params(tf, images.shape[0], make_generator(ctx.seed_for(name, "random"), images.device)))
        random_acc = float((ctx.logits(random_images).argmax(1) == labels).float().mean())
        params: dict[str, torch.Tensor] = {key: value.cpu() for key, value in found.params.items()}

        def describe(i: int, tf: Transform = tf, params: dict[str, torch.Tensor] = params) -> str:
            return tf.describe(params, i)

        def failure_params(i: int, params: dict[str, torch.Tensor] = params) -> dict[str, Any]:
            return {key: (int(v[i]) if not v.is_floating_point() else float(v[i])) for key, v in params.items()}

        case = ctx.evaluate(name, worst, labels, originals=images, describe=describe, failure_params=failure_params,
                            failure_mask=broke, per_class=False, seeds=[seed] * len(labels),
                            params={"method": method, "evaluations": found.evaluations})
        case.metrics["random_acc"] = random_acc
        case.metrics["acc"] = found.worst_case_accuracy
        cases.append(case)
        swept = _sweep(ctx, tf, images, labels, sweep_steps)
        if swept is not None:
            param_name, values, accs, frames, captions = swept
            curves.append(Curve(f"{name}: {param_name}", values, accs, "parameter value", "accuracy"))
            strips.append(Strip(f"{name} ({param_name} from {values[0]:.3g} to {values[-1]:.3g}; value = accuracy)", frames, accs, captions))
        rows.append([name, case.metrics["acc"], random_acc, min(accs) if swept is not None else None])
    worst_accs = [c.metrics["acc"] for c in cases]
    random_accs = [c.metrics["random_acc"] for c in cases]
    metrics = {
        "clean_acc": clean_acc,
        "mean_worst_acc": sum(worst_accs) / len(worst_accs),
        "min_worst_acc": min(worst_accs),
        "mean_random_acc": sum(random_accs) / len(random_accs),
    }
    rows.sort(key=lambda r: r[1])
    tables = [{"title": "transforms, most harmful first", "columns": ["transform", "worst-case accuracy", "random accuracy", "lowest sweep accuracy"], "rows": rows}]
    return SuiteResult("transforms", metrics=metrics, cases=cases, curves=curves, strips=strips,
                       details={"tables": tables, "plot_cases": "acc", "curve_layout": "grid"},
                       params={"method": method, "n": len(labels), "transforms": names})
