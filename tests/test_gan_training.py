"""StyleGAN2-ADA training: it learns a trivial dataset, ADA reacts to overfitting, snapshots resume exactly."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from robust.cli import cli
from robust.data import ImageSet
from robust.errors import FileFormatError, InputError, RobustError
from robust.gan import (
    AdaController,
    AugmentConfig,
    AugmentPipe,
    Discriminator,
    Trainer,
    load,
    prepare_data,
    preset,
)
from robust.gan.checkpoint import load_discriminator, save_discriminator
from robust.gan.metrics import _coverage, frechet_distance
from robust.gan.training import AuxClassifier, TrainingDiverged, l2_pgd, latest_snapshot
from robust.synthetic import FACTORS


def solid_colours(n: int = 64, size: int = 8, seed: int = 0) -> ImageSet:
    """Two classes of flat images: reddish and bluish, with a little brightness jitter."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    colours = torch.tensor([[0.8, 0.2, 0.2], [0.2, 0.2, 0.8]])[labels] * (0.9 + 0.2 * torch.rand(n, 1, generator=g))
    return ImageSet(colours[:, :, None, None].expand(n, 3, size, size).clamp(0, 1).contiguous(), labels, ["red", "blue"], name="solid")


def probe_separation(G, data, steps: int = 30, seed: int = 0) -> float:
    """Logistic loss of a fresh discriminator trained for a fixed budget to tell reals from G's samples (higher: harder)."""
    torch.manual_seed(seed)
    D = Discriminator(c_dim=0, img_resolution=data.resolution, channel_base=64, channel_max=8, mapping_kwargs={"num_layers": 1})
    opt = torch.optim.Adam(D.parameters(), 0.0025, betas=(0.0, 0.99))
    g = torch.Generator().manual_seed(seed)
    real = data.images.float() / 127.5 - 1

    def fakes(n):
        z = torch.randn(n, G.z_dim, generator=g)
        c = data.c[torch.randint(len(data), (n,), generator=g)]
        with torch.no_grad():
            return G(z, c, noise_mode="random", generator=g)

    for _ in range(steps):
        r = real[torch.randint(len(data), (16,), generator=g)]
        loss = F.softplus(-D(r)).mean() + F.softplus(D(fakes(16))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(F.softplus(-D(real)).mean() + F.softplus(D(fakes(64))).mean())


def test_short_training_makes_fakes_harder_to_separate():
    data = prepare_data(solid_colours(), ["class"])
    trainer = Trainer(preset("tiny", resolution=8, augment="", style_mixing=0.0), data, seed=0)
    before = probe_separation(trainer.G_ema, data)
    for _ in range(70):
        stats = trainer.step()
    after = probe_separation(trainer.G_ema, data)
    assert after > before + 0.2 and after > 1.1, (before, after)  # chance level is 2 ln 2 = 1.386
    assert {"loss_G", "loss_D", "p"} <= set(stats)
    # Conditioning is respected: red samples are redder than blue ones.
    with torch.no_grad():
        z = torch.randn(32, trainer.G_ema.z_dim)
        red = trainer.G_ema(z, {"class": torch.zeros(32, dtype=torch.long)}).mean(dim=(0, 2, 3))
        blue = trainer.G_ema(z, {"class": torch.ones(32, dtype=torch.long)}).mean(dim=(0, 2, 3))
    assert red[0] - red[2] > blue[0] - blue[2]


def test_ada_raises_p_when_the_discriminator_overfits():
    ada = AdaController(target=0.6, interval=1, speed_kimg=1.0)
    for _ in range(3):
        ada.accumulate(torch.tensor([2.0, 1.0, 3.0, 0.5]))  # r_t = 1 > 0.6
        ada.step(batch_size=100)
    assert ada.p == pytest.approx(0.3) and ada.last_rt == 1.0
    for _ in range(5):
        ada.accumulate(torch.tensor([-1.0, -2.0, 1.0, -0.5]))  # r_t = -0.5 < 0.6
        ada.step(batch_size=100)
    assert ada.p == 0.0
    # In training: two real images are memorised quickly, so sign(D(real)) -> +1 and p climbs.
    data = prepare_data(solid_colours(n=2), ["class"])
    trainer = Trainer(preset("tiny", resolution=8, ada_kimg=0.2), data, seed=0)
    for _ in range(30):
        trainer.step()
    assert trainer.ada.p > 0.1 and trainer.ada.last_rt > 0.6


def test_augment_pipe_is_identity_at_p0_differentiable_and_seeded():
    pipe = AugmentPipe(AugmentConfig("bgcno"))
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    assert torch.equal(pipe(x, 0.0, torch.Generator().manual_seed(0)), x)
    a = pipe(x, 1.0, torch.Generator().manual_seed(1))
    b = pipe(x, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.allclose(a, x)
    x.requires_grad_(True)
    pipe(x, 0.7, torch.Generator().manual_seed(2)).square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    grey = AugmentPipe(AugmentConfig("c"))(torch.zeros(2, 1, 8, 8), 1.0, torch.Generator().manual_seed(0))
    assert grey.shape == (2, 1, 8, 8)
    with pytest.raises(InputError, match="augment groups"):
        AugmentConfig("bx")


def test_snapshot_then_resume_equals_continuous_training(tmp_path):
    data = prepare_data(solid_colours(n=16), ["class"])
    config = preset("tiny", resolution=8, r1_interval=2, pl_weight=1.0, pl_interval=3, ada_interval=1, ada_kimg=0.5)
    continuous = Trainer(config, data, seed=5)
    continuous.ada.p = 0.3  # augmentations active, so their random streams are part of what must resume
    for _ in range(6):
        continuous.step()
    first = Trainer(config, data, seed=5)
    first.ada.p = 0.3
    for _ in range(3):
        first.step()
    first.save_snapshot(tmp_path / "snap")
    resumed = Trainer.resume(tmp_path / "snap", data)
    for _ in range(3):
        resumed.step()
    for name in ("G", "D", "G_ema"):
        a, b = getattr(continuous, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert continuous.ada.p == resumed.ada.p and continuous.cur_nimg == resumed.cur_nimg
    assert torch.equal(continuous.loss.pl_mean, resumed.loss.pl_mean)
    other = prepare_data(solid_colours(n=16, seed=1), ["class"])
    with pytest.raises(InputError, match="fingerprint"):
        Trainer.resume(tmp_path / "snap", other)
    assert Trainer.resume(tmp_path / "snap", other, check_data=False).cur_nimg == 24  # fine-tuning on new data
    slower = Trainer.resume(tmp_path / "snap", data, config_overrides={"lr_g": 1e-4, "lr_d": 2e-4})
    assert [g["lr"] for g in slower.opt_G.param_groups] == [1e-4] and [g["lr"] for g in slower.opt_D.param_groups] == [2e-4]


def test_run_writes_snapshots_grids_and_log(tmp_path):
    data = prepare_data(solid_colours(n=16), ["class"])
    calls = []
    trainer = Trainer(preset("tiny", resolution=8), data, seed=0, metrics={"const": lambda G: {"value": 1.0}})
    history = trainer.run(0.024, out_dir=tmp_path, snapshot_kimg=0.016, on_step=calls.append)
    assert len(calls) == 3 and [h["nimg"] for h in history] == [16, 24]
    assert history[-1]["const.value"] == 1.0
    assert latest_snapshot(tmp_path).name == "snapshot-000000024.safetensors"
    assert (tmp_path / "samples-000000024.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    G = load(latest_snapshot(tmp_path))
    assert torch.equal(G.state_dict()["mapping.fc0.weight"], trainer.G_ema.state_dict()["mapping.fc0.weight"])


def test_diverging_loss_is_reported(monkeypatch):
    data = prepare_data(solid_colours(n=8), ["class"])
    trainer = Trainer(preset("tiny", resolution=8), data, seed=0)
    with torch.no_grad():
        trainer.G.synthesis.b8.torgb.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss"):
        trainer.step()


def test_training_data_conditioning_from_factors():
    from robust.synthetic import SyntheticBenchmark

    data = prepare_data(SyntheticBenchmark(size=16).split("generator", 20), ["class", "texture", "mark"])
    assert data.conditioning.names == ["class", "texture", "mark"] and data.c.shape == (20, 10 + 5 + 5)
    assert data.images.dtype == torch.uint8 and data.resolution == 16
    with pytest.raises(InputError, match="continuous"):
        prepare_data(SyntheticBenchmark(size=16).split("generator", 4), ["class", "scale"])
    with pytest.raises(InputError, match="16x16"):
        Trainer(preset("tiny", resolution=8), data)


def test_frechet_distance_and_coverage_maths():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g)
    b = torch.randn(4000, 3, generator=g) + torch.tensor([1.0, 0.0, 2.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(5.0, abs=0.3)  # |mu|^2 for equal covariances
    scale = next(f for f in FACTORS if f.name == "scale")
    real = scale.low + (scale.high - scale.low) * torch.rand(2000, generator=g)
    narrow = scale.low + 0.2 * (scale.high - scale.low) * torch.rand(2000, generator=g)
    full, part = _coverage(real.flip(0), real, scale), _coverage(narrow, real, scale)
    assert full["bins"] == 1.0 and full["tv"] < 0.05
    assert part["bins"] <= 0.3 and part["range"] < 0.3 and part["tv"] > 0.7


def test_cli_train_resume_export_and_sample(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["gan", "train", "--data", "synthetic:generator", "--limit", "24", "--condition", "class,texture", "--preset", "tiny",
            "--kimg", "0.016", "--snapshot-kimg", "0.008", "--out", str(out), "--metrics", "none", "--no-progress"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*args[:-7], "--kimg", "0.024", "--out", str(out), "--resume", str(out), "--metrics", "none",
                                 "--export", str(tmp_path / "gen"), "--no-progress"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "gen.json").read_text())
    assert sidecar["extra"]["kimg"] == 0.024 and sidecar["extra"]["seed"] == 0 and "command" in sidecar["extra"]
    result = runner.invoke(cli, ["gan", "sample", "--generator", str(tmp_path / "gen.safetensors"), "-n", "4",
                                 "--prompt", "class=star,texture=stripes", "--out", str(tmp_path / "s.png"), "--npz", str(tmp_path / "s.npz")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    import numpy as np

    saved = np.load(tmp_path / "s.npz")
    assert saved["images"].shape == (4, 3, 16, 16) and set(saved["labels"].tolist()) == {5}
    assert set(saved["factor_texture"].tolist()) == {1}
    # psi 0 toward the conditioning's own centre: every sample of one prompt is that prompt's mean image.
    result = runner.invoke(cli, ["gan", "sample", "--generator", str(tmp_path / "gen.safetensors"), "-n", "3", "--psi", "0",
                                 "--truncation-center", "condition", "--prompt", "class=star,texture=stripes",
                                 "--out", str(tmp_path / "c.png"), "--npz", str(tmp_path / "c.npz")])
    assert result.exit_code == 0, result.output
    centred = np.load(tmp_path / "c.npz")["images"]
    assert np.array_equal(centred[0], centred[1]) and np.array_equal(centred[0], centred[2])
    assert not np.array_equal(centred[0], saved["images"][0])
    bad = runner.invoke(cli, ["gan", "sample", "--generator", str(tmp_path / "gen.safetensors"), "--prompt", "class=hexagon"])
    assert bad.exit_code != 0 and "hexagon" in bad.output
    snapshot = sorted(out.glob("snapshot-*.safetensors"))[-1]
    exported = runner.invoke(cli, ["gan", "export", str(snapshot), "--out", str(tmp_path / "again"), "--note", "a CPU test run"])
    assert exported.exit_code == 0, exported.output
    again = json.loads((tmp_path / "again.json").read_text())["extra"]
    assert again["notes"] == ["a CPU test run"] and again["kimg"] == sidecar["extra"]["kimg"]
    refused = runner.invoke(cli, ["gan", "export", str(snapshot), "--out", str(tmp_path / "m"), "--measure", "100"])
    assert refused.exit_code != 0 and "--measure" in refused.output and not (tmp_path / "m.json").exists()
    # Export with the discriminator; a new run started from both carries the provenance on.
    exported = runner.invoke(cli, ["gan", "export", str(snapshot), "--out", str(tmp_path / "withd"), "--with-discriminator"])
    assert exported.exit_code == 0, exported.output
    d_file = load_discriminator(tmp_path / "withd_D")
    assert torch.equal(d_file.state_dict()["b16.conv0.weight"], load_discriminator(snapshot).state_dict()["b16.conv0.weight"])
    init = runner.invoke(cli, [*args[:-7], "--kimg", "0.008", "--out", str(tmp_path / "run2"), "--init", str(tmp_path / "withd"),
                               "--init-discriminator", str(tmp_path / "withd_D"), "--set", "d_warmup_kimg=0.004", "--metrics", "none",
                               "--export", str(tmp_path / "gen2"), "--no-progress"])
    assert init.exit_code == 0, init.output
    runs = json.loads((tmp_path / "gen2.json").read_text())["extra"]["runs"]
    assert runs[-2]["initialised_from"] == str(tmp_path / "withd") and runs[-2]["kimg"] == 0.024 and len(runs) == 4
    assert runs[-2]["discriminator"] == str(tmp_path / "withd_D")
    both = runner.invoke(cli, [*args, "--init", str(tmp_path / "gen"), "--resume", str(out)])
    assert both.exit_code != 0 and "--init" in both.output


def _redness_agreement(G, n: int = 64) -> float:
    """Share of samples whose red-minus-blue sign matches the conditioned class (0 red, 1 blue)."""
    g = torch.Generator().manual_seed(11)
    z = torch.randn(n, G.z_dim, generator=g)
    labels = torch.arange(n) % 2
    with torch.no_grad():
        img = G(z, {"class": labels}, noise_mode="const").mean(dim=(2, 3))
    return float(((img[:, 0] < img[:, 2]).long() == labels).float().mean())


def test_class_guidance_trains_an_auxiliary_classifier_and_pulls_fakes_to_their_class(tmp_path):
    data = prepare_data(solid_colours(), ["class"])
    plain = Trainer(preset("tiny", resolution=8, augment="", style_mixing=0.0), data, seed=0)
    guided = Trainer(preset("tiny", resolution=8, augment="", style_mixing=0.0, class_guidance=2.0), data, seed=0)
    assert plain.aux is None and guided.aux is not None
    for _ in range(25):
        plain.step()
        stats = guided.step()
    assert {"guidance", "aux_loss", "aux_acc"} <= set(stats) and stats["aux_acc"] > 0.9
    assert _redness_agreement(guided.G) > _redness_agreement(plain.G)
    # The auxiliary classifier and its optimiser are part of the snapshot: resuming continues exactly.
    guided.save_snapshot(tmp_path / "snap")
    resumed = Trainer.resume(tmp_path / "snap", data)
    for _ in range(2):
        guided.step()
        resumed.step()
    for name in ("G", "D", "aux"):
        a, b = getattr(guided, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # Fine-tuning an unguided snapshot with guidance starts a fresh auxiliary classifier.
    plain.save_snapshot(tmp_path / "plain")
    assert Trainer.resume(tmp_path / "plain", data, config_overrides={"class_guidance": 1.0}).aux is not None
    with pytest.raises(InputError, match="class_guidance_group"):
        Trainer(preset("tiny", resolution=8, class_guidance=1.0, class_guidance_group="texture"), data)
    with pytest.raises(InputError, match="class_guidance"):
        Trainer(preset("tiny", resolution=8, class_guidance=-1.0), data)


def test_l2_pgd_stays_in_its_ball_and_raises_the_loss():
    torch.manual_seed(0)
    model = AuxClassifier(3, 4, width=8)
    x = torch.rand(6, 3, 8, 8) * 2 - 1
    y = torch.arange(6) % 4
    adv = l2_pgd(model, x, y, eps=0.5)
    assert (adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)
    assert all(p.grad is None for p in model.parameters())


def test_robust_class_guidance_pretrains_its_classifier_adversarially(tmp_path):
    data = prepare_data(solid_colours(), ["class"])
    cfg = preset("tiny", resolution=8, augment="", style_mixing=0.0, class_guidance=1.0, class_guidance_eps=0.1, class_guidance_pretrain=20)
    robust_t = Trainer(cfg, data, seed=0)
    fresh_aux = {k: v.clone() for k, v in robust_t.aux.state_dict().items()}
    stats = robust_t.step()
    # The fresh classifier trained alone on 20 real batches before the first generator step ...
    pre = [h for h in robust_t.history if "aux_pretrain_batches" in h]
    assert len(pre) == 1 and pre[0]["aux_pretrain_batches"] == 20 and pre[0]["aux_acc"] > 0.9
    assert any(not torch.equal(fresh_aux[k], v) for k, v in robust_t.aux.state_dict().items())
    # ... and trains on PGD examples: clean accuracy is reported apart from the adversarial one.
    assert {"aux_acc_clean", "aux_acc", "guidance"} <= set(stats)
    robust_t.step()
    assert len([h for h in robust_t.history if "aux_pretrain_batches" in h]) == 1  # only once
    # Resuming keeps the classifier when its radius is unchanged; another radius starts a fresh one.
    robust_t.save_snapshot(tmp_path / "r")
    same = Trainer.resume(tmp_path / "r", data)
    assert same._aux_pretrain == 0 and all(torch.equal(same.aux.state_dict()[k], v) for k, v in robust_t.aux.state_dict().items())
    other = Trainer.resume(tmp_path / "r", data, config_overrides={"class_guidance_eps": 0.2})
    assert other._aux_pretrain == 20 and all(torch.equal(other.aux.state_dict()[k], v) for k, v in fresh_aux.items())
    for bad in ({"class_guidance_eps": -0.1}, {"class_guidance_eps": float("nan")}, {"class_guidance_pretrain": 1.5}):
        with pytest.raises(InputError, match=next(iter(bad))):
            Trainer(preset("tiny", resolution=8, class_guidance=1.0, **bad), data)


def test_a_run_initialised_from_a_generator_warms_up_its_fresh_discriminator_first(tmp_path):
    data = prepare_data(solid_colours(n=16), ["class"])
    cfg = preset("tiny", resolution=8)
    source = Trainer(cfg, data, seed=0)
    for _ in range(2):
        source.step()
    source.export_generator(tmp_path / "g", extra={"runs": [{"command": "first run"}], "kimg": 0.016})
    # Another seed: every weight differs until initialise_from copies the generator's.
    run = Trainer(preset("tiny", resolution=8, d_warmup_kimg=0.016), data, seed=1)
    fresh_d = {k: v.clone() for k, v in run.D.state_dict().items()}
    run.initialise_from(tmp_path / "g")
    exported = source.G_ema.state_dict()
    for module in (run.G, run.G_ema):
        assert all(torch.equal(v, exported[k]) for k, v in module.state_dict().items())
    assert all(torch.equal(v, fresh_d[k]) for k, v in run.D.state_dict().items())
    assert [r.get("command") for r in run.runs][0] == "first run" and run.runs[-1]["discriminator"] == "fresh"
    # Warm-up: the first 16 images train D only; G (and so G_ema) stay as loaded.
    stats = run.step()
    assert "loss_G" not in stats and "loss_D" in stats
    assert any(not torch.equal(v, fresh_d[k]) for k, v in run.D.state_dict().items())
    assert all(torch.equal(v, exported[k]) for k, v in run.G_ema.state_dict().items())
    assert "loss_G" not in run.step()
    assert "loss_G" in run.step()  # from image 16 on, G trains too
    assert any(not torch.equal(v, exported[k]) for k, v in run.G.state_dict().items())
    # A discriminator file (as `robust gan import --with-discriminator` writes) replaces the fresh one.
    save_discriminator(source.D, tmp_path / "d")
    with_d = Trainer(cfg, data, seed=1)
    with_d.initialise_from(tmp_path / "g", tmp_path / "d")
    assert all(torch.equal(v, source.D.state_dict()[k]) for k, v in with_d.D.state_dict().items())
    assert with_d.runs[-1]["discriminator"] == str(tmp_path / "d")
    # Architecture mismatch and an already-trained run are refused.
    wide = Trainer(preset("tiny", resolution=8, channel_max=8), data, seed=0)
    with pytest.raises(InputError, match="init"):
        wide.initialise_from(tmp_path / "g")
    save_discriminator(wide.D, tmp_path / "wide_d")
    with pytest.raises(FileFormatError, match="differently shaped"):
        Trainer(cfg, data, seed=1).initialise_from(tmp_path / "g", tmp_path / "wide_d")
    with pytest.raises(RobustError, match="fresh run"):
        run.initialise_from(tmp_path / "g")
    with pytest.raises(InputError, match="d_warmup_kimg"):
        Trainer(preset("tiny", resolution=8, d_warmup_kimg=-1.0), data)
