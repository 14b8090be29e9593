"""Fixtures of the example suite: a classifier of the synthetic benchmark and its test images.

By default the suite trains a small CNN on the benchmark's shortcut-correlated ``train`` split
(once: the weights are cached under ``.pytest_cache``) and tests it on the ``test_iid`` split.
``--robust-model`` and ``--robust-data`` replace either with your own; the overrides below go
through the plugin's own loaders, so they behave exactly like the plugin's fixtures.

The SAGE regression example (``test_sage_regression.py``) needs 32x32 images, the demo generator's:
it searches a second small CNN, trained at that size the way ``robust demo`` trains its model,
and pins the largest failure mode it finds as an exported case (both cached the same way).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from robust.pytest_plugin import RobustOptions, load_data, load_model, set_report_subject

IMAGE_SIZE = 16
TEST_IMAGES = 300
# The benchmark model: small enough to train in a few minutes on a CPU.
TRAINING = {"images": 4000, "epochs": 5, "width": 16, "batch": 64, "seed": 0}
# The SAGE example's model: 32x32 like the demo generator's images, trained as `robust demo` trains
# its model (4,000 images of the shortcut split, 2 epochs): about 10 s on one busy CPU core.
SAGE_IMAGE_SIZE = 32
SAGE_TRAINING = {"images": 4000, "epochs": 2, "width": 16, "batch": 128, "seed": 0}
# A small seeded search: seconds on a CPU. The case is pinned per generator, model and search.
SAGE_SEARCH = {"queries": 512, "space": "w", "batch": 32, "seed": 0}


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
    return _smallcnn(config, tmp_path_factory, device, "robust-example-smallcnn-", IMAGE_SIZE, TRAINING)[0]


def _cache_folder(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory, key: str) -> Path:
    cache = getattr(config, "cache", None)
    return Path(cache.mkdir(key)) if cache is not None else tmp_path_factory.mktemp(key)


def _smallcnn(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory, device: Any, prefix: str, size: int,
              training: dict[str, int]) -> tuple[Any, Path]:
    """A smallcnn trained on the shortcut split at ``size`` px (once; cached under ``.pytest_cache``) and its path."""
    from robust.models import build_classifier, load_classifier, save_classifier
    from robust.synthetic import SyntheticBenchmark
    from robust.train import fit

    folder = _cache_folder(config, tmp_path_factory, prefix + "-".join(f"{k}{v}" for k, v in training.items()))
    path = folder / "classifier"
    if (folder / "classifier.json").is_file():
        return load_classifier(path, device=device), path
    bench = SyntheticBenchmark(size=size, seed=training["seed"])
    train = bench.split("train", training["images"])
    model = build_classifier("smallcnn", train.num_classes, (3, size, size), class_names=train.class_names,
                             width=training["width"], device=device, seed=training["seed"])
    fit(model, train, epochs=training["epochs"], batch_size=training["batch"], seed=training["seed"], progress=False)
    save_classifier(model, path)
    return model, path


@pytest.fixture(scope="session")
def confident(robust_model: Any, robust_data: Any) -> Any:
    """The test images the model gets right with probability >= 0.9: invariance is asked of these."""
    probs = robust_model.probabilities(robust_data.images.to(robust_model.device)).cpu()
    keep = (probs.argmax(1) == robust_data.labels) & (probs.max(1).values >= 0.9)
    return robust_data[keep.nonzero().squeeze(1)]


# -- the SAGE regression example --------------------------------------------------------------------

@pytest.fixture(scope="session")
def robust_generator(robust_options: RobustOptions, robust_device: Any) -> Any:
    """``--robust-generator`` when given, else the shipped 32x32 demo generator of the synthetic benchmark."""
    import robust.gan as gan
    from robust.errors import RobustError
    from robust.gan.checkpoint import DEMO_GENERATOR

    spec = robust_options.generator or "demo"
    if spec == "demo" and not DEMO_GENERATOR.with_name(DEMO_GENERATOR.name + ".safetensors").is_file():
        pytest.skip("the shipped demo generator is missing from this installation")
    try:
        generator = gan.load_demo(robust_device) if spec == "demo" else gan.load(spec, robust_device)
    except RobustError as exc:
        pytest.fail(f"--robust-generator={spec}: {exc}", pytrace=False)
    return generator.eval()


@pytest.fixture(scope="session")
def sage_reference_model(robust_device: Any, pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """The bundled 32x32 CNN the SAGE search runs on (trained once, cached) and its checkpoint path."""
    return _smallcnn(pytestconfig, tmp_path_factory, robust_device, "robust-example-smallcnn32-", SAGE_IMAGE_SIZE, SAGE_TRAINING)


@pytest.fixture(scope="session")
def sage_model(robust_options: RobustOptions, robust_device: Any, robust_generator: Any, request: pytest.FixtureRequest) -> Any:
    """The model the SAGE case is replayed on: ``--robust-model`` (it must take the generator's images),
    else the bundled 32x32 CNN the case was found on."""
    if robust_options.model is None:
        return request.getfixturevalue("sage_reference_model")[0]
    model = load_model(robust_options, robust_device)
    wanted = (robust_generator.img_channels, robust_generator.img_resolution, robust_generator.img_resolution)
    if tuple(model.input_size) != wanted:
        pytest.skip(f"--robust-model takes {'x'.join(map(str, model.input_size))} images; the SAGE case renders "
                    f"{'x'.join(map(str, wanted))} ones")
    return model


@pytest.fixture(scope="session")
def sage_case(robust_options: RobustOptions, robust_device: Any, robust_generator: Any, pytestconfig: pytest.Config,
              tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Any:
    """The largest failure mode a seeded SAGE search finds on the bundled 32x32 CNN, exported with
    ``export_regression`` and loaded back as a ``RegressionCase``.

    The search runs once per generator (its fingerprint), model and search settings; the exported
    case (``<mode>.json`` and the replay ``test_<mode>.py``) stays under ``.pytest_cache``, so later
    runs, and runs with a hardened ``--robust-model``, replay the same pinned failures.
    """
    pytest.importorskip("attacks", reason="SAGE comes with robust's attacks package")
    from attacks.sage import SageConfig
    from attacks.sage_regression import RegressionCase, export_regression, generator_fingerprint
    from robust.errors import InputError
    from robust.suites.sage_suite import default_oracles, is_synthetic_generator, run_sage

    G = robust_generator
    if not is_synthetic_generator(G):
        pytest.skip("the shipped oracle judges only 32x32 generators of the synthetic benchmark (the demo generator is one)")
    parts = {"generator": generator_fingerprint(G), "model": SAGE_TRAINING, "search": SAGE_SEARCH}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    folder = _cache_folder(pytestconfig, tmp_path_factory, f"robust-example-sage-case-{digest}")
    pinned = sorted(folder.glob("*.json"))
    if pinned:
        return RegressionCase.load(pinned[0])
    # Only a search needs the bundled model: a pinned case replays without training it.
    model, model_path = request.getfixturevalue("sage_reference_model")
    try:
        oracles = default_oracles(G, [], robust_device)
    except InputError as exc:
        pytest.skip(f"no oracle for the SAGE search: {exc}")
    config = SageConfig(budget_queries=SAGE_SEARCH["queries"], space=SAGE_SEARCH["space"], batch_size=SAGE_SEARCH["batch"])
    run = run_sage(G, model, oracles, config, seed=SAGE_SEARCH["seed"], regions=0, baseline=False, progress=False)
    if not run.modes:
        pytest.skip(f"SAGE found no verified failure of the bundled 32x32 CNN in {run.result.queries} generator queries "
                    f"(seed {SAGE_SEARCH['seed']}): no image the oracle accepted fooled it, so there is no failure mode to pin")
    largest = max(run.modes, key=lambda mode: mode.count)
    source = robust_options.generator or "demo"
    case_path, _ = export_regression(run.result, largest, folder, generator=G, generator_source=source, model_source=str(model_path))
    return RegressionCase.load(case_path)
