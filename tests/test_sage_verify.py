"""SAGE's verification (attacks.sage_verify): each check rejects a planted generator artefact and keeps a planted real failure.

The world is the coded generator of ``sage_helpers`` (images encode their w). A planted *artefact*
is a failure no real image shows: in a region the real images never reach (realism), so thin that
any nearby latent leaves it (twins), made of a feature the encoder cannot represent
(re-inversion), or accepted only by an oracle biased toward the generator (oracle agreement). A
planted *real failure* is a wide region of ordinary images where the model is wrong.
"""
from __future__ import annotations

import math
import sys
import types

import pytest
import torch

from attacks.sage import Judge, SageConfig, SearchContext, random_search
from attacks.sage_verify import RealBank, Verifier, VerifyConfig, estimate_false_failures, rate_ratio_interval
from robust.errors import InputError
from robust.gan.latent import prompt_prior
from sage_helpers import CLASSES, Decoder, Rule, classifier, coded_generator

GROUPS = ["class", "texture"]
ARTEFACT, REAL = 0, 1  # candidate rows


@pytest.fixture(scope="module")
def world(one_thread):
    G = coded_generator()
    decoder = Decoder(G)
    return types.SimpleNamespace(G=G, decoder=decoder, oracle=classifier(Rule(decoder), "oracle"),
                                 root=prompt_prior(G, 0.01, seed=0).root)


def candidates(G, coords: list[dict[int, float]], seed: int = 0):
    """Images of class c0 / texture t0 whose w has the given coordinates (others from random z), via a W offset."""
    n = len(coords)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen)
    tokens = torch.zeros(n, 2, dtype=torch.long)
    mapped = G.mapping(z, G.conditioning.encode(tokens))
    delta = torch.zeros_like(mapped[:, :1])
    for i, wanted in enumerate(coords):
        for k, value in wanted.items():
            delta[i, 0, k] = value - mapped[i, 0, k]
    images = G.to_unit(G.synthesis(mapped + delta))
    return images, tokens, z, delta


def bound(world, model, checks: Verifier, oracles=None) -> Verifier:
    judge = Judge(model, oracles or [world.oracle], CLASSES, None, GROUPS, 0.8)
    checks.bind(SearchContext(world.G, judge, world.root, SageConfig(), 0))
    return checks


def test_oracle_agreement_rejects_what_only_a_generator_biased_oracle_accepts(world):
    # The model fails where w[1] > 1 (an artefact: a real-trained oracle sees the next class there) and where w[2] > 1.
    model = classifier(Rule(world.decoder, fail=lambda w: ((w[:, 1] > 1) | (w[:, 2] > 1)).float()), "model")
    independent = classifier(Rule(world.decoder, fail=lambda w: (w[:, 1] > 1).float()), "independent")
    images, tokens, _, _ = candidates(world.G, [{1: 2.0, 2: 0.0}, {1: 0.0, 2: 2.0}])
    biased = [world.oracle, classifier(Rule(world.decoder), "biased-2")]
    strict = Judge(model, [*biased, independent], CLASSES, None, GROUPS, 0.6, agreement="all").check(images, tokens)
    lenient = Judge(model, [*biased, independent], CLASSES, None, GROUPS, 0.6, agreement="mean").check(images, tokens)
    assert strict["fooled"].all()
    assert strict["oracle_ok"].tolist() == [False, True]  # every oracle must agree: the artefact goes, the real failure stays
    assert lenient["oracle_ok"].tolist() == [True, True]  # the mean of two biased oracles and one independent one lets it through
    assert float(strict["oracle_prob"][REAL]) >= 0.6 > float(strict["oracle_prob"][ARTEFACT])  # the record: the lowest oracle


def test_realism_rejects_images_far_from_every_real_image_and_keeps_real_failures(world):
    G = world.G
    # Real images never have w[3] beyond 1; the artefact sits at w[3] = 4, the real failure inside the real range.
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(400, G.z_dim, generator=gen)
    tokens = torch.randint(0, 4, (400, 2), generator=gen)
    ws = G.mapping(z, G.conditioning.encode(tokens))
    ws[:, :, 3] = ws[:, :, 3].clamp(-1.5, 1.0)
    reals = G.to_unit(G.synthesis(ws))
    def embed(images01: torch.Tensor) -> torch.Tensor:  # a feature space: two coordinates of w and the class
        return world.decoder(images01)[:, [2, 3, 8, 9, 10, 11]]

    bank = RealBank.build(embed, reals, tokens[:, 0], VerifyConfig(neighbours=5), seed=0)
    assert 0.9 <= bank.real_pass_rate <= 1.0  # calibrated: held-out real images pass
    images, tokens, _, _ = candidates(G, [{3: 4.0}, {3: 0.2, 2: 1.5}])
    ok, value = bank.check(images, tokens[:, 0])
    assert ok.tolist() == [False, True] and float(value[ARTEFACT]) < 0 <= float(value[REAL])
    # The same real-looking image under another class's prompt: its neighbours vote against it.
    wrong, _ = bank.check(images[REAL:], torch.tensor([2]))
    assert not bool(wrong[0])
    model = classifier(Rule(world.decoder, fail=lambda w: ((w[:, 3] > 3) | (w[:, 2] > 1)).float()), "model")
    checks = bound(world, model, Verifier(VerifyConfig(checks=("realism",)), bank=bank))
    ok, values, spent = checks(images, tokens, *candidates(G, [{3: 4.0}, {3: 0.2, 2: 1.5}])[2:], torch.arange(2))
    assert ok[:, 0].tolist() == [False, True] and spent == 0 and not torch.isnan(values).any()


def test_twins_reject_a_point_failure_and_keep_a_wide_one(world):
    # The artefact: a thin slab |w[4] - 1| < 0.03 (a glitch no nearby latent repeats); the real failure: the half-space w[5] > 1.
    model = classifier(Rule(world.decoder, fail=lambda w: (((w[:, 4] - 1).abs() < 0.03) | (w[:, 5] > 1)).float()), "model")
    images, tokens, z, delta = candidates(world.G, [{4: 1.0, 5: 0.0}, {4: 0.0, 5: 2.5}])
    checks = bound(world, model, Verifier(VerifyConfig(checks=("twins",), twins=8, twin_radius=0.1)))
    ok, values, spent = checks(images, tokens, z, delta, torch.arange(2))
    assert spent == 16 and checks.cost == 8
    assert ok[:, 0].tolist() == [False, True]
    assert float(values[ARTEFACT, 0]) < 0.5 <= float(values[REAL, 0])
    again = bound(world, model, Verifier(VerifyConfig(checks=("twins",), twins=8, twin_radius=0.1)))
    assert torch.equal(again(images, tokens, z, delta, torch.arange(2))[1], values)  # seeded by the candidates' keys


def test_reinversion_rejects_what_the_encoder_cannot_render_again_and_keeps_real_failures(world):
    # The encoder was fitted to real images: it cannot represent w[6] above 0 (the artefact's feature) but keeps w[7].
    G = world.G

    def encoder(images01: torch.Tensor) -> torch.Tensor:
        w = world.decoder(images01)
        w[:, 6] = w[:, 6].clamp(max=0.0)
        return w[:, None].expand(-1, G.num_ws, -1)

    model = classifier(Rule(world.decoder, fail=lambda w: ((w[:, 6] > 1) | (w[:, 7] > 1)).float()), "model")
    images, tokens, z, delta = candidates(G, [{6: 2.0, 7: 0.0}, {6: 0.0, 7: 2.0}])
    checks = bound(world, model, Verifier(VerifyConfig(checks=("reinversion",)), encoder=encoder))
    ok, values, spent = checks(images, tokens, z, delta, torch.arange(2))
    assert ok[:, 0].tolist() == [False, True] and values[:, 0].tolist() == [0.0, 1.0] and spent == 2


class Brightness(torch.nn.Module):
    """Class from the mean brightness (four bins), moved one class on where ``fail(images)``: it reads no exact pixel."""

    def __init__(self, fail=None):
        super().__init__()
        self.fail = fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = (x.mean((1, 2, 3)) * 4).clamp(0, 3.999).long()
        if self.fail is not None:
            cls = torch.where(self.fail(x), (cls + 1) % 4, cls)
        return 8.0 * torch.nn.functional.one_hot(cls, 4).float()


def test_stability_rejects_a_failure_that_hangs_on_exact_pixels_and_keeps_a_colour_failure(world):
    # The artefact: a one-pixel checker at one phase fools the model (a shift inverts the phase, a blur flattens it);
    # the real failure: a red cast, which no shift or slight blur removes. Both images are class c0 (dark) to the oracle.
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2 - 1).float()
    artefact = 0.12 + 0.1 * checker.expand(3, 16, 16)
    real = torch.tensor([0.45, 0.05, 0.05])[:, None, None].expand(3, 16, 16)
    images = torch.stack([artefact, real])

    def fail(x: torch.Tensor) -> torch.Tensor:
        phase = (x * checker).mean((1, 2, 3)) > 0.05
        red_cast = x[:, 0].mean((1, 2)) - x[:, 1].mean((1, 2)) > 0.3
        return phase | red_cast

    model, oracle = classifier(Brightness(fail), "model"), classifier(Brightness(), "oracle")
    assert model.predict(images).tolist() == [1, 1] and oracle.predict(images).tolist() == [0, 0]
    checks = bound(world, model, Verifier(VerifyConfig(checks=("stability",))), oracles=[oracle])
    tokens = torch.zeros(2, 2, dtype=torch.long)
    ok, values, spent = checks(images, tokens, torch.zeros(2, world.G.z_dim), None, torch.arange(2))
    assert ok[:, 0].tolist() == [False, True] and values[:, 0].tolist() == [0.0, 1.0]
    assert spent == 10 and checks.cost == 5 and "stability" in checks.describe()["checks"]


def test_checks_run_in_order_and_need_their_inputs(world):
    model = classifier(Rule(world.decoder, fail=lambda w: (w[:, 5] > 1).float()), "model")
    images, tokens, z, delta = candidates(world.G, [{5: -1.0}, {5: 2.5}])
    embed = world.decoder
    bank = RealBank.build(embed, images.repeat(12, 1, 1, 1), tokens[:, 0].repeat(12), VerifyConfig(neighbours=3), seed=0)
    bank.radius = -1.0  # nothing is real enough: realism rejects both, so twins never run
    checks = bound(world, model, Verifier(VerifyConfig(checks=("realism", "twins")), bank=bank))
    ok, values, spent = checks(images, tokens, z, delta, torch.arange(2))
    assert not ok[:, 0].any() and ok[:, 1].all() and torch.isnan(values[:, 1]).all() and spent == 0
    with pytest.raises(InputError, match="realism"):
        Verifier(VerifyConfig(checks=("realism",)))
    with pytest.raises(InputError, match="reinversion"):
        Verifier(VerifyConfig(checks=("reinversion",)))
    with pytest.raises(InputError, match="checks"):
        VerifyConfig(checks=("vibes",))


def test_search_records_every_check_and_spends_check_queries_within_the_budget(world):
    model = classifier(Rule(world.decoder, fail=lambda w: (((w[:, 4] - 1).abs() < 0.15) | (w[:, 5] > 1.5)).float()), "model")
    checks = Verifier(VerifyConfig(checks=("twins",), twins=4, twin_radius=0.15))
    result = random_search(world.G, model, [world.oracle], SageConfig(budget_queries=160, batch_size=32), seed=0, checks=checks)
    assert result.queries <= 160 and result.counts["check_queries"] > 0
    assert result.counts["rejected_twins"] > 0 and result.failures
    for f in result.failures:
        assert set(f.checks) == {"oracles", "in_distribution", "twins"} and f.checks["twins"] >= 0.5
    w = torch.stack([f.w for f in result.failures])
    assert bool((w[:, 5] > 1.5).all())  # only the wide failure survives its twins


def test_false_failure_estimate_is_high_when_failures_are_the_generators_and_low_when_they_are_the_models(world):
    # Both models and the reference (right on real images) fail where w[1] > 1.2: an artefact the oracle accepts.
    artefact = lambda w: (w[:, 1] > 1.2).float()  # noqa: E731
    reference = classifier(Rule(world.decoder, fail=artefact), "reference")
    good = classifier(Rule(world.decoder, fail=artefact), "good")
    bad = classifier(Rule(world.decoder, fail=lambda w: ((w[:, 1] > 1.2) | (w[:, 2] > -0.5)).float()), "bad")
    config = SageConfig(budget_queries=192, batch_size=32)
    rates = {}
    for model in (good, bad):
        result = random_search(world.G, model, [world.oracle], config, seed=0)
        estimate = estimate_false_failures(world.G, reference, [world.oracle], result)
        assert estimate.method == "reference" and estimate.reference_queries == 192 and "reference" in estimate.text()
        rates[model.name] = estimate.rate
    assert rates["good"] >= 0.7  # a model that is right on real images: its "failures" are the generator's
    assert rates["bad"] <= 0.4  # a model with a wide real failure region: most of its failures are its own
    with pytest.raises(InputError, match="reference"):
        estimate_false_failures(world.G, world.oracle, [world.oracle], result)


def test_the_estimates_interval_covers_the_true_ratio_and_narrows_with_the_counts():
    # Poisson counts of false failures (reference) and reported failures (model) at a true ratio of 0.6.
    gen = torch.Generator().manual_seed(0)
    covered, trials = 0, 400
    for _ in range(trials):
        a, b = (int(v) for v in torch.poisson(torch.tensor([6.0, 10.0]), generator=gen))
        low, high = rate_ratio_interval(a, 10_000, b, 10_000)
        covered += b == 0 or low <= 0.6 <= high
    assert covered / trials >= 0.93
    few, many = rate_ratio_interval(5, 10_000, 8, 10_000), rate_ratio_interval(500, 10_000, 800, 10_000)
    assert few[0] < many[0] <= 0.625 <= many[1] < few[1] and many[1] - many[0] < 0.2
    assert rate_ratio_interval(0, 2000, 4, 2000)[0] == 0.0 and rate_ratio_interval(4, 2000, 2, 2000)[1] == 1.0
    assert all(math.isnan(v) for v in rate_ratio_interval(3, 2000, 0, 2000))  # nothing reported: no ratio
    with pytest.raises(InputError, match="qa"):
        rate_ratio_interval(1, -5, 2, 100)


@pytest.fixture
def importable(world, monkeypatch):
    module = types.ModuleType("sage_verify_test_models")
    module.oracle = world.oracle
    module.model = classifier(Rule(world.decoder, fail=lambda w: (w[:, 0] > 0.8).float()), "model")
    module.reference = classifier(Rule(world.decoder), "reference")
    monkeypatch.setitem(sys.modules, "sage_verify_test_models", module)
    return module


def test_suite_and_search_command_print_and_store_the_checks_and_the_estimate(world, importable, tmp_path):
    import json

    from click.testing import CliRunner

    from robust.audit import AuditContext, load_suites
    from robust.cli import cli
    from robust.data import ImageSet
    from robust.gan import save_generator
    from robust.io import load_checkpoint
    from robust.registry import parse_spec

    data = ImageSet(torch.rand(8, 3, 16, 16), torch.arange(8) % 4, CLASSES, name="toy")
    ctx = AuditContext(importable.model, data, generator=world.G, seed=0, progress=False)
    suite = load_suites().get("sage")(ctx, parse_spec(
        "sage:x,oracle=sage_verify_test_models:oracle,reference=sage_verify_test_models:reference,queries=64,batch=16,regions=0"))
    notes = " ".join(suite.details["notes"])
    assert "Checks: oracles, in_distribution, twins" in notes and "realism (" in notes  # 8 noise images: realism cannot run
    assert "Estimated false failures" in notes and 0 <= suite.metrics["false_failure_estimate"] <= 1
    assert suite.details["false_failure_estimate"]["reference"] == "reference"
    assert [row[0] for row in suite.details["tables"][-1]["rows"]] == ["oracles", "in_distribution", "twins", "realism"]
    assert "twins" in suite.cases[0].failures[0].params["checks"]
    save_generator(world.G, tmp_path / "gen")
    out = tmp_path / "out"
    run = CliRunner().invoke(cli, ["search", "-m", "sage_verify_test_models:model", "-g", str(tmp_path / "gen"), "--oracle",
                                   "sage_verify_test_models:oracle", "--reference", "sage_verify_test_models:reference",
                                   "--budget-queries", "64", "--batch-size", "16", "--regions", "0", "--export", "0", "--out", str(out),
                                   "--format", "json", "--quiet", "--device", "cpu"])
    assert run.exit_code == 0, run.output
    assert "Checks: oracles, in_distribution, twins" in run.output and "Estimated false failures" in run.output
    _, stored = load_checkpoint(out / "failures", "robust-sage-failures")
    assert 0 <= stored["false_failure_estimate"]["rate"] <= 1 and stored["verification"]["reference"] == "reference"
    assert all("twins" in f["checks"] for f in stored["failures_list"])
    report = json.loads((out / "report.json").read_text())
    assert "verification" in report["suites"][0]["details"]
