"""``robust data``: look at datasets (the synthetic benchmark, digits, your files)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robust.cli.common import seed_option, with_split


@click.group()
def data() -> None:
    """Inspect and export datasets.

    \b
    Built-in names: synthetic (splits: generator, train, test_iid, test_shift, shift_<factor>),
    digits (splits: all, train, test). Paths: an image folder (one sub-folder per class), .npz, .pt,
    with options: shapes/train,size=48 (or 48x64: resized keeping the aspect ratio, centre crop),
    shapes/train,channels=1.
    """


_SHORT = {"light_strength": "light", "obj_hue": "obj", "bg_hue": "bg", "scale": "scale", "rotation": "rot"}


def _load(name: str, split: str | None, n: int | None, seed: int):
    from robust.data import load_dataset

    return load_dataset(with_split(name, split), n=n, seed=seed)


@data.command()
@click.argument("name")
@click.option("--split", default=None, help="Split of a built-in dataset (synthetic: test_shift by default).")
@click.option("--out", type=click.Path(dir_okay=False), default="preview.png", show_default=True, help="PNG file to write.")
@click.option("-n", "--n", "count", type=click.IntRange(1, 400), default=40, show_default=True, help="Number of images.")
@click.option("--columns", type=click.IntRange(1, 40), default=8, show_default=True)
@seed_option
def preview(name: str, split: str | None, out: str, count: int, columns: int, seed: int) -> None:
    """Write an image grid with class and factor annotations.

    Example: robust data preview synthetic --split train --out grid.png
    """
    from robust.io import check_writable
    from robust.plotting import image_grid_figure, save_figure
    from robust.synthetic import FACTORS

    check_writable(Path(out).parent, "--out")
    dataset = _load(name, split, count, seed)
    captions = []
    for i in range(len(dataset)):
        lines = [dataset.class_names[int(dataset.labels[i])]]
        if dataset.factors:
            parts = []
            for f in FACTORS:
                if f.name not in dataset.factors or f.name in ("texture_phase", "light_angle", "mark_hue", "pos_x", "pos_y"):
                    continue
                value = dataset.factors[f.name][i]
                parts.append(f.categories[int(value)] if f.is_categorical else f"{_SHORT.get(f.name, f.name)}={float(value):.2f}")
            lines += [" ".join(parts[j : j + 2]) for j in range(0, len(parts), 2)]
        captions.append("\n".join(lines))
    fig = image_grid_figure(dataset.images, captions, columns=columns, title=f"{dataset.name} ({len(dataset)} images)")
    path = save_figure(fig, out)
    click.echo(f"wrote {path} ({len(dataset)} images of {dataset.name})")


@data.command()
@click.argument("name")
@click.option("--split", default=None, help="Split of a built-in dataset.")
@seed_option
def info(name: str, split: str | None, seed: int) -> None:
    """Print size, classes, image shape and fingerprint of a dataset (for a folder: the sizes of its images).

    Example: robust data info digits --split test
    """
    from robust.data import parse_data_spec, scan_image_folder

    spec = with_split(name, split)
    parsed = parse_data_spec(spec)
    scan = scan_image_folder(parsed.source) if parsed.builtin is None and Path(parsed.source).is_dir() else None
    if scan is not None and len(scan.sizes) > 1 and parsed.size() is None:
        # Not loadable as one tensor yet: describe the files and say how to resize them.
        click.echo(f"{scan.root.name}: {len(scan.files)} image files in {len(scan.classes)} classes")
        _class_counts(scan.classes, scan.counts())
        _files(scan)
        click.echo(f"several sizes: {scan.size_hint()}")
        return
    dataset = _load(name, split, None, seed)
    d = dataset.describe()
    click.echo(f"{d['name']}: {d['n']} images, shape {'x'.join(map(str, d['image_shape']))}, fingerprint {d['fingerprint']}")
    _class_counts(dataset.class_names, dataset.labels.bincount(minlength=dataset.num_classes).tolist())
    if d["factors"]:
        click.echo("factors: " + ", ".join(d["factors"]))
    if scan is not None:
        _files(scan)
    if dataset.preprocessing:
        click.echo(f"preprocessing: {dataset.preprocessing}")


def _class_counts(names: list[str], counts: list[int]) -> None:
    for name_, count in zip(names, counts):
        click.echo(f"  {name_:>12}: {count}")


def _files(scan: Any) -> None:
    modes = ", ".join(f"{mode} ({k})" for mode, k in scan.modes.most_common())
    click.echo(f"files: {scan.sizes_text()}; colour modes: {modes}")


@data.command()
@click.argument("name")
@click.option("--split", default=None, help="Split of a built-in dataset.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help=".npz file to write.")
@click.option("-n", "--n", "count", type=click.IntRange(1), default=None, help="Keep a class-balanced subset of this size.")
@seed_option
def export(name: str, split: str | None, out: str, count: int | None, seed: int) -> None:
    """Write a dataset (with ground-truth factors, if any) to a .npz file.

    Example: robust data export synthetic --split test_shift --out shift.npz
    """
    from robust.io import check_writable

    check_writable(Path(out).parent, "--out")
    dataset = _load(name, split, count, seed)
    path = dataset.save_npz(out)
    click.echo(f"wrote {path} ({len(dataset)} images)")
