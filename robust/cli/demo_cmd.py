"""``robust demo``: the main job on the built-in synthetic benchmark."""
from __future__ import annotations

import time

import click

from robust.cli.common import device_option, seed_option


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="robust-demo", show_default=True, help="Folder for the results.")
@click.option("--epochs", type=click.IntRange(1, 100), default=4, show_default=True, help="Training epochs of the demo classifier.")
@seed_option
@device_option
def demo(out: str, epochs: int, seed: int, device: str) -> None:
    """Train a small classifier on the shortcut split of the synthetic benchmark and show how it breaks.

    Example: robust demo --out robust-demo
    """
    from pathlib import Path

    from robust.models import build_classifier, save_classifier
    from robust.seeding import resolve_device
    from robust.synthetic import SyntheticBenchmark
    from robust.train import fit

    dev = resolve_device(device)
    bench = SyntheticBenchmark(seed=seed)
    start = time.time()
    train = bench.split("train")
    click.echo(f"benchmark: {len(train)} training images, shortcut factors {', '.join(bench.correlated)} (strength {bench.strength})")
    clf = build_classifier("smallcnn", 10, (3, bench.size, bench.size), class_names=train.class_names, device=dev)
    fit(clf, train, epochs=epochs, seed=seed)
    Path(out).mkdir(parents=True, exist_ok=True)
    save_classifier(clf, Path(out) / "classifier")
    click.echo(f"trained smallcnn in {time.time() - start:.0f}s on {dev}")
    for split in ("test_iid", "test_shift"):
        data = bench.split(split)
        click.echo(f"  accuracy on {split:<10}: {clf.accuracy(data.images, data.labels):.3f}")
    click.echo(f"classifier written to {Path(out) / 'classifier.safetensors'}")
