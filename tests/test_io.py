"""robust.io: the one PNG writer (encoding, channel layouts, value range, atomic files)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from robust.errors import InputError
from robust.io import png_bytes, write_png


def _decode(data: bytes) -> tuple[str, np.ndarray]:
    with Image.open(io.BytesIO(data)) as pil:
        return pil.mode, np.asarray(pil)


def test_png_round_trips_float_images_rounded_to_8_bits():
    image = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0))
    mode, pixels = _decode(png_bytes(image))
    expected = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert mode == "RGB" and pixels.shape == (5, 7, 3) and np.array_equal(pixels, expected)
    assert png_bytes(image) == png_bytes(torch.from_numpy(expected).permute(2, 0, 1))  # uint8 in, same file out


@pytest.mark.parametrize(("channels", "mode", "shape"), [(1, "L", (4, 6)), (4, "RGBA", (4, 6, 4)), (2, "L", (4, 6))])
def test_png_channel_layouts(channels, mode, shape):
    image = torch.linspace(0, 1, channels * 24).reshape(channels, 4, 6)
    got_mode, pixels = _decode(png_bytes(image))
    assert got_mode == mode and pixels.shape == shape
    first = (image[0] * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(pixels if pixels.ndim == 2 else pixels[..., 0], first)  # 2 channels: the first shown as grey


def test_png_clamps_values_outside_the_unit_range_and_checks_the_shape():
    _, pixels = _decode(png_bytes(torch.tensor([[[-0.5, 1.5]]])))
    assert pixels.tolist() == [[0, 255]]
    with pytest.raises(InputError, match=r"\[C, H, W\]"):
        png_bytes(torch.zeros(1, 3, 4, 4))


def test_write_png_writes_the_encoded_bytes_atomically(tmp_path):
    image = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    path = write_png(tmp_path / "sub" / "x.png", image)
    assert path == tmp_path / "sub" / "x.png" and path.read_bytes() == png_bytes(image)
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.png"]  # no temporary file left behind
