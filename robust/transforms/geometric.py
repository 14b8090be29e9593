"""Geometric transforms: rotation, translation, scale, perspective.

Configuration only (names, ranges and the border); the maths (bilinear warps) is in
:mod:`.functional`. Translations are fractions of the image size, so one setting means the same at
any resolution. What comes into the frame from outside it is filled with the image's edge colour
(a constant per image: no copies of the object); ``border=zeros`` fills black and ``border=reflect``
mirrors the image (spec ``rotation,border=reflect``).
"""
from __future__ import annotations

import torch

import robust.transforms.functional as F
from robust.transforms.base import Param, Params, Transform, register_transform
from robust.validation import check_choice


class _Warp(Transform):
    """A geometric transform: its ``border`` (one of :data:`robust.transforms.functional.BORDERS`) fills outside the frame."""

    def __init__(self, border: str = "edge"):
        self.border = check_choice(border, f"{self.name} border", F.BORDERS)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()" if self.border == "edge" else f"{type(self).__name__}(border={self.border!r})"


@register_transform
class Rotation(_Warp):
    """Rotate about the image centre by ``angle`` degrees."""

    name = "rotation"
    params = (Param("angle", -45.0, 45.0, 0.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.rotate(images, params["angle"], self.border)


@register_transform
class Translation(_Warp):
    """Shift by ``dx`` of the width (right is positive) and ``dy`` of the height (down is positive)."""

    name = "translation"
    params = (Param("dx", -0.25, 0.25, 0.0), Param("dy", -0.25, 0.25, 0.0))

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.translate(images, params["dx"], params["dy"], self.border)


@register_transform
class Scale(_Warp):
    """Zoom about the image centre by ``factor`` (above 1 enlarges the content, below 1 shrinks it)."""

    name = "scale"
    params = (Param("factor", 0.6, 1.4, 1.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.zoom(images, params["factor"], self.border)


@register_transform
class Perspective(_Warp):
    """A camera tilt: ``tilt_x`` narrows the right edge (negative: the left), ``tilt_y`` the bottom (negative: the top)."""

    name = "perspective"
    params = (Param("tilt_x", -0.4, 0.4, 0.0), Param("tilt_y", -0.4, 0.4, 0.0))

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.tilt(images, params["tilt_x"], params["tilt_y"], self.border)
