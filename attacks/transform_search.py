"""Worst-case parameters of a transform for a classifier (:func:`transform_search`), on the core search
(:mod:`robust.transforms.search`), and the classifier objective that search and latent attacks maximise.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from attacks.base import AttackRun, PerImageOutcome, per_image_loss, check_classifier, hit
from robust import noise
from robust.errors import GradientUnavailableError, InputError
from robust.models import Classifier, frozen
from robust.seeding import derive_seed
from robust.transforms import Params, Transform, get_transform
from robust.transforms.search import Objective, SearchConfig, SearchOutcome, search_parameters
from robust.validation import check_choice, check_labels, check_number, with_options

@contextmanager
def classifier_objective(classifier: Classifier, labels: torch.Tensor, *, targets: torch.Tensor | None = None,
                         loss: str = "margin", amp: str | None = None) -> Iterator[Objective]:
    """An :data:`Objective` for a classifier, valid inside the ``with`` block (the model is in eval mode there).

    ``labels`` (and ``targets``) are the whole batch's; the objective is called with images of the
    same batch, or with some of its images and their positions ``rows``. The loss is the attack loss
    (``margin`` by default: positive exactly when the image is misclassified).
    """
    clf = check_classifier(classifier)
    with clf.eval_mode() as net, frozen(clf):
        run = AttackRun(clf, net if clf.has_gradients else None, loss=loss, amp=amp)

        def objective(images: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """The loss, success and prediction of ``images``: the whole batch's, or its images ``rows``."""
            y = labels if rows is None else labels[rows]
            t = targets if targets is None or rows is None else targets[rows]
            logits = run.forward(images)
            return per_image_loss(loss, logits, y, t), hit(logits.detach(), y, t), logits.detach().argmax(1)

        yield objective


@dataclass
class TransformSearchResult(PerImageOutcome):
    """Per image: the worst parameters found (``params``, every parameter of the transform), the
    transformed images, whether they fool the model (``success``), the loss there and the predictions."""

    params: dict[str, torch.Tensor]
    images: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    predictions: torch.Tensor
    clean_correct: torch.Tensor
    labels: torch.Tensor
    transform: str
    method: str
    evaluations: int
    seed: int = 0
    searched: Transform | None = field(default=None, repr=False)  # the transform itself (a natural one is not registered)

    @property
    def worst_case_accuracy(self) -> float:
        """Accuracy when every image meets its worst parameters."""
        return self.accuracy_after()

    def describe(self, index: int) -> str:
        """``"rotation(angle=31.5)"``: one image's worst parameters."""
        return (self.searched or get_transform(self.transform)).describe(self.params, index)

    def summary(self) -> dict[str, Any]:
        return {
            "transform": self.transform,
            "method": self.method,
            "n": int(self.labels.shape[0]),
            "clean_accuracy": self.clean_accuracy,
            "worst_case_accuracy": self.worst_case_accuracy,
            "failures": int(self.failures().numel()),
            "evaluations": int(self.evaluations),
            "seed": self.seed,
        }


def _search_bounds(transform: Transform, names: Sequence[str] | None,
                   bounds: Mapping[str, tuple[float, float]] | None) -> dict[str, tuple[float, float]]:
    searchable = [p.name for p in transform.params if p.optimisable]
    chosen = list(names) if names is not None else searchable
    if not chosen:
        raise InputError("params", f"a parameter of {transform.name} to search", "none")
    out: dict[str, tuple[float, float]] = {}
    for name in chosen:
        if name not in searchable:
            raise InputError(f"{transform.name} parameter", "one of " + ", ".join(searchable), name)
        p = transform.param(name)
        low, high = p.low, p.high
        if bounds and name in bounds:
            low, high = (check_number(v, f"bounds[{name!r}]") for v in bounds[name])
            if not (p.low <= low <= high <= p.high):
                raise InputError(f"bounds[{name!r}]", f"low <= high within [{p.low:g}, {p.high:g}]", bounds[name])
        out[name] = (low, high)
    for name in bounds or {}:
        if name not in out:
            raise InputError("bounds", "bounds only for searched parameters (" + ", ".join(out) + ")", name)
    return out


@dataclass(frozen=True)
class TransformSearchConfig(SearchConfig):
    """A transform search: the core search's ``method``, ``steps``, ``k`` and ``step_size``
    (:class:`robust.transforms.search.SearchConfig`), plus ``seed`` (the draws and the noise seeds of
    seeded transforms), ``loss`` (``margin`` or ``ce``), ``params`` (the parameters searched, default
    every optimisable one; the rest stay at their identity), ``bounds`` (narrower ranges for some of
    them) and ``batch_size`` (default the classifier's)."""

    seed: int = 0
    loss: str = "margin"
    params: Sequence[str] | None = None
    bounds: Mapping[str, tuple[float, float]] | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.seed, "seed", low=0, integer=True)
        check_choice(self.loss, "loss", ("margin", "ce"))


def transform_search(classifier: Classifier, images: torch.Tensor, labels: Any, transform: str | Transform,
                     config: TransformSearchConfig | None = None, *, targets: Any = None, sample_ids: torch.Tensor | None = None,
                     clean_predictions: torch.Tensor | None = None, **options: Any) -> TransformSearchResult:
    """The worst parameters of ``transform`` (a name or any :class:`robust.transforms.Transform`) for each image.

    ``config`` (or its fields given as ``options``: ``method``, ``steps``, ``k``, ``seed``, ``loss``,
    ``params``, ``bounds``, ``step_size``, ``batch_size``, ``early_stop``) sets the search; see
    :func:`robust.transforms.search.search_parameters` for the methods. ``sample_ids`` (default
    ``0..N-1``) key each image's draws and noise seeds, so an image's result does not depend on its batch.
    ``clean_predictions`` (``[N]``): the model's predictions on ``images`` when the caller has them,
    which saves evaluating them again.
    """
    config = with_options(config if config is not None else TransformSearchConfig(), options)
    clf = check_classifier(classifier)
    tf = get_transform(transform)
    if config.method == "gradient":
        if not tf.differentiable:
            raise InputError("method", f"grid or random ({tf.name} is not differentiable)", config.method)
        if not clf.has_gradients:
            raise GradientUnavailableError(f"{clf.name} has no gradients (an ONNX model): use method='grid' or 'random'")
    images = clf.check_input(images)
    n = images.shape[0]
    labels = check_labels(labels, n, clf.num_classes)
    if targets is not None:
        targets = check_labels(targets, n, clf.num_classes, "targets")
    seed = check_number(config.seed, "seed", low=0, integer=True)
    ids = noise.check_seeds(sample_ids, n, "sample_ids").cpu()
    search = _search_bounds(tf, config.params, config.bounds)
    device = clf.device
    x_all = images.detach().to(device, torch.float32)
    y_all = labels.to(device)
    t_all = targets.to(device) if targets is not None else None
    seeds = (derive_seed(seed, "transform_search", tf.name) % (1 << 62), derive_seed(seed, "transform_search_noise", tf.name) % (1 << 62))
    batch = config.batch_size or clf.batch_size
    if clean_predictions is not None:
        clean_predictions = check_labels(clean_predictions, n, clf.num_classes, "clean_predictions").to(device)
    pieces: dict[str, list[torch.Tensor]] = {}
    evaluations = 0
    for start in range(0, n, batch):
        part = slice(start, start + batch)
        outcome, fixed, clean = _search_chunk(clf, tf, x_all[part], y_all[part], t_all[part] if t_all is not None else None,
                                              ids[part].to(device), seeds, search, config,
                                              clean_predictions[part] if clean_predictions is not None else None)
        evaluations += outcome.evaluations + (clean.shape[0] if clean_predictions is None else 0)
        for name, value in {**fixed, **outcome.params}.items():
            pieces.setdefault(f"param:{name}", []).append(value)
        for key, value in (("images", outcome.images), ("success", outcome.success), ("loss", outcome.loss),
                           ("pred", outcome.predictions), ("clean", clean)):
            pieces.setdefault(key, []).append(value)
    home = images.device
    cat = {key: torch.cat(parts).to(home) for key, parts in pieces.items()}
    return TransformSearchResult(
        params={key[len("param:"):]: value for key, value in cat.items() if key.startswith("param:")},
        images=cat["images"], success=cat["success"], loss=cat["loss"], predictions=cat["pred"], clean_correct=cat["clean"],
        labels=labels.to(home), transform=tf.name, method=config.method, evaluations=evaluations, seed=seed, searched=tf,
    )


def _search_chunk(clf: Classifier, tf: Transform, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, ids: torch.Tensor,
                  seeds: tuple[int, int], search: dict[str, tuple[float, float]], config: TransformSearchConfig,
                  clean_pred: torch.Tensor | None) -> tuple[SearchOutcome, Params, torch.Tensor]:
    """One batch: (the search's outcome, the parameters held fixed, whether the clean images were classified right)."""
    m = x.shape[0]
    draw_seed, noise_seed = seeds
    fixed = tf.identity(m, x.device)
    for p in tf.params:
        if p.kind == "seed":
            fixed[p.name] = ids + noise_seed
    identity = {name: tf.param(name).identity for name in search}

    def render(values: Params, rows: torch.Tensor | None = None) -> torch.Tensor:
        if rows is None:
            return tf.apply(x, {**fixed, **values})
        return tf.apply(x[rows], {**{key: value[rows] for key, value in fixed.items()}, **values})

    with classifier_objective(clf, y, targets=t, loss=config.loss) as objective:
        if clean_pred is None:
            with torch.no_grad():
                _, _, clean_pred = objective(x)
        outcome = search_parameters(render, search, objective, m, config, seeds=ids + draw_seed, identity=identity, device=x.device)
    return outcome, fixed, clean_pred == y
