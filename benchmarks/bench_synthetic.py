"""Synthetic benchmark figures: rendering throughput, and the shortcut gap of a plain classifier.

Rendering: images/s at 32x32 on one CPU thread (target >= 10,000) and on the chosen device.
Gap (--train): a smallcnn trained with plain ERM on the shortcut-correlated `train` split vs the same
network trained on the diverse `generator` split, evaluated on test_iid, test_shift and every
shift_<factor> set of the correlated factors. Targets: ERM >= 95% on test_iid and clearly less on
test_shift; diverse >= 95% on test_shift.

    python benchmarks/bench_synthetic.py --train --json out.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from robust.models import build_classifier
from robust.seeding import resolve_device
from robust.synthetic import SyntheticBenchmark, render
from robust.train import fit


def render_rate(n: int, size: int, device: torch.device, repeats: int = 3) -> float:
    bench = SyntheticBenchmark(size=size)
    classes, factors = bench.sample("generator", n)
    classes = classes.to(device)
    factors = {k: v.to(device) for k, v in factors.items()}
    render(classes[:64], {k: v[:64] for k, v in factors.items()}, size)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        render(classes, factors, size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train", action="store_true", help="also measure the ERM shortcut gap (minutes on a CPU)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    out: dict[str, object] = {"machine": platform.processor() or platform.machine(), "device": str(device),
                              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out["render_img_per_s_cpu_1thread_32px"] = render_rate(10_000, 32, torch.device("cpu"))
    torch.set_num_threads(threads)
    if device.type == "cuda":
        out["render_img_per_s_cuda_32px"] = render_rate(100_000, 32, device)
    print(f"render 32x32: {out['render_img_per_s_cpu_1thread_32px']:,.0f} img/s on one CPU thread (target >= 10,000)")
    if "render_img_per_s_cuda_32px" in out:
        print(f"render 32x32: {out['render_img_per_s_cuda_32px']:,.0f} img/s on {device}")

    if args.train:
        bench = SyntheticBenchmark(seed=args.seed)
        evals = ["test_iid", "test_shift"] + [f"shift_{f}" for f in bench.correlated]
        test_sets = {name: bench.split(name, args.n_test) for name in evals}
        results = {}
        for recipe, split in (("erm", "train"), ("diverse", "generator")):
            data = bench.split(split, args.n_train)
            clf = build_classifier("smallcnn", 10, (3, 32, 32), class_names=data.class_names, device=device)
            torch.manual_seed(args.seed)
            start = time.perf_counter()
            fit(clf, data, epochs=args.epochs, seed=args.seed, progress=False)
            seconds = time.perf_counter() - start
            accs = {name: clf.accuracy(d.images, d.labels) for name, d in test_sets.items()}
            results[recipe] = {"train_split": split, "train_seconds": seconds, **accs}
            print(f"{recipe:>8} (trained on {split}, {seconds:.0f}s): " + ", ".join(f"{k} {v:.3f}" for k, v in accs.items()))
        gap = results["erm"]["test_iid"] - results["erm"]["test_shift"]
        print(f"ERM gap test_iid - test_shift: {gap:.3f}; diverse on test_shift: {results['diverse']['test_shift']:.3f}")
        out["gap"] = {"epochs": args.epochs, "n_train": args.n_train, "n_test": args.n_test, "correlated": list(bench.correlated),
                      "strength": bench.strength, "results": results, "erm_gap": gap}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
