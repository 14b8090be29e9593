"""Loaders: folders, npz, pt, torch datasets, digits, conversions at the edge, subsets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from robust.data import (
    ImageSet,
    from_arrays,
    from_torch_dataset,
    load_dataset,
    to_float_images,
)
from robust.errors import FileFormatError, InputError


def test_uint8_and_channels_last_are_converted_once():
    hwc = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    x = to_float_images(hwc)
    assert x.shape == (2, 3, 5, 6) and x.dtype == torch.float32
    assert float(x[1, 2, 3, 4]) == pytest.approx(hwc[1, 3, 4, 2] / 255.0)
    assert to_float_images(np.zeros((2, 7, 7), dtype=np.uint8)).shape == (2, 1, 7, 7)
    with pytest.raises(InputError, match="uint8"):
        to_float_images(np.zeros((1, 3, 4, 4), dtype=np.int32))


def test_image_folder_loader(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("bird", "ant"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "ant" / "notes.txt").write_text("ignored")
    data = load_dataset(tmp_path)
    assert data.class_names == ["ant", "bird"] and len(data) == 6 and data.images.shape[1:] == (3, 6, 6)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    (tmp_path / "bird" / "3.png").write_bytes(b"broken")
    with pytest.raises(FileFormatError, match="3.png"):
        load_dataset(tmp_path)


def test_image_folder_with_mixed_sizes_needs_a_size(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "0.png")
    Image.new("RGB", (5, 5)).save(tmp_path / "a" / "1.png")
    with pytest.raises(FileFormatError, match="one size"):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path, size=8).images.shape == (2, 3, 8, 8)


def test_npz_and_pt_files(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=images, y=np.array([0, 1, 1, 0]), class_names=np.array(["no", "yes"]))
    data = load_dataset(tmp_path / "d.npz")
    assert data.class_names == ["no", "yes"] and data.images.shape == (4, 3, 8, 8)
    torch.save({"images": torch.rand(3, 1, 8, 8), "labels": torch.tensor([2, 0, 1])}, tmp_path / "d.pt")
    data = load_dataset(tmp_path / "d.pt")
    assert data.num_classes == 3 and data.channels == 1
    np.savez(tmp_path / "bad.npz", pictures=images)
    with pytest.raises(FileFormatError, match="images"):
        load_dataset(tmp_path / "bad.npz")
    with pytest.raises(FileFormatError, match="no such file|nothing by that name"):
        load_dataset(tmp_path / "missing.npz")


def test_pt_file_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"images": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(FileFormatError, match="only tensors"):
        load_dataset(tmp_path / "evil.pt")


def test_npz_round_trip_keeps_factors(tmp_path, tiny_synthetic):
    data = tiny_synthetic.split("test_iid", 20)
    path = data.save_npz(tmp_path / "s.npz")
    back = load_dataset(path)
    assert torch.allclose(back.images, data.images, atol=1 / 255)
    assert torch.equal(back.labels, data.labels) and back.class_names == data.class_names
    assert torch.allclose(back.factors["obj_hue"], data.factors["obj_hue"])


def test_torch_dataset_adapter():
    class Pairs(torch.utils.data.Dataset):
        classes = ["a", "b"]

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((3, 4, 4), i / 4), i % 2

    data = from_torch_dataset(Pairs())
    assert data.class_names == ["a", "b"] and data.labels.tolist() == [0, 1, 0, 1]


def test_labels_out_of_range_and_length_mismatch():
    with pytest.raises(InputError, match=r"class indices in \[0, 1\]"):
        ImageSet(torch.rand(2, 3, 4, 4), torch.tensor([0, 2]), ["a", "b"])
    with pytest.raises(InputError, match="2 labels"):
        from_arrays(torch.rand(2, 3, 4, 4), torch.tensor([0]))


def test_digits_split_and_conversion():
    train = load_dataset("digits:train")
    test = load_dataset("digits:test")
    assert len(train) + len(test) == 1797 and train.size == (16, 16)
    rgb = load_dataset("digits:test,rgb=true,size=32")
    assert rgb.channels == 3 and rgb.size == (32, 32)


def test_take_is_seeded_and_class_balanced(tiny_synthetic):
    data = tiny_synthetic.split("test_shift", 200)
    sub = data.take(50, seed=1)
    assert len(sub) == 50 and sub.labels.bincount(minlength=10).tolist() == [5] * 10
    assert torch.equal(sub.images, data.take(50, seed=1).images)
    assert not torch.equal(sub.labels, data.take(50, seed=2).labels)


def test_unknown_data_name_is_a_clear_error():
    with pytest.raises(FileFormatError, match="synthetic:<split>"):
        load_dataset("imagenet")
    with pytest.raises(InputError, match="split"):
        load_dataset("synthetic:valid")


def test_load_dataset_takes_a_height_width_size_for_builtin_sources():
    # What `robust export --data` passes: the classifier's (height, width).
    square = load_dataset("synthetic:test_iid", n=4, size=(16, 16))
    assert square.images.shape == (4, 3, 16, 16)
    assert torch.equal(square.images, load_dataset("synthetic:test_iid", n=4, size=16).images)
    wide = load_dataset("digits", n=4, size=(8, 12))
    assert wide.images.shape[-2:] == (8, 12)
    with pytest.raises(InputError, match="size"):
        load_dataset("digits", n=4, size=(8, 0))


def test_a_synthetic_spec_means_the_same_benchmark_to_the_loader_and_the_shift_suite():
    from robust.audit import AuditContext
    from robust.models import load_classifier
    from robust.suites.core import synthetic_benchmark

    spec = "synthetic:test_iid,size=16,strength=0.5,correlated=texture,seed=4"
    data = load_dataset(spec, n=20)
    clf = load_classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10)), data=data)
    bench = synthetic_benchmark(AuditContext(clf, data, data_source=spec))
    assert bench.describe() == {"size": 16, "correlated": ["texture"], "strength": 0.5, "seed": 4}
    assert torch.equal(bench.split("test_iid", 20).images, data.images)
    assert isinstance(data, ImageSet) and ImageSet.__module__ == "robust.imageset"
