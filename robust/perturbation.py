"""Pixel-space perturbation geometry: Linf/L2 balls, their steepest-ascent steps and seeded random starts."""
from __future__ import annotations

import torch

from robust import noise

NORMS = ("linf", "l2")


def norms(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped to broadcast against ``t`` (``[N, 1, 1, 1]`` for images)."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def project_delta(delta: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """``delta`` projected into the ``eps``-ball of ``norm`` (``eps`` a number or one radius per sample)."""
    if norm == "linf":
        if isinstance(eps, torch.Tensor):
            eps = eps.view(-1, *([1] * (delta.dim() - 1)))
            return torch.max(torch.min(delta, eps), -eps)
        return delta.clamp(-eps, eps)
    eps_t = eps.view(-1, *([1] * (delta.dim() - 1))) if isinstance(eps, torch.Tensor) else eps
    return delta * (eps_t / norms(delta).clamp_min(1e-12)).clamp(max=1.0)


def project(original: torch.Tensor, adversarial: torch.Tensor, norm: str, eps: float | torch.Tensor) -> torch.Tensor:
    """Project into the ``eps``-ball around ``original`` and then into ``[0, 1]`` (which keeps it in the ball)."""
    return (original + project_delta(adversarial - original, norm, eps)).clamp(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent unit step for the norm: the sign for Linf, the normalised gradient for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / norms(grad).clamp_min(1e-12)


def random_start(x: torch.Tensor, seeds: torch.Tensor, norm: str, eps: float, stream: int) -> torch.Tensor:
    """A seeded random point of the ball (uniform per pixel for Linf; random direction and radius for L2)."""
    shape = tuple(x.shape[1:])
    if norm == "linf":
        u = noise.uniform(seeds, shape, stream=2 * stream + 1).to(x.device, x.dtype)
        return (x + (2.0 * u - 1.0) * eps).clamp(0.0, 1.0)
    direction = noise.normal(seeds, shape, stream=2 * stream + 1).to(x.device, x.dtype)
    radius = noise.uniform(seeds, (1,), stream=2 * stream + 2).to(x.device, x.dtype).view(-1, *([1] * len(shape)))
    return project(x, x + direction / norms(direction).clamp_min(1e-12) * radius * eps, norm, eps)
