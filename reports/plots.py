"""Report plots (matplotlib, Agg, no pyplot state): curves, bars, per-class breakdowns, confusion matrices.

Every function returns PNG bytes drawn in one house style (colour-blind-safe palette, light grid,
accuracy axes fixed to [0, 1]) so plots from different suites read the same way. PNGs carry no
version metadata, so the same data gives the same bytes.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Iterator

from robust.results import Curve

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
PASS_COLOR, FAIL_COLOR, NEUTRAL_COLOR = "#009E73", "#D55E00", "#0072B2"
STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "text.usetex": False,
}
SMALL_MULTIPLES_ABOVE = 6


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib
    from cycler import cycler

    style = {**STYLE, "axes.prop_cycle": cycler(color=PALETTE)}
    with matplotlib.rc_context(style):
        yield


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def label(text: Any) -> str:
    """User text as a literal matplotlib label (``$`` would otherwise start mathtext)."""
    return str(text).replace("$", r"\$")


def _is_fraction(values: Sequence[float]) -> bool:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and all(-1e-9 <= v <= 1 + 1e-9 for v in finite)


def _clean(values: Sequence[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def curves_png(curves: Sequence[Curve], title: str = "", grid: bool = False) -> bytes:
    """Lines of ``curves``: one shared axes up to six lines, small multiples (shared y) beyond or with ``grid``."""
    with _style():
        n = len(curves)
        fraction = all(_is_fraction(_clean(c.y)) for c in curves)
        if n <= SMALL_MULTIPLES_ABOVE and not grid:
            fig = _figure(6.0, 3.4)
            ax = fig.add_subplot(1, 1, 1)
            for c in curves:
                ax.plot(_clean(c.x), _clean(c.y), marker="o", markersize=3.5, linewidth=1.6, label=label(c.name))
            ax.set_xlabel(label(curves[0].x_label) if curves else "")
            ax.set_ylabel(label(curves[0].y_label) if curves else "")
            if fraction:
                ax.set_ylim(-0.02, 1.02)
            if n > 1:
                ax.legend(loc="best", frameon=False)
            if title:
                ax.set_title(label(title))
            return _png(fig)
        cols = min(5, n)
        rows = math.ceil(n / cols)
        fig = _figure(2.0 * cols, 1.7 * rows + 0.3)
        axes = fig.subplots(rows, cols, sharex=False, sharey=True, squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i >= n:
                ax.axis("off")
                continue
            c = curves[i]
            ax.plot(_clean(c.x), _clean(c.y), marker="o", markersize=2.5, linewidth=1.4, color=PALETTE[0])
            ax.set_title(label(c.name), fontsize=8)
            if fraction:
                ax.set_ylim(-0.02, 1.02)
            if i % cols == 0:
                ax.set_ylabel(label(c.y_label))
            if i >= n - cols:
                ax.set_xlabel(label(c.x_label))
        if title:
            fig.suptitle(label(title))
        return _png(fig)


def bars_png(labels: Sequence[str], values: Sequence[float], title: str = "", value_label: str = "accuracy",
             reference: float | None = None) -> bytes:
    """Horizontal bars with their values written at the end; ``reference`` draws a dashed line (e.g. clean accuracy)."""
    with _style():
        n = len(labels)
        fig = _figure(6.0, 0.8 + 0.28 * max(n, 2))
        ax = fig.add_subplot(1, 1, 1)
        vals = _clean(values)
        positions = list(range(n))[::-1]
        colors = [NEUTRAL_COLOR if reference is None or not math.isfinite(v) or v >= reference - 0.05 else FAIL_COLOR for v in vals]
        ax.barh(positions, [0 if math.isnan(v) else v for v in vals], color=colors, height=0.7)
        ax.set_yticks(positions, [label(t) for t in labels])
        for y, v in zip(positions, vals):
            ax.text(0 if math.isnan(v) else v, y, " n/a" if math.isnan(v) else f" {v:.3f}", va="center", fontsize=7.5)
        if reference is not None and math.isfinite(reference):
            ax.axvline(reference, linestyle="--", color="#555555", linewidth=1)
        if _is_fraction(vals):
            ax.set_xlim(0, 1.12)
        ax.set_xlabel(label(value_label))
        ax.grid(axis="y", visible=False)
        if title:
            ax.set_title(label(title))
        return _png(fig)


def per_class_png(table: Mapping[str, Mapping[str, float]], title: str = "") -> bytes:
    """Grouped bars: one group per class, one bar per column of ``table`` (column -> class -> accuracy)."""
    with _style():
        columns = list(table)
        classes: list[str] = []
        for col in columns:
            classes += [c for c in table[col] if c not in classes]
        n, k = len(classes), max(len(columns), 1)
        fig = _figure(6.0, 0.9 + 0.22 * max(n, 2) * min(k, 3) ** 0.5)
        ax = fig.add_subplot(1, 1, 1)
        height = 0.8 / k
        for j, col in enumerate(columns):
            ys = [n - 1 - i + (k - 1 - j - (k - 1) / 2) * height for i in range(n)]
            xs = [_clean([table[col].get(c)])[0] for c in classes]
            ax.barh(ys, [0 if math.isnan(x) else x for x in xs], height=height, label=label(col), color=PALETTE[j % len(PALETTE)])
        ax.set_yticks([n - 1 - i for i in range(n)], [label(c) for c in classes])
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("accuracy")
        ax.grid(axis="y", visible=False)
        if k > 1:
            ax.legend(loc="lower right", frameon=True, framealpha=0.9)
        if title:
            ax.set_title(label(title))
        return _png(fig)


def confusion_png(matrix: Sequence[Sequence[float]], labels: Sequence[str], title: str = "confusion (row: true class)") -> bytes:
    """A row-normalised confusion matrix; counts are written in the cells for up to 12 classes."""
    import numpy as np

    with _style():
        counts = np.asarray(matrix, dtype=float)
        rows = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        n = len(labels)
        side = min(2.2 + 0.38 * n, 9.0)
        fig = _figure(side + 0.8, side)
        ax = fig.add_subplot(1, 1, 1)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.grid(False)
        names = [label(t) for t in labels]
        ax.set_xticks(range(n), names, rotation=60, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    if counts[i, j]:
                        ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                                color="white" if share[i, j] > 0.55 else "black")
        fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
        ax.set_title(label(title))
        return _png(fig)
