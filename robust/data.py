"""Datasets: loaders for every source robust accepts, into one in-memory currency (:class:`ImageSet`).

Sources: image folders (one sub-folder per class), ``.npz`` / ``.pt`` files holding images and
labels, any torch ``Dataset`` yielding ``(image, label)``, scikit-learn's digits, and the synthetic
natural-variation benchmark (:mod:`robust.synthetic`). Everything comes out as float32
``[N, C, H, W]`` in ``[0, 1]`` with int64 labels; uint8 and channels-last arrays are converted once,
here at the edge. A data spec names a source and its options (:func:`parse_data_spec`):
``shapes/train,size=48``, ``faces.npz,size=64x48,channels=1``, ``digits:test,size=32``.
"""
from __future__ import annotations

import re
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robust.errors import FileFormatError, InputError
from robust.imageset import ImageSet, fit_images, resize_note
from robust.io import torch_load_tensors
from robust.registry import Spec, parse_options, parse_spec
from robust.seeding import derive_seed, make_generator
from robust.synthetic import parse_synthetic
from robust.validation import check_images, check_labels, check_number

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Options of a data spec that names a path (a folder, ``.npz`` or ``.pt``): ``shapes/train,size=48``.
PATH_OPTIONS = ("size", "channels")
DIGITS_OPTIONS = ("size", "rgb")
BUILTIN_NAMES = ("synthetic", "digits")
# Trailing ``,key=value`` parts of a spec (a path may itself hold commas, never one followed by key=).
_TRAILING_OPTIONS = re.compile(r"^(?P<source>.+?)(?P<options>(?:,[A-Za-z_]\w*=[^,]*)*)$")
# Photos from phones store their rotation in EXIF; orientations 5-8 turn the picture by 90 degrees.
_EXIF_ORIENTATION = 0x0112
_EXIF_TURNED = (5, 6, 7, 8)
_NPZ_MAGIC = b"PK"
_NPY_MAGIC = b"\x93NUMPY"


def to_float_images(array: Any, name: str = "images") -> torch.Tensor:
    """Convert an image batch to float32 ``[N, C, H, W]`` in ``[0, 1]``.

    Accepts torch tensors or NumPy arrays, uint8 (0-255) or float (0-1), ``[N, C, H, W]`` or
    channels-last ``[N, H, W, C]`` (C of 1, 3 or 4), or ``[N, H, W]`` greyscale.
    """
    if isinstance(array, np.ndarray):
        if array.dtype.kind not in "buif":
            raise InputError(name, "numbers (uint8 0-255 or float 0-1)", f"an array of {array.dtype} values")
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


@dataclass
class FolderScan:
    """An image folder's classes and files, with the sizes and colour modes read from the file headers."""

    root: Path
    classes: list[str]
    files: list[tuple[Path, int]]  # (file, class index), in loading order
    sizes: Counter = field(default_factory=Counter)  # (height, width) -> number of images
    modes: Counter = field(default_factory=Counter)  # PIL mode (RGB, RGBA, L, ...) -> number of images

    def counts(self) -> list[int]:
        """Images per class."""
        per_class = Counter(label for _, label in self.files)
        return [per_class[c] for c in range(len(self.classes))]

    def sizes_text(self, limit: int = 5) -> str:
        """``"5 sizes: 32x32 (40), 48x64 (12), ..."``, the commonest first."""
        common = self.sizes.most_common()
        shown = ", ".join(f"{h}x{w} ({k})" for (h, w), k in common[:limit]) + (", ..." if len(common) > limit else "")
        return f"{len(common)} size{'s' if len(common) != 1 else ''}: {shown}"

    def suggested_size(self) -> int:
        """A ``size=`` to suggest: the shorter side of the commonest size."""
        return min(self.sizes.most_common(1)[0][0])

    def size_hint(self) -> str:
        return f"add ,size=N to the data spec to resize them, keeping the aspect ratio by a centre crop: '{self.root},size={self.suggested_size()}'"


def scan_image_folder(path: str | Path) -> FolderScan:
    """The classes (sorted sub-folders, hidden ones left out) and image files of ``path``, reading headers only."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileFormatError(root, "a folder with one sub-folder of images per class", "no sub-folders")
    scan = FolderScan(root, classes, [])
    for label, cls in enumerate(classes):
        for file in sorted((root / cls).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES or file.name.startswith("."):
                continue
            try:
                with Image.open(file) as im:
                    width, height = im.size
                    if im.getexif().get(_EXIF_ORIENTATION, 1) in _EXIF_TURNED:
                        width, height = height, width
                    scan.modes[im.mode] += 1
            except (UnidentifiedImageError, OSError) as exc:
                raise FileFormatError(file, "a readable image", f"unreadable ({exc})") from None
            scan.sizes[(height, width)] += 1
            scan.files.append((file, label))
    if not scan.files:
        raise FileFormatError(root, f"image files ({', '.join(IMAGE_SUFFIXES)}) in the class folders", "none")
    return scan


def _read_image(file: Path, mode: str) -> torch.Tensor:
    """One image file as uint8 ``[C, H, W]`` in ``mode`` (``RGB`` or ``L``), upright as viewers show it (EXIF orientation)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            array = np.asarray(ImageOps.exif_transpose(im).convert(mode))
    except (UnidentifiedImageError, OSError) as exc:
        raise FileFormatError(file, "a readable image", f"unreadable ({exc})") from None
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)


def load_image_folder(path: str | Path, size: int | tuple[int, int] | None = None, channels: int | None = None) -> ImageSet:
    """Images in ``path/<class>/*.png`` (class names are the sorted sub-folder names).

    Every image is converted to RGB (``channels=1``: greyscale). Images of several sizes need
    ``size`` (an int or ``(height, width)``): each one is then resized keeping its aspect ratio
    (:func:`robust.imageset.fit_images`), which the set's ``preprocessing`` records.
    """
    scan = scan_image_folder(path)
    mode = {1: "L", 3: "RGB", None: "RGB"}.get(channels)
    if mode is None:
        raise InputError("channels", "1 or 3", channels)
    if size is None and len(scan.sizes) > 1:
        raise FileFormatError(scan.root, f"images of one size ({scan.size_hint()})", scan.sizes_text())
    hw = None if size is None else (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    images, resized, cropped = [], 0, 0
    for file, _ in scan.files:
        image = _read_image(file, mode)
        if hw is not None:
            if tuple(image.shape[1:]) != hw:
                resized += 1
                cropped += image.shape[1] * hw[1] != image.shape[2] * hw[0]
            image = fit_images(image[None].float() / 255.0, hw)[0]
        images.append(image)
    labels = torch.tensor([label for _, label in scan.files])
    data = from_arrays(torch.stack(images), labels, scan.classes, scan.root.name)
    data.preprocessing = resize_note(hw, resized, cropped, len(images)) if hw is not None else ""
    return data


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
    with open(path, "rb") as fh:
        head = fh.read(len(_NPY_MAGIC))
    if not head.startswith(_NPZ_MAGIC):
        got = "a single .npy array (save with numpy.savez)" if head == _NPY_MAGIC else f"a file that is not a zip archive (starts with {head!r})"
        raise FileFormatError(path, "a NumPy .npz archive (a zip of .npy arrays)", got)
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels, names = _arrays_from_mapping(data, path)
            factors = {k[len("factor_"):]: torch.from_numpy(data[k]) for k in data.files if k.startswith("factor_")}
            images, labels = np.asarray(images), np.asarray(labels)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        reason = "it holds Python objects, which robust never unpickles" if "allow_pickle" in str(exc) else str(exc)
        raise FileFormatError(path, "a NumPy .npz archive of numeric arrays", f"unreadable ({reason})") from None
    for array, wanted in ((images, "numeric images (uint8 0-255 or float 0-1)"), (labels, "integer labels (names go in class_names)")):
        if array.dtype.kind not in "buif":
            raise FileFormatError(path, wanted, f"{wanted.split()[1]} of {array.dtype} values")
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


@dataclass(frozen=True)
class DataSpec:
    """A data spec as written: its ``source`` (a path, or a built-in name) and the options after it.

    ``builtin`` is the parsed spec of a built-in source (``synthetic:<split>``, ``digits[:split]``),
    whose options its own loader reads; a path takes :data:`PATH_OPTIONS`.
    """

    source: str
    options: dict[str, Any] = field(default_factory=dict)
    builtin: Spec | None = None

    def size(self) -> tuple[int, int] | None:
        """The ``size=`` option of a path (``48`` or ``48x64``, height x width) as ``(height, width)``."""
        if self.builtin is not None or "size" not in self.options:
            return None
        return parse_size(self.options["size"], "data option size")

    def channels(self) -> int | None:
        if self.builtin is not None or "channels" not in self.options:
            return None
        value = self.options["channels"]
        if value not in (1, 3) or isinstance(value, bool):
            raise InputError("data option channels", "1 (greyscale) or 3 (RGB)", value)
        return int(value)


def parse_size(value: Any, argument: str = "size") -> tuple[int, int]:
    """``48``, ``"48x64"`` (height x width) or ``(48, 64)`` -> ``(height, width)`` of positive whole numbers."""
    if isinstance(value, str):
        parts: list[Any] = value.lower().split("x")
    elif isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = [value]
    expected = "a positive size N or HxW such as 48 or 48x64"
    if len(parts) not in (1, 2):
        raise InputError(argument, expected, value)
    try:
        hw = [check_number(p, argument, low=1, integer=True) for p in parts]
    except InputError:
        raise InputError(argument, expected, value) from None
    if any(isinstance(p, bool) for p in parts):
        raise InputError(argument, expected, value)
    return (hw[0], hw[-1])


def split_options(text: str) -> tuple[str, str]:
    """``"shapes/train,size=48"`` -> ``("shapes/train", ",size=48")``: a spec's source and its trailing options."""
    match = _TRAILING_OPTIONS.match(text)
    return (match.group("source"), match.group("options")) if match else (text, "")


def parse_data_spec(text: str) -> DataSpec:
    """Split a data spec into its source and options: ``shapes/train,size=48`` -> (``shapes/train``, ``{size: 48}``).

    A path that exists as written is taken whole; otherwise trailing ``,key=value`` parts are its
    options (:data:`PATH_OPTIONS` for a path; the built-in sources ``synthetic`` and ``digits`` read
    theirs). Raises :class:`InputError` for unknown options and :class:`FileFormatError` when
    nothing has that name.
    """
    text = str(text).strip()
    if Path(text).exists():
        return DataSpec(text)
    source, options_text = split_options(text)
    options = parse_options(options_text, "data")
    if Path(source).exists():
        unknown = sorted(set(options) - set(PATH_OPTIONS))
        if unknown:
            raise InputError(f"data {text!r} options", "some of " + ", ".join(PATH_OPTIONS), unknown)
        return DataSpec(source, options)
    if source.split(":")[0] in BUILTIN_NAMES:
        spec = parse_spec(text, "data")
        if spec.name == "digits":
            unknown = sorted(set(spec.options) - set(DIGITS_OPTIONS))
            if unknown:
                raise InputError(f"data {text!r} options", "some of " + ", ".join(DIGITS_OPTIONS), unknown)
        return DataSpec(source, dict(spec.options), spec)
    raise FileFormatError(source, "an existing path (with options such as ,size=48) or a built-in data name "
                          "(synthetic:<split>, digits[:train|test])", "nothing by that name")


def load_dataset(spec: Any, *, n: int | None = None, seed: int = 0, size: int | tuple[int, int] | None = None,
                 channels: int | None = None) -> ImageSet:
    """Load any accepted data source.

    ``spec`` is an :class:`ImageSet`, a torch ``Dataset``, or a data spec (:func:`parse_data_spec`):
    a path (image folder, ``.npz``, ``.pt``) with options ``size`` (``48`` or ``48x64``) and
    ``channels`` (1 or 3), or a built-in name: ``synthetic:<split>`` (options ``size``,
    ``strength``, ``correlated`` as ``a+b``, ``seed``) or ``digits[:train|test]`` (options ``size``,
    ``rgb``). ``n`` keeps a seeded, class-balanced subset; ``size`` (an int or ``(height, width)``)
    and ``channels`` convert at the edge, after the spec's own. Resizing keeps the aspect ratio
    (:func:`robust.imageset.fit_images`) and is recorded in the set's ``preprocessing``.
    """
    if size is not None:
        size = parse_size(size)
    # Built-in sources render square images: at the size itself when it is square, else converted below.
    square = size[0] if size is not None and size[0] == size[1] else None
    own: tuple[tuple[int, int] | None, int | None] = (None, None)
    if isinstance(spec, ImageSet):
        data = spec
    elif isinstance(spec, (str, Path)):
        parsed = parse_data_spec(str(spec))
        own = (parsed.size(), parsed.channels())
        data = _load_parsed(parsed, seed=seed, n=n, size=square, folder_size=own[0] or size, channels=own[1])
    elif hasattr(spec, "__getitem__") and hasattr(spec, "__len__"):
        data = from_torch_dataset(spec)
    else:
        raise InputError("data", "an ImageSet, a torch Dataset, a path or a built-in name (synthetic:test_shift, digits)", type(spec).__name__)
    data = data.take(n, seed)
    for wanted_size, wanted_channels in (own, (size, channels)):
        if wanted_size is not None:
            data = data.resized(wanted_size)
        if wanted_channels is not None:
            data = data.with_channels(wanted_channels)
    return data


def _load_parsed(spec: DataSpec, *, seed: int, n: int | None, size: int | None, folder_size: tuple[int, int] | None,
                 channels: int | None) -> ImageSet:
    if spec.builtin is not None:
        if spec.builtin.name == "synthetic":
            source = parse_synthetic(spec.builtin, size=size or 32, seed=seed)
            return source.benchmark.split(source.split, source.n if source.n is not None else n)
        opts = spec.options
        side = check_number(opts.get("size", size or 16), "digits option size", low=1, integer=True)
        return load_digits(spec.builtin.target or "all", size=side, rgb=bool(opts.get("rgb", False)), seed=seed)
    path = Path(spec.source)
    if path.is_dir():
        return load_image_folder(path, size=folder_size, channels=channels)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix in (".pt", ".pth"):
        return load_pt(path)
    raise FileFormatError(path, "an image folder, a .npz or a .pt file", f"a {suffix or 'suffix-less'} file")
