"""Geometric transforms (kornia warps): rotation, ... in the common transform interface."""
from __future__ import annotations

import kornia.geometry.transform as KG
import torch

from robust.transforms import Param, Params, Transform, register_transform


@register_transform
class Rotation(Transform):
    """Rotate about the image centre by ``angle`` degrees (bilinear, reflected border)."""

    name = "rotation"
    params = (Param("angle", -45.0, 45.0, 0.0),)

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return KG.rotate(images, params["angle"].to(images.dtype), mode="bilinear", padding_mode="reflection").clamp(0, 1)
