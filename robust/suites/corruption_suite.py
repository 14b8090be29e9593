"""Suite ``corruptions``: accuracy under the ImageNet-C style corruptions at severities 1-5.

Spec: ``corruptions`` (the 15 benchmark corruptions), ``corruptions:heldout`` / ``corruptions:all``
(the held-out four, or all 19), ``corruptions:fog`` (one corruption), ``corruptions:fog@3`` (one
severity); options ``names=fog+snow``, ``severities=1+3+5``, ``n``, ``failures`` (per
corruption, shown at its middle severity). One case per corruption and severity
(``gaussian_noise_3``), a curve and an image strip per corruption, and ``mean_acc`` over all.
"""
from __future__ import annotations

import torch

from robust.audit import SUITES, AuditContext
from robust.errors import InputError
from robust.registry import Spec, parse_number
from robust.results import CaseResult, Curve, Strip, SuiteResult

# Images corrupted per call (bounds memory on large images).
CHUNK = 256
SETS = ("benchmark", "heldout", "all")


def corruption_names(spec: Spec) -> list[str]:
    from augment import corruptions as C

    sets = {"benchmark": list(C.BENCHMARK_CORRUPTIONS), "heldout": list(C.HELDOUT_CORRUPTIONS), "all": list(C.ALL_CORRUPTIONS)}
    if spec.target is not None and "names" in spec.options:
        raise InputError("corruptions suite", "a target or names=..., not both", str(spec))
    if spec.target in sets:
        return sets[spec.target]
    chosen = [spec.target] if spec.target is not None else str(spec.options["names"]).split("+") if "names" in spec.options else sets["benchmark"]
    for name in chosen:
        C.get_corruption(name)
    return chosen


def severities(spec: Spec) -> list[float]:
    if spec.at is not None and "severities" in spec.options:
        raise InputError("corruptions suite", "@severity or severities=..., not both", str(spec))
    text = spec.at if spec.at is not None else spec.options.get("severities")
    if text is None:
        return [1.0, 2.0, 3.0, 4.0, 5.0]
    values = [parse_number(part, "severity") for part in str(text).split("+")]
    if any(not 0 < v <= 5 for v in values):
        raise InputError("corruptions severities", "values in (0, 5] joined by + (e.g. 1+3+5)", text)
    return sorted(set(values))


def _sev(value: float) -> str:
    return f"{value:g}".replace(".", "_")


def corrupt_all(images: torch.Tensor, name: str, severity: float, seed: int, device: torch.device) -> torch.Tensor:
    """Corrupt ``images`` in chunks on ``device`` (results on the CPU); image ``i`` gets the same noise whatever the chunking."""
    from augment.corruptions import corrupt

    parts = []
    for start in range(0, images.shape[0], CHUNK):
        chunk = images[start : start + CHUNK].to(device)
        parts.append(corrupt(chunk, name, severity, seed=seed, start=start).cpu())
    return torch.cat(parts)


@SUITES.register("corruptions", description="accuracy under ImageNet-C style corruptions at severities 1-5")
def corruptions_suite(ctx: AuditContext, spec: Spec) -> SuiteResult:
    names = corruption_names(spec)
    levels = severities(spec)
    shown_level = levels[len(levels) // 2]
    per_corruption_failures = int(spec.options.get("failures", 3))
    data = ctx.subset(ctx.sample_count(spec, 500))
    images, labels = data.images, data.labels
    clean_logits = ctx.logits(images)
    clean_correct = clean_logits.argmax(1) == labels
    clean_acc = float(clean_correct.float().mean())
    cases: list[CaseResult] = []
    curves, strips, rows = [], [], []
    seed = ctx.seed_for("corruptions")
    for name in ctx.progress_bar(names, desc="corruptions"):
        accs, frames, captions = [], [images[0]], [f"clean: {ctx.class_names[int(clean_logits[0].argmax())]}"]
        for level in levels:
            corrupted = corrupt_all(images, name, level, seed, ctx.device)
            logits = ctx.logits(corrupted)
            show = per_corruption_failures if level == shown_level else 0
            case = ctx.evaluate(f"{name}_{_sev(level)}", corrupted, labels, logits=logits, originals=images, failures=show,
                                failure_mask=clean_correct, per_class=False, seeds=[seed] * len(labels),
                                describe=lambda i, name=name, level=level: f"{name} at severity {level:g}",
                                failure_params=lambda i, name=name, level=level: {"corruption": name, "severity": level, "noise_seed": seed, "start": i},
                                params={"corruption": name, "severity": level})
            cases.append(case)
            accs.append(case.metrics["acc"])
            frames.append(corrupted[0])
            captions.append(f"severity {level:g}: {ctx.class_names[int(logits[0].argmax())]}")
        curves.append(Curve(name, [0.0, *levels], [clean_acc, *accs], "severity", "accuracy"))
        strips.append(Strip(f"{name} (value = accuracy over {len(labels)} images)", frames, [clean_acc, *accs], captions))
        rows.append([name, *accs, sum(accs) / len(accs)])
    all_accs = [c.metrics["acc"] for c in cases]
    by_corruption = {row[0]: row[-1] for row in rows}
    worst = min(by_corruption, key=by_corruption.get)
    metrics = {
        "mean_acc": sum(all_accs) / len(all_accs),
        "clean_acc": clean_acc,
        "mean_error": 1.0 - sum(all_accs) / len(all_accs),
        "relative_acc": (sum(all_accs) / len(all_accs)) / clean_acc if clean_acc > 0 else float("nan"),
        "worst_corruption_acc": by_corruption[worst],
    }
    worst_first = sorted(range(len(rows)), key=lambda i: rows[i][-1])
    rows = [rows[i] for i in worst_first]
    strips = [strips[i] for i in worst_first]
    tables = [{"title": "accuracy per corruption and severity (worst first)",
               "columns": ["corruption", *[f"s{lv:g}" for lv in levels], "mean"], "rows": rows}]
    notes = [f"Mean accuracy over {len(names)} corruptions x {len(levels)} severities: {metrics['mean_acc']:.3f} "
             f"(clean {clean_acc:.3f}); worst: {worst} ({by_corruption[worst]:.3f})."]
    return SuiteResult("corruptions", metrics=metrics, cases=cases, curves=curves, strips=strips,
                       details={"tables": tables, "notes": notes},
                       params={"corruptions": names, "severities": levels, "n": len(labels), "seed": seed})
