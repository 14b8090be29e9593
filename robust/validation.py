"""Input checks at the edges: images, labels and numbers, each failing with one clear InputError."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from robust.errors import InputError

# Values a hair outside [0, 1] come from float round-off in resampling; anything beyond is a bug upstream.
RANGE_TOLERANCE = 1e-4


def _shape(x: Any) -> str:
    return "x".join(str(s) for s in tuple(x.shape)) if hasattr(x, "shape") else type(x).__name__


def check_images(
    images: Any,
    name: str = "images",
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    check_range: bool = True,
) -> torch.Tensor:
    """Check a float image batch ``[N, C, H, W]`` with finite values in ``[0, 1]``; return it unchanged.

    Raises :class:`InputError` naming ``name``, what was expected and what came.
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(name, "a torch.Tensor of shape [N, C, H, W]", type(images).__name__)
    if images.dim() != 4:
        raise InputError(name, "4 dimensions [N, C, H, W]", f"shape {_shape(images)}")
    if not images.is_floating_point():
        raise InputError(name, "a floating-point tensor in [0, 1] (convert uint8 with robust.data.to_float_images)", str(images.dtype))
    if images.shape[0] == 0:
        raise InputError(name, "at least one image", "an empty batch")
    if channels is not None and images.shape[1] != channels:
        raise InputError(name, f"{channels} channels [N, {channels}, H, W]", f"shape {_shape(images)}")
    if size is not None and tuple(images.shape[-2:]) != tuple(size):
        raise InputError(name, f"images of size {size[0]}x{size[1]}", f"shape {_shape(images)}")
    if check_range:
        detached = images.detach()
        lo, hi = torch.aminmax(detached)
        lo, hi = float(lo), float(hi)
        if not (np.isfinite(lo) and np.isfinite(hi)) or bool(torch.isnan(detached).any()):
            raise InputError(name, "finite values", "NaN or Inf values")
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            hint = " (looks like 0-255 data: divide by 255)" if hi > 1.5 else ""
            raise InputError(name, "values in [0, 1]" + hint, f"values in [{lo:.4g}, {hi:.4g}]")
    return images


def check_labels(labels: Any, n: int | None = None, num_classes: int | None = None, name: str = "labels") -> torch.Tensor:
    """Check integer labels ``[N]`` in ``[0, num_classes)``; returns them as an int64 tensor."""
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "buif":
            raise InputError(name, "integer class indices (class names go in class_names)", f"an array of {labels.dtype} values")
        labels = torch.from_numpy(labels)
    elif isinstance(labels, (list, tuple)):
        labels = torch.as_tensor(labels)
    if not isinstance(labels, torch.Tensor):
        raise InputError(name, "a tensor of integer class indices", type(labels).__name__)
    if labels.dim() != 1:
        raise InputError(name, "1 dimension [N]", f"shape {_shape(labels)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        if labels.is_floating_point() and bool(torch.all(labels == labels.round())):
            labels = labels.long()
        else:
            raise InputError(name, "integer class indices", str(labels.dtype))
    labels = labels.long()
    if n is not None and labels.shape[0] != n:
        raise InputError(name, f"{n} labels (one per image)", f"{labels.shape[0]}")
    if num_classes is not None and labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise InputError(name, f"class indices in [0, {num_classes - 1}]", f"values in [{lo}, {hi}]")
    return labels


def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None, integer: bool = False) -> float:
    """Check that ``value`` is a finite number within ``[low, high]`` (and whole, if ``integer``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(name, "a number", value) from None
    if not np.isfinite(number):
        raise InputError(name, "a finite number", value)
    if integer and number != int(number):
        raise InputError(name, "a whole number", value)
    if (low is not None and number < low) or (high is not None and number > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise InputError(name, f"a value in [{lo}, {hi}]", value)
    return int(number) if integer else number


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    if value not in choices:
        raise InputError(name, "one of " + ", ".join(map(str, choices)), value)
    return value


def with_options(config: Any, options: Mapping[str, Any], argument: str | None = None) -> Any:
    """The dataclass ``config`` with ``options`` (some of its field names) replacing its values, checked again
    by its ``__post_init__``; unknown names raise :class:`InputError` (naming ``argument``) listing the valid ones."""
    fields = list(config.__dataclass_fields__)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise InputError(argument or f"{type(config).__name__} options", "some of " + ", ".join(fields), unknown)
    return dataclasses.replace(config, **options) if options else config
