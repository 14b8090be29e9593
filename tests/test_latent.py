"""The latent space (robust.gan.latent): drawing codes, the W prior (statistics, prompts, realism), the z prior, rendering."""
from __future__ import annotations

import math

import pytest
import torch

from robust import noise
from robust.errors import InputError
from robust.gan.latent import (
    ZPrior,
    check_ws,
    latent_stats,
    prompt_prior,
    render_prompts,
    sample_ws,
    sample_z,
    synthesize,
)

from gan_helpers import tiny_generator


@pytest.fixture(scope="module")
def G():
    return tiny_generator(seed=1, classes=3)


@pytest.fixture(scope="module")
def stats(G):
    return latent_stats(G, n=2048, seed=0)


def test_sample_z_follows_each_seed_whatever_the_batch(G):
    seeds = torch.arange(10, dtype=torch.int64) * 977 + 3
    z = sample_z(G, seeds)
    assert z.shape == (10, G.z_dim)
    assert torch.equal(sample_z(G, seeds[4:6]), z[4:6])
    assert torch.equal(z, noise.normal(seeds, (G.z_dim,)))
    assert not torch.equal(sample_z(G, seeds, stream=1), z)


def test_bulk_samples_are_deterministic_by_seed_and_can_fix_the_class(G):
    a, ca = sample_ws(G, 20, seed=4)
    b, cb = sample_ws(G, 20, seed=4)
    assert a.shape == (20, G.num_ws, G.w_dim) and torch.equal(a, b) and torch.equal(ca, cb)
    assert not torch.equal(sample_ws(G, 20, seed=5)[0], a)
    classes = torch.arange(20) % 3
    _, c = sample_ws(G, 20, seed=4, classes=classes)
    assert torch.equal(G.conditioning.decode(c)["class"], classes)


def test_statistics_describe_the_sampled_w(G, stats):
    ws, c = sample_ws(G, 2048, seed=0)
    w = ws[:, 0]
    assert torch.allclose(stats.mean, w.mean(0), atol=1e-5)
    cov = torch.cov(w.double().T).float()
    assert torch.allclose(stats.components @ torch.diag(stats.variances) @ stats.components.T, cov, atol=1e-4)
    assert torch.allclose(stats.root @ stats.root.T, cov, atol=1e-4)
    assert bool((stats.variances[:-1] >= stats.variances[1:]).all())
    assert math.isclose(stats.std, float(stats.variances.mean().sqrt()), rel_tol=1e-6)
    # The spread along a principal axis is that axis' standard deviation.
    assert torch.allclose(stats.spread(stats.components.T[:2]), stats.variances[:2].sqrt(), rtol=1e-4)
    labels = G.conditioning.decode(c)["class"]
    assert torch.allclose(stats.class_means[1], w[labels == 1].mean(0), atol=1e-5)


def test_the_radius_holds_its_quantile_of_fresh_codes_and_projection_pulls_codes_inside(G, stats):
    fresh, _ = sample_ws(G, 2000, seed=9)
    inside = float(stats.typical(fresh[:, :1]).float().mean())
    assert 0.97 <= inside <= 1.0
    assert torch.equal(stats.score(fresh[:, :1]) <= 1, stats.typical(fresh[:, :1]))
    far = fresh[:8, :1] + 50 * stats.std * stats.components[:, :1].T[None]
    assert not bool(stats.typical(far).any())
    pulled = stats.project(far, margin=0.9)
    assert bool((stats.distance(pulled) <= 0.9 * stats.radius + 1e-4).all())
    # Codes already inside stay where they are.
    kept = stats.typical(fresh[:100, :1])
    assert torch.allclose(stats.project(fresh[:100, :1])[kept], fresh[:100, :1][kept], atol=1e-6)


def test_the_penalty_grows_with_the_distance_and_the_spread_of_the_layers(G, stats):
    ws, _ = sample_ws(G, 256, seed=2)
    typical = stats.penalty(ws)
    assert 0.2 < float(typical.mean()) < 3.0
    spread_apart = ws.clone()
    spread_apart[:, 0] += 3 * stats.std
    assert bool((stats.penalty(spread_apart) > typical).all())
    assert bool((stats.penalty(ws + 5 * stats.std) > typical).all())


def test_a_whitened_step_has_unit_length_in_whitened_coordinates(stats):
    grad = torch.randn(5, 2, stats.mean.shape[0], generator=torch.Generator().manual_seed(0))
    step = stats.whiten_step(grad)
    whitened = torch.linalg.solve(stats.root, step.reshape(-1, step.shape[-1]).T).T.reshape(5, -1)
    assert torch.allclose(whitened.norm(dim=1), torch.ones(5), atol=1e-3)
    # It climbs: the first-order change along the step is positive.
    assert bool(((grad * step).flatten(1).sum(1) > 0).all())


def test_realistic_codes_are_typical_and_look_like_samples(G, stats):
    ws, c = sample_ws(G, 64, seed=3)
    assert torch.equal(stats.realistic(G, ws, c), stats.typical(ws))  # without image bands: the latent check
    check = stats.with_images(G, n=128, seed=1)
    assert check.images is not None and check.images.low.shape == (2 * G.img_channels + 2,)
    assert float(check.realistic(G, ws, c).float().mean()) > 0.8
    with torch.no_grad():
        images = G.to_unit(G.synthesis(ws))
    assert torch.equal(check.realistic(G, ws, c, images), check.realistic(G, ws, c))
    # Codes in the distribution whose images are not (washed out) are caught by the image bands.
    assert not bool(check.realistic(G, ws, c, torch.ones_like(images)).any())


def test_the_prompt_prior_measures_from_each_prompts_mean(G):
    prior = prompt_prior(G, alpha=0.05, seed=0)
    cond = G.conditioning
    tokens = torch.tensor([[0], [2]])
    ref = prior.prompt_means.z
    expected = torch.stack([G.mapping(ref, cond.encode(torch.full((ref.shape[0], 1), k)))[:, 0].mean(0) for k in (0, 2)])
    assert torch.allclose(prior.prompt_means(tokens), expected, atol=1e-5)
    seeds = torch.arange(600, dtype=torch.int64) + 10_000
    rows = cond.rows(cond.sample(seeds, stream=5))
    ws = G.mapping(sample_z(G, seeds), cond.encode(rows))[:, :1]
    passed = float((prior.score(ws, rows) <= 1).float().mean())
    assert 0.88 <= passed <= 1.0
    # Measured from another prompt's mean, the same codes are further away on average.
    other = (rows + 1) % 3
    assert float(prior.distance(ws, other).mean()) > float(prior.distance(ws, rows).mean())
    assert prior.quantile == pytest.approx(0.95)


def test_the_z_prior_passes_normal_codes_and_projects_norms_into_its_band():
    prior = ZPrior(64, alpha=0.01)
    z = torch.randn(2000, 64, generator=torch.Generator().manual_seed(0))
    assert float((prior.score(z) <= 1).float().mean()) >= 0.95
    lo, hi = prior.radius_band
    assert lo < math.sqrt(64) < hi
    norms = prior.project(torch.cat([z[:4] * 0.01, z[:4] * 10])).norm(dim=1)
    assert torch.allclose(norms, torch.tensor([lo] * 4 + [hi] * 4), rtol=1e-5)


def test_rendering_prompts_adds_the_offset_to_the_mapped_codes(G):
    tokens = torch.tensor([[0], [1], [2]])
    z = sample_z(G, torch.arange(3, dtype=torch.int64))
    delta = torch.zeros(3, 1, G.w_dim)
    delta[:, 0, 0] = 0.5
    with torch.no_grad():
        images, ws, mapped = render_prompts(G, tokens, z, delta)
        assert torch.equal(mapped, G.mapping(z, G.conditioning.encode(tokens)))
        assert torch.equal(ws, mapped + delta)
        assert torch.allclose(images, synthesize(G, ws), atol=1e-6)
    with pytest.raises(InputError, match="ws"):
        check_ws(G, ws[:, :1])
