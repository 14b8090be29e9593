"""Suite ``transforms``: worst-case search over the parameters of the core transforms (rotation, hue, ...).

For each transform: the accuracy when every image meets its worst parameters
(:func:`attacks.transform_search`), the accuracy under random parameters, and a sweep of its first
parameter across its range (a curve, and an image strip of an image the sweep breaks). Spec:
``transforms`` (every registered core transform) or ``transforms:rotation``; options
``names=rotation+hue``, ``method`` (grid/random/gradient), ``steps``, ``k``, ``n``, ``sweep_steps``
(default 9).

Each model evaluation counts on a black-box model, so the search stops evaluating an image once it
is broken (``early_stop``: the worst-case accuracy is the full search's; a broken image is shown at
its mildest breaking grid point), the clean predictions are computed once, and a one-parameter
transform is swept along its search grid's own points, where only the images the search broke
need evaluating again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from robust.audit import SUITES, AuditContext
from robust.errors import InputError
from robust.registry import Spec, format_number
from robust.results import CaseResult, Curve, Strip, SuiteResult, metric_key
from robust.seeding import make_generator
from robust.suites.strips import failing_image
from robust.transforms import Param, Params, Transform, get_transform, load_builtin_transforms
from robust.transforms.search import default_steps, grid_values
from robust.validation import check_number

SWEEP_STEPS = 9


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


@dataclass(frozen=True)
class _Options:
    """The suite's transforms (``names``) and settings: ``method``, ``steps`` and ``k`` of the search,
    ``sweep_steps`` of the sweep."""

    names: list[str]
    method: str
    steps: int | None
    k: int | None
    sweep_steps: int


SUITE_OPTIONS = ("names", "method", "steps", "k", "n", "sweep_steps")


def _options(spec: Spec) -> _Options:
    """The spec's options, checked (also before any suite runs): transforms, search settings (as
    :func:`attacks.transform_search` checks them), ``sweep_steps``."""
    from attacks.transform_search import TransformSearchConfig

    unknown = sorted(set(spec.options) - set(SUITE_OPTIONS))
    if unknown:
        raise InputError("transforms suite options", "some of " + ", ".join(SUITE_OPTIONS), unknown)
    names = transform_names(spec)
    method, steps, k = str(spec.options.get("method", "grid")), spec.options.get("steps"), spec.options.get("k")
    TransformSearchConfig(method=method, steps=steps, k=k)
    sweep_steps = check_number(spec.options.get("sweep_steps", SWEEP_STEPS), "transforms option sweep_steps", low=2, integer=True)
    return _Options(names, method, steps, k, int(sweep_steps))


def _sweep_values(tf: Transform, param: Param, options: _Options) -> tuple[list[float], bool]:
    """The values of the sweep, and whether they are points of the worst-case grid.

    A one-parameter, unseeded transform searched on a grid is swept along ``sweep_steps`` of that
    grid's own points (evenly spread, ends included), so the search has already classified every
    image it did not break there: right (its verdict at every grid point). Otherwise the sweep is
    ``param.grid(sweep_steps)`` (its identity included).
    """
    searched = [p for p in tf.params if p.optimisable]
    if options.method != "grid" or len(searched) != 1 or any(p.kind == "seed" for p in tf.params):
        return param.grid(options.sweep_steps), False
    steps = options.steps if options.steps is not None else default_steps("grid", 1)
    points = grid_values(param.low, param.high, steps)
    chosen = sorted({round(i * (steps - 1) / (options.sweep_steps - 1)) for i in range(options.sweep_steps)})
    return [points[i] for i in chosen], True


def _sweep(ctx: AuditContext, tf: Transform, images: torch.Tensor, labels: torch.Tensor, found: Any,
           options: _Options) -> tuple[str, list[float], list[float], Strip] | None:
    """Accuracy along the transform's first searchable parameter and its strip (None when it has none).

    On the grid's own points only the images the search broke (or the model got wrong) are evaluated.
    """
    param = next((p for p in tf.params if p.optimisable), None)
    if param is None:
        return None
    values, on_grid = _sweep_values(tf, param, options)
    n = images.shape[0]
    unknown = found.success.cpu() if on_grid else torch.ones(n, dtype=torch.bool)
    rows = unknown.nonzero().squeeze(1)
    seed = ctx.seed_for(tf.name, "sweep")
    predictions = labels.cpu().clone().expand(len(values), n).clone()
    for v, value in enumerate(values):
        if rows.numel():
            params = tf.expand({param.name: value}, n, images.device, seed=seed)
            part = {key: tensor[rows.to(tensor.device)] for key, tensor in params.items()}
            predictions[v, rows] = ctx.logits(tf(images[rows.to(images.device)], part)).argmax(1)
    correct = predictions == labels.cpu()
    accs = correct.float().mean(1).tolist()
    shown = failing_image(correct, found.clean_correct)
    frames, captions = [], []
    for v, value in enumerate(values):
        params = tf.expand({param.name: value}, n, images.device, seed=seed)
        frames.append(tf(images[shown : shown + 1], {key: tensor[shown : shown + 1] for key, tensor in params.items()})[0])
        captions.append(f"{param.name}={format_number(value, 3, param.high - param.low)}: {ctx.class_names[int(predictions[v, shown])]}")
    title = f"{tf.name} ({param.name} from {values[0]:.3g} to {values[-1]:.3g}; image {shown}; value = accuracy)"
    return param.name, values, accs, Strip(title, frames, accs, captions)


def _worst_case(ctx: AuditContext, tf: Transform, images: torch.Tensor, labels: torch.Tensor, clean_pred: torch.Tensor,
                options: _Options) -> tuple[CaseResult, Any]:
    """The worst-case search's case (failures: the images it broke, at their mildest breaking grid point) and result."""
    import attacks

    seed = ctx.seed_for(tf.name)
    found = attacks.transform_search(ctx.classifier, images, labels, tf, method=options.method, steps=options.steps, k=options.k,
                                     seed=seed, early_stop=True, clean_predictions=clean_pred)
    params: dict[str, torch.Tensor] = {key: value.cpu() for key, value in found.params.items()}
    # Only the broken images are shown, so only they are evaluated again (for the confidence of the mistake).
    broke = (found.success & found.clean_correct).cpu().nonzero().squeeze(1)
    settings = {"method": options.method, "evaluations": found.evaluations}
    if not broke.numel():
        return CaseResult(metric_key(tf.name), {"acc": found.worst_case_accuracy}, settings, n=len(labels)), found
    case = ctx.evaluate(tf.name, found.images.cpu()[broke], labels[broke], originals=images.cpu()[broke],
                        describe=lambda j: tf.describe(params, int(broke[j])),
                        failure_params=lambda j: {key: (int(v[broke[j]]) if not v.is_floating_point() else float(v[broke[j]]))
                                                  for key, v in params.items()},
                        per_class=False, seeds=[seed] * len(broke), params=settings)
    for example in case.failures:
        example.index = int(broke[example.index])
    case.n = len(labels)
    case.metrics["acc"] = found.worst_case_accuracy
    return case, found


@SUITES.register("transforms", description="worst-case and random parameters of the core transforms, with parameter sweeps",
                 check=_options)
def transforms_suite(ctx: AuditContext, spec: Spec) -> SuiteResult:
    options = _options(spec)
    names = options.names
    data = ctx.subset(ctx.sample_count(spec, 500))
    images, labels = data.images.to(ctx.device), data.labels
    clean_pred = ctx.logits(images).argmax(1)
    clean_acc = float((clean_pred == labels).float().mean())
    cases, curves, strips, rows = [], [], [], []
    for name in ctx.progress_bar(names, desc="transforms"):
        tf = get_transform(name)
        case, found = _worst_case(ctx, tf, images, labels, clean_pred, options)
        random_images = tf(images, _random_params(tf, images.shape[0], make_generator(ctx.seed_for(name, "random"), images.device)))
        case.metrics["random_acc"] = float((ctx.logits(random_images).argmax(1) == labels).float().mean())
        cases.append(case)
        swept = _sweep(ctx, tf, images, labels, found, options)
        if swept is not None:
            param_name, values, accs, strip = swept
            curves.append(Curve(f"{name}: {param_name}", values, accs, "parameter value", "accuracy"))
            strips.append(strip)
        rows.append([name, case.metrics["acc"], case.metrics["random_acc"], min(accs) if swept is not None else None])
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
                       params={"method": options.method, "n": len(labels), "transforms": names})
