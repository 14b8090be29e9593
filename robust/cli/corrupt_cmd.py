"""``robust corrupt``: write corrupted copies of a dataset (frozen ImageNet-C style test sets)."""
from __future__ import annotations


import click

from robust.cli.common import device_option, progress, quiet_option, seed_option, threads_option, with_split

def parse_corruptions(text: str) -> list[str]:
    """``--corruptions``: corruptions or sets (all, benchmark, heldout) joined by ``+`` (or, as before, commas)."""
    from augment.corruptions import parse_corruption_set
    from robust.registry import Spec

    return parse_corruption_set(Spec("corruptions", options={"names": _plus_joined(text)}), "--corruptions")[0]


def parse_severities(text: str) -> list[float]:
    """``--severities``: values in (0, 5] joined by ``+`` (or, as before, commas), sorted without repeats."""
    from augment.corruptions import parse_corruption_set
    from robust.registry import Spec

    return parse_corruption_set(Spec("corruptions", options={"severities": _plus_joined(text)}), "--severities")[1]


def _plus_joined(text: str) -> str:
    return "+".join(part for part in (p.strip() for p in text.replace(",", "+").split("+")) if part)


@click.command()
@click.argument("data")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write (one sub-folder per corruption).")
@click.option("--split", default=None, help="Split of a built-in dataset (synthetic: test_shift by default).")
@click.option("--corruptions", "corruption_spec", default="all", show_default=True,
              help="Corruptions or sets joined by +: all, benchmark (the 15 of ImageNet-C), heldout (the 4 extra), fog+snow, heldout+fog.")
@click.option("--severities", "severity_spec", default="1+2+3+4+5", show_default=True, help="Severities in (0, 5] joined by +.")
@click.option("-n", "--n", "count", type=click.IntRange(1), default=None, help="Keep a seeded, class-balanced subset of this size.")
@click.option("--format", "fmt", type=click.Choice(["npz", "folder"]), default="npz", show_default=True,
              help="npz: <corruption>/<severity>.npz; folder: <corruption>/<severity>/<class>/<index>.png.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@quiet_option
@threads_option
@seed_option
@device_option
def corrupt(data: str, out_dir: str, split: str | None, corruption_spec: str, severity_spec: str, count: int | None,
            fmt: str, batch_size: int, quiet: bool, threads: int | None, seed: int, device: str) -> None:
    """Write corrupted copies of DATA for every corruption x severity, plus a manifest.json.

    Image i of the dataset always gets the noise seed derived from (--seed, corruption, i), so the
    files are reproducible whatever the batch size or device. Load a result with
    robust.data.load_dataset("OUT/fog/3.npz") or point any robust command at it.

    Example: robust corrupt digits --split test --out digits-c --corruptions benchmark --severities 1+3+5
    """
    import torch

    from augment.corruptions import fine_factor, get_corruption, image_seeds, spatial_scale
    from robust.data import ImageSet, load_dataset
    from robust.io import check_writable, write_json, write_png
    from robust.seeding import resolve_device

    names = parse_corruptions(corruption_spec)
    severities = parse_severities(severity_spec)
    out = check_writable(out_dir, "--out")
    dev = resolve_device(device)
    dataset = load_dataset(with_split(data, split), n=count, seed=seed)
    n = len(dataset)
    h, w = dataset.size
    files: dict[str, dict[str, str]] = {}
    steps = len(names) * len(severities) * ((n + batch_size - 1) // batch_size)
    bar = progress(total=steps, desc="corrupt", unit="batches", enabled=False if quiet else None)
    try:
        for name in names:
            transform = get_corruption(name)
            files[name] = {}
            for severity in severities:
                chunks = []
                for start in range(0, n, batch_size):
                    x = dataset.images[start : start + batch_size].to(dev)
                    params = {"severity": torch.full((x.shape[0],), float(severity), device=dev),
                              "seed": image_seeds(seed, name, x.shape[0], start, dev)}
                    chunks.append(transform(x, params).cpu())
                    bar.update(1)
                images = torch.cat(chunks)
                tag = f"{severity:g}"
                if fmt == "npz":
                    result = ImageSet(images, dataset.labels, dataset.class_names, dataset.factors, f"{dataset.name}-{name}-{tag}")
                    path = result.save_npz(out / name / f"{tag}.npz")
                else:
                    path = out / name / tag
                    for i in range(n):
                        label = dataset.class_names[int(dataset.labels[i])]
                        write_png(path / label / f"{i:06d}.png", images[i])
                files[name][tag] = str(path.relative_to(out))
    finally:
        bar.close()
    manifest = {
        "format": "robust-corrupted-v1",
        "data": dataset.describe(),
        "seed": seed,
        "corruptions": names,
        "severities": severities,
        "image_format": fmt,
        "resolution": {"height": h, "width": w, "spatial_scale": spatial_scale(h, w), "fine_factor": fine_factor(h, w)},
        "files": files,
    }
    write_json(out / "manifest.json", manifest)
    click.echo(f"wrote {len(names)} corruptions x {len(severities)} severities of {n} images ({dataset.name}) to {out}")
