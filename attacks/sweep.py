"""Epsilon sweeps: robust accuracy per budget and each image's smallest breaking budget on a grid.

The budgets are attacked from the largest down: the largest attacks every image the model gets
right, and each smaller budget attacks only the images the next larger one broke (its ball lies
inside the larger one). An image that resists costs one attack in all, a broken one one attack per
budget down to the first that keeps it, so a sweep costs little more than its largest budget alone,
and the largest budget's robust accuracy is exactly what the attack alone reports there.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attacks.base import Attack, check_classifier, check_eps, format_eps, get_attack
from robust import noise
from robust.errors import InputError
from robust.models import Classifier
from robust.results import Curve
from robust.validation import check_labels


@dataclass
class SweepResult:
    """Robust accuracy at each budget, and per image the smallest budget on the grid that broke it.

    ``min_eps`` is 0 for images the model gets wrong unattacked and ``inf`` for images never broken;
    ``adversarial`` holds each broken image's example at its ``min_eps`` (the clean image otherwise);
    ``attack`` is the spec without a budget (``pgd:linf,steps=20``). ``queries`` counts every model
    evaluation of the sweep, ``queries_per_eps`` those made at each budget of ``eps`` (at 0: the
    clean evaluation).
    """

    eps: list[float]
    robust_accuracy: list[float]
    min_eps: torch.Tensor
    clean_accuracy: float
    adversarial: torch.Tensor
    predictions: torch.Tensor
    labels: torch.Tensor
    attack: str
    norm: str
    queries: int
    queries_per_eps: list[int]
    seed: int = 0

    @property
    def success(self) -> torch.Tensor:
        """Images broken at some budget of the grid (or misclassified clean)."""
        return torch.isfinite(self.min_eps)

    def failures(self) -> torch.Tensor:
        """Indices of images the model had right and an attack on the grid broke."""
        return (torch.isfinite(self.min_eps) & (self.min_eps > 0)).nonzero().squeeze(1)

    def to_curve(self, name: str | None = None) -> Curve:
        return Curve(name or self.attack, list(self.eps), list(self.robust_accuracy), x_label=f"eps ({self.norm})",
                     y_label="robust accuracy")

    def summary(self) -> dict[str, Any]:
        broken = self.min_eps[torch.isfinite(self.min_eps) & (self.min_eps > 0)]
        return {
            "attack": self.attack,
            "norm": self.norm,
            "n": int(self.labels.shape[0]),
            "clean_accuracy": self.clean_accuracy,
            "eps": list(self.eps),
            "eps_text": [format_eps(e) for e in self.eps],
            "robust_accuracy": list(self.robust_accuracy),
            "median_min_eps": float(broken.median()) if broken.numel() else None,
            "queries": int(self.queries),
            "queries_per_eps": [int(q) for q in self.queries_per_eps],
            "seed": self.seed,
        }


def check_eps_grid(eps_grid: Sequence[Any], norm: str, dims: int | None = None) -> list[float]:
    """Budgets as sorted unique floats; 0 is allowed (it is the clean accuracy)."""
    if isinstance(eps_grid, (str, bytes)) or not isinstance(eps_grid, Sequence) or len(eps_grid) == 0:
        raise InputError("eps_grid", "a non-empty list of budgets such as [1/255, 2/255, 4/255, 8/255]", eps_grid)
    values = []
    for e in eps_grid:
        try:
            is_zero = float(e) == 0.0
        except (TypeError, ValueError):
            raise InputError("eps_grid", "numbers", e) from None
        values.append(0.0 if is_zero else check_eps(e, norm, "eps_grid", dims=dims))
    return sorted(set(values))


def epsilon_sweep(classifier: Classifier, images: torch.Tensor, labels: Any, attack: str | Attack, eps_grid: Sequence[float],
                  *, seed: int = 0, targets: Any = None, progress: Callable[[Any], Any] | None = None,
                  sample_ids: Any = None, **overrides: Any) -> SweepResult:
    """Run ``attack`` (an :class:`Attack` or spec string; ``overrides`` set its options) at every budget, the largest first.

    ``progress`` wraps the budget iterator (e.g. a tqdm factory) for long sweeps. ``sample_ids``
    (default ``0..N-1``) key each image's random stream as in :meth:`Attack.__call__`, so a shard of
    a set swept with its images' positions in the set gets the draws the whole set would.
    """
    clf = check_classifier(classifier)
    base = get_attack(attack, **overrides)
    images = clf.check_input(images)
    n = images.shape[0]
    labels = check_labels(labels, n, clf.num_classes).cpu()
    ids = noise.check_seeds(sample_ids, n, "sample_ids").cpu()
    grid = check_eps_grid(eps_grid, base.norm, dims=images[0].numel())
    if targets is not None:
        targets = check_labels(targets, n, clf.num_classes, "targets").cpu()
    clean = clf.predict(images).cpu()
    predictions = clean.clone()
    adversarial = images.detach().clone()
    correct = clean == labels if targets is None else clean != targets
    min_eps = torch.where(correct, math.inf, 0.0)
    queries = {0.0: n}
    attacked = correct.nonzero().squeeze(1)  # the images the next budget down attacks
    budgets = sorted((e for e in grid if e > 0), reverse=True)
    for eps in progress(budgets) if progress is not None else budgets:
        queries[eps] = 0
        if not attacked.numel():
            continue
        sub = attacked.to(images.device)
        result = base.with_eps(eps)(clf, images[sub], labels[attacked], seed=seed, sample_ids=ids[attacked],
                                    targets=targets[attacked] if targets is not None else None)
        queries[eps] = result.queries
        broke = result.success.cpu()
        attacked = attacked[broke]
        min_eps[attacked] = eps
        adversarial[attacked.to(images.device)] = result.adversarial[broke.to(result.adversarial.device)].to(adversarial.device)
        predictions[attacked] = result.predictions.cpu()[broke]
    # At budget e an image has its adversarial prediction when a budget of at most e broke it, else its clean one.
    broken = min_eps > 0
    robust = [float((torch.where(broken & (min_eps <= e), predictions, clean) == labels).float().mean()) for e in grid]
    clean_accuracy = float((clean == labels).float().mean())
    return SweepResult(eps=grid, robust_accuracy=robust, min_eps=min_eps, clean_accuracy=clean_accuracy,
                       adversarial=adversarial, predictions=predictions, labels=labels, attack=re.sub(r"@[^,]*", "", base.spec),
                       norm=base.norm, queries=sum(queries.values()), queries_per_eps=[queries.get(e, 0) for e in grid], seed=seed)
