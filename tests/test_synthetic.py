"""The synthetic natural-variation benchmark: determinism, ground truth, split correlations."""
from __future__ import annotations

import math

import pytest
import torch

from robust import synthetic as S
from robust.errors import InputError
from robust.seeding import make_generator


def _factors(n: int, seed: int = 0):
    classes = torch.arange(n) % S.NUM_CLASSES
    return classes, S.sample_independent(n, make_generator(seed))


def test_splits_are_deterministic_by_seed_and_differ_between_seeds(tiny_synthetic):
    a = tiny_synthetic.split("train", 30)
    b = S.SyntheticBenchmark(size=16, seed=0).split("train", 30)
    c = S.SyntheticBenchmark(size=16, seed=1).split("train", 30)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (30, 3, 16, 16) and 0 <= float(a.images.min()) and float(a.images.max()) <= 1


def test_render_reproduces_a_split_exactly_from_its_factors(tiny_synthetic):
    data = tiny_synthetic.split("test_shift", 20)
    assert torch.equal(S.render(data.labels, data.factors, 16), data.images)
    one = S.render(data.labels[3:4], {k: v[3:4] for k, v in data.factors.items()}, 16)
    assert torch.equal(one[0], data.images[3])


@pytest.mark.parametrize("name, value", [("bg_hue", None), ("texture", None), ("texture_phase", None)])
def test_background_factors_change_only_the_background(name, value):
    classes, f = _factors(20)
    f["light_strength"] = torch.zeros(20)
    f["mark"] = torch.zeros(20, dtype=torch.long)
    before = S.render(classes, f, 32)
    g = dict(f)
    spec = S.factor(name)
    g[name] = (f[name] + 1) % len(spec.categories) if spec.is_categorical else (f[name] + 0.37) % 1.0
    after = S.render(classes, g, 32)
    inside = S.object_mask(classes, f, 32) >= 1.0
    outside = S.object_mask(classes, f, 32) <= 0.0
    diff = (after - before).abs().amax(1)
    assert float(diff[inside].max()) < 1e-6
    assert float(diff[outside].mean()) > 0.005


@pytest.mark.parametrize("name", ["obj_hue", "fill"])
def test_object_factors_change_only_the_object(name):
    classes, f = _factors(20, seed=1)
    f["light_strength"] = torch.zeros(20)
    f["mark"] = torch.zeros(20, dtype=torch.long)
    f["fill"] = torch.full((20,), 2)  # hatched: fill changes are visible
    g = dict(f)
    g[name] = (f[name] + 0.5) % 1.0 if name == "obj_hue" else torch.zeros(20, dtype=torch.long)
    diff = (S.render(classes, g, 32) - S.render(classes, f, 32)).abs().amax(1)
    mask = S.object_mask(classes, f, 32)
    assert float(diff[mask <= 0].max()) < 1e-6
    assert float(diff[mask >= 1].mean()) > 0.02


def test_pose_factors_move_the_object_mask():
    classes, f = _factors(10, seed=2)
    base = S.object_mask(classes, f, 32)
    for name, delta in (("pos_x", 0.1), ("pos_y", -0.1), ("scale", 0.1), ("rotation", 0.4)):
        g = dict(f)
        g[name] = f[name] + delta
        moved = S.object_mask(classes, g, 32)
        changed = ((moved - base).abs().sum((1, 2)) > 1.0).float().mean()
        assert float(changed) >= 0.8, name
    g = dict(f)
    g["pos_x"] = f["pos_x"] + 0.25  # a quarter of the half-width is 4 pixels at 32 px
    centroid = lambda m: (m * torch.arange(32.0)).sum((1, 2)) / m.sum((1, 2))  # noqa: E731
    shift = centroid(S.object_mask(classes, g, 32)) - centroid(base)
    assert torch.allclose(shift, torch.full_like(shift, 4.0), atol=0.35)


def test_corner_mark_appears_in_its_corner_only():
    classes, f = _factors(4, seed=3)
    f["mark"] = torch.tensor([0, 1, 2, 4])
    f["light_strength"] = torch.zeros(4)
    with_mark = S.render(classes, f, 32)
    g = dict(f)
    g["mark"] = torch.zeros(4, dtype=torch.long)
    diff = (with_mark - S.render(classes, g, 32)).abs().amax(1)
    assert float(diff[0].max()) == 0.0
    assert float(diff[1, :6, :6].mean()) > 0.05 and float(diff[1, 8:, :].max()) == 0.0  # top left
    assert float(diff[2, :6, -6:].mean()) > 0.05  # top right
    assert float(diff[3, -6:, -6:].mean()) > 0.05  # bottom right


def test_light_strength_zero_is_uniform_and_positive_strength_shades():
    classes, f = _factors(6, seed=4)
    f["light_strength"] = torch.zeros(6)
    flat = S.render(classes, f, 32)
    g = dict(f)
    g["light_strength"] = torch.full((6,), 0.4)
    g["light_angle"] = torch.zeros(6)  # light from the left: right side brighter by the field
    lit = S.render(classes, g, 32)
    ratio_left = (lit[..., :, :6].sum() / flat[..., :, :6].sum())
    ratio_right = (lit[..., :, -6:].clamp(max=1).sum() / flat[..., :, -6:].sum())
    assert ratio_left < 0.8 and ratio_right > 1.1


def test_train_split_correlates_chosen_factors_and_shift_split_does_not():
    bench = S.SyntheticBenchmark(size=16, correlated=("texture", "obj_hue"), strength=0.9, seed=0)
    classes, train = bench.sample("train", 2000)
    follow = (train["texture"] == classes % 5).float().mean()
    assert 0.87 < float(follow) < 0.96  # 0.9 + 0.1 * 1/5 chance agreement
    hue_bin = torch.floor(train["obj_hue"] * 10).long()
    assert 0.87 < float((hue_bin == classes).float().mean()) < 0.95
    classes, shift = bench.sample("test_shift", 2000)
    assert float((shift["texture"] == classes % 5).float().mean()) < 0.26
    classes, single = bench.sample("shift_texture", 2000)
    assert float((single["texture"] == classes % 5).float().mean()) < 0.26
    assert float((torch.floor(single["obj_hue"] * 10).long() == classes).float().mean()) > 0.87


def test_classes_are_balanced_and_factors_cover_their_ranges():
    bench = S.SyntheticBenchmark(size=16)
    classes, f = bench.sample("generator", 1000)
    assert classes.bincount().tolist() == [100] * 10
    for spec in S.FACTORS:
        v = f[spec.name]
        if spec.is_categorical:
            assert set(v.tolist()) == set(range(len(spec.categories)))
        else:
            span = (float(v.max()) - float(v.min())) / (spec.high - spec.low)
            assert span > 0.95, spec.name


def test_invalid_arguments_are_named():
    with pytest.raises(InputError, match="size"):
        S.SyntheticBenchmark(size=8)
    with pytest.raises(InputError, match="factor"):
        S.SyntheticBenchmark(correlated=("colour",))
    with pytest.raises(InputError, match="strength"):
        S.SyntheticBenchmark(strength=1.5)
    classes, f = _factors(3)
    del f["fill"]
    with pytest.raises(InputError, match="missing fill"):
        S.render(classes, f)
    classes, f = _factors(3)
    f["texture"] = torch.tensor([0, 1, 9])
    with pytest.raises(InputError, match="texture"):
        S.render(classes, f)
    with pytest.raises(InputError, match="classes"):
        S.render(torch.tensor([0, 10, 1]), _factors(3)[1])


def test_every_size_in_range_renders():
    classes, f = _factors(2)
    for size in (16, 33, 64, 128):
        assert S.render(classes, f, size).shape == (2, 3, size, size)
    assert math.isclose(S.FACTORS[0].high, 2 * math.pi)


def test_data_spec_parses_into_benchmark_split_and_count():
    source = S.parse_synthetic("synthetic:train,size=16,strength=0.5,correlated=texture+scale,seed=7,n=12")
    assert source.benchmark.describe() == {"size": 16, "correlated": ["texture", "scale"], "strength": 0.5, "seed": 7}
    assert (source.split, source.n) == ("train", 12)
    default = S.parse_synthetic("synthetic", size=24, seed=3)
    assert default.benchmark.describe() == {"size": 24, "correlated": list(S.DEFAULT_CORRELATED),
                                            "strength": S.DEFAULT_STRENGTH, "seed": 3}
    assert (default.split, default.n) == ("test_shift", None)
    with pytest.raises(InputError, match="synthetic options"):
        S.parse_synthetic("synthetic:train,colour=red")
    with pytest.raises(InputError, match="synthetic"):
        S.parse_synthetic("digits:train")


def test_the_benchmark_module_does_not_import_the_loaders():
    import subprocess
    import sys

    code = "import sys, robust.synthetic; print('robust.data' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
