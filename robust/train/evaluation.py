"""Per-epoch evaluation during training: clean accuracy on every evaluation set, corruptions, attacks.

Suites are spec strings, the same names the audit uses:

- ``clean``: accuracy and loss on every evaluation set (``<set>/acc``, ``<set>/loss``);
- ``corruptions[@severity][,on=<set>][,names=a/b/c]``: mean accuracy over the benchmark corruptions
  at one severity (default 3) -> ``<set>/corruptions@<severity>``;
- any attack spec of :mod:`attacks` (``pgd:linf@8/255,steps=10``, optionally ``,on=<set>``) ->
  ``<set>/<spec>`` (robust accuracy);
- ``natra[:random|worst_of_k|gradient][@strength][,on=<set>][,k=..,steps=..,...]``: accuracy under the
  generator's natural transformations (the options of the ``natra`` recipe) ->
  ``<set>/natra:<mode>@<strength>``; several strengths make a sweep. Needs the generator.

``on`` defaults to the first evaluation set. Under ``torchrun`` every rank evaluates its shard of
each set and the counts are summed, so all ranks see the same numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from robust.data import ImageSet
from robust.errors import InputError
from robust.models import Classifier
from robust.registry import Registry, Spec, parse_number, parse_spec
from robust.seeding import derive_seed
from robust.train.distributed import World, all_reduce_sum, shard_range


@dataclass
class EvalContext:
    classifier: Classifier
    sets: Mapping[str, ImageSet]
    world: World
    seed: int
    amp: bool
    batch_size: int
    generator: Any = None
    memo: dict[str, Any] = field(default_factory=dict)  # preparations kept across epochs (natra codes)

    def autocast(self):
        dev = self.classifier.device
        return torch.autocast(dev.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def target(self, spec: Spec) -> str:
        name = str(spec.options.get("on", next(iter(self.sets))))
        if name not in self.sets:
            raise InputError(f"evaluation suite {spec} on", "one of the evaluation sets " + ", ".join(self.sets), name)
        return name

    def shard(self, data: ImageSet) -> ImageSet | None:
        idx = shard_range(len(data), self.world)
        return data[idx] if idx.numel() else None


EvalSuite = Callable[[EvalContext, Spec], dict[str, float]]
EVAL_SUITES: Registry[EvalSuite] = Registry("evaluation suite")


def _counts(ctx: EvalContext, values: list[float]) -> list[float]:
    total = all_reduce_sum(torch.tensor(values, dtype=torch.float64), ctx.world)
    return total.tolist()


@EVAL_SUITES.register("clean")
def clean_suite(ctx: EvalContext, spec: Spec) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, data in ctx.sets.items():
        part = ctx.shard(data)
        correct = loss = 0.0
        n = 0
        if part is not None:
            device = ctx.classifier.device
            with ctx.autocast():
                logits = ctx.classifier.logits(part.images.to(device), ctx.batch_size).float()
            labels = part.labels.to(logits.device)
            correct = float((logits.argmax(1) == labels).sum())
            loss = float(F.cross_entropy(logits, labels, reduction="sum"))
            n = len(part)
        correct, loss, n = _counts(ctx, [correct, loss, float(n)])
        out[f"{name}/acc"] = correct / n
        out[f"{name}/loss"] = loss / n
    return out


@EVAL_SUITES.register("corruptions")
def corruption_suite(ctx: EvalContext, spec: Spec) -> dict[str, float]:
    from augment.corruptions import BENCHMARK_CORRUPTIONS, get_corruption

    unknown = sorted(set(spec.options) - {"on", "names"})
    if unknown:
        raise InputError(f"evaluation suite {spec} options", "on, names", unknown)
    severity = parse_number(spec.at, "corruption severity") if spec.at is not None else 3.0
    names = str(spec.options["names"]).split("/") if "names" in spec.options else list(BENCHMARK_CORRUPTIONS)
    corruptions = [get_corruption(n) for n in names]
    target = ctx.target(spec)
    data = ctx.sets[target]
    idx = shard_range(len(data), ctx.world)
    accs: list[float] = []
    device = ctx.classifier.device
    for name, corruption in zip(names, corruptions):
        correct = 0.0
        for start in range(0, idx.numel(), ctx.batch_size):
            chunk = idx[start : start + ctx.batch_size]
            x = data.images[chunk].to(device)
            # The image's index in the whole set seeds its noise, as augment.corrupt does: a shard
            # sees the same pixels as a single process would.
            seeds = torch.tensor([derive_seed(ctx.seed, corruption.name, int(i)) for i in chunk], dtype=torch.int64, device=device)
            params = {"severity": torch.full((chunk.numel(),), severity, device=device), "seed": seeds}
            with torch.no_grad():
                xc = corruption.apply(x, params).clamp(0, 1)
                with ctx.autocast():
                    pred = ctx.classifier.logits(xc, ctx.batch_size).argmax(1)
            correct += float((pred.to(device) == data.labels[chunk].to(device)).sum())
        (correct,) = _counts(ctx, [correct])
        accs.append(correct / len(data))
    sev = f"{severity:g}"
    return {f"{target}/corruptions@{sev}": sum(accs) / len(accs)}


def attack_suite(ctx: EvalContext, spec: Spec) -> dict[str, float]:
    from attacks import get_attack

    options = {k: v for k, v in spec.options.items() if k != "on"}
    attack_spec = Spec(spec.name, spec.target, spec.at, options)
    attack = get_attack(str(attack_spec))
    target = ctx.target(spec)
    data = ctx.sets[target]
    idx = shard_range(len(data), ctx.world)
    correct = 0.0
    device = ctx.classifier.device
    for start in range(0, idx.numel(), ctx.batch_size):
        chunk = idx[start : start + ctx.batch_size]
        x, y = data.images[chunk].to(device), data.labels[chunk].to(device)
        # Each image's random start follows its index in the set, so shards agree with one process.
        result = attack(ctx.classifier, x, y, seed=derive_seed(ctx.seed, "eval-attack"), sample_ids=chunk)
        correct += float((~result.success.cpu()).sum())
    (correct,) = _counts(ctx, [correct])
    return {f"{target}/{attack_spec}": correct / len(data)}


@EVAL_SUITES.register("natra")
def natra_suite(ctx: EvalContext, spec: Spec) -> dict[str, float]:
    from robust.train.recipes import Batch, NaTraTraining, RecipeContext

    target = ctx.target(spec)
    data = ctx.sets[target]
    options = {k: v for k, v in spec.options.items() if k != "on"}
    natra_spec = Spec("natra", spec.target, spec.at, options)
    key = f"{target}/{natra_spec}"
    transform = ctx.memo.get(key)
    if transform is None:
        transform = NaTraTraining(natra_spec)
        # The evaluation set's codes are inverted once (and cached on disk), then reused every epoch.
        transform.bind(RecipeContext(ctx.classifier, data, ctx.classifier.device, ctx.seed, ctx.generator))
        ctx.memo[key] = transform
    idx = shard_range(len(data), ctx.world)
    device = ctx.classifier.device
    correct = 0.0
    for start in range(0, idx.numel(), ctx.batch_size):
        chunk = idx[start : start + ctx.batch_size]
        x, y = data.images[chunk].to(device), data.labels[chunk].to(device)
        batch = Batch(x, y, chunk, chunk.to(device), torch.Generator(device=device), 0, 0)
        (moved,) = transform.views(batch, ctx.classifier)
        with torch.no_grad(), ctx.autocast():
            pred = ctx.classifier.logits(moved, ctx.batch_size).argmax(1)
        correct += float((pred.to(device) == y).sum())
    (correct,) = _counts(ctx, [correct])
    return {f"{target}/natra:{transform.mode}@{transform.strength:g}": correct / len(data)}


def resolve_suite(text: str) -> tuple[Spec, EvalSuite]:
    """A suite spec -> (parsed spec, function); unknown names fail with the list of valid ones."""
    spec = parse_spec(text, "evaluation suite")
    if spec.name in EVAL_SUITES:
        return spec, EVAL_SUITES.get(spec.name)
    try:
        from attacks import ATTACKS
    except ImportError:
        ATTACKS = None
    if ATTACKS is not None and spec.name in ATTACKS:
        return spec, attack_suite
    valid = EVAL_SUITES.names() + (ATTACKS.names() if ATTACKS is not None else [])
    raise InputError("evaluation suite", "one of " + ", ".join(valid), text)


def evaluate(
    classifier: Classifier,
    sets: Mapping[str, ImageSet],
    suites: Sequence[str],
    *,
    world: World | None = None,
    seed: int = 0,
    amp: bool = False,
    batch_size: int = 512,
    generator: Any = None,
    memo: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Run every suite on the evaluation sets; returns ``{"<set>/<metric>": value}``.

    ``generator`` serves the ``natra`` suite; pass the same ``memo`` dict to every call of a run so
    preparations (inverted codes, directions) are made once.
    """
    if not sets:
        return {}
    ctx = EvalContext(classifier, sets, world or World(), seed, amp, batch_size, generator, memo if memo is not None else {})
    out: dict[str, float] = {}
    for text in suites:
        spec, fn = resolve_suite(text)
        out.update(fn(ctx, spec))
    return out
