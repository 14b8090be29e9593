"""Worst-case magnitudes along latent directions (attacks.latent) on a tiny generator."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.latent import direction_attack
from robust.errors import GradientUnavailableError, InputError
from robust.gan.directions import find_directions, select_directions
from robust.gan.latent import latent_stats, sample_ws, synthesize
from robust.models import Classifier

from gan_helpers import tiny_generator


@pytest.fixture(scope="module")
def setup():
    G = tiny_generator()
    stats = latent_stats(G, n=512)
    directions = find_directions(G, "sefa", k=3, seed=0, calibrate=False, stats=stats)
    ws, _ = sample_ws(G, 10, seed=7)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
        net[1].weight.data.mul_(20.0)
    clf = Classifier(net, input_size=(3, 16, 16), num_classes=3)
    with torch.no_grad():
        labels = clf.predict(synthesize(G, ws))
    return G, directions, ws, labels, clf


def margin(clf: Classifier, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = clf.logits(images)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    return logits.scatter(1, labels[:, None], float("-inf")).amax(1) - true


@pytest.mark.parametrize("method", ["grid", "random", "gradient"])
def test_search_finds_magnitudes_at_least_as_bad_as_none(setup, method):
    G, directions, ws, labels, clf = setup
    found = direction_attack(clf, G, ws, labels, directions, method=method, steps=4 if method != "random" else None, k=3, seed=0)
    with torch.no_grad():
        clean = synthesize(G, ws)
        replay = synthesize(G, directions.apply(ws, found.magnitudes))
    assert bool((found.loss >= margin(clf, clean, labels) - 1e-4).all())
    assert torch.allclose(found.images, replay, atol=1e-5)
    assert torch.allclose(found.loss, margin(clf, replay, labels), atol=1e-4)
    assert torch.equal(found.success, found.predictions != labels)
    low, high = directions.ranges[:, 0], directions.ranges[:, 1]
    assert bool(((found.magnitudes >= low - 1e-6) & (found.magnitudes <= high + 1e-6)).all())
    # One direction at a time: each image keeps its worst single direction.
    assert bool(((found.magnitudes != 0).sum(1) <= 1).all())
    assert found.clean_accuracy == 1.0 and found.worst_case_accuracy < 1.0
    broken = found.failures()
    if broken.numel():
        assert "sefa_" in found.describe(int(broken[0]))


def test_random_search_is_deterministic_by_seed(setup):
    G, directions, ws, labels, clf = setup
    a = direction_attack(clf, G, ws, labels, directions, method="random", k=3, seed=3)
    b = direction_attack(clf, G, ws, labels, directions, method="random", k=3, seed=3)
    c = direction_attack(clf, G, ws, labels, directions, method="random", k=3, seed=4)
    assert torch.equal(a.magnitudes, b.magnitudes) and not torch.equal(a.magnitudes, c.magnitudes)


def test_joint_grid_covers_every_combination_of_the_chosen_directions(setup):
    G, directions, ws, labels, clf = setup
    joint = direction_attack(clf, G, ws, labels, directions, which=[0, 2], joint=True, method="grid", steps=3)
    assert joint.searched == [0, 2] and bool((joint.magnitudes[:, 1] == 0).all())
    # 3 values per direction, every pair, plus the unedited codes, plus the clean pass.
    assert joint.evaluations == ws.shape[0] * (3 * 3 + 1 + 1)
    single = direction_attack(clf, G, ws, labels, directions, which=[0], method="grid", steps=3)
    assert bool((joint.loss >= single.loss - 1e-4).all())


def test_kept_directions_are_the_default_and_bad_choices_are_refused(setup):
    G, directions, ws, labels, clf = setup
    chosen = select_directions(directions, include=[1], exclude=[0, 2])
    found = direction_attack(clf, G, ws, labels, chosen, method="grid", steps=2)
    assert found.searched == [1] and bool((found.magnitudes[:, [0, 2]] == 0).all())
    with pytest.raises(InputError, match="which"):
        direction_attack(clf, G, ws, labels, directions, which=[5])
    clf.has_gradients = False
    try:
        with pytest.raises(GradientUnavailableError):
            direction_attack(clf, G, ws, labels, directions, method="gradient")
    finally:
        del clf.has_gradients


def test_natural_audit_suite_sweeps_and_attacks_the_kept_directions(setup, tmp_path, monkeypatch):
    from robust.audit import SUITES, AuditContext, load_suites
    from robust.data import load_dataset
    from robust.registry import parse_spec

    G, directions, ws, labels, clf = setup
    monkeypatch.setenv("ROBUST_CACHE_DIR", str(tmp_path))
    load_suites()
    data = load_dataset("synthetic:test_shift,size=16", n=30)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
        net[1].weight.data.mul_(20.0)
    model = Classifier(net, input_size=(3, 16, 16), num_classes=10)
    ctx = AuditContext(model, data, data_source="synthetic:test_shift,size=16", generator=G, progress=False)
    suite = SUITES.get("natural")(ctx, parse_spec("natural,n=10,k=3,max_directions=2,judge=none,invert_steps=2,steps=3"))
    assert [c.name for c in suite.cases] == ["sefa_0", "sefa_1"] and len(suite.strips) == 2 and len(suite.curves) == 2
    assert suite.metrics["worst_acc"] <= suite.metrics["min_worst_acc"] <= suite.metrics["recon_acc"]
    assert all(c.metrics["acc"] <= suite.metrics["recon_acc"] for c in suite.cases)
    assert list(tmp_path.glob("codes/*.safetensors"))
