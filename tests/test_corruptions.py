"""The corruption suite: validity of every corruption x severity, seeding, graded effect, metrics, CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from augment import _corruption_ops as ops
from augment.corruptions import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    ALL_CORRUPTIONS,
    BENCHMARK_CORRUPTIONS,
    CORRUPTIONS,
    HELDOUT_CORRUPTIONS,
    average_error,
    corrupt,
    corruption_error,
    corruption_errors,
    get_corruption,
    image_seeds,
    mce,
    parse_corruption_set,
    relative_corruption_error,
    relative_mce,
)
from robust.errors import InputError, UnknownNameError
from robust.transforms import TRANSFORMS, get_transform

# Corruptions whose output does not depend on the noise seed.
DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression", "gaussian_blur", "saturate"}


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Four 224x224 crops of the two photographs scikit-learn ships (natural image statistics)."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    # Read the files directly: importing scikit-learn itself takes seconds.
    folder = Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "images"
    china, flower = (np.asarray(Image.open(folder / f"{name}.jpg").convert("RGB")) for name in ("china", "flower"))
    crops = np.stack([china[100:324, 200:424], flower[100:324, 150:374], china[0:224, 0:224], flower[200:424, 300:524]])
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def _dssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """1 - SSIM (7x7 uniform window, as scikit-image computes it), averaged: a structural image distance."""

    def f(t):
        return F.avg_pool2d(F.pad(t, (3, 3, 3, 3), mode="replicate"), 7, stride=1)

    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(1 - ssim.mean())


# -- names and registries ---------------------------------------------------------------------------

def test_names_registries_and_contract_params():
    assert len(BENCHMARK_CORRUPTIONS) == 15 and len(HELDOUT_CORRUPTIONS) == 4
    assert ALL_CORRUPTIONS == BENCHMARK_CORRUPTIONS + HELDOUT_CORRUPTIONS
    assert sorted(CORRUPTIONS.names()) == sorted(ALL_CORRUPTIONS)
    for name in ALL_CORRUPTIONS:
        c = get_corruption(name)
        assert c.name == name
        assert [(p.name, p.low, p.high, p.identity, p.kind) for p in c.params] == [("severity", 0.0, 5.0, 0.0, "magnitude"), ("seed", 0, 0, 0.0, "seed")]
        assert isinstance(get_transform(f"corruptions:{name}"), type(c))
        assert f"corruptions:{name}" in TRANSFORMS
    assert get_corruption("corruptions:fog").name == "fog"


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        get_corruption("gaussian")
    message = str(info.value)
    assert "gaussian" in message and all(n in message for n in ALL_CORRUPTIONS)
    with pytest.raises(UnknownNameError):
        corrupt(torch.rand(1, 3, 8, 8), "no_such_corruption", 1)


@pytest.mark.parametrize("bad", [-0.5, 5.5, float("nan"), "high"])
def test_invalid_severity_says_what_is_valid(bad):
    with pytest.raises(InputError) as info:
        corrupt(torch.rand(2, 3, 8, 8), "gaussian_noise", bad)
    assert "[0, 5]" in str(info.value) and "severity" in str(info.value)


def test_invalid_severity_in_params_and_tensor_shape():
    t = get_corruption("fog")
    with pytest.raises(InputError, match="severity"):
        t(torch.rand(2, 3, 8, 8), {"severity": torch.tensor([1.0, 6.0]), "seed": torch.zeros(2, dtype=torch.int64)})
    with pytest.raises(InputError, match=r"\[2\]"):
        corrupt(torch.rand(2, 3, 8, 8), "fog", torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(InputError, match="images"):
        corrupt(torch.rand(2, 3, 8, 8) * 3, "fog", 1)


# -- every corruption at every severity -------------------------------------------------------------

SEVERITY_COLUMN = torch.tensor([0.0, 1.0, 2.0, 2.5, 3.0, 4.0, 5.0])


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_every_severity_valid_seeded_and_reproducible_alone(name, photos):
    # One batch holds every severity (a per-image severity tensor), image i at SEVERITY_COLUMN[i].
    x = _resize(photos[[0, 1, 2, 3, 0, 1, 2]], 16)
    y = corrupt(x, name, SEVERITY_COLUMN, seed=7)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1 and bool(torch.isfinite(y).all())
    assert torch.equal(y, corrupt(x, name, SEVERITY_COLUMN, seed=7)), "same seed, same result"
    assert torch.equal(y[0], x[0]), "severity 0 is the identity"
    assert all(not torch.equal(y[i], x[i]) for i in range(1, 7))
    # Image 4 corrupted alone (a batch of 1, told its index) equals image 4 of the batch.
    alone = corrupt(x[4:5], name, 3.0, seed=7, start=4)
    torch.testing.assert_close(alone[0], y[4], atol=1e-5, rtol=0)
    if name not in DETERMINISTIC:
        assert not torch.equal(corrupt(x[4:5], name, 3.0, seed=8, start=4), alone), "another seed, other noise"


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_effect_grows_with_severity_at_32(name, photos):
    # A structural distance (1 - SSIM): pixel distance is not monotone in every published table
    # (frost's image weight falls 0.7 -> 0.65 at a fixed frost weight from level 3 to 4, which moves
    # the mean back toward the clean image while the image's share of the signal keeps falling).
    x = _resize(photos[:2], 32).repeat(6, 1, 1, 1)  # severity 0 for images 0-1, 1 for 2-3, ...
    severity = torch.arange(6.0).repeat_interleave(2)
    seeds = torch.tensor([11, 12]).repeat(6)  # the same noise at every severity
    y = get_corruption(name)(x, {"severity": severity, "seed": seeds})
    distances = [_dssim(x[2 * s : 2 * s + 2], y[2 * s : 2 * s + 2]) for s in range(6)]
    assert distances[0] == pytest.approx(0, abs=1e-6)
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_works_at_224_on_a_batch_of_one(name, photos):
    x = photos[1:2]
    y = corrupt(x, name, 5, seed=2)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert float((y - x).abs().mean()) > 0.01


def test_dtype_channels_and_non_square_images_are_kept(photos):
    x64 = _resize(photos[:1], 16).double()
    grey = _resize(photos[:1], 16).mean(1, keepdim=True)
    wide = F.interpolate(photos[:1], size=(12, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    for name in ALL_CORRUPTIONS:
        assert corrupt(x64, name, 3).dtype == torch.float64
        y = corrupt(grey, name, 4)
        assert y.shape == grey.shape and float(y.min()) >= 0 and float(y.max()) <= 1
        assert corrupt(wide, name, 4).shape == wide.shape


# -- severity tables and the resolution rule --------------------------------------------------------

def test_continuous_severity_interpolates_the_table():
    noise = get_corruption("gaussian_noise")
    sigma = noise.levels(torch.tensor([0.0, 1.0, 2.5, 5.0]))["sigma"]
    torch.testing.assert_close(sigma, torch.tensor([0.0, 0.08, 0.15, 0.38]))
    shot = get_corruption("shot_noise").levels(torch.tensor([1.0, 5.0]))["level"]
    torch.testing.assert_close(shot.pow(-2), torch.tensor([60.0, 3.0]))


def test_spatial_columns_scale_with_image_size():
    defocus = get_corruption("defocus_blur")
    at224 = defocus.levels(torch.tensor([3.0]), 224, 224)
    at32 = defocus.levels(torch.tensor([3.0]), 32, 48)
    torch.testing.assert_close(at224["radius"], torch.tensor([6.0]))
    torch.testing.assert_close(at32["radius"], torch.tensor([6.0 * 32 / 224]))
    # Not a length: JPEG quality is the same at every size.
    jpeg = get_corruption("jpeg_compression")
    assert float(jpeg.levels(torch.tensor([2.0]), 16, 16)["quality"]) == 18.0


def test_blur_is_graded_below_one_pixel():
    k = ops.gaussian_kernels(torch.tensor([0.0, 0.05, 0.1, 0.2]))
    centre = k[:, k.shape[1] // 2]
    assert float(centre[0]) == pytest.approx(1, abs=1e-3)
    assert bool((centre[1:] < centre[:-1]).all()), "sub-pixel sigma still blurs, more with larger sigma"
    torch.testing.assert_close(k.sum(1), torch.ones(4))


# -- closed forms agree with their definitions ------------------------------------------------------

def test_noise_statistics_follow_the_table():
    grey = torch.full((2, 3, 64, 64), 0.5)
    z = corrupt(grey, "gaussian_noise", 1, seed=3) - grey
    assert float(z.std()) == pytest.approx(0.08, rel=0.05) and abs(float(z.mean())) < 0.005
    flipped = corrupt(grey, "impulse_noise", 4, seed=3) != grey
    assert float(flipped.float().mean()) == pytest.approx(0.17, abs=0.01)
    # Poisson(x * photons) / photons: mean x, variance x / photons (dark pixels: exact inversion;
    # bright ones: the skew-corrected normal branch), on the lattice 1 / photons.
    dark = torch.full((2, 3, 64, 64), 0.1)
    shot = corrupt(dark, "shot_noise", 5, seed=3)
    assert float(shot.mean()) == pytest.approx(0.1, abs=0.005)
    assert float(shot.var()) == pytest.approx(0.1 / 3, rel=0.05)
    assert set(torch.unique(shot * 3).round().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    shot = corrupt(grey, "shot_noise", 1, seed=3)
    assert float(shot.mean()) == pytest.approx(0.5, abs=0.005)
    assert float(shot.var()) == pytest.approx(0.5 / 60, rel=0.05)


def test_brightness_and_saturate_match_an_hsv_round_trip(photos):
    import kornia.color as KC

    x = _resize(photos[:2], 16)
    hsv = KC.rgb_to_hsv(x)
    brighter = hsv.clone()
    brighter[:, 2] = (brighter[:, 2] + 0.3).clamp(0, 1)
    torch.testing.assert_close(corrupt(x, "brightness", 3), KC.hsv_to_rgb(brighter).clamp(0, 1), atol=1e-4, rtol=0)
    saturated = hsv.clone()
    saturated[:, 1] = (saturated[:, 1] * 5 + 0.1).clamp(0, 1)
    torch.testing.assert_close(corrupt(x, "saturate", 4), KC.hsv_to_rgb(saturated).clamp(0, 1), atol=1e-4, rtol=0)


def test_contrast_and_pixelate_closed_forms():
    x = torch.rand(2, 3, 20, 20)
    mean = x.mean((2, 3), keepdim=True)
    torch.testing.assert_close(corrupt(x, "contrast", 2), (x - mean) * 0.3 + mean)
    # Level 5 keeps floor(20 * 0.25) = 5 pixels: blocks of 4x4 averaged, then repeated.
    blocks = F.avg_pool2d(x, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)
    torch.testing.assert_close(corrupt(x, "pixelate", 5), blocks)


def test_jpeg_quality_tables_and_quality_ordering(photos):
    torch.testing.assert_close(ops.quant_tables(torch.tensor([50.0]), chroma=False)[0, 0, :3], torch.tensor([16.0, 11.0, 10.0]))
    torch.testing.assert_close(ops.quant_tables(torch.tensor([25.0]), chroma=False)[0, 0, :3], torch.tensor([32.0, 22.0, 20.0]))
    x = _resize(photos[:2], 32)
    errors = [float((ops.jpeg(x, torch.full((2,), q)) - x).abs().mean()) for q in (90.0, 50.0, 10.0)]
    assert errors[0] < errors[1] < errors[2]
    # A flat image has only a DC coefficient: it stays flat, within half a DC quantisation step
    # (80 / 8 grey levels at quality 10).
    flat = ops.jpeg(torch.full((1, 3, 16, 16), 0.4), torch.tensor([10.0]))
    assert float(flat.std()) == 0 and abs(float(flat.mean()) * 255 - 102) <= 5


# -- metrics ----------------------------------------------------------------------------------------

def test_mce_arithmetic_on_a_known_table():
    errors = {"fog": [0.1, 0.2, 0.3, 0.4, 0.5], "snow": [0.2, 0.2, 0.2, 0.2, 0.2]}
    reference = {"fog": [0.2, 0.3, 0.4, 0.5, 0.6], "snow": 0.5}
    assert corruption_error(errors["fog"], reference["fog"]) == pytest.approx(1.5 / 2.0)
    assert corruption_error(errors["snow"], 0.5) == pytest.approx(1.0 / 2.5)
    assert mce(errors, reference) == pytest.approx((0.75 + 0.4) / 2)
    assert mce(errors, reference, names=["snow"]) == pytest.approx(0.4)
    # Relative: (sum(E) - 5 * clean) / (sum(R) - 5 * clean_ref).
    assert relative_corruption_error(errors["fog"], 0.05, reference["fog"], 0.1) == pytest.approx((1.5 - 0.25) / (2.0 - 0.5))
    assert relative_mce(errors, 0.05, reference, 0.1) == pytest.approx(((1.25 / 1.5) + (0.75 / 2.0)) / 2)
    assert average_error(errors) == pytest.approx(2.5 / 10)


def test_alexnet_reference_normalises_itself_to_one():
    alexnet = {name: [v] * 5 for name, v in ALEXNET_ERRORS.items()}
    assert set(ALEXNET_ERRORS) == set(BENCHMARK_CORRUPTIONS)
    assert mce(alexnet, ALEXNET_ERRORS) == pytest.approx(1.0)
    assert relative_mce(alexnet, ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS, ALEXNET_CLEAN_ERROR) == pytest.approx(1.0)


def test_metric_inputs_are_checked():
    with pytest.raises(InputError, match="reference"):
        mce({"fog": [0.1] * 5}, {"snow": [0.2] * 5})
    with pytest.raises(InputError, match="5 error rates"):
        corruption_error([0.1] * 5, [0.2] * 4)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        corruption_error([0.1, 1.2], 0.5)
    with pytest.raises(InputError, match="above zero"):
        corruption_error([0.1], 0.0)
    with pytest.raises(InputError, match="clean error"):
        relative_corruption_error([0.3] * 5, 0.1, [0.2] * 5, 0.4)


def test_corruption_errors_runs_a_classifier_over_the_table():
    from robust.models import Classifier

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    clf = Classifier(net, input_size=(3, 8, 8), num_classes=2)
    x = torch.rand(6, 3, 8, 8)
    y = clf.predict(x)
    result = corruption_errors(clf, x, y, names=["fog", "contrast"], severities=[1, 5], batch_size=4)
    assert result.clean_error == 0.0 and set(result.errors) == {"fog", "contrast"}
    assert all(len(v) == 2 and all(0 <= e <= 1 for e in v) for v in result.errors.values())
    # The same seeds as corrupt(): batch boundaries do not change the corrupted images.
    expected = float((clf.predict(corrupt(x, "fog", 5)) != y).float().mean())
    assert result.errors["fog"][1] == pytest.approx(expected)
    assert result.average_error() == pytest.approx(average_error(result.errors))


def test_image_seeds_follow_the_contract():
    from robust.seeding import derive_seed

    seeds = image_seeds(5, "fog", 3, start=10)
    assert seeds.tolist() == [derive_seed(5, "fog", i) for i in (10, 11, 12)]


# -- the one parser of corruption sets and severities ----------------------------------------------

@pytest.mark.parametrize("spec, names, severities", [
    ("corruptions", BENCHMARK_CORRUPTIONS, []),
    ("corruptions:benchmark", BENCHMARK_CORRUPTIONS, []),
    ("corruptions:heldout", HELDOUT_CORRUPTIONS, []),
    ("corruptions:all@2.5", ALL_CORRUPTIONS, [2.5]),
    ("corruptions:fog@3", ("fog",), [3.0]),
    ("corruptions,names=snow+fog,severities=5+1+5", ("snow", "fog"), [1.0, 5.0]),
    ("corruptions,names=heldout+fog+saturate", (*HELDOUT_CORRUPTIONS, "fog"), []),
    ("corrupt:heldout@1/2", HELDOUT_CORRUPTIONS, [0.5]),  # any spec name: the caller's
    ("corruptions@5,n=10,failures=2", BENCHMARK_CORRUPTIONS, [5.0]),  # other options are the caller's
])
def test_corruption_sets_and_severities_have_one_syntax(spec, names, severities):
    assert parse_corruption_set(spec) == (list(names), severities)


@pytest.mark.parametrize("spec, expected", [
    ("corruptions@0", "severities in (0, 5]"),
    ("corruptions@5.5", "severities in (0, 5]"),
    ("corruptions,severities=1+0", "severities in (0, 5]"),
    ("corruptions@nan", "severities in (0, 5]"),
    ("corruptions,severities=1+x", "a number"),
    ("corruptions:fog,names=snow", "a target or names=..., not both"),
    ("corruptions@3,severities=1+3", "@severity or severities=..., not both"),
    ("corruptions:fgo", "one of all, benchmark, brightness"),
    ("corruptions,names=fog+", "one of all, benchmark, brightness"),
])
def test_bad_corruption_sets_and_severities_name_the_argument(spec, expected):
    with pytest.raises(InputError, match=r"^my argument: expected ") as info:
        parse_corruption_set(spec, "my argument")
    assert info.value.name == "my argument" and expected in str(info.value)


# -- CLI --------------------------------------------------------------------------------------------

def test_cli_writes_a_frozen_corrupted_copy(tmp_path):
    from robust.cli import cli
    from robust.data import ImageSet, load_dataset
    from robust.io import read_json

    images = torch.rand(5, 3, 16, 16)
    source = ImageSet(images, torch.tensor([0, 1, 0, 1, 0]), ["a", "b"], name="toy").save_npz(tmp_path / "toy.npz")
    out = tmp_path / "toy-c"
    result = CliRunner().invoke(cli, ["corrupt", str(source), "--out", str(out), "--corruptions", "fog,heldout",
                                      "--severities", "1,2.5", "--batch-size", "2", "--seed", "4"])
    assert result.exit_code == 0, result.output
    manifest = read_json(out / "manifest.json")
    assert manifest["corruptions"] == ["fog", *HELDOUT_CORRUPTIONS] and manifest["severities"] == [1.0, 2.5]
    fog = load_dataset(str(out / "fog" / "2.5.npz"))
    expected = corrupt(load_dataset(str(source)).images, "fog", 2.5, seed=4)
    torch.testing.assert_close(fog.images, (expected * 255).round() / 255, atol=1e-6, rtol=0)
    assert fog.labels.tolist() == [0, 1, 0, 1, 0]
    bad = CliRunner().invoke(cli, ["corrupt", str(source), "--out", str(out), "--severities", "7"])
    assert bad.exit_code == 2 and "--severities: expected severities in (0, 5]" in bad.output
    # The spec syntax (+) writes the same files as the older commas.
    again = CliRunner().invoke(cli, ["corrupt", str(source), "--out", str(tmp_path / "plus"), "--corruptions", "fog+heldout",
                                     "--severities", "2.5+1", "--batch-size", "3", "--seed", "4"])
    assert again.exit_code == 0, again.output
    assert read_json(tmp_path / "plus" / "manifest.json")["severities"] == [1.0, 2.5]
    assert torch.equal(load_dataset(str(tmp_path / "plus" / "fog" / "2.5.npz")).images, fog.images)


def test_cli_corruption_options_read_the_spec_syntax_and_the_older_commas():
    from robust.cli.corrupt_cmd import parse_corruptions, parse_severities

    assert parse_corruptions("fog,heldout") == parse_corruptions("fog+heldout") == ["fog", *HELDOUT_CORRUPTIONS]
    assert parse_corruptions("all") == list(ALL_CORRUPTIONS)
    assert parse_severities("3, 1,3") == parse_severities("1+3") == [1.0, 3.0]
    for text, option in (("0", "--severities"), ("1+6", "--severities")):
        with pytest.raises(InputError, match="severities in \\(0, 5\\]") as info:
            parse_severities(text)
        assert info.value.name == option
    with pytest.raises(UnknownNameError) as info:
        parse_corruptions("fog,smog")
    assert info.value.name == "--corruptions" and "heldout" in str(info.value)


# -- one noise key: (seed, corruption, severity, image), whatever suite spec asks ------------------------

class _PixelHash(torch.nn.Module):
    """Two logits that move with any pixel: images that differ at all get unrelated predictions."""

    def __init__(self, dims: int):
        super().__init__()
        self.register_buffer("w", torch.randn(dims, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1) @ self.w) * 1000
        return torch.stack([torch.sin(s), torch.cos(s)], 1)


def test_audit_corruption_noise_depends_on_seed_corruption_severity_and_image_only():
    from robust.audit import AuditConfig, run_audit
    from robust.data import ImageSet, load_dataset
    from robust.models import Classifier

    base = load_dataset("synthetic:test_iid,size=16", n=32)
    data = ImageSet(base.images, base.labels % 2, ["even", "odd"], name="toy")
    clf = Classifier(_PixelHash(3 * 16 * 16), input_size=(3, 16, 16), num_classes=2)
    specs = ["corruptions:fog,failures=32", "corruptions:fog@3,failures=32,name=single", "corruptions,names=snow+fog,failures=32,name=pair"]
    result = run_audit(clf, data, AuditConfig(specs, seed=7, progress=False))
    cases = [next(c for c in result.suite(name).cases if c.name == "fog_3") for name in ("corruptions", "single", "pair")]
    assert cases[0].metrics["acc"] == cases[1].metrics["acc"] == cases[2].metrics["acc"]
    expected = (corrupt(data.images, "fog", 3, seed=7) * 255).round().to(torch.uint8)  # what `robust corrupt --seed 7` writes
    shown = [{f.index: f.image for f in case.failures} for case in cases]
    assert shown[0] and shown[0].keys() == shown[1].keys() == shown[2].keys()
    for i, image in shown[0].items():
        assert torch.equal(image, expected[i]) and torch.equal(shown[1][i], image) and torch.equal(shown[2][i], image)
    single = corrupt(data.images[5:6], "fog", 3, seed=7, ids=torch.tensor([5]))
    assert torch.equal(single, corrupt(data.images, "fog", 3, seed=7)[5:6])


def test_corruption_strip_shows_an_image_the_corruption_breaks():
    from robust.audit import AuditConfig, run_audit
    from robust.data import ImageSet, load_dataset
    from robust.models import Classifier

    base = load_dataset("synthetic:test_iid,size=16", n=32)
    data = ImageSet(base.images, base.labels % 2, ["even", "odd"], name="toy")
    clf = Classifier(_PixelHash(3 * 16 * 16), input_size=(3, 16, 16), num_classes=2)
    suite = run_audit(clf, data, AuditConfig(["corruptions:gaussian_noise"], progress=False)).suite("corruptions")
    strip = suite.strips[0]
    shown = int(strip.name.split("image ")[1].split(";")[0])
    label = data.class_names[int(data.labels[shown])]
    worst = min(range(1, len(strip.values)), key=lambda i: strip.values[i])
    assert strip.captions[0] == f"clean: {label}" and not strip.captions[worst].endswith(f": {label}")
