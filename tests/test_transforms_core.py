"""The transform interface: sampling, severities, grids, clamping, determinism, gradients."""
from __future__ import annotations

import pytest
import torch

from robust.errors import InputError, UnknownNameError
from robust import noise
from robust.transforms import MAX_SEVERITY, TRANSFORMS, Param, Transform, check_severity, get_transform, severity_from_spec


def test_builtin_transforms_are_registered_and_identity_leaves_images_unchanged():
    for name in ("brightness", "contrast", "rotation"):
        t = get_transform(name)
        x = torch.rand(3, 3, 16, 16)
        y = t(x, t.identity(3))
        assert torch.allclose(x, y, atol=1e-5), name
    assert "brightness" in TRANSFORMS


def test_unknown_transform_lists_valid_names():
    with pytest.raises(UnknownNameError, match="brightness"):
        get_transform("brightnes")


def test_severity_moves_parameters_from_identity_to_range_edge():
    t = get_transform("brightness")
    seeds = torch.arange(64)
    p0 = t.at_severity(0, seeds)
    p5 = t.at_severity(5, seeds)
    p25 = t.at_severity(2.5, seeds)
    assert torch.all(p0["delta"] == 0)
    assert torch.allclose(p5["delta"].abs(), torch.full((64,), 0.5))
    assert torch.allclose(p25["delta"].abs(), torch.full((64,), 0.25))
    assert (p5["delta"] > 0).any() and (p5["delta"] < 0).any()
    with pytest.raises(InputError, match="severity"):
        t.at_severity(6, torch.arange(4))


def test_sampling_is_deterministic_by_seeds():
    t = get_transform("rotation")
    a = t.sample(torch.arange(8) + 3)
    b = t.sample(torch.arange(8) + 3)
    assert torch.equal(a["angle"], b["angle"])
    assert float(a["angle"].min()) >= -45 and float(a["angle"].max()) <= 45


def test_grid_includes_identity_and_clamp_projects_into_range():
    t = get_transform("contrast")
    grid = t.grid(4)
    assert {"factor": 1.0} in grid
    clamped = t.clamp({"factor": torch.tensor([-3.0, 9.0])})
    assert clamped["factor"].tolist() == pytest.approx([0.2, 1.8])


def test_transforms_are_differentiable_in_parameters():
    x = torch.rand(2, 3, 16, 16)
    for name in ("brightness", "contrast", "rotation"):
        t = get_transform(name)
        params = {k: v.clone().requires_grad_(True) for k, v in t.at_severity(2, torch.arange(2)).items()}
        t(x, params).sum().backward()
        assert all(v.grad is not None and float(v.grad.abs().sum()) > 0 for v in params.values()), name


def test_bad_params_are_rejected_with_the_parameter_named():
    t = get_transform("brightness")
    with pytest.raises(InputError, match="delta"):
        t(torch.rand(2, 3, 8, 8), {"delta": torch.zeros(3)})
    with pytest.raises(InputError, match="keys delta"):
        t(torch.rand(2, 3, 8, 8), {"shift": torch.zeros(2)})


def test_param_definitions_are_checked():
    with pytest.raises(ValueError):
        Param("x", 0.0, 1.0, identity=2.0)
    with pytest.raises(ValueError):
        Param("x", 0.0, 1.0, kind="other")


def test_describe_names_the_transform_and_its_parameters():
    t = get_transform("rotation")
    assert t.describe({"angle": torch.tensor([12.5, -3.0])}, 1) == "rotation(angle=-3)"


def test_param_owns_the_severity_rule_for_both_sides_and_one_sided_ranges():
    two = Param("delta", -0.5, 1.0, 0.0)
    assert two.two_sided and two.reach("up") == 1.0 and two.reach("down") == -0.5
    assert two.at_severity(0.0, "down") == 0.0 and two.at_severity(5.0, "down") == -0.5 and two.at_severity(2.5, "up") == 0.5
    per_image = two.at_severity(torch.tensor([5.0, 5.0, 1.0]), torch.tensor([True, False, True]))
    assert per_image.tolist() == pytest.approx([1.0, -0.5, 0.2])
    only_down = Param("quality", 10.0, 100.0, 100.0)
    assert not only_down.two_sided and only_down.side == "down" and only_down.at_severity(5.0, only_down.side) == 10.0
    only_up = Param("sigma", 0.0, 3.0, 0.0)
    assert only_up.side == "up" and only_up.at_severity(MAX_SEVERITY, "up") == 3.0
    with pytest.raises(InputError, match="side"):
        two.reach("sideways")


def test_param_grid_spans_the_range_and_holds_the_identity():
    assert Param("factor", 0.2, 1.8, 1.0).grid(4) == pytest.approx([0.2, 0.7333333, 1.0, 1.2666667, 1.8])
    assert Param("angle", -180.0, 180.0, 0.0, kind="free").grid(3) == [-180.0, 0.0, 180.0]
    assert len(Param("angle", -180.0, 180.0, 0.0, kind="free").grid(2)) == 2


def test_severities_are_checked_against_one_range():
    assert check_severity(0) == 0.0 and check_severity("2.5") == 2.5 and check_severity(MAX_SEVERITY) == MAX_SEVERITY
    for bad in (-0.1, 5.5, float("nan"), "x"):
        with pytest.raises(InputError, match=r"\[0, 5\]"):
            check_severity(bad)
    assert severity_from_spec("3") == 3.0 and severity_from_spec(None) is None


class _Seeded(Transform):
    """A transform with a noise seed and two values, to check the layout of the draws."""

    name = "seeded_test"
    params = (Param("level", 0.0, 2.0, 0.0), Param("seed", 0, 0, kind="seed"), Param("angle", -1.0, 1.0, 0.0, kind="free"))

    def apply(self, images, params):
        return images


def test_drawn_parameters_depend_only_on_each_images_own_seed():
    seeds = torch.tensor([5, 17, 2**40 + 3, 99, -4])
    for t in (get_transform("illumination"), get_transform("translation"), _Seeded()):
        for draw in (lambda s: t.sample(s), lambda s: t.at_severity(3.0, s), lambda s: t.sample(s, stream=7)):
            full, part = draw(seeds), draw(seeds[[2, 0]])
            assert all(torch.equal(part[k], full[k][[2, 0]]) for k in t.param_names), t.name
    a, b = _Seeded().sample(seeds), _Seeded().sample(seeds, stream=9)
    assert not torch.equal(a["level"], b["level"]) and not torch.equal(a["seed"], b["seed"])
    # The layout: seeds from noise.subseeds at the stream, the values from noise.uniform at stream + 1.
    assert torch.equal(a["seed"], noise.subseeds(seeds, 0))
    assert torch.equal(a["level"], 2.0 * noise.uniform(seeds, (2,), 1)[:, 0])
    assert torch.equal(a["angle"], -1.0 + 2.0 * noise.uniform(seeds, (2,), 1)[:, 1])


def test_calling_a_transform_draws_from_per_image_seeds():
    t = get_transform("rotation")
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t(x, seeds=10), t(x, t.sample(torch.arange(10, 14))))
    assert torch.equal(t(x, severity=2.0), t(x, t.at_severity(2.0, torch.arange(4))))
    with pytest.raises(InputError, match="seeds"):
        t(x, seeds=torch.arange(3))


def test_expand_broadcasts_one_setting_and_keeps_per_image_tensors():
    t = _Seeded()
    out = t.expand({"level": 1.5, "angle": torch.tensor([0.1, -0.2, 0.3])}, 3, seed=7)
    assert out["level"].tolist() == [1.5] * 3 and out["angle"].tolist() == pytest.approx([0.1, -0.2, 0.3])
    assert out["seed"].tolist() == [7, 8, 9] and out["seed"].dtype == torch.int64
    assert t.expand({"seed": 40}, 2)["seed"].tolist() == [40, 41] and t.expand({}, 2)["level"].tolist() == [0.0, 0.0]
    with pytest.raises(InputError, match="some of level, seed, angle"):
        t.expand({"zoom": 1.0}, 2)
    with pytest.raises(InputError, match=r"shape \[3\]"):
        t.expand({"level": torch.zeros(2)}, 3)
    with pytest.raises(InputError, match="level"):
        t.expand({"level": float("nan")}, 3)


def test_grid_holds_the_identity_once_and_no_near_identity_point():
    from robust.transforms import get_transform

    for name in ("brightness", "contrast", "rotation", "hue"):
        for p in get_transform(name).params:
            if p.kind != "magnitude":
                continue
            for steps in (2, 5, 6, 7):
                values = p.grid(steps)
                assert values == sorted(set(values)) and values.count(p.identity) == 1
                assert not any(0 < abs(v - p.identity) < 1e-6 for v in values), (name, steps, values)
