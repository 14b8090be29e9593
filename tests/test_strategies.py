"""Hypothesis strategies: parameters shrink to the identity and to the mildest failing magnitude,
cases print as calls that rebuild them, batches shrink to the smallest failing one."""
from __future__ import annotations

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

import robust.strategies as rs
from robust.data import ImageSet
from robust.errors import InputError
from robust.plugins import PROFILES, load_all
from robust.transforms import Param, Transform

QUICK = settings(max_examples=40, derandomize=True, deadline=None, database=None)


def test_parameters_shrink_to_the_identity() -> None:
    case = find(rs.transform_params("rotation"), lambda c: True, settings=QUICK)
    assert case.values == {"angle": 0.0} and case.is_identity and case.severity == 0.0


@pytest.mark.parametrize(("name", "param", "threshold", "above"), [("brightness", "delta", 0.3, True), ("brightness", "delta", -0.2, False),
                                                                    ("contrast", "factor", 1.45, True), ("rotation", "angle", -17.0, False)])
def test_shrinking_finds_the_mildest_failing_value(name: str, param: str, threshold: float, above: bool) -> None:
    # A monotone failure beyond ``threshold``: the shrunk case sits within one grid step past it.
    def fails(value: float) -> bool:
        return value > threshold if above else value < threshold

    case = find(rs.transform_params(name), lambda c: fails(c.values[param]), settings=QUICK)
    spec = case.transform.param(param)
    step = (spec.high - spec.low) / rs.DEFAULT_RESOLUTION
    assert fails(case.values[param]) and abs(case.values[param] - threshold) <= step + 1e-9


def test_a_case_prints_as_a_call_that_rebuilds_it() -> None:
    case = find(rs.transform_params("translation"), lambda c: abs(c.values["dx"]) > 0.1 and c.values["dy"] != 0, settings=QUICK)
    text = repr(case)
    assert text.startswith("transform_case('translation', dx=")
    rebuilt = eval(text, {"transform_case": rs.transform_case})
    assert rebuilt.values == case.values
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rebuilt.apply(images), case.apply(images))
    assert case.describe() == f"translation(dx={case.values['dx']:.6g}, dy={case.values['dy']:.6g})"


def test_transform_case_fills_the_identity_and_rejects_unknown_names() -> None:
    case = rs.transform_case("translation", dx=0.1)
    assert case.values == {"dx": 0.1, "dy": 0.0} and not case.is_identity
    with pytest.raises(InputError, match="translation parameters: expected some of dx, dy, got \\['angle'\\]"):
        rs.transform_case("translation", angle=3)


@QUICK
@given(case=rs.transform_params("brightness", max_severity=2.0, sides="up"))
def test_sides_and_max_severity_bound_the_values(case: rs.TransformCase) -> None:
    # Severity 2 of 5 on the upward side reaches 2/5 of the way from 0 to 0.5.
    assert 0.0 <= case.values["delta"] <= 0.2 + 1e-9
    assert case.values["delta"] == pytest.approx(case.severity / 5 * 0.5, abs=1e-6)


@QUICK
@given(case=rs.transform_params("translation", fixed={"dy": 0.05}, sides="down"))
def test_fixed_parameters_stay_fixed(case: rs.TransformCase) -> None:
    assert case.values["dy"] == 0.05 and case.values["dx"] <= 0.0


class _NoisyShift(Transform):
    """A Transform-like extension: a free direction, a magnitude and a noise seed."""

    name = "noisy_shift"
    params = (Param("direction", -1.0, 1.0, kind="free"), Param("magnitude", 0.0, 0.4, 0.0), Param("seed", 0, 0, kind="seed"))

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        noise = torch.stack([torch.rand(images.shape[1:], generator=torch.Generator().manual_seed(int(s))) for s in params["seed"]])
        shift = (params["direction"] * params["magnitude"]).view(-1, 1, 1, 1)
        return (images + shift + 0.01 * noise).clamp(0, 1)


class _PlainShift(Transform):
    """A minimal Transform subclass: name, params and apply."""

    name = "plain_shift"
    params = (Param("amount", -0.3, 0.3, 0.0),)

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return (images + params["amount"].view(-1, 1, 1, 1)).clamp(0, 1)


def test_any_transform_subclass_is_an_extension_point() -> None:
    shrunk = find(rs.transform_params(_NoisyShift()), lambda c: c.values["magnitude"] > 0.1, settings=QUICK)
    assert shrunk.values["seed"] == 0 and shrunk.values["direction"] == -1.0  # free params shrink to low
    assert 0.1 < shrunk.values["magnitude"] <= 0.1 + 0.4 / rs.DEFAULT_RESOLUTION + 1e-9
    seeded = find(rs.transform_params(_NoisyShift()), lambda c: c.values["seed"] > 10, settings=QUICK)
    assert seeded.values["seed"] == 11
    images = torch.full((3, 1, 8, 8), 0.5)
    params = seeded.params(3)
    assert params["seed"].tolist() == [11, 12, 13]  # image i gets seed + i
    plain = find(rs.transform_params(_PlainShift()), lambda c: c.values["amount"] < -0.1, settings=QUICK)
    assert repr(plain).startswith("transform_case(_PlainShift(), amount=") and plain.name == "plain_shift"
    assert torch.allclose(plain.apply(images), (images + plain.values["amount"]).clamp(0, 1))


def test_transforms_draws_registered_names_and_patterns() -> None:
    load_all()
    first = find(rs.transforms(["rotation", "brightness"]), lambda c: True, settings=QUICK)
    assert first.name == "rotation" and first.is_identity
    seen = set()

    @QUICK
    @given(case=rs.transforms("*"))
    def collect(case: rs.TransformCase) -> None:
        seen.add(case.name)

    collect()
    assert len(seen) > 3 and seen <= set(rs.TRANSFORMS.names())
    with pytest.raises(InputError, match="a pattern matching registered transforms"):
        rs.transforms("no_such_*")


def test_corruptions_draw_severity_of_registered_corruptions() -> None:
    assert "augment" in load_all()
    mildest = find(rs.corruptions(["gaussian_noise", "fog"]), lambda c: c.values["severity"] > 2.5, settings=QUICK)
    assert mildest.name == "corruptions:gaussian_noise"  # shrinks toward the first name given
    assert 2.5 < mildest.values["severity"] <= 2.5 + 5 / rs.DEFAULT_RESOLUTION + 1e-9
    assert mildest.values["seed"] == 0
    assert repr(mildest).startswith("transform_case('corruptions:")


def _data() -> ImageSet:
    images = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    return ImageSet(images, torch.arange(12) % 4, ["a", "b", "c", "d"], name="toy")


def test_batches_shrink_to_the_smallest_failing_batch() -> None:
    data = _data()
    batch = find(rs.batches(data, max_size=6), lambda b: any(int(data.labels[i]) == 3 for i in b.indices), settings=QUICK)
    assert batch.indices == [3] and repr(batch) == "Batch(source='toy', indices=[3])"
    assert torch.equal(batch.images, data.images[[3]]) and batch.labels.tolist() == [3] and batch.class_names == ["a", "b", "c", "d"]


@QUICK
@given(batch=rs.batches(_data(), min_size=2, max_size=5), one=rs.samples(_data()))
def test_batches_hold_distinct_images_of_the_dataset(batch: rs.Batch, one: rs.Batch) -> None:
    data = _data()
    assert 2 <= len(batch) <= 5 and len(set(batch.indices)) == len(batch)
    assert torch.equal(batch.images, data.images[batch.indices])
    assert len(one) == 1 and torch.equal(one.images, data.images[one.indices])


def test_batches_draw_from_a_fixture_dataset_with_st_data() -> None:
    data = _data()

    @QUICK
    @given(st.data())
    def inner(drawn: st.DataObject) -> None:
        batch = drawn.draw(rs.batches(data, max_size=3))
        assert 1 <= len(batch) <= 3

    inner()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rs.transform_params("brightness", max_severity=6), "max_severity: expected a value in \\(0, 5\\]"),
        (lambda: rs.transform_params("brightness", sides="left"), "sides: expected one of both, up, down"),
        (lambda: rs.transform_params("brightness", resolution=0), "resolution: expected a positive whole number"),
        (lambda: rs.transform_params("brightness", fixed={"gamma": 1.0}), "brightness fixed parameters: expected some of delta"),
        (lambda: rs.transform_params(object()), "transform: expected a registered name or a robust.transforms.Transform"),
        (lambda: rs.transform_params("no_such_transform"), "transform: expected one of"),
        (lambda: rs.batches(_data(), min_size=0), "min_size/max_size"),
        (lambda: rs.batches(_data(), min_size=20, max_size=30), "min_size: expected at most the dataset's 12 images"),
    ],
)
def test_bad_arguments_raise_input_errors(call, message: str) -> None:
    with pytest.raises(InputError, match=message):
        call()


def test_profiles_are_registered() -> None:
    ci, nightly = settings.get_profile("robust-ci"), settings.get_profile("robust-nightly")
    assert ci.derandomize and ci.database is None and ci.deadline is None and ci.max_examples == PROFILES["robust-ci"]["max_examples"]
    assert not nightly.derandomize and nightly.database is not None and nightly.max_examples > ci.max_examples


def test_load_all_imports_the_core_transform_modules() -> None:
    loaded = load_all()
    assert loaded[:1] == ["robust.transforms"]
    assert {"brightness", "rotation"} <= set(rs.TRANSFORMS.names())
