"""Images in reports: uint8 ``[C, H, W]`` tensors <-> PNG files and base64 data URIs, and where each goes.

Report images live under ``images/`` next to ``report.json``, named by their place in the result
(suite, case, failure or strip position), so the JSON refers to them by relative path and the HTML
embeds the same bytes as data URIs.
"""
from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from robust.errors import FileFormatError
from robust.io import png_bytes, write_bytes
from robust.results import AuditResult

IMAGE_DIR = "images"


def read_png(path: str | Path) -> torch.Tensor:
    """A PNG file -> uint8 ``[C, H, W]`` (grey stays 1 channel)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as pil:
            mode = pil.mode if pil.mode in ("L", "RGB", "RGBA") else "RGB"
            array = np.asarray(pil.convert(mode))
    except (OSError, UnidentifiedImageError) as exc:
        raise FileFormatError(path, "a readable PNG image", f"unreadable ({exc})") from None
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.array(array, copy=True))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def failure_path(suite_name: str, case_index: int, case_name: str, k: int, original: bool = False) -> str:
    suffix = "_original" if original else ""
    return f"{IMAGE_DIR}/{suite_name}/{case_index:03d}_{case_name}/failure_{k:03d}{suffix}.png"


def strip_path(suite_name: str, strip_index: int, j: int) -> str:
    return f"{IMAGE_DIR}/{suite_name}/strip_{strip_index:03d}/{j:03d}.png"


def iter_images(result: AuditResult) -> Iterator[tuple[str, torch.Tensor]]:
    """Every image of a result with its relative path, in a fixed order."""
    for suite in result.suites:
        for ci, case in enumerate(suite.cases):
            for k, failure in enumerate(case.failures):
                if failure.image is not None:
                    yield failure_path(suite.name, ci, case.name, k), failure.image
                if failure.original is not None:
                    yield failure_path(suite.name, ci, case.name, k, original=True), failure.original
        for si, strip in enumerate(suite.strips):
            for j, image in enumerate(strip.images):
                yield strip_path(suite.name, si, j), image


def write_images(result: AuditResult, out_dir: str | Path) -> list[Path]:
    """Write every image of ``result`` as PNG under ``out_dir/images``; unchanged files are left alone."""
    written = []
    for rel, image in iter_images(result):
        path = Path(out_dir) / rel
        data = png_bytes(image)
        if not (path.is_file() and path.read_bytes() == data):
            write_bytes(path, data)
        written.append(path)
    return written
