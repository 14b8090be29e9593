"""Worst-case search over the parameters of natural transformations (and of any parametrised image function).

:func:`search_parameters` is the engine. It knows nothing about transforms: it takes a ``render``
function from per-image parameters (a dict of ``[N]`` tensors) to images, per-parameter bounds, and
an ``objective`` from images to a per-image loss, and finds each image's worst parameters by grid
search, random worst-of-k, or signed-gradient ascent within the bounds. :func:`transform_search`
applies it to :class:`robust.transforms.Transform` objects (the ones ``augment/`` trains with);
latent-direction attacks apply it to a generator rendering codes moved along directions, with
the directions' magnitudes as parameters and their realistic ranges as bounds.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from attacks.base import AttackRun, PerImageOutcome, attack_loss, check_classifier, check_sample_ids, hit
from robust import noise
from robust.errors import GradientUnavailableError, InputError
from robust.models import Classifier, frozen
from robust.seeding import derive_seed
from robust.transforms import Params, Transform, get_transform
from robust.validation import check_choice, check_labels, check_number

METHODS = ("grid", "random", "gradient")

Render = Callable[[Params], torch.Tensor]
# images -> (loss to maximise [N], success [N] bool, predictions [N]); differentiable in the images for "gradient".
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
Bound = float | torch.Tensor


@dataclass
class SearchOutcome:
    """Per image: the worst parameters found, the images they render, and the objective's verdict there."""

    params: dict[str, torch.Tensor]
    images: torch.Tensor
    loss: torch.Tensor
    success: torch.Tensor
    predictions: torch.Tensor
    evaluations: int


def default_steps(method: str, n_params: int) -> int:
    """Grid: about 33 points in all (33 for one parameter, 6 per axis for two); gradient: 20 steps."""
    if method == "grid":
        return max(2, int(round(33 ** (1.0 / max(1, n_params)))))
    return 20


def default_k(method: str) -> int:
    """Random: 32 draws per image; gradient: 4 starts (the identity and 3 random points)."""
    return 32 if method == "random" else 4


@contextmanager
def classifier_objective(classifier: Classifier, labels: torch.Tensor, *, targets: torch.Tensor | None = None,
                         loss: str = "margin", amp: str | None = None) -> Iterator[Objective]:
    """An :data:`Objective` for a classifier, valid inside the ``with`` block (the model is in eval mode there).

    ``labels`` (and ``targets``) are the whole batch's; the objective is called with images of the
    same batch. The loss is the attack loss (``margin`` by default: positive exactly when the image
    is misclassified).
    """
    clf = check_classifier(classifier)
    with clf.eval_mode() as net, frozen(clf):
        run = AttackRun(clf, net if clf.has_gradients else None, loss=loss, amp=amp)

        def objective(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            logits = run.forward(images)
            return attack_loss(loss, logits, labels, targets), hit(logits.detach(), labels, targets), logits.detach().argmax(1)

        yield objective


def _bounds_tensors(bounds: Mapping[str, tuple[Bound, Bound]], n: int, device: torch.device) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    names = list(bounds)
    if not names:
        raise InputError("bounds", "at least one parameter to search", "none")
    lows, highs = [], []
    for name in names:
        pair = bounds[name]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"bounds[{name!r}]", "a (low, high) pair", pair)
        low, high = (torch.as_tensor(v, dtype=torch.float32, device=device).expand(n).clone() for v in pair)
        if not bool(torch.isfinite(low).all() & torch.isfinite(high).all()) or bool((low > high).any()):
            raise InputError(f"bounds[{name!r}]", "finite low <= high", pair)
        lows.append(low)
        highs.append(high)
    return names, torch.stack(lows, 1), torch.stack(highs, 1)


def search_parameters(render: Render, bounds: Mapping[str, tuple[Bound, Bound]], objective: Objective, n: int, *,
                      method: str = "grid", steps: int | None = None, k: int | None = None,
                      seeds: torch.Tensor | None = None, identity: Mapping[str, Bound] | None = None,
                      step_size: float = 0.1, device: torch.device | str = "cpu") -> SearchOutcome:
    """Find, per image, the parameters in ``bounds`` that maximise ``objective(render(params))``.

    ``bounds`` maps each parameter to ``(low, high)`` (numbers or ``[N]`` tensors). Methods:
    ``grid``: ``steps`` evenly spaced values per parameter, every combination, plus ``identity``;
    ``random``: ``k`` uniform draws per image (worst-of-k); ``gradient``: ``k`` starts (``identity``
    first, then random) of ``steps`` signed-gradient steps in coordinates scaled to ``[0, 1]``, the
    step falling from ``step_size`` to 0 along a cosine; every iterate counts. ``seeds`` ``[N]`` key
    each image's random draws. ``render`` must be differentiable in the parameters for ``gradient``.
    """
    check_choice(method, "method", METHODS)
    device = torch.device(device)
    names, low, high = _bounds_tensors(bounds, n, device)
    p = len(names)
    steps = check_number(steps if steps is not None else default_steps(method, p), "steps", low=1 if method != "grid" else 2, integer=True)
    k = check_number(k if k is not None else default_k(method), "k", low=1, integer=True)
    step_size = check_number(step_size, "step_size", low=0, high=1)
    seeds = check_sample_ids(seeds, n).to(device)
    span = high - low

    def to_params(u: torch.Tensor) -> Params:
        values = low + u * span
        return {name: values[:, i] for i, name in enumerate(names)}

    best: dict[str, torch.Tensor] = {}
    evaluations = 0

    def consider(u: torch.Tensor, images: torch.Tensor, loss: torch.Tensor, success: torch.Tensor, pred: torch.Tensor) -> None:
        nonlocal evaluations
        evaluations += n
        images, loss, u = images.detach(), loss.detach().float(), u.detach()
        if not best:
            best.update(u=u.clone(), images=images.clone(), loss=loss.clone(), success=success.clone(), pred=pred.clone())
            return
        better = loss > best["loss"]
        best["u"] = torch.where(better[:, None], u, best["u"])
        best["images"] = torch.where(better.view(-1, *([1] * (images.dim() - 1))), images, best["images"])
        best["loss"] = torch.where(better, loss, best["loss"])
        best["success"] = torch.where(better, success, best["success"])
        best["pred"] = torch.where(better, pred, best["pred"])

    def evaluate(u: torch.Tensor) -> None:
        with torch.no_grad():
            images = render(to_params(u))
            consider(u, images, *objective(images))

    start_u = None
    if identity is not None:
        ident = torch.stack([torch.as_tensor(identity[name], dtype=torch.float32, device=device).expand(n) for name in names], 1)
        start_u = torch.where(span > 0, (ident - low) / span.clamp_min(1e-12), torch.zeros_like(span)).clamp(0, 1)

    if method == "grid":
        if start_u is not None:
            evaluate(start_u)
        axis = torch.linspace(0.0, 1.0, steps, device=device).tolist()
        for point in itertools.product(axis, repeat=p):
            evaluate(torch.tensor(point, device=device).expand(n, p))
    elif method == "random":
        draws = noise.uniform(seeds, (k, p), stream=1).to(device)
        for j in range(k):
            evaluate(draws[:, j])
    else:
        draws = noise.uniform(seeds, (k, p), stream=2).to(device)
        for j in range(k):
            u = (start_u if (j == 0 and start_u is not None) else draws[:, j]).clone()
            for t in range(steps):
                u = u.detach().requires_grad_(True)
                with torch.enable_grad():
                    images = render(to_params(u))
                    loss, success, pred = objective(images)
                    (grad,) = torch.autograd.grad(loss.sum(), u)
                consider(u, images, loss, success, pred)
                rate = step_size * 0.5 * (1.0 + math.cos(math.pi * t / steps))
                u = (u.detach() + rate * grad.sign()).clamp(0, 1)
            evaluate(u)
    return SearchOutcome(params=to_params(best["u"]), images=best["images"], loss=best["loss"], success=best["success"],
                         predictions=best["pred"], evaluations=evaluations)


# -- natural transforms -----------------------------------------------------------------------------

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

    @property
    def worst_case_accuracy(self) -> float:
        """Accuracy when every image meets its worst parameters."""
        return self.accuracy_after()

    def describe(self, index: int) -> str:
        """``"rotation(angle=31.5)"``: one image's worst parameters."""
        return get_transform(self.transform).describe(self.params, index)

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


def transform_search(classifier: Classifier, images: torch.Tensor, labels: Any, transform: str | Transform, *,
                     method: str = "grid", steps: int | None = None, k: int | None = None, seed: int = 0,
                     loss: str = "margin", targets: Any = None, params: Sequence[str] | None = None,
                     bounds: Mapping[str, tuple[float, float]] | None = None, step_size: float = 0.1,
                     batch_size: int | None = None, sample_ids: torch.Tensor | None = None) -> TransformSearchResult:
    """The worst parameters of ``transform`` for each image (see :func:`search_parameters` for the methods).

    ``params`` restricts the search to some parameters (the rest stay at their identity);
    ``bounds`` narrows their ranges; noise seeds of seeded transforms are fixed per image from ``seed``.
    """
    clf = check_classifier(classifier)
    tf = get_transform(transform)
    check_choice(method, "method", METHODS)
    if method == "gradient":
        if not tf.differentiable:
            raise InputError("method", f"grid or random ({tf.name} is not differentiable)", method)
        if not clf.has_gradients:
            raise GradientUnavailableError(f"{clf.name} has no gradients (an ONNX model): use method='grid' or 'random'")
    check_choice(loss, "loss", ("margin", "ce"))
    images = clf.check_input(images)
    n = images.shape[0]
    labels = check_labels(labels, n, clf.num_classes)
    if targets is not None:
        targets = check_labels(targets, n, clf.num_classes, "targets")
    seed = check_number(seed, "seed", low=0, integer=True)
    ids = check_sample_ids(sample_ids, n)
    search = _search_bounds(tf, params, bounds)
    device = clf.device
    x_all = images.detach().to(device, torch.float32)
    y_all = labels.to(device)
    t_all = targets.to(device) if targets is not None else None
    base_seed = derive_seed(seed, "transform_search", tf.name) % (1 << 62)
    noise_seed = derive_seed(seed, "transform_search_noise", tf.name) % (1 << 62)
    batch = batch_size or clf.batch_size
    pieces: dict[str, list[torch.Tensor]] = {}
    evaluations = 0
    for start in range(0, n, batch):
        x = x_all[start : start + batch]
        m = x.shape[0]
        y = y_all[start : start + batch]
        t = t_all[start : start + batch] if t_all is not None else None
        chunk_ids = ids[start : start + batch].to(device)
        fixed = tf.identity(m, device)
        for p in tf.params:
            if p.kind == "seed":
                fixed[p.name] = chunk_ids + noise_seed
        identity = {name: tf.param(name).identity for name in search}

        def render(values: Params, x: torch.Tensor = x, fixed: Params = fixed) -> torch.Tensor:
            return tf.apply(x, {**fixed, **values})

        with classifier_objective(clf, y, targets=t, loss=loss) as objective:
            with torch.no_grad():
                _, _, clean_pred = objective(x)
            outcome = search_parameters(render, search, objective, m, method=method, steps=steps, k=k,
                                        seeds=chunk_ids + base_seed, identity=identity, step_size=step_size, device=device)
        evaluations += outcome.evaluations + m
        full = {**fixed, **outcome.params}
        for name, value in full.items():
            pieces.setdefault(f"param:{name}", []).append(value)
        for key, value in (("images", outcome.images), ("success", outcome.success), ("loss", outcome.loss),
                           ("pred", outcome.predictions), ("clean", clean_pred == y)):
            pieces.setdefault(key, []).append(value)
    home = images.device
    cat = {key: torch.cat(parts).to(home) for key, parts in pieces.items()}
    return TransformSearchResult(
        params={key[len("param:"):]: value for key, value in cat.items() if key.startswith("param:")},
        images=cat["images"], success=cat["success"], loss=cat["loss"], predictions=cat["pred"], clean_correct=cat["clean"],
        labels=labels.to(home), transform=tf.name, method=method, evaluations=evaluations, seed=seed,
    )
