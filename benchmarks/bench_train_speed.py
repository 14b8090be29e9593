"""Training-step cost of every recipe relative to ``erm``, through the real loop (robust.train.harden).

Each recipe trains for ``--steps`` steps at ``--batch-size`` on ``--size`` px synthetic images; the
first ``--warmup`` steps are left out; the median step time is reported with its ratio to ``erm``
measured in the same process. Target: ``natra`` random mode <= 1.5x ``erm`` on a GPU at batch 512,
32x32.

    python benchmarks/bench_train_speed.py --device cpu --batch-size 64 --steps 6 --size 16
    python benchmarks/bench_train_speed.py --device cuda --json speed.json          # batch 512, 32x32
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust.models import build_classifier  # noqa: E402
from robust.seeding import resolve_device  # noqa: E402
from robust.synthetic import SyntheticBenchmark  # noqa: E402
from robust.train import harden  # noqa: E402
from robust.train.recipes import RECIPES  # noqa: E402

DEFAULT_RECIPES = ["erm", "oracle", "classic", "augmix", "corrupt", "pgd:linf@4/255,steps=5", "pgd:linf@4/255,steps=5,trades=6",
                   "natra:random", "natra:worst_of_k", "natra:gradient", "natra:random+classic"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=";".join(DEFAULT_RECIPES), help="semicolon-separated recipe specs (erm always runs first)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--arch", default="smallcnn")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--generator", default=None, help="generator checkpoint for natra (default: the shipped demo generator)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def time_recipe(spec: str, data, args, device: torch.device, generator) -> list[float]:
    torch.manual_seed(0)
    clf = build_classifier(args.arch, 10, (3, args.size, args.size), class_names=data.class_names, device=device,
                           **({"width": args.width} if args.arch in ("smallcnn", "preact_resnet") else {}))
    stamps: list[float] = []

    def on_step(step: int, loss: float) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    amp = None if args.amp == "auto" else args.amp == "on"
    harden(clf, data, spec, epochs=1, batch_size=args.batch_size, device=device, generator=generator, on_step=on_step, amp=amp,
           progress=False, warmup_steps=0)
    return [b - a for a, b in zip(stamps[args.warmup:], stamps[args.warmup + 1:])]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    specs = ["erm"] + [s.strip() for s in args.recipes.split(";") if s.strip() and s.strip() != "erm"]
    if "natra" not in RECIPES:
        dropped = [s for s in specs if "natra" in s]
        specs = [s for s in specs if "natra" not in s]
        if dropped:
            print(f"# natra is not available in this checkout: skipped {dropped}")
    generator = None
    if any("natra" in s for s in specs):
        import robust.gan as gan

        generator = gan.load(args.generator) if args.generator else gan.load_demo()
    n = args.batch_size * (args.steps + 1)
    data = SyntheticBenchmark(size=args.size, seed=0).split("train", n)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    print(f"# step time, {args.arch} width {args.width}, batch {args.batch_size}, {args.size}x{args.size}, {args.steps} steps "
          f"({args.warmup} warm-up), {name}")
    results = {}
    for spec in specs:
        times = time_recipe(spec, data, args, device, generator)
        results[spec] = {"median_ms": 1000 * statistics.median(times), "mean_ms": 1000 * statistics.fmean(times), "steps": len(times)}
    base = results["erm"]["median_ms"]
    print("| recipe | ms / step (median) | x erm |")
    print("|---|---|---|")
    for spec, r in results.items():
        r["ratio"] = r["median_ms"] / base
        print(f"| {spec} | {r['median_ms']:.1f} | {r['ratio']:.2f} |")
    report = {"date": time.strftime("%Y-%m-%d"), "machine": name, "command": "python " + " ".join(sys.argv), "args": vars(args),
              "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
