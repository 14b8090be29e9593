"""Errors, registries, spec strings, validation, seeding and counter-based noise."""
from __future__ import annotations

import pytest
import torch

from robust import noise
from robust.errors import InputError, UnknownNameError
from robust.registry import Registry, parse_number, parse_spec
from robust.seeding import derive_seed, resolve_device
from robust.validation import check_images, check_labels, check_number, with_options


def test_registry_lists_valid_names_on_unknown_lookup():
    reg: Registry[int] = Registry("widget")
    reg.add("alpha", 1)
    reg.add("beta", 2)
    with pytest.raises(UnknownNameError) as info:
        reg.get("gamma")
    assert "alpha, beta" in str(info.value) and "'gamma'" in str(info.value)
    assert reg.names("a*") == ["alpha"]


def test_registry_refuses_two_objects_under_one_name():
    reg: Registry[int] = Registry("widget")
    reg.add("alpha", 1)
    with pytest.raises(ValueError):
        reg.add("alpha", 2)


def test_spec_strings_parse_name_target_value_and_options():
    spec = parse_spec("pgd:linf@8/255,steps=20,random_start=false")
    assert (spec.name, spec.target, spec.at) == ("pgd", "linf", "8/255")
    assert spec.options == {"steps": 20, "random_start": False}
    assert parse_number(spec.at) == pytest.approx(8 / 255)
    assert str(spec) == "pgd:linf@8/255,steps=20,random_start=False"
    assert parse_spec("corruptions:gaussian_noise@3").target == "gaussian_noise"
    with pytest.raises(InputError, match="spec"):
        parse_spec("pgd:linf@8,steps")
    with pytest.raises(InputError, match="8/0"):
        parse_number("8/0", "eps")


@pytest.mark.parametrize(
    "images, fragment",
    [
        ([1, 2], "torch.Tensor"),
        (torch.rand(3, 8, 8), "4 dimensions"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), "floating-point"),
        (torch.rand(1, 3, 8, 8) * 255, "divide by 255"),
        (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
        (torch.full((1, 3, 8, 8), float("inf")), "NaN or Inf"),
        (torch.rand(0, 3, 8, 8), "at least one image"),
    ],
)
def test_check_images_names_argument_expected_and_got(images, fragment):
    with pytest.raises(InputError) as info:
        check_images(images, "batch")
    assert str(info.value).startswith("batch: expected")
    assert fragment in str(info.value)


def test_check_images_channel_and_size_constraints():
    with pytest.raises(InputError, match="1 channels"):
        check_images(torch.rand(2, 3, 8, 8), channels=1)
    with pytest.raises(InputError, match="16x16"):
        check_images(torch.rand(2, 3, 8, 8), size=(16, 16))
    x = torch.rand(2, 3, 8, 8)
    assert check_images(x, channels=3, size=(8, 8)) is x


def test_check_labels_range_length_and_dtype():
    assert check_labels([0, 2, 1], 3, 3).dtype == torch.int64
    with pytest.raises(InputError, match=r"class indices in \[0, 2\]"):
        check_labels(torch.tensor([0, 3]), 2, 3)
    with pytest.raises(InputError, match="3 labels"):
        check_labels(torch.tensor([0, 1]), 3, 3)
    with pytest.raises(InputError, match="integer"):
        check_labels(torch.tensor([0.5, 1.0]))
    with pytest.raises(InputError, match="a value in"):
        check_number(2.0, "eps", low=0, high=1)


def test_device_resolution_and_seed_derivation():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InputError, match="device"):
        resolve_device("tpu:9")
    assert derive_seed(1, "a") == derive_seed(1, "a") != derive_seed(1, "b") != derive_seed(2, "a")


def test_counter_noise_depends_only_on_each_sample_seed():
    seeds = torch.tensor([5, 9, 13])
    batch = noise.normal(seeds, (3, 4, 4))
    alone = noise.normal(torch.tensor([9]), (3, 4, 4))
    assert torch.equal(batch[1:2], alone)
    assert not torch.equal(batch[0], batch[1])
    assert not torch.equal(noise.normal(seeds, (8,), stream=1), noise.normal(seeds, (8,), stream=2))


def test_counter_noise_has_the_right_moments():
    u = noise.uniform(torch.arange(64), (1024,))
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01
    z = noise.normal(torch.arange(64), (1024,))
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    lam = torch.tensor([[0.5] * 256, [4.0] * 256, [80.0] * 256])
    p = noise.poisson(lam, torch.arange(3))
    assert torch.equal(p, p.round())
    means = p.mean(1)
    assert torch.allclose(means, lam[:, 0], rtol=0.2)


def test_hash_noise_is_uniform_and_keyed_per_image():
    keys = noise.keys32(torch.tensor([1, 2]), stream=1)
    u = noise.uniform32(keys, (20000,))
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.003
    assert abs(float(torch.corrcoef(u)[0, 1])) < 0.03
    z = noise.normal32(keys, (5001,))
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    torch.testing.assert_close(noise.normal32(keys[1:], (5001,))[0], z[1])


def test_subseeds_are_per_image_streams_and_seeds_are_checked():
    seeds = torch.tensor([0, 5, 2**50 + 1])
    one, three = noise.subseeds(seeds, 4), noise.subseeds(seeds, 4, count=3)
    assert one.dtype == torch.int64 and bool((one >= 0).all()) and bool((one < 2**62).all())
    assert torch.equal(three[:, 0], one) and len(set(three[1].tolist())) == 3
    assert torch.equal(noise.subseeds(seeds[1:], 4), one[1:]) and not torch.equal(noise.subseeds(seeds, 5), one)
    assert noise.check_seeds([3, 4], 2).tolist() == [3, 4]
    for bad in (torch.zeros(2), torch.zeros(2, 2, dtype=torch.long), torch.tensor([True, False])):
        with pytest.raises(InputError, match="seeds"):
            noise.check_seeds(bad)
    with pytest.raises(InputError, match="3 integers"):
        noise.check_seeds(torch.arange(2), 3)


def test_with_options_rebuilds_a_config_dataclass_and_checks_the_names():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Config:
        steps: int = 3
        size: float = 0.5

        def __post_init__(self) -> None:
            check_number(self.steps, "steps", low=1, integer=True)

    assert with_options(Config(), {"steps": 7}) == Config(7) and with_options(Config(2), {}) == Config(2)
    with pytest.raises(InputError, match="Config options: expected some of steps, size"):
        with_options(Config(), {"stepz": 3})
    with pytest.raises(InputError, match="steps"):
        with_options(Config(), {"steps": 0})
