"""Worst-case search over parameters, the one implementation: keep-the-worst per image, worst-of-k draws,
grids, signed-gradient ascent and restarts, used by attacks, augmentation, training recipes and tests.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch

from robust import noise
from robust.errors import InputError
from robust.validation import check_choice, check_number

METHODS = ("grid", "random", "gradient")

# params -> images; with ``early_stop`` also called as ``render(params, rows=rows)`` for the images ``rows`` only.
Render = Callable[..., torch.Tensor]
# images -> (loss to maximise [N], success [N] bool, predictions [N]); differentiable in the images for "gradient";
# with ``early_stop`` also called as ``objective(images, rows=rows)``.
Objective = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
# candidate coordinates (and optionally rows) -> (loss [N], per-image values to keep with it, e.g. the rendered images)
Score = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
Bound = float | torch.Tensor


class Worst:
    """Per image, the candidate with the highest loss offered so far (ties keep the earlier one).

    A candidate is a loss ``[N]`` and per-image values (``[N, ...]``, on any device). Start empty (the
    first offer is kept whole) or from ``loss`` and ``values`` (e.g. ``-inf`` and the clean images).
    """

    def __init__(self, loss: torch.Tensor | None = None, **values: torch.Tensor):
        self.loss = loss
        self.values: dict[str, torch.Tensor] = dict(values)
        self.offered = 0  # images offered in all, the search's evaluation count

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.values[key]

    def offer(self, loss: torch.Tensor, values: Mapping[str, torch.Tensor], *, rows: torch.Tensor | None = None,
              wins: torch.Tensor | None = None) -> torch.Tensor:
        """Keep the candidate where its loss is higher (or ``wins [rows]`` is true); returns where it was kept.

        ``rows`` offers a candidate for those images only (restarts on the images still resisting).
        """
        loss = loss.detach().float()
        values = {key: value.detach() for key, value in values.items()}
        self.offered += loss.shape[0]
        if self.loss is None:
            self.loss = loss.clone()
            self.values = {key: value.clone() for key, value in values.items()}
            return torch.ones_like(loss, dtype=torch.bool)
        held = self.loss if rows is None else self.loss[rows]
        better = loss > held
        if wins is not None:
            better = wins | better
        kept = {key: torch.where(_per_image(better, value), value, self.values[key] if rows is None else self.values[key][rows])
                for key, value in values.items()}
        if rows is None:
            self.loss = torch.where(better, loss, held)
            self.values.update(kept)
        else:
            self.loss[rows] = torch.where(better, loss, held)
            for key, value in kept.items():
                self.values[key][rows] = value
        return better


def _per_image(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``mask [N]`` shaped to broadcast over ``like [N, ...]`` on its device."""
    return mask.to(like.device).view(-1, *([1] * (like.dim() - 1)))


def worst_of_k(candidate: Callable[[int], tuple[torch.Tensor, dict[str, torch.Tensor]]], k: int,
               worst: Worst | None = None) -> Worst:
    """Offer ``candidate(j)`` (loss, values) for draws ``j = 0 .. k-1`` in order; the draws come from per-image seeds."""
    worst = worst if worst is not None else Worst()
    for j in range(k):
        worst.offer(*candidate(j))
    return worst


def unit_draws(seeds: torch.Tensor, k: int, dims: int, stream: int) -> torch.Tensor:
    """``[N, k, dims]`` uniform draws in ``(0, 1)``, image ``i``'s from ``seeds[i]`` alone (:func:`robust.noise.uniform`)."""
    return noise.uniform(seeds, (k, dims), stream=stream)


def unit_grid(steps: int, dims: int) -> Iterator[tuple[float, ...]]:
    """Every point of ``steps`` evenly spaced values in ``[0, 1]`` per dimension (the last dimension fastest)."""
    axis = torch.linspace(0.0, 1.0, steps).tolist()
    return itertools.product(axis, repeat=dims)


@dataclass(frozen=True)
class Box:
    """Where gradient ascent may go: ``[low, high]`` per coordinate (numbers or tensors that broadcast).

    With ``mask`` (0/1, ``[N, dims]``) only the masked coordinates move; the others are held at 0.
    """

    low: Bound
    high: Bound
    mask: torch.Tensor | None = None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        inside = x.clamp(self.low, self.high)
        return inside if self.mask is None else inside * self.mask

    def step(self, x: torch.Tensor, grad: torch.Tensor, rate: float | torch.Tensor) -> torch.Tensor:
        """One signed-gradient step of size ``rate`` (per coordinate when a tensor), projected back."""
        delta = rate * grad.sign()
        if self.mask is not None:
            delta = delta * self.mask
        return self.project(x + delta)


def cosine_rate(step_size: float, steps: int) -> Callable[[int], float]:
    """Step ``t`` of ``steps`` falls from ``step_size`` toward 0 along a half cosine."""
    return lambda t: step_size * 0.5 * (1.0 + math.cos(math.pi * t / steps))


def constant_rate(step: float | torch.Tensor) -> Callable[[int], float | torch.Tensor]:
    """The same step (a number, or one per coordinate) at every iteration."""
    return lambda t: step


def gradient_ascent(score: Score, start: torch.Tensor, *, steps: int, rate: Callable[[int], float | torch.Tensor], box: Box,
                    worst: Worst | None = None) -> Worst:
    """``steps`` signed-gradient steps on ``score``'s loss from ``start``, projected into ``box``.

    Every iterate is offered to ``worst`` (the start and the last one included, ``steps + 1`` in
    all) as ``{"x": coordinates, **values}``; ``score`` must be differentiable in the coordinates.
    """
    worst = worst if worst is not None else Worst()
    x = start
    for t in range(steps):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            loss, values = score(x)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        worst.offer(loss, {"x": x, **values})
        x = box.step(x.detach(), grad, rate(t))
    with torch.no_grad():
        loss, values = score(x)
    worst.offer(loss, {"x": x, **values})
    return worst


def restarts(attempt: Callable[[torch.Tensor, int], tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]], count: int,
             worst: Worst) -> Worst:
    """Run ``attempt(rows, restart) -> (loss, values, wins)`` up to ``count`` times on the images not yet won.

    An image keeps its first win, or else its highest-loss result; ``worst`` holds the starting
    values of every image (e.g. loss ``-inf`` and the clean images).
    """
    n = worst.loss.shape[0]
    device = worst.loss.device
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for restart in range(count):
        rows = (~done).nonzero().squeeze(1) if restart else torch.arange(n, device=device)
        if rows.numel() == 0:
            break
        loss, values, won = attempt(rows, restart)
        worst.offer(loss, values, rows=rows, wins=won)
        done[rows] = won
    return worst


# -- search over bounded parameters of a render function --------------------------------------------

@dataclass(frozen=True)
class SearchConfig:
    """How :func:`search_parameters` searches: ``method`` (grid, random, gradient), ``steps`` (grid values
    per parameter, or gradient steps), ``k`` (random draws, or gradient starts), ``step_size`` (the
    first gradient step, a fraction of each range). ``None`` takes :func:`default_steps` / :func:`default_k`.
    ``early_stop``: grid and random searches stop evaluating an image once a candidate wins (its first
    win is kept, so whether each image is won is what the full search finds; the grid is then walked
    nearest the identity first, so the win kept is the mildest); ``render`` and ``objective`` are then
    also called with a ``rows`` keyword (the images evaluated)."""

    method: str = "grid"
    steps: int | None = None
    k: int | None = None
    step_size: float = 0.1
    early_stop: bool = False

    def __post_init__(self) -> None:
        check_choice(self.method, "method", METHODS)
        check_number(self.step_size, "step_size", low=0, high=1)
        if self.steps is not None:
            check_number(self.steps, "steps", low=1 if self.method != "grid" else 2, integer=True)
        if self.k is not None:
            check_number(self.k, "k", low=1, integer=True)


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


def grid_values(low: float, high: float, steps: int) -> list[float]:
    """The values a grid search of ``steps`` points renders for a parameter in ``[low, high]``: the same
    float32 numbers :func:`search_parameters` computes, so a caller can name the grid's own points."""
    start = torch.tensor(float(low))
    return (start + torch.linspace(0.0, 1.0, steps) * (torch.tensor(float(high)) - start)).tolist()


def _offer_each(worst: Worst, candidates: Iterable[torch.Tensor], score: Score, early_stop: bool) -> None:
    """Offer ``score(u)`` for each candidate ``u [N, P]`` in order; with ``early_stop``, once a first
    candidate is held, only on the images not yet won (their first win is kept), stopping when none is left."""
    for u in candidates:
        with torch.no_grad():
            if not early_stop or worst.loss is None:
                worst.offer(*score(u))
                continue
            rows = (~worst["success"]).nonzero().squeeze(1).to(u.device)
            if rows.numel() == 0:
                return
            loss, values = score(u[rows], rows)
            worst.offer(loss, values, rows=rows, wins=values["success"])


def search_parameters(render: Render, bounds: Mapping[str, tuple[Bound, Bound]], objective: Objective, n: int,
                      config: SearchConfig = SearchConfig(), *, seeds: torch.Tensor | None = None,
                      identity: Mapping[str, Bound] | None = None, device: torch.device | str = "cpu") -> SearchOutcome:
    """Find, per image, the parameters in ``bounds`` that maximise ``objective(render(params))``.

    ``bounds`` maps each parameter to ``(low, high)`` (numbers or ``[N]`` tensors); the search runs
    in coordinates scaled to ``[0, 1]``. ``config.method``: ``grid``: ``steps`` evenly spaced values
    per parameter (:func:`grid_values`), every combination, after ``identity``; ``random``: ``k``
    uniform draws per image (worst-of-k); ``gradient``: ``k`` starts (``identity`` first, then
    random) of ``steps`` signed-gradient steps falling from ``step_size`` to 0 along a cosine; every
    iterate counts. ``config.early_stop`` (grid and random) evaluates only the images not yet won.
    ``seeds`` ``[N]`` key each image's draws (default ``0..N-1``). ``render`` must be
    differentiable in the parameters for ``gradient``.
    """
    device = torch.device(device)
    names, low, high = _bounds_tensors(bounds, n, device)
    p = len(names)
    steps = config.steps if config.steps is not None else default_steps(config.method, p)
    k = config.k if config.k is not None else default_k(config.method)
    seeds = (torch.arange(n, dtype=torch.int64) if seeds is None else noise.check_seeds(seeds, n, "seeds")).to(device)
    span = high - low

    def score(u: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective at coordinates ``u`` of every image, or of the images ``rows`` only."""
        values = low + u * span if rows is None else low[rows] + u * span[rows]
        params = {name: values[:, i] for i, name in enumerate(names)}
        images = render(params) if rows is None else render(params, rows=rows)
        loss, success, pred = objective(images) if rows is None else objective(images, rows=rows)
        return loss, {"x": u, "images": images, "success": success, "pred": pred}

    worst = Worst()
    start = None
    if identity is not None:
        ident = torch.stack([torch.as_tensor(identity[name], dtype=torch.float32, device=device).expand(n) for name in names], 1)
        start = torch.where(span > 0, (ident - low) / span.clamp_min(1e-12), torch.zeros_like(span)).clamp(0, 1)
    if config.method == "grid":
        points = [torch.tensor(point, device=device) for point in unit_grid(steps, p)]
        if config.early_stop and start is not None:
            centre = start.mean(0)
            points.sort(key=lambda point: float((point - centre).abs().max()))
        _offer_each(worst, ([start] if start is not None else []) + [point.expand(n, p) for point in points], score, config.early_stop)
    elif config.method == "random":
        draws = unit_draws(seeds, k, p, stream=1).to(device)
        _offer_each(worst, (draws[:, j] for j in range(k)), score, config.early_stop)
    else:
        draws = unit_draws(seeds, k, p, stream=2).to(device)
        for j in range(k):
            first = start if (j == 0 and start is not None) else draws[:, j]
            gradient_ascent(score, first.clone(), steps=steps, rate=cosine_rate(config.step_size, steps), box=Box(0.0, 1.0), worst=worst)
    return SearchOutcome(params={name: (low + worst["x"] * span)[:, i] for i, name in enumerate(names)}, images=worst["images"],
                         loss=worst.loss, success=worst["success"], predictions=worst["pred"], evaluations=worst.offered)
