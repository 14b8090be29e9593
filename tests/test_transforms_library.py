"""The photometric and geometric transform library: identities, ranges, meanings, batching, gradients."""
from __future__ import annotations

import math

import pytest
import torch

from robust.errors import InputError
from robust.transforms import TRANSFORMS, get_transform, load_builtin_transforms

load_builtin_transforms()

LIBRARY = ("brightness", "contrast", "hue", "saturation", "gamma", "illumination", "blur", "jpeg",
           "rotation", "translation", "scale", "perspective")
EXACT_IDENTITY = tuple(name for name in LIBRARY if name != "jpeg")


def smooth_images(n: int = 4, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Low-frequency colour images (what natural-image transforms are meant for), in [0.05, 0.95]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 4, 4, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 0.9 + 0.05


def test_every_library_transform_is_registered():
    for name in LIBRARY:
        assert name in TRANSFORMS, name


@pytest.mark.parametrize("name", EXACT_IDENTITY)
def test_identity_parameters_leave_images_unchanged(name):
    t = get_transform(name)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(t(x, t.identity(3)), x, atol=1e-5), name
    assert torch.allclose(t(x, severity=0.0), x, atol=1e-5), name


def test_jpeg_at_quality_100_is_close_to_the_identity_and_low_quality_is_worse():
    t = get_transform("jpeg")
    x = smooth_images(4, size=32)
    err = {q: float((t(x, t.expand({"quality": q}, 4)) - x).abs().mean()) for q in (100.0, 50.0, 10.0)}
    assert err[100.0] < 0.01
    assert err[100.0] < err[50.0] < err[10.0]


@pytest.mark.parametrize("name", LIBRARY)
def test_random_parameters_keep_shape_and_unit_range(name):
    t = get_transform(name)
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    y = t(x, seeds=3)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


@pytest.mark.parametrize("name", LIBRARY)
def test_parameters_act_per_image(name):
    t = get_transform(name)
    x = smooth_images(3)
    params = t.sample(torch.arange(3) + 4)
    batched = t(x, params)
    for i in range(3):
        alone = t(x[i : i + 1], {k: v[i : i + 1] for k, v in params.items()})
        assert torch.allclose(batched[i : i + 1], alone, atol=1e-5), name


@pytest.mark.parametrize("name", LIBRARY)
def test_gradients_reach_images_and_every_parameter_and_are_finite(name):
    t = get_transform(name)
    assert t.differentiable
    x = smooth_images(4).requires_grad_(True)
    params = t.sample(torch.arange(4) + 5)
    params = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    out = t.apply(x, params)
    weights = torch.rand(out.shape, generator=torch.Generator().manual_seed(6))
    grads = torch.autograd.grad((out * weights).sum(), [x, *params.values()])
    for g in grads:
        assert torch.isfinite(g).all(), name
    assert float(grads[0].abs().sum()) > 0, name
    assert any(float(g.abs().sum()) > 0 for g in grads[1:]), name


@pytest.mark.parametrize("name", ("gamma", "blur", "hue", "saturation"))
def test_gradients_stay_finite_at_black_grey_and_identity(name):
    t = get_transform(name)
    x = torch.cat([torch.zeros(1, 3, 16, 16), torch.full((1, 3, 16, 16), 0.5), torch.ones(1, 3, 16, 16)])
    params = {k: v.clone().requires_grad_(True) for k, v in t.identity(3).items()}
    out = t.apply(x, params)
    grads = torch.autograd.grad(out.sum(), list(params.values()))
    assert all(torch.isfinite(g).all() for g in grads), name


def test_colour_transforms_leave_grey_images_alone_and_jpeg_accepts_them():
    x = smooth_images(2, channels=1)
    for name in ("hue", "saturation"):
        t = get_transform(name)
        assert torch.equal(t(x, t.sample(torch.arange(2))), x)
    jpeg = get_transform("jpeg")
    y = jpeg(x, jpeg.expand({"quality": 30}, 2))
    assert y.shape == x.shape


def test_hue_is_periodic_and_saturation_zero_is_grey():
    x = smooth_images(2)
    hue = get_transform("hue")
    assert torch.allclose(hue(x, hue.expand({"shift": math.pi}, 2)), hue(x, hue.expand({"shift": -math.pi}, 2)), atol=1e-4)
    assert not torch.allclose(hue(x, hue.expand({"shift": 1.0}, 2)), x, atol=1e-2)
    sat = get_transform("saturation")
    grey = sat(x, sat.expand({"factor": 0.0}, 2))
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6) and torch.allclose(grey[:, 1], grey[:, 2], atol=1e-6)


def test_gamma_is_a_power_curve():
    t = get_transform("gamma")
    x = smooth_images(2)
    assert torch.allclose(t(x, t.expand({"gamma": 2.0}, 2)), x**2, atol=1e-5)
    assert float(t(x, t.expand({"gamma": 0.5}, 2)).mean()) > float(x.mean())


def test_illumination_brightens_the_side_the_light_comes_from():
    t = get_transform("illumination")
    x = torch.full((1, 3, 16, 16), 0.5)
    from_right = t(x, t.expand({"strength": 0.5, "angle": 0.0}, 1))
    assert float(from_right[..., -1].mean()) > 0.7 and float(from_right[..., 0].mean()) < 0.3
    from_below = t(x, t.expand({"strength": 0.5, "angle": 90.0}, 1))
    assert float(from_below[..., -1, :].mean()) > float(from_below[..., 0, :].mean())
    assert t.param("angle").kind == "free"


def test_blur_smooths_more_with_larger_sigma_and_keeps_flat_images_flat():
    t = get_transform("blur")
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))

    def roughness(img: torch.Tensor) -> float:
        return float((img[..., 1:] - img[..., :-1]).abs().mean())

    r = [roughness(t(x, t.expand({"sigma": s}, 2))) for s in (0.0, 0.8, 2.5)]
    assert r[0] > r[1] > r[2]
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(t(flat, t.expand({"sigma": 2.0}, 1)), flat, atol=1e-5)


def test_translation_moves_content_by_a_fraction_of_the_image():
    t = get_transform("translation")
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 4] = 1.0
    right = t(x, t.expand({"dx": 0.25, "dy": 0.0}, 1))
    assert float(right[0, 0, 8, 8]) == pytest.approx(1.0, abs=1e-5)
    down = t(x, t.expand({"dx": 0.0, "dy": 0.125}, 1))
    assert float(down[0, 0, 10, 4]) == pytest.approx(1.0, abs=1e-5)


def test_scale_enlarges_content_above_one():
    t = get_transform("scale")
    x = torch.zeros(1, 1, 16, 16)
    x[..., 6:10, 6:10] = 1.0
    big = t(x, t.expand({"factor": 1.4}, 1))
    small = t(x, t.expand({"factor": 0.6}, 1))
    assert float(big.sum()) > float(x.sum()) > float(small.sum())


def test_perspective_tilt_narrows_one_edge_only():
    t = get_transform("perspective")
    rows = torch.linspace(0, 1, 16).view(1, 1, 16, 1).expand(1, 1, 16, 16).contiguous()
    tilted = t(rows, t.expand({"tilt_x": 0.4, "tilt_y": 0.0}, 1))
    assert torch.allclose(tilted[..., 0], rows[..., 0], atol=1e-4)
    assert not torch.allclose(tilted[..., -1], rows[..., -1], atol=1e-2)
    assert len(t.grid(3)) == 9


def test_severity_scales_every_library_transform_from_identity():
    for name in LIBRARY:
        t = get_transform(name)
        x = smooth_images(2)
        p5 = t.at_severity(5, torch.arange(2))
        for p in t.params:
            if p.kind == "magnitude":
                assert torch.all((p5[p.name] == p.low) | (p5[p.name] == p.high)), (name, p.name)
        assert not torch.allclose(t(x, p5), x, atol=1e-3), name


def test_the_maths_is_plain_functions_the_classes_call():
    import robust.transforms.functional as F

    x = smooth_images(2)
    zero, one = torch.zeros(2), torch.ones(2)
    assert torch.allclose(F.rotate(x, zero), x, atol=1e-5) and torch.allclose(F.translate(x, zero, zero), x, atol=1e-5)
    assert torch.allclose(F.adjust_gamma(x, 2 * one), x**2, atol=1e-5) and torch.equal(F.gaussian_blur(x, zero, 3.0), x)
    angle = torch.tensor([30.0, -10.0])
    assert torch.equal(F.rotate(x, angle), get_transform("rotation")(x, {"angle": angle}))
    assert torch.equal(F.illuminate(x, 0.5 * one, angle), get_transform("illumination")(x, {"strength": 0.5 * one, "angle": angle}))


def _disk(size: int = 32, background: float = 0.3) -> torch.Tensor:
    """One bright disk in the middle of a plain background, 3 channels."""
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    inside = (r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) <= (size / 5) ** 2
    return torch.where(inside, 1.0, background).expand(1, 3, size, size).clone()


@pytest.mark.parametrize("name, values", [("scale", {"factor": 0.6}), ("translation", {"dx": 0.25, "dy": -0.25}),
                                          ("rotation", {"angle": 45.0}), ("perspective", {"tilt_x": 0.4, "tilt_y": 0.4})])
def test_geometric_transforms_fill_with_the_edge_colour_and_draw_no_copies(name, values):
    import robust.transforms.functional as F

    x = _disk()
    t = get_transform(name)
    out = t(x, t.expand(values, 1))
    for corner in (out[..., 0, 0], out[..., 0, -1], out[..., -1, 0], out[..., -1, -1]):
        assert torch.allclose(corner, torch.full_like(corner, 0.3), atol=1e-6)  # the background colour, not black
    assert float((out > 0.65).float().sum()) <= float((x > 0.65).float().sum()) * 1.45  # one disk, never more
    colours = smooth_images(2, size=16)
    shrunk = get_transform("scale")(colours, {"factor": torch.full((2,), 0.6)})
    assert torch.allclose(shrunk[..., 0, 0], F.edge_colour(colours)[..., 0, 0], atol=1e-6)


def test_reflected_and_black_borders_stay_available():
    x = _disk()
    reflect = get_transform("scale,border=reflect")
    copies = reflect(x, reflect.expand({"factor": 0.6}, 1))
    shrunk = get_transform("scale")(x, {"factor": torch.tensor([0.6])})
    band = torch.ones(32, 32, dtype=torch.bool)
    band[7:25, 7:25] = False  # outside the shrunk frame
    assert not bool((shrunk[..., band] > 0.65).any()) and bool((copies[..., band] > 0.65).any())  # mirrored copies
    black = get_transform("rotation,border=zeros")
    assert float(black(x, black.expand({"angle": 45.0}, 1))[..., 0, 0].abs().max()) == 0.0
    assert repr(reflect) == "Scale(border='reflect')" and repr(get_transform("scale")) == "Scale()"
    with pytest.raises(InputError, match="rotation border: expected one of edge, zeros, reflect"):
        get_transform("rotation,border=wrap")
