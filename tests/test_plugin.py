"""The pytest plugin end to end, through pytester: invariance passes, threshold failures shrink to the
threshold, failure messages and images, the session report, options, marker, profiles, and silence
when unused."""
from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import hypothesis  # noqa: F401
import pytest

# Loaded here so pytester's in-process runs find them: it drops the modules a run imports, and
# importing them again costs seconds a run (assertion-rewritten, as modules of pytest plugins) and
# would register every transform a second time.
import robust.strategies  # noqa: F401
import robust.testing  # noqa: F401
from robust.plugins import load_all

load_all()

pytest_plugins = ["pytester"]

# A model on 16x16 grey images that says "bright" once the mean grey level exceeds THRESHOLD; the
# images are uniform at 0.25, so brightness breaks it exactly above delta = THRESHOLD - 0.25.
MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn
    from robust.models import Classifier

    class MeanThreshold(nn.Module):
        def __init__(self, threshold):
            super().__init__()
            self.threshold = threshold

        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([self.threshold - m, m - self.threshold], 1) * 100

    def classifier(threshold):
        return Classifier(MeanThreshold(threshold), input_size=(1, 16, 16), class_names=["dark", "bright"])

    IMAGES = torch.full((3, 1, 16, 16), 0.25)
    """
)

HYPOTHESIS_TESTS = textwrap.dedent(
    """
    from hypothesis import Phase, given, settings
    import robust.strategies as rs
    from robust.testing import assert_invariant
    from robust_model_module import classifier, IMAGES

    quick = settings(max_examples=60, derandomize=True, deadline=None, phases=[Phase.generate, Phase.shrink])

    @quick
    @given(case=rs.transform_params("brightness"))
    def test_invariant_model(case):
        assert_invariant(classifier(0.95), IMAGES, case)  # 0.25 + 0.5 at most: never crosses 0.95

    @quick
    @given(case=rs.transform_params("brightness"))
    def test_threshold_model(case):
        assert_invariant(classifier(0.55), IMAGES, case)  # breaks exactly for delta > 0.3
    """
)


@pytest.fixture(autouse=True)
def _frozen_heap():
    """pytester's in-process runs end with five full garbage collections, which take seconds over
    torch's heap; objects that exist before the run are kept out of them (they outlive it anyway)."""
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(robust_model_module=MODEL)
    pytester.syspathinsert()
    return pytester


def test_invariant_model_passes_and_threshold_failure_shrinks_to_the_threshold(project: pytest.Pytester) -> None:
    project.makepyfile(test_brightness=HYPOTHESIS_TESTS)
    result = project.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_brightness.py::test_threshold_model - *"])
    out = result.stdout.str()
    shrunk = re.search(r"case=transform_case\('brightness', delta=([0-9.]+)\)", out)
    assert shrunk, out
    assert 0.3 < float(shrunk.group(1)) <= 0.3 + 0.002
    # The assertion message: transform, parameters, sample index, predicted and expected class, image file.
    assert re.search(r"sample 0 \(index 0\) under brightness\(delta=0\.30\d*\): predicted 'bright' \(class 1\)"
                     r" \(p=0\.\d+\), expected 'dark' \(class 0\) \(clean p=1\.000\)", out), out
    png = Path(re.search(r"failing images: (\S+\.png) \(left: clean, right: transformed\)", out).group(1))
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.parent.parent.name == "robust-failures" and png.parent.name == "test_brightness.py_test_threshold_model"
    # Written on the final replay only: one image file and its record, holding the shrunk case.
    assert sorted(p.suffix for p in png.parent.iterdir()) == [".json", ".png"]
    record = json.loads(png.with_suffix(".json").read_text())
    assert [f["params"]["delta"] for f in record["failures"]] == [float(shrunk.group(1))] * 3
    assert [f["index"] for f in record["failures"]] == [0, 1, 2] and {f["prediction"] for f in record["failures"]} == {1}


def test_report_option_writes_a_valid_report(project: pytest.Pytester) -> None:
    reports = pytest.importorskip("reports")
    project.makepyfile(test_mixed=textwrap.dedent(
        """
        import pytest
        from robust.testing import assert_accuracy, assert_invariant
        from robust_model_module import classifier, IMAGES
        import torch

        def test_rotation_invariant():
            assert_invariant(classifier(0.55), IMAGES, "rotation")

        def test_brightness_breaks():
            assert_invariant(classifier(0.55), IMAGES, "brightness", params={"delta": 0.4})

        def test_accuracy_floor():
            assert_accuracy(classifier(0.55), (IMAGES, torch.zeros(3, dtype=torch.long)), ["clean", "contrast@2"], at_least=0.9)

        @pytest.mark.robust
        def test_marked_without_assertions():
            assert True

        def test_unrelated():
            assert True

        @pytest.mark.xfail(strict=True)
        def test_known_weakness():
            assert_invariant(classifier(0.55), IMAGES, "brightness", params={"delta": 0.45})

        from hypothesis import given, settings
        import robust.strategies as rs

        @settings(max_examples=5, deadline=None, database=None)
        @given(case=rs.transform_params("rotation", max_severity=1))
        def test_hypothesis_rotation(case):
            assert_invariant(classifier(0.55), IMAGES, case)  # passing: hypothesis attempts are not cases
        """
    ))
    result = project.runpytest_inprocess("-p", "no:cacheprovider", "--robust-report=out")
    result.assert_outcomes(passed=5, failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["robust: audit report written to out: json (report.json), html (index.html)*"])
    report = reports.load_report(project.path / "out")
    assert not report.passed
    assert report.metric("tests.failed") == 1.0 and report.metric("tests.passed") == 4.0 and report.metric("tests.xfailed") == 1.0
    invariance = report.suite("invariance")
    assert {c.name for c in invariance.cases} == {"test_rotation_invariant-rotation", "test_brightness_breaks-brightness",
                                                  "test_known_weakness-brightness"}
    broken = invariance.case("test_brightness_breaks-brightness")
    assert broken.metrics["passed"] == 0.0 and len(broken.failures) == 3
    assert broken.failures[0].params == {"delta": pytest.approx(0.4)} and broken.failures[0].image is not None
    assert report.metric("accuracy.test_accuracy_floor-clean.acc") == 1.0
    assert sorted(c.name for c in report.suite("tests").cases) == [
        "test_mixed_py_test_accuracy_floor", "test_mixed_py_test_brightness_breaks", "test_mixed_py_test_hypothesis_rotation",
        "test_mixed_py_test_known_weakness", "test_mixed_py_test_marked_without_assertions", "test_mixed_py_test_rotation_invariant",
    ]
    assert report.gates[0].expression == "tests.failed<=0" and "test_mixed.py::test_brightness_breaks" in report.gates[0].message
    assert report.model["name"] == "MeanThreshold" and report.data["n"] == 6  # 3 images alone, 3 with labels
    assert (project.path / "out" / "failures").is_dir()


def test_unused_plugin_adds_no_output(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")

    def lines(*args: str) -> list[str]:
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
        result.assert_outcomes(passed=1)
        # The plugins line lists installed plugins (pytest's own header) and the summary has a time.
        return [re.sub(r"in [0-9.]+s", "", line) for line in result.outlines if not line.startswith("plugins:")]

    assert lines() == lines("-p", "no:robust")


def test_importing_the_plugin_imports_neither_torch_nor_hypothesis() -> None:
    code = "import sys, robust.pytest_plugin; print(sorted(m for m in ('torch', 'hypothesis', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_plain_session_with_the_plugin_does_not_import_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_light=textwrap.dedent(
        """
        import sys

        def test_light(pytestconfig):
            assert pytestconfig.pluginmanager.has_plugin("robust")
            assert "torch" not in sys.modules
        """
    ))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--robust-device=gpu9"], "--robust-device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu9'"),
        (["--robust-model=missing.onnx"], "--robust-model: expected an existing checkpoint or .onnx file*got 'missing.onnx' (no such file)"),
        (["--robust-data=missing.npz"], "--robust-data: expected an image folder*got 'missing.npz' (no such file)"),
        (["--robust-generator=missing.pkl"], "--robust-generator: expected 'demo' or an existing generator checkpoint*"),
        (["--robust-report=afile.txt"], "--robust-report: expected a folder for the report, got 'afile.txt' (an existing file)"),
        (["--robust-profile=weekly"], "--robust-profile: invalid choice: 'weekly'*"),
        (["--robust-max-samples=0"], "--robust-max-samples: expected a positive whole number, got '0'"),
        (["--robust-seed=-3"], "--robust-seed: expected a non-negative whole number, got '-3'"),
        (["--robust-profile=ci", "--hypothesis-profile=default"], "*--robust-profile and --hypothesis-profile both given*"),
    ],
)
def test_options_validate_their_values(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makefile(".txt", afile="not a folder")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*" + message + "*"])


def test_fixtures_skip_without_options_and_load_with_them(pytester: pytest.Pytester) -> None:
    import torch

    from robust.data import ImageSet
    from robust.models import build_classifier, save_classifier

    clf = build_classifier("smallcnn", 10, (1, 16, 16), width=4)
    save_classifier(clf, pytester.path / "model")
    labels = torch.arange(40) % 10
    ImageSet(torch.rand(40, 1, 16, 16, generator=torch.Generator().manual_seed(0)), labels, [str(i) for i in range(10)]).save_npz(pytester.path / "data.npz")
    from robust.gan import Generator, save_generator

    tiny = Generator(z_dim=8, w_dim=8, img_resolution=16, synthesis_kwargs={"channel_base": 64, "channel_max": 8}, mapping_kwargs={"num_layers": 1})
    save_generator(tiny, pytester.path / "generator")
    pytester.makepyfile(test_fixtures=textwrap.dedent(
        """
        def test_model_and_data(robust_model, robust_data, robust_device, robust_seed, robust_failure_dir):
            assert robust_model.num_classes == robust_data.num_classes == 10
            assert len(robust_data) == 20 and robust_data.size == (16, 16)
            assert robust_device.type == "cpu" and robust_seed == 7
            assert robust_failure_dir.is_dir() and "test_model_and_data" in robust_failure_dir.name

        def test_generator(robust_generator):
            assert robust_generator.z_dim == 8 and robust_generator.img_resolution == 16
        """
    ))
    skipped = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    skipped.assert_outcomes(skipped=2)
    skipped.stdout.fnmatch_lines(["*robust_model: no --robust-model given*", "*robust_generator: no --robust-generator given*"])
    ran = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--robust-model=model", "--robust-data=data.npz",
                                       "--robust-max-samples=20", "--robust-device=cpu", "--robust-seed=7", "--robust-generator=generator")
    ran.assert_outcomes(passed=2)
    ran.stdout.fnmatch_lines(["robust: model=model, data=data.npz, generator=generator, device=cpu, seed=7"])


def test_marker_selects_robustness_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sel=textwrap.dedent(
        """
        import pytest

        @pytest.mark.robust
        def test_marked():
            pass

        def test_uses_fixture(robust_seed):
            pass

        def test_plain():
            pass
        """
    ))
    selected = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-m", "robust", "-v")
    selected.assert_outcomes(passed=2, deselected=1)
    selected.stdout.fnmatch_lines(["*test_marked PASSED*", "*test_uses_fixture PASSED*"])
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "-m", "not robust", "--strict-markers").assert_outcomes(passed=1, deselected=2)


def test_profile_options_load_the_robust_profiles(pytester: pytest.Pytester) -> None:
    from hypothesis import settings

    before = settings.get_current_profile_name()
    pytester.makepyfile(test_prof=textwrap.dedent(
        """
        from hypothesis import settings

        def test_profile(pytestconfig):
            expected = pytestconfig.getoption("robust_profile") or "nightly"
            assert settings.get_current_profile_name() == "robust-" + expected
            assert settings().deadline is None
            assert settings().derandomize == (expected == "ci")
        """
    ))
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "--robust-profile=ci").assert_outcomes(passed=1)
    assert settings.get_current_profile_name() == before
    try:
        pytester.runpytest_inprocess("-p", "no:cacheprovider", "--hypothesis-profile=robust-nightly").assert_outcomes(passed=1)
    finally:
        settings.load_profile(before)  # hypothesis's own option does not restore the previous profile
