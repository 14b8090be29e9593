"""robust.perturbation: the Linf/L2 geometry shared by attacks, adversarial training and GAN guidance."""
from __future__ import annotations

import pytest
import torch

from robust.perturbation import ascent_direction, norms, project, project_delta, random_start


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_lands_in_the_ball_and_in_the_unit_box(norm):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    far = x + torch.randn_like(x)
    out = project(x, far, norm, 0.1)
    size = (out - x).abs().flatten(1).amax(1) if norm == "linf" else norms(out - x).flatten()
    assert bool((size <= 0.1 + 1e-6).all()) and out.min() >= 0 and out.max() <= 1
    inside = 0.01 * torch.randn_like(x) / norms(torch.randn_like(x))
    assert torch.allclose(project_delta(inside.clamp(-0.05, 0.05), norm, 0.5), inside.clamp(-0.05, 0.05))


def test_per_sample_radii_and_unit_ascent_steps():
    delta = torch.ones(2, 1, 2, 2)
    out = project_delta(delta, "l2", torch.tensor([1.0, 0.5]))
    assert norms(out).flatten().tolist() == pytest.approx([1.0, 0.5])
    grad = torch.randn(3, 3, 4, 4)
    assert torch.equal(ascent_direction(grad, "linf"), grad.sign())
    assert norms(ascent_direction(grad, "l2")).flatten().tolist() == pytest.approx([1.0] * 3)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_seeded_per_image(norm):
    x = torch.full((3, 3, 4, 4), 0.5)
    a = random_start(x, torch.tensor([1, 2, 3]), norm, 0.1, stream=0)
    b = random_start(x[1:], torch.tensor([2, 3]), norm, 0.1, stream=0)
    assert torch.equal(a[1:], b) and not torch.equal(a[0], a[1])
    assert not torch.equal(a, random_start(x, torch.tensor([1, 2, 3]), norm, 0.1, stream=1))
