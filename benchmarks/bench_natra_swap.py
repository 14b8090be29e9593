"""Edit reach (robust.gan.reach) of the NaTra appearance-swap transform's modes on real held-out ``train``
images, in the honest protocol: the donors are the shortcut ``train`` split's appearance codes and
labels (benchmark seed 0), the searches attack an ERM classifier trained on that split; the oracle
and the factor regressor only measure.

Rows: random swaps (strength drawn in [0, 1], and full swaps), with and without the pixel residual;
worst-of-k over donors; gradient ascent on the strength (and on a convex mix of donors); random
moves along the PCA directions of the training set's appearance codes.

    python benchmarks/bench_natra_swap.py --model runs/swap/swap_model --threads 1 --json reach.json --markdown reach.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment.swap import AppearanceSwap, DonorBank  # noqa: E402
from robust.gan.codes_cache import SwapCodes, encode_images  # noqa: E402
from robust.gan.directions import appearance_directions  # noqa: E402
from robust.gan.natural import load_model  # noqa: E402
from robust.gan.reach import EditReach, ReachConfig, edit_reach, reach_setup, reach_table  # noqa: E402
from robust.provenance import command_line, hardware  # noqa: E402
from robust.synthetic import SyntheticBenchmark  # noqa: E402

# name -> (mode, AppearanceSwap options); "directions" rows move along PCA directions without swapping.
ROWS = {
    "random, t in [0, 1]": ("random", {}),
    "random, t = 1": ("random", {"min_strength": 1.0}),
    "random, t = 1, pixel residual": ("random", {"min_strength": 1.0, "pixel_residual": True}),
    "random, t in [0, 1], pixel residual": ("random", {"pixel_residual": True}),
    "worst_of_k (k=4), t in [0, 1]": ("worst_of_k", {"k": 4}),
    "worst_of_k (k=4), t = 1": ("worst_of_k", {"k": 4, "min_strength": 1.0}),
    "gradient (5 steps) from t in [0, 1]": ("gradient", {"steps": 5}),
    "gradient (5 steps), mix of k=4 donors": ("gradient", {"steps": 5, "k": 4, "mix": True}),
    "directions: PCA (8), random, 1 per image": ("random", {"directions": 8}),
    "directions: PCA (8), random, 3 per image": ("random", {"directions": 8, "per_sample": 3}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo-swap", help="a structure/appearance model file or snapshot (default: the shipped one)")
    p.add_argument("--n", type=int, default=512, help="held-out train-split images (benchmark seed 1)")
    p.add_argument("--donors", type=int, default=5000, help="donor bank: the first N shortcut train images (benchmark seed 0)")
    p.add_argument("--rows", default="all", help="comma-separated row numbers (1-based) or all")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the ERM classifier the searches attack")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    return p.parse_args(argv)


def erm_classifier(train, epochs: int, seed: int):
    """A SmallCNN trained with ERM on the shortcut train split (what a NaTra search attacks early in training)."""
    from robust.models import build_classifier
    from robust.train import fit

    clf = build_classifier("smallcnn", train.num_classes, (train.channels, *train.size), class_names=train.class_names, width=16, seed=seed)
    fit(clf, train, epochs=epochs, batch_size=128, seed=seed, progress=False)
    return clf


def swap_setup(model_path: str, n: int, donors: int, threads: int | None):
    """The model, the reach setup on ``n`` held-out images, the first ``donors`` shortcut train images,
    their codes and the encoding time (shared with bench_swap_structure.py)."""
    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_path, kind="swap")
    setup = reach_setup(ReachConfig(n=n))
    train = SyntheticBenchmark(size=32, seed=0).split("train", donors)
    start = time.perf_counter()
    codes = SwapCodes(*encode_images(model, train.images))
    return model, setup, train, codes, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model, setup, train, codes, encode_seconds = swap_setup(args.model, args.n, args.donors, args.threads)
    bank = DonorBank.from_codes(codes, train)
    pca = appearance_directions(model, codes.appearance, "pca", 8)
    clf = erm_classifier(train, args.epochs, args.seed)
    labels = setup.data.labels
    chosen = list(ROWS) if args.rows == "all" else [list(ROWS)[int(i) - 1] for i in args.rows.split(",")]
    rows: list[EditReach] = []
    for name in chosen:
        mode, options = ROWS[name]
        options = dict(options)
        directions = pca.select(list(range(options.pop("directions")))) if "directions" in options else None
        swap = AppearanceSwap(model, None if directions is not None else bank, mode, directions=directions, classifier=clf, **options)
        rows.append(edit_reach(lambda x, swap=swap: swap.transform(x, labels, seed=args.seed).images, setup, name=name,
                               settings={"mode": mode, **ROWS[name][1]}))
        print(reach_table(rows[-1:]).splitlines()[-1], flush=True)
    out = {"command": command_line(), "hardware": hardware(torch.device("cpu")), "model": str(args.model), "n": args.n,
           "donors": args.donors, "encode_seconds_per_image": encode_seconds / len(train), "torch": torch.__version__,
           "erm_train_accuracy": clf.accuracy(train.images, train.labels), "rows": [r.to_dict() for r in rows]}
    print(reach_table(rows), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(reach_table(rows) + "\n")
    return out


if __name__ == "__main__":
    main()
