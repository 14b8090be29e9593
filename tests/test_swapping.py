"""The structure/appearance model: codes, swaps, training that learns, exact resume, safe files, clear errors."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from robust.errors import FileFormatError, InputError
from robust.gan.swap_training import (
    CooccurrenceDiscriminator,
    SwapTrainConfig,
    SwapTrainer,
    crop_offsets,
    random_crops,
    swap_data,
    train_swap,
)
from robust.gan.swapping import (
    DonorSwap,
    SwapNetConfig,
    build_swap_model,
    fourier_features,
    load_swap_model,
    save_swap_model,
)
from robust.synthetic import SyntheticBenchmark

NET = SwapNetConfig(resolution=16, structure_res=4, structure_channels=2, appearance_dim=8, width=8, channel_max=16,
                    fourier_orientations=1)
TRAIN = SwapTrainConfig(network=NET, steps=4, batch=4, patch_size=8, patch_refs=2, patch_queries=1, d_width=4, d_channel_max=16,
                        r1_interval=2, ema_kimg=0.01, snapshot_every=2, structure_hue_jitter=True,
                        cycle_structure_weight=1.0, cycle_appearance_weight=1.0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return SyntheticBenchmark(size=16, seed=0).split("train", 24).images


def test_codes_and_images_have_the_configured_shapes(images):
    model = build_swap_model(NET)
    structure, appearance = model.encode(images[:5])
    assert structure.shape == (5, 2, 4, 4)
    assert appearance.shape == (5, 8)
    assert model.decode(structure, appearance).shape == (5, 3, 16, 16)
    waves = fourier_features(2, 4)
    assert waves.shape == (12, 4, 4) and float(waves.abs().max()) <= 1.0
    assert fourier_features(0, 4).shape == (0, 4, 4)


def test_a_patch_appearance_code_ignores_where_the_patches_are(images):
    model = build_swap_model(replace(NET, appearance_patch=8))
    x = images[:3]
    quadrants_swapped = torch.cat([x[..., 8:, :], x[..., :8, :]], dim=2)
    quadrants_swapped = torch.cat([quadrants_swapped[..., 8:], quadrants_swapped[..., :8]], dim=3)
    structure, appearance = model.encode(x)
    moved_structure, moved_appearance = model.encode(quadrants_swapped)
    assert structure.shape == (3, 2, 4, 4) and appearance.shape == (3, 8)
    assert torch.allclose(appearance, moved_appearance, atol=1e-5)
    assert not torch.allclose(structure, moved_structure, atol=1e-3)


def test_untrained_round_trip_is_differentiable_and_in_unit_range(images):
    model = build_swap_model(NET)
    x = images[:4].clone().requires_grad_(True)
    y = model.decode(*model.encode(x))
    assert float(y.detach().min()) >= 0.0 and float(y.detach().max()) <= 1.0
    y.square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0


def test_initial_weights_follow_the_seed():
    a, b, c = build_swap_model(NET, 1), build_swap_model(NET, 1), build_swap_model(NET, 2)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))


def test_a_few_steps_reduce_the_reconstruction_loss(images):
    batch = images[:8]
    # The reconstruction weighs more than in real runs: over a few steps the adversarial terms would
    # otherwise dominate what changes.
    trainer = SwapTrainer(replace(TRAIN, batch=8, steps=6, rec_weight=10.0), swap_data(batch))

    def l1() -> float:
        with torch.no_grad():
            return float((trainer.model.reconstruct(batch) - batch).abs().mean())

    before = l1()
    trainer.run()
    assert trainer.step_count == 6
    assert l1() < 0.8 * before


def test_resume_continues_bit_identically(images, tmp_path):
    data = swap_data(images)
    full = train_swap(data, TRAIN, tmp_path / "full")
    resumed = SwapTrainer.resume(tmp_path / "full" / "snapshot-00000002", data)
    assert resumed.step_count == 2
    resumed.run()
    a, b = full.state_tensors(), resumed.state_tensors()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A second call on the same folder continues from the newest snapshot.
    more = train_swap(data, replace(TRAIN, steps=5), tmp_path / "full")
    assert more.step_count == 5 and [r["from_step"] for r in more.runs] == [0, 4]


def test_resume_refuses_other_data_or_another_architecture(images, tmp_path):
    train_swap(swap_data(images[:12]), TRAIN, tmp_path)
    snapshot = tmp_path / "snapshot-00000004"
    with pytest.raises(InputError, match="fingerprint"):
        SwapTrainer.resume(snapshot, swap_data(images[12:]))
    other = replace(TRAIN, cooc_weight=2.0)
    with pytest.raises(InputError, match="only steps and snapshot_every"):
        SwapTrainer.resume(snapshot, swap_data(images[:12]), config=other)


def test_save_load_round_trip_gives_identical_outputs(images, tmp_path):
    model = build_swap_model(NET, 3).eval()
    save_swap_model(model, tmp_path / "m32", {"note": "test"}, half=False)
    loaded = load_swap_model(tmp_path / "m32.json")
    with torch.no_grad():
        assert torch.equal(model.reconstruct(images), loaded.reconstruct(images))
    assert loaded.extra == {"note": "test"}
    save_swap_model(model, tmp_path / "m16")
    assert json.loads((tmp_path / "m16.json").read_text())["weights_dtype"] == "float16"
    half = load_swap_model(tmp_path / "m16.safetensors")
    with torch.no_grad():
        assert torch.allclose(model.reconstruct(images), half.reconstruct(images), atol=0.02)
        assert torch.equal(half.reconstruct(images), load_swap_model(tmp_path / "m16").reconstruct(images))


def test_a_snapshot_loads_as_its_ema_model(images, tmp_path):
    trainer = train_swap(swap_data(images), TRAIN, tmp_path)
    loaded = load_swap_model(tmp_path / "snapshot-00000004")
    with torch.no_grad():
        assert torch.equal(loaded.reconstruct(images), trainer.model_ema.reconstruct(images))


def test_swap_strength_zero_reconstructs_and_one_uses_the_donor(images):
    model = build_swap_model(NET, 4).eval()
    x, donors = images[:6], images[6:12]
    with torch.no_grad():
        structure, _ = model.encode(x)
        donor_appearance = model.encode(donors)[1]
        assert torch.equal(model.swap(x, donor_appearance, 0.0), model.reconstruct(x))
        assert torch.equal(model.swap(x, donor_appearance, 1.0), model.decode(structure, donor_appearance))
        half = model.swap(x, donor_appearance, torch.full((6,), 0.5))
    assert not torch.equal(half, model.reconstruct(x))


def test_donor_swap_follows_sample_ids_not_the_batch(images):
    model = build_swap_model(NET, 5).eval()
    transform = DonorSwap(model, images[12:], strength=1.0, seed=7)
    ids = torch.arange(100, 106)
    whole = transform(images[:6], ids)
    part = transform(images[2:4], ids[2:4])
    assert torch.allclose(whole[2:4], part, atol=1e-6)
    picked = transform.donor_index(torch.arange(1000))
    assert int(picked.min()) >= 0 and int(picked.max()) < 12 and picked.unique().numel() == 12
    assert torch.equal(DonorSwap(model, images[12:], strength=0.0)(images[:6]), model.reconstruct(images[:6]))


def test_random_crops_match_slicing():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    offsets = crop_offsets(2, 3, 8, 4, torch.Generator().manual_seed(0))
    crops = random_crops(x, offsets, 4)
    assert crops.shape == (2, 3, 3, 4, 4)
    for i in range(2):
        for k in range(3):
            r, c = offsets[i, k].tolist()
            assert torch.equal(crops[i, k], x[i, :, r: r + 4, c: c + 4])
    d = CooccurrenceDiscriminator(8, width=4, channel_max=16, features=8)
    assert d(torch.rand(2, 3, 3, 8, 8), torch.rand(2, 2, 3, 8, 8)).shape == (6, 1)


def test_bad_inputs_raise_clear_errors(images, tmp_path):
    model = build_swap_model(NET)
    with pytest.raises(InputError, match="images"):
        model.encode(torch.rand(2, 3, 8, 8))
    with pytest.raises(InputError, match="images"):
        model.encode(torch.rand(2, 1, 16, 16))
    structure, appearance = model.encode(images[:2])
    with pytest.raises(InputError, match="structure"):
        model.decode(structure[:, :1], appearance)
    with pytest.raises(InputError, match="appearance"):
        model.decode(structure, appearance[:, :3])
    with pytest.raises(InputError, match="donor_appearance"):
        model.swap(images[:2], appearance[:1], 1.0)
    with pytest.raises(InputError, match="strength"):
        model.swap(images[:2], appearance, 1.5)
    with pytest.raises(FileFormatError):
        load_swap_model(tmp_path / "missing")
    (tmp_path / "other.json").write_text(json.dumps({"format": "robust-gan-generator"}))
    with pytest.raises(FileFormatError, match="format"):
        load_swap_model(tmp_path / "other")
    with pytest.raises(InputError, match="structure_res"):
        SwapNetConfig(resolution=16, structure_res=16)
    with pytest.raises(InputError, match="appearance_patch"):
        SwapNetConfig(resolution=16, structure_res=4, appearance_patch=16)
    with pytest.raises(InputError, match="patch_size"):
        SwapTrainConfig(network=NET, patch_size=32)
    with pytest.raises(InputError, match="data"):
        SwapTrainer(TRAIN, swap_data(SyntheticBenchmark(size=32, seed=0).split("train", 8).images))
