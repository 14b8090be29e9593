"""The in-memory dataset currency: :class:`ImageSet` (float32 images in ``[0, 1]``, labels, class names).

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


@dataclass
class ImageSet:
    """Images ``[N, C, H, W]`` (float32, ``[0, 1]``, CPU), labels ``[N]`` and class names.

    ``factors`` holds per-image ground truth when the source knows it (the synthetic benchmark).
    Indexing with an int, slice, list or tensor returns a new :class:`ImageSet`.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    name: str = "data"

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
        }

    def resized(self, size: int | tuple[int, int]) -> ImageSet:
        """A copy with images resized (bilinear, antialiased) to ``size``."""
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(hw) == self.size:
            return self
        images = F.interpolate(self.images, size=hw, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return ImageSet(images, self.labels, self.class_names, self.factors, self.name)

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
        return ImageSet(images, self.labels, self.class_names, self.factors, self.name)

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
