"""The ``transform`` recipe: any registered transform as training augmentation, random or searched per image."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robust.errors import GradientUnavailableError, InputError
from robust.models import build_classifier
from robust.synthetic import SyntheticBenchmark
from robust.train import get_recipe, harden
from robust.train.recipes import Batch, RecipeContext


@pytest.fixture(scope="module")
def data():
    return SyntheticBenchmark(size=16, seed=0).split("train", 64)


@pytest.fixture(scope="module")
def model(data):
    torch.manual_seed(0)
    clf = build_classifier("smallcnn", 10, (3, 16, 16), width=8, class_names=SyntheticBenchmark.class_names)
    harden(clf, data, "erm", epochs=15, batch_size=32, lr=1e-2, progress=False, device="cpu")
    return clf


def bound(spec, model, data):
    recipe = get_recipe(spec)
    recipe.bind(RecipeContext(model, data, torch.device("cpu")))
    return recipe


def batch_of(data, rows, epoch_seed=0):
    rows = torch.as_tensor(rows)
    return Batch(data.images[rows], data.labels[rows], rows, rows + 1000 * epoch_seed, torch.Generator(), 0, 0)


def ce(model, images, labels):
    with torch.no_grad():
        return F.cross_entropy(model(images), labels, reduction="none")


def test_random_hue_rotates_each_image_by_its_own_angle_keeping_brightness(model, data):
    (out,) = bound("transform:hue", model, data).views(batch_of(data, range(16)), None)
    x = data.images[:16]
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    # A hue rotation keeps each pixel's value (max channel) and changes its colour.
    torch.testing.assert_close(out.amax(1), x.amax(1), atol=2e-3, rtol=0)
    change = (out - x).abs().flatten(1).mean(1)
    assert bool((change > 1e-3).all()) and float(change.std()) > 1e-3  # a different angle per image


@pytest.mark.parametrize("spec", ["transform:hue@3,p=0.5", "transform:rotation,mode=worst_of_k,k=3",
                                  "transform:illumination@4,mode=gradient,k=2,steps=2"])
def test_an_images_view_follows_its_seed_not_its_batch(spec, model, data):
    recipe = bound(spec, model, data)
    (whole,) = recipe.views(batch_of(data, range(12)), model)
    (alone,) = recipe.views(batch_of(data, [4, 9]), model)
    torch.testing.assert_close(alone, whole[[4, 9]], atol=1e-5, rtol=0)
    (again,) = recipe.views(batch_of(data, range(12)), model)
    assert torch.equal(again, whole)
    (next_epoch,) = recipe.views(batch_of(data, range(12), epoch_seed=1), model)
    assert not torch.allclose(next_epoch, whole)


def test_severity_bounds_the_change_and_p_leaves_the_other_images_as_they_are(model, data):
    x = data.images[:32]
    (out,) = bound("transform:brightness@2", model, data).views(batch_of(data, range(32)), None)
    shift = (out - x).flatten(1).mean(1).abs()
    assert float(shift.max()) <= 2 / 5 * 0.5 + 1e-5 and float(shift.max()) > 0.02
    (out,) = bound("transform:brightness@2,p=0.5", model, data).views(batch_of(data, range(32)), None)
    same = (out == x).flatten(1).all(1)
    assert 6 <= int(same.sum()) <= 26 and not bool(same.all())


def test_worst_of_k_keeps_the_hardest_of_the_random_draws(model, data):
    batch = batch_of(data, range(32))
    (first,) = bound("transform:hue", model, data).views(batch, model)
    (one,) = bound("transform:hue,mode=worst_of_k,k=1", model, data).views(batch, model)
    (worst,) = bound("transform:hue,mode=worst_of_k,k=6", model, data).views(batch, model)
    torch.testing.assert_close(one, first)  # its first draw is the random mode's draw
    random_loss, worst_loss = ce(model, first, batch.labels), ce(model, worst, batch.labels)
    assert bool((worst_loss >= random_loss - 1e-5).all())
    assert float(worst_loss.mean()) > float(random_loss.mean()) + 0.05


def test_gradient_ascent_raises_the_loss_over_its_start_within_the_severity(model, data):
    batch = batch_of(data, range(32))
    (start,) = bound("transform:rotation@3", model, data).views(batch, model)
    (ascended,) = bound("transform:rotation@3,mode=gradient,steps=4", model, data).views(batch, model)
    start_loss, ascended_loss = ce(model, start, batch.labels), ce(model, ascended, batch.labels)
    assert bool((ascended_loss >= start_loss - 1e-5).all())
    assert float(ascended_loss.mean()) > float(start_loss.mean()) + 0.05
    # Rotation within severity 3 of 5 (27 degrees) moves fewer pixels than rotations beyond it.
    beyond = get_recipe("transform:rotation").transform.apply(batch.images, {"angle": torch.full((32,), 45.0)})
    assert float((ascended - batch.images).abs().mean()) < float((beyond - batch.images).abs().mean())


@pytest.mark.parametrize("spec", ["transform:hue", "transform:hue,mode=worst_of_k,k=2", "transform:gamma@3,mode=gradient,steps=2"])
def test_each_mode_trains_and_lowers_the_training_loss(spec, data):
    torch.manual_seed(1)
    clf = build_classifier("smallcnn", 10, (3, 16, 16), width=8, class_names=SyntheticBenchmark.class_names)
    result = harden(clf, data, spec, epochs=4, batch_size=32, lr=1e-2, progress=False, device="cpu", seed=1)
    losses = [r["train_loss"] for r in result.history]
    assert result.steps == 8 and losses[-1] < losses[0], losses


@pytest.mark.parametrize("spec, named", [
    ("transform", "target"), ("transform:no_such", "target"), ("transform:hue,mode=sideways", "option mode"),
    ("transform:hue,mode=worst_of_k,k=0", "option k"), ("transform:hue,mode=worst_of_k,k=2.5", "option k"),
    ("transform:hue,p=1.5", "option p"), ("transform:hue,steps=3", "option steps"), ("transform:hue,k=3", "option k"),
    ("transform:hue,mode=gradient,step_size=2", "option step_size"), ("transform:hue,mode=worst_of_k,loss=mse", "option loss"),
    ("transform:hue@7", "severity"), ("transform:hue@x", "severity"), ("transform:randaugment,mode=gradient", "option mode"),
    ("transform:hue,colour=1", "options"),
])
def test_bad_specs_fail_naming_the_option(spec, named):
    with pytest.raises(InputError, match=named):
        get_recipe(spec)


def test_gradient_mode_needs_a_model_with_gradients(model, data):
    recipe = get_recipe("transform:hue,mode=gradient")
    model.has_gradients = False
    try:
        with pytest.raises(GradientUnavailableError):
            recipe.bind(RecipeContext(model, data, torch.device("cpu")))
    finally:
        del model.has_gradients
