"""NaTra with a structure/appearance model: the appearance-swap transform (donors, strengths, modes,
determinism, gradients), appearance directions, the one model loader, the recipe, the suites, the
strategies and the commands, on a tiny untrained swap model (16x16)."""
from __future__ import annotations

import re
import sys

import pytest
import torch
from click.testing import CliRunner
from hypothesis import find, given, settings

import robust.strategies as rs
from augment.swap import AppearanceSwap, DonorBank, SwapConfig
from robust.data import ImageSet
from robust.errors import FileFormatError, InputError
from robust.gan.checkpoint import save_generator
from robust.gan.codes_cache import load_or_encode
from robust.gan.directions import appearance_directions, load_directions
from robust.gan.natural import file_kind, load_model, resolve_model
from robust.gan.swapping import SwapNetConfig, build_swap_model, save_swap_model
from robust.losses import per_image_loss
from robust.models import Classifier
from robust.synthetic import SyntheticBenchmark
from robust.transforms import Transform

import classifier_helpers
from gan_helpers import tiny_generator

NET = SwapNetConfig(resolution=16, structure_res=4, structure_channels=2, appearance_dim=8, width=8, channel_max=16)
QUICK = settings(max_examples=25, derandomize=True, deadline=None, database=None)


def pixel_classifier(seed: int = 0) -> Classifier:
    return classifier_helpers.pixel_classifier(10, seed)


@pytest.fixture(scope="module")
def setup():
    model = build_swap_model(NET, seed=0).eval().requires_grad_(False)
    data = SyntheticBenchmark(size=16, seed=0).split("train", 40)
    codes = load_or_encode(model, data, use_cache=False)
    bank = DonorBank.from_codes(codes, data)
    directions = appearance_directions(model, codes.appearance, "pca", 3)
    return model, data, codes, bank, directions, pixel_classifier()


def test_donors_come_from_other_classes_and_follow_the_seed_alone(setup):
    _, data, _, bank, _, _ = setup
    seeds, labels = torch.arange(4000), data.labels[torch.arange(4000) % len(data)]
    picked = bank.pick(seeds, labels)
    assert bool((bank.labels[picked] != labels).all())
    # Uniform over the allowed donors: every one of them is drawn, none of the image's own class.
    for c in range(3):
        allowed = (bank.labels != c).nonzero().squeeze(1)
        drawn = bank.pick(torch.arange(3000), torch.full((3000,), c)).unique()
        assert set(drawn.tolist()) == set(allowed.tolist())
    assert torch.equal(bank.pick(seeds[5:9], labels[5:9]), picked[5:9])
    # Without a label (-1) every donor may be drawn, the image's class included.
    assert set(bank.pick(torch.arange(3000), torch.full((3000,), -1)).tolist()) == set(range(len(bank)))
    with pytest.raises(InputError, match="two classes"):
        DonorBank(torch.randn(5, 8), torch.zeros(5, dtype=torch.long))


def test_strength_zero_gives_the_reconstruction_or_with_the_residual_the_image(setup):
    model, data, codes, bank, _, _ = setup
    images = data.images[:6]
    still = {"donor": torch.arange(6), "strength": torch.zeros(6)}
    with torch.no_grad():
        recon = model.decode(*model.encode(images))
    assert torch.allclose(AppearanceSwap(model, bank).apply(images, still), recon, atol=1e-6)
    assert torch.equal(AppearanceSwap(model, bank, pixel_residual=True).apply(images, still), images)
    moved = AppearanceSwap(model, bank, pixel_residual=True).apply(images, {**still, "strength": torch.ones(6)})
    assert not torch.allclose(moved, images, atol=1e-3)
    # Full strength is the model's own swap toward the donor's code.
    swap = AppearanceSwap(model, bank).with_codes(codes, data)
    donors = bank.pick(torch.arange(6), data.labels[:6])
    with torch.no_grad():
        expected = model.swap(images, bank.appearance[donors], 1.0)
    assert torch.allclose(swap.apply(images, {**still, "strength": torch.ones(6)}), expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["random", "worst_of_k", "gradient"])
def test_each_mode_follows_each_images_id_not_its_batch(setup, mode):
    model, data, codes, bank, directions, clf = setup
    swap = AppearanceSwap(model, bank, mode, directions=directions, classifier=clf, k=3, steps=2, mix=mode == "gradient")
    ids = torch.arange(100, 112)
    full = swap.transform(data.images[:12], data.labels[:12], seed=3, sample_ids=ids)
    part = swap.transform(data.images[4:7], data.labels[4:7], seed=3, sample_ids=ids[4:7])
    again = swap.transform(data.images[:12], data.labels[:12], seed=3, sample_ids=ids)
    other = swap.transform(data.images[:12], data.labels[:12], seed=4, sample_ids=ids)
    assert torch.equal(full.images, again.images) and not torch.equal(full.images, other.images)
    assert torch.allclose(part.images, full.images[4:7], atol=1e-5)
    assert all(torch.allclose(part.params[k], full.params[k][4:7], atol=1e-6) for k in full.params)
    assert bool((bank.labels[full.donors] != data.labels[:12]).all())
    strength = full.params["strength"]
    assert bool(((strength >= 0) & (strength <= 1)).all()) and 0 <= float(full.images.min()) and float(full.images.max()) <= 1
    # Cached codes give the same images as encoding on the fly.
    cached = swap.transform(data.images[:12], data.labels[:12], codes=codes.batch(torch.arange(12)), seed=3, sample_ids=ids)
    assert torch.allclose(cached.images, full.images, atol=1e-5)


def test_worst_of_k_and_gradient_are_never_milder_than_the_first_draw(setup):
    model, data, _, bank, directions, clf = setup
    x, y = data.images[:16], data.labels[:16]
    first = AppearanceSwap(model, bank, "random", directions=directions).transform(x, y, seed=1)
    base = per_image_loss("ce", clf.logits(first.images), y)
    for mode, extra in (("worst_of_k", {}), ("gradient", {}), ("gradient", {"mix": True})):
        out = AppearanceSwap(model, bank, mode, directions=directions, classifier=clf, k=4, steps=3, **extra).transform(x, y, seed=1)
        loss = per_image_loss("ce", clf.logits(out.images), y)
        assert torch.allclose(loss, out.loss, atol=1e-4)
        assert bool((loss >= base - 1e-4).all()), mode
        assert float(loss.mean()) > float(base.mean()), mode
        if extra:
            assert out.mix.shape == (16, 4) and torch.allclose(out.mix.sum(1), torch.ones(16))
    with pytest.raises(InputError, match="classifier"):
        AppearanceSwap(model, bank, "gradient").transform(x, y)
    with pytest.raises(InputError, match="labels"):
        AppearanceSwap(model, bank, "worst_of_k", classifier=clf).transform(x)


def test_the_swap_is_a_differentiable_transform_of_donor_and_strength(setup):
    model, data, codes, bank, directions, clf = setup
    swap = AppearanceSwap(model, bank, directions=directions)
    assert isinstance(swap, Transform) and swap.param_names == ["donor", "strength", *directions.names]
    assert [p.kind for p in swap.params[:2]] == ["seed", "magnitude"] and swap.param("strength").identity == 0.0
    params = swap.sample(torch.arange(5))
    assert torch.equal(params["donor"], swap.sample(torch.arange(5))["donor"])
    strength = torch.full((5,), 0.5, requires_grad=True)
    magnitude = torch.zeros(5, requires_grad=True)
    out = swap.apply(data.images[:5], {**params, "strength": strength, directions.names[0]: magnitude})
    (clf.forward(out).logsumexp(1).sum()).backward()
    assert strength.grad is not None and float(strength.grad.abs().sum()) > 0 and float(magnitude.grad.abs().sum()) > 0
    with pytest.raises(InputError, match="strength"):
        SwapConfig(strength=1.5)
    with pytest.raises(InputError, match="neither"):
        AppearanceSwap(model, None)
    with pytest.raises(InputError, match="images"):
        swap.apply(torch.rand(2, 3, 8, 8), swap.sample(torch.arange(2)))


def test_appearance_directions_span_the_codes_and_keep_to_their_model(setup, tmp_path):
    model, _, codes, _, directions, _ = setup
    assert directions.method == "appearance_pca" and directions.vectors.shape == (3, 8)
    assert torch.allclose(directions.vectors @ directions.vectors.T, torch.eye(3), atol=1e-5)
    spread = ((codes.appearance - codes.appearance.mean(0)) @ directions.vectors.T).std(0)
    assert torch.allclose(directions.ranges[:, 1], 2 * spread, rtol=1e-4) and bool((directions.values[:-1] >= directions.values[1:]).all())
    sefa = appearance_directions(model, codes.appearance, "sefa", 2)
    assert sefa.names == ["appearance_sefa_0", "appearance_sefa_1"] and bool((sefa.ranges[:, 1] > 0).all())
    directions.save(tmp_path / "dirs", model)
    assert torch.equal(load_directions(tmp_path / "dirs", model).vectors, directions.vectors)
    with pytest.raises(InputError, match="directions found for this generator"):
        load_directions(tmp_path / "dirs", build_swap_model(NET, seed=1))
    with pytest.raises(InputError, match="method"):
        appearance_directions(model, codes.appearance, "householder")


def test_one_loader_reads_either_kind_and_refuses_the_other_clearly(setup, tmp_path):
    model, data, *_ = setup
    save_swap_model(model, tmp_path / "swap")
    save_generator(tiny_generator(), tmp_path / "gen")
    assert file_kind(tmp_path / "swap") == "swap" and file_kind(tmp_path / "gen.safetensors") == "stylegan"
    assert type(load_model(tmp_path / "swap.safetensors")).__name__ == "SwapAutoencoder"
    assert type(load_model(tmp_path / "gen")).__name__ == "Generator"
    with pytest.raises(InputError, match=r"model file: expected a StyleGAN2 generator file, got .*swap.*a structure/appearance"):
        load_model(tmp_path / "swap", kind="stylegan")
    with pytest.raises(InputError, match="expected a structure/appearance \\(swap\\) model file"):
        load_model(tmp_path / "gen", kind="swap")
    (tmp_path / "other.json").write_text('{"format": "robust-gan-directions"}')
    with pytest.raises(FileFormatError, match="a model file"):
        load_model(tmp_path / "other")
    # The model a recipe or suite uses: the given one, a file, or none for data the shipped models do not draw.
    assert resolve_model("auto", model, data) is model
    assert type(resolve_model(str(tmp_path / "gen"), model, data)).__name__ == "Generator"
    with pytest.raises(InputError, match="natra recipe generator"):
        resolve_model("auto", None, data, name="natra recipe generator")
    with pytest.raises(InputError, match="structure/appearance"):
        resolve_model("swap", None, data)


def test_codes_are_cached_by_model_and_data(setup, tmp_path):
    model, data, codes, *_ = setup
    first = load_or_encode(model, data, cache_dir=tmp_path)
    assert torch.equal(first.appearance, codes.appearance) and len(list(tmp_path.glob("*.safetensors"))) == 1
    assert load_or_encode(model, data, cache_dir=tmp_path).key == first.key
    load_or_encode(build_swap_model(NET, seed=1), data, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_the_natra_recipe_trains_with_a_swap_model_of_the_training_set(setup, tmp_path, monkeypatch):
    from robust.models import build_classifier
    from robust.train import harden
    from robust.train.recipes import Batch, NaTraTraining, RecipeContext

    model, data, *_ = setup
    monkeypatch.setenv("ROBUST_CACHE_DIR", str(tmp_path))
    clf = pixel_classifier()
    recipe = NaTraTraining("natra:worst_of_k,k=3,directions=pca,n_directions=2")
    recipe.bind(RecipeContext(clf, data, torch.device("cpu"), generator=model))
    assert recipe.kind == "swap" and len(recipe.transform.bank) == len(data) and recipe.transform.k_directions == 2
    ids = torch.arange(12)
    batch = Batch(data.images[:12], data.labels[:12], ids, ids, torch.Generator(), 0, 0)
    (moved,) = recipe.views(batch, clf)
    (alone,) = recipe.views(Batch(data.images[3:5], data.labels[3:5], ids[3:5], ids[3:5], torch.Generator(), 0, 0), clf)
    assert not torch.allclose(moved, batch.images) and torch.allclose(alone, moved[3:5], atol=1e-5)
    random = NaTraTraining("natra:random,directions=pca,n_directions=2")
    random.bind(RecipeContext(clf, data, torch.device("cpu"), generator=model))
    (drawn,) = random.views(batch, clf)
    worse = per_image_loss("ce", clf.logits(moved), batch.labels) >= per_image_loss("ce", clf.logits(drawn), batch.labels) - 1e-4
    assert bool(worse.all())
    # A model file named in the spec.
    save_swap_model(model, tmp_path / "swap", half=False)
    result = harden(build_classifier("smallcnn", 10, (3, 16, 16), width=4), data, f"natra:random@0.8,model={tmp_path / 'swap'}",
                    epochs=1, batch_size=20, progress=False, device="cpu", seed=1)
    assert result.steps == 2


def test_the_natra_recipe_refuses_what_does_not_fit_its_model_before_training(setup):
    from robust.train import harden
    from robust.train.recipes import NaTraTraining, RecipeContext

    model, data, *_ = setup
    clf = pixel_classifier()
    with pytest.raises(InputError, match="options for a structure/appearance model.*invert_steps"):
        harden(clf, data, "natra,invert_steps=3", generator=model, epochs=1, progress=False)
    with pytest.raises(InputError, match="options for a StyleGAN2 generator.*mix"):
        harden(clf, data, "natra,mix=true", generator=tiny_generator(classes=10), epochs=1, progress=False)
    with pytest.raises(InputError, match="option directions: expected pca, sefa"):
        harden(clf, data, "natra,directions=householder", generator=model, epochs=1, progress=False)
    with pytest.raises(InputError, match="natra recipe data"):
        NaTraTraining("natra").bind(RecipeContext(clf, SyntheticBenchmark(size=32, seed=0).split("train", 8), torch.device("cpu"),
                                                  generator=model))


def test_the_natural_and_natra_suites_run_with_a_swap_model(setup, tmp_path, monkeypatch):
    from robust.audit import SUITES, AuditContext, SuiteSkipped, load_suites
    from robust.registry import parse_spec

    model, data, *_ = setup
    monkeypatch.setenv("ROBUST_CACHE_DIR", str(tmp_path))
    load_suites()
    shift = SyntheticBenchmark(size=16, seed=0).split("test_shift", 30)
    ctx = AuditContext(pixel_classifier(), shift, data_source="synthetic:test_shift,size=16", generator=model, progress=False)
    natural = SUITES.get("natural")(ctx, parse_spec("natural,n=12,worst_k=3,max_directions=2,k=4,steps=3"))
    assert [c.name for c in natural.cases] == ["swap", "appearance_pca_0", "appearance_pca_1"]
    assert [c.name for c in natural.curves] == ["swap", "appearance_pca_0", "appearance_pca_1"] and len(natural.strips) == 3
    assert natural.curves[0].x == [0.0, 0.25, 0.5, 0.75, 1.0] and natural.params["donors"] == 12
    assert natural.metrics["worst_acc"] <= natural.metrics["min_worst_acc"] + 1e-9
    donors = SUITES.get("natural")(ctx, parse_spec("natural,n=12,worst_k=2,directions=none,donors=synthetic:train"))
    assert [c.name for c in donors.cases] == ["swap"] and donors.params["donors"] > 12
    moved = SUITES.get("natra")(ctx, parse_spec("natra:worst_of_k,n=12,k=2"))
    assert moved.metrics["drop"] == pytest.approx(moved.metrics["clean_acc"] - moved.metrics["acc"]) and moved.cases[0].n == 12
    assert all(f.description.startswith("natra:worst_of_k@1") and not torch.equal(f.image, f.original) for f in moved.cases[0].failures)
    assert moved.cases[0].failures
    with pytest.raises(SuiteSkipped, match="structure/appearance model has neither"):
        SUITES.get("sage")(ctx, parse_spec("sage,queries=16"))


def test_strategies_draw_swaps_and_appearance_directions(setup):
    model, data, codes, bank, directions, _ = setup
    swap = AppearanceSwap(model, bank, directions=directions)
    seen = set()

    @QUICK
    @given(case=rs.latent_directions(swap, codes=codes, data=data))
    def within(case: rs.LatentCase) -> None:
        seen.add(case.transform.direction_name)
        assert case.transform.low <= case.magnitude <= case.transform.high
        assert case.apply(data.images[:2]).shape == (2, 3, 16, 16)

    within()
    assert "swap" in seen and seen <= {"swap", *directions.names}
    failing = find(rs.latent_directions(swap, which="swap", data=data), lambda c: c.magnitude > 0.5, settings=QUICK)
    printed = repr(failing)
    assert re.fullmatch(r"latent_case\(<swap:appearance_pca>, direction=0, magnitude=0\.5[0-9]*, donor=\d+\)", printed), printed
    rebuilt = eval(printed.replace("<swap:appearance_pca>", "swap"), {"latent_case": lambda *a, **k: rs.latent_case(*a, data=data, **k),
                                                                      "swap": swap})
    assert repr(rebuilt) == printed and torch.equal(rebuilt.apply(data.images[:3]), failing.apply(data.images[:3]))
    # The images' labels are known from data, so their donors are of other classes.
    params = rebuilt.params(3)
    donors = bank.pick(params["donor"], data.labels[:3])
    with torch.no_grad():
        expected = model.decode(codes.structure[:3], torch.lerp(codes.appearance[:3], bank.appearance[donors], rebuilt.magnitude))
    assert torch.allclose(rebuilt.apply(data.images[:3]), expected, atol=1e-5)
    only = find(rs.latent_directions(directions, generator=model), lambda c: c.magnitude != 0, settings=QUICK)
    assert only.transform.direction_name == directions.names[0]


def _write_folder(root, data: ImageSet) -> None:
    from robust.io import write_png

    for i in range(len(data)):
        image = (data.images[i] * 255).round().to(torch.uint8)
        write_png(root / data.class_names[int(data.labels[i])] / f"{i:03d}.png", image)


@pytest.fixture(scope="module")
def swap_run(tmp_path_factory):
    """A tiny swap model trained for 2 steps by ``robust gan train --model swap`` on a folder of 24 images."""
    from robust.cli import cli

    root = tmp_path_factory.mktemp("swap_cli")
    _write_folder(root / "photos", SyntheticBenchmark(size=16, seed=0).split("train", 24))
    env = {"ROBUST_CACHE_DIR": str(root / "cache")}
    base = ["gan", "train", "--model", "swap", "--data", str(root / "photos"), "--preset", "tiny", "--out", str(root / "run"),
            "--threads", "1"]
    first = CliRunner().invoke(cli, [*base, "--set", "steps=2"], env=env)
    return root, base, env, first


def test_gan_train_swap_trains_on_a_folder_and_resumes(swap_run, monkeypatch):
    from robust.cli import cli

    root, base, env, first = swap_run
    assert first.exit_code == 0, first.output
    assert "labels unused" in first.output and "swap model written to" in first.output and "step 2/2" in first.output
    assert sorted(p.name for p in (root / "run").glob("snapshot-*.safetensors")) == ["snapshot-00000002.safetensors"]
    assert (root / "run" / "log.jsonl").read_text().count("\n") == 1
    runner = CliRunner()
    again = runner.invoke(cli, base, env=env)
    assert again.exit_code != 0 and f"--resume {root / 'run'}" in again.output
    elsewhere = runner.invoke(cli, [*base, "--resume", str(root / "photos")], env=env)
    assert elsewhere.exit_code != 0 and "its own folder" in elsewhere.output
    refused = runner.invoke(cli, [*base, "--condition", "texture"], env=env)
    assert refused.exit_code != 0 and "--condition" in refused.output
    again_args = [*base, "--resume", str(root / "run"), "--kimg", "0.016"]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/robust", *again_args])  # provenance reads the process's own command
    resumed = runner.invoke(cli, again_args, env=env)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming snapshot-00000002" in resumed.output and (root / "run" / "snapshot-00000004.safetensors").is_file()
    sidecar = load_model(root / "run" / "swap_model.safetensors").extra
    assert sidecar["steps"] == 4 and sidecar["seed"] == 0 and "hardware" in sidecar and sidecar["command"].startswith("robust gan train --model swap")
    assert len(sidecar["runs"]) == 2 and sidecar["data"]["n"] == 24 and "date" in sidecar


def test_a_trained_swap_model_feeds_natra_training_and_directions(swap_run):
    from robust.cli import cli

    root, _, env, first = swap_run
    assert first.exit_code == 0, first.output
    model_file, folder = root / "run" / "swap_model.safetensors", root / "photos"
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", "--data", str(folder), "--recipe", "natra:random", "--generator", str(model_file), "--epochs", "1",
                                  "--batch-size", "12", "--model", "smallcnn", "--out", str(root / "natra")], env=env)
    assert trained.exit_code == 0, trained.output
    found = runner.invoke(cli, ["directions", "--generator", str(model_file), "--data", str(folder), "--method", "pca", "-k", "3",
                                "--out", str(root / "dirs"), "--strips", str(root / "strips")], env=env)
    assert found.exit_code == 0, found.output
    assert load_directions(root / "dirs", load_model(model_file)).method == "appearance_pca"
    assert len(list((root / "strips").glob("*.png"))) == 3
    wrong = runner.invoke(cli, ["gan", "sample", "--generator", str(model_file), "--out", str(root / "s.png")], env=env)
    assert wrong.exit_code != 0 and "expected a StyleGAN2 generator file" in wrong.output
    needs_data = runner.invoke(cli, ["directions", "--generator", str(model_file)], env=env)
    assert needs_data.exit_code != 0 and "--data" in needs_data.output
    judged = runner.invoke(cli, ["directions", "--generator", str(model_file), "--data", str(folder), "--judge", "oracle"], env=env)
    assert judged.exit_code != 0 and "--judge" in judged.output
