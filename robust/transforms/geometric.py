"""Geometric transforms: rotation, translation, scale, perspective.

Configuration only (names and ranges); the maths (bilinear warps with a reflected border) is in
:mod:`.functional`. Translations are fractions of the image size, so one setting means the same at
any resolution.
"""
from __future__ import annotations

import torch

import robust.transforms.functional as F
from robust.transforms.base import Param, Params, Transform, register_transform


@register_transform
class Rotation(Transform):
    """Rotate about the image centre by ``angle`` degrees."""

    name = "rotation"
    params = (Param("angle", -45.0, 45.0, 0.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.rotate(images, params["angle"])


@register_transform
class Translation(Transform):
    """Shift by ``dx`` of the width (right is positive) and ``dy`` of the height (down is positive)."""

    name = "translation"
    params = (Param("dx", -0.25, 0.25, 0.0), Param("dy", -0.25, 0.25, 0.0))

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.translate(images, params["dx"], params["dy"])


@register_transform
class Scale(Transform):
    """Zoom about the image centre by ``factor`` (above 1 enlarges the content, below 1 shrinks it)."""

    name = "scale"
    params = (Param("factor", 0.6, 1.4, 1.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.zoom(images, params["factor"])


@register_transform
class Perspective(Transform):
    """A camera tilt: ``tilt_x`` narrows the right edge (negative: the left), ``tilt_y`` the bottom (negative: the top)."""

    name = "perspective"
    params = (Param("tilt_x", -0.4, 0.4, 0.0), Param("tilt_y", -0.4, 0.4, 0.0))

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.tilt(images, params["tilt_x"], params["tilt_y"])
