"""Classic augmentations: AugMix, RandAugment, TrivialAugment and the Jensen-Shannon consistency loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from augment import classic
from augment.classic import AugMix, RandAugment, TrivialAugment, augmix_consistency_loss
from robust.errors import InputError
from robust.seeding import make_generator
from robust.transforms import get_transform


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    gen = make_generator(0)
    smooth = F.interpolate(torch.rand(6, 3, 4, 4, generator=gen), size=(16, 16), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(6, 3, 16, 16, generator=gen)).clamp(0, 1)


AUGMENTS = [AugMix(), RandAugment(), TrivialAugment()]


@pytest.mark.parametrize("aug", AUGMENTS, ids=lambda a: a.name)
def test_valid_output_deterministic_and_reproducible_alone(aug, images):
    params = aug.sample(torch.arange(6) + 3)
    y = aug(images, params)
    assert y.shape == images.shape and y.dtype == images.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, aug(images, params)), "same parameters, same result"
    alone = aug(images[2:3], {k: v[2:3] for k, v in params.items()})
    torch.testing.assert_close(alone[0], y[2], atol=1e-5, rtol=0)
    other = dict(params, seed=params["seed"] + 1)
    assert not torch.equal(aug(images, other), y), "other seeds, other choices"
    assert float((y - images).abs().mean()) > 0.01


@pytest.mark.parametrize("aug", AUGMENTS, ids=lambda a: a.name)
def test_registered_and_drawn_from_per_image_seeds(aug, images):
    assert type(get_transform(aug.name)) is type(aug)
    a = aug(images, seeds=5)
    b = aug(images, seeds=5)
    assert torch.equal(a, b)
    alone = aug(images[3:5], seeds=torch.arange(8, 10))
    torch.testing.assert_close(alone, a[3:5], atol=1e-5, rtol=0)


def test_magnitude_controls_strength(images):
    ra = RandAugment(num_ops=2)
    seeds = torch.arange(6)
    weak = ra(images, {"magnitude": torch.full((6,), 1.0), "seed": seeds})
    strong = ra(images, {"magnitude": torch.full((6,), 30.0), "seed": seeds})
    assert float((strong - images).abs().mean()) > float((weak - images).abs().mean())
    mix = AugMix()
    assert torch.equal(mix(images, {"severity": torch.zeros(6), "seed": seeds}), images), "AugMix severity 0 is the identity"
    assert RandAugment(magnitude=12).sample(torch.arange(3))["magnitude"].tolist() == [12.0] * 3
    torch.testing.assert_close(ra.at_severity(5.0, torch.arange(2))["magnitude"], torch.full((2,), 30.0))


def test_operations_behave_like_their_definitions(images):
    x = images[:2]
    zero = torch.zeros(2)
    for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "color", "contrast", "sharpness"):
        torch.testing.assert_close(classic.OPERATIONS[name](x, zero), x, atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(classic.op_posterize(x, torch.full((2,), 8.0)), x, atol=1 / 255, rtol=0)
    assert torch.equal(classic.op_solarize(x, torch.ones(2)), x)
    assert torch.equal(classic.op_brightness(x, -torch.ones(2)), torch.zeros_like(x))
    stretched = classic.op_autocontrast(x * 0.5 + 0.2, zero)
    torch.testing.assert_close(stretched.amin((2, 3)), torch.zeros(2, 3))
    torch.testing.assert_close(stretched.amax((2, 3)), torch.ones(2, 3))
    # Translating right by half the width: the left half is empty, the right half holds the old left half.
    shifted = classic.op_translate_x(x, torch.full((2,), 0.5))
    assert float(shifted[..., :7].abs().max()) == 0
    torch.testing.assert_close(shifted[..., 9:], x[..., 1:8], atol=1e-5, rtol=0)


def test_augmix_mixing_weights():
    seeds = torch.arange(4000)
    weights, m = AugMix(width=3)._mixing(seeds)
    torch.testing.assert_close(weights.sum(1), torch.ones(4000))
    assert float(weights.min()) >= 0 and 0 <= float(m.min()) and float(m.max()) <= 1
    # Dirichlet(1,1,1) marginals have mean 1/3; Beta(1, 1) is uniform (mean 1/2, variance 1/12).
    assert float(weights.mean(0).sub(1 / 3).abs().max()) < 0.02
    assert abs(float(m.mean()) - 0.5) < 0.02 and abs(float(m.var()) - 1 / 12) < 0.01
    for alpha in (0.5, 2.0):
        w, _ = AugMix(width=2, alpha=alpha)._mixing(seeds)
        # Dirichlet(a, a) marginal: Beta(a, a), variance 1 / (4 (2a + 1)).
        assert abs(float(w[:, 0].var()) - 1 / (4 * (2 * alpha + 1))) < 0.01


def test_gamma_sampler_moments():
    gen = make_generator(1)
    z = torch.randn(20000, 8, generator=gen)
    u = torch.rand(20000, 8, generator=gen)
    for alpha in (0.3, 1.0, 4.0):
        g = classic._gamma(alpha, z, u)
        assert float(g.mean()) == pytest.approx(alpha, rel=0.05)
        assert float(g.var()) == pytest.approx(alpha, rel=0.1)


def test_augment_pair_gives_two_views(images):
    a, b = AugMix().augment_pair(images, torch.arange(6) + 2)
    assert a.shape == b.shape == images.shape and not torch.equal(a, b)


def test_consistency_loss_is_jensen_shannon():
    logits = torch.randn(5, 4)
    assert float(augmix_consistency_loss(logits, logits, logits)) == pytest.approx(0, abs=1e-6)
    a, b, c = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 4)
    p = [F.softmax(t, 1) for t in (a, b, c)]
    m = sum(p) / 3
    expected = sum((q * (q.log() - m.log())).sum(1).mean() for q in p) / 3
    loss = augmix_consistency_loss(a, b, c)
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
    assert float(loss) <= math.log(3) + 1e-6
    a.requires_grad_(True)
    augmix_consistency_loss(a, b, c).backward()
    assert a.grad is not None and bool(torch.isfinite(a.grad).all())


def test_bad_arguments_raise_input_errors():
    with pytest.raises(InputError, match="logits_aug1"):
        augmix_consistency_loss(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 3))
    with pytest.raises(InputError, match="magnitude"):
        RandAugment(magnitude=40)
    with pytest.raises(InputError, match="num_ops"):
        RandAugment(num_ops=0)
    with pytest.raises(InputError, match="severity"):
        AugMix(severity=11)
    with pytest.raises(InputError, match="ops_list"):
        TrivialAugment(ops_list=["rotate", "warp_drive"])
