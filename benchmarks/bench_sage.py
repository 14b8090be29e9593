"""SAGE on the synthetic benchmark: verified failures per generator query against random sampling, ground truth, modes.

Classifiers of the same architecture meet the demo generator: one trained on the shortcut split
``train`` (ERM: it learns object hue and background texture as shortcuts), one trained on
``generator`` renders (every factor independent: diverse data), and a briefly trained diverse one
(``weak``: rare failures, the regime where search beats sampling). For each, SAGE searches with a
budget of generator queries and random sampling of (prompt, z) gets the same budget and the same
checks (oracle, token verifier, in-distribution prior). Printed: verified failures per 1,000
queries and their ratio (bar: >= 10x for ERM), the share of failures that the benchmark's own
renderer confirms when the failure mode's named factors are re-rendered with the rest random (bar:
>= 90%), whether the largest modes name the shortcut factors, the diverse model's counts (bar: far
fewer), time to first failure and failures per minute.

    python benchmarks/bench_sage.py --budget-queries 2000 --device cpu --json sage.json
    python benchmarks/bench_sage.py --generator /path/snapshot.json --cache /tmp/sage-clf   # another generator
    python benchmarks/bench_sage.py --generator renderer    # the benchmark's own renderer as a perfect generator

``--generator renderer`` wraps :func:`robust.synthetic.render` in the generator interface (z: the
ten continuous factors through the normal CDF; prompt: class, texture, fill, mark): a generator
without artefacts, which separates the search's quality from the trained generator's.
Classifiers are trained once (``--epochs`` on ``--n-train`` images) and cached in ``--cache``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust.models import build_classifier, load_classifier, save_classifier  # noqa: E402
from robust.seeding import resolve_device  # noqa: E402
from robust.synthetic import CLASS_NAMES, DEFAULT_CORRELATED, FACTORS, SyntheticBenchmark, render  # noqa: E402


class RendererGenerator(torch.nn.Module):
    """The benchmark's renderer behind the generator interface: ``w = [z, c]``, images rendered exactly.

    ``z`` holds the continuous factors as standard normals (factor = low + (high - low) * Phi(z));
    ``c`` the one-hot class, texture, fill and mark (arg-max per group when rendering).
    """

    def __init__(self, size: int = 32):
        super().__init__()
        from robust.gan import Conditioning
        from robust.synthetic import FILLS, MARKS, TEXTURES

        self.conditioning = Conditioning([("class", list(CLASS_NAMES)), ("texture", list(TEXTURES)), ("fill", list(FILLS)),
                                          ("mark", list(MARKS))])
        self.continuous = [f for f in FACTORS if not f.is_categorical]
        self.z_dim, self.c_dim = len(self.continuous), self.conditioning.c_dim
        self.w_dim, self.num_ws = self.z_dim + self.c_dim, 1
        self.img_resolution, self.img_channels = size, 3
        self.mapping = _ConcatMapping(self.w_dim)

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        w = ws[:, 0]
        u = torch.special.ndtr(w[:, : self.z_dim])
        factors = {f.name: f.low + (f.high - f.low) * u[:, i] for i, f in enumerate(self.continuous)}
        tokens = self.conditioning.decode(w[:, self.z_dim:])
        for name in ("texture", "fill", "mark"):
            factors[name] = tokens[name]
        return render(tokens["class"], factors, self.img_resolution) * 2 - 1

    @staticmethod
    def to_unit(x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1)


class _ConcatMapping(torch.nn.Module):
    def __init__(self, w_dim: int):
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0, **_: Any) -> torch.Tensor:
        return torch.cat([z * truncation_psi, c.to(z.dtype)], dim=1)[:, None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="demo", help="'demo' (the shipped generator) or a generator checkpoint / training snapshot")
    p.add_argument("--oracle", default="synthetic", help="'synthetic' (the shipped oracle) or a classifier checkpoint")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "robust-bench-sage"), help="folder for the trained classifiers")
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--budget-queries", type=int, default=2000)
    p.add_argument("--budget-seconds", type=float, default=None)
    p.add_argument("--space", default="w", choices=["z", "w", "w+"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--step-size", type=float, default=0.25)
    p.add_argument("--threshold", type=float, default=0.8, help="oracle probability a failure needs")
    p.add_argument("--no-adaptive-restart", action="store_true", help="chains always run all --steps (the ablation)")
    p.add_argument("--regions", type=int, default=16, help="failures whose failure region is measured")
    p.add_argument("--models", default="erm,diverse,weak", help="which classifiers: erm (shortcut split), diverse (generator split), "
                   "weak (generator split, half the images)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


# name -> (split, training images, epochs): the shortcut-trained model, the diverse one, and a briefly
# trained diverse one (half the images) whose failures are rare but exist (where a search can beat sampling by a wide margin).
KINDS = {
    "erm": lambda a: ("train", a.n_train, a.epochs),
    "diverse": lambda a: ("generator", a.n_train, a.epochs),
    "weak": lambda a: ("generator", max(500, a.n_train // 2), a.epochs),
}


def train_classifier(kind: str, args: argparse.Namespace, device: torch.device) -> tuple[Any, dict[str, float]]:
    """The smallcnn of ``kind`` (see :data:`KINDS`), from the cache or trained now."""
    from robust.train import fit

    if kind not in KINDS:
        raise SystemExit(f"--models: expected some of {', '.join(KINDS)}, got {kind}")
    split, n_train, epochs = KINDS[kind](args)
    bench = SyntheticBenchmark(size=32, seed=0)
    path = Path(args.cache) / f"{kind}_smallcnn_n{n_train}_e{epochs}"
    if Path(str(path) + ".safetensors").is_file():
        clf = load_classifier(str(path), device=device)
        info = json.loads(Path(str(path) + ".json").read_text()).get("extra", {})
    else:
        data = bench.split(split, n_train)
        clf = build_classifier("smallcnn", len(CLASS_NAMES), (3, 32, 32), class_names=list(CLASS_NAMES), device=device)
        start = time.perf_counter()
        fit(clf, data, epochs=epochs, seed=args.seed, progress=False)
        info = {"split": split, "n_train": n_train, "epochs": epochs, "train_seconds": time.perf_counter() - start}
        for test in ("test_iid", "test_shift"):
            held = bench.split(test, 2000)
            info[f"acc_{test}"] = clf.accuracy(held.images.to(device), held.labels.to(device))
        save_classifier(clf, path, extra=info)
    clf.name = kind
    return clf, info


def run_one(kind: str, clf: Any, G: Any, oracles: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    from attacks.sage import SageConfig
    from attacks.sage_synthetic import shortcut_hits
    from robust.suites.sage_suite import run_sage

    config = SageConfig(space=args.space, budget_queries=args.budget_queries, budget_seconds=args.budget_seconds,
                        batch_size=args.batch_size, steps=args.steps, step_size=args.step_size, oracle_threshold=args.threshold,
                        adaptive_restart=not args.no_adaptive_restart)
    run = run_sage(G, clf, oracles, config, seed=args.seed, regions=args.regions, baseline=True, progress=False)
    r, b = run.result, run.baseline
    out = {
        "model": kind,
        "sage": r.summary(),
        "random": b.summary(),
        "ratio": r.failures_per_1k_queries / b.failures_per_1k_queries if b.failures_per_1k_queries > 0 else None,
        "ground_truth": run.ground_truth.to_dict() if run.ground_truth is not None else None,
        "modes": [m.to_dict() for m in run.modes[:10]],
        "shortcuts": shortcut_hits(run.modes, DEFAULT_CORRELATED, top=5),
        "regions": run.regions.to_dict() if run.regions is not None else None,
    }
    for m in out["modes"]:
        m.pop("indices", None)
    if out["ground_truth"] is not None:
        for key in ("confirmed", "named_error", "twin_error", "named_factors"):
            out["ground_truth"].pop(key, None)
        truth = run.ground_truth
        out["ground_truth"]["mean_named_error"] = sum(truth.named_error) / max(1, len(truth.named_error))
        out["ground_truth"]["mean_twin_error"] = sum(truth.twin_error) / max(1, len(truth.twin_error))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    import robust.gan as gan
    from robust.suites.sage_suite import load_oracle_spec

    if args.generator == "renderer":
        G = RendererGenerator().to(device)
    else:
        G = (gan.load_demo() if args.generator == "demo" else gan.load(args.generator)).to(device)
    oracles = [load_oracle_spec(args.oracle, device)]
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)")
    results: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), "device": str(device),
                               "machine": machine, "generator": args.generator, "runs": {}}
    for kind in args.models.split(","):
        clf, info = train_classifier(kind, args, device)
        iid, shift = info.get("acc_test_iid", float("nan")), info.get("acc_test_shift", float("nan"))
        print(f"{kind}: test_iid {iid:.3f}, test_shift {shift:.3f}", flush=True)
        out = run_one(kind, clf, G, oracles, args)
        out["classifier"] = info
        results["runs"][kind] = out
        s, r = out["sage"], out["random"]
        ratio = f"{out['ratio']:.1f}x" if out["ratio"] is not None else "inf (random found none)"
        print(f"  sage   {s['failures']:5d} verified failures / {s['queries']} queries = {s['failures_per_1k_queries']:.1f} per 1k; "
              f"first after {s['first_failure_seconds']}s / {s['first_failure_query']} queries; {s['failures_per_minute']:.1f} per minute; "
              f"ood rejected {s['ood_rate']:.1%}")
        print(f"  random {r['failures']:5d} verified failures / {r['queries']} queries = {r['failures_per_1k_queries']:.1f} per 1k "
              f"-> ratio {ratio}")
        if out["ground_truth"] is not None:
            g = out["ground_truth"]
            print(f"  ground truth: {g['confirmed_rate']:.1%} of failures confirmed by re-rendering the named factors "
                  f"(mean error {g['mean_named_error']:.2f}; on full twins {g['mean_twin_error']:.2f})")
        hits = out["shortcuts"]
        print(f"  shortcut factors named in the top-5 modes: {hits['hit']} ({hits['modes_naming_a_shortcut']} of 5 modes)")
        for m in out["modes"][:5]:
            print(f"    {m['count']:4d}  {m['description']}")
    runs = results["runs"]
    if "erm" in runs and "diverse" in runs:
        e, d = runs["erm"]["sage"]["failures_per_1k_queries"], runs["diverse"]["sage"]["failures_per_1k_queries"]
        results["erm_over_diverse"] = e / d if d > 0 else None
        print(f"erm vs diverse: {e:.1f} vs {d:.1f} verified failures per 1k queries")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


if __name__ == "__main__":
    main()
