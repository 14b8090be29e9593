"""Robustness assertions: what passes, what fails, and what a failure says and writes."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import robust.strategies as rs
from augment.corruptions import HELDOUT_CORRUPTIONS
from robust.data import ImageSet
from robust.errors import InputError
from robust.models import Classifier
from robust.testing import (
    RobustnessFailure,
    assert_accuracy,
    assert_invariant,
    assert_no_failures,
    failure_dir,
)


class MeanThreshold(nn.Module):
    """Says "bright" (class 1) once an image's mean grey level passes ``threshold``; ``sharpness``
    scales the logits (small values give soft probabilities)."""

    def __init__(self, threshold: float, sharpness: float = 100.0):
        super().__init__()
        self.threshold, self.sharpness = threshold, sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([self.threshold - m, m - self.threshold], 1) * self.sharpness


def classifier(threshold: float, sharpness: float = 100.0) -> Classifier:
    return Classifier(MeanThreshold(threshold, sharpness), input_size=(1, 16, 16), class_names=["dark", "bright"])


IMAGES = torch.full((3, 1, 16, 16), 0.25)
DARK = torch.zeros(3, dtype=torch.long)


def test_an_invariant_model_passes_over_the_whole_grid(tmp_path: Path) -> None:
    case = assert_invariant(classifier(0.95), IMAGES, "brightness", save_dir=tmp_path)
    assert case.metrics == {"n": 3.0, "failures": 0.0, "invariant_rate": 1.0, "passed": 1.0}
    assert case.params["points"] == 4  # the 5-step grid without its identity point
    assert list(tmp_path.iterdir()) == []


def test_a_failure_reports_the_mildest_failing_grid_point_and_writes_images(tmp_path: Path) -> None:
    with pytest.raises(RobustnessFailure) as info:
        assert_invariant(classifier(0.55), IMAGES, "brightness", grid_steps=11, save_dir=tmp_path)
    message = str(info.value)
    # Grid points 0.1, 0.2, ... : 0.3 lands exactly on the threshold (a tie keeps "dark"); 0.4 is the mildest failure.
    assert message.startswith("assert_invariant: 3 of 3 images changed under brightness (10 parameter setting(s); rule: prediction unchanged)")
    assert ("sample 1 (index 1) under brightness(delta=0.4): predicted 'bright' (class 1) (p=1.000), "
            "expected 'dark' (class 0) (clean p=1.000)") in message
    png = tmp_path / "invariance-brightness.png"
    assert info.value.path == png and f"failing images: {png} (left: clean, right: transformed)" in message
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (4 + 2 * (64 + 4), 4 + 3 * (64 + 4))  # 2 columns, 3 rows, 16 px shown at 64
        assert im.getpixel((10, 10))[0] == round(0.25 * 255) and im.getpixel((4 + 68 + 10, 10))[0] == round(0.65 * 255)
    record = json.loads((tmp_path / "invariance-brightness.json").read_text())
    assert [f["index"] for f in record["failures"]] == [0, 1, 2]
    assert record["failures"][0]["params"] == {"delta": 0.4} and record["failures"][0]["label"] == 0
    assert [f.params for f in info.value.failures] == [{"delta": 0.4}] * 3
    assert info.value.failures[0].image.dtype == torch.uint8 and info.value.failures[0].original is not None


def test_margin_tolerates_near_ties_and_max_drop_limits_confidence_loss(tmp_path: Path) -> None:
    soft = classifier(0.55, sharpness=1.0)
    params = {"delta": 0.32}  # mean 0.57: "bright" by a probability gap of about 0.02
    with pytest.raises(RobustnessFailure, match="rule: prediction unchanged"):
        assert_invariant(soft, IMAGES, "brightness", params=params, save_dir=tmp_path)
    assert assert_invariant(soft, IMAGES, "brightness", params=params, margin=0.05, save_dir=tmp_path).metrics["passed"] == 1.0
    with pytest.raises(RobustnessFailure, match=r"rule: clean top-1 within 0.05 of the top, confidence drop <= 0.1\)"):
        assert_invariant(soft, IMAGES, "brightness", params=params, margin=0.05, max_drop=0.1, save_dir=tmp_path)


def test_inputs_as_imageset_batch_and_module(tmp_path: Path) -> None:
    data = ImageSet(torch.linspace(0.1, 0.4, 8).view(8, 1, 1, 1).expand(8, 1, 16, 16).contiguous(), torch.zeros(8, dtype=torch.long),
                    ["dark", "bright"], name="ramp")
    batch = rs.Batch(data.images[[6, 7]], data.labels[[6, 7]], [6, 7], "ramp", ["dark", "bright"])
    with pytest.raises(RobustnessFailure) as info:
        assert_invariant(classifier(0.55), batch, rs.transform_case("brightness", delta=0.17), save_dir=tmp_path)
    # Means 0.357 and 0.4: only the brighter image crosses 0.55; it is sample 1 of the batch, index 7 of the data.
    assert "1 of 2 images changed" in str(info.value)
    assert "sample 1 (index 7) under brightness(delta=0.17): predicted 'bright' (class 1)" in str(info.value)
    assert "true label 'dark' (class 0)" in str(info.value)
    with pytest.raises(RobustnessFailure, match="1 of 8 images changed.*\n  sample 7 \\(index 7\\)"):
        assert_invariant(MeanThreshold(0.55), data, "brightness", params={"delta": 0.17}, save_dir=tmp_path)


def test_per_image_params_and_seeded_severity(tmp_path: Path) -> None:
    deltas = torch.tensor([0.0, 0.4, 0.1])
    with pytest.raises(RobustnessFailure) as info:
        assert_invariant(classifier(0.55), IMAGES, "brightness", params={"delta": deltas}, save_dir=tmp_path)
    assert "1 of 3 images changed" in str(info.value) and "sample 1 (index 1) under brightness(delta=0.4)" in str(info.value)
    # Severity 4 of 5 draws a side per image from the seed: the same seed, the same verdict.
    outcomes = []
    for _ in range(2):
        with pytest.raises(RobustnessFailure) as again:
            assert_invariant(classifier(0.55), torch.full((16, 1, 16, 16), 0.25), "brightness", severity=4, seed=3, save_dir=tmp_path)
        outcomes.append([f.index for f in again.value.failures])
    assert outcomes[0] == outcomes[1] and 0 < len(outcomes[0]) < 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transform": rs.transform_case("brightness", delta=0.1), "params": {"delta": 0.1}}, "params/severity: expected nothing with a TransformCase"),
        ({"transform": "brightness", "params": {"delta": 0.1}, "severity": 2}, "params/severity: expected one of params or severity"),
        ({"transform": "brightness", "params": {"angle": 3}}, "brightness params: expected some of delta"),
        ({"transform": "brightness", "params": {"delta": torch.zeros(2)}}, "brightness params\\['delta'\\]: expected a number or a tensor of shape \\[3\\]"),
        ({"transform": "brightness", "severity": 7}, "severity: expected a value in \\[0, 5\\]"),
        ({"transform": "brightness", "margin": 1.5}, "margin: expected a value in \\[0, 1\\]"),
        ({"transform": 42}, "transform: expected a registered transform name"),
        ({"transform": "no_such"}, "transform: expected one of"),
    ],
)
def test_bad_arguments_raise_input_errors(kwargs: dict, message: str) -> None:
    transform = kwargs.pop("transform")
    with pytest.raises(InputError, match=message):
        assert_invariant(classifier(0.55), IMAGES, transform, **kwargs)


def test_accuracy_floor_passes_and_fails_with_cases_named(tmp_path: Path) -> None:
    clf, data = classifier(0.55), (IMAGES, DARK)
    cases = assert_accuracy(clf, data, ["clean", "rotation,angle=30", "contrast@3"], at_least=1.0, save_dir=tmp_path)
    assert [c.name for c in cases] == ["clean", "rotation_angle_30", "contrast_3"] and all(c.metrics["acc"] == 1.0 for c in cases)
    with pytest.raises(RobustnessFailure) as info:
        assert_accuracy(clf, data, ["brightness,delta=0.1", "brightness,delta=0.4"], at_least=0.5, save_dir=tmp_path)
    message = str(info.value)
    assert message.startswith("assert_accuracy: 1 of 2 case(s) below accuracy 0.5\n  brightness,delta=0.4: accuracy 0.000 < 0.5 (3 of 3 wrong)")
    assert "sample 2 (index 2) under brightness(delta=0.4): predicted 'bright' (class 1) (p=1.000), expected 'dark' (class 0)" in message
    assert info.value.path.name == "accuracy-brightness_delta_0_4.png" and info.value.path.is_file()


def test_accuracy_suites_expand_patterns_and_severities(tmp_path: Path) -> None:
    cases = assert_accuracy(classifier(0.95), (IMAGES, DARK), "*scale*@2", at_least=1.0, save_dir=tmp_path)
    assert [c.name for c in cases] == ["scale_2"]
    both = assert_accuracy(classifier(0.95), (IMAGES, DARK), "brightness@5,delta=0.1", at_least=1.0, save_dir=tmp_path)
    assert both[0].params["suite"] == "brightness@5,delta=0.1"
    with pytest.raises(InputError, match="a severity or parameters"):
        assert_accuracy(classifier(0.95), (IMAGES, DARK), "brightness", at_least=0.5)
    # Corruption sets read as everywhere else (augment.corruptions.parse_corruption_set).
    heldout = assert_accuracy(classifier(0.95), (IMAGES, DARK), "corruptions:heldout@3", at_least=0.0, save_dir=tmp_path)
    assert [c.params["suite"] for c in heldout] == [f"corruptions:{n}@3" for n in HELDOUT_CORRUPTIONS]
    assert len(assert_accuracy(classifier(0.95), (IMAGES, DARK), "corruptions@2", at_least=0.0, save_dir=tmp_path)) == 15
    with pytest.raises(InputError, match="suite: expected one of all, benchmark"):
        assert_accuracy(classifier(0.95), (IMAGES, DARK), "corruptions:heldot@3", at_least=0.0)
    with pytest.raises(InputError, match="data: expected labelled images"):
        assert_accuracy(classifier(0.95), IMAGES, None, at_least=0.5)
    with pytest.raises(InputError, match="at_least: expected a value in \\[0, 1\\]"):
        assert_accuracy(classifier(0.95), (IMAGES, DARK), None, at_least=80)


def test_no_failures_under_a_budget_and_a_report_of_broken_images(tmp_path: Path) -> None:
    clf, data = classifier(0.55), (IMAGES, DARK)
    # FGSM adds +eps to every pixel of these images: it crosses the threshold only with eps > 0.3.
    passed = assert_no_failures(clf, data, "fgsm:linf", budget=0.2, save_dir=tmp_path)
    assert passed.metrics["robust_acc"] == 1.0 and passed.metrics["broken"] == 0.0
    with pytest.raises(RobustnessFailure) as info:
        assert_no_failures(clf, data, "fgsm:linf@0.35", save_dir=tmp_path)
    message = str(info.value)
    assert message.startswith("assert_no_failures: fgsm:linf@0.35 broke 3 of 3 correctly classified images (allowed 0;")
    assert "sample 0 (index 0): predicted 'bright' (class 1) (p=1.000), expected 'dark' (class 0); perturbation linf 0.35" in message
    assert info.value.path.name == "attacks-fgsm_linf_0_35.png"
    assert info.value.failures[0].params["linf"] == pytest.approx(0.35, abs=1e-6)
    with pytest.raises(InputError, match="budget: expected an epsilon"):
        assert_no_failures(clf, data, "fgsm:linf")


def test_no_failures_takes_an_attack_object_and_an_allowance(tmp_path: Path) -> None:
    def shift_one(classifier: Classifier, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0) -> SimpleNamespace:
        adversarial = images.clone()
        adversarial[1] += 0.4
        predictions = classifier.predict(adversarial)
        clean_correct = classifier.predict(images) == labels
        return SimpleNamespace(adversarial=adversarial, success=predictions != labels, predictions=predictions,
                               clean_correct=clean_correct, queries=1)

    clf, data = classifier(0.55), (IMAGES, DARK)
    assert assert_no_failures(clf, data, shift_one, allowed=1, save_dir=tmp_path).metrics["broken"] == 1.0
    with pytest.raises(RobustnessFailure, match="shift_one broke 1 of 3 correctly classified images \\(allowed 0;") as info:
        assert_no_failures(clf, data, shift_one, save_dir=tmp_path)
    assert [f.index for f in info.value.failures] == [1]
    with pytest.raises(InputError, match="budget: expected no budget with an attack object without with_eps"):
        assert_no_failures(clf, data, shift_one, budget=0.1)
    with pytest.raises(InputError, match="attack options: expected nothing with an Attack object"):
        assert_no_failures(clf, data, shift_one, steps=3)


def test_failure_dir_is_the_running_tests_folder() -> None:
    folder = failure_dir()
    assert folder.parent.name == "robust-failures"
    assert folder.name == "tests_test_testing.py_test_failure_dir_is_the_running_tests_folder"
    assert failure_dir("elsewhere") == Path("elsewhere")
