"""Copies of the object that geometric transforms draw into the frame, per border mode, on the synthetic benchmark.

Renders the benchmark's object masks (its ground truth), warps them as the transform warps the image
(scale 0.6, translation by a quarter, rotation by 45 degrees, the largest tilt) with each border
(``edge``: the default constant fill; ``zeros``; ``reflect``) and counts the connected regions of
more than half coverage: one is the object itself, more are copies.

    python benchmarks/bench_borders.py --n 200 --size 48
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust.synthetic import SyntheticBenchmark, object_mask  # noqa: E402
from robust.transforms import get_transform  # noqa: E402
from robust.transforms.functional import BORDERS  # noqa: E402

SETTINGS = (("scale", {"factor": 0.6}), ("translation", {"dx": 0.25, "dy": 0.25}), ("rotation", {"angle": 45.0}),
            ("perspective", {"tilt_x": 0.4, "tilt_y": 0.4}))


def regions(masks: torch.Tensor) -> torch.Tensor:
    """Connected regions (8-connectivity) of coverage above one half, per mask ``[N, H, W]``."""
    from scipy import ndimage

    return torch.tensor([ndimage.label(m.numpy() > 0.5, structure=[[1, 1, 1]] * 3)[1] for m in masks])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    classes, factors = SyntheticBenchmark(size=args.size, seed=0).sample("test_iid", args.n)
    masks = object_mask(classes, factors, args.size)[:, None]
    rows = []
    print(f"{'transform':<46}" + "".join(f"{b:>22}" for b in BORDERS))
    for name, values in SETTINGS:
        cells = []
        for border in BORDERS:
            tf = get_transform(f"{name},border={border}")
            counts = regions(tf(masks, tf.expand(values, args.n))[:, 0])
            cells.append({"border": border, "mean_regions": float(counts.float().mean()), "with_copies": float((counts > 1).float().mean())})
        rows.append({"transform": name, "values": values, "borders": cells})
        label = f"{name} {values}"
        print(f"{label:<46}" + "".join(f"{c['mean_regions']:>9.2f} ({100 * c['with_copies']:4.0f}% >1)" for c in cells))
    print(f"(untransformed: {float(regions(masks[:, 0]).float().mean()):.2f} regions per image)")
    out = {"n": args.n, "size": args.size, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
