"""Geometric transforms (kornia warps): rotation, translation, scale, perspective.

All warps are bilinear with a reflected border (no black corners for a classifier to latch on to),
batched, differentiable in the images and in their parameters, and the identity at their identity
parameters. Translations are fractions of the image size so one setting means the same at any resolution.
"""
from __future__ import annotations

import kornia.geometry.transform as KG
import torch

from robust.transforms.base import Param, Params, Transform, register_transform


@register_transform
class Rotation(Transform):
    """Rotate about the image centre by ``angle`` degrees (bilinear, reflected border)."""

    name = "rotation"
    params = (Param("angle", -45.0, 45.0, 0.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return KG.rotate(images, params["angle"].to(images.dtype), mode="bilinear", padding_mode="reflection").clamp(0, 1)


@register_transform
class Translation(Transform):
    """Shift by ``dx`` of the width (right is positive) and ``dy`` of the height (down is positive)."""

    name = "translation"
    params = (Param("dx", -0.25, 0.25, 0.0), Param("dy", -0.25, 0.25, 0.0))

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        _, _, h, w = images.shape
        shift = torch.stack([params["dx"].to(images.dtype) * w, params["dy"].to(images.dtype) * h], dim=1)
        return KG.translate(images, shift, mode="bilinear", padding_mode="reflection").clamp(0, 1)


@register_transform
class Scale(Transform):
    """Zoom about the image centre by ``factor`` (above 1 enlarges the content, below 1 shrinks it)."""

    name = "scale"
    params = (Param("factor", 0.6, 1.4, 1.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        factor = params["factor"].to(images.dtype)
        return KG.scale(images, torch.stack([factor, factor], dim=1), mode="bilinear", padding_mode="reflection").clamp(0, 1)


@register_transform
class Perspective(Transform):
    """A camera tilt: ``tilt_x`` narrows the right edge (negative: the left), ``tilt_y`` the bottom (negative: the top).

    A tilt of ``t`` pulls both corners of that edge toward the edge's middle by ``t / 2`` of the side,
    the keystone a camera turned about the vertical (``tilt_x``) or horizontal (``tilt_y``) axis sees.
    """

    name = "perspective"
    params = (Param("tilt_x", -0.4, 0.4, 0.0), Param("tilt_y", -0.4, 0.4, 0.0))

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        n, _, h, w = images.shape
        dtype, device = images.dtype, images.device
        tx = params["tilt_x"].to(dtype)
        ty = params["tilt_y"].to(dtype)
        x0, x1, y0, y1 = 0.0, float(w - 1), 0.0, float(h - 1)
        # Corners in kornia's order: top-left, top-right, bottom-right, bottom-left.
        src = torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=dtype, device=device).expand(n, 4, 2)
        half_h, half_w = 0.5 * (h - 1), 0.5 * (w - 1)
        # Positive tilt_x squeezes the right edge vertically, negative the left edge.
        right, left = tx.clamp_min(0) * half_h, (-tx).clamp_min(0) * half_h
        bottom, top = ty.clamp_min(0) * half_w, (-ty).clamp_min(0) * half_w
        dst = src + torch.stack([
            torch.stack([top, left], dim=1),
            torch.stack([-top, right], dim=1),
            torch.stack([-bottom, -right], dim=1),
            torch.stack([bottom, -left], dim=1),
        ], dim=1)
        # M carries the frame's corners onto the narrowed quad, so the whole picture lands inside the quad.
        matrix = KG.get_perspective_transform(src, dst)
        return KG.warp_perspective(images, matrix, (h, w), mode="bilinear", padding_mode="reflection").clamp(0, 1)
