"""Black-box suites at the cost they need: the transforms suite's early-stopping search and reused sweep on
an ONNX model (same results as the full search), Square's epsilon sweep from the largest budget down
with queries counted per budget, and sweep strips that show an image the sweep breaks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import attacks
from robust.audit import AuditConfig, run_audit
from robust.data import ImageSet
from robust.models import Classifier, export_onnx, load_classifier
from robust.suites.strips import failing_image
from robust.transforms import get_transform

from classifier_helpers import digits_logreg

T = 3 / 255


@pytest.fixture(scope="module")
def onnx_digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ImageSet]:
    """A logistic regression on scikit-learn's digits (16x16, grey), exported to ONNX, and 24 test images."""
    clf, test = digits_logreg(steps=30)
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    export_onnx(clf, path)
    return str(path), test


def test_transforms_suite_on_onnx_matches_the_full_search_with_fewer_evaluations(onnx_digits):
    path, test = onnx_digits
    names = ["rotation", "brightness", "translation"]
    result = run_audit(path, test, AuditConfig([f"transforms,names={'+'.join(names)}"], progress=False))
    suite = result.suite("transforms")
    assert suite.status == "ok", suite.error
    clf = load_classifier(path)
    images, labels = test.images, test.labels
    for name, curve in zip(names, suite.curves):
        tf = get_transform(name)
        full = attacks.transform_search(clf, images, labels, tf, method="grid")  # every image at every grid point
        case = next(c for c in suite.cases if c.name == name)
        assert case.metrics["acc"] == pytest.approx(full.worst_case_accuracy)
        assert case.params["evaluations"] < full.evaluations
        param = tf.params[0].name
        swept = [float((clf.predict(tf(images, tf.expand({param: v}, len(labels)))) == labels).float().mean()) for v in curve.x]
        assert curve.y == pytest.approx(swept)  # the sweep read off the search equals evaluating every image
    assert len(suite.curves[0].x) == 9 and suite.curves[0].x[4] == 0.0  # rotation: every 4th of the 33-point grid


@pytest.mark.parametrize("method", ["grid", "random"])
def test_early_stop_keeps_every_verdict_of_the_search(onnx_digits, method):
    path, test = onnx_digits
    clf = load_classifier(path)
    full = attacks.transform_search(clf, test.images, test.labels, "rotation", method=method, k=6, seed=3)
    fast = attacks.transform_search(clf, test.images, test.labels, "rotation", method=method, k=6, seed=3, early_stop=True,
                                    clean_predictions=clf.predict(test.images))
    assert torch.equal(fast.success, full.success) and torch.equal(fast.clean_correct, full.clean_correct)
    assert fast.evaluations < full.evaluations
    won = fast.success.nonzero().squeeze(1)
    assert torch.equal(clf.predict(fast.images[won]) != test.labels[won], torch.ones(len(won), dtype=torch.bool))


class _Distance(nn.Module):
    """Class 1 exactly when some pixel lies more than ``T`` from 0.5: what a Linf budget above ``T`` always reaches."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x - 0.5).abs().flatten(1).amax(1)
        return torch.stack([T - d, d - T], 1) * 100


def _distance_case() -> tuple[Classifier, ImageSet]:
    """Three grey images (broken by any budget above ``T``, at the first query), two black ones of class 1
    (never broken: every pixel stays far from 0.5) and one black image labelled 0 (wrong unattacked)."""
    images = torch.cat([torch.full((3, 1, 4, 4), 0.5), torch.zeros(3, 1, 4, 4)])
    data = ImageSet(images, torch.tensor([0, 0, 0, 1, 1, 0]), ["near", "far"])
    return Classifier(_Distance(), input_size=(1, 4, 4), num_classes=2), data


def test_square_sweep_attacks_from_the_largest_budget_down_and_counts_queries_per_budget():
    clf, data = _distance_case()
    q = 20
    sweep = attacks.epsilon_sweep(clf, data.images, data.labels, f"square:linf,queries={q}", [0, 2 / 255, 4 / 255, 8 / 255])
    assert sweep.min_eps.tolist() == pytest.approx([4 / 255] * 3 + [float("inf")] * 2 + [0.0])
    assert sweep.robust_accuracy == pytest.approx([5 / 6, 5 / 6, 2 / 6, 2 / 6])
    # Per budget: the attacked images' clean and preflight evaluations, the first query, then the survivors' iterations.
    # 8/255 attacks the 5 right ones (the grey break at once, the black cost q each, once in all);
    # 4/255 only the 3 grey ones 8/255 broke (broken at once); 2/255 the same 3, which resist (q each).
    assert sweep.queries_per_eps == [6, 3 + 3 + 3 + 3 * (q - 1), 3 + 3 + 3, 5 + 5 + 5 + 2 * (q - 1)]
    assert sweep.queries == sum(sweep.queries_per_eps)


def test_attack_suite_reports_queries_per_image_per_budget():
    clf, data = _distance_case()
    result = run_audit(clf, data, AuditConfig(["square:linf@8/255,queries=20"], progress=False))
    suite = result.suite("square")
    per_case = {case.name: case.metrics["queries_per_image"] for case in suite.cases}
    assert per_case == pytest.approx({"linf_2": (9 + 3 * 19) / 6, "linf_4": 9 / 6, "linf_8": (15 + 2 * 19) / 6})
    assert suite.metrics["queries_per_image"] == pytest.approx(per_case["linf_8"]) and per_case["linf_8"] <= 20
    assert suite.metrics["acc"] == pytest.approx(2 / 6)


def test_failing_image_prefers_an_image_broken_where_the_sweep_hurts_most():
    correct = torch.tensor([[True, True, True, False],
                            [True, False, True, False],
                            [True, True, False, False]])
    assert failing_image(correct, torch.tensor([True, True, True, False])) == 1  # row 1 (first of the lowest) breaks image 1
    assert failing_image(correct, torch.tensor([True, False, True, False])) == 2  # right clean, wrong at some setting
    assert failing_image(correct) == 1
    assert failing_image(torch.ones(3, 4, dtype=torch.bool)) == 0  # nothing fails: image 0
    assert failing_image(torch.ones(3, 0, dtype=torch.bool)) == 0


def test_transform_strip_shows_an_image_that_fails(onnx_digits):
    path, test = onnx_digits
    result = run_audit(path, test, AuditConfig(["transforms:rotation"], progress=False))
    strip = result.suite("transforms").strips[0]
    shown = int(strip.name.split("image ")[1].split(";")[0])
    clf = load_classifier(path)
    tf = get_transform("rotation")
    curve = result.suite("transforms").curves[0]
    harmful = curve.x[min(range(len(curve.y)), key=lambda i: curve.y[i])]
    image, label = test.images[shown : shown + 1], int(test.labels[shown])
    assert int(clf.predict(image)) == label
    assert int(clf.predict(tf(image, tf.expand({"angle": harmful}, 1)))) != label
