"""SAGE search (attacks.sage): constructed failures are found, verified, grouped, measured and exported.

The world is the coded generator of ``sage_helpers``: images encode their code, so small
hand-built models fail exactly where a test wants them to.
"""
from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch
from sage_helpers import (
    CLASSES,
    HALF_SPACE,
    Decoder,
    HalfSpace,
    Rule,
    classifier,
    coded_generator,
)
from torch import nn

from attacks.sage import SageConfig, failure_regions, random_search, sage_search
from attacks.sage_modes import failure_modes
from attacks.sage_regression import RegressionCase, RegressionFailure, export_regression
from robust.errors import InputError
from robust.gan import Generator, preset, save_generator
from robust.gan.latent import ZPrior, prompt_prior
from robust.models import Classifier


@pytest.fixture(scope="module")
def world(one_thread):
    G = coded_generator()
    decoder = Decoder(G)
    oracle = classifier(Rule(decoder), "oracle")
    texture_model = classifier(Rule(decoder, fail=lambda w: (w[:, 14] / 2).clamp(0, 1)), "fails-on-t2")
    half_model = classifier(HalfSpace(decoder), "fails-on-half-space")
    return types.SimpleNamespace(G=G, decoder=decoder, oracle=oracle, texture_model=texture_model, half_model=half_model)


def test_decoder_reads_the_code_back_exactly(world):
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    c = world.G.conditioning.encode({"class": torch.arange(8) % 4, "texture": torch.arange(8) // 2})
    ws = world.G.mapping(z, c)
    assert torch.allclose(world.decoder(world.G.to_unit(world.G.synthesis(ws))), ws[:, -1], atol=1e-3)


def test_prompt_search_finds_the_one_failing_token(world):
    config = SageConfig(space="w", budget_queries=240, batch_size=16, prompt_every=2, prompts=({"texture": "t0"},))
    result = sage_search(world.G, world.texture_model, [world.oracle], config, seed=0, progress=False)
    # Every chain starts at texture t0, on which the model never fails: only prompt steps reach t2.
    assert len(result.failures) >= 10
    assert {f.tokens["texture"] for f in result.failures} == {"t2"}
    assert all(f.oracle_prob >= 0.8 and f.in_distribution <= 1 for f in result.failures)
    assert random_search(world.G, world.texture_model, [world.oracle], config, seed=0, progress=False).failures == []
    modes = failure_modes(result)
    assert sum(m.count for m in modes) == len(result.failures)
    assert all("texture t2" in m.description and m.tokens["texture"] == "t2" for m in modes[:2])
    assert modes[0].rank >= modes[-1].rank


@pytest.mark.parametrize("space", ["z", "w"])
def test_latent_search_finds_the_failing_half_space_in_distribution(world, space):
    config = SageConfig(space=space, budget_queries=240, batch_size=16, search_groups=())
    result = sage_search(world.G, world.half_model, [world.oracle], config, seed=0, progress=False)
    baseline = random_search(world.G, world.half_model, [world.oracle], config, seed=0, progress=False)
    assert len(result.failures) >= max(8, 3 * len(baseline.failures))
    decoded = world.decoder(torch.stack([f.image for f in result.failures]))
    assert bool((decoded[:, 0] > HALF_SPACE - 1e-3).all())  # every failure lies in the half-space
    assert all(f.in_distribution <= 1.0 for f in result.failures)
    assert result.counts["rejected_distribution"] <= result.counts["fooled_oracle_ok"]


def test_adaptive_restart_keeps_search_as_efficient_as_sampling_when_failures_are_common(world):
    # Half of all samples fail (textures t2 and t3): stepping a chain that did not fail is worse than a fresh sample.
    common = classifier(Rule(world.decoder, fail=lambda w: ((w[:, 14] + w[:, 15]) / 2).clamp(0, 1)), "fails-on-t2-t3")
    config = SageConfig(space="w", budget_queries=160, batch_size=16, search_groups=())
    baseline = random_search(world.G, common, [world.oracle], config, progress=False)
    adaptive = sage_search(world.G, common, [world.oracle], config, progress=False)
    stubborn = sage_search(world.G, common, [world.oracle], config, adaptive_restart=False, progress=False)
    assert len(adaptive.failures) >= 0.75 * len(baseline.failures) > len(stubborn.failures)


def test_oracle_check_rejects_failures_the_oracle_disagrees_with(world):
    # This oracle sees another class exactly where the model fails: nothing there is a real failure.
    dissenting = classifier(Rule(world.decoder, fail=lambda w: (w[:, 0] > HALF_SPACE).float(), shift=2), "dissenting")
    config = SageConfig(space="z", budget_queries=160, batch_size=16, search_groups=())
    result = sage_search(world.G, world.half_model, [dissenting], config, seed=0, progress=False)
    assert result.failures == []
    assert result.counts["fooled"] > 0 and result.counts["rejected_oracle"] == result.counts["fooled"]
    # In an ensemble the mean probability decides: one dissenting member of two is enough here.
    both = sage_search(world.G, world.half_model, [world.oracle, dissenting], config, seed=0, progress=False)
    assert both.failures == []


def test_token_verifier_rejects_failures_that_lost_their_attribute_tokens(world):
    def read_texture(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"texture": world.decoder(images)[:, 12:16].argmax(1)}

    def texture_log_probs(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"texture": (4.0 * world.decoder(images)[:, 12:16]).log_softmax(1)}

    config = SageConfig(space="z", budget_queries=96, batch_size=16, search_groups=())
    kept = sage_search(world.G, world.half_model, [world.oracle], config, token_verifier=read_texture, token_scorer=texture_log_probs,
                       progress=False)
    assert kept.failures and kept.counts["rejected_tokens"] == 0  # the generator renders every texture it is asked for

    def blind(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"texture": torch.full((images.shape[0],), 3)}  # sees t3 everywhere

    config = SageConfig(space="z", budget_queries=96, batch_size=16, search_groups=(), prompts=({"texture": "t1"},))
    rejected = sage_search(world.G, world.half_model, [world.oracle], config, token_verifier=blind, progress=False)
    assert rejected.failures == [] and rejected.counts["rejected_tokens"] > 0


def test_search_is_deterministic_by_seed(world):
    config = SageConfig(space="w", budget_queries=64, batch_size=8, prompt_every=2)
    a = sage_search(world.G, world.texture_model, [world.oracle], config, seed=3, progress=False)
    b = sage_search(world.G, world.texture_model, [world.oracle], config, seed=3, progress=False)
    c = sage_search(world.G, world.texture_model, [world.oracle], config, seed=4, progress=False)
    assert a.failures and [f.to_dict() | {"seconds": 0} for f in a.failures] == [f.to_dict() | {"seconds": 0} for f in b.failures]
    assert all(torch.equal(f.image, g.image) for f, g in zip(a.failures, b.failures))
    assert [f.z.tolist() for f in a.failures] != [f.z.tolist() for f in c.failures]


def test_budgets_are_respected(world):
    config = SageConfig(space="w", budget_queries=37, batch_size=16, prompt_every=1, prompt_candidates=3)
    result = sage_search(world.G, world.texture_model, [world.oracle], config, seed=0, progress=False)
    assert result.queries == 37 and result.stopped == "queries"
    assert all(f.query <= 37 for f in result.failures)
    timed = sage_search(world.G, world.texture_model, [world.oracle], config, budget_seconds=0.0, progress=False)
    assert timed.queries == 0 and timed.stopped == "time"
    capped = sage_search(world.G, world.texture_model, [world.oracle], config, budget_queries=400, max_failures=2, progress=False)
    assert len(capped.failures) == 2 and capped.stopped == "max_failures"


def test_prior_passes_fresh_samples_and_rejects_atypical_codes(world):
    G = world.G
    gen = torch.Generator().manual_seed(9)
    z = torch.randn(1000, G.z_dim, generator=gen)
    tokens = torch.stack([torch.randint(0, 4, (1000,), generator=gen), torch.randint(0, 4, (1000,), generator=gen)], 1)
    ws = G.mapping(z, G.conditioning.encode({"class": tokens[:, 0], "texture": tokens[:, 1]}))
    z_prior, w_prior = ZPrior(G.z_dim, alpha=0.01), prompt_prior(G, alpha=0.01, seed=0)
    for space, scores in (("z", z_prior.score(z)), ("w", w_prior.score(ws, tokens))):
        passed = float((scores <= 1).float().mean())
        assert passed >= 0.95, (space, passed)
    spiky = torch.zeros(4, G.z_dim)
    spiky[:, 0] = math.sqrt(G.z_dim)  # the right norm, but not Gaussian coordinates
    assert bool((z_prior.score(spiky) > 1).all())
    assert bool((z_prior.score(z[:4] * 3) > 1).all())
    assert bool((w_prior.score(ws[:4] + 20.0, tokens[:4]) > 1).all())


def test_failure_regions_measure_how_far_failures_persist(world):
    config = SageConfig(space="w", budget_queries=120, batch_size=16, prompts=({"texture": "t2"},), max_failures=3)
    result = sage_search(world.G, world.texture_model, [world.oracle], config, seed=1, progress=False)
    regions = failure_regions(world.G, world.texture_model, [world.oracle], result, radii=(0.1, 0.4), samples=4)
    # This model fails on the token alone: the whole neighbourhood fails.
    assert regions.queries == len(result.failures) * 2 * 4
    assert regions.curve() == [1.0, 1.0] and all(f.region_radius == 0.4 for f in result.failures)
    half = sage_search(world.G, world.half_model, [world.oracle], SageConfig(space="z", budget_queries=160, batch_size=16, search_groups=(),
                                                                             max_failures=4), seed=0, progress=False)
    tight = failure_regions(world.G, world.half_model, [world.oracle], half, radii=(0.01, 1.0), samples=6)
    # A failure just inside a half-space persists under tiny moves and not under moves as long as the code itself.
    assert tight.curve()[0] > tight.curve()[1]


def test_exported_case_fails_for_the_model_and_passes_for_a_fixed_one(world, tmp_path):
    config = SageConfig(space="w", budget_queries=120, batch_size=16, prompts=({"texture": "t0"},))
    result = sage_search(world.G, world.texture_model, [world.oracle], config, seed=0, progress=False)
    mode = failure_modes(result)[0]
    case_path, test_path = export_regression(result, mode, tmp_path, generator=world.G, generator_source=None)
    compile(test_path.read_text(), str(test_path), "exec")
    case = RegressionCase.load(case_path)
    assert len(case.prompts) == mode.count and case.labels[0] == mode.tokens["class"]
    with pytest.raises(RegressionFailure, match=f"{mode.count} of {mode.count} re-rendered images still misclassified"):
        case.assert_fixed(world.texture_model, world.G)
    case.assert_fixed(world.oracle, world.G)  # a model that no longer fails on the mode passes
    other = coded_generator()
    with torch.no_grad():
        other.mapping.fc1.bias.add_(0.1)
    with pytest.raises(InputError, match="fingerprint"):
        case.render(other)


def test_bad_inputs_are_rejected(world):
    with pytest.raises(InputError, match="space"):
        SageConfig(space="x")
    with pytest.raises(InputError, match="oracles"):
        sage_search(world.G, world.texture_model, [], SageConfig(budget_queries=8))
    with pytest.raises(InputError, match="search_groups"):
        sage_search(world.G, world.texture_model, [world.oracle], SageConfig(budget_queries=8, search_groups=("colour",)))
    unconditional = Generator(**preset("tiny").generator_kwargs(c_dim=0))
    with pytest.raises(InputError, match="conditional"):
        sage_search(unconditional, world.texture_model, [world.oracle], SageConfig(budget_queries=8))
    stranger = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(768, 3)), input_size=(3, 16, 16), class_names=["a", "b", "c"])
    with pytest.raises(InputError, match="class"):
        sage_search(world.G, stranger, [world.oracle], SageConfig(budget_queries=8))


@pytest.fixture
def importable(world, monkeypatch):
    """The test's models under ``sage_test_models:<name>`` (how the suite and the CLI take them)."""
    module = types.ModuleType("sage_test_models")
    module.texture_model, module.oracle = world.texture_model, world.oracle
    monkeypatch.setitem(sys.modules, "sage_test_models", module)
    return module


def test_sage_suite_reports_modes_with_images(world, importable, tmp_path):
    from reports import write_reports
    from robust.audit import AuditContext, load_suites
    from robust.data import ImageSet
    from robust.registry import parse_spec
    from robust.results import AuditResult

    suite_fn = load_suites().get("sage")
    data = ImageSet(torch.rand(8, 3, 16, 16), torch.arange(8) % 4, CLASSES, name="toy")
    ctx = AuditContext(world.texture_model, data, generator=world.G, seed=0, progress=False)
    suite = suite_fn(ctx, parse_spec("sage:x,oracle=sage_test_models:oracle,queries=64,batch=16,regions=1"))
    assert suite.metrics["failures"] > 0 and suite.metrics["modes"] >= 1
    assert "ratio_vs_random" in suite.metrics and suite.metrics["region_radius"] > 0
    case = suite.cases[0]
    assert case.failures and case.failures[0].image is not None and case.failures[0].image.dtype == torch.uint8
    assert "texture=t2" in case.failures[0].description
    report = json.loads(write_reports(AuditResult(suites=[suite]), tmp_path, ["json"])["json"].read_text())
    details = report["suites"][0]["details"]
    assert details["tables"][0]["title"].startswith("failure modes") and details["modes"][0]["count"] == case.n
    skipped = AuditContext(world.texture_model, data, generator=None, seed=0)
    from robust.audit import SuiteSkipped

    with pytest.raises(SuiteSkipped):
        suite_fn(skipped, parse_spec("sage"))


def test_sage_suite_samples_at_random_for_a_model_without_gradients(world, importable):
    import copy

    from robust.audit import AuditContext, load_suites
    from robust.data import ImageSet
    from robust.registry import parse_spec

    blind = copy.copy(world.texture_model)
    blind.has_gradients = False  # as an ONNX model: scores only
    data = ImageSet(torch.rand(8, 3, 16, 16), torch.arange(8) % 4, CLASSES, name="toy")
    ctx = AuditContext(blind, data, generator=world.G, seed=0, progress=False)
    suite_fn = load_suites().get("sage")
    suite = suite_fn(ctx, parse_spec("sage:x,oracle=sage_test_models:oracle,queries=48,batch=16,regions=0"))
    assert suite.metrics["failures"] > 0 and suite.metrics["queries"] == 48
    assert "ratio_vs_random" not in suite.metrics  # the run is random sampling: no second, baseline run
    assert suite.params["method"] == "random" and "no gradients" in suite.details["notes"][0]
    assert suite.details["tables"][1]["rows"][0][0].startswith("random sampling")
    with pytest.raises(InputError, match="no gradients"):
        suite_fn(ctx, parse_spec("sage:x,oracle=sage_test_models:oracle,queries=16,method=gradient"))
    with pytest.raises(InputError, match="method"):
        suite_fn(ctx, parse_spec("sage:x,oracle=sage_test_models:oracle,queries=16,method=beam"))


def test_search_command_writes_report_failures_and_regression_cases(world, importable, tmp_path):
    from click.testing import CliRunner

    from robust.cli import cli
    from robust.io import load_checkpoint

    save_generator(world.G, tmp_path / "gen")
    out = tmp_path / "out"
    args = ["search", "--model", "sage_test_models:texture_model", "--generator", str(tmp_path / "gen"),
            "--oracle", "sage_test_models:oracle", "--budget-queries", "48", "--batch-size", "16", "--regions", "1", "--export", "1",
            "--out", str(out), "--format", "json,md", "--quiet", "--device", "cpu"]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    assert "verified failures" in run.output
    for name in ("report.md", "report.json", "failures.json"):
        assert (out / name).is_file()
    tensors, summary = load_checkpoint(out / "failures", "robust-sage-failures")
    assert tensors["images"].dtype == torch.uint8 and tensors["images"].shape[0] == summary["failures"] == len(summary["failures_list"])
    tests = list((out / "regression").glob("test_*.py"))
    assert len(tests) == 1
    case = RegressionCase.load(tests[0].with_name(tests[0].name[len("test_"):-3] + ".json"))
    with pytest.raises(RegressionFailure):
        case.assert_fixed(world.texture_model)  # the generator is found again from the exported path
    assert "Example" in CliRunner().invoke(cli, ["search", "--help"]).output


def test_search_command_samples_at_random_for_a_model_without_gradients(world, importable, tmp_path):
    import copy

    from click.testing import CliRunner

    from robust.cli import cli

    blind = copy.copy(world.texture_model)
    blind.has_gradients = False  # as an ONNX model: scores only
    importable.blind_model = blind
    save_generator(world.G, tmp_path / "gen")
    args = ["search", "--model", "sage_test_models:blind_model", "--generator", str(tmp_path / "gen"),
            "--oracle", "sage_test_models:oracle", "--budget-queries", "48", "--batch-size", "16", "--regions", "0", "--export", "0",
            "--out", str(tmp_path / "out"), "--format", "json", "--quiet", "--device", "cpu"]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    assert "no gradients" in run.output and "verified failures in 48 generator queries" in run.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["suites"][0]["metrics"]["failures"] > 0
    refused = CliRunner().invoke(cli, [*args, "--method", "gradient"])
    assert refused.exit_code != 0 and "no gradients" in refused.output


class Constant(nn.Module):
    """Always the same class, whatever the image."""

    def __init__(self, k: int, classes: int = 10):
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(k), classes).float() * 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * x.mean((1, 2, 3))[:, None]


def test_ground_truth_check_rerenders_the_named_factors_with_the_benchmark_renderer():
    from attacks.sage import Failure, SageResult
    from attacks.sage_modes import FailureMode
    from attacks.sage_synthetic import ground_truth_check
    from robust.synthetic import CLASS_NAMES, TEXTURES

    groups = [("class", list(CLASS_NAMES)), ("texture", list(TEXTURES))]

    def failure(label: str) -> Failure:
        k = CLASS_NAMES.index(label)
        return Failure(tokens={"class": label, "texture": "stripes"}, token_ids=[k, 1], label=k, label_name=label, prediction=1,
                       prediction_name="ring", confidence=0.9, oracle_prob=0.9, oracle_prediction=label, in_distribution=0.5,
                       z=torch.zeros(4), delta=None, w=torch.zeros(4), start_w=torch.zeros(4), query=1, seconds=0.0, chain=0, step=0,
                       factors={"obj_hue": 0.35})

    result = SageResult(failures=[failure("disk"), failure("square"), failure("ring")], queries=3, seconds=1.0, stopped="queries",
                        config=SageConfig(), seed=0, counts={}, prior={}, groups=groups, model_classes=list(CLASS_NAMES),
                        baseline_tokens=torch.zeros(0, 2, dtype=torch.long), baseline_predictions=torch.zeros(0, dtype=torch.long))
    conditions = [{"kind": "class", "key": "class", "value": "disk", "text": "disk"},
                  {"kind": "token", "key": "texture", "value": 1, "text": "stripes background"}]
    mode = FailureMode("m", "disk with stripes background", conditions, [0, 1, 2], 1.0, 2.0, "ring", 1.0,
                       dominant="object hue ~0.35", dominant_key="obj_hue", dominant_value=0.35)
    assert mode.named_factors() == ["texture", "obj_hue"]
    always_ring = Classifier(Constant(1), input_size=(3, 32, 32), num_classes=10, class_names=list(CLASS_NAMES))
    truth = ground_truth_check(always_ring, result, [mode], n=4)
    # "Always ring" is wrong on every re-rendered disk and square and right on every ring.
    assert truth.confirmed == [True, True, False] and truth.named_error == [1.0, 1.0, 0.0]
    assert truth.per_mode == {"m": pytest.approx(2 / 3)} and truth.renders == 3 * 2 * 4
    assert truth.named_factors[0] == ["texture", "obj_hue"]
