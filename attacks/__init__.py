"""Failure finders: pixel attacks, epsilon sweeps and worst-case search over transformation parameters.

Attacks are registered by name (:data:`ATTACKS`) and built from spec strings::

    from attacks import get_attack, epsilon_sweep, transform_search
    result = get_attack("pgd:linf@8/255,steps=20")(classifier, images, labels, seed=0)
    sweep = epsilon_sweep(classifier, images, labels, "apgd:linf", [1/255, 2/255, 4/255, 8/255])
    worst = transform_search(classifier, images, labels, "rotation", method="gradient")

Every attack takes a :class:`robust.models.Classifier` (normalisation lives there), images in
``[0, 1]`` and labels; runs batched on the model's device in eval mode; and is deterministic by seed.
"""
from __future__ import annotations

from attacks.base import AMP_DTYPES, ATTACKS, Attack, AttackResult, AttackRun, AttackWarning, format_eps, get_attack, list_attacks
from robust.losses import LOSSES, per_image_loss
from robust.perturbation import NORMS, project
from attacks.latent import DirectionSearchConfig, LatentAttackResult, direction_attack
from attacks.pgd import APGD, FGSM, PGD, apgd_checkpoints
from attacks.sage import SageConfig, SageResult, failure_regions, random_search, sage_search
from attacks.square import Square, square_fraction
from attacks.sweep import SweepResult, check_eps_grid, epsilon_sweep
from attacks.transform_search import TransformSearchConfig, TransformSearchResult, classifier_objective, transform_search

__all__ = [
    "AMP_DTYPES", "APGD", "ATTACKS", "Attack", "AttackResult", "AttackRun", "AttackWarning", "FGSM", "LOSSES",
    "NORMS", "PGD", "SageConfig", "SageResult", "Square", "SweepResult", "TransformSearchConfig", "TransformSearchResult", "apgd_checkpoints",
    "per_image_loss", "check_eps_grid", "classifier_objective", "epsilon_sweep", "failure_regions", "format_eps", "get_attack",
    "list_attacks", "project", "random_search", "sage_search", "square_fraction", "transform_search",
    "DirectionSearchConfig", "LatentAttackResult", "direction_attack",
]
