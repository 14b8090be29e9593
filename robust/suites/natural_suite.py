"""Suite ``natural``: accuracy along the generator's class-independent latent directions (sweeps and
worst-case magnitudes, :func:`attacks.latent.direction_attack`) on the audited images' inverted codes;
with a structure/appearance model, under appearance swaps across classes and along appearance
directions (:func:`swap_suite`).
"""
from __future__ import annotations

from typing import Any

import torch

from robust.audit import SUITES, AuditContext, SuiteSkipped
from robust.errors import InputError
from robust.registry import Spec, parse_number
from robust.results import Curve, Strip, SuiteResult
from robust.seeding import derive_seed

CHUNK = 256


def _model(ctx: AuditContext, spec: Spec) -> Any:
    """The suite's model: ``model=`` (auto/swap/stylegan/<file>) resolved against the audit's generator."""
    from robust.gan.natural import resolve_model

    try:
        return resolve_model(spec.options.get("model", "auto"), ctx.generator, ctx.data, ctx.device, name="natural model")
    except InputError as exc:
        if exc.name != "natural model" or exc.got != "None":
            raise
        raise SuiteSkipped("no model of natural variation: pass --generator (a generator or structure/appearance model of this "
                           "data) or model=<file>; the shipped ones serve the synthetic benchmark's 32x32 images") from None


def _judge(ctx: AuditContext, G: Any, choice: str) -> Any:
    from robust.gan.directions import train_judge
    from robust.gan.metrics import load_oracle, oracle_reads

    if choice == "none":
        return None
    synthetic = bool(ctx.data.factors) or str(ctx.data_source).startswith("synthetic")
    if choice in ("auto", "oracle") and synthetic and oracle_reads(G):
        return load_oracle(device=G.device)
    if choice == "oracle":
        raise InputError("natural option judge", "oracle only for 32x32 synthetic data with the shipped oracle", choice)
    conditional = G.conditioning is not None and "class" in G.conditioning.names
    if choice in ("auto", "train") and conditional:
        return train_judge(G, seed=ctx.seed_for("judge"))
    if choice == "train":
        raise InputError("natural option judge", "train only for generators conditioned on a class group", choice)
    return None


def _directions(ctx: AuditContext, G: Any, spec: Spec) -> Any:
    from robust.gan.directions import directions_for, find_directions, score_directions, select_directions

    found = directions_for(G, spec.options.get("directions", "auto"))
    if found is not None:
        return found if found.kept is not None else select_directions(found)
    method = str(spec.options.get("method", "sefa"))
    k = int(spec.options.get("k", 16))
    seed = ctx.seed_for("directions")
    found = find_directions(G, method, k, seed=seed, class_free=bool(spec.options.get("class_free", False)))
    judge = _judge(ctx, G, str(spec.options.get("judge", "auto")))
    if judge is not None:
        found = score_directions(G, found, judge=judge, seed=seed)
    return select_directions(found, min_preservation=float(spec.options.get("min_preservation", 0.95)))


def _render(G: Any, directions: Any, ws: torch.Tensor, residual: torch.Tensor | None, expand: int | None,
            mags: torch.Tensor) -> torch.Tensor:
    from robust.gan.latent import synthesize

    out = []
    with torch.no_grad():
        for i in range(0, ws.shape[0], CHUNK):
            w = ws[i: i + CHUNK].to(G.device)
            r = residual[i: i + CHUNK].to(G.device) if residual is not None else None
            out.append(synthesize(G, directions.apply(w, mags[i: i + CHUNK].to(G.device)), r, expand).cpu())
    return torch.cat(out)


NATURAL_OPTIONS = ("n", "directions", "method", "k", "class_free", "judge", "min_preservation", "max_directions", "fractions",
                   "attack", "steps", "invert_steps", "expand", "model", "donors", "strengths", "worst_k")


def check_natural_suite(spec: Spec) -> None:
    unknown = sorted(set(spec.options) - set(NATURAL_OPTIONS))
    if unknown:
        raise InputError("natural suite options", "some of " + ", ".join(NATURAL_OPTIONS), unknown)
    _fractions(spec)


@SUITES.register("natural", description="accuracy under a model's natural variation: latent directions, or appearance swaps "
                 "and directions (sweeps and worst case)", check=check_natural_suite)
def natural_suite(ctx: AuditContext, spec: Spec) -> SuiteResult:
    """Sweep each kept direction across its realistic range (a curve and an image strip) and search each
    image's worst magnitude along it.

    The model is ``model=`` (``auto``: the audit's ``--generator`` whatever its kind, else for 32x32
    synthetic data the shipped structure/appearance model when installed, else the shipped
    generator; ``swap``/``stylegan``; or a model file). A structure/appearance model runs
    :func:`swap_suite` (see there for its options). For a generator the
    audited images are inverted into its W+ space (codes cached, :mod:`robust.gan.codes_cache`).
    Spec options: ``n`` images; ``directions`` (a file, or ``auto``: the
    shipped demo directions when they belong to the generator, else found now with ``method``
    (sefa/ganspace/householder), ``k``, ``class_free`` and ``judge`` (auto/oracle/train/none));
    ``max_directions`` (8); ``fractions`` of the range swept (``-1+-0.5+0.5+1``); ``attack``
    (grid/random/gradient) and ``steps``; ``invert_steps`` (20); ``expand`` (a feature resolution, or
    0); ``min_preservation`` (0.95). The suite is skipped when no direction is kept.
    """
    from robust.gan.codes_cache import load_or_invert
    from robust.gan.natural import model_kind

    G = _model(ctx, spec)
    if model_kind(G) == "swap":
        return swap_suite(ctx, spec, G)
    if (G.img_channels, G.img_resolution, G.img_resolution) != (ctx.data.channels, *ctx.data.size):
        raise SuiteSkipped(f"the generator makes {G.img_channels}x{G.img_resolution}x{G.img_resolution} images, "
                           f"the data are {ctx.data.channels}x{ctx.data.size[0]}x{ctx.data.size[1]}")
    fractions = _fractions(spec)
    expand = int(spec.options.get("expand", 0)) or None
    attack = str(spec.options.get("attack", "grid"))
    data = ctx.subset(ctx.sample_count(spec, 200))
    images, labels = data.images, data.labels
    codes = load_or_invert(G, data, steps=int(spec.options.get("invert_steps", 20)), expand_res=expand, seed=ctx.seed_for("invert"))
    directions = _directions(ctx, G, spec)
    if directions.kept is not None and not bool(directions.kept.any()):
        raise SuiteSkipped(f"no {directions.method} direction of this generator preserved the class often enough "
                           "(lower min_preservation=..., or give directions=<file>)")
    kept = directions.kept_directions()
    order = torch.argsort(kept.scores["score"], descending=True, stable=True) if "score" in kept.scores else torch.arange(len(kept))
    kept = kept.select(order[: int(spec.options.get("max_directions", 8))])
    clean_acc = float((ctx.logits(images).argmax(1) == labels).float().mean())
    recon = _render(G, kept, codes.ws, codes.residual, expand, torch.zeros(len(codes.ws), len(kept)))
    recon_correct = ctx.logits(recon).argmax(1) == labels
    cases, curves, strips, rows = [], [], [], []
    all_correct = recon_correct.clone()
    for j in ctx.progress_bar(range(len(kept)), desc="natural"):
        curve, strip, accs = _sweep(ctx, G, kept, j, codes, expand, recon, labels, fractions)
        case, found = _worst_case(ctx, G, kept, j, codes, expand, images, labels, accs, attack, spec.options.get("steps", 5))
        all_correct &= (found.predictions.cpu() == labels)
        curves.append(curve)
        strips.append(strip)
        cases.append(case)
        low, high = kept.ranges[j].tolist()
        rows.append([kept.names[j], low, high, found.worst_case_accuracy, min(accs), float(kept.scores["class_preservation"][j])
                     if "class_preservation" in kept.scores else None])
    worst = [c.metrics["acc"] for c in cases]
    metrics = {
        "clean_acc": clean_acc,
        "recon_acc": float(recon_correct.float().mean()),
        "recon_psnr": float(codes.psnr.mean()),
        "recon_ssim": float(codes.ssim.mean()),
        "mean_worst_acc": sum(worst) / len(worst),
        "min_worst_acc": min(worst),
        "worst_acc": float(all_correct.float().mean()),
        "mean_sweep_acc": sum(c.metrics["sweep_mean_acc"] for c in cases) / len(cases),
        "directions": float(len(kept)),
    }
    return SuiteResult("natural", metrics=metrics, cases=cases, curves=curves, strips=strips,
                       details=_details(rows, metrics, directions.method, len(kept)),
                       params={"n": len(labels), "method": directions.method, "attack": attack, "expand_res": expand,
                               "fractions": fractions, "codes": codes.key})


def _fractions(spec: Spec) -> list[float]:
    fractions = [parse_number(p, "natural fractions") for p in str(spec.options.get("fractions", "-1+-0.5+0.5+1")).split("+")]
    if any(not -1 <= f <= 1 for f in fractions) or not fractions:
        raise InputError("natural option fractions", "fractions of the range in [-1, 1] joined by + (e.g. -1+-0.5+0.5+1)", fractions)
    return sorted(set(fractions) | {0.0})


def _sweep(ctx: AuditContext, G: Any, kept: Any, j: int, codes: Any, expand: int | None, recon: torch.Tensor, labels: torch.Tensor,
           fractions: list[float]) -> tuple[Curve, Strip, list[float]]:
    """Accuracy at the ``fractions`` of direction ``j``'s range (0: the reconstructions), as a curve and a strip."""
    low, high = kept.ranges[j].tolist()
    values = [f * (high if f > 0 else -low) for f in fractions]
    n = len(codes.ws)
    accs, frames, captions = [], [], []
    for value in values:
        edited = recon if value == 0 else _render(G, kept, codes.ws, codes.residual, expand, kept.along(j, torch.full((n,), value)))
        pred = ctx.logits(edited).argmax(1)
        accs.append(float((pred == labels).float().mean()))
        frames.append(edited[0])
        captions.append(f"{value:+.3g}: {ctx.class_names[int(pred[0])]}")
    name = kept.names[j]
    strip = Strip(f"{name} from {low:+.3g} to {high:+.3g} (value = accuracy over {len(labels)} images)", frames, accs, captions)
    return Curve(name, values, accs, "magnitude (W units)", "accuracy"), strip, accs


def _worst_case(ctx: AuditContext, G: Any, kept: Any, j: int, codes: Any, expand: int | None, images: torch.Tensor,
                labels: torch.Tensor, accs: list[float], attack: str, steps: Any) -> tuple[Any, Any]:
    """The audit case of direction ``j``: each image at its worst magnitude (and the search's result)."""
    from attacks.latent import direction_attack

    found = direction_attack(ctx.classifier, G, codes.ws, labels, kept, residual=codes.residual, expand_res=expand, which=[j],
                             method=attack, steps=steps, seed=ctx.seed_for("attack", j))
    broke = (found.success & found.clean_correct).cpu()
    low, high = kept.ranges[j].tolist()

    def describe(i: int) -> str:
        return found.describe(i)

    def failure_params(i: int) -> dict[str, Any]:
        return found.params(i)

    case = ctx.evaluate(kept.names[j], found.images.cpu(), labels, originals=images, describe=describe, failure_params=failure_params,
                        failure_mask=broke, per_class=False, seeds=[found.seed] * len(labels),
                        params={"direction": kept.names[j], "range": [low, high], "method": attack})
    case.metrics.update({"sweep_min_acc": min(accs), "sweep_mean_acc": sum(accs) / len(accs),
                         **{f"score_{k}": float(v[j]) for k, v in kept.scores.items()}})
    case.metrics["acc"] = found.worst_case_accuracy
    return case, found


def _details(rows: list[list[Any]], metrics: dict[str, float], method: str, count: int) -> dict[str, Any]:
    """The report's table (most harmful direction first) and notes."""
    rows.sort(key=lambda r: r[3])
    tables = [{"title": "latent directions, most harmful first",
               "columns": ["direction", "low", "high", "worst-case accuracy", "lowest sweep accuracy", "class preservation"], "rows": rows}]
    notes = [f"{count} kept {method} directions; reconstructions: PSNR {metrics['recon_psnr']:.1f} dB, accuracy "
             f"{metrics['recon_acc']:.3f} (clean {metrics['clean_acc']:.3f}); accuracy when every image meets its worst direction: "
             f"{metrics['worst_acc']:.3f}."]
    weak = [r[0] for r in rows if r[5] is not None and r[5] < 0.95]
    if weak:
        notes.append(f"{', '.join(weak)} kept the judge's class for fewer than 95% of samples: part of their failures "
                     "may be real class changes, not model errors (see the class preservation column).")
    return {"tables": tables, "notes": notes, "plot_cases": "acc"}


# -- a structure/appearance model: appearance swaps and appearance directions ---------------------------

def _strengths(spec: Spec) -> list[float]:
    values = [parse_number(p, "natural strengths") for p in str(spec.options.get("strengths", "0.25+0.5+0.75+1")).split("+")]
    if not values or any(not 0 < v <= 1 for v in values):
        raise InputError("natural option strengths", "swap strengths in (0, 1] joined by + (e.g. 0.25+0.5+1)", values)
    return sorted(set(values))


def _donors(ctx: AuditContext, spec: Spec, model: Any, data: Any, codes: Any) -> Any:
    """The donor bank: the appearance codes of ``donors=<data spec>`` (default: the audited images) with their labels."""
    from augment.swap import DonorBank
    from robust.data import load_dataset
    from robust.gan.codes_cache import load_or_encode

    source = spec.options.get("donors")
    if source is None:
        return DonorBank.from_codes(codes, data)
    donors = load_dataset(str(source), seed=ctx.seed, size=tuple(data.size))
    if (donors.channels, *donors.size) != (data.channels, *data.size) or list(donors.class_names) != list(data.class_names):
        raise InputError("natural option donors", "images of the audited data's shape and classes", donors.name)
    return DonorBank.from_codes(load_or_encode(model, donors), donors)


def _appearance_dirs(spec: Spec, model: Any, bank: Any) -> Any:
    """``directions=pca|sefa|none|<file>`` (default pca) found on the donors' codes, at most ``max_directions``."""
    from robust.gan.directions import APPEARANCE_METHODS, appearance_directions, load_directions

    choice = str(spec.options.get("directions", "pca"))
    if choice == "none":
        return None
    if choice in APPEARANCE_METHODS:
        found = appearance_directions(model, bank.appearance, choice, int(spec.options.get("k", 16)))
    else:
        found = load_directions(choice, model)
    found = found.kept_directions()
    return found.select(list(range(min(len(found), int(spec.options.get("max_directions", 4))))))


def swap_suite(ctx: AuditContext, spec: Spec, model: Any) -> SuiteResult:
    """The natural suite with a structure/appearance model: each audited image keeps its structure and
    takes the appearance code of a donor of another class.

    Cases: ``swap``, each image at its worst of ``worst_k`` (8) donors at full strength; one per
    appearance direction, each image at its worst magnitude (``attack`` grid/random/gradient,
    ``steps``). Curves and strips: accuracy against the swap strength (each image's first donor at
    ``strengths``, default ``0.25+0.5+0.75+1``) and along each direction (``fractions`` of its range).
    Options: ``n``; ``donors`` (a data spec: the donor bank, default the audited images);
    ``directions`` (pca, sefa, none or a file; ``k`` found, ``max_directions`` (4) kept).
    """
    from augment.swap import AppearanceSwap
    from robust.gan.codes_cache import load_or_encode

    c = model.config
    if (c.img_channels, c.resolution, c.resolution) != (ctx.data.channels, *ctx.data.size):
        raise SuiteSkipped(f"the model makes {c.img_channels}x{c.resolution}x{c.resolution} images, "
                           f"the data are {ctx.data.channels}x{ctx.data.size[0]}x{ctx.data.size[1]}")
    data = ctx.subset(ctx.sample_count(spec, 200))
    images, labels = data.images, data.labels
    codes = load_or_encode(model, data)
    bank = _donors(ctx, spec, model, data, codes)
    with torch.no_grad():
        recon = torch.cat([model.decode(*codes.batch(slice_, model.device)).cpu()
                           for slice_ in torch.arange(len(data)).split(CHUNK)])
    recon_correct = ctx.logits(recon).argmax(1) == labels
    seed = ctx.seed_for("swap")
    worst = AppearanceSwap(model, bank, "worst_of_k", classifier=ctx.classifier, k=int(spec.options.get("worst_k", 8)),
                           min_strength=1.0).with_codes(codes, data)
    found = worst.transform(images, labels, codes=codes.batch(torch.arange(len(data))), seed=seed)
    swap_logits = ctx.logits(found.images.cpu())
    swap_case = ctx.evaluate("swap", found.images.cpu(), labels, logits=swap_logits, originals=images, per_class=False, failure_mask=recon_correct,
                             describe=lambda i: f"appearance of donor #{int(found.donors[i])} ({ctx.class_names[int(bank.labels[found.donors[i]])]})",
                             params={"donors": len(bank), "worst_of": worst.config.k, "strength": 1.0})
    curve, strip = _strength_sweep(ctx, model, bank, codes, data, recon, _strengths(spec), seed)
    cases, curves, strips, rows = [swap_case], [curve], [strip], [["swap", 0.0, 1.0, swap_case.metrics["acc"], min(curve.y), None]]
    all_correct = recon_correct & (swap_logits.argmax(1) == labels)
    directions = _appearance_dirs(spec, model, bank)
    if directions is not None:
        along = AppearanceSwap(model, None, directions=directions).with_codes(codes, data)
        for j in ctx.progress_bar(range(len(directions)), desc="natural"):
            case, curve, strip, predictions = _appearance_direction(ctx, spec, along, j, recon, data, seed)
            all_correct &= predictions == labels
            cases.append(case)
            curves.append(curve)
            strips.append(strip)
            rows.append([directions.names[j], *directions.ranges[j].tolist(), case.metrics["acc"], min(curve.y), None])
    worst_accs = [case.metrics["acc"] for case in cases]
    metrics = {"clean_acc": float((ctx.logits(images).argmax(1) == labels).float().mean()),
               "recon_acc": float(recon_correct.float().mean()), "recon_psnr": _psnr(recon, images),
               "swap_acc": swap_case.metrics["acc"], "mean_worst_acc": sum(worst_accs) / len(worst_accs), "min_worst_acc": min(worst_accs),
               "worst_acc": float(all_correct.float().mean()), "mean_sweep_acc": sum(sum(c.y) / len(c.y) for c in curves) / len(curves),
               "directions": float(len(directions) if directions is not None else 0)}
    method = directions.method if directions is not None else "none"
    details = _details(rows, metrics, f"structure/appearance model: swaps across classes ({len(bank)} donors) and {method}", len(rows) - 1)
    return SuiteResult("natural", metrics=metrics, cases=cases, curves=curves, strips=strips, details=details,
                       params={"n": len(labels), "model": "swap", "donors": len(bank), "method": method, "codes": codes.key})


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).square().flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def _strength_sweep(ctx: AuditContext, model: Any, bank: Any, codes: Any, data: Any, recon: torch.Tensor, strengths: list[float],
                    seed: int) -> tuple[Curve, Strip]:
    """Accuracy with each image's first donor at each strength (0: the reconstructions), as a curve and a strip."""
    from augment.swap import AppearanceSwap

    accs, frames, captions = [], [recon[0]], []
    pred = ctx.logits(recon).argmax(1)
    accs.append(float((pred == data.labels).float().mean()))
    captions.append(f"0: {ctx.class_names[int(pred[0])]}")
    for t in strengths:
        swap = AppearanceSwap(model, bank, "random", strength=t, min_strength=t)
        moved = swap.transform(data.images, data.labels, codes=codes.batch(torch.arange(len(data))), seed=seed).images.cpu()
        pred = ctx.logits(moved).argmax(1)
        accs.append(float((pred == data.labels).float().mean()))
        frames.append(moved[0])
        captions.append(f"{t:g}: {ctx.class_names[int(pred[0])]}")
    strip = Strip(f"swap strength 0 to {strengths[-1]:g} toward another class's appearance (value = accuracy over {len(data)} images)",
                  frames, accs, captions)
    return Curve("swap", [0.0, *strengths], accs, "swap strength", "accuracy"), strip


def _appearance_direction(ctx: AuditContext, spec: Spec, along: Any, j: int, recon: torch.Tensor, data: Any,
                          seed: int) -> tuple[Any, Curve, Strip, torch.Tensor]:
    """Direction ``j``: a sweep over ``fractions`` of its range, and each image's worst magnitude (a case)."""
    from attacks.transform_search import transform_search

    name = along.directions.names[j]
    low, high = along.directions.ranges[j].tolist()
    values = [f * (high if f > 0 else -low) for f in _fractions(spec)]
    accs, frames, captions = [], [], []
    for value in values:
        moved = recon if value == 0 else along.apply(data.images, along.expand({name: value}, len(data))).cpu()
        pred = ctx.logits(moved).argmax(1)
        accs.append(float((pred == data.labels).float().mean()))
        frames.append(moved[0])
        captions.append(f"{value:+.3g}: {ctx.class_names[int(pred[0])]}")
    strip = Strip(f"{name} from {low:+.3g} to {high:+.3g} (value = accuracy over {len(data)} images)", frames, accs, captions)
    found = transform_search(ctx.classifier, data.images, data.labels, along, params=[name], method=str(spec.options.get("attack", "grid")),
                             steps=spec.options.get("steps"), seed=derive_seed(seed, "direction", j) % (1 << 31))
    case = ctx.evaluate(name, found.images.cpu(), data.labels, originals=data.images, describe=found.describe, per_class=False,
                        failure_mask=(found.success & found.clean_correct).cpu(), params={"direction": name, "range": [low, high]})
    case.metrics["acc"] = found.worst_case_accuracy
    return case, Curve(name, values, accs, "magnitude (appearance units)", "accuracy"), strip, found.predictions.cpu()
