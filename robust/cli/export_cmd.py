"""``robust export``: write a trained classifier to ONNX and prove onnxruntime gives the same logits."""
from __future__ import annotations

import click


@click.command()
@click.argument("model")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), required=True, help="The .onnx file to write.")
@click.option("--data", "data_spec", default=None,
              help="Check parity on images of this dataset (e.g. synthetic:test_shift) as well as on random images.")
@click.option("-n", "--n", "n", type=click.IntRange(1, 10_000), default=64, show_default=True, help="Images of --data used for the check.")
@click.option("--tolerance", type=click.FloatRange(0, min_open=True), default=1e-4, show_default=True,
              help="Largest allowed absolute difference between torch and onnxruntime logits.")
@click.option("--opset", type=click.IntRange(13, 23), default=17, show_default=True)
def export(model: str, onnx_path: str, data_spec: str | None, n: int, tolerance: float, opset: int) -> None:
    """Export MODEL (a robust checkpoint such as runs/x/best) to ONNX, normalisation included.

    The file is declared written only after onnxruntime reproduces the torch logits within
    --tolerance; otherwise nothing is left behind and the command fails.

    Example: robust export runs/natra/best --onnx natra.onnx --data synthetic:test_shift
    """
    from pathlib import Path

    import torch

    from robust.io import check_writable
    from robust.models import export_onnx, load_classifier

    check_writable(Path(onnx_path).parent, "--onnx")
    clf = load_classifier(model, device="cpu")
    probe = torch.rand(16, *clf.input_size, generator=torch.Generator().manual_seed(0))
    if data_spec is not None:
        from robust.data import load_dataset

        data = load_dataset(data_spec, n=n, size=clf.input_size[1:], channels=clf.input_size[0])
        clf.check_compatible(data)
        probe = torch.cat([probe, data.images])
    result = export_onnx(clf, onnx_path, opset=opset, check=True, tolerance=tolerance, sample=probe)
    click.echo(f"wrote {result['path']}: onnxruntime logits match torch on {probe.shape[0]} images "
               f"(max abs diff {result['max_abs_diff']:.2e} <= {tolerance:g})")
