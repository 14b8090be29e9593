"""Edit reach: how far a natural transform moves each ground-truth factor of real images, measured
against a fresh random draw of that factor, with the oracle's class-kept rate and an oracle-feature
Frechet distance. The synthetic benchmark's oracle and factor regressor are the instruments only.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from robust.data import ImageSet
from robust.errors import InputError
from robust.gan.metrics import (
    HIDDEN_WHEN,
    SYMMETRY,
    FactorRegressor,
    classifier_features,
    frechet_distance,
    load_factor_regressor,
    load_oracle,
)
from robust.models import Classifier
from robust.seeding import derive_seed, make_generator
from robust.synthetic import CLASS_NAMES, FACTORS, Factor, SyntheticBenchmark, render, sample_independent
from robust.validation import check_images

Transform = Callable[[torch.Tensor], torch.Tensor]
TARGET_FACTORS = ("obj_hue", "texture")
TARGET_FRACTION = 0.5
TARGET_CLASS_KEPT = 0.9


@dataclass(frozen=True)
class ReachConfig:
    """Held-out images: ``n`` renders of ``split`` from benchmark seed ``seed`` (not the training seed 0);
    realism reference: ``n`` renders of the same split from ``reference_seed``; ``fresh_seed`` keys the
    fresh draws."""

    n: int = 512
    split: str = "train"
    seed: int = 1
    reference_seed: int = 2
    fresh_seed: int = 0
    size: int = 32


@dataclass
class ReachSetup:
    """What every measurement shares: held-out data, the instruments, and what they read on real renders."""

    data: ImageSet
    oracle: Classifier
    regressor: FactorRegressor
    predicted: dict[str, torch.Tensor]
    oracle_classes: torch.Tensor
    fresh: dict[str, float]
    reference_features: torch.Tensor
    fd_real: float


@dataclass
class EditReach:
    """One transform's reach on the held-out images.

    ``fraction[f] = moved[f] / fresh[f]``: the mean movement the transform causes in factor ``f``
    over what a fresh random draw of ``f`` causes. ``class_kept``: of the images the oracle
    recognises, the share it still recognises after the transform; ``accuracy``: the oracle's
    accuracy on the transformed images. ``fd``: Frechet distance of the transformed images to real
    renders of the split in the oracle's feature space (``fd_real``: the held-out originals' own).
    """

    name: str
    n: int
    fraction: dict[str, float]
    moved: dict[str, float]
    fresh: dict[str, float]
    class_kept: float
    accuracy: float
    fd: float
    fd_real: float
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def meets_target(self, factors: Sequence[str] = TARGET_FACTORS, fraction: float = TARGET_FRACTION,
                     class_kept: float = TARGET_CLASS_KEPT) -> bool:
        """Whether every factor in ``factors`` moves by at least ``fraction`` of a fresh draw with the class kept."""
        return all(self.fraction[f] >= fraction for f in factors) and self.class_kept >= class_kept

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def factor_distance(f: Factor, a: torch.Tensor, b: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Per-image distance between two readings of factor ``f`` (NaN where the image does not show it).

    Categorical: 1 when the category differs. Circular: the wrapped distance (the rotation modulo the
    shape's symmetry, NaN for rotation-invariant shapes). Other continuous factors: the absolute
    difference, in the factor's own units.
    """
    if f.is_categorical:
        return (a.long() != b.long()).float()
    diff = (a - b).float()
    if not f.circular:
        return diff.abs()
    period = torch.full_like(diff, f.high - f.low)
    if f.name == "rotation":
        order = torch.tensor([SYMMETRY[c] for c in CLASS_NAMES])[classes.cpu()].float()
        period = torch.where(order > 0, period / order.clamp_min(1), torch.full_like(period, float("nan")))
    return (torch.remainder(diff + period / 2, period) - period / 2).abs()


def mean_movement(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], classes: torch.Tensor) -> dict[str, float]:
    """Mean per-factor distance between two regressor readings; a factor that is only visible under a
    condition (mark hue, texture phase) counts the images that show it in both readings."""
    out: dict[str, float] = {}
    for f in FACTORS:
        d = factor_distance(f, before[f.name], after[f.name], classes)
        if f.name in HIDDEN_WHEN:
            cond, hidden = HIDDEN_WHEN[f.name]
            shown = (before[cond] != hidden) & (after[cond] != hidden)
            d = torch.where(shown, d, torch.full_like(d, float("nan")))
        out[f.name] = float(d.nanmean()) if bool((~torch.isnan(d)).any()) else float("nan")
    return out


def fresh_draw_movement(data: ImageSet, regressor: FactorRegressor, seed: int = 0,
                        predicted: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Per factor, the movement the regressor reads when that one factor is redrawn from its
    independent distribution (uniform over its range or categories) and the image re-rendered."""
    if not data.factors:
        raise InputError("data", "images with ground-truth factors (the synthetic benchmark)", "no factors")
    predicted = predicted if predicted is not None else regressor.predict(data.images)
    out: dict[str, float] = {}
    n = len(data)
    for f in FACTORS:
        redrawn = sample_independent(n, make_generator(derive_seed(seed, "reach-fresh", f.name)))[f.name]
        factors = {**data.factors, f.name: redrawn}
        after = regressor.predict(render(data.labels, factors, data.size[0]))
        out[f.name] = mean_movement(predicted, after, data.labels)[f.name]
    return out


def reach_setup(config: ReachConfig = ReachConfig(), *, data: ImageSet | None = None, reference: torch.Tensor | None = None,
                oracle: Classifier | None = None, regressor: FactorRegressor | None = None) -> ReachSetup:
    """Held-out data (default: ``config.n`` renders of ``config.split``, benchmark seed ``config.seed``),
    the shipped instruments, the fresh-draw movements and the realism reference."""
    if data is None:
        data = SyntheticBenchmark(size=config.size, seed=config.seed).split(config.split, config.n)
    if not data.factors:
        raise InputError("data", "images with ground-truth factors (the synthetic benchmark)", f"{data.name} without factors")
    if reference is None:
        reference = SyntheticBenchmark(size=config.size, seed=config.reference_seed).split(config.split, config.n).images
    oracle = oracle or load_oracle()
    regressor = regressor or load_factor_regressor()
    predicted = regressor.predict(data.images)
    reference_features = classifier_features(oracle, check_images(reference, "reference"))
    fd_real = frechet_distance(classifier_features(oracle, data.images), reference_features)
    return ReachSetup(data, oracle, regressor, predicted, oracle.predict(data.images).cpu(),
                      fresh_draw_movement(data, regressor, config.fresh_seed, predicted), reference_features, fd_real)


def edit_reach(transform: Transform, setup: ReachSetup | None = None, *, name: str = "transform",
               settings: Mapping[str, Any] | None = None) -> EditReach:
    """Measure ``transform`` (``images [N, 3, H, W] in [0, 1] -> images``, called once on all held-out
    images) with the factor regressor (movements), the oracle (class kept) and oracle features (FD)."""
    if not callable(transform):
        raise InputError("transform", "a callable images -> images", type(transform).__name__)
    setup = setup or reach_setup()
    data = setup.data
    began = time.perf_counter()
    with torch.no_grad():
        out = transform(data.images.clone())
    out = check_images(out, "transformed images", channels=data.channels, size=data.size).detach().float().cpu()
    if out.shape[0] != len(data):
        raise InputError("transformed images", f"{len(data)} images (one per input)", out.shape[0])
    seconds = time.perf_counter() - began
    moved = mean_movement(setup.predicted, setup.regressor.predict(out), data.labels)
    fraction = {f: (moved[f] / setup.fresh[f] if setup.fresh[f] > 0 else float("nan")) for f in moved}
    after = setup.oracle.predict(out).cpu()
    recognised = setup.oracle_classes == data.labels
    kept = float((after[recognised] == data.labels[recognised]).float().mean()) if bool(recognised.any()) else float("nan")
    fd = frechet_distance(classifier_features(setup.oracle, out), setup.reference_features)
    return EditReach(name, len(data), fraction, moved, dict(setup.fresh), kept, float((after == data.labels).float().mean()),
                     fd, setup.fd_real, seconds, dict(settings or {}))


def reach_table(results: Sequence[EditReach], factors: Sequence[str] | None = None) -> str:
    """A Markdown table: one row per transform, the fraction of a fresh draw per factor, class kept, FD."""
    names = list(factors) if factors is not None else [f.name for f in FACTORS]
    head = ["transform", *names, "class kept", "oracle acc", "FD (real)", f"target ({'+'.join(TARGET_FACTORS)})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 2) + "---|"]
    for r in results:
        cells = [r.name, *(f"{r.fraction[f]:.2f}" for f in names), f"{r.class_kept:.3f}", f"{r.accuracy:.3f}",
                 f"{r.fd:.2f} ({r.fd_real:.2f})", "met" if r.meets_target() else "not met"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
