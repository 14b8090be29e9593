"""Fixtures of the example suite: a classifier of the synthetic benchmark and its test images.

By default the suite trains a small CNN on the benchmark's shortcut-correlated ``train`` split
(once: the weights are cached under ``.pytest_cache``) and tests it on the ``test_iid`` split.
``--robust-model`` and ``--robust-data`` replace either with your own; the overrides below go
through the plugin's own loaders, so they behave exactly like the plugin's fixtures.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from robust.pytest_plugin import RobustOptions, load_data, load_model, set_report_subject

IMAGE_SIZE = 16
TEST_IMAGES = 300
# The benchmark model: small enough to train in a few minutes on a CPU.
TRAINING = {"images": 2000, "epochs": 5, "width": 16, "batch": 64, "seed": 0}


@pytest.fixture(scope="session")
def robust_data(robust_options: RobustOptions, pytestconfig: pytest.Config) -> Any:
    if robust_options.data is not None:
        data = load_data(robust_options)
    else:
        from robust.synthetic import SyntheticBenchmark

        data = SyntheticBenchmark(size=IMAGE_SIZE, seed=0).split("test_iid", robust_options.max_samples or TEST_IMAGES)
    set_report_subject(pytestconfig, data=data)
    return data


@pytest.fixture(scope="session")
def robust_model(robust_options: RobustOptions, robust_device: Any, robust_data: Any, pytestconfig: pytest.Config,
                 tmp_path_factory: pytest.TempPathFactory) -> Any:
    if robust_options.model is not None:
        model = load_model(robust_options, robust_device, robust_data)
    else:
        model = _benchmark_model(pytestconfig, tmp_path_factory, robust_device)
    set_report_subject(pytestconfig, model=model)
    return model


def _benchmark_model(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory, device: Any) -> Any:
    from robust.models import build_classifier, load_classifier, save_classifier
    from robust.synthetic import SyntheticBenchmark
    from robust.train import fit

    key = "robust-example-smallcnn-" + "-".join(f"{k}{v}" for k, v in TRAINING.items())
    cache = getattr(config, "cache", None)
    folder = Path(cache.mkdir(key)) if cache is not None else tmp_path_factory.mktemp(key)
    path = folder / "classifier"
    if (folder / "classifier.json").is_file():
        return load_classifier(path, device=device)
    bench = SyntheticBenchmark(size=IMAGE_SIZE, seed=TRAINING["seed"])
    train = bench.split("train", TRAINING["images"])
    model = build_classifier("smallcnn", train.num_classes, (3, IMAGE_SIZE, IMAGE_SIZE), class_names=train.class_names,
                             width=TRAINING["width"], device=device)
    fit(model, train, epochs=TRAINING["epochs"], batch_size=TRAINING["batch"], seed=TRAINING["seed"], progress=False)
    save_classifier(model, path)
    return model


@pytest.fixture(scope="session")
def confident(robust_model: Any, robust_data: Any) -> Any:
    """The test images the model gets right with probability >= 0.9: invariance is asked of these."""
    probs = robust_model.probabilities(robust_data.images.to(robust_model.device)).cpu()
    keep = (probs.argmax(1) == robust_data.labels) & (probs.max(1).values >= 0.9)
    return robust_data[keep.nonzero().squeeze(1)]
