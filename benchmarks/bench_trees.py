"""Two source trees, the same work: PGD-10, the 19 corruptions and NaturalTransform's modes, in CPU time.

For refactors that must change nothing: each tree runs in its own process (``PYTHONPATH=<tree>``),
alternately, ``--rounds`` times, with one torch thread and process CPU time, so a loaded machine
inflates both alike; outputs are compared by checksum.

    git worktree add /tmp/before <commit>
    python benchmarks/bench_trees.py --trees /tmp/before,. --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable


def cpu_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """The least process CPU time of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def measure_attack_and_corruptions() -> dict[str, float]:
    import torch

    from attacks import get_attack
    from augment.corruptions import ALL_CORRUPTIONS, corrupt
    from robust.models import build_classifier
    from robust.synthetic import SyntheticBenchmark

    data = SyntheticBenchmark(size=32, seed=0).split("test_iid", 128)
    clf = build_classifier("smallcnn", 10, (3, 32, 32), class_names=data.class_names, device="cpu", width=16, seed=0)
    attack = get_attack("pgd:linf@8/255,steps=10")
    out = {"pgd10_robust_acc": float((~attack(clf, data.images, data.labels, seed=0).success).float().mean()),
           "pgd10_s": cpu_seconds(lambda: attack(clf, data.images, data.labels, seed=0), 3)}
    small = data.images[:64]
    big = torch.nn.functional.interpolate(SyntheticBenchmark(size=112, seed=0).split("test_iid", 4).images, size=224,
                                          mode="bilinear").clamp(0, 1)
    out["corruptions32_s"] = cpu_seconds(lambda: [corrupt(small, n, 3, seed=0) for n in ALL_CORRUPTIONS], 2)
    out["corruptions224_s"] = cpu_seconds(lambda: [corrupt(big, n, 3, seed=0) for n in ALL_CORRUPTIONS], 1)
    out["corruptions32_checksum"] = float(sum(corrupt(small, n, 3, seed=0).double().sum() for n in ALL_CORRUPTIONS))
    return out


def measure_natra() -> dict[str, float]:
    import torch

    import robust.gan as gan
    from augment.natra import NaturalTransform
    from robust.gan.directions import directions_for
    from robust.models import build_classifier
    try:
        from robust.gan.latent import sample_ws
    except ImportError:  # trees from before robust.gan.latent
        from robust.gan.inversion import sample_ws

    G = gan.load_demo()
    directions = directions_for(G, "auto")
    ws, _ = sample_ws(G, 64, seed=0)
    with torch.no_grad():
        images = G.to_unit(G.synthesis(ws))
    labels = torch.zeros(64, dtype=torch.long)
    judge = build_classifier("smallcnn", 10, (3, 32, 32), device="cpu", width=16, seed=1)
    out = {}
    for mode in ("random", "worst_of_k", "gradient"):
        nt = NaturalTransform(G, directions, mode, classifier=judge, k=4, steps=5, strength=2.0, per_sample=3)
        out[f"natra_{mode}_checksum"] = float(nt.transform(images, labels, ws=ws, seed=0).images.double().sum())
        out[f"natra_{mode}_s"] = cpu_seconds(lambda: nt.transform(images, labels, ws=ws, seed=0), 2)
    return out


def run_tree(tree: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
    done = subprocess.run([sys.executable, __file__, "--measure"], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trees", default=".", help="comma-separated source trees (the first is the baseline)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        import torch

        torch.set_num_threads(1)
        print(json.dumps({**measure_attack_and_corruptions(), **measure_natra()}))
        return
    trees = args.trees.split(",")
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    for _ in range(args.rounds):
        for tree in trees:
            runs[tree].append(run_tree(tree))
    for key in runs[trees[0]][0]:
        digits = ".12g" if key.endswith(("checksum", "acc")) else ".4g"
        cells = ["/".join(f"{r[key]:{digits}}" for r in runs[t]) for t in trees]
        same = len({r[key] for t in trees for r in runs[t]}) == 1
        print(f"{key:<26} " + "   ".join(f"{t}: {c}" for t, c in zip(trees, cells)) + ("   (identical)" if same else ""))


if __name__ == "__main__":
    main()
