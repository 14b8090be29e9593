"""Pixel-attack suites ``fgsm``, ``pgd``, ``apgd`` and ``square``: robust accuracy over an epsilon grid.

The spec is the attack's own (``pgd:linf@8/255,steps=10``; see :func:`attacks.get_attack`) plus
suite options: ``n`` (images attacked), ``grid`` (budgets joined by ``+``, e.g.
``1/255+2/255+4/255``; default a quarter, half and all of the budget). One case per budget, named
``<norm>_<budget>`` (``linf_8`` for 8/255, ``l2_0_5`` for 0.5), so gates read
``pgd.linf_8.acc``. Failures show each broken image at the smallest budget that broke it. The
budgets are attacked from the largest down (:func:`attacks.epsilon_sweep`); each case reports the
model evaluations per image made at its budget (``queries_per_image``; the suite's: the main
budget's). With
``metrics_only`` (training's evaluation) every rank sweeps its shard and the suite reports the
metrics that counts give (all but ``median_min_eps``); ``grid=<budget>`` makes that one attack.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from robust.audit import SUITES, AuditContext, SuiteSkipped
from robust.data import ImageSet
from robust.errors import GradientUnavailableError, InputError
from robust.registry import Spec, parse_number
from robust.results import CaseResult, Curve, SuiteResult, metric_key

ATTACK_SUITES = ("fgsm", "pgd", "apgd", "square")
SUITE_OPTIONS = ("n", "grid")
DEFAULT_FRACTIONS = (0.25, 0.5, 1.0)


def eps_label(eps: float) -> str:
    """``8/255`` -> ``"8"`` (Linf budgets are read in 1/255 steps), ``0.5`` -> ``"0_5"``."""
    scaled = eps * 255
    if 0 < eps < 1 and abs(scaled - round(scaled)) < 1e-6:
        return str(round(scaled))
    return metric_key(f"{eps:g}")


def _grid(spec: Spec, eps: float) -> list[float]:
    text = spec.options.get("grid")
    if text is None:
        values = [eps * f for f in DEFAULT_FRACTIONS]
    else:
        values = [parse_number(part, f"{spec.name} grid") for part in str(text).split("+")]
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise InputError(f"{spec.name} grid", "positive budgets joined by + (e.g. 1/255+2/255+4/255)", text)
    return sorted(set(values) | {eps})


def parse_attack_suite(spec: Spec) -> tuple[Any, list[float]]:
    """The attack and the budgets a suite spec asks for (also the suites' check before an audit runs)."""
    import attacks

    attack_spec = Spec(spec.name, spec.target, spec.at, {k: v for k, v in spec.options.items() if k not in SUITE_OPTIONS})
    attack = attacks.get_attack(str(attack_spec))
    return attack, _grid(spec, float(attack.eps))


def attack_suite(ctx: AuditContext, spec: Spec) -> SuiteResult:
    import attacks

    attack, grid = parse_attack_suite(spec)
    if attack.needs_gradients and not ctx.classifier.has_gradients:
        raise SuiteSkipped(f"{spec.name} needs gradients and {ctx.classifier.name} has none (ONNX): use square")
    eps = float(attack.eps)
    data = ctx.subset(ctx.sample_count(spec, 500))
    images, labels = data.images, data.labels
    seed = ctx.seed_for("attack")
    if ctx.metrics_only:
        return _counted(ctx, attack, grid, data, seed)
    try:
        sweep = attacks.epsilon_sweep(ctx.classifier, images, labels, attack, [0.0, *grid], seed=seed,
                                      progress=lambda it: ctx.progress_bar(it, desc=spec.name))
    except GradientUnavailableError as exc:
        raise SuiteSkipped(str(exc)) from None
    min_eps = sweep.min_eps.cpu()
    norm = attack.norm
    scale = 255.0 if norm == "linf" else 1.0
    cases: list[CaseResult] = []
    main_acc = main_queries = math.nan
    per_image = [q / max(1, len(labels)) for q in sweep.queries_per_eps]
    for e, acc, spent in zip(sweep.eps, sweep.robust_accuracy, per_image):
        if e == 0:
            continue
        name = f"{norm}_{eps_label(e)}"
        broken = torch.isfinite(min_eps) & (min_eps > 0) & (min_eps <= e + 1e-12)
        success = float(broken.sum()) / max(1, int((min_eps != 0).sum()))
        if abs(e - eps) < 1e-12:
            main_acc, main_queries = acc, spent
            shown = torch.where(broken[:, None, None, None], sweep.adversarial.cpu(), images)

            def describe(i: int) -> str:
                return f"{attacks.format_eps(float(min_eps[i]))} {norm} perturbation"

            case = ctx.evaluate(name, shown, labels, originals=images, describe=describe, failure_mask=broken, per_class=True,
                                failure_params=lambda i: {"min_eps": float(min_eps[i]), "attack": attack.spec}, seeds=[seed] * len(labels),
                                params={"eps": e, "attack": attack.spec})
            case.metrics["success_rate"] = success
            case.metrics["acc"] = acc  # the attack's own count (re-evaluation could differ by float round-off)
            case.metrics["queries_per_image"] = spent
        else:
            case = CaseResult(name, {"acc": acc, "success_rate": success, "queries_per_image": spent},
                              {"eps": e, "attack": attack.with_eps(e).spec}, n=len(labels))
        cases.append(case)
    broken_eps = min_eps[torch.isfinite(min_eps) & (min_eps > 0)]
    clean_correct = int((min_eps != 0).sum())
    metrics: dict[str, Any] = {
        "acc": main_acc,
        "clean_acc": sweep.clean_accuracy,
        "drop": sweep.clean_accuracy - main_acc,
        "success_rate": float(((min_eps > 0) & (min_eps <= eps + 1e-12)).sum()) / max(1, clean_correct),
        "median_min_eps": float(broken_eps.median()) if broken_eps.numel() else math.inf,
        "queries_per_image": main_queries,
    }
    x_label = f"eps x 255 ({norm})" if norm == "linf" else f"eps ({norm})"
    curve = Curve(attack.spec, [e * scale for e in sweep.eps], list(sweep.robust_accuracy), x_label, "robust accuracy")
    notes = [f"{attack.spec} on {len(labels)} images: robust accuracy {main_acc:.3f} at eps {attacks.format_eps(eps)} "
             f"(clean {sweep.clean_accuracy:.3f})."]
    return SuiteResult(spec.name, metrics=metrics, cases=cases, curves=[curve],
                       details={"notes": notes, "sweep": sweep.summary()},
                       params={"attack": attack.spec, "grid": [attacks.format_eps(e) for e in grid], "n": len(labels), "seed": seed})


def _counted(ctx: AuditContext, attack: Any, grid: list[float], data: ImageSet, seed: int) -> SuiteResult:
    """Metrics only: this process sweeps its shard (random starts keyed by the images' positions in
    the data, as one process would draw them), and the counts are summed over the shards."""
    import attacks

    part, indices = ctx.shard(data)
    min_eps, queries = torch.zeros(0), [0] * len(grid)
    if len(part):
        sweep = attacks.epsilon_sweep(ctx.classifier, part.images, part.labels, attack, grid, seed=seed, sample_ids=indices)
        min_eps, queries = sweep.min_eps.cpu(), sweep.queries_per_eps
    # An image resists budget e when the smallest budget that broke it is larger (0: wrong unattacked).
    robust = [float((min_eps > e + 1e-12).sum()) for e in grid]
    n, clean, *totals = ctx.total(len(part), float((min_eps != 0).sum()), *queries, *robust)
    queries, robust = totals[: len(grid)], totals[len(grid):]
    eps = float(attack.eps)
    cases = [CaseResult(f"{attack.norm}_{eps_label(e)}", {"acc": r / n, "success_rate": (clean - r) / max(1.0, clean),
                                                          "queries_per_image": q / max(1.0, n)},
                        {"eps": e, "attack": attack.with_eps(e).spec}, n=int(n)) for e, r, q in zip(grid, robust, queries)]
    main = next(case for case in cases if abs(case.params["eps"] - eps) < 1e-12)
    metrics = {"acc": main.metrics["acc"], "clean_acc": clean / n, "drop": clean / n - main.metrics["acc"],
               "success_rate": main.metrics["success_rate"], "queries_per_image": main.metrics["queries_per_image"]}
    return SuiteResult(attack.name, metrics=metrics, cases=cases,
                       params={"attack": attack.spec, "grid": [attacks.format_eps(e) for e in grid], "n": int(n), "seed": seed})


for _name in ATTACK_SUITES:
    SUITES.register(_name, description=f"{_name} pixel attack: robust accuracy over an epsilon grid, adversarial galleries",
                    check=parse_attack_suite)(attack_suite)
