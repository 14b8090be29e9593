"""SAGE on the synthetic benchmark: token checks and factor estimates from the factor regressor, and the ground-truth check.

The benchmark knows the truth: every image is ``render(class, factors)``. The factor regressor
(:mod:`robust.gan.metrics`) reads the factors back from a generated image, so a failure can be
re-created *without the generator*: :func:`ground_truth_check` renders fresh images whose named
factors (those a failure mode's description names) take the failure's values, with every other
factor random, and asks whether the model fails on them too.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from attacks.sage import CLASS_GROUP, SageResult, class_indices
from attacks.sage_modes import FactorEstimates, FactorInfo, FailureMode
from robust.errors import InputError
from robust.models import Classifier
from robust.seeding import derive_seed, make_generator
from robust.synthetic import CLASS_NAMES, FACTORS, factor, render, sample_independent

#: How the benchmark's tokens read in words.
PHRASES: dict[str, Any] = {
    "texture": "{} background",
    "fill": "{} fill",
    "mark": lambda t: "no corner mark" if t == "none" else f"{t.replace('_', ' ')} mark",
}
# Factors whose estimates do not compare across images: rotation is only read modulo the shape's
# symmetry, the texture phase and the mark hue are invisible on plain backgrounds and without a mark.
UNDESCRIBED = ("rotation", "texture_phase", "mark_hue")
FACTOR_WORDS = {
    "light_angle": "light angle", "light_strength": "light strength", "obj_hue": "object hue", "bg_hue": "background hue",
    "texture_phase": "texture phase", "pos_x": "horizontal position", "pos_y": "vertical position", "scale": "object size",
    "rotation": "rotation", "mark_hue": "mark hue",
}


class SyntheticJudge:
    """The factor regressor as SAGE's token verifier and factor estimator for a generator of the benchmark.

    Token groups named like a categorical factor (``texture``, ``fill``, ``mark``) are verified;
    the generator's token names are matched to the factor's categories by name.
    """

    def __init__(self, generator: Any, regressor: Any = None, *, device: torch.device | str | None = None,
                 verify: Sequence[str] | None = None):
        if regressor is None:
            from robust.gan.metrics import load_factor_regressor

            regressor = load_factor_regressor(device=device)
        self.regressor = regressor
        self.groups = [(g, list(t)) for g, t in generator.conditioning.groups]
        self.lookup: dict[str, torch.Tensor] = {}
        self.columns: dict[str, torch.Tensor] = {}
        for group, tokens in self.groups:
            if group == CLASS_GROUP or (verify is not None and group not in verify):
                continue
            try:
                f = factor(group)
            except InputError:
                continue
            if f.is_categorical and all(t in f.categories for t in tokens):
                # factor category index -> generator token index (-1: a category the generator has no token for)
                self.lookup[group] = torch.tensor([tokens.index(c) if c in tokens else -1 for c in f.categories])
                # generator token index -> factor category index
                self.columns[group] = torch.tensor([f.categories.index(t) for t in tokens])
        self.info = [FactorInfo(f.name, f.low, f.high, f.circular, FACTOR_WORDS.get(f.name, f.name))
                     for f in FACTORS if not f.is_categorical and f.name not in UNDESCRIBED]

    def estimate(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every factor (categoricals as category indices) and ``class`` as the regressor reads them (CPU)."""
        return self.regressor.predict(images01)

    def token_verifier(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tokens the regressor sees, in the generator's token indices (for :func:`attacks.sage.sage_search`)."""
        seen = self.estimate(images01)
        return {group: lookup[seen[group].long()].to(images01.device) for group, lookup in self.lookup.items()}

    def token_log_probs(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        """Log-probabilities of the generator's tokens per verified group, differentiable in the images."""
        device = next(self.regressor.parameters()).device
        _, raw = self.regressor(images01.to(device).float())
        out = {}
        for f, col, width in self.regressor.layout:
            if f.name in self.lookup:
                log_probs = raw[:, col: col + width].float().log_softmax(1)
                out[f.name] = log_probs[:, self.columns[f.name].to(device)].to(images01.device)
        return out

    def factor_estimates(self, result: SageResult) -> FactorEstimates:
        """Continuous factors of the failures' images and of the search's stored starting images."""
        if any(f.image is None for f in result.failures):
            raise InputError("result", "failures with images (SageConfig(keep_images=True))", "failures without images")
        fail = self.estimate(torch.stack([f.image for f in result.failures])) if result.failures else {}
        base = self.estimate(result.baseline_images) if result.baseline_images is not None and len(result.baseline_images) else {}
        names = [i.name for i in self.info]
        for i, f in enumerate(result.failures):
            f.factors = {k: float(fail[k][i]) for k in names}
        return FactorEstimates(self.info, {k: fail[k] for k in names if k in fail}, {k: base[k] for k in names if k in base})


@dataclass
class GroundTruth:
    """Per failure: the model's error on renders with its named factors fixed (``named_error``) and on its full twin."""

    confirmed: list[bool]
    named_error: list[float]
    twin_error: list[float]
    named_factors: list[list[str]]
    per_mode: dict[str, float] = field(default_factory=dict)  # mode name -> share of its failures confirmed
    level: float = 0.5
    renders: int = 0

    @property
    def confirmed_rate(self) -> float:
        return sum(self.confirmed) / len(self.confirmed) if self.confirmed else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"confirmed_rate": self.confirmed_rate, "level": self.level, "renders": self.renders, "per_mode": dict(self.per_mode),
                "confirmed": list(self.confirmed), "named_error": list(self.named_error), "twin_error": list(self.twin_error),
                "named_factors": [list(n) for n in self.named_factors]}


def _category(group: str, token: str) -> int:
    return factor(group).categories.index(token)


@torch.no_grad()
def ground_truth_check(
    model: Classifier,
    result: SageResult,
    modes: Sequence[FailureMode],
    *,
    size: int = 32,
    n: int = 16,
    level: float = 0.5,
    seed: int = 0,
) -> GroundTruth:
    """Re-render each failure's *named* factors with the benchmark's renderer and check the model still fails.

    For failure ``i`` of a mode, the named factors are the mode's (:meth:`FailureMode.named_factors`)
    plus the class; they take the failure's values (prompt tokens; continuous factors as the
    regressor estimated them, :meth:`SyntheticJudge.factor_estimates` must have run), every other
    factor is drawn at random, ``n`` renders per failure. Confirmed when the model's error rate on
    them is at least ``level``. ``twin_error`` is the error on renders with *every* estimated
    factor fixed (only the texture phase and mark hue left random when the regressor cannot see them).
    """
    mode_of = {i: m for m in modes for i in m.indices}
    names = [g for g, _ in result.groups]
    class_tokens = result.groups[names.index(CLASS_GROUP)][1]
    if not all(t in CLASS_NAMES for t in class_tokens):
        raise InputError("generator class tokens", "the synthetic benchmark's class names", class_tokens[:10])
    index = class_indices(model, class_tokens)
    confirmed, named_error, twin_error, named_lists = [], [], [], []
    renders = 0
    for i, f in enumerate(result.failures):
        mode = mode_of.get(i)
        named = [k for k in (mode.named_factors() if mode else []) if k != CLASS_GROUP]
        cls = CLASS_NAMES.index(f.label_name)
        errors = []
        for which, fixed in (("named", named), ("twin", [x.name for x in FACTORS])):
            gen = make_generator(derive_seed(seed, "sage-ground-truth", which, i))
            factors = sample_independent(n, gen)
            for key in fixed:
                value = _value(f, key)
                if value is None:
                    continue
                factors[key] = torch.full_like(factors[key], value)
            classes = torch.full((n,), cls, dtype=torch.long)
            images = render(classes, factors, size).to(model.device)
            predicted = model.predict(images).cpu()
            errors.append(float((predicted != index[class_tokens.index(f.label_name)]).float().mean()))
            renders += n
        named_error.append(errors[0])
        twin_error.append(errors[1])
        confirmed.append(errors[0] >= level)
        named_lists.append(named)
    per_mode = {}
    for m in modes:
        if m.indices:
            per_mode[m.name] = sum(confirmed[i] for i in m.indices) / len(m.indices)
    return GroundTruth(confirmed, named_error, twin_error, named_lists, per_mode, float(level), renders)


def _value(failure: Any, key: str) -> float | int | None:
    """A failure's value of a factor: its prompt token for categoricals, the regressor's estimate otherwise."""
    f = factor(key)
    if f.is_categorical:
        token = failure.tokens.get(key)
        return _category(key, token) if token is not None and token in f.categories else None
    return failure.factors.get(key)


def shortcut_hits(modes: Sequence[FailureMode], shortcuts: Sequence[str], top: int = 5) -> dict[str, Any]:
    """Which of the classifier's shortcut factors the ``top`` largest modes name (the bar's third check)."""
    named = [m.named_factors() for m in list(modes)[:top]]
    flat = {k for names in named for k in names}
    return {"top": top, "shortcuts": list(shortcuts), "named_in_top": sorted(flat), "hit": [s for s in shortcuts if s in flat],
            "modes_naming_a_shortcut": sum(any(s in names for s in shortcuts) for names in named)}

