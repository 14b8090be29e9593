"""Suite ``corruptions``: accuracy under the ImageNet-C style corruptions at severities 1-5.

Spec (read by :func:`augment.corruptions.parse_corruption_set`): ``corruptions`` (the 15 benchmark
corruptions), ``corruptions:heldout`` / ``corruptions:all`` (the held-out four, or all 19),
``corruptions:fog`` (one corruption), ``corruptions:fog@3`` (one severity); options
``names=fog+snow``, ``severities=1+3+5``, ``n``, ``failures`` (per corruption, shown at its middle
severity). One case per corruption and severity (``gaussian_noise_3``), a curve and an image strip
per corruption, and ``mean_acc`` over all; with ``metrics_only`` the cases and metrics alone,
counted over the shards.
"""
from __future__ import annotations

import torch

from robust.audit import SUITES, AuditContext
from robust.data import ImageSet
from robust.errors import InputError
from robust.registry import Spec
from robust.results import CaseResult, Curve, Strip, SuiteResult
from robust.suites.strips import failing_image
from robust.validation import check_number

# Images corrupted per call (bounds memory on large images).
CHUNK = 256
SUITE_OPTIONS = ("names", "severities", "n", "failures")
DEFAULT_SEVERITIES = (1.0, 2.0, 3.0, 4.0, 5.0)


def _sev(value: float) -> str:
    return f"{value:g}".replace(".", "_")


def corrupt_all(images: torch.Tensor, name: str, severity: float, seed: int, device: torch.device,
                indices: torch.Tensor | None = None) -> torch.Tensor:
    """Corrupt ``images`` in chunks on ``device`` (results on the CPU).

    ``indices`` are the images' positions in their dataset (default ``0..N-1``): image ``indices[i]``
    gets the noise seed :func:`augment.corruptions.image_seeds` gives it, whatever the chunking or
    the shard it lands in.
    """
    from augment.corruptions import corrupt

    n = images.shape[0]
    positions = torch.arange(n) if indices is None else indices.cpu()
    parts = [images[:0]]
    for start in range(0, n, CHUNK):
        chunk = images[start : start + CHUNK].to(device)
        parts.append(corrupt(chunk, name, severity, seed, ids=positions[start : start + CHUNK]).cpu())
    return torch.cat(parts)


def _metrics(table: dict[str, list[float]], clean_acc: float) -> tuple[dict[str, float], str]:
    """The suite's metrics from the accuracy per corruption and severity; also the worst corruption."""
    all_accs = [acc for accs in table.values() for acc in accs]
    by_corruption = {name: sum(accs) / len(accs) for name, accs in table.items()}
    worst = min(by_corruption, key=by_corruption.get)
    metrics = {
        "mean_acc": sum(all_accs) / len(all_accs),
        "clean_acc": clean_acc,
        "mean_error": 1.0 - sum(all_accs) / len(all_accs),
        "relative_acc": (sum(all_accs) / len(all_accs)) / clean_acc if clean_acc > 0 else float("nan"),
        "worst_corruption_acc": by_corruption[worst],
    }
    return metrics, worst


def parse_corruptions_suite(spec: Spec) -> tuple[list[str], list[float], int]:
    """The corruptions, severities and failures per corruption a suite spec asks for (also its check)."""
    from augment.corruptions import parse_corruption_set

    unknown = sorted(set(spec.options) - set(SUITE_OPTIONS))
    if unknown:
        raise InputError("corruptions suite options", "some of " + ", ".join(SUITE_OPTIONS), unknown)
    names, levels = parse_corruption_set(spec, "corruptions suite")
    failures = check_number(spec.options.get("failures", 3), "corruptions suite option failures", low=0, integer=True)
    return names, levels or list(DEFAULT_SEVERITIES), failures


@SUITES.register("corruptions", description="accuracy under ImageNet-C style corruptions at severities 1-5", check=parse_corruptions_suite)
def corruptions_suite(ctx: AuditContext, spec: Spec) -> SuiteResult:
    names, levels, failures = parse_corruptions_suite(spec)
    data = ctx.subset(ctx.sample_count(spec, 500))
    # The audit's seed itself, not one derived from the suite spec: image i gets the same noise under
    # ``corruptions`` and ``corruptions:fog@3``, in training's evaluation and from ``robust corrupt``.
    seed = ctx.seed
    if ctx.metrics_only:
        return _counted(ctx, data, names, levels, seed)
    return _with_images(ctx, data, names, levels, seed, failures)


def _counted(ctx: AuditContext, data: ImageSet, names: list[str], levels: list[float], seed: int) -> SuiteResult:
    """Metrics only: correct predictions counted on this process's shard and summed over the shards."""
    part, indices = ctx.shard(data)
    counts = [ctx.count(part.images, part.labels)[0]]
    for name in names:
        for level in levels:
            counts.append(ctx.count(corrupt_all(part.images, name, level, seed, ctx.device, indices), part.labels)[0])
    clean, *correct = ctx.total(*counts)
    n = len(data)
    table = {name: [c / n for c in correct[k * len(levels) : (k + 1) * len(levels)]] for k, name in enumerate(names)}
    cases = [CaseResult(f"{name}_{_sev(level)}", {"acc": acc}, {"corruption": name, "severity": level}, n=n)
             for name, accs in table.items() for level, acc in zip(levels, accs)]
    metrics, _ = _metrics(table, clean / n)
    return SuiteResult("corruptions", metrics=metrics, cases=cases,
                       params={"corruptions": names, "severities": levels, "n": n, "seed": seed})


def _strip(ctx: AuditContext, data: ImageSet, name: str, levels: list[float], seed: int, predictions: torch.Tensor,
           accs: list[float]) -> Strip:
    """One corruption's strip: clean, then each severity, of an image that it breaks
    (:func:`robust.suites.strips.failing_image`; ``predictions [1 + severities, N]``, clean first)."""
    shown = failing_image(predictions == data.labels, predictions[0] == data.labels)
    image = data.images[shown : shown + 1]
    frames = [image[0]] + [corrupt_all(image, name, level, seed, ctx.device, torch.tensor([shown]))[0] for level in levels]
    captions = [f"{label}: {ctx.class_names[int(p)]}" for label, p in
                zip(["clean", *[f"severity {level:g}" for level in levels]], predictions[:, shown])]
    return Strip(f"{name} (image {shown}; value = accuracy over {len(data)} images)", frames, accs, captions)


def _with_images(ctx: AuditContext, data: ImageSet, names: list[str], levels: list[float], seed: int, failures: int) -> SuiteResult:
    """The audit's result: cases with their failures, a curve and an image strip per corruption, a table."""
    shown_level = levels[len(levels) // 2]
    images, labels = data.images, data.labels
    clean_logits = ctx.logits(images)
    clean_correct = clean_logits.argmax(1) == labels
    clean_acc = float(clean_correct.float().mean())
    cases: list[CaseResult] = []
    curves, strips, table = [], [], {}
    for name in ctx.progress_bar(names, desc="corruptions"):
        accs, predictions = [], []
        for level in levels:
            corrupted = corrupt_all(images, name, level, seed, ctx.device)
            logits = ctx.logits(corrupted)
            predictions.append(logits.argmax(1))
            show = failures if level == shown_level else 0
            case = ctx.evaluate(f"{name}_{_sev(level)}", corrupted, labels, logits=logits, originals=images, failures=show,
                                failure_mask=clean_correct, per_class=False, seeds=[seed] * len(labels),
                                describe=lambda i, name=name, level=level: f"{name} at severity {level:g}",
                                failure_params=lambda i, name=name, level=level: {"corruption": name, "severity": level, "noise_seed": seed, "start": i},
                                params={"corruption": name, "severity": level})
            cases.append(case)
            accs.append(case.metrics["acc"])
        curves.append(Curve(name, [0.0, *levels], [clean_acc, *accs], "severity", "accuracy"))
        strips.append(_strip(ctx, data, name, levels, seed, torch.stack([clean_logits.argmax(1), *predictions]), [clean_acc, *accs]))
        table[name] = accs
    metrics, worst = _metrics(table, clean_acc)
    rows = [[name, *accs, sum(accs) / len(accs)] for name, accs in table.items()]
    worst_first = sorted(range(len(rows)), key=lambda i: rows[i][-1])
    rows = [rows[i] for i in worst_first]
    strips = [strips[i] for i in worst_first]
    tables = [{"title": "accuracy per corruption and severity (worst first)",
               "columns": ["corruption", *[f"s{lv:g}" for lv in levels], "mean"], "rows": rows}]
    notes = [f"Mean accuracy over {len(names)} corruptions x {len(levels)} severities: {metrics['mean_acc']:.3f} "
             f"(clean {clean_acc:.3f}); worst: {worst} ({metrics['worst_corruption_acc']:.3f})."]
    return SuiteResult("corruptions", metrics=metrics, cases=cases, curves=curves, strips=strips,
                       details={"tables": tables, "notes": notes},
                       params={"corruptions": names, "severities": levels, "n": len(labels), "seed": seed})
