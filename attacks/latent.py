"""Worst-case magnitudes along a generator's latent directions for a classifier (:func:`direction_attack`):
natural failures with their magnitudes, found by the core search (:mod:`robust.transforms.search`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attacks.base import PerImageOutcome, check_classifier
from attacks.transform_search import classifier_objective
from robust import noise
from robust.errors import GradientUnavailableError, InputError
from robust.gan.directions import Directions
from robust.gan.latent import check_expand_res, check_ws, synthesize
from robust.gan.networks import Generator
from robust.models import Classifier
from robust.seeding import derive_seed
from robust.transforms.search import SearchConfig, Worst, search_parameters
from robust.validation import check_labels, check_number, with_options


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


@dataclass(frozen=True)
class DirectionSearchConfig(SearchConfig):
    """A latent-direction search: the core search's ``method``, ``steps``, ``k`` and ``step_size``
    (:class:`robust.transforms.search.SearchConfig`), plus ``which`` (direction indices; default the
    kept ones), ``joint`` (search the chosen directions together, grid: every combination; else each
    alone and each image keeps its worst), ``seed``, ``loss`` (the attack loss), ``batch_size``
    (default the classifier's) and ``noise_mode`` (the generator's)."""

    which: Sequence[int] | None = None
    joint: bool = False
    seed: int = 0
    loss: str = "margin"
    batch_size: int | None = None
    noise_mode: str = "const"


@dataclass
class _Codes:
    """W+ codes of searched images on the generator's device, their expansion residuals, and how to render them."""

    G: Generator
    ws: torch.Tensor
    residual: torch.Tensor | None
    expand_res: int | None
    noise_mode: str

    def chunk(self, rows: slice) -> _Codes:
        device = self.G.device
        r = self.residual[rows].to(device, torch.float32) if self.residual is not None else None
        return _Codes(self.G, self.ws[rows].to(device, torch.float32), r, self.expand_res, self.noise_mode)

    def render(self, directions: Directions | None = None, mags: torch.Tensor | None = None) -> torch.Tensor:
        """The codes moved by ``mags [N, K]`` along ``directions`` (unmoved without them), rendered."""
        ws = self.ws if directions is None else directions.apply(self.ws, mags)
        return synthesize(self.G, ws, self.residual, self.expand_res, noise_mode=self.noise_mode)


def direction_attack(classifier: Classifier, G: Generator, ws: torch.Tensor, labels: Any, directions: Directions,
                     config: DirectionSearchConfig | None = None, *, residual: torch.Tensor | None = None,
                     expand_res: int | None = None, sample_ids: torch.Tensor | None = None, **options: Any) -> LatentAttackResult:
    """Worst-case magnitudes along ``directions`` for codes ``ws`` (see :class:`DirectionSearchConfig`).

    ``config`` or its fields as ``options`` (``which``, ``joint``, ``method``, ``steps``, ``k``,
    ``seed``, ``loss``, ``step_size``, ``batch_size``, ``noise_mode``) set the search.
    ``residual``/``expand_res``: the codes' expansion (added back after every edit). ``sample_ids``
    (default ``0..N-1``) key each image's draws. Images and results are on the classifier's device;
    results come back on ``ws``'s device.
    """
    config = with_options(config if config is not None else DirectionSearchConfig(), options)
    clf = check_classifier(classifier)
    if config.method == "gradient" and not clf.has_gradients:
        raise GradientUnavailableError(f"{clf.name} has no gradients (an ONNX model): use method='grid' or 'random'")
    if not isinstance(directions, Directions):
        raise InputError("directions", "a robust.gan.directions.Directions", type(directions).__name__)
    ws = check_ws(G, ws)
    n = ws.shape[0]
    labels = check_labels(labels, n, clf.num_classes)
    seed = check_number(config.seed, "seed", low=0, integer=True)
    ids = noise.check_seeds(sample_ids, n, "sample_ids").cpu()
    if residual is not None:
        expand_res = check_expand_res(G, expand_res)
        if expand_res is None or residual.shape[0] != n:
            raise InputError("residual", f"{n} residuals with their expand_res", (tuple(residual.shape), expand_res))
    which = _chosen(directions, config.which)
    codes = _Codes(G, ws, residual, expand_res, config.noise_mode)
    dirs = directions.to(G.device)
    groups = [which] if config.joint else [[i] for i in which]
    batch = config.batch_size or clf.batch_size
    home = ws.device
    pieces: dict[str, list[torch.Tensor]] = {}
    evaluations = 0
    for start in range(0, n, batch):
        rows = slice(start, start + batch)
        y = labels[rows].to(clf.device)
        worst, clean, searched = _attack_chunk(clf, codes.chunk(rows), dirs, y, ids[rows].to(G.device), groups, seed, config)
        evaluations += searched + y.shape[0]
        for key, value in (("mags", worst["mags"]), ("images", worst["images"]), ("loss", worst.loss), ("success", worst["success"]),
                           ("pred", worst["pred"]), ("clean", clean)):
            pieces.setdefault(key, []).append(value.to(home))
    cat = {key: torch.cat(value) for key, value in pieces.items()}
    return LatentAttackResult(magnitudes=cat["mags"], images=cat["images"], success=cat["success"], loss=cat["loss"],
                              predictions=cat["pred"], clean_correct=cat["clean"], labels=labels.to(home), directions=directions,
                              searched=which, method=config.method, joint=bool(config.joint), evaluations=evaluations, seed=seed)


def _chosen(directions: Directions, which: Sequence[int] | None) -> list[int]:
    if which is None:
        which = directions.kept.nonzero().squeeze(1).tolist() if directions.kept is not None else list(range(len(directions)))
    chosen = [int(i) for i in which]
    if not chosen or any(not 0 <= i < len(directions) for i in chosen):
        raise InputError("which", f"direction indices in [0, {len(directions) - 1}]", chosen)
    return chosen


def _attack_chunk(clf: Classifier, codes: _Codes, dirs: Directions, y: torch.Tensor, ids: torch.Tensor, groups: list[list[int]],
                  seed: int, config: DirectionSearchConfig) -> tuple[Worst, torch.Tensor, int]:
    """One batch: each image's worst over the groups of directions (ties keep the earlier group), whether
    its unedited reconstruction was classified right, and how many evaluations the searches made."""
    device = codes.G.device
    m = y.shape[0]
    worst = Worst()
    offered = 0
    with classifier_objective(clf, y, loss=config.loss) as objective:
        with torch.no_grad():
            _, _, clean_pred = objective(codes.render().to(clf.device))
        for group in groups:
            names = [f"d{i}" for i in group]

            def render(params: dict[str, torch.Tensor], group: list[int] = group) -> torch.Tensor:
                values = torch.stack([params[f"d{i}"] for i in group], 1).to(device)
                mags = torch.zeros(m, len(dirs), device=device).index_copy(1, torch.tensor(group, device=device), values)
                return codes.render(dirs, mags).to(clf.device)

            bounds = {name: (float(dirs.ranges[i, 0]), float(dirs.ranges[i, 1])) for name, i in zip(names, group)}
            seeds = ids + derive_seed(seed, "latent_attack", *group) % (1 << 40)
            outcome = search_parameters(render, bounds, objective, m, config, seeds=seeds, identity={name: 0.0 for name in names},
                                        device=device)
            offered += outcome.evaluations
            mags = torch.zeros(m, len(dirs), device=device)
            for name, i in zip(names, group):
                mags[:, i] = outcome.params[name].to(device)
            worst.offer(outcome.loss.to(device), {"mags": mags, "images": outcome.images, "success": outcome.success,
                                                  "pred": outcome.predictions})
    return worst, clean_pred == y, offered
