"""The in-memory dataset currency: :class:`ImageSet` (float32 images in ``[0, 1]``, labels, class names),
and :func:`fit_images`, the one way robust resizes images (keeping their aspect ratio).

Loaders for every source live in :mod:`robust.data`, which re-exports the class.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robust.errors import InputError
from robust.io import atomic_path, fingerprint_tensors
from robust.seeding import derive_seed, make_generator
from robust.validation import check_images, check_labels


def fit_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images ``[N, C, H, W]`` (float, ``[0, 1]``) resized to ``size`` ``(height, width)`` keeping their aspect ratio.

    Each image is scaled (bilinear, antialiased) until it covers ``size``, then its centre is cut
    out: nothing is stretched and nothing is padded; an image of another aspect ratio loses the
    edges of its longer side (the convention of torchvision's ``Resize`` + ``CenterCrop``).
    """
    height, width = images.shape[-2:]
    target_h, target_w = size
    scale = max(target_h / height, target_w / width)
    scaled = (max(target_h, round(height * scale)), max(target_w, round(width * scale)))
    if scaled != (height, width):
        images = F.interpolate(images, size=scaled, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (scaled[0] - target_h) // 2, (scaled[1] - target_w) // 2
    return images[..., top : top + target_h, left : left + target_w].contiguous()


def resize_note(size: tuple[int, int], resized: int, cropped: int, total: int) -> str:
    """What :func:`fit_images` did, in words (recorded as an :class:`ImageSet`'s ``preprocessing``)."""
    if not resized:
        return ""
    text = f"{resized} of {total} images resized to {size[0]}x{size[1]} keeping their aspect ratio"
    return text + (f" ({cropped} centre-cropped to that shape)" if cropped else "")


@dataclass(repr=False)
class ImageSet:
    """Images ``[N, C, H, W]`` (float32, ``[0, 1]``, CPU), labels ``[N]`` and class names.

    ``factors`` holds per-image ground truth when the source knows it (the synthetic benchmark).
    ``preprocessing`` says what was done to the images when they were loaded (resizing), or is empty.
    Indexing with an int, slice, list or tensor returns a new :class:`ImageSet`.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    name: str = "data"
    preprocessing: str = ""

    def __post_init__(self) -> None:
        self.images = check_images(self.images, f"{self.name} images")
        self.class_names = [str(c) for c in self.class_names]
        if not self.class_names:
            raise InputError(f"{self.name} class_names", "at least one class name", "an empty list")
        self.labels = check_labels(self.labels, self.images.shape[0], len(self.class_names), f"{self.name} labels")
        for key, value in self.factors.items():
            if value.shape[0] != self.images.shape[0]:
                raise InputError(f"{self.name} factors[{key!r}]", f"{self.images.shape[0]} values", value.shape[0])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        # Short on purpose: pytest and hypothesis print this for every failing test that received one.
        shown = ", ".join(self.class_names[:6]) + (", ..." if self.num_classes > 6 else "")
        return f"ImageSet({self.name!r}, {len(self)} images {self.channels}x{self.size[0]}x{self.size[1]}, {self.num_classes} classes: {shown})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis (and IPython) print dataclasses field by field, tensors included, unless told otherwise.
        printer.text(repr(self))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __getitem__(self, index: Any) -> ImageSet:
        if isinstance(index, int):
            index = [index]
        if isinstance(index, (list, tuple)):
            index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(
            self.images[index],
            self.labels[index],
            self.class_names,
            {k: v[index] for k, v in self.factors.items()},
            self.name,
            self.preprocessing,
        )

    def take(self, n: int | None, seed: int = 0) -> ImageSet:
        """At most ``n`` images chosen at random (seeded), class-balanced as far as the data allows."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise InputError("n", "a positive number of images", n)
        gen = make_generator(derive_seed(seed, "take", self.name))
        order = torch.randperm(len(self), generator=gen)
        # Round-robin over classes in the shuffled order gives a balanced subset.
        labels = self.labels[order]
        rank = torch.zeros(len(self), dtype=torch.long)
        for c in range(self.num_classes):
            idx = (labels == c).nonzero().squeeze(1)
            rank[idx] = torch.arange(idx.numel())
        chosen = order[torch.argsort(rank * len(self) + torch.arange(len(self)), stable=True)[:n]]
        return self[torch.sort(chosen).values]

    def batches(self, batch_size: int, device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            x = self.images[start : start + batch_size]
            y = self.labels[start : start + batch_size]
            yield (x.to(device), y.to(device)) if device is not None else (x, y)

    def fingerprint(self) -> str:
        return fingerprint_tensors(self.images, self.labels)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": len(self),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "image_shape": [self.channels, *self.size],
            "fingerprint": self.fingerprint(),
            "factors": sorted(self.factors),
            **({"preprocessing": self.preprocessing} if self.preprocessing else {}),
        }

    def resized(self, size: int | tuple[int, int]) -> ImageSet:
        """A copy with images resized to ``size`` keeping their aspect ratio (:func:`fit_images`), which
        ``preprocessing`` then records."""
        hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if hw == self.size:
            return self
        height, width = self.size
        cropped = len(self) if height * hw[1] != width * hw[0] else 0
        note = resize_note(hw, len(self), cropped, len(self))
        return ImageSet(fit_images(self.images, hw), self.labels, self.class_names, self.factors, self.name,
                        "; ".join(filter(None, (self.preprocessing, note))))

    def with_channels(self, channels: int) -> ImageSet:
        """Greyscale <-> RGB conversion to ``channels`` (1 or 3)."""
        if channels == self.channels:
            return self
        if channels == 3 and self.channels == 1:
            images = self.images.expand(-1, 3, -1, -1).contiguous()
        elif channels == 1 and self.channels in (3, 4):
            w = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
            images = (self.images[:, :3] * w).sum(1, keepdim=True)
        elif channels == 3 and self.channels == 4:
            images = self.images[:, :3].contiguous()
        else:
            raise InputError("channels", "1 or 3", channels)
        return ImageSet(images, self.labels, self.class_names, self.factors, self.name, self.preprocessing)

    def save_npz(self, path: str | Path) -> Path:
        """Write ``images`` (uint8 NCHW), ``labels``, ``class_names`` and factors to a ``.npz`` atomically."""
        arrays = {
            "images": (self.images * 255).round().to(torch.uint8).numpy(),
            "labels": self.labels.numpy(),
            "class_names": np.array(self.class_names),
        }
        arrays.update({f"factor_{k}": v.numpy() for k, v in self.factors.items()})
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return path
