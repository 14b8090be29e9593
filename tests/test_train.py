"""The hardening loop: recipes learn, attacks inside training ascend, resume is exact, export matches, bad input fails early."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from robust import noise
from robust.errors import InputError, UnknownNameError
from robust.models import build_classifier, load_classifier
from robust.synthetic import SyntheticBenchmark
from robust.train import TrainConfig, fit, get_recipe, harden, parse_recipes
from robust.train.recipes import RECIPES, Batch, RecipeContext


@pytest.fixture(scope="module")
def bench():
    return SyntheticBenchmark(size=16, seed=0)


@pytest.fixture(scope="module")
def train_set(bench):
    return bench.split("train", 96)


@pytest.fixture(scope="module")
def shift_set(bench):
    return bench.split("test_shift", 40)


def small(seed: int = 0, width: int = 8):
    torch.manual_seed(seed)
    return build_classifier("smallcnn", 10, (3, 16, 16), width=width, class_names=SyntheticBenchmark.class_names)


@pytest.fixture(scope="module")
def trained(train_set):
    """A smallcnn that has seen the data (so losses and gradients are informative)."""
    clf = small()
    harden(clf, train_set, "erm", epochs=12, batch_size=32, optimizer="adamw", lr=1e-2, progress=False, device="cpu")
    return clf


def batch_of(data, n=32, seed=0):
    idx = torch.arange(n)
    return Batch(data.images[:n], data.labels[:n], idx, idx + 1000 * seed, torch.Generator().manual_seed(seed), 0, 0)


# -- recipes learn --------------------------------------------------------------------------------

TRAINABLE = ["erm", "oracle", "pgd:linf@2/255,steps=2", "pgd:l2@0.25,steps=2,trades=3", "corrupt@3", "augmix", "classic",
             "classic:trivialaugment", "0.5*erm+0.5*oracle"]


@pytest.mark.parametrize("recipe", TRAINABLE)
def test_each_recipe_runs_and_lowers_the_training_loss(recipe, train_set):
    result = harden(small(), train_set, recipe, epochs=5, batch_size=32, lr=1e-2, progress=False, device="cpu", seed=1)
    losses = [r["train_loss"] for r in result.history]
    assert result.steps == 5 * 3
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses


def test_a_model_named_by_architecture_is_initialised_from_the_run_seed(train_set):
    def run(seed):
        result = harden("smallcnn", train_set, "erm", epochs=1, batch_size=48, progress=False, device="cpu", seed=seed)
        return torch.cat([v.flatten().float() for v in result.classifier.model.state_dict().values()])

    first = run(2)
    torch.rand(10)  # the global random stream moves on between the runs
    assert torch.equal(first, run(2)) and not torch.equal(first, run(3))


def test_pgd_training_examples_raise_the_cross_entropy_they_maximise(trained, train_set):
    recipe = get_recipe("pgd:linf@4/255,steps=5")
    recipe.bind(RecipeContext(trained, train_set, torch.device("cpu")))
    batch = batch_of(train_set)
    (adv,) = recipe.views(batch, trained)
    assert (adv - batch.images).abs().max() <= 4 / 255 + 1e-6
    assert 0 <= float(adv.min()) and float(adv.max()) <= 1
    with torch.no_grad():
        clean = F.cross_entropy(trained(batch.images), batch.labels)
        attacked = F.cross_entropy(trained(adv), batch.labels)
    assert attacked > clean + 0.05


def test_trades_inner_loop_raises_the_kl_it_maximises_and_keeps_the_clean_view(trained, train_set):
    recipe = get_recipe("pgd:l2@0.5,steps=4,trades=6")
    recipe.bind(RecipeContext(trained, train_set, torch.device("cpu")))
    batch = batch_of(train_set)
    clean, adv = recipe.views(batch, trained)
    assert torch.equal(clean, batch.images)
    assert float((adv - clean).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5
    with torch.no_grad():
        p = trained(clean).softmax(1)
        kl = F.kl_div(trained(adv).log_softmax(1), p, reduction="batchmean")
        start = recipe.objective(trained, clean + 0.0, batch.labels, p).mean()
    assert kl > start + 1e-3
    loss = recipe.loss([trained(clean), trained(adv)], batch.labels, 0.0)
    assert loss.shape == (32,) and bool((loss >= F.cross_entropy(trained(clean), batch.labels, reduction="none") - 1e-6).all())


def test_oracle_rerenders_the_same_class_with_fresh_factors_independent_of_the_batch(train_set):
    recipe = get_recipe("oracle")
    recipe.bind(RecipeContext(small(), train_set, torch.device("cpu")))
    batch = batch_of(train_set, 16)
    (views,) = recipe.views(batch, None)
    assert views.shape == batch.images.shape and not torch.allclose(views, batch.images)
    # Image 5 alone gets the same rendering: the draws follow the image's seed, not the batch.
    alone = Batch(batch.images[5:6], batch.labels[5:6], batch.indices[5:6], batch.seeds[5:6], torch.Generator(), 0, 0)
    torch.testing.assert_close(recipe.views(alone, None)[0], views[5:6])


@pytest.mark.parametrize("spec", ["classic", "augmix", "corrupt", "corrupt@2,set=heldout"])
def test_augmenting_recipes_draw_per_image_so_the_batch_split_does_not_matter(spec, train_set):
    recipe = get_recipe(spec)
    batch = batch_of(train_set, 12)
    views = recipe.views(batch, None)
    alone = Batch(batch.images[7:9], batch.labels[7:9], batch.indices[7:9], batch.seeds[7:9], torch.Generator(), 0, 0)
    for whole, part in zip(views, recipe.views(alone, None)):
        torch.testing.assert_close(part, whole[7:9])
    changed = views[-1]
    assert changed.shape == batch.images.shape and 0 <= float(changed.min()) and float(changed.max()) <= 1
    assert not torch.allclose(changed, batch.images)


def test_augmix_sees_clean_and_two_views_and_adds_the_jensen_shannon_term(train_set):
    from augment.classic import augmix_consistency_loss

    recipe = get_recipe("augmix,weight=12")
    batch = batch_of(train_set, 16)
    clean, a1, a2 = recipe.views(batch, None)
    assert torch.equal(clean, batch.images) and not torch.equal(a1, a2)
    logits = [torch.randn(16, 10, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    loss = recipe.loss(logits, batch.labels, 0.0)
    expected = F.cross_entropy(logits[0], batch.labels, reduction="sum") + 12 * 16 * augmix_consistency_loss(*logits)
    torch.testing.assert_close(loss.sum(), expected)
    assert len(get_recipe("augmix,jsd=false").views(batch, None)) == 1


def test_mixture_splits_each_batch_by_its_weights():
    mix = parse_recipes("0.75*erm+0.25*oracle")
    assert mix.weights == pytest.approx([0.75, 0.25])
    assert str(mix) == "0.75*erm+0.25*oracle"
    ids = mix.assign(64, torch.Generator().manual_seed(0))
    assert ids.bincount().tolist() == [48, 16]
    # Uneven sizes: every recipe still gets its share on average.
    counts = sum(mix.assign(10, torch.Generator().manual_seed(s)).bincount(minlength=2) for s in range(200))
    assert counts.tolist()[1] == pytest.approx(500, rel=0.15)



def test_corrupt_recipe_reads_the_corruption_set_syntax_and_its_older_spellings():
    from augment.corruptions import BENCHMARK_CORRUPTIONS, HELDOUT_CORRUPTIONS

    for new, old in [("corrupt:heldout@3", "corrupt@3,set=heldout"), ("corrupt,names=fog+snow", "corrupt,names=fog/snow"),
                     ("corrupt", "corrupt:benchmark@5")]:
        a, b = get_recipe(new), get_recipe(old)
        assert (a.names, a.max_severity) == (b.names, b.max_severity), (new, old)
    assert get_recipe("corrupt").names == list(BENCHMARK_CORRUPTIONS)
    assert (get_recipe("corrupt:heldout@2.5").names, get_recipe("corrupt:heldout@2.5").max_severity) == (list(HELDOUT_CORRUPTIONS), 2.5)
    assert get_recipe("corrupt:fog").names == ["fog"] and get_recipe("corrupt,names=heldout+fog").names == [*HELDOUT_CORRUPTIONS, "fog"]
    # One severity rule, (0, 5]; the recipe's maximum bounds the draw range [1, max], so it is at least 1.
    for spec, message in [("corrupt@6", "recipe corrupt: expected severities in \\(0, 5\\]"),
                          ("corrupt@0", "recipe corrupt: expected severities in \\(0, 5\\]"),
                          ("corrupt@0.5", "recipe corrupt severity: expected one maximum severity in \\[1, 5\\]"),
                          ("corrupt@2+3", "recipe corrupt severity"),
                          ("corrupt,severities=3", "recipe corrupt options"),
                          ("corrupt:nope", "recipe corrupt: expected one of all, benchmark"),
                          ("corrupt:fog,set=all", "recipe corrupt option set"),
                          ("corrupt:fog,names=snow", "recipe corrupt: expected a target or names")]:
        with pytest.raises(InputError, match=message):
            get_recipe(spec)

# -- runs on disk: checkpoints, logs, resume ------------------------------------------------------------

def test_run_folder_has_log_best_and_last_checkpoints_loadable_as_classifiers(tmp_path, train_set, shift_set):
    result = harden(small(), train_set, "erm", eval_sets={"shift": shift_set}, epochs=2, batch_size=48, out=tmp_path,
                    progress=False, device="cpu")
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train_loss", "train_acc", "shift/acc", "shift/loss", "lr", "step"} <= set(lines[0])
    assert result.best["metric"] == "shift/acc"
    assert result.best["value"] == max(r["shift/acc"] for r in lines)
    last = load_classifier(tmp_path / "last")
    assert torch.equal(last.logits(shift_set.images), result.classifier.logits(shift_set.images))
    best = load_classifier(tmp_path / "best.json")
    assert best.accuracy(shift_set.images, shift_set.labels) == pytest.approx(result.best["value"])
    assert not list(tmp_path.glob(".*tmp")), "temporary files left behind"
    assert len(list(tmp_path.glob("state-*.safetensors"))) == 1


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", [4, 6])
def test_killed_and_resumed_run_ends_with_weights_equal_to_an_uninterrupted_run(tmp_path, train_set, shift_set, kill_at):
    # 3 steps per epoch, state saved every 2 steps and at each epoch end: the kill at step 4 comes
    # mid-epoch, the one at step 6 after the last step of epoch 2 but before its evaluation and save.
    kw = dict(eval_sets={"shift": shift_set}, epochs=3, batch_size=32, optimizer="sgd", lr=0.05, ema_decay=0.8, checkpoint_every=2,
              progress=False, device="cpu", seed=5)
    recipe = "0.5*erm+0.5*pgd:linf@2/255,steps=1"
    whole = harden(small(), train_set, recipe, out=tmp_path / "whole", **kw)

    def kill(step, loss):
        if step == kill_at:
            raise Killed

    with pytest.raises(Killed):
        harden(small(), train_set, recipe, out=tmp_path / "cut", on_step=kill, **kw)
    resumed = harden(small(), train_set, recipe, out=tmp_path / "cut", resume=True, **kw)
    a, b = whole.classifier.model.state_dict(), resumed.classifier.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)
    assert (tmp_path / "cut" / "log.jsonl").read_text().count("\n") == 3


def test_per_epoch_suites_log_corruption_and_attack_accuracy(tmp_path, trained, train_set, shift_set):
    result = harden(trained, train_set, "erm", eval_sets={"shift": shift_set, "train": train_set[:40]}, epochs=1, batch_size=48,
                    eval_suites=["clean", "corruptions@3,names=gaussian_noise+fog", "pgd:linf@8/255,steps=3,on=train"],
                    select="train/acc", out=tmp_path, progress=False, device="cpu", lr=1e-4)
    m = result.metrics
    assert {"shift/acc", "train/acc", "shift/corruptions.mean_acc", "train/pgd.acc"} <= set(m)
    assert m["train/pgd.acc"] < m["train/acc"] == m["train/pgd.clean_acc"]
    assert 0 <= m["shift/corruptions.mean_acc"] <= 1
    assert result.best["metric"] == "train/acc"
    logged = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert logged["train/pgd.acc"] == m["train/pgd.acc"]


def test_resume_with_a_different_configuration_fails_clearly(tmp_path, train_set):
    harden(small(), train_set, "erm", epochs=1, batch_size=48, out=tmp_path, progress=False, device="cpu")
    with pytest.raises(InputError, match="same recipe, configuration"):
        harden(small(), train_set, "erm", epochs=1, batch_size=32, out=tmp_path, resume=True, progress=False, device="cpu")


def test_ema_weights_are_what_the_run_returns_and_evaluates(train_set, shift_set):
    plain = harden(small(), train_set, "erm", epochs=2, batch_size=32, progress=False, device="cpu")
    ema = harden(small(), train_set, "erm", epochs=2, batch_size=32, ema_decay=0.5, eval_sets={"shift": shift_set},
                 progress=False, device="cpu")
    a, b = plain.classifier.model.state_dict(), ema.classifier.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("weight"))
    assert ema.metrics["shift/acc"] == pytest.approx(ema.classifier.accuracy(shift_set.images, shift_set.labels))


def test_fit_keeps_its_plain_interface(train_set):
    clf = small()
    history = fit(clf, train_set, epochs=2, batch_size=32, seed=0, progress=False)
    assert [set(h) for h in history] == [{"epoch", "loss", "acc", "seconds"}] * 2
    again = small()
    fit(again, train_set, epochs=2, batch_size=32, seed=0, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(clf.model.parameters(), again.model.parameters()))
    assert history[1]["loss"] < history[0]["loss"]


def test_fit_trains_with_a_recipe_under_its_own_settings_and_refuses_two_augmentations(train_set):
    plain, hue = small(), small()
    fit(plain, train_set, epochs=1, batch_size=32, seed=0, progress=False)
    fit(hue, train_set, epochs=1, batch_size=32, seed=0, progress=False, recipe="transform:hue")
    assert any(not torch.equal(p, q) for p, q in zip(plain.model.parameters(), hue.model.parameters()))
    with pytest.raises(InputError, match="augment"):
        fit(small(), train_set, augment=lambda x, y, g: x, recipe="transform:hue", progress=False)


def test_a_config_object_gives_the_run_of_its_keywords_and_keywords_override_it(train_set):
    cfg = TrainConfig(epochs=2, batch_size=32, optimizer="sgd", lr=0.05, ema_decay=0.5, seed=3)
    a = harden(small(), train_set, "erm", config=cfg, progress=False, device="cpu")
    b = harden(small(), train_set, "erm", epochs=2, batch_size=32, optimizer="sgd", lr=0.05, ema_decay=0.5, seed=3, progress=False,
               device="cpu")
    wa, wb = a.classifier.model.state_dict(), b.classifier.model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history] and a.config == b.config
    shorter = harden(small(), train_set, "erm", config=cfg, epochs=1, progress=False, device="cpu")
    assert shorter.steps == 3 and shorter.config["optimizer"] == "sgd" and shorter.config["lr"] == 0.05


def test_a_plain_nn_module_trains_and_its_checkpoint_holds_its_weights(tmp_path, train_set):
    from safetensors.torch import load_file
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    result = harden(net, train_set, "erm", epochs=1, batch_size=48, out=tmp_path, progress=False, device="cpu")
    assert result.classifier.model is net and result.classifier.arch is None
    saved = load_file(str(tmp_path / "last.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    assert json.loads((tmp_path / "last.json").read_text())["extra"]["epoch"] == 1



# -- per-epoch evaluation: the audit's suites on every rank's shard ------------------------------------------

def test_evaluation_defines_no_suites_and_runs_the_audits(trained, shift_set):
    import robust.train.evaluation as evaluation
    from robust.audit import SUITES, AuditConfig, run_audit
    from robust.registry import Registry

    assert all(v is SUITES for v in vars(evaluation).values() if isinstance(v, Registry))
    specs = ["corruptions@3,names=gaussian_noise+fog", "pgd:linf@8/255,steps=3"]
    m = evaluation.evaluate(trained, {"shift": shift_set}, ["clean", *specs], seed=5)
    corruption_keys = {"mean_acc", "clean_acc", "mean_error", "relative_acc", "worst_corruption_acc"}
    attack_keys = {"acc", "clean_acc", "drop", "success_rate", "queries_per_image"}
    assert set(m) == {"shift/acc", "shift/loss", *(f"shift/corruptions.{k}" for k in corruption_keys),
                      *(f"shift/pgd.{k}" for k in attack_keys)}
    # The clean metrics: correct predictions and summed cross-entropy over the set.
    logits = trained.logits(shift_set.images, 512)
    assert m["shift/acc"] == float((logits.argmax(1) == shift_set.labels).sum()) / len(shift_set)
    assert m["shift/loss"] == float(F.cross_entropy(logits, shift_set.labels, reduction="sum")) / len(shift_set)
    # The other suites give what the audit gives for the same spec and seed (it averages in float32).
    audit = {s.name: s.metrics for s in run_audit(trained, shift_set, AuditConfig(specs, seed=5, formats=(), progress=False)).suites}
    for key in corruption_keys:
        assert m[f"shift/corruptions.{key}"] == pytest.approx(audit["corruptions"][key], abs=1e-6), key
    for key in attack_keys:
        assert m[f"shift/pgd.{key}"] == pytest.approx(audit["pgd"][key], abs=1e-6), key
    assert m["shift/pgd.acc"] < m["shift/acc"]


def test_evaluation_suites_choose_their_sets_and_are_checked(trained, train_set, shift_set):
    from robust.train.evaluation import evaluate

    sets = {"shift": shift_set[:20], "train": train_set[:20]}
    m = evaluate(trained, sets, ["clean,on=train", "corruptions:fog@2", "fgsm:linf@2/255,on=train,name=fgsm_small"])
    assert set(m) == {"train/acc", "train/loss", *(f"shift/corruptions.{k}" for k in ("mean_acc", "clean_acc", "mean_error",
                      "relative_acc", "worst_corruption_acc")), *(f"train/fgsm_small.{k}" for k in ("acc", "clean_acc", "drop",
                      "success_rate", "queries_per_image"))}
    assert m["shift/corruptions.clean_acc"] == evaluate(trained, sets, ["clean"])["shift/acc"]
    with pytest.raises(InputError, match="evaluation suite pgd,on=test on: expected one of the evaluation sets shift, train"):
        evaluate(trained, sets, ["pgd,on=test"])
    with pytest.raises(InputError, match="distinct result names"):
        evaluate(trained, sets, ["pgd@1/255", "pgd@2/255"])
    with pytest.raises(InputError, match="evaluation suite: expected one of .*transforms"):
        evaluate(trained, sets, ["corrupt@3"])  # a recipe, not a suite
    with pytest.raises(InputError, match="corruptions suite: expected one of all, benchmark"):
        evaluate(trained, sets, ["corruptions@3,names=fog/snow"])

# -- bad configuration fails before training --------------------------------------------------------------

def test_unknown_recipe_lists_the_valid_ones(train_set):
    with pytest.raises(UnknownNameError, match="erm"):
        harden(small(), train_set, "ermm", epochs=1, progress=False)
    with pytest.raises(InputError, match="recipe pgd options"):
        get_recipe("pgd:linf@8/255,stepz=3")
    with pytest.raises(InputError, match="recipe"):
        parse_recipes("erm++oracle")


def test_mismatched_classes_fail_before_any_step(train_set):
    steps = []
    wrong = build_classifier("smallcnn", 5, (3, 16, 16), width=8)
    with pytest.raises(InputError, match="training data classes"):
        harden(wrong, train_set, "erm", epochs=1, on_step=lambda s, loss: steps.append(s), progress=False)
    assert steps == []


def test_oracle_needs_the_synthetic_benchmark_and_suites_and_options_are_checked(train_set, shift_set):
    from robust.data import ImageSet

    other = ImageSet(train_set.images, train_set.labels, [f"c{i}" for i in range(10)], name="other")
    with pytest.raises(InputError, match="oracle recipe data"):
        harden(build_classifier("smallcnn", 10, (3, 16, 16), width=8), other, "oracle", epochs=1, progress=False)
    with pytest.raises(InputError, match="evaluation suite"):
        harden(small(), train_set, "erm", eval_sets={"shift": shift_set}, eval_suites=["nope"], epochs=1, progress=False)
    with pytest.raises(InputError, match="harden options"):
        harden(small(), train_set, "erm", epoch=1)
    with pytest.raises(InputError, match="optimizer"):
        harden(small(), train_set, "erm", optimizer="lbfgs")
    with pytest.raises(InputError, match="select"):
        harden(small(), train_set, "erm", eval_sets={"shift": shift_set}, select="val/acc", epochs=1, progress=False)
    with pytest.raises(InputError, match="recipe corrupt option set"):
        get_recipe("corrupt,set=some")
    with pytest.raises(InputError, match="pgd"):
        get_recipe("pgd:l3@0.5")


# -- command line ------------------------------------------------------------------------------------------

def test_cli_train_then_export_onnx_with_parity(tmp_path):
    from robust.cli import cli
    from robust.models import OnnxClassifier

    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train", "--data", "synthetic:train,size=16", "-n", "64", "--eval", "shift=synthetic:test_shift,size=16", "--eval-n", "20",
            "--epochs", "1", "--batch-size", "32", "--recipe", "erm+oracle", "--out", str(run), "--device", "cpu"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "shift/acc" in result.output and (run / "best.safetensors").is_file()
    onnx_path = tmp_path / "model.onnx"
    result = runner.invoke(cli, ["export", str(run / "best"), "--onnx", str(onnx_path), "--data", "synthetic:test_shift,size=16", "-n", "8"])
    assert result.exit_code == 0, result.output
    assert "max abs diff" in result.output
    torch_clf = load_classifier(run / "best")
    probe = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    diff = (OnnxClassifier(onnx_path).logits(probe) - torch_clf.logits(probe)).abs().max()
    assert float(diff) <= 1e-4
    bad = runner.invoke(cli, ["train", "--data", "synthetic:train,size=16", "--recipe", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "recipe" in bad.output and "erm" in bad.output


def test_every_registered_recipe_is_documented():
    for name in RECIPES.names():
        assert (RECIPES.get(name).__doc__ or "").strip(), name


# -- NaTra (tiny generator, SeFa directions, codes inverted once into a cache) -------------------------------

def tiny_generator(seed: int):
    """The ``tiny`` preset (16x16, 16 channels), class-conditioned on the benchmark's classes, untrained."""
    from robust.gan import Conditioning, Generator, preset

    torch.manual_seed(seed)
    cond = Conditioning.classes(SyntheticBenchmark.class_names)
    return Generator(**preset("tiny").generator_kwargs(cond.c_dim), conditioning=cond).eval()


@pytest.fixture(scope="module")
def natra_parts(train_set, tmp_path_factory):
    from robust.gan.codes_cache import load_or_invert
    from robust.gan.directions import find_directions

    G = tiny_generator(0)
    directions = find_directions(G, "sefa", k=4, seed=0, calibrate=False)
    cache = tmp_path_factory.mktemp("codes")
    codes = load_or_invert(G, train_set, cache_dir=cache, steps=2, encoder="none")
    return G, directions, codes, cache


def natra(spec, natra_parts):
    from robust.train.recipes import NaTraTraining

    G, directions, codes, _ = natra_parts
    return NaTraTraining(spec, directions=directions, codes=codes)


@pytest.mark.parametrize("mode", ["random", "worst_of_k", "gradient", "random+classic"])
def test_natra_modes_train_and_lower_the_training_loss(mode, natra_parts, train_set):
    natra_mode, _, other = mode.partition("+")
    recipe = [natra(f"natra:{natra_mode},k=2,steps=2", natra_parts), *([other] if other else [])]
    result = harden(small(), train_set, recipe, generator=natra_parts[0], epochs=4, batch_size=32, lr=1e-2, progress=False,
                    device="cpu", seed=1)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0], losses


def test_natra_gradient_and_worst_of_k_raise_the_loss_over_the_random_draw(natra_parts, trained, train_set):
    batch = batch_of(train_set, 32)
    losses = {}
    for mode in ("random", "worst_of_k", "gradient"):
        recipe = natra(f"natra:{mode},k=4,steps=4,step_size=0.5", natra_parts)
        recipe.bind(RecipeContext(trained, train_set, torch.device("cpu"), generator=natra_parts[0]))
        (moved,) = recipe.views(batch, trained)
        assert moved.shape == batch.images.shape and not torch.allclose(moved, batch.images)
        with torch.no_grad():
            losses[mode] = F.cross_entropy(trained(moved), batch.labels, reduction="none")
    # Both searches start from (or include) the random draw and keep the worst: never below it, above on average.
    assert bool((losses["gradient"] >= losses["random"] - 1e-5).all())
    assert bool((losses["worst_of_k"] >= losses["random"] - 1e-5).all())
    assert losses["gradient"].mean() > losses["random"].mean() + 1e-3
    assert losses["worst_of_k"].mean() > losses["random"].mean()


def test_generated_recipe_draws_each_label_from_the_generator_deterministically(natra_parts, train_set):
    from robust.gan import Conditioning, Generator, preset

    G = natra_parts[0]
    recipe = get_recipe("generated@0.7,center=condition")
    recipe.bind(RecipeContext(small(), train_set, torch.device("cpu"), generator=G))
    batch = batch_of(train_set, 12)
    (views,) = recipe.views(batch, None)
    assert views.shape == batch.images.shape and 0 <= float(views.min()) and float(views.max()) <= 1
    # The sample of an image is the generator's, conditioned on the image's label, with z from the image's seed.
    z = noise.normal(batch.seeds, (G.z_dim,), stream=0x6E5)
    with torch.no_grad():
        expected = G.to_unit(G(z, {"class": batch.labels}, truncation_psi=0.7, truncation_center="condition", noise_mode="const"))
    assert torch.allclose(views, expected, atol=1e-6)
    # Independent of the batch an image lands in; a new seed gives a new sample.
    (alone,) = recipe.views(Batch(batch.images[3:5], batch.labels[3:5], batch.indices[3:5], batch.seeds[3:5],
                                  torch.Generator(), 0, 0), None)
    assert torch.allclose(alone, views[3:5], atol=1e-6)
    (other,) = recipe.views(batch_of(train_set, 12, seed=1), None)
    assert not torch.allclose(other, views)
    result = harden(small(), train_set, "0.5*generated+0.5*erm", generator=G, epochs=4, batch_size=32, lr=1e-2, progress=False,
                    device="cpu", seed=1)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    # Attribute tokens besides the class are drawn per image.
    cond = Conditioning([("class", list(train_set.class_names)), ("texture", ["plain", "stripes", "dots"])])
    torch.manual_seed(0)
    G2 = Generator(**preset("tiny").generator_kwargs(cond.c_dim), conditioning=cond).eval()
    recipe.bind(RecipeContext(small(), train_set, torch.device("cpu"), generator=G2))
    assert recipe.views(batch, None)[0].shape == batch.images.shape
    # Clear errors: no generator, no class tokens, unknown class names, bad psi or centre.
    with pytest.raises(InputError, match="generated recipe generator"):
        harden(small(), train_set, "generated", epochs=1, progress=False)
    with pytest.raises(InputError, match="class"):
        get_recipe("generated").bind(RecipeContext(small(), train_set, torch.device("cpu"), generator=Generator(
            **preset("tiny").generator_kwargs(0))))
    renamed = Conditioning.classes([f"k{i}" for i in range(10)])
    torch.manual_seed(0)
    G3 = Generator(**preset("tiny").generator_kwargs(renamed.c_dim), conditioning=renamed).eval()
    with pytest.raises(InputError, match="cannot draw"):
        get_recipe("generated").bind(RecipeContext(small(), train_set, torch.device("cpu"), generator=G3))
    with pytest.raises(InputError, match="psi"):
        get_recipe("generated@1.5")
    with pytest.raises(InputError, match="center"):
        get_recipe("generated,center=middle")


def test_natra_fails_early_without_generator_or_with_a_missing_codes_cache(natra_parts, train_set, tmp_path):
    steps = []
    with pytest.raises(InputError, match="natra recipe generator"):
        harden(small(), train_set, "natra", epochs=1, on_step=lambda s, loss: steps.append(s), progress=False)
    with pytest.raises(InputError, match="natra codes cache"):
        harden(small(), train_set, f"natra,codes={tmp_path / 'none'}", generator=natra_parts[0], epochs=1,
               on_step=lambda s, loss: steps.append(s), progress=False)
    big = SyntheticBenchmark(size=24, seed=0).split("train", 20)
    with pytest.raises(InputError, match="natra recipe data"):
        harden(build_classifier("smallcnn", 10, (3, 24, 24), width=8), big, "natra", generator=natra_parts[0], epochs=1, progress=False)
    with pytest.raises(InputError, match="natra mode"):
        get_recipe("natra:sideways")
    assert steps == []


def test_natra_codes_of_another_generator_or_other_data_fail_before_training(natra_parts, train_set, tmp_path):
    from robust.train.recipes import NaTraTraining

    G, directions, codes, _ = natra_parts
    codes.save(tmp_path / "codes")
    steps = []
    run = dict(epochs=1, batch_size=32, on_step=lambda s, loss: steps.append(s), progress=False, device="cpu")
    spec = f"natra,codes={tmp_path / 'codes'}"
    with pytest.raises(InputError, match="codes made with this generator"):
        harden(small(), train_set, NaTraTraining(spec, directions=directions), generator=tiny_generator(1), **run)
    with pytest.raises(InputError, match="codes of this training set"):
        harden(small(), train_set[:48], NaTraTraining(spec, directions=directions), generator=G, **run)
    with pytest.raises(InputError, match="codes of the 48 training images"):
        harden(small(), train_set[:48], NaTraTraining("natra", directions=directions, codes=codes), generator=G, **run)
    assert steps == []
    # The same file with its own generator and data trains.
    result = harden(small(), train_set, NaTraTraining(spec, directions=directions), generator=G, **{**run, "on_step": None})
    assert result.steps == 3


def test_natra_cache_is_reused_by_spec_and_the_natra_suite_evaluates_every_epoch(natra_parts, train_set, shift_set):
    G, directions, _, cache = natra_parts
    directions.save(cache.parent / "directions")
    # Same generator, data and inversion settings as the fixture: its cache entry is found by its key
    # and the training set is not inverted again; only the evaluation set gets a new entry.
    opts = f"directions={cache.parent / 'directions'},invert_steps=2,cache_dir={cache}"
    before = {p.name for p in cache.iterdir()}
    result = harden(small(), train_set, f"natra:random,{opts}", generator=G, eval_sets={"shift": shift_set[:16]}, epochs=2,
                    batch_size=48, eval_suites=["clean", f"natra:random@0.5,{opts}"], progress=False, device="cpu")
    new = {p.name for p in cache.iterdir()} - before
    assert new and all(name.startswith("synthetic_test_shift-") for name in new), new
    for record in result.history:
        assert 0 <= record["shift/natra.acc"] <= 1
    # Another run seed trains differently but reuses the training set's codes (they follow
    # invert_seed, default 0); another invert_seed inverts again.
    before = {p.name for p in cache.iterdir() if p.name.startswith("synthetic_train-")}
    harden(small(), train_set, f"natra:random,{opts}", generator=G, epochs=1, batch_size=48, progress=False, device="cpu", seed=5)
    assert {p.name for p in cache.iterdir() if p.name.startswith("synthetic_train-")} == before
    harden(small(), train_set, f"natra:random,{opts},invert_seed=1", generator=G, epochs=1, batch_size=48, progress=False,
           device="cpu", seed=5)
    assert len({p.name for p in cache.iterdir() if p.name.startswith("synthetic_train-")} - before) == 2  # weights + JSON
    with pytest.raises(InputError, match="invert_seed"):
        harden(small(), train_set, f"natra:random,{opts},invert_seed=-1", generator=G, epochs=1, progress=False, device="cpu")



def as_ranks(monkeypatch, run, size=2):
    """``run(world)`` as each of ``size`` ranks would run it, in this process: a first pass records what
    every rank hands to ``AuditContext.total``, a second pass gets the sums the all-reduce would give."""
    from robust.audit import AuditContext
    from robust.train.distributed import World

    handed: dict[int, list] = {}

    def record(ctx, *values):
        handed.setdefault(ctx.world.rank, []).append(values)
        return [float(v) for v in values]

    monkeypatch.setattr(AuditContext, "total", record)
    for rank in range(size):
        run(World(rank, size))
    sums = [[sum(column) for column in zip(*calls)] for calls in zip(*(handed[rank] for rank in range(size)))]
    replay = {rank: iter(sums) for rank in range(size)}
    monkeypatch.setattr(AuditContext, "total", lambda ctx, *values: list(next(replay[ctx.world.rank])))
    return [run(World(rank, size)) for rank in range(size)]


def test_natra_suite_scores_the_recipes_moves_in_training_on_shards_and_in_the_audit(natra_parts, trained, train_set, monkeypatch):
    from robust.audit import SUITES, AuditContext, SuiteSkipped
    from robust.registry import parse_spec
    from robust.seeding import derive_seed
    from robust.train.evaluation import evaluate
    from robust.train.recipes import NaTraTraining

    G, directions, _, cache = natra_parts
    directions.save(cache.parent / "directions")
    spec = f"natra:worst_of_k@2,k=3,directions={cache.parent / 'directions'},invert_steps=2,cache_dir={cache}"
    data = train_set[:12]
    m = evaluate(trained, {"shift": data}, [spec], seed=7, generator=G)
    # By hand: the recipe bound to the set with the suite's seed moves image i as the i-th image of the set.
    recipe = NaTraTraining(spec)
    recipe.bind(RecipeContext(trained, data, torch.device("cpu"), derive_seed(7, "audit", spec, "natra"), G))
    idx = torch.arange(len(data))
    (moved,) = recipe.views(Batch(data.images, data.labels, idx, idx, torch.Generator(), 0, 0), trained)
    correct = float((trained.predict(moved) == data.labels).sum())
    clean = float((trained.predict(data.images) == data.labels).sum())
    assert m == {"shift/natra.acc": correct / 12, "shift/natra.clean_acc": clean / 12, "shift/natra.drop": (clean - correct) / 12}
    assert correct < clean  # the worst of 3 draws against the classifier
    # Two ranks, each moving its shard (every second image, keyed by its index in the set), sum to the same counts.
    for ranked in as_ranks(monkeypatch, lambda world: evaluate(trained, {"shift": data}, [spec], world=world, seed=7, generator=G)):
        assert ranked == pytest.approx(m, abs=1e-12)
    monkeypatch.undo()
    # In the audit: the same accuracy, and a gallery of moved images beside their originals.
    ctx = AuditContext(trained, data, generator=G, seed=7, suite_key=spec, failures_per_case=3)
    result = SUITES.get("natra")(ctx, parse_spec(spec))
    assert result.metrics["acc"] == pytest.approx(correct / 12) and result.metrics["clean_acc"] == pytest.approx(clean / 12)
    (case,) = result.cases
    assert 0 < len(case.failures) <= 3
    assert all(not torch.equal(f.image, f.original) and f.description.startswith("natra:worst_of_k@2") for f in case.failures)
    with pytest.raises(SuiteSkipped, match="natra needs a generator"):
        SUITES.get("natra")(AuditContext(trained, data), parse_spec("natra"))

def test_cli_natra_training_inverts_the_training_set_once_into_the_cache(tmp_path, monkeypatch):
    from robust.cli import cli
    from robust.gan import save_generator

    monkeypatch.setenv("ROBUST_CACHE_DIR", str(tmp_path / "cache"))
    save_generator(tiny_generator(0), tmp_path / "G")
    args = ["train", "--data", "synthetic:train,size=16", "-n", "40", "--epochs", "1", "--batch-size", "20", "--device", "cpu",
            "--recipe", "natra:gradient,steps=1,invert_steps=2,directions=sefa,n_directions=4",
            "--generator", str(tmp_path / "G.json"), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "trained natra:gradient" in result.output
    cached = list((tmp_path / "cache" / "codes").glob("synthetic_train-*.safetensors"))
    assert len(cached) == 1
    again = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "run2")])
    assert again.exit_code == 0, again.output
    assert list((tmp_path / "cache" / "codes").glob("*.safetensors")) == cached
    missing = [a.replace("invert_steps=2", f"codes={tmp_path / 'nowhere'}") for a in args[:-1]] + [str(tmp_path / "run3")]
    failed = CliRunner().invoke(cli, missing)
    assert failed.exit_code == 2 and "natra codes cache" in failed.output, failed.output
    assert not (tmp_path / "run3" / "log.jsonl").exists()
