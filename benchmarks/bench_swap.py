"""Edit reach of natural transforms on real held-out ``train`` images (robust.gan.reach), before and after
the structure/appearance (swapping autoencoder) model.

Parts: ``baseline`` (identity, a full-range pixel hue rotation, the shipped StyleGAN NaTra transform in
random mode and with token swap), ``swap`` (appearance swaps of a swapping autoencoder, donors drawn
from its training images across classes, at several strengths) and ``speed`` (encode/decode throughput).

    python benchmarks/bench_swap.py --parts baseline,swap --threads 1 --json reach.json --markdown reach.md
    python benchmarks/bench_swap.py --parts swap --model /tmp/swap/snapshot-000004000 --n 512
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust.gan.reach import EditReach, ReachConfig, edit_reach, reach_setup, reach_table  # noqa: E402
from robust.provenance import command_line, hardware  # noqa: E402
from robust.seeding import derive_seed, make_generator  # noqa: E402
from robust.synthetic import SyntheticBenchmark  # noqa: E402

PARTS = ("baseline", "swap", "speed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="baseline,swap", help="comma-separated subset of: " + ", ".join(PARTS))
    p.add_argument("--n", type=int, default=512, help="held-out train-split images (benchmark seed 1)")
    p.add_argument("--model", default="demo", help="swapping-autoencoder file or snapshot (default: the shipped demo)")
    p.add_argument("--strengths", default="1.0,0.5", help="appearance-swap strengths to measure")
    p.add_argument("--donors", type=int, default=5000, help="donor pool: the first N training images (benchmark seed 0)")
    p.add_argument("--invert-steps", type=int, default=20, help="shifting steps of the StyleGAN inversion (baseline part)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    return p.parse_args(argv)


def hue_rotation(seed: int):
    """A pixel hue rotation by an angle drawn uniformly over the full circle (the reference transform)."""
    from robust.transforms import get_transform

    hue = get_transform("hue")

    def apply(images: torch.Tensor) -> torch.Tensor:
        return hue.apply(images, hue.sample(images.shape[0], make_generator(derive_seed(seed, "bench-swap-hue"))))

    return apply


def baseline_rows(setup, args: argparse.Namespace) -> list[EditReach]:
    """Identity, hue rotation, and the shipped StyleGAN NaTra transforms (privileged: generator, encoder and
    directions were trained on the decorrelated split with ground-truth tokens)."""
    from augment.natra import NaturalTransform
    from robust.gan.checkpoint import load_demo
    from robust.gan.directions import directions_for
    from robust.gan.encoder import encoder_for
    from robust.gan.inversion import invert_batch

    rows = [edit_reach(lambda x: x, setup, name="identity"), edit_reach(hue_rotation(args.seed), setup, name="pixel hue rotation, full range")]
    G = load_demo()
    directions, encoder = directions_for(G, "demo"), encoder_for(G, "demo")
    start = time.perf_counter()
    inv = invert_batch(G, setup.data.images, encoder=encoder, steps=args.invert_steps, expand_res=16, seed=args.seed)
    print(f"# inverted {len(setup.data)} images in {time.perf_counter() - start:.0f} s", flush=True)
    variants = {
        "StyleGAN NaTra random (demo G/encoder/directions, strength 2, 3 directions)": {"strength": 2.0, "per_sample": 3},
        "StyleGAN NaTra token swap only (swap=1.0, strength 0)": {"strength": 0.0, "swap": 1.0},
        "StyleGAN NaTra random + token swap (strength 2, 3 directions, swap=1.0)": {"strength": 2.0, "per_sample": 3, "swap": 1.0},
    }
    for name, options in variants.items():
        nt = NaturalTransform(G, directions, "random", expand_res=16, pixel_residual=True, **options)
        rows.append(edit_reach(lambda x, nt=nt: nt.transform(x, ws=inv.ws, residual=inv.residual, seed=args.seed).images, setup,
                               name=name, settings={**options, "invert_steps": args.invert_steps, "expand_res": 16, "pixel_residual": True}))
    return rows


def swap_rows(setup, args: argparse.Namespace) -> list[EditReach]:
    """Appearance swaps: each held-out image takes the appearance code of a random training image (any class)."""
    from robust.gan.swapping import DonorSwap, load_demo_swap, load_swap_model

    model = load_demo_swap() if args.model == "demo" else load_swap_model(args.model)
    donors = SyntheticBenchmark(size=32, seed=0).split("train", args.donors).images
    rows = [edit_reach(DonorSwap(model, donors, strength=0.0, seed=args.seed), setup, name="swap model: reconstruction (strength 0)")]
    for t in (float(s) for s in args.strengths.split(",") if s.strip()):
        rows.append(edit_reach(DonorSwap(model, donors, strength=t, seed=args.seed), setup, name=f"swap model: appearance swap, strength {t:g}",
                               settings={"strength": t, "donors": args.donors, "model": args.model}))
    return rows


def speed(args: argparse.Namespace) -> dict[str, float]:
    """Images per second of encode + decode (swap) at batch 64 on this machine."""
    from robust.gan.swapping import load_demo_swap, load_swap_model

    model = load_demo_swap() if args.model == "demo" else load_swap_model(args.model)
    x = SyntheticBenchmark(size=32, seed=1).split("train", 64).images
    with torch.no_grad():
        model.swap(x, model.encode(x.flip(0))[1], 1.0)
        start = time.perf_counter()
        for _ in range(5):
            model.swap(x, model.encode(x.flip(0))[1], 1.0)
    return {"swap_images_per_s": 5 * 64 / (time.perf_counter() - start)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from {list(PARTS)}")
    out: dict = {"command": command_line(), "hardware": hardware(torch.device("cpu")), "n": args.n, "torch": torch.__version__}
    rows: list[EditReach] = []
    if "baseline" in parts or "swap" in parts:
        setup = reach_setup(ReachConfig(n=args.n))
        if "baseline" in parts:
            rows += baseline_rows(setup, args)
        if "swap" in parts:
            rows += swap_rows(setup, args)
        out["rows"] = [r.to_dict() for r in rows]
        print(reach_table(rows), flush=True)
    if "speed" in parts:
        out["speed"] = speed(args)
        print(out["speed"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.markdown and rows:
        Path(args.markdown).write_text(reach_table(rows) + "\n")
    return out


if __name__ == "__main__":
    main()
