"""The photometric and geometric maths of the core transforms as plain functions on tensors.

Every function takes images ``[N, C, H, W]`` in ``[0, 1]`` and per-image parameters ``[N]``, returns
images of the same shape in ``[0, 1]``, and is batched and differentiable in both (kornia inside).
The classes of :mod:`.photometric` and :mod:`.geometric` hold the ranges and call these.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import kornia.enhance as KE
import kornia.filters as KF
import kornia.geometry.transform as KG
import torch


def _per_image(value: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``[N]`` parameters as ``[N, 1, 1, 1]`` in the images' dtype, ready to broadcast."""
    return value.to(images.dtype).view(-1, 1, 1, 1)


# -- photometric ----------------------------------------------------------------------------------

def adjust_brightness(images: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Add ``delta`` to every channel (kornia ``adjust_brightness``), clipped to ``[0, 1]``."""
    return KE.adjust_brightness(images, delta.to(images.dtype), clip_output=True)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale contrast around each image's mean grey level by ``factor`` (1 is the identity)."""
    return KE.adjust_contrast_with_mean_subtraction(images, factor.to(images.dtype)).clamp(0, 1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images by ``shift`` radians; other channel counts are returned unchanged."""
    if images.shape[1] != 3:
        return images
    return KE.adjust_hue(images, shift.to(images.dtype)).clamp(0, 1)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend RGB images with their grey version (``factor`` 0 grey, 1 the identity); others unchanged."""
    if images.shape[1] != 3:
        return images
    return KE.adjust_saturation_with_gray_subtraction(images, factor.to(images.dtype))


def adjust_gamma(images: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """The curve ``x ** gamma``: below 1 brightens shadows, above 1 darkens them."""
    # A floor keeps d(x**g)/dg = x**g * log(x) finite at black pixels; it moves them by at most 1e-6**0.4.
    floor = torch.finfo(images.dtype).eps if images.dtype != torch.float32 else 1e-6
    return KE.adjust_gamma(images.clamp_min(floor), gamma.to(images.dtype)).clamp(0, 1)


def illuminate(images: torch.Tensor, strength: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """A linear light falloff: pixels scaled by ``1 + strength * (cos a * u + sin a * v)``.

    ``u, v`` run from -1 to 1 across the width and height; ``angle`` (degrees) is the direction the
    light comes from, ``strength`` how much darker the far side is (and brighter the near side).
    """
    _, _, h, w = images.shape
    v = torch.linspace(-1.0, 1.0, h, device=images.device, dtype=images.dtype).view(1, 1, h, 1)
    u = torch.linspace(-1.0, 1.0, w, device=images.device, dtype=images.dtype).view(1, 1, 1, w)
    a = _per_image(angle, images) * (math.pi / 180.0)
    field = 1.0 + _per_image(strength, images) * (torch.cos(a) * u + torch.sin(a) * v)
    return (images * field).clamp(0, 1)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels (reflected border).

    One kernel for the batch, wide enough for ``max_sigma`` and narrower than the image (the
    reflected border needs padding below the image size); images too small for any kernel are
    returned unchanged.
    """
    _, _, h, w = images.shape
    radius = min(math.ceil(3.0 * max_sigma), (min(h, w) - 1) // 2)
    if radius < 1:
        return images
    # A tiny positive sigma makes the kernel an exact delta (exp underflows to 0 off-centre), so sigma 0
    # is the identity while the gradient stays finite.
    sigma = sigma.to(images.dtype).clamp_min(1e-3)
    out = KF.gaussian_blur2d(images, (2 * radius + 1, 2 * radius + 1), torch.stack([sigma, sigma], dim=1), border_type="reflect")
    return out.clamp(0, 1)


def jpeg_compress(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG compression at ``quality`` (kornia's differentiable codec); grey images go through it as RGB
    and come back grey, channels beyond the third are kept."""
    channels = images.shape[1]
    rgb = images.expand(-1, 3, -1, -1) if channels == 1 else images[:, :3]
    out = KE.jpeg_codec_differentiable(rgb, quality.to(images.dtype)).clamp(0, 1)
    if channels == 1:
        return out.mean(dim=1, keepdim=True)
    if channels > 3:
        return torch.cat([out, images[:, 3:]], dim=1)
    return out


# -- geometric ---------------------------------------------------------------------------------------

#: How geometric warps fill what comes from outside the frame: ``edge`` (default) a constant per image
#: and channel, the mean of the image's outermost ring of pixels (its background where the object
#: stands inside the frame); ``zeros`` black; ``reflect`` the mirrored image (copies of the object
#: appear in the frame when it shrinks or moves).
BORDERS = ("edge", "zeros", "reflect")


def edge_colour(images: torch.Tensor) -> torch.Tensor:
    """The mean of each image's outermost ring of pixels, per channel: ``[N, C, 1, 1]``."""
    ring = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], dim=-1)
    return ring.mean(dim=-1)[..., None, None]


def _warp(images: torch.Tensor, border: str, warp: Callable[[torch.Tensor, str], torch.Tensor]) -> torch.Tensor:
    """``warp(images, padding_mode)`` (a bilinear kornia warp) with ``border`` filling outside the frame.

    A constant fill ``c`` warps ``images - c`` with zero padding and adds ``c`` back: inside the frame
    that is the plain warp (bilinear weights sum to 1), outside it is ``c``.
    """
    if border == "reflect":
        return warp(images, "reflection").clamp(0, 1)
    if border == "zeros":
        return warp(images, "zeros").clamp(0, 1)
    fill = edge_colour(images)
    return (warp(images - fill, "zeros") + fill).clamp(0, 1)


def rotate(images: torch.Tensor, angle: torch.Tensor, border: str = "edge") -> torch.Tensor:
    """Rotate about the image centre by ``angle`` degrees (``border``: one of :data:`BORDERS`)."""
    return _warp(images, border, lambda x, pad: KG.rotate(x, angle.to(images.dtype), mode="bilinear", padding_mode=pad))


def translate(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, border: str = "edge") -> torch.Tensor:
    """Shift by ``dx`` of the width (right is positive) and ``dy`` of the height (down is positive)."""
    _, _, h, w = images.shape
    shift = torch.stack([dx.to(images.dtype) * w, dy.to(images.dtype) * h], dim=1)
    return _warp(images, border, lambda x, pad: KG.translate(x, shift, mode="bilinear", padding_mode=pad))


def zoom(images: torch.Tensor, factor: torch.Tensor, border: str = "edge") -> torch.Tensor:
    """Zoom about the image centre by ``factor`` (above 1 enlarges the content, below 1 shrinks it)."""
    factor = factor.to(images.dtype)
    return _warp(images, border, lambda x, pad: KG.scale(x, torch.stack([factor, factor], dim=1), mode="bilinear", padding_mode=pad))


def tilt(images: torch.Tensor, tilt_x: torch.Tensor, tilt_y: torch.Tensor, border: str = "edge") -> torch.Tensor:
    """A camera tilt: ``tilt_x`` narrows the right edge (negative: the left), ``tilt_y`` the bottom (negative: the top).

    A tilt of ``t`` pulls both corners of that edge toward the edge's middle by ``t / 2`` of the side,
    the keystone a camera turned about the vertical (``tilt_x``) or horizontal (``tilt_y``) axis sees.
    """
    n, _, h, w = images.shape
    dtype, device = images.dtype, images.device
    tx = tilt_x.to(dtype)
    ty = tilt_y.to(dtype)
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
    return _warp(images, border, lambda x, pad: KG.warp_perspective(x, matrix, (h, w), mode="bilinear", padding_mode=pad))
