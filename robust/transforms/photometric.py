"""Photometric transforms: brightness, contrast, hue, saturation, gamma, illumination, blur, JPEG.

Configuration only (names and ranges); the maths is in :mod:`.functional`. Identity parameters
leave images unchanged (JPEG at quality 100 is the codec's mildest setting, close to but not
exactly the identity); colour transforms leave single-channel images unchanged.
"""
from __future__ import annotations

import math

import torch

import robust.transforms.functional as F
from robust.transforms.base import Param, Params, Transform, register_transform


@register_transform
class Brightness(Transform):
    """Add ``delta`` to every channel, clipped to ``[0, 1]``."""

    name = "brightness"
    params = (Param("delta", -0.5, 0.5, 0.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.adjust_brightness(images, params["delta"])


@register_transform
class Contrast(Transform):
    """Scale contrast around each image's mean grey level by ``factor``."""

    name = "contrast"
    params = (Param("factor", 0.2, 1.8, 1.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.adjust_contrast(images, params["factor"])


@register_transform
class Hue(Transform):
    """Rotate the hue of RGB images by ``shift`` radians (the range is the full circle)."""

    name = "hue"
    params = (Param("shift", -math.pi, math.pi, 0.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.adjust_hue(images, params["shift"])


@register_transform
class Saturation(Transform):
    """Blend RGB images with their grey version: ``factor`` 0 is grey, 1 the identity, 2 doubly saturated."""

    name = "saturation"
    params = (Param("factor", 0.0, 2.0, 1.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.adjust_saturation(images, params["factor"])


@register_transform
class Gamma(Transform):
    """Gamma curve ``x ** gamma``: below 1 brightens shadows, above 1 darkens them."""

    name = "gamma"
    params = (Param("gamma", 0.4, 2.5, 1.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.adjust_gamma(images, params["gamma"])


@register_transform
class Illumination(Transform):
    """A linear light falloff across the image: ``strength`` from the direction ``angle`` (degrees)."""

    name = "illumination"
    params = (Param("strength", 0.0, 0.8, 0.0), Param("angle", -180.0, 180.0, 0.0, kind="free"))

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.illuminate(images, params["strength"], params["angle"])


@register_transform
class Blur(Transform):
    """Gaussian blur with standard deviation ``sigma`` pixels (reflected border)."""

    name = "blur"
    params = (Param("sigma", 0.0, 3.0, 0.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.gaussian_blur(images, params["sigma"], self.param("sigma").high)


@register_transform
class JpegQuality(Transform):
    """JPEG compression at ``quality`` (kornia's differentiable codec); grey images go through it as RGB."""

    name = "jpeg"
    params = (Param("quality", 10.0, 100.0, 100.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return F.jpeg_compress(images, params["quality"])
