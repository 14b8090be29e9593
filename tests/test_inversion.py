"""Batch inversion: recovering generated images, latent codes expansion, the encoder, the code cache."""
from __future__ import annotations

import pytest
import torch

from robust.errors import InputError
from robust.gan.codes_cache import load_codes, load_or_invert
from robust.gan.encoder import (
    Encoder,
    encoder_for,
    load_encoder,
    save_encoder,
    train_encoder,
)
from robust.gan.inversion import image_quality, invert_batch
from robust.gan.latent import latent_stats, sample_ws, synthesize

from gan_helpers import tiny_generator


@pytest.fixture(scope="module")
def G():
    return tiny_generator()


@pytest.fixture(scope="module")
def stats(G):
    return latent_stats(G, n=512)


@pytest.fixture(scope="module")
def generated(G):
    ws, _ = sample_ws(G, 8, seed=11)
    with torch.no_grad():
        return ws, G.to_unit(G.synthesis(ws))


def test_synthesize_adds_the_residual_at_the_expanded_resolution(G, generated):
    ws, images = generated
    shape = (ws.shape[0], *G.synthesis.feature_shape(8))
    with torch.no_grad():
        same = synthesize(G, ws, torch.zeros(shape), 8)
        _, feats = G.synthesis(ws, return_features=[8])
        bump = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        moved = synthesize(G, ws, bump, 8)
        expected = G.to_unit(G.synthesis(ws, features={8: feats[8] + bump}))
    assert torch.allclose(same, images, atol=1e-6)
    assert torch.allclose(moved, expected, atol=1e-5)
    with pytest.raises(InputError, match="expand_res"):
        synthesize(G, ws, torch.zeros(shape), 16)


def test_inverting_generated_images_recovers_them(G, stats, generated):
    _, images = generated
    result = invert_batch(G, images, steps=40, seed=0, stats=stats)
    other_ws, _ = sample_ws(G, images.shape[0], seed=99)
    with torch.no_grad():
        random_psnr, _ = image_quality(G.to_unit(G.synthesis(other_ws)), images)
    assert result.ws.shape == (8, G.num_ws, G.w_dim)
    assert result.reconstructions01.shape == images.shape
    assert float(result.psnr.mean()) > float(random_psnr.mean()) + 8
    assert float(result.psnr.mean()) > float(result.start_psnr.mean()) + 5
    assert float(result.ssim.mean()) > 0.8
    assert result.seconds_per_image > 0
    with torch.no_grad():
        assert torch.allclose(G.to_unit(G.synthesis(result.ws)), result.reconstructions01, atol=1e-5)


def test_expansion_improves_psnr_over_w_plus_alone(G, stats, tiny_synthetic):
    images = tiny_synthetic.split("test_shift", 6).images
    plain = invert_batch(G, images, steps=15, seed=0, stats=stats)
    expanded = invert_batch(G, images, steps=15, expand_res=8, seed=0, stats=stats)
    assert torch.equal(plain.ws, expanded.ws)
    assert float(expanded.psnr.mean()) > float(plain.psnr.mean()) + 1.0
    assert expanded.residual.shape == (6, *G.synthesis.feature_shape(8))
    with torch.no_grad():
        again = synthesize(G, expanded.ws, expanded.residual, 8)
        _, feats = G.synthesis(expanded.ws, return_features=[8])
    assert torch.allclose(again, expanded.reconstructions01, atol=1e-5)
    assert torch.allclose(expanded.features[8], feats[8] + expanded.residual, atol=1e-5)


def test_inversion_is_deterministic_by_seed_and_checks_inputs(G, stats, generated):
    _, images = generated
    a = invert_batch(G, images[:3], steps=3, seed=5, stats=stats)
    b = invert_batch(G, images[:3], steps=3, seed=5, stats=stats)
    c = invert_batch(G, images[:3], steps=3, seed=6, stats=stats)
    assert torch.equal(a.ws, b.ws)
    assert not torch.equal(a.ws, c.ws)
    with pytest.raises(InputError, match="images01"):
        invert_batch(G, torch.rand(2, 3, 8, 8), steps=1)
    with pytest.raises(InputError, match="expand_res"):
        invert_batch(G, images[:1], steps=1, expand_res=5)


def test_shifting_never_returns_codes_worse_than_its_start(G, stats, generated):
    from robust.gan.inversion import InversionConfig, _objective

    _, images = generated
    # A step far too large for these codes: every step overshoots, so the start is the best point.
    wild = InversionConfig(lr=50.0, initial_noise=0.0, prior_weight=0.0)
    start = invert_batch(G, images, steps=0, stats=stats, config=wild)
    shifted = invert_batch(G, images, steps=3, stats=stats, config=wild)
    with torch.no_grad():
        before = _objective(start.reconstructions01, start.ws, images, wild, None, None, stats)
        after = _objective(shifted.reconstructions01, shifted.ws, images, wild, None, None, stats)
        assert torch.allclose(G.to_unit(G.synthesis(shifted.ws)), shifted.reconstructions01, atol=1e-5)
    assert bool((after <= before + 1e-6).all())
    assert torch.equal(shifted.ws, start.ws)  # here no step helped any image
    # With expansion, the expanded code starts from the feature map of the codes kept.
    expanded = invert_batch(G, images, steps=3, expand_res=8, expand_steps=0, stats=stats, config=wild)
    with torch.no_grad():
        _, feats = G.synthesis(start.ws, return_features=[8])
    assert torch.equal(expanded.ws, start.ws)
    assert torch.allclose(expanded.features[8] - expanded.residual, feats[8], atol=1e-5)
    # With a sensible step the same call improves every image's objective.
    fine = invert_batch(G, images, steps=3, stats=stats, config=InversionConfig(initial_noise=0.0, prior_weight=0.0))
    with torch.no_grad():
        improved = _objective(fine.reconstructions01, fine.ws, images, wild, None, None, stats)
    assert float(improved.mean()) < float(before.mean())


def test_encoder_learns_codes_and_its_file_names_the_generator(G, stats, generated, tmp_path):
    _, images = generated
    encoder, report = train_encoder(G, steps=60, batch_size=16, lr=3e-3, seed=0, stats=stats, channels=8, channel_max=16, hidden=32)
    assert report["steps"] == 60 and report["final_latent"] < 1.0
    start_mean = invert_batch(G, images, steps=0, stats=stats)
    start_encoder = invert_batch(G, images, encoder=encoder, steps=0, stats=stats)
    assert float(start_encoder.psnr.mean()) > float(start_mean.psnr.mean()) + 1.0
    # A few shifting steps from the encoder's codes improve on them.
    shifted = invert_batch(G, images, encoder=encoder, steps=5, stats=stats)
    assert torch.allclose(shifted.start_psnr, start_encoder.psnr)
    assert float(shifted.psnr.mean()) > float(start_encoder.psnr.mean())
    save_encoder(encoder, tmp_path / "enc", G, {"note": "test"})
    loaded = load_encoder(tmp_path / "enc", G)
    assert isinstance(loaded, Encoder) and loaded.extra == {"note": "test"}
    with torch.no_grad():
        assert torch.allclose(loaded(images), encoder(images))
    assert isinstance(encoder_for(G, str(tmp_path / "enc")), Encoder)
    with pytest.raises(InputError, match="encoder"):
        load_encoder(tmp_path / "enc", tiny_generator(seed=1))


def test_encoder_prior_weight_keeps_the_codes_of_real_images_inside_w(G, stats, tiny_synthetic):
    # Real images the tiny generator cannot draw: the pixel loss alone sends their codes far out.
    reals = tiny_synthetic.split("train", 64).images
    kw = dict(real_images=reals, steps=40, batch_size=8, lr=3e-3, seed=0, stats=stats, channels=8, channel_max=16, hidden=32)
    plain, plain_report = train_encoder(G, **kw)
    held, held_report = train_encoder(G, prior_weight=1.0, **kw)
    assert "real_prior" not in plain_report and held_report["prior_weight"] == 1.0
    with torch.no_grad():
        assert float(stats.penalty(held(reals)).mean()) < 0.5 * float(stats.penalty(plain(reals)).mean())
    with pytest.raises(InputError, match="prior_weight"):
        train_encoder(G, prior_weight=-1.0, **kw)


def test_train_encoder_command_sizes_a_fresh_encoder_or_continues_one(G, tmp_path):
    import json

    from click.testing import CliRunner

    from robust.cli import cli
    from robust.gan import save_generator

    save_generator(G, tmp_path / "gen")
    runner = CliRunner()
    base = ["gan", "train-encoder", "--generator", str(tmp_path / "gen.safetensors"), "--batch-size", "4", "--device", "cpu"]
    fresh = runner.invoke(cli, [*base, "--steps", "2", "--channels", "8", "--channel-max", "16", "--hidden", "32",
                                "--out", str(tmp_path / "enc")])
    assert fresh.exit_code == 0, fresh.output
    first = load_encoder(tmp_path / "enc", G)
    assert (first.channels, first.channel_max, first.hidden) == (8, 16, 32)
    more = runner.invoke(cli, [*base, "--steps", "2", "--init", str(tmp_path / "enc"), "--out", str(tmp_path / "enc2")])
    assert more.exit_code == 0, more.output
    clash = runner.invoke(cli, [*base, "--steps", "2", "--init", str(tmp_path / "enc"), "--hidden", "64", "--out", str(tmp_path / "enc3")])
    assert clash.exit_code == 2 and "--hidden" in clash.output and "--init" in clash.output
    assert not (tmp_path / "enc3.safetensors").exists()
    second = load_encoder(tmp_path / "enc2", G)
    assert second.init_kwargs() == first.init_kwargs()  # the sizes come from the encoder it continues
    assert not torch.equal(second.stem.weight, first.stem.weight)
    assert json.loads((tmp_path / "enc2.json").read_text())["extra"]["initialised_from"] == str(tmp_path / "enc")
    wrong = runner.invoke(cli, [*base, "--steps", "1", "--init", str(tmp_path / "missing"), "--out", str(tmp_path / "enc3")])
    assert wrong.exit_code != 0 and "missing" in wrong.output


def test_codes_are_cached_by_data_generator_and_settings(G, tiny_synthetic, tmp_path, monkeypatch):
    data = tiny_synthetic.split("test_shift", 5)
    codes = load_or_invert(G, data, cache_dir=tmp_path, encoder="none", steps=2, expand_res=8, seed=0)
    assert len(codes) == 5 and codes.residual.shape[0] == 5 and codes.expand_res == 8
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and codes.key in files[0].name
    from safetensors import safe_open

    with safe_open(str(files[0]), "pt") as fh:
        assert fh.get_tensor("residual").dtype == torch.float16  # stored in half precision
    assert codes.residual.dtype == torch.float32

    def no_inversion(*args, **kwargs):
        raise AssertionError("the cached codes should have been used")

    monkeypatch.setattr("robust.gan.codes_cache.invert_batch", no_inversion)
    again = load_or_invert(G, data, cache_dir=tmp_path, encoder="none", steps=2, expand_res=8, seed=0)
    assert again.key == codes.key and torch.equal(again.ws, codes.ws) and torch.equal(again.residual, codes.residual)
    ws, residual = again.batch([4, 0], "cpu")
    assert torch.equal(ws, codes.ws[[4, 0]]) and torch.equal(residual, codes.residual[[4, 0]])
    with pytest.raises(AssertionError, match="cached"):
        load_or_invert(G, data, cache_dir=tmp_path, encoder="none", steps=3, expand_res=8, seed=0)
    with pytest.raises(InputError, match="indices"):
        again.batch([7])


def test_invert_command_adds_a_feature_term_from_a_classifier_or_a_discriminator(G, tmp_path):
    import json

    from click.testing import CliRunner

    from robust.cli import cli
    from robust.gan import save_generator
    from robust.gan.checkpoint import save_discriminator
    from robust.gan.networks import Discriminator
    from robust.models import build_classifier, save_classifier

    save_generator(G, tmp_path / "gen")
    save_classifier(build_classifier("smallcnn", 10, (3, 16, 16), width=4), tmp_path / "clf")
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=8)
    save_discriminator(D, tmp_path / "disc")
    runner = CliRunner()
    base = ["invert", "--generator", str(tmp_path / "gen.safetensors"), "--data", "synthetic:test_shift,size=16", "-n", "6",
            "--encoder", "none", "--steps", "2", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    keys, codes = set(), []
    for i, features in enumerate(("none", str(tmp_path / "clf"), str(tmp_path / "disc"))):
        result = runner.invoke(cli, [*base, "--features", features, "--json", str(tmp_path / "s.json"), "--out", str(tmp_path / f"c{i}")])
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / "s.json").read_text())
        assert summary["features"] == features and summary["n"] == 6
        keys.add(result.output.rsplit("key ", 1)[1].split()[0])
        codes.append(load_codes(tmp_path / f"c{i}").ws)
    assert len(keys) == 3  # each feature network is its own cache entry
    assert not torch.equal(codes[0], codes[1]) and not torch.equal(codes[0], codes[2])  # and its term moves the codes
    oracle = runner.invoke(cli, [*base, "--features", "oracle"])
    assert oracle.exit_code == 2 and "--features" in oracle.output and "32x32" in oracle.output
    missing = runner.invoke(cli, [*base, "--features", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "--features" in missing.output, missing.output
