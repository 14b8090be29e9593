"""The one worst-case search: keep-the-worst, worst-of-k, grid, gradient ascent and restarts against brute force."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from robust import noise
from robust.errors import InputError
from robust.transforms.search import (Box, SearchConfig, Worst, constant_rate, cosine_rate, gradient_ascent, restarts,
                                      search_parameters, unit_draws, unit_grid, worst_of_k)


def test_worst_keeps_the_highest_loss_per_image_and_ties_keep_the_earlier():
    worst = Worst()
    worst.offer(torch.tensor([1.0, 2.0, 3.0]), {"tag": torch.tensor([0, 0, 0]), "img": torch.zeros(3, 2, 2)})
    kept = worst.offer(torch.tensor([1.0, 5.0, 2.0]), {"tag": torch.tensor([1, 1, 1]), "img": torch.ones(3, 2, 2)})
    assert kept.tolist() == [False, True, False]
    assert worst["tag"].tolist() == [0, 1, 0] and worst.loss.tolist() == [1.0, 5.0, 3.0]
    assert worst["img"][:, 0, 0].tolist() == [0.0, 1.0, 0.0] and worst.offered == 6


def test_worst_with_rows_and_wins_updates_only_those_images():
    worst = Worst(torch.full((4,), float("-inf")), value=torch.zeros(4))
    worst.offer(torch.tensor([1.0, 2.0, 3.0, 4.0]), {"value": torch.tensor([1.0, 1.0, 1.0, 1.0])})
    worst.offer(torch.tensor([0.5, 9.0]), {"value": torch.tensor([2.0, 2.0])}, rows=torch.tensor([0, 2]), wins=torch.tensor([True, False]))
    assert worst["value"].tolist() == [2.0, 1.0, 2.0, 1.0] and worst.loss.tolist() == [0.5, 2.0, 9.0, 4.0]


def test_worst_of_k_is_the_first_argmax_over_draws():
    losses = torch.tensor([[0.1, 0.7, 0.7, 0.2], [0.9, 0.3, 0.9, 0.0], [0.0, 0.0, 0.0, 0.0]])  # [image, draw]
    worst = worst_of_k(lambda j: (losses[:, j], {"draw": torch.full((3,), j)}), 4)
    assert worst["draw"].tolist() == [1, 0, 0]
    assert torch.equal(worst.loss, losses.max(1).values)


def test_unit_grid_and_draws():
    assert list(unit_grid(3, 2)) == [(a, b) for a in (0.0, 0.5, 1.0) for b in (0.0, 0.5, 1.0)]
    seeds = torch.tensor([4, 9, 11])
    assert torch.equal(unit_draws(seeds, 5, 2, stream=3), noise.uniform(seeds, (5, 2), stream=3))
    assert torch.equal(unit_draws(seeds[1:], 5, 2, stream=3), unit_draws(seeds, 5, 2, stream=3)[1:])


def _problem():
    """Two parameters per image and a bumpy loss of them (the "images" are the parameters themselves)."""
    centre = torch.tensor([0.3, -0.5])

    def render(params):
        return torch.stack([params["a"], params["b"]], 1)

    def loss_of(images):
        return -((images - centre) ** 2).sum(1) + 0.1 * torch.sin(7 * images[:, 0])

    def objective(images):
        loss = loss_of(images)
        return loss, loss > -0.05, torch.zeros(images.shape[0], dtype=torch.long)

    return render, objective, loss_of, {"a": (-1.0, 1.0), "b": (-2.0, 2.0)}


def test_grid_search_equals_brute_force_over_identity_then_grid():
    render, objective, loss_of, bounds = _problem()
    out = search_parameters(render, bounds, objective, 3, SearchConfig("grid", steps=5), identity={"a": 0.0, "b": 0.0})
    low, span = torch.tensor([-1.0, -2.0]), torch.tensor([2.0, 4.0])
    points = [torch.tensor([0.5, 0.5])] + [torch.tensor(p) for p in itertools.product(torch.linspace(0, 1, 5).tolist(), repeat=2)]
    values = torch.stack([low + p * span for p in points])  # [P, 2]
    losses = torch.stack([loss_of(v.expand(3, 2)) for v in values], 1)  # [3, P]
    best = losses.argmax(1)  # the first maximum: ties keep the earlier point
    assert torch.allclose(torch.stack([out.params["a"], out.params["b"]], 1), values[best])
    assert torch.equal(out.loss, losses.max(1).values) and out.evaluations == 3 * len(points)


def test_random_search_equals_brute_force_over_the_images_own_draws():
    render, objective, loss_of, bounds = _problem()
    seeds = torch.tensor([10, 20, 30])
    out = search_parameters(render, bounds, objective, 3, SearchConfig("random", k=6), seeds=seeds)
    u = noise.uniform(seeds, (6, 2), stream=1)
    values = torch.tensor([-1.0, -2.0]) + u * torch.tensor([2.0, 4.0])  # [3, 6, 2]
    losses = torch.stack([loss_of(values[:, j]) for j in range(6)], 1)
    best = losses.argmax(1)
    assert torch.equal(out.params["a"], values[torch.arange(3), best, 0]) and torch.equal(out.loss, losses.max(1).values)
    part = search_parameters(render, bounds, objective, 2, SearchConfig("random", k=6), seeds=seeds[1:])
    assert torch.equal(part.params["b"], out.params["b"][1:])  # an image's result does not depend on its batch


def test_gradient_ascent_takes_signed_projected_steps_and_keeps_the_worst_iterate():
    target = torch.tensor([[0.8], [0.1]])

    def score(x):
        return -((x - target) ** 2).sum(1), {"seen": x}

    start = torch.tensor([[0.5], [0.5]])
    rate = cosine_rate(0.2, 4)
    worst = gradient_ascent(score, start, steps=4, rate=rate, box=Box(0.0, 1.0))
    x, iterates = start.clone(), [start.clone()]
    for t in range(4):
        x = (x + rate(t) * torch.sign(target - x)).clamp(0, 1)
        iterates.append(x)
    losses = torch.stack([-((it - target) ** 2).sum(1) for it in iterates], 1)
    expected = torch.stack(iterates, 1)[torch.arange(2), losses.argmax(1)]
    assert torch.allclose(worst["x"], expected) and worst.offered == 2 * 5
    assert rate(0) == pytest.approx(0.2) and rate(2) == pytest.approx(0.1) and rate(4) == pytest.approx(0.0)


def test_box_masks_coordinates_and_steps_per_coordinate():
    box = Box(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.5]), mask=torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    moved = box.step(torch.zeros(2, 2), torch.tensor([[1.0, 1.0], [-1.0, 1.0]]), constant_rate(torch.tensor([0.25, 1.0]))(7))
    assert moved.tolist() == [[0.25, 0.0], [-0.25, 0.5]]


def test_restarts_keep_the_first_win_else_the_highest_loss_and_rerun_only_the_resisting():
    outcomes = [  # per restart: (loss, wins) for all four images
        (torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([False, True, False, False])),
        (torch.tensor([5.0, 0.0, 1.0, 9.0]), torch.tensor([False, False, True, False])),
        (torch.tensor([0.0, 0.0, 0.0, 2.0]), torch.tensor([False, False, False, False])),
    ]
    seen_rows = []

    def attempt(rows, restart):
        seen_rows.append(rows.tolist())
        loss, won = outcomes[restart]
        return loss[rows], {"restart": torch.full((len(rows),), restart)}, won[rows]

    worst = restarts(attempt, 3, Worst(torch.full((4,), float("-inf")), restart=torch.full((4,), -1)))
    assert seen_rows == [[0, 1, 2, 3], [0, 2, 3], [0, 3]]
    assert worst["restart"].tolist() == [1, 0, 1, 1]


def test_search_configs_are_checked():
    with pytest.raises(InputError, match="method"):
        SearchConfig("anneal")
    with pytest.raises(InputError, match="steps"):
        SearchConfig("grid", steps=1)
    with pytest.raises(InputError, match="k"):
        SearchConfig("random", k=0)
    assert math.isclose(SearchConfig().step_size, 0.1)
