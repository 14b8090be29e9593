"""Per-epoch evaluation during training: the audit's suites (:data:`robust.audit.SUITES`) on the evaluation sets.

A suite spec is the audit's (``clean``, ``corruptions@3``, ``pgd:linf@8/255,steps=10``, ``natra:random@0.5``,
...) plus ``on=<set>``: ``clean`` runs on every evaluation set unless ``on`` names one, the others on
``on`` or the first set. Suites run with ``metrics_only`` (no failure images, strips or curves) and,
under ``torchrun``, every rank evaluates its shard of each set and the counts are summed, so all
ranks see the same numbers. Metrics are ``<set>/acc`` and ``<set>/loss`` for ``clean`` (its ``acc``
and ``nll``), and ``<set>/<suite>.<metric>`` for the others, the names the audit's gates use
(``shift/corruptions.mean_acc``, ``shift/pgd.acc``, ``shift/natra.acc``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from robust.audit import RUNNER_OPTIONS, SUITES, AuditContext, PlannedSuite, check_suite, load_suites, plan_suites
from robust.data import ImageSet
from robust.errors import InputError
from robust.models import Classifier
from robust.registry import Spec, parse_spec
from robust.train.distributed import World

#: The runner's own option: which evaluation set a suite runs on.
SET_OPTION = "on"


def resolve_suite(text: str, sets: Sequence[str] | None = None) -> tuple[Spec, str | None]:
    """An evaluation suite spec -> (the audit suite's spec, the set named by ``on=`` or None).

    Unknown suite names fail with the list of valid ones; so does an ``on`` outside ``sets`` (when given);
    the rest of the spec is checked as the audit checks it (:func:`robust.audit.check_suite`).
    """
    load_suites()
    spec = parse_spec(text, "evaluation suite")
    if spec.name not in SUITES:
        raise InputError("evaluation suite", "one of " + ", ".join(SUITES.names()), text)
    options = dict(spec.options)
    target = options.pop(SET_OPTION, None)
    if target is not None and sets is not None and str(target) not in sets:
        raise InputError(f"evaluation suite {text} on", "one of the evaluation sets " + ", ".join(sets), target)
    suite_spec = Spec(spec.name, spec.target, spec.at, options)
    check_suite(Spec(spec.name, spec.target, spec.at, {k: v for k, v in options.items() if k not in RUNNER_OPTIONS}),
                f"evaluation suite {text!r}")
    return suite_spec, None if target is None else str(target)


def plan(suites: Sequence[str], sets: Sequence[str]) -> list[tuple[str, PlannedSuite]]:
    """(set, suite) pairs in the order of ``suites``; result names must be distinct on each set (``name=``)."""
    per_set: dict[str, list[Spec]] = {name: [] for name in sets}
    order: list[tuple[str, int]] = []
    for text in suites:
        spec, target = resolve_suite(text, sets)
        chosen = [target] if target is not None else list(sets) if spec.name == "clean" else [sets[0]]
        for name in chosen:
            order.append((name, len(per_set[name])))
            per_set[name].append(spec)
    planned = {name: plan_suites(specs) for name, specs in per_set.items() if specs}
    return [(name, planned[name][k]) for name, k in order]


def flatten(set_name: str, planned: PlannedSuite, metrics: Mapping[str, Any]) -> dict[str, float]:
    """A suite's numeric metrics as history entries (see the module's docstring for the names)."""
    if planned.spec.name == "clean" and planned.name == "clean":
        return {f"{set_name}/acc": float(metrics["acc"]), f"{set_name}/loss": float(metrics["nll"])}
    return {f"{set_name}/{planned.name}.{key}": float(value) for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


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

    ``seed`` is the audit seed of the suites (``ctx.seed_for`` derives each suite's draws from it);
    ``generator`` serves the ``natra`` suite; pass the same ``memo`` dict to every call of a run so
    preparations (inverted codes, directions) are made once.
    """
    if not sets:
        return {}
    memo = memo if memo is not None else {}
    out: dict[str, float] = {}
    for set_name, planned in plan(suites, list(sets)):
        data = sets[set_name]
        ctx = AuditContext(classifier, data, generator=generator, device=classifier.device, seed=seed, max_samples=len(data),
                           progress=False, suite_key=planned.key, metrics_only=True, world=world or World(), batch_size=batch_size,
                           amp=amp, cache=memo.setdefault(set_name, {}))
        result = SUITES.get(planned.spec.name)(ctx, planned.spec)
        out.update(flatten(set_name, planned, result.metrics))
    return out
