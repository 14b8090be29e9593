"""Pixel attacks, epsilon sweeps and worst-case transformation search, on tiny CPU models."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from attacks import (
    APGD,
    ATTACKS,
    PGD,
    AttackWarning,
    Square,
    apgd_checkpoints,
    epsilon_sweep,
    get_attack,
    square_fraction,
    transform_search,
)
from robust.errors import GradientUnavailableError, InputError, UnknownNameError
from robust.models import Classifier, export_onnx, load_classifier
from robust.transforms import get_transform
from robust.transforms.search import SearchConfig, search_parameters

from classifier_helpers import digits_logreg

ALL_SPECS = ("fgsm:linf@8/255", "fgsm:l2@0.5", "pgd:linf@8/255,steps=5", "pgd:l2@0.5,steps=5",
             "apgd:linf@8/255,steps=6", "apgd:l2@0.5,steps=6", "square:linf@8/255,queries=30", "square:l2@0.5,queries=30")


# -- tiny models ---------------------------------------------------------------------------------------

def tiny_cnn(seed: int = 0, channels: int = 3, classes: int = 4, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(dropout), nn.Linear(32, classes),
    )


def tiny_classifier(seed: int = 0, **kwargs) -> Classifier:
    return Classifier(tiny_cnn(seed, **kwargs), input_size=(3, 16, 16), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def images(n: int = 12, seed: int = 0, channels: int = 3, size: int = 16) -> torch.Tensor:
    x = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))
    x[0] = 0.0  # pixels on the box's faces: projections must keep them inside [0, 1]
    x[1] = 1.0
    return x


def linear_problem(n: int = 6, seed: int = 0) -> tuple[Classifier, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2-class linear model on 1x4x4 images with each image's exact minimal Linf and L2 perturbations.

    For logits ``W x + b`` the margin of class ``y`` over the other is ``m = d . x + (b_y - b_o)``
    with ``d = W_y - W_o``; the smallest perturbation that flips it has Linf norm ``m / |d|_1`` and L2
    norm ``m / |d|_2`` (the box [0, 1] never binds: images are kept away from it).
    """
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(2, 16, generator=gen)
    bias = torch.stack([-(weight[0] * 0.5).sum(), -(weight[1] * 0.5).sum()])
    linear = nn.Linear(16, 2)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    clf = Classifier(nn.Sequential(nn.Flatten(), linear), input_size=(1, 4, 4))
    candidates = 0.35 + 0.3 * torch.rand(400, 1, 4, 4, generator=gen)
    logits = candidates.flatten(1) @ weight.T + bias
    labels = logits.argmax(1)
    d = weight[labels] - weight[1 - labels]
    margin = logits.gather(1, labels[:, None]).squeeze(1) - logits.gather(1, (1 - labels)[:, None]).squeeze(1)
    linf, l2 = margin / d.abs().sum(1), margin / d.norm(dim=1)
    keep = ((linf > 0.01) & (l2 > 0.03) & (l2 < 0.2)).nonzero().squeeze(1)[:n]
    return clf, candidates[keep], labels[keep], linf[keep], l2[keep]


class TemplateModel(nn.Module):
    """Says class 1 only when the image looks like ``template`` (cosine similarity above 0.98), else class 0."""

    def __init__(self, template: torch.Tensor):
        super().__init__()
        self.register_buffer("template", template.flatten() / template.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        cos = flat @ self.template / flat.norm(dim=1).clamp_min(1e-6)
        return torch.stack([torch.zeros_like(cos), 50.0 * (cos - 0.98)], dim=1)


def rotation_trap() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """Blurred bars and a model that fails exactly when they are rotated by about 30 degrees."""
    bar = torch.zeros(1, 1, 16, 16)
    bar[..., 6:10, 2:14] = 1.0
    bar = get_transform("blur")(bar, {"sigma": torch.tensor([1.5])})
    template = get_transform("rotation")(bar, {"angle": torch.tensor([30.0])})
    x = torch.cat([bar * s for s in (1.0, 0.9, 0.8, 0.7)])
    return Classifier(TemplateModel(template), input_size=(1, 16, 16)), x, torch.zeros(4, dtype=torch.long)


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    """A logistic regression trained on scikit-learn's digits (16x16), in torch and exported to ONNX."""
    torch_clf, test = digits_logreg(steps=40)
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    export_onnx(torch_clf, path)
    return torch_clf, load_classifier(path), test.images, test.labels


# -- the linear model: known answers -------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_sweep_finds_the_exact_minimal_perturbation_of_a_linear_model(norm):
    clf, x, y, linf, l2 = linear_problem(n=4)
    exact = linf if norm == "linf" else l2
    # Budgets 3% either side of every image's exact minimum: each image must break at a budget in
    # [exact, 1.03 exact] (a neighbour's budget may fall in between), never below its exact minimum.
    grid = sorted(float(e) * f for e in exact for f in (0.97, 1.03))
    sweep = epsilon_sweep(clf, x, y, f"pgd:{norm}", grid, steps=30)
    assert torch.all(sweep.min_eps >= exact * (1 - 1e-4))  # nothing can beat the exact minimum
    assert torch.all(sweep.min_eps <= exact * 1.03 * (1 + 1e-6))  # and PGD gets within 3% of it
    assert sweep.robust_accuracy == sorted(sweep.robust_accuracy, reverse=True)
    broken = sweep.failures()
    delta = (sweep.adversarial[broken] - x[broken]).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert torch.all(size <= sweep.min_eps[broken] + 1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_breaks_just_above_the_exact_minimum_and_never_below(norm):
    clf, x, y, linf, l2 = linear_problem(n=4, seed=1)
    exact = linf if norm == "linf" else l2
    for i in range(x.shape[0]):
        above = APGD(norm=norm, eps=float(exact[i]) * 1.03, steps=20)(clf, x[i : i + 1], y[i : i + 1])
        below = APGD(norm=norm, eps=float(exact[i]) * 0.97, steps=20)(clf, x[i : i + 1], y[i : i + 1])
        assert bool(above.success[0]) and not bool(below.success[0])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_on_a_linear_model_equals_the_closed_form(norm):
    clf, x, y, _, _ = linear_problem(n=6, seed=2)
    weight = clf.model[1].weight.detach()
    ascent = (weight[1 - y] - weight[y]).view_as(x)  # the loss grows along W_other - W_true
    eps = 0.05 if norm == "linf" else 0.15
    result = get_attack(f"fgsm:{norm}@{eps}")(clf, x, y)
    if norm == "linf":
        expected = (x + eps * ascent.sign()).clamp(0, 1)
    else:
        expected = (x + eps * ascent / ascent.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    assert torch.allclose(result.adversarial, expected, atol=1e-6)


def test_targeted_pgd_reaches_the_target_class():
    torch.manual_seed(0)
    clf = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(48, 5)), input_size=(3, 4, 4))
    x = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    y = clf.predict(x)
    targets = (y + 1) % 5
    result = get_attack("pgd:linf@0.5,steps=20")(clf, x, y, targets=targets)
    assert torch.equal(result.predictions, targets) and bool(result.success.all())
    assert result.robust_accuracy == 0.0


# -- guarantees every attack keeps ---------------------------------------------------------------------

@pytest.mark.parametrize("spec", ALL_SPECS)
def test_attacks_stay_in_the_epsilon_ball_and_the_unit_box(spec):
    clf = tiny_classifier()
    x = images()
    y = torch.arange(12) % 4
    result = get_attack(spec)(clf, x, y, seed=1)
    assert result.adversarial.shape == x.shape
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0
    norms = result.perturbation_norms(x)
    assert float(norms.max()) <= result.eps + 1e-5
    assert torch.equal(result.predictions, clf.predict(result.adversarial))
    assert torch.equal(result.success, result.predictions != y)
    untouched = ~result.clean_correct
    assert torch.equal(result.adversarial[untouched], x[untouched])  # already wrong: nothing to attack
    assert result.queries > 0


def test_attack_restores_modes_and_never_touches_parameters():
    clf = tiny_classifier(dropout=0.5)
    net = clf.network
    net.train()
    net.model[1].eval()  # a mixed state must come back exactly
    frozen = net.model[0].bias
    frozen.requires_grad_(False)
    modes = [m.training for m in net.modules()]
    stats = net.model[1].running_mean.clone()
    for spec in ("pgd:linf@8/255,steps=3", "apgd:l2@0.5,steps=4", "square:linf@8/255,queries=5"):
        get_attack(spec)(clf, images(), torch.arange(12) % 4)
    transform_search(clf, images(), torch.arange(12) % 4, "rotation", method="gradient", steps=2, k=1)
    assert [m.training for m in net.modules()] == modes
    assert torch.equal(net.model[1].running_mean, stats)
    assert all(p.grad is None for p in net.parameters())
    assert not frozen.requires_grad and all(p.requires_grad for p in net.parameters() if p is not frozen)


def test_attacks_run_batched_and_return_tensors_where_the_images_were():
    clf = tiny_classifier()
    x = images(10)
    y = clf.predict(x)
    whole = get_attack("pgd:linf@8/255,steps=3")(clf, x, y, seed=4)
    chunked = get_attack("pgd:linf@8/255,steps=3,batch_size=3")(clf, x, y, seed=4)
    assert torch.allclose(whole.adversarial, chunked.adversarial, atol=1e-6)
    assert whole.adversarial.device == x.device and whole.success.dtype == torch.bool


def test_bf16_autocast_runs_and_keeps_the_guarantees():
    clf = tiny_classifier()
    x = images()
    result = get_attack("pgd:linf@8/255,steps=3,amp=bf16")(clf, x, clf.predict(x))
    assert float(result.perturbation_norms(x).max()) <= 8 / 255 + 1e-5
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1


# -- parity with torchattacks --------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_matches_torchattacks_step_for_step(norm):
    torchattacks = pytest.importorskip("torchattacks")
    clf = tiny_classifier(seed=3)
    x = images(16, seed=5)
    y = clf.predict(x)  # torchattacks attacks every image; ours only those the model gets right
    net = clf.network.eval()
    if norm == "linf":
        theirs = torchattacks.PGD(net, eps=8 / 255, alpha=2 / 255, steps=5, random_start=False)(x, y)
        ours = PGD(norm="linf", eps=8 / 255, step_size=2 / 255, steps=5, random_start=False, early_stop=False)(clf, x, y)
    else:
        theirs = torchattacks.PGDL2(net, eps=0.5, alpha=0.1, steps=5, random_start=False)(x, y)
        ours = PGD(norm="l2", eps=0.5, step_size=0.1, steps=5, random_start=False, early_stop=False)(clf, x, y)
    assert torch.allclose(ours.adversarial, theirs, atol=1e-5)
    with torch.no_grad():
        their_accuracy = float((net(theirs).argmax(1) == y).float().mean())
    assert ours.robust_accuracy == pytest.approx(their_accuracy)


# -- black box: Square and ONNX ------------------------------------------------------------------------

def test_square_lowers_the_accuracy_of_an_onnx_model_without_gradients(onnx_pair):
    torch_clf, onnx_clf, x, y = onnx_pair
    assert not onnx_clf.has_gradients
    clean = onnx_clf.accuracy(x, y)
    result = Square(norm="linf", eps=0.2, queries=60)(onnx_clf, x, y, seed=0)
    assert clean >= 0.8
    assert result.robust_accuracy <= clean - 0.2
    assert float(result.perturbation_norms(x).max()) <= 0.2 + 1e-6
    same = Square(norm="linf", eps=0.2, queries=60)(torch_clf, x, y, seed=0)
    assert abs(same.robust_accuracy - result.robust_accuracy) <= 0.05


def test_gradient_attacks_on_a_model_without_gradients_suggest_square(onnx_pair):
    _, onnx_clf, x, y = onnx_pair
    for spec in ("pgd:linf@8/255", "fgsm:l2@0.5", "apgd:linf@4/255"):
        with pytest.raises(GradientUnavailableError, match="square"):
            get_attack(spec)(onnx_clf, x, y)
    with pytest.raises(GradientUnavailableError, match="grid"):
        transform_search(onnx_clf, x, y, "rotation", method="gradient")
    found = transform_search(onnx_clf, x[:4], y[:4], "brightness", method="grid", steps=3)
    assert found.images.shape == x[:4].shape


def test_square_schedule_and_l2_square_attack():
    assert square_fraction(0.05, 10, 10_000) == 0.05
    assert square_fraction(0.05, 11, 10_000) == 0.025
    assert square_fraction(0.05, 9_000, 10_000) == pytest.approx(0.05 / 2**9)
    assert square_fraction(0.1, 1, 1000) == 0.1 and square_fraction(0.1, 2, 1000) == 0.05  # marks rescaled to the budget
    clf, x, y, _, l2 = linear_problem(n=6)
    result = Square(norm="l2", eps=0.2, queries=40)(clf, x, y, seed=0)
    assert float(l2.max()) < 0.2 and result.robust_accuracy <= 0.5
    assert float(result.perturbation_norms(x).max()) <= 0.2 + 1e-5


# -- determinism -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["pgd:linf@8/255,steps=3", "apgd:linf@8/255,steps=4", "square:linf@8/255,queries=15"])
def test_same_seed_same_result_other_seed_other_result(spec):
    clf = tiny_classifier()
    x = images()
    y = clf.predict(x)
    attack = get_attack(spec)
    a, b, c = attack(clf, x, y, seed=7), attack(clf, x, y, seed=7), attack(clf, x, y, seed=8)
    assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.success, b.success)
    assert not torch.equal(a.adversarial, c.adversarial)


def test_an_image_gets_the_same_attack_alone_as_in_its_batch():
    clf, x, y, _, _ = linear_problem(n=6, seed=3)
    attack = get_attack("square:linf@0.05,queries=20")
    whole = attack(clf, x, y, seed=2)
    ids = torch.tensor([4, 1])
    part = attack(clf, x[ids], y[ids], seed=2, sample_ids=ids)
    assert torch.equal(part.adversarial, whole.adversarial[ids])


# -- sweeps ----------------------------------------------------------------------------------------------

def test_sweep_reports_monotone_accuracy_and_minimal_budgets():
    clf = tiny_classifier(seed=2)
    x = images(12, seed=3)
    y = torch.arange(12) % 4
    sweep = epsilon_sweep(clf, x, y, "pgd:linf,steps=3", [8 / 255, 0, 2 / 255, 1 / 255], seed=1)
    assert sweep.eps == sorted(sweep.eps) and sweep.eps[0] == 0
    assert sweep.robust_accuracy[0] == pytest.approx(sweep.clean_accuracy)
    assert sweep.robust_accuracy == sorted(sweep.robust_accuracy, reverse=True)
    for eps, acc in zip(sweep.eps, sweep.robust_accuracy):
        assert acc == pytest.approx(float((sweep.min_eps > eps).float().mean()))
    wrong = clf.predict(x) != y
    assert torch.all(sweep.min_eps[wrong] == 0)
    curve = sweep.to_curve()
    assert curve.x == sweep.eps and curve.y == sweep.robust_accuracy


# -- worst-case transformation search ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["grid", "random", "gradient"])
def test_transform_search_finds_the_angle_a_model_was_built_to_fail_at(method):
    clf, x, y = rotation_trap()
    assert torch.equal(clf.predict(x), y)
    options = {"grid": {"steps": 61}, "random": {"k": 48}, "gradient": {"steps": 25, "k": 2}}[method]
    found = transform_search(clf, x, y, "rotation", method=method, seed=0, **options)
    assert bool(found.success.all()), method
    assert torch.all((found.params["angle"] - 30.0).abs() <= 3.0), found.params["angle"]
    rot = get_transform("rotation")
    assert torch.allclose(found.images, rot(x, found.params), atol=1e-6)
    assert found.worst_case_accuracy == 0.0 and found.failures().numel() == 4
    assert "rotation(angle=" in found.describe(0)


def test_transform_search_respects_bounds_and_chosen_parameters():
    clf, x, y = rotation_trap()
    narrow = transform_search(clf, x, y, "rotation", method="grid", steps=11, bounds={"angle": (-10.0, 10.0)})
    assert torch.all(narrow.params["angle"].abs() <= 10.0) and not bool(narrow.success.any())
    shift = transform_search(clf, x, y, "translation", method="random", k=4, params=["dx"], seed=3)
    assert torch.all(shift.params["dy"] == 0) and not torch.all(shift.params["dx"] == 0)
    again = transform_search(clf, x, y, "translation", method="random", k=4, params=["dx"], seed=3)
    assert torch.equal(shift.params["dx"], again.params["dx"])
    with pytest.raises(InputError, match="bounds"):
        transform_search(clf, x, y, "rotation", bounds={"angle": (-90.0, 0.0)})
    with pytest.raises(InputError, match="parameter"):
        transform_search(clf, x, y, "rotation", params=["zoom"])


def test_search_engine_works_on_any_differentiable_parametrised_function():
    """The engine latent-direction attacks reuse: a render function, bounds and an objective."""
    base = torch.full((3, 1, 4, 4), 0.25)
    targets = torch.tensor([0.5, 0.75, 0.3])

    def render(p):
        return base * p["gain"].view(-1, 1, 1, 1)

    def objective(img):
        loss = -(img.mean(dim=(1, 2, 3)) - targets) ** 2
        return loss, loss > -1e-4, torch.zeros(3, dtype=torch.long)

    for method, opts in (("grid", {"steps": 101}), ("gradient", {"steps": 60, "k": 2, "step_size": 0.2})):
        out = search_parameters(render, {"gain": (0.0, 4.0)}, objective, 3, SearchConfig(method=method, **opts), identity={"gain": 1.0})
        assert torch.allclose(out.params["gain"], targets / 0.25, atol=0.05), method
        assert bool(out.success.all())


# -- specs, registry, bad input ------------------------------------------------------------------------

def test_specs_build_registered_attacks_and_round_trip():
    assert set(ATTACKS.names()) >= {"fgsm", "pgd", "apgd", "square"}
    pgd = get_attack("pgd:l2@0.5,steps=20,loss=margin,schedule=cosine")
    assert isinstance(pgd, PGD) and pgd.norm == "l2" and pgd.eps == 0.5 and pgd.steps == 20 and pgd.loss == "margin"
    assert get_attack(pgd.spec) == pgd
    assert get_attack("pgd:linf@8/255").spec == "pgd:linf@8/255"
    assert get_attack("square:linf@8/255,queries=1000").queries == 1000
    assert get_attack(pgd, eps=0.25).eps == 0.25
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_bad_input_fails_with_clear_errors():
    clf = tiny_classifier()
    x = images(4)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(InputError, match="8/255"):
        get_attack("pgd:linf@8")
    for bad in ("-0.1", "0", "nan"):
        with pytest.raises(InputError, match="eps"):
            get_attack(f"pgd:linf@{bad}")
    with pytest.raises(InputError, match="L2 budget"):
        get_attack("pgd:l2@100")(clf, x, y)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        get_attack("pgd:linf@8/255")(clf, x * 255, y)
    with pytest.raises(InputError, match="4 labels"):
        get_attack("pgd:linf@8/255")(clf, x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="class indices"):
        get_attack("pgd:linf@8/255")(clf, x, torch.full((4,), 9))
    with pytest.raises(UnknownNameError, match="pgd"):
        get_attack("pgdd:linf@8/255")
    with pytest.raises(InputError, match="steps"):
        get_attack("pgd:linf@8/255,stepz=3")
    with pytest.raises(InputError, match="norm"):
        get_attack("pgd:l1@0.5")
    with pytest.raises(InputError, match="steps"):
        get_attack("pgd:linf@8/255,steps=0")
    with pytest.raises(InputError, match="classifier"):
        get_attack("pgd:linf@8/255")(clf.network, x, y)
    with pytest.raises(InputError, match="eps_grid"):
        epsilon_sweep(clf, x, y, "pgd:linf", [])
    with pytest.raises(InputError, match="method"):
        transform_search(clf, x, y, "rotation", method="anneal")


# -- the checks AutoAttack makes ----------------------------------------------------------------------------

class Noisy(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :4] + torch.randn(x.shape[0], 4)


class Quantised(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(48, 4)

    def forward(self, x):
        return self.linear(torch.round(x * 4).flatten(1))


class Softmaxed(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(48, 4)

    def forward(self, x):
        return self.linear(x.flatten(1)).softmax(1)


@pytest.mark.parametrize("model, message", [(Noisy(), "randomised"), (Quantised(), "exactly zero"), (Softmaxed(), "probabilities")])
def test_unreliable_models_raise_attack_warnings(model, message):
    torch.manual_seed(0)
    clf = Classifier(model, input_size=(3, 4, 4), num_classes=4)
    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.warns(AttackWarning, match=message):
        get_attack("pgd:linf@8/255,steps=2")(clf, x, clf.predict(x))


def test_a_sound_model_raises_no_warning():
    clf = tiny_classifier()
    x = images(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttackWarning)
        get_attack("pgd:linf@8/255,steps=2")(clf, x, clf.predict(x))


# -- the command line ----------------------------------------------------------------------------------

def test_cli_attack_writes_summary_failures_and_gallery(tmp_path):
    from click.testing import CliRunner

    from robust.cli import cli
    from robust.io import load_checkpoint, read_json
    from robust.models import build_classifier, save_classifier

    clf = build_classifier("smallcnn", 10, (1, 16, 16), width=4)
    save_classifier(clf, tmp_path / "clf")
    out = tmp_path / "out"
    args = ["attack", "--model", str(tmp_path / "clf"), "--data", "digits:test", "-n", "12", "--attack", "pgd:linf@8/255,steps=2",
            "--eps-grid", "0,2/255,8/255", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = read_json(out / "attack.json")
    assert report["sweep"]["eps_text"] == ["0", "2/255", "8/255"] and len(report["sweep"]["robust_accuracy"]) == 3
    tensors, config = load_checkpoint(out / "failures", "robust-attack-failures")
    assert tensors["adversarial"].shape[0] == report["data"]["n"] - round(report["sweep"]["robust_accuracy"][-1] * 12) - \
        (12 - round(report["sweep"]["clean_accuracy"] * 12))
    single = CliRunner().invoke(cli, args[:-4] + ["--out", str(tmp_path / "single")])
    assert single.exit_code == 0, single.output
    assert "robust_accuracy" in read_json(tmp_path / "single" / "attack.json")["result"]
    bad = CliRunner().invoke(cli, args[:7] + ["--attack", "pgd:linf@8", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "8/255" in bad.output
