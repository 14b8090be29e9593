"""The StyleGAN2 networks: code spaces and their shapes, equalised-lr and demodulation maths, conditioning, files."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robust.errors import InputError
from robust.gan import (
    Conditioning,
    Discriminator,
    Generator,
    load,
    load_demo,
    preset,
    save_generator,
)
from robust.gan.metrics import load_factor_regressor, load_oracle
from robust.gan.networks import (
    Conv2dLayer,
    FullyConnectedLayer,
    _depthwise,
    block_resolutions,
    channels_per_resolution,
    make_filter,
    modulated_conv2d,
)
from robust.synthetic import SyntheticBenchmark


def tiny_generator(resolution: int = 16, c_dim: int = 0, conditioning: Conditioning | None = None) -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=resolution, img_channels=3,
                     mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 16 * resolution, "channel_max": 8},
                     conditioning=conditioning).eval()


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_code_spaces_have_documented_shapes(resolution):
    G = tiny_generator(resolution)
    n = 3
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    z = torch.randn(n, G.z_dim)
    ws = G.mapping(z, None)
    assert ws.shape == (n, G.num_ws, G.w_dim)
    # W: one w broadcast to every layer; W+: one w per layer; both feed the same synthesis.
    assert torch.equal(ws[:, 0], ws[:, -1])
    w_plus = ws + torch.randn_like(ws) * 0.1
    with torch.no_grad():
        img, feats = G.synthesis(w_plus, return_features=G.synthesis.block_resolutions)
    assert img.shape == (n, 3, resolution, resolution)
    for res, feat in feats.items():
        assert tuple(feat.shape) == (n, *G.synthesis.feature_shape(res))
    # Expanded code: W+ plus a feature map at an intermediate resolution.
    mid = G.synthesis.block_resolutions[len(G.synthesis.block_resolutions) // 2]
    with torch.no_grad():
        same = G.synthesis(w_plus, features={mid: feats[mid]})
        other = G.synthesis(w_plus, features={mid: feats[mid] + 0.5 * torch.randn_like(feats[mid])})
    assert torch.equal(same, img)
    assert not torch.allclose(other, img)
    assert torch.equal(G(z, None), G.synthesis(ws))


def test_style_affines_cover_every_layer_that_reads_a_w():
    G = tiny_generator(32)
    affines = G.style_affines()
    blocks = len(G.synthesis.block_resolutions)
    assert len(affines) == (2 * blocks - 1) + blocks  # convolutions + ToRGB layers
    assert {i for i, _ in affines} == set(range(G.num_ws))
    for _, layer in affines:
        assert layer.weight.shape[1] == G.w_dim
    # Perturbing ws only at an affine's index changes that layer's style.
    index, layer = affines[3]
    ws = G.mapping(torch.randn(1, G.z_dim), None)
    bumped = ws.clone()
    bumped[:, index] += 1.0
    assert not torch.allclose(layer(bumped[:, index]), layer(ws[:, index]))


def test_equalised_learning_rate_scales_weights_at_run_time():
    fc = FullyConnectedLayer(6, 4, lr_multiplier=0.01, bias_init=0.5)
    x = torch.randn(5, 6)
    expected = x @ (fc.weight * 0.01 / math.sqrt(6)).t() + fc.bias * 0.01
    assert torch.allclose(fc(x), expected, atol=1e-6)
    assert fc.weight.std() > 10  # stored at 1/lr_mul scale: N(0, 1/0.01^2)
    conv = Conv2dLayer(3, 5, 3, activation="lrelu")
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 8, 8)
    direct = F.leaky_relu(F.conv2d(x, conv.weight / math.sqrt(3 * 9), conv.bias, padding=1), 0.2) * math.sqrt(2)
    assert torch.allclose(conv(x), direct, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_modulated_convolution_with_demodulation_matches_direct_computation(fused):
    torch.manual_seed(1)
    x, w, styles = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.rand(3, 4) + 0.5
    out = modulated_conv2d(x, w, styles, padding=1, fused=fused)
    for i in range(3):
        wi = w * styles[i][None, :, None, None]
        wi = wi / wi.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        assert torch.allclose(out[i: i + 1], F.conv2d(x[i: i + 1], wi, padding=1), atol=1e-5)
    plain = modulated_conv2d(x, w, styles, demodulate=False, padding=1, fused=fused)
    for i in range(3):
        assert torch.allclose(plain[i: i + 1], F.conv2d(x[i: i + 1], w * styles[i][None, :, None, None], padding=1), atol=1e-5)


def test_upsampling_convolution_is_transposed_convolution_then_fir_filter():
    torch.manual_seed(2)
    x, w, styles = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.ones(2, 4)
    f = make_filter()
    out = modulated_conv2d(x, w, styles, demodulate=False, up=True, padding=1, resample_filter=f)
    reference = _depthwise(F.conv_transpose2d(x, w.transpose(0, 1), stride=2), f * 4, (1, 1, 1, 1))
    assert out.shape == (2, 3, 10, 10)
    assert torch.allclose(out, reference, atol=1e-5)
    assert torch.allclose(make_filter().sum(), torch.tensor(1.0))


def test_truncation_pulls_towards_w_avg_with_layer_cutoff():
    G = tiny_generator(16)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    z = torch.randn(4, G.z_dim)
    full = G.mapping(z, None)
    at_avg = G.mapping(z, None, truncation_psi=0.0)
    assert torch.allclose(at_avg, G.mapping.w_avg.expand_as(at_avg))
    cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(cut[:, :2], G.mapping.w_avg.lerp(full[:, :2], 0.5))
    assert torch.equal(cut[:, 2:], full[:, 2:])


def test_condition_centred_truncation_pulls_each_sample_toward_its_own_conditioning():
    from robust.gan.networks import CENTER_SAMPLES, CENTER_SEED

    cond = Conditioning([("class", ["disk", "ring", "star"]), ("texture", ["plain", "stripes"])])
    G = tiny_generator(16, c_dim=5, conditioning=cond)
    tokens = {"class": torch.tensor([0, 0, 2, 1, 0]), "texture": torch.tensor([1, 1, 0, 1, 0])}
    c = cond.encode(tokens)
    z = torch.randn(5, G.z_dim)
    with torch.no_grad():
        centred = G.mapping(z, c, truncation_psi=0.0, truncation_center="condition")
        # The centre is the mean w of that conditioning over the fixed z, computed here directly.
        fixed = torch.randn(CENTER_SAMPLES, G.z_dim, generator=torch.Generator().manual_seed(CENTER_SEED))
        for i in range(5):
            expected = G.mapping(fixed, c[i: i + 1].expand(CENTER_SAMPLES, -1))[:, 0].mean(0)
            assert torch.allclose(centred[i], expected.expand(G.num_ws, -1), atol=1e-5)
        assert torch.equal(centred[0], centred[1])  # same conditioning, same centre
        assert not torch.allclose(centred[0], centred[2]) and not torch.allclose(centred[0], centred[4])
        # psi interpolates between that centre and the untruncated code; the cutoff leaves later layers alone.
        full = G.mapping(z, c)
        half = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2, truncation_center="condition")
        assert torch.allclose(half[:, :2], centred[:, :2].lerp(full[:, :2], 0.5), atol=1e-6)
        assert torch.equal(half[:, 2:], full[:, 2:])
        # Same seed of fixed z: the same result for the same inputs; the generator passes the choice on.
        assert torch.equal(G.mapping(z, c, truncation_psi=0.0, truncation_center="condition"), centred)
        assert torch.allclose(G(z, c, truncation_psi=0.0, truncation_center="condition"), G.synthesis(centred))
    with pytest.raises(InputError, match="truncation_center"):
        G.mapping(z, c, truncation_psi=0.5, truncation_center="class")
    with pytest.raises(InputError, match="unconditional"):
        tiny_generator(16).mapping(z, None, truncation_psi=0.5, truncation_center="condition")


def test_w_avg_is_tracked_only_when_asked():
    G = tiny_generator(16).train()
    before = G.mapping.w_avg.clone()
    G.mapping(torch.randn(8, G.z_dim), None)
    assert torch.equal(G.mapping.w_avg, before)
    G.mapping(torch.randn(8, G.z_dim), None, update_emas=True)
    assert not torch.equal(G.mapping.w_avg, before)


def test_conditioning_tokens_encode_decode_and_drive_the_generator():
    cond = Conditioning([("class", ["disk", "ring", "star"]), ("texture", ["plain", "stripes"])])
    assert cond.c_dim == 5 and cond.span("texture") == (3, 5)
    tokens = {"class": torch.tensor([0, 2, 1]), "texture": torch.tensor([1, 0, 1])}
    c = cond.encode(tokens)
    assert c.shape == (3, 5) and torch.equal(c.sum(1), torch.full((3,), 2.0))
    assert all(torch.equal(cond.decode(c)[k], v) for k, v in tokens.items())
    assert cond.parse("class=star,texture=1") == {"class": 2, "texture": 1}
    assert cond.describe(c)[1] == "class=star texture=plain"
    assert Conditioning.from_dict(cond.to_dict()) == cond
    with pytest.raises(InputError, match="texture"):
        cond.encode({"class": torch.tensor([0])})
    with pytest.raises(InputError, match="indices"):
        cond.encode({"class": torch.tensor([3]), "texture": torch.tensor([0])})
    G = tiny_generator(16, c_dim=5, conditioning=cond)
    z = torch.randn(3, G.z_dim)
    with torch.no_grad():
        assert torch.equal(G(z, tokens), G(z, c))
        other = dict(tokens, **{"class": torch.tensor([1, 0, 2])})
        assert not torch.allclose(G(z, other), G(z, c))


def test_discriminator_projection_conditioning_and_minibatch_std():
    torch.manual_seed(3)
    D = Discriminator(c_dim=3, img_resolution=16, channel_base=128, channel_max=8, mapping_kwargs={"num_layers": 1}).eval()
    img = torch.rand(4, 3, 16, 16) * 2 - 1
    c = torch.eye(3)[torch.tensor([0, 1, 2, 0])]
    out = D(img, c)
    assert out.shape == (4, 1)
    assert not torch.allclose(D(img, torch.eye(3)[torch.tensor([1, 2, 0, 1])]), out)
    # Minibatch std: an image's score depends on the other images of its group.
    changed = img.clone()
    changed[1] = -changed[1]
    assert not torch.allclose(D(changed, c)[0], out[0])
    assert Discriminator(img_resolution=16, channel_base=128, channel_max=8, architecture="orig")(img).shape == (4, 1)


def test_bad_codes_raise_input_errors():
    G = tiny_generator(16)
    with pytest.raises(InputError, match="ws"):
        G.synthesis(torch.randn(2, G.num_ws + 1, G.w_dim))
    with pytest.raises(InputError, match="z"):
        G.mapping(torch.randn(2, G.z_dim + 1), None)
    with pytest.raises(InputError, match=r"features\[8\]"):
        G.synthesis(G.mapping(torch.randn(2, G.z_dim), None), features={8: torch.randn(2, 3, 8, 8)})
    with pytest.raises(InputError, match="noise_mode"):
        G.synthesis(G.mapping(torch.randn(2, G.z_dim), None), noise_mode="sometimes")
    with pytest.raises(InputError, match="c"):
        tiny_generator(16, c_dim=3)(torch.randn(2, 8), None)


def test_noise_modes():
    G = tiny_generator(16)
    with torch.no_grad():
        for p in G.parameters():
            if p.dim() == 0:
                p.fill_(0.5)  # noise strengths
        ws = G.mapping(torch.randn(2, G.z_dim), None)
        const = G.synthesis(ws, noise_mode="const")
        assert torch.equal(const, G.synthesis(ws, noise_mode="const"))
        a = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(0))
        b = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and not torch.allclose(a, const)
        assert not torch.allclose(G.synthesis(ws, noise_mode="none"), const)


def test_presets_and_channel_rule():
    assert channels_per_resolution([4, 8, 16, 32], 1024, 64) == {4: 64, 8: 64, 16: 64, 32: 32}
    for name, res in [("tiny", 16), ("synthetic32", 32), ("cifar", 32), ("paper256", 256)]:
        assert preset(name).resolution == res
    cifar = preset("cifar")
    assert (cifar.channel_base, cifar.channel_max, cifar.map_layers, cifar.mbstd_group, cifar.r1_gamma) == (32768, 512, 2, 32, 0.01)
    paper = preset("paper256")
    assert (paper.channel_base, paper.map_layers, paper.pl_weight, paper.r1_gamma) == (16384, 8, 2.0, 1.0)
    resolutions = block_resolutions(256)
    assert channels_per_resolution(resolutions, paper.channel_base, paper.channel_max) == {
        4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}
    assert 2 * len(resolutions) == 14  # num_ws of a 256x256 generator
    G = Generator(**preset("synthetic32").generator_kwargs(c_dim=23))
    assert G.num_ws == 8 and G.synthesis.channels[32] == 32
    assert preset("tiny", batch=4).batch == 4
    with pytest.raises(InputError, match="overrides"):
        preset("tiny", not_a_field=1)


def test_generator_checkpoint_round_trip(tmp_path):
    cond = Conditioning([("class", ["a", "b"])])
    G = tiny_generator(16, c_dim=2, conditioning=cond)
    save_generator(G, tmp_path / "g", extra={"note": "test"})
    loaded = load(tmp_path / "g.safetensors")
    assert loaded.conditioning == cond and loaded.extra == {"note": "test"}
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(loaded(z, {"class": torch.tensor([0, 1])}), G(z, {"class": torch.tensor([0, 1])}))
    assert torch.equal(G.to_unit(torch.tensor([-2.0, 0.0, 1.0])), torch.tensor([0.0, 0.5, 1.0]))


def test_shipped_demo_generator_oracle_and_regressor():
    G = load_demo()
    assert (G.img_resolution, G.img_channels) == (32, 3)
    assert G.conditioning.names == ["class", "texture", "fill", "mark"] and G.c_dim == 23
    assert {"command", "seed", "hardware", "wall_seconds", "kimg", "metrics"} <= set(G.extra)
    with torch.no_grad():
        images = G.to_unit(G(torch.randn(4, G.z_dim), G.conditioning.sample(4, torch.Generator().manual_seed(0))))
    assert images.shape == (4, 3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    # The judges of generated images are accurate on real renders they never saw.
    data = SyntheticBenchmark(seed=123).split("generator", 300)
    assert load_oracle().accuracy(data.images, data.labels) >= 0.93
    pred = load_factor_regressor().predict(data.images)
    for name in ("texture", "fill", "mark"):
        assert float((pred[name] == data.factors[name]).float().mean()) >= 0.95, name
    assert float((pred["scale"] - data.factors["scale"]).abs().mean()) < 0.05
