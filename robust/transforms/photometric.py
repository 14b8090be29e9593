"""Photometric transforms (kornia): brightness, contrast, hue, saturation, gamma, illumination, blur, JPEG.

Every transform here is batched, differentiable in the images and in its parameters (so worst-case
search and training can take gradients), keeps outputs in ``[0, 1]``, and has parameters whose
identity value leaves images unchanged (JPEG at quality 100 is the codec's mildest setting, close to
but not exactly the identity). Colour transforms leave single-channel images unchanged.
"""
from __future__ import annotations

import math

import kornia.enhance as KE
import kornia.filters as KF
import torch

from robust.transforms.base import Param, Params, Transform, register_transform


def _per_image(value: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``[N]`` parameters as ``[N, 1, 1, 1]`` in the images' dtype, ready to broadcast."""
    return value.to(images.dtype).view(-1, 1, 1, 1)


@register_transform
class Brightness(Transform):
    """Add ``delta`` to every channel (kornia ``adjust_brightness``), clipped to ``[0, 1]``."""

    name = "brightness"
    params = (Param("delta", -0.5, 0.5, 0.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return KE.adjust_brightness(images, params["delta"].to(images.dtype), clip_output=True)


@register_transform
class Contrast(Transform):
    """Scale contrast around each image's mean grey level by ``factor``."""

    name = "contrast"
    params = (Param("factor", 0.2, 1.8, 1.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return KE.adjust_contrast_with_mean_subtraction(images, params["factor"].to(images.dtype)).clamp(0, 1)


@register_transform
class Hue(Transform):
    """Rotate the hue of RGB images by ``shift`` radians (kornia ``adjust_hue``; the range is the full circle)."""

    name = "hue"
    params = (Param("shift", -math.pi, math.pi, 0.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        if images.shape[1] != 3:
            return images
        return KE.adjust_hue(images, params["shift"].to(images.dtype)).clamp(0, 1)


@register_transform
class Saturation(Transform):
    """Blend RGB images with their grey version: ``factor`` 0 is grey, 1 the identity, 2 doubly saturated."""

    name = "saturation"
    params = (Param("factor", 0.0, 2.0, 1.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        if images.shape[1] != 3:
            return images
        return KE.adjust_saturation_with_gray_subtraction(images, params["factor"].to(images.dtype))


@register_transform
class Gamma(Transform):
    """Gamma curve ``x ** gamma`` (kornia ``adjust_gamma``): below 1 brightens shadows, above 1 darkens them."""

    name = "gamma"
    params = (Param("gamma", 0.4, 2.5, 1.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        # A floor keeps d(x**g)/dg = x**g * log(x) finite at black pixels; it moves them by at most 1e-6**0.4.
        floor = torch.finfo(images.dtype).eps if images.dtype != torch.float32 else 1e-6
        return KE.adjust_gamma(images.clamp_min(floor), params["gamma"].to(images.dtype)).clamp(0, 1)


@register_transform
class Illumination(Transform):
    """A linear light falloff across the image: pixels scaled by ``1 + strength * (cos a * u + sin a * v)``.

    ``u, v`` run from -1 to 1 across the width and height; ``angle`` (degrees) is the direction the
    light comes from, ``strength`` how much darker the far side is (and brighter the near side).
    """

    name = "illumination"
    params = (Param("strength", 0.0, 0.8, 0.0), Param("angle", -180.0, 180.0, 0.0, kind="free"))

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        _, _, h, w = images.shape
        v = torch.linspace(-1.0, 1.0, h, device=images.device, dtype=images.dtype).view(1, 1, h, 1)
        u = torch.linspace(-1.0, 1.0, w, device=images.device, dtype=images.dtype).view(1, 1, 1, w)
        angle = _per_image(params["angle"], images) * (math.pi / 180.0)
        field = 1.0 + _per_image(params["strength"], images) * (torch.cos(angle) * u + torch.sin(angle) * v)
        return (images * field).clamp(0, 1)


@register_transform
class Blur(Transform):
    """Gaussian blur with standard deviation ``sigma`` pixels (kornia ``gaussian_blur2d``, reflected border)."""

    name = "blur"
    params = (Param("sigma", 0.0, 3.0, 0.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        _, _, h, w = images.shape
        # One kernel size for the whole batch: wide enough for the largest sigma, narrower than the image
        # (the reflected border needs padding below the image size).
        radius = min(math.ceil(3.0 * self.param("sigma").high), (min(h, w) - 1) // 2)
        if radius < 1:
            return images
        # A tiny positive sigma makes the kernel an exact delta (exp underflows to 0 off-centre), so sigma 0
        # is the identity while the gradient stays finite.
        sigma = params["sigma"].to(images.dtype).clamp_min(1e-3)
        out = KF.gaussian_blur2d(images, (2 * radius + 1, 2 * radius + 1), torch.stack([sigma, sigma], dim=1), border_type="reflect")
        return out.clamp(0, 1)


@register_transform
class JpegQuality(Transform):
    """JPEG compression at ``quality`` (kornia's differentiable codec); grey images go through it as RGB."""

    name = "jpeg"
    params = (Param("quality", 10.0, 100.0, 100.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        channels = images.shape[1]
        rgb = images.expand(-1, 3, -1, -1) if channels == 1 else images[:, :3]
        out = KE.jpeg_codec_differentiable(rgb, params["quality"].to(images.dtype)).clamp(0, 1)
        if channels == 1:
            return out.mean(dim=1, keepdim=True)
        if channels > 3:
            return torch.cat([out, images[:, 3:]], dim=1)
        return out
