"""Datasets: loaders for every source robust accepts, into one in-memory currency (:class:`ImageSet`).

Sources: image folders (one sub-folder per class), ``.npz`` / ``.pt`` files holding images and
labels, any torch ``Dataset`` yielding ``(image, label)``, scikit-learn's digits, and the synthetic
natural-variation benchmark (:mod:`robust.synthetic`). Everything comes out as float32
``[N, C, H, W]`` in ``[0, 1]`` with int64 labels; uint8 and channels-last arrays are converted once,
here at the edge.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robust.errors import FileFormatError, InputError
from robust.imageset import ImageSet
from robust.io import torch_load_tensors
from robust.registry import parse_spec
from robust.seeding import derive_seed, make_generator
from robust.synthetic import parse_synthetic
from robust.validation import check_images, check_labels

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def to_float_images(array: Any, name: str = "images") -> torch.Tensor:
    """Convert an image batch to float32 ``[N, C, H, W]`` in ``[0, 1]``.

    Accepts torch tensors or NumPy arrays, uint8 (0-255) or float (0-1), ``[N, C, H, W]`` or
    channels-last ``[N, H, W, C]`` (C of 1, 3 or 4), or ``[N, H, W]`` greyscale.
    """
    if isinstance(array, np.ndarray):
        array = torch.from_numpy(np.ascontiguousarray(array))
    if not isinstance(array, torch.Tensor):
        raise InputError(name, "a tensor or NumPy array of images", type(array).__name__)
    if array.dim() == 3:
        array = array[:, None]
    if array.dim() != 4:
        raise InputError(name, "images shaped [N, C, H, W], [N, H, W, C] or [N, H, W]", f"shape {tuple(array.shape)}")
    if array.shape[1] not in (1, 3, 4) and array.shape[-1] in (1, 3, 4):
        array = array.permute(0, 3, 1, 2)
    if array.dtype == torch.uint8:
        array = array.to(torch.float32) / 255.0
    elif array.is_floating_point():
        array = array.to(torch.float32)
    else:
        raise InputError(name, "uint8 (0-255) or floating-point (0-1) images", str(array.dtype))
    return check_images(array.contiguous(), name)


def _class_names(names: Sequence[str] | None, labels: torch.Tensor, name: str) -> list[str]:
    if names is not None:
        return [str(n) for n in names]
    if labels.numel() == 0:
        raise InputError(name, "at least one labelled image", "no labels")
    return [str(i) for i in range(int(labels.max()) + 1)]


def from_arrays(images: Any, labels: Any, class_names: Sequence[str] | None = None, name: str = "data") -> ImageSet:
    """Build an :class:`ImageSet` from arrays in any accepted layout (see :func:`to_float_images`)."""
    x = to_float_images(images, f"{name} images")
    y = check_labels(labels, x.shape[0], None, f"{name} labels")
    return ImageSet(x, y, _class_names(class_names, y, name), name=name)


def from_torch_dataset(dataset: Any, class_names: Sequence[str] | None = None, limit: int | None = None, name: str = "dataset") -> ImageSet:
    """Materialise a torch ``Dataset`` yielding ``(image, label)`` pairs (tensor, NumPy or PIL images)."""
    images, labels = [], []
    total = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(total):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise InputError(f"{name}[{i}]", "an (image, label) pair", type(item).__name__)
        image, label = item[0], item[1]
        if not isinstance(image, (torch.Tensor, np.ndarray)):
            image = np.asarray(image)  # PIL images
        image = torch.as_tensor(np.asarray(image)) if isinstance(image, np.ndarray) else image
        images.append(image)
        labels.append(int(label))
    if not images:
        raise InputError(name, "a non-empty dataset", "no items")
    if len({tuple(im.shape) for im in images}) > 1:
        raise InputError(f"{name} images", "images of one size", "several sizes (resize them in the dataset's transform)")
    stacked = torch.stack(images)
    if stacked.dim() == 4 and stacked.shape[-1] in (1, 3, 4) and stacked.shape[1] not in (1, 3, 4):
        stacked = stacked.permute(0, 3, 1, 2)
    names = class_names if class_names is not None else getattr(dataset, "classes", None)
    return from_arrays(stacked, torch.tensor(labels), names, name)


def load_image_folder(path: str | Path, size: int | tuple[int, int] | None = None, channels: int | None = None) -> ImageSet:
    """Images in ``path/<class>/*.png`` (class names are the sorted sub-folder names)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise FileFormatError(root, "a folder with one sub-folder of images per class", "no sub-folders")
    images, labels = [], []
    mode = {1: "L", 3: "RGB", None: "RGB"}[channels]
    for label, cls in enumerate(classes):
        for file in sorted((root / cls).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as im:
                    im = im.convert(mode)
                    if size is not None:
                        hw = (size, size) if isinstance(size, int) else size
                        im = im.resize((hw[1], hw[0]), Image.BILINEAR)
                    array = np.asarray(im)
            except (UnidentifiedImageError, OSError) as exc:
                raise FileFormatError(file, "a readable image", f"unreadable ({exc})") from None
            images.append(torch.from_numpy(array.copy()))
            labels.append(label)
    if not images:
        raise FileFormatError(root, f"image files ({', '.join(IMAGE_SUFFIXES)}) in the class folders", "none")
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise FileFormatError(root, "images of one size (or pass size=)", f"{len(shapes)} different sizes")
    stacked = torch.stack(images)
    if stacked.dim() == 3:
        stacked = stacked[:, None]
    else:
        stacked = stacked.permute(0, 3, 1, 2)
    return from_arrays(stacked, torch.tensor(labels), classes, root.name)


def _arrays_from_mapping(data: Mapping[str, Any], path: Path) -> tuple[Any, Any, Any]:
    keys = set(data.keys())
    image_key = next((k for k in ("images", "x", "X", "data") if k in keys), None)
    label_key = next((k for k in ("labels", "y", "Y", "targets") if k in keys), None)
    if image_key is None or label_key is None:
        raise FileFormatError(path, "arrays named images (or x) and labels (or y)", f"keys {sorted(keys)}")
    names = data["class_names"] if "class_names" in keys else None
    if names is not None:
        names = [str(n) for n in (names.tolist() if hasattr(names, "tolist") else names)]
    return data[image_key], data[label_key], names


def load_npz(path: str | Path) -> ImageSet:
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(path, "an existing .npz file", "no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels, names = _arrays_from_mapping(data, path)
            factors = {k[len("factor_"):]: torch.from_numpy(data[k]) for k in data.files if k.startswith("factor_")}
            images, labels = np.asarray(images), np.asarray(labels)
    except (OSError, ValueError) as exc:
        raise FileFormatError(path, "a NumPy .npz archive without pickled objects", f"unreadable ({exc})") from None
    data_set = from_arrays(images, labels, names, path.stem)
    data_set.factors = factors
    return data_set


def load_pt(path: str | Path) -> ImageSet:
    path = Path(path)
    data = torch_load_tensors(path)
    if not isinstance(data, Mapping):
        raise FileFormatError(path, "a dict with images and labels tensors", type(data).__name__)
    images, labels, names = _arrays_from_mapping(data, path)
    return from_arrays(images, labels, names, path.stem)


def load_digits(split: str = "all", size: int = 16, rgb: bool = False, seed: int = 0) -> ImageSet:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package), upsampled.

    ``split`` is ``all``, ``train`` (a seeded, stratified 70%) or ``test`` (the other 30%).
    """
    from sklearn.datasets import load_digits as sk_digits

    if split not in ("all", "train", "test"):
        raise InputError("digits split", "all, train or test", split)
    bunch = sk_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    if rgb:
        images = images.expand(-1, 3, -1, -1).contiguous()
    if split != "all":
        gen = make_generator(derive_seed(seed, "digits-split"))
        in_train = torch.zeros(len(labels), dtype=torch.bool)
        for c in range(10):
            idx = (labels == c).nonzero().squeeze(1)
            idx = idx[torch.randperm(idx.numel(), generator=gen)]
            in_train[idx[: int(round(0.7 * idx.numel()))]] = True
        keep = in_train if split == "train" else ~in_train
        images, labels = images[keep], labels[keep]
    return ImageSet(images, labels, [str(i) for i in range(10)], name=f"digits:{split}")


def load_dataset(spec: Any, *, n: int | None = None, seed: int = 0, size: int | tuple[int, int] | None = None,
                 channels: int | None = None) -> ImageSet:
    """Load any accepted data source.

    ``spec`` is an :class:`ImageSet`, a torch ``Dataset``, a path (image folder, ``.npz``, ``.pt``)
    or a built-in name: ``synthetic:<split>`` (options ``size``, ``strength``, ``correlated`` as
    ``a+b``, ``seed``) or ``digits[:train|test]`` (options ``size``, ``rgb``). ``n`` keeps a seeded,
    class-balanced subset; ``size`` (an int or ``(height, width)``) and ``channels`` convert at the edge.
    """
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
            raise InputError("size", "a positive int or (height, width)", size)
        size = tuple(size)
    # Built-in sources render square images: at the size itself when it is square, else converted below.
    square = size if isinstance(size, int) else (size[0] if size is not None and size[0] == size[1] else None)
    if isinstance(spec, ImageSet):
        data = spec
    elif isinstance(spec, (str, Path)):
        data = _load_named(str(spec), seed=seed, n=n, size=square)
    elif hasattr(spec, "__getitem__") and hasattr(spec, "__len__"):
        data = from_torch_dataset(spec)
    else:
        raise InputError("data", "an ImageSet, a torch Dataset, a path or a built-in name (synthetic:test_shift, digits)", type(spec).__name__)
    data = data.take(n, seed)
    if size is not None:
        data = data.resized(size)
    if channels is not None:
        data = data.with_channels(channels)
    return data


def _load_named(text: str, *, seed: int, n: int | None, size: int | None) -> ImageSet:
    path = Path(text)
    if path.exists():
        if path.is_dir():
            return load_image_folder(path, size=size)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return load_npz(path)
        if suffix in (".pt", ".pth"):
            return load_pt(path)
        raise FileFormatError(path, "an image folder, a .npz or a .pt file", f"a {suffix or 'suffix-less'} file")
    if text.startswith(("synthetic", "digits")):
        spec = parse_spec(text, "data")
        if spec.name == "synthetic":
            source = parse_synthetic(spec, size=size or 32, seed=seed)
            return source.benchmark.split(source.split, source.n if source.n is not None else n)
        if spec.name == "digits":
            opts = dict(spec.options)
            return load_digits(spec.target or "all", size=int(opts.get("size", size or 16)), rgb=bool(opts.get("rgb", False)), seed=seed)
    raise FileFormatError(text, "an existing path or a built-in data name (synthetic:<split>, digits[:train|test])", "nothing by that name")
