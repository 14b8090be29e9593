"""Worst-case search along a generator's latent directions: natural failures with their magnitudes.

:func:`direction_attack` takes images' W+ codes (cached or inverted, :mod:`robust.gan.codes_cache`),
kept directions (:mod:`robust.gan.directions`) and a classifier, and finds for each image the
magnitudes within the directions' realistic ranges that maximise the classifier's loss: by grid,
worst-of-k random draws or signed-gradient ascent (the engine is
:func:`attacks.transform_search.search_parameters`, with the generator as the renderer). The
directions are searched one at a time (each image keeps its worst direction) or jointly.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attacks.base import PerImageOutcome, check_classifier, check_sample_ids
from attacks.transform_search import METHODS, classifier_objective, search_parameters
from robust.errors import GradientUnavailableError, InputError
from robust.gan.directions import Directions
from robust.gan.latent import check_expand_res, check_ws, synthesize
from robust.gan.networks import Generator
from robust.models import Classifier
from robust.seeding import derive_seed
from robust.validation import check_choice, check_labels, check_number


@dataclass
class LatentAttackResult(PerImageOutcome):
    """Per image: the worst magnitudes ``[N, K]`` (over all directions of ``directions``; zero where not
    searched or not chosen), the re-rendered images, whether they fool the model, the loss, the
    predictions, and whether the unedited reconstruction was classified correctly."""

    magnitudes: torch.Tensor
    images: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    predictions: torch.Tensor
    clean_correct: torch.Tensor
    labels: torch.Tensor
    directions: Directions
    searched: list[int]
    method: str
    joint: bool
    evaluations: int
    seed: int = 0

    @property
    def worst_case_accuracy(self) -> float:
        """Accuracy when every image meets its worst magnitudes (clean: the unedited reconstructions)."""
        return self.accuracy_after()

    def describe(self, index: int) -> str:
        """``"sefa_3 at +1.25"`` (every non-zero magnitude of one image)."""
        row = self.magnitudes[index]
        parts = [self.directions.describe(i, float(row[i])) for i in row.nonzero().squeeze(1).tolist()]
        return ", ".join(parts) or "unedited"

    def params(self, index: int) -> dict[str, float]:
        row = self.magnitudes[index]
        return {self.directions.names[i]: float(row[i]) for i in row.nonzero().squeeze(1).tolist()}

    def summary(self) -> dict[str, Any]:
        return {"directions": [self.directions.names[i] for i in self.searched], "method": self.method, "joint": self.joint,
                "n": int(self.labels.shape[0]), "clean_accuracy": self.clean_accuracy,
                "worst_case_accuracy": self.worst_case_accuracy, "failures": int(self.failures().numel()),
                "evaluations": int(self.evaluations), "seed": self.seed}


def direction_attack(classifier: Classifier, G: Generator, ws: torch.Tensor, labels: Any, directions: Directions, *,
                     residual: torch.Tensor | None = None, expand_res: int | None = None, which: Sequence[int] | None = None,
                     joint: bool = False, method: str = "grid", steps: int | None = None, k: int | None = None, seed: int = 0,
                     loss: str = "margin", step_size: float = 0.1, batch_size: int | None = None,
                     sample_ids: torch.Tensor | None = None, noise_mode: str = "const") -> LatentAttackResult:
    """Worst-case magnitudes along ``directions`` (indices ``which``; default: the kept ones) for codes ``ws``.

    ``residual``/``expand_res``: the codes' expansion (added back after every edit). ``joint``
    searches all chosen directions together (grid: ``steps`` values per direction, every
    combination); otherwise each direction alone and each image keeps its worst. ``method``,
    ``steps``, ``k``, ``step_size``: see :func:`attacks.transform_search.search_parameters`.
    Images and results are on the classifier's device; results come back on ``ws``'s device.
    """
    clf = check_classifier(classifier)
    check_choice(method, "method", METHODS)
    if method == "gradient" and not clf.has_gradients:
        raise GradientUnavailableError(f"{clf.name} has no gradients (an ONNX model): use method='grid' or 'random'")
    if not isinstance(directions, Directions):
        raise InputError("directions", "a robust.gan.directions.Directions", type(directions).__name__)
    ws = check_ws(G, ws)
    n = ws.shape[0]
    labels = check_labels(labels, n, clf.num_classes)
    seed = check_number(seed, "seed", low=0, integer=True)
    ids = check_sample_ids(sample_ids, n)
    if residual is not None:
        expand_res = check_expand_res(G, expand_res)
        if expand_res is None or residual.shape[0] != n:
            raise InputError("residual", f"{n} residuals with their expand_res", (tuple(residual.shape), expand_res))
    if which is None:
        which = directions.kept.nonzero().squeeze(1).tolist() if directions.kept is not None else list(range(len(directions)))
    which = [int(i) for i in which]
    if not which or any(not 0 <= i < len(directions) for i in which):
        raise InputError("which", f"direction indices in [0, {len(directions) - 1}]", which)
    device = G.device
    dirs = directions.to(device)
    groups = [which] if joint else [[i] for i in which]
    batch = batch_size or clf.batch_size
    home = ws.device
    pieces: dict[str, list[torch.Tensor]] = {}
    evaluations = 0
    for start in range(0, n, batch):
        w = ws[start: start + batch].to(device, torch.float32)
        m = w.shape[0]
        r = residual[start: start + batch].to(device, torch.float32) if residual is not None else None
        y = labels[start: start + batch].to(clf.device)
        chunk_ids = ids[start: start + batch].to(device)

        with classifier_objective(clf, y, loss=loss) as objective:
            with torch.no_grad():
                clean = synthesize(G, w, r, expand_res, noise_mode=noise_mode)
                _, _, clean_pred = objective(clean.to(clf.device))
            best: dict[str, torch.Tensor] = {}
            for group in groups:
                names = [f"d{i}" for i in group]

                def render(params: dict[str, torch.Tensor], w: torch.Tensor = w, r: torch.Tensor | None = r,
                           group: list[int] = group) -> torch.Tensor:
                    values = torch.stack([params[f"d{i}"] for i in group], 1).to(device)
                    mags = torch.zeros(w.shape[0], len(dirs), device=device).index_copy(1, torch.tensor(group, device=device), values)
                    return synthesize(G, dirs.apply(w, mags), r, expand_res, noise_mode=noise_mode).to(clf.device)

                bounds = {name: (float(dirs.ranges[i, 0]), float(dirs.ranges[i, 1])) for name, i in zip(names, group)}
                seeds = chunk_ids + derive_seed(seed, "latent_attack", *group) % (1 << 40)
                outcome = search_parameters(render, bounds, objective, m, method=method, steps=steps, k=k, seeds=seeds,
                                            identity={name: 0.0 for name in names}, step_size=step_size, device=device)
                evaluations += outcome.evaluations
                mags = torch.zeros(m, len(dirs), device=device)
                for name, i in zip(names, group):
                    mags[:, i] = outcome.params[name].to(device)
                loss_now = outcome.loss.to(device)
                if not best:
                    best = {"mags": mags, "images": outcome.images, "loss": loss_now, "success": outcome.success,
                            "pred": outcome.predictions}
                    continue
                better = loss_now > best["loss"]
                best["mags"] = torch.where(better[:, None], mags, best["mags"])
                best["images"] = torch.where(better.to(outcome.images.device)[:, None, None, None], outcome.images, best["images"])
                best["loss"] = torch.where(better, loss_now, best["loss"])
                best["success"] = torch.where(better.to(outcome.success.device), outcome.success, best["success"])
                best["pred"] = torch.where(better.to(outcome.predictions.device), outcome.predictions, best["pred"])
        evaluations += m
        for key, value in (("mags", best["mags"]), ("images", best["images"]), ("loss", best["loss"]), ("success", best["success"]),
                           ("pred", best["pred"]), ("clean", clean_pred == y)):
            pieces.setdefault(key, []).append(value.to(home))
    cat = {key: torch.cat(value) for key, value in pieces.items()}
    return LatentAttackResult(magnitudes=cat["mags"], images=cat["images"], success=cat["success"], loss=cat["loss"],
                              predictions=cat["pred"], clean_correct=cat["clean"], labels=labels.to(home), directions=directions,
                              searched=which, method=method, joint=bool(joint), evaluations=evaluations, seed=seed)
