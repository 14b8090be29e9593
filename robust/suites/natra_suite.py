"""Suite ``natra``: accuracy under the ``natra`` recipe's natural transformations (needs a model of natural variation).

Spec: the recipe's own, ``natra[:random|worst_of_k|gradient][@strength][,model=...][,k=4][,steps=5]...``
(see :class:`robust.train.recipes.NaTraTraining`), plus ``n`` (images). The model is the recipe's
(the given generator or structure/appearance model, else the shipped one for synthetic 32x32 data).
The images' codes are computed once (cached on disk; in training also kept in ``ctx.cache`` across
epochs) and each image is moved as the recipe moves a training image: a random draw, the worst of
``k`` or gradient ascent against the classifier, following its position in the data and the
suite's seed. A structure/appearance model's donors are the evaluated images of other classes.
Metrics: ``acc`` (under the transformation), ``clean_acc`` and ``drop``; one case ``moved`` whose
failures show each moved image beside its original.
"""
from __future__ import annotations

from typing import Any

import torch

from robust.audit import SUITES, AuditContext, SuiteSkipped
from robust.data import ImageSet
from robust.errors import InputError
from robust.registry import Spec
from robust.results import SuiteResult

SUITE_OPTIONS = ("n",)


def natra_recipe(spec: Spec) -> Any:
    """The (unbound) ``natra`` recipe a suite spec describes; building it checks the spec (the suite's check)."""
    from robust.train.recipes import NaTraTraining

    return NaTraTraining(Spec("natra", spec.target, spec.at, {k: v for k, v in spec.options.items() if k not in SUITE_OPTIONS}))


def _bound(ctx: AuditContext, spec: Spec, data: ImageSet) -> Any:
    """The recipe bound to ``data`` (its codes inverted), made once per context and suite."""
    from robust.train.recipes import RecipeContext

    key = f"natra-suite/{ctx.suite_key or spec}"
    recipe = ctx.cache.get(key)
    if recipe is None:
        recipe = natra_recipe(spec)
        recipe.bind(RecipeContext(ctx.classifier, data, ctx.classifier.device, ctx.seed_for("natra"), ctx.generator))
        ctx.cache[key] = recipe
    return recipe


def _moved(ctx: AuditContext, recipe: Any, part: ImageSet, indices: torch.Tensor) -> torch.Tensor:
    """The images of ``part`` (at ``indices`` in the data) as the recipe moves them, batch by batch (on the CPU)."""
    from robust.train.recipes import Batch

    device = ctx.classifier.device
    size = ctx.batch_size or ctx.classifier.batch_size
    out = [part.images[:0]]
    for start in range(0, len(part), size):
        ids = indices[start : start + size]
        x, y = part.images[start : start + size].to(device), part.labels[start : start + size].to(device)
        (moved,) = recipe.views(Batch(x, y, ids, ids.to(device), torch.Generator(device=device), 0, 0), ctx.classifier)
        out.append(moved.detach().cpu())
    return torch.cat(out)


@SUITES.register("natra", description="accuracy under the natra recipe's natural transformations (needs a model of natural variation)",
                 check=natra_recipe)
def natra_suite(ctx: AuditContext, spec: Spec) -> SuiteResult:
    data = ctx.subset(ctx.sample_count(spec, 500))
    try:
        recipe = _bound(ctx, spec, data)
    except InputError as exc:
        if exc.name != "natra recipe generator" or exc.got != "None":
            raise
        raise SuiteSkipped("natra needs a generator or a structure/appearance model (--generator, harden(generator=...) or model=<file>; "
                           "the shipped ones serve the synthetic benchmark's 32x32 images)") from None
    part, indices = ctx.shard(data)
    moved = _moved(ctx, recipe, part, indices)
    label = f"natra:{recipe.mode}@{recipe.strength:g}"
    params = {"transform": str(recipe.spec), "n": len(data), "seed": recipe.seed}
    if ctx.metrics_only:
        n, clean, correct = ctx.total(len(part), ctx.count(part.images, part.labels)[0], ctx.count(moved, part.labels)[0])
        return SuiteResult("natra", metrics={"acc": correct / n, "clean_acc": clean / n, "drop": (clean - correct) / n}, params=params)
    clean_acc = float((ctx.logits(part.images).argmax(1) == part.labels).float().mean())
    case = ctx.evaluate("moved", moved, part.labels, originals=part.images,
                        describe=lambda i: f"{label} (draw of image {int(indices[i])})", params={"transform": label})
    metrics = {"acc": case.metrics["acc"], "clean_acc": clean_acc, "drop": clean_acc - case.metrics["acc"]}
    return SuiteResult("natra", metrics=metrics, cases=[case], params=params)
