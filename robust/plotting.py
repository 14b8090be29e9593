"""Figures shared by the CLI and the reports: image grids with captions (matplotlib, Agg)."""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def image_grid_figure(images: torch.Tensor, captions: Sequence[str] | None = None, columns: int = 8, title: str | None = None,
                      cell: float = 1.45):
    """A matplotlib figure showing ``images`` ``[N, C, H, W]`` in ``[0, 1]`` with a caption under each."""
    plt = _pyplot()
    n = images.shape[0]
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    lines = max((c.count("\n") + 1 for c in captions), default=0) if captions else 0
    fig, axes = plt.subplots(rows, columns, figsize=(cell * columns, (cell + 0.16 * lines) * rows + (0.35 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        image = images[i].detach().float().cpu().clamp(0, 1)
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(image[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
        if captions:
            ax.set_title(captions[i], fontsize=6.5, pad=2, loc="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.3)
    return fig


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure atomically (PNG unless the suffix says otherwise) and close it."""
    from robust.io import write_bytes

    plt = _pyplot()
    buffer = io.BytesIO()
    suffix = Path(path).suffix.lstrip(".") or "png"
    fig.savefig(buffer, format=suffix, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return write_bytes(path, buffer.getvalue())
