"""Photometric transforms (kornia): brightness, contrast, ... in the common transform interface."""
from __future__ import annotations

import kornia.enhance as KE
import torch

from robust.transforms import Param, Params, Transform, register_transform


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
