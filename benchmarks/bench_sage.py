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
import hashlib
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
    p.add_argument("--oracle", default="ensemble", help="'ensemble' (the shipped oracle ensemble's class members), 'synthetic' "
                   "(the generator metrics' oracle) or classifier checkpoints joined by +")
    p.add_argument("--agreement", default="all", choices=["all", "mean"], help="every oracle must agree, or their mean")
    p.add_argument("--checks", default="auto", help="candidate checks joined by + (realism, twins, reinversion, stability), auto or none")
    p.add_argument("--real", default="synthetic:generator,seed=98,n=2000", help="real images of the realism check (a data spec; none)")
    p.add_argument("--reference", default=None, help="reference classifier of the false-failure estimate (default: the ensemble's "
                   "held-out member)")
    p.add_argument("--no-estimate", action="store_true", help="skip the false-failure estimate (its reference search)")
    p.add_argument("--random-queries", type=int, default=None, help="budget of the random baseline (default: --budget-queries)")
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
    p.add_argument("--min-confidence", type=float, default=0.0, help="the model's probability for its wrong class a failure needs")
    p.add_argument("--no-adaptive-restart", action="store_true", help="chains always run all --steps (the ablation)")
    p.add_argument("--regions", type=int, default=16, help="failures whose failure region is measured")
    p.add_argument("--hardened-recipe", default="0.5*natra:random@1,model=demo-swap,min_strength=0.5+0.5*erm",
                   help="the training recipe of the 'hardened' model (shortcut split; default: NaTra's frozen setting)")
    p.add_argument("--models", default="erm,diverse,weak", help="which classifiers: erm (shortcut split), diverse (generator split), "
                   "weak (generator split, half the images), hardened (shortcut split, --hardened-recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--train-oracles", default=None, metavar="FOLDER",
                   help="train the oracle ensemble (robust.gan.oracles.SHIPPED) on real renders into FOLDER and exit")
    return p.parse_args(argv)


# name -> (split, training images, epochs, recipe): the shortcut-trained model, the diverse one, and a briefly
# trained diverse one (half the images) whose failures are rare but exist (where a search can beat sampling by a wide margin).
KINDS = {
    "erm": lambda a: ("train", a.n_train, a.epochs, "erm"),
    "diverse": lambda a: ("generator", a.n_train, a.epochs, "erm"),
    "weak": lambda a: ("generator", max(500, a.n_train // 2), a.epochs, "erm"),
    # The shortcut split hardened by one of the project's recipes (failures rarer than erm's, still real).
    "hardened": lambda a: ("train", a.n_train, a.epochs, a.hardened_recipe),
}


def train_classifier(kind: str, args: argparse.Namespace, device: torch.device) -> tuple[Any, dict[str, float]]:
    """The smallcnn of ``kind`` (see :data:`KINDS`), from the cache or trained now."""
    from robust.train import fit

    if kind not in KINDS:
        raise SystemExit(f"--models: expected some of {', '.join(KINDS)}, got {kind}")
    split, n_train, epochs, recipe = KINDS[kind](args)
    bench = SyntheticBenchmark(size=32, seed=0)
    tag = "" if recipe == "erm" else "_" + hashlib.sha256(recipe.encode()).hexdigest()[:8]
    path = Path(args.cache) / f"{kind}_smallcnn_n{n_train}_e{epochs}{tag}"
    if Path(str(path) + ".safetensors").is_file():
        clf = load_classifier(str(path), device=device)
        info = json.loads(Path(str(path) + ".json").read_text()).get("extra", {})
    else:
        data = bench.split(split, n_train)
        clf = build_classifier("smallcnn", len(CLASS_NAMES), (3, 32, 32), class_names=list(CLASS_NAMES), device=device)
        start = time.perf_counter()
        fit(clf, data, epochs=epochs, seed=args.seed, progress=False, recipe=recipe)
        info = {"split": split, "n_train": n_train, "epochs": epochs, "recipe": recipe, "train_seconds": time.perf_counter() - start}
        for test in ("test_iid", "test_shift"):
            held = bench.split(test, 2000)
            info[f"acc_{test}"] = clf.accuracy(held.images.to(device), held.labels.to(device))
        save_classifier(clf, path, extra=info)
    clf.name = kind
    return clf, info


def train_oracles(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Train the shipped oracle ensemble on renders of the generator split (one benchmark seed per member)."""
    from robust.gan.oracles import train_ensemble

    held = SyntheticBenchmark(size=32, seed=99).split("generator", 2000)
    paths = train_ensemble(args.train_oracles, n=args.n_train, epochs=args.epochs, device=device, evaluate=held,
                           log=lambda line: print(line, flush=True))
    return {"members": [str(p) for p in paths]}


def truth(clf: Any, G: Any, result: Any, judge: Any, seed: int) -> dict[str, Any]:
    """The renderer's verdict on a result's failures (the measuring instrument): confirmed count, rate, per 1k queries."""
    from attacks.sage_modes import failure_modes
    from attacks.sage_synthetic import PHRASES, ground_truth_check

    if not result.failures:
        return {"failures": 0, "confirmed": 0, "confirmed_rate": None, "confirmed_per_1k": 0.0, "mean_named_error": None,
                "mean_twin_error": None}
    modes = failure_modes(result, factors=judge.factor_estimates(result), phrases=PHRASES)
    gt = ground_truth_check(clf, result, modes, size=int(G.img_resolution), seed=seed)
    confirmed = sum(gt.confirmed)
    return {"failures": len(result.failures), "confirmed": confirmed, "confirmed_rate": gt.confirmed_rate,
            "confirmed_per_1k": 1000.0 * confirmed / max(1, result.queries), "per_failure": gt.confirmed,
            "mean_named_error": sum(gt.named_error) / len(gt.named_error), "mean_twin_error": sum(gt.twin_error) / len(gt.twin_error)}


def run_one(kind: str, clf: Any, G: Any, oracles: list[Any], verification: Any, args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import replace

    from attacks.sage import SageConfig, random_search
    from attacks.sage_synthetic import SyntheticJudge, shortcut_hits
    from robust.suites.sage_suite import run_sage

    config = SageConfig(space=args.space, budget_queries=args.budget_queries, budget_seconds=args.budget_seconds,
                        batch_size=args.batch_size, steps=args.steps, step_size=args.step_size, oracle_threshold=args.threshold,
                        oracle_agreement=args.agreement, adaptive_restart=not args.no_adaptive_restart,
                        min_confidence=args.min_confidence)
    run = run_sage(G, clf, oracles, config, seed=args.seed, verification=verification, regions=args.regions, baseline=False,
                   progress=False)
    r = run.result
    b = random_search(G, clf, oracles, replace(config, budget_queries=args.random_queries or args.budget_queries), seed=args.seed,
                      token_verifier=verification.token_verifier, checks=verification.checks, progress=False)
    judge = SyntheticJudge(G)
    truth_s, truth_r = truth(clf, G, r, judge, args.seed), truth(clf, G, b, judge, args.seed)
    out = {
        "model": kind,
        "sage": {**r.summary(), "truth": truth_s},
        "random": {**b.summary(), "truth": truth_r},
        "ratio": r.failures_per_1k_queries / b.failures_per_1k_queries if b.failures_per_1k_queries > 0 else None,
        "confirmed_ratio": (truth_s["confirmed_per_1k"] / truth_r["confirmed_per_1k"]) if truth_r["confirmed_per_1k"] > 0 else None,
        "estimate": run.estimate.to_dict() if run.estimate is not None else None,
        "verification": verification.describe(),
        "modes": [m.to_dict() for m in run.modes[:10]],
        "shortcuts": shortcut_hits(run.modes, DEFAULT_CORRELATED, top=5),
        "regions": run.regions.to_dict() if run.regions is not None else None,
        "checks": [f.checks for f in r.failures],
    }
    for m in out["modes"]:
        m.pop("indices", None)
    return out


def report(kind: str, out: dict[str, Any]) -> None:
    """Print one model's lines."""
    for name in ("sage", "random"):
        s = out[name]
        t = s["truth"]
        rate = f"{t['confirmed_rate']:.1%}" if t["confirmed_rate"] is not None else "n/a"
        cpu = s["failures_per_cpu_minute"]
        print(f"  {name:6s} {s['failures']:5d} verified / {s['queries']} queries = {s['failures_per_1k_queries']:.1f} per 1k "
              f"({s['counts'].get('check_queries', 0)} check queries); confirmed by the renderer {t['confirmed']} ({rate}) = "
              f"{t['confirmed_per_1k']:.2f} per 1k; {s['seconds']:.0f} s, {s['cpu_seconds']:.0f} CPU-s, "
              f"{(cpu if cpu is not None else 0):.1f} verified per CPU-minute, first after {s['first_failure_query']} queries")
    ratio = f"{out['confirmed_ratio']:.1f}x" if out["confirmed_ratio"] is not None else "n/a (random confirmed none)"
    print(f"  confirmed per 1k, sage / random: {ratio}")
    if out["estimate"] is not None:
        print(f"  {out['estimate']['text']}")
    counts = out["sage"]["counts"]
    print("  rejected: " + ", ".join(f"{k[len('rejected_'):]} {v}" for k, v in counts.items() if k.startswith("rejected_")))
    hits = out["shortcuts"]
    print(f"  shortcut factors named in the top-5 modes: {hits['hit']} ({hits['modes_naming_a_shortcut']} of 5 modes)")
    for m in out["modes"][:5]:
        print(f"    {m['count']:4d}  {m['description']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.train_oracles:
        return train_oracles(args, device)
    import robust.gan as gan
    from robust.data import load_dataset
    from robust.suites.sage_suite import default_oracles, default_verification, load_oracle_spec

    if args.generator == "renderer":
        G = RendererGenerator().to(device)
    else:
        G = (gan.load_demo() if args.generator == "demo" else gan.load(args.generator)).to(device)
    oracles = default_oracles(G, [] if args.oracle == "ensemble" else args.oracle.split("+"), device)
    if args.oracle != "ensemble":
        oracles = [load_oracle_spec(o, device) for o in args.oracle.split("+")]
    reals = load_dataset(args.real) if args.real and args.real != "none" else None
    verification = default_verification(G, oracles, checks=args.checks, reals=reals, reference=args.reference, device=device,
                                        seed=args.seed)
    if args.no_estimate:
        verification.reference = None
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)")
    results: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), "device": str(device),
                               "machine": machine, "torch": torch.__version__, "generator": args.generator,
                               "oracles": [o.name for o in oracles], "runs": {}}
    print("checks: " + ", ".join(verification.names()) + (f"; not run: {verification.skipped}" if verification.skipped else ""), flush=True)
    for kind in args.models.split(","):
        clf, info = train_classifier(kind, args, device)
        iid, shift = info.get("acc_test_iid", float("nan")), info.get("acc_test_shift", float("nan"))
        print(f"{kind}: test_iid {iid:.3f}, test_shift {shift:.3f}", flush=True)
        out = run_one(kind, clf, G, oracles, verification, args)
        out["classifier"] = info
        results["runs"][kind] = out
        report(kind, out)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


if __name__ == "__main__":
    main()
