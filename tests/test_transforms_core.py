"""The transform interface: sampling, severities, grids, clamping, determinism, gradients."""
from __future__ import annotations

import pytest
import torch

from robust.errors import InputError, UnknownNameError
from robust.transforms import MAX_SEVERITY, TRANSFORMS, Param, check_severity, get_transform, severity_from_spec


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
    gen = torch.Generator().manual_seed(0)
    p0 = t.at_severity(0, 64, gen)
    p5 = t.at_severity(5, 64, gen)
    p25 = t.at_severity(2.5, 64, gen)
    assert torch.all(p0["delta"] == 0)
    assert torch.allclose(p5["delta"].abs(), torch.full((64,), 0.5))
    assert torch.allclose(p25["delta"].abs(), torch.full((64,), 0.25))
    assert (p5["delta"] > 0).any() and (p5["delta"] < 0).any()
    with pytest.raises(InputError, match="severity"):
        t.at_severity(6, 4)


def test_sampling_is_deterministic_by_generator_seed():
    t = get_transform("rotation")
    a = t.sample(8, torch.Generator().manual_seed(3))
    b = t.sample(8, torch.Generator().manual_seed(3))
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
        params = {k: v.clone().requires_grad_(True) for k, v in t.at_severity(2, 2, torch.Generator().manual_seed(0)).items()}
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
