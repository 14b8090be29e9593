"""NaturalTransform: the random, worst-of-k and gradient modes, determinism, ranges, residuals."""
from __future__ import annotations

import pytest
import torch

from augment.natra import NaturalConfig, NaturalTransform, per_image_loss
from robust.data import ImageSet
from robust.gan.codes_cache import CodeSet
from robust.transforms import Transform
from robust.errors import InputError
from robust.gan.directions import find_directions
from robust.gan.latent import latent_stats, sample_ws, synthesize
from robust.models import Classifier
from robust.seeding import derive_seed

import classifier_helpers
from gan_helpers import tiny_generator


def pixel_classifier(seed: int = 0) -> Classifier:
    return classifier_helpers.pixel_classifier(4, seed)


@pytest.fixture(scope="module")
def setup():
    G = tiny_generator()
    stats = latent_stats(G, n=512)
    directions = find_directions(G, "sefa", k=4, seed=0, calibrate=False, stats=stats)
    ws, _ = sample_ws(G, 12, seed=3)
    with torch.no_grad():
        images = G.to_unit(G.synthesis(ws))
    clf = pixel_classifier()
    labels = clf.predict(images)
    return G, directions, ws, images, labels, clf


@pytest.mark.parametrize("mode", ["random", "worst_of_k", "gradient"])
def test_each_mode_is_deterministic_by_seed_and_stays_in_range(setup, mode):
    G, directions, ws, images, labels, clf = setup
    nt = NaturalTransform(G, directions, mode, classifier=clf, k=3, steps=3, per_sample=2)
    a = nt.transform(images, labels, ws=ws, seed=1)
    b = nt.transform(images, labels, ws=ws, seed=1)
    c = nt.transform(images, labels, ws=ws, seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.magnitudes, b.magnitudes)
    assert not torch.equal(a.magnitudes, c.magnitudes)
    assert a.images.shape == images.shape and float(a.images.min()) >= 0 and float(a.images.max()) <= 1
    low, high = directions.ranges[:, 0], directions.ranges[:, 1]
    assert bool(((a.magnitudes >= low - 1e-6) & (a.magnitudes <= high + 1e-6)).all())
    assert bool(((a.magnitudes != 0).sum(1) <= 2).all())
    with torch.no_grad():
        assert torch.allclose(a.images, synthesize(G, directions.apply(ws, a.magnitudes)), atol=1e-5)


def test_gradient_and_worst_of_k_raise_the_classifier_loss_over_random(setup):
    G, directions, ws, images, labels, clf = setup
    losses = {}
    for mode in ("random", "worst_of_k", "gradient"):
        out = NaturalTransform(G, directions, mode, classifier=clf, k=4, steps=4).transform(images, labels, ws=ws, seed=0)
        losses[mode] = per_image_loss("ce", clf.logits(out.images), labels)
        assert torch.allclose(losses[mode], out.loss, atol=1e-4)
    # Both start from the random mode's draw and keep the worst they see.
    assert bool((losses["gradient"] >= losses["random"] - 1e-5).all())
    assert bool((losses["worst_of_k"] >= losses["random"] - 1e-5).all())
    assert float(losses["gradient"].mean()) > float(losses["random"].mean()) + 0.05


def test_draws_depend_on_each_image_id_not_on_the_batch(setup):
    G, directions, ws, images, labels, clf = setup
    nt = NaturalTransform(G, directions, "random")
    full = nt.transform(images, ws=ws, seed=4, sample_ids=torch.arange(100, 112))
    part = nt.transform(images[5:8], ws=ws[5:8], seed=4, sample_ids=torch.arange(105, 108))
    assert torch.equal(part.magnitudes, full.magnitudes[5:8])
    assert torch.allclose(part.images, full.images[5:8], atol=1e-6)


def test_residuals_are_added_back(setup):
    G, directions, ws, images, labels, clf = setup
    photo = torch.rand(images.shape, generator=torch.Generator().manual_seed(0))
    still = NaturalTransform(G, directions, "random", strength=0.0, pixel_residual=True)
    assert torch.allclose(still(photo, ws=ws), photo, atol=1e-5)
    residual = 0.3 * torch.randn(ws.shape[0], *G.synthesis.feature_shape(8), generator=torch.Generator().manual_seed(1))
    nt = NaturalTransform(G, directions, "random", expand_res=8)
    out = nt.transform(images, ws=ws, residual=residual, seed=0)
    with torch.no_grad():
        expected = synthesize(G, directions.apply(ws, out.magnitudes), residual, 8)
    assert torch.allclose(out.images, expected, atol=1e-5)
    with pytest.raises(InputError, match="residual"):
        NaturalTransform(G, directions, "random").transform(images, ws=ws, residual=residual)


def test_codes_are_inverted_on_the_fly_without_a_cache(setup):
    G, directions, ws, images, labels, clf = setup
    out = NaturalTransform(G, directions, "random", invert_steps=2).transform(images[:3], seed=0)
    assert out.images.shape == images[:3].shape


def test_classifier_driven_modes_need_a_classifier_and_labels(setup):
    G, directions, ws, images, labels, clf = setup
    with pytest.raises(InputError, match="classifier"):
        NaturalTransform(G, directions, "gradient").transform(images, labels, ws=ws)
    with pytest.raises(InputError, match="labels"):
        NaturalTransform(G, directions, "worst_of_k", classifier=clf).transform(images, ws=ws)
    with pytest.raises(InputError, match="mode"):
        NaturalTransform(G, directions, "sideways")


def test_token_swap_exchanges_the_token_offset_a_code_carries():
    from robust.gan import Conditioning, Generator

    cond = Conditioning([("class", ["a", "b"]), ("texture", ["plain", "stripes", "dots"])])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        G = Generator(z_dim=8, c_dim=cond.c_dim, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                      synthesis_kwargs={"channel_base": 128, "channel_max": 8}, conditioning=cond).eval().requires_grad_(False)
    directions = find_directions(G, "sefa", k=2, seed=0, calibrate=False)
    nt = NaturalTransform(G, directions, "random", strength=0.0, swap=1.0)  # swaps only: the directions move nothing
    (_, names, centre, offsets, basis), = nt.tokens.groups
    assert names == ["plain", "stripes", "dots"] and basis.shape == (8, 2)
    # Codes made of the group centre, one token's offset and a part outside the group's subspace.
    n = 48
    own = torch.arange(n) % 3
    rest = torch.randn(n, 8, generator=torch.Generator().manual_seed(1))
    rest = 0.5 * (rest - (rest @ basis) @ basis.T)
    ws = (centre + offsets[own] + rest)[:, None].repeat(1, G.num_ws, 1)
    keys = torch.arange(n)
    on, target = nt.draw_swaps(keys, 0, "cpu")
    assert bool(on.all()) and set(target[:, 0].tolist()) == {0, 1, 2}
    shift = nt.swap_shift(ws, keys, 0)
    assert torch.allclose(ws[:, 0] + shift, centre + offsets[target[:, 0]] + rest, atol=1e-5)  # the token swapped, the rest kept
    with torch.no_grad():
        images = G.to_unit(G.synthesis(ws))
    out = nt.transform(images, ws=ws, seed=0, sample_ids=keys)
    assert torch.equal(out.images, nt.transform(images, ws=ws, seed=0, sample_ids=keys).images)
    moved = (out.images - images).abs().flatten(1).amax(1) > 1e-4
    _, drawn = nt.draw_swaps(keys + derive_seed(0, "natra", directions.method) % (1 << 40), 0, "cpu")  # the transform's keys
    assert torch.equal(moved, drawn[:, 0] != own)  # exactly the images whose token changed look different
    half = NaturalTransform(G, directions, "random", strength=0.0, swap=0.5)
    assert 0.25 < float(half.draw_swaps(keys, 0, "cpu")[0].float().mean()) < 0.75
    off = NaturalTransform(G, directions, "random", strength=0.0).transform(images, ws=ws, seed=0).images
    assert torch.allclose(off, images, atol=1e-5)
    with pytest.raises(InputError, match="attribute tokens"):
        NaturalTransform(tiny_generator(), directions, swap=0.5)
    with pytest.raises(InputError, match="swap"):
        NaturalTransform(G, directions, swap=1.5)


def test_natural_transform_is_a_transform_over_its_directions_magnitudes(setup):
    G, directions, ws, images, labels, clf = setup
    nt = NaturalTransform(G, directions, "random", strength=0.5, per_sample=2)
    assert isinstance(nt, Transform) and nt.param_names == directions.names and nt.differentiable
    for p, (low, high) in zip(nt.params, directions.ranges.tolist()):
        assert (p.low, p.high, p.identity) == pytest.approx((0.5 * low, 0.5 * high, 0.0))
    keys = torch.arange(12) + 40
    drawn = nt.sample(keys)
    assert torch.equal(nt.magnitudes(drawn), nt.draw_magnitudes(keys, 0, "cpu")[0])  # the random mode's draw
    assert torch.equal(nt.magnitudes(nt.sample(keys[3:6], stream=2)), nt.magnitudes(nt.sample(keys, stream=2))[3:6])
    bound = nt.with_codes(CodeSet(ws, None, None, torch.zeros(12), torch.zeros(12)), ImageSet(images, labels, ["a", "b", "c", "d"]))
    assert torch.equal(bound(images, bound.identity(12)), images), "zero magnitudes return the images themselves"
    edited = bound.apply(images, drawn)
    with torch.no_grad():
        reference = synthesize(G, nt.directions.apply(ws, nt.magnitudes(drawn)))
    assert torch.allclose(edited, reference, atol=1e-5), "an image that is its own reconstruction becomes the re-render"
    assert torch.allclose(bound.apply(images[4:7], {k: v[4:7] for k, v in drawn.items()}), edited[4:7], atol=1e-6)
    mags = nt.magnitudes(drawn).clone().requires_grad_(True)
    (bound.edit(images, mags) * torch.rand(images.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    assert mags.grad is not None and float(mags.grad.abs().sum()) > 0


def test_natural_transform_takes_a_config_or_its_fields(setup):
    G, directions, *_ = setup
    a = NaturalTransform(G, directions, "gradient", config=NaturalConfig(k=2, steps=3, strength=0.5))
    b = NaturalTransform(G, directions, "gradient", k=2, steps=3, strength=0.5)
    assert (a.k, a.steps, a.strength) == (b.k, b.steps, b.strength) == (2, 3, 0.5)
    with pytest.raises(InputError, match="steps"):
        NaturalConfig(steps=0)
    with pytest.raises(InputError, match="NaturalConfig options"):
        NaturalTransform(G, directions, stepz=3)


def test_transform_search_and_testing_take_a_natural_transform(setup):
    from attacks import per_image_loss, transform_search
    from robust.testing import RobustnessFailure, assert_invariant

    G, directions, ws, images, labels, clf = setup
    nt = NaturalTransform(G, directions).with_codes(CodeSet(ws, None, None, torch.zeros(12), torch.zeros(12)),
                                                    ImageSet(images, labels, ["a", "b", "c", "d"]))
    first = nt.param_names[0]
    found = transform_search(clf, images, labels, nt, method="grid", steps=5, params=[first])
    assert torch.allclose(found.images, nt.apply(images, found.params), atol=1e-5)
    assert bool((found.params[nt.param_names[1]] == 0).all()) and found.describe(0).startswith("natra:sefa(")
    climbed = transform_search(clf, images, labels, nt, method="gradient", steps=3, k=1, params=[first])
    unedited = per_image_loss("margin", clf.logits(images), labels)  # the gradient search starts at magnitude 0
    assert bool((climbed.loss >= unedited - 1e-5).all()) and bool((climbed.loss > unedited + 1e-3).any())
    try:
        case = assert_invariant(clf, images, nt, params={first: float(nt.params[0].high)})
    except RobustnessFailure as failure:
        assert f"natra:sefa({first}=" in str(failure)
    else:
        assert case.metrics["n"] == 12.0
