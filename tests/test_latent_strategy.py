"""Latent-direction strategy: draws stay in each direction's range, shrink to the first direction and
the mildest failing magnitude, print as a call that rebuilds them, and work with assert_invariant."""
from __future__ import annotations

import re

import pytest
import torch
from hypothesis import find, given, settings
from torch import nn

import robust.strategies as rs
from augment.natra import NaturalTransform
from robust.data import ImageSet
from robust.errors import InputError
from robust.gan.codes_cache import CodeSet
from robust.gan.directions import Directions, find_directions
from robust.gan.latent import latent_stats, sample_ws, synthesize
from robust.models import Classifier
from robust.testing import RobustnessFailure, assert_invariant
from robust.transforms import Transform

from gan_helpers import tiny_generator

QUICK = settings(max_examples=40, derandomize=True, deadline=None, database=None)


@pytest.fixture(scope="module")
def setup():
    G = tiny_generator()
    directions = find_directions(G, "sefa", k=4, seed=0, calibrate=False, stats=latent_stats(G, n=512))
    natural = NaturalTransform(G, directions, invert_steps=5)
    ws, _ = sample_ws(G, 6, seed=3)
    with torch.no_grad():
        images = G.to_unit(G.synthesis(ws))
    data = ImageSet(images, torch.zeros(6, dtype=torch.long), ["a", "b"], name="samples")
    codes = CodeSet(ws, None, None, torch.zeros(6), torch.zeros(6))
    return G, directions, natural, ws, data, codes


class MeanThreshold(nn.Module):
    """Class 1 when the image's mean pixel value crosses ``threshold`` (from below when ``sign`` is 1)."""

    def __init__(self, threshold: float, sign: float):
        super().__init__()
        self.threshold, self.sign = threshold, sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 200.0 * self.sign * (x.mean(dim=(1, 2, 3)) - self.threshold)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def mean_classifier(threshold: float, sign: float) -> Classifier:
    return Classifier(MeanThreshold(threshold, sign), input_size=(3, 16, 16), num_classes=2)


def test_draws_stay_within_each_directions_range(setup):
    _, directions, natural, *_ = setup
    seen = set()

    @QUICK
    @given(case=rs.latent_directions(natural))
    def within(case: rs.LatentCase) -> None:
        low, high = directions.ranges[case.direction].tolist()
        assert low <= case.transform.low <= case.magnitude <= case.transform.high <= high
        assert case.transform.low == pytest.approx(low, abs=1e-6) and case.transform.high == pytest.approx(high, abs=1e-6)
        # Severity 5 reaches the edge of the range on the drawn side.
        edge = case.transform.high if case.magnitude >= 0 else -case.transform.low
        assert abs(case.magnitude) == pytest.approx(case.severity / 5 * edge, abs=1e-6)
        assert case.name == f"latent:{directions.names[case.direction]}"
        seen.add(case.direction)

    within()
    assert seen == {0, 1, 2, 3}

    @QUICK
    @given(case=rs.latent_directions(natural, which=["sefa_3", 1], max_severity=2, sides="down"))
    def bounded(case: rs.LatentCase) -> None:
        low = float(directions.ranges[case.direction, 0])
        assert case.direction in (3, 1) and 0.4 * low - 1e-6 <= case.magnitude <= 0.0

    bounded()


def test_cases_shrink_to_the_first_direction_and_the_identity(setup):
    _, _, natural, _, data, _ = setup
    case = find(rs.latent_directions(natural), lambda c: True, settings=QUICK)
    assert case.direction == 0 and case.magnitude == 0.0 and case.is_identity and case.severity == 0.0
    assert torch.equal(case.apply(data.images), data.images)  # magnitude 0 returns the images themselves
    later = find(rs.latent_directions(natural, which=[2, 0]), lambda c: True, settings=QUICK)
    assert later.direction == 2  # which also sets the shrinking order


def test_a_failing_property_shrinks_to_the_mildest_magnitude(setup):
    _, directions, natural, *_ = setup
    high = float(directions.ranges[2, 1])
    step = high / rs.DEFAULT_RESOLUTION
    threshold = 0.3 * high
    case = find(rs.latent_directions(natural), lambda c: c.direction >= 2 and abs(c.magnitude) > threshold, settings=QUICK)
    assert case.direction == 2 and threshold < case.magnitude <= threshold + step + 1e-9


def test_invariance_failures_shrink_to_the_edit_that_crosses_the_decision(setup, tmp_path):
    # A model that flips when an image's mean pixel value crosses the midpoint between the image and
    # its edit at the range's edge: the shrunk case must cross it and one grid step less must not.
    _, directions, natural, _, data, codes = setup
    image = data.images[:1]
    edge = rs.latent_case(natural, 1, float(directions.ranges[1, 1]) * 0.999, codes=codes, data=data)
    before, after = float(image.mean()), float(edge.apply(image).mean())
    assert abs(after - before) > 1e-3
    clf = mean_classifier((before + after) / 2, 1.0 if after > before else -1.0)

    def breaks(case: rs.LatentCase) -> bool:
        try:
            assert_invariant(clf, image, case, save_dir=tmp_path)
        except RobustnessFailure:
            return True
        return False

    strategy = rs.latent_directions(natural, which=1, sides="up", codes=codes, data=data)
    shrunk = find(strategy, breaks, settings=settings(QUICK, max_examples=100))
    step = float(directions.ranges[1, 1]) / rs.DEFAULT_RESOLUTION
    milder = rs.latent_case(natural, 1, round(shrunk.magnitude - step, 6), codes=codes, data=data)
    assert shrunk.direction == 1 and breaks(shrunk) and not breaks(milder)
    with pytest.raises(RobustnessFailure, match=r"latent:sefa_1\(magnitude=[0-9.]+\): predicted class 1"):
        assert_invariant(clf, image, shrunk, save_dir=tmp_path)
    assert_invariant(clf, image, rs.latent_case(natural, 1, 0.0, codes=codes, data=data))


def test_a_printed_case_rebuilds_the_same_edit(setup):
    _, _, natural, _, data, _ = setup
    failing = []

    @QUICK
    @given(case=rs.latent_directions(natural))
    def prop(case: rs.LatentCase) -> None:
        if case.direction >= 1 and case.magnitude < -0.2:
            failing.append(case)
            raise AssertionError("too far")

    with pytest.raises(AssertionError) as info:
        prop()
    printed = "\n".join(getattr(info.value, "__notes__", []))
    match = re.search(r"case=(latent_case\(<sefa directions>, direction=1, magnitude=(-0\.2[0-9]*)\))", printed)
    assert match, printed
    rebuilt = eval(match.group(1).replace("<sefa directions>", "natural"), {"latent_case": rs.latent_case, "natural": natural})
    assert repr(rebuilt) == match.group(1) == repr(failing[-1]) and rebuilt.magnitude == float(match.group(2))
    # Images outside any code set are inverted one at a time, so a rebuilt case renders the same images.
    images = data.images[:3]
    assert torch.equal(rebuilt.apply(images), failing[-1].apply(images))
    assert not torch.equal(rebuilt.apply(images), images)


def test_cached_codes_render_the_edit_of_the_images_own_codes(setup):
    G, directions, natural, ws, data, codes = setup

    @QUICK
    @given(case=rs.latent_directions(natural, codes=codes, data=data), batch=rs.batches(data, max_size=3))
    def renders(case: rs.LatentCase, batch: rs.Batch) -> None:
        w = ws[batch.indices]
        with torch.no_grad():
            expected = synthesize(G, directions.apply(w, directions.along(case.direction, torch.full((len(w),), case.magnitude))))
        assert torch.allclose(case.apply(batch.images), expected, atol=1e-5)

    renders()


def test_bad_arguments_raise_input_errors(setup):
    G, directions, natural, ws, data, codes = setup
    flat = Directions(directions.vectors[:2], None, torch.tensor([[-1.0, 1.0], [0.0, 0.0]]), ["moves", "stuck"], method="sefa")
    calls = [
        (lambda: rs.latent_directions(object()), "source: expected a NaturalTransform, or Directions with generator="),
        (lambda: rs.latent_directions(directions), "generator: expected the generator the directions belong to"),
        (lambda: rs.latent_directions(natural, generator=tiny_generator(1)), "generator: expected None with a NaturalTransform"),
        (lambda: rs.latent_directions(natural, which=7), "direction: expected a direction name or an index in \\[0, 3\\]"),
        (lambda: rs.latent_directions(natural, which="sefa_9"), "direction: expected one of sefa_0, sefa_1, sefa_2, sefa_3"),
        (lambda: rs.latent_directions(natural, which=[]), "which: expected at least one direction"),
        (lambda: rs.latent_directions(flat, generator=G, which="stuck"), "which: expected directions with a non-empty range"),
        (lambda: rs.latent_directions(natural, max_severity=6), "max_severity: expected a value in \\(0, 5\\]"),
        (lambda: rs.latent_directions(natural, sides="left"), "sides: expected one of both, up, down"),
        (lambda: rs.latent_directions(natural, resolution=0), "resolution: expected a positive whole number"),
        (lambda: rs.latent_directions(natural, codes=codes), "codes/data: expected both"),
        (lambda: rs.latent_directions(natural, codes=codes, data=data[:4]), "codes: expected codes of the 4 images"),
        (lambda: rs.latent_case(natural, 1, magnitude=99.0), "magnitude: expected a value in"),
        (lambda: rs.latent_case(natural, 1.5, magnitude=0.1), "direction: expected a direction name or an index"),
        (lambda: rs.latent_case(natural, 1, 0.1).apply(torch.rand(2, 3, 8, 8)), "images: expected images of size 16x16"),
    ]
    for call, message in calls:
        with pytest.raises(InputError, match=message):
            call()
    # A direction with an empty range is left out by default rather than drawn at 0 forever.
    only = find(rs.latent_directions(flat, generator=G), lambda c: c.magnitude != 0, settings=QUICK)
    assert only.direction == 0


def test_latent_directions_and_natural_transforms_are_transforms_like_any_other(setup):
    from attacks import transform_search

    G, directions, natural, ws, data, codes = setup
    direction = rs.LatentSource(natural, codes, data).direction(1)
    assert isinstance(direction, Transform) and isinstance(natural, Transform)
    clf = mean_classifier(float(data.images.mean()), 1.0)
    labels = clf.predict(data.images)
    found = transform_search(clf, data.images, labels, direction, method="grid", steps=5)
    assert torch.allclose(found.images, direction.apply(data.images, found.params), atol=1e-6)
    grid = {0.0} | {direction.low + u * (direction.high - direction.low) for u in (0.0, 0.25, 0.5, 0.75, 1.0)}
    assert all(min(abs(v - g) for g in grid) < 1e-5 for v in found.params["magnitude"].tolist())
    # The strategies draw every direction's magnitude of a NaturalTransform bound to the images' codes.
    bound = natural.with_codes(codes, data)
    case = find(rs.transform_params(bound), lambda c: not c.is_identity, settings=QUICK)
    mags = torch.tensor([[case.values[name] for name in bound.param_names]]).expand(len(ws), -1)
    with torch.no_grad():
        expected = synthesize(G, directions.apply(ws, mags))
    assert torch.allclose(case.apply(data.images), expected, atol=1e-5)
