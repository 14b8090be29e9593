"""The shortcut benchmark: every hardening recipe on the synthetic benchmark's shortcut-correlated split.

Same architecture, data and budget for every recipe, several seeds; reports mean and spread of
accuracy on ``test_iid``, ``test_shift``, the single-factor shift sets of the correlated factors,
mean corruption accuracy (benchmark corruptions at one severity, on ``test_iid``) and PGD accuracy,
then the fraction of the erm -> oracle gap on ``test_shift`` each recipe closes, and the targets
(natra closes >= 60% of the gap, beats classic and AugMix on test_shift by >= 5 points, costs <= 1
point of test_iid).

    python benchmarks/bench_shortcut.py --n-train 5000 --epochs 4 --seeds 1 --device cpu
    python benchmarks/bench_shortcut.py --device cuda --seeds 3 --json shortcut.json     # the full run

``--recipes`` picks a subset (names below); ``--slow-seeds`` gives the expensive recipes (pgd, natra
worst-of-k / gradient) fewer seeds on small machines.
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
from robust.registry import Spec, parse_spec  # noqa: E402
from robust.seeding import resolve_device  # noqa: E402
from robust.synthetic import SyntheticBenchmark  # noqa: E402
from robust.train import evaluate, harden  # noqa: E402
from robust.train.recipes import RECIPES  # noqa: E402

# name in the table -> recipe spec (the natra and pgd strengths are set by the command line).
RECIPES_TABLE = {
    "erm": "erm",
    "classic": "classic",
    "augmix": "augmix",
    "pgd": "{pgd}",
    "natra_random": "natra:random{natra}",
    "natra_worst_of_k": "natra:worst_of_k{natra}",
    "natra_gradient": "natra:gradient{natra}",
    "natra+classic": "natra:random{natra}+classic",
    "generated": "generated{generated}",
    "generated+erm": "{share}*generated{generated}+{rest}*erm",
    "generated+natra": "{share}*generated{generated}+{rest}*natra:random{natra}",
    "oracle": "oracle",
}
SLOW = {"pgd", "natra_worst_of_k", "natra_gradient"}
NATRA_KEYS = ("natra_random", "natra_worst_of_k", "natra_gradient", "natra+classic")
GENERATOR_KEYS = (*NATRA_KEYS, "generated", "generated+erm", "generated+natra")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=",".join(RECIPES_TABLE), help="comma-separated subset of: " + ", ".join(RECIPES_TABLE))
    p.add_argument("--n-train", type=int, default=10_000, help="training images of the shortcut split")
    p.add_argument("--n-test", type=int, default=2_000, help="images per test set")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--arch", default="smallcnn")
    p.add_argument("--width", type=int, default=32, help="width of smallcnn / preact_resnet")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seeds", type=int, default=3, help="seeds per recipe: FIRST..FIRST+N-1")
    p.add_argument("--first-seed", type=int, default=0, help="the first seed (run more seeds later and --merge them)")
    p.add_argument("--slow-seeds", type=int, default=None, help="seeds for pgd and natra worst_of_k/gradient (default: --seeds)")
    p.add_argument("--pgd", default="pgd:linf@4/255,steps=5", help="the pgd recipe's spec")
    p.add_argument("--natra", default="", help="options appended to every natra recipe, e.g. ',k=4,steps=3'")
    p.add_argument("--generated", default="", help="options appended to the generated recipes, e.g. '@0.8,center=condition'")
    p.add_argument("--generated-share", type=float, default=0.5, help="share of each batch the generated+erm row draws from the generator")
    p.add_argument("--generated-grid", default=None, metavar="PNG",
                   help="also write 5 training images and 5 generated samples of the same labels per class (one row per class)")
    p.add_argument("--generator", default=None, help="generator checkpoint for natra and generated (default: the shipped demo generator)")
    p.add_argument("--eval-pgd", default="pgd:linf@2/255,steps=10", help="attack for the PGD accuracy column")
    p.add_argument("--robust-n", type=int, default=500, help="test_iid images for the corruption and PGD columns")
    p.add_argument("--severity", type=float, default=3.0, help="corruption severity of the corruption column")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--runs", default=None, help="folder for each run's log and checkpoints (default: none kept)")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--merge", action="append", default=[], metavar="JSON",
                   help="add the rows of an earlier run with the same data/model/budget settings (repeatable)")
    return p.parse_args(argv)


def eval_attack(text: str) -> tuple[str, str]:
    """The PGD column's audit suite spec, at its budget alone (``grid=<budget>``), and its result name."""
    spec = parse_spec(text, "--eval-pgd")
    options = {"grid": spec.at, **spec.options} if spec.at is not None else dict(spec.options)
    return str(Spec(spec.name, spec.target, spec.at, options)), str(spec.options.get("name", spec.name))


def load_generator(path: str | None):
    import robust.gan as gan

    return gan.load(path) if path else gan.load_demo()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES_TABLE]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; choose from {list(RECIPES_TABLE)}")
    if any(n in NATRA_KEYS for n in names) and "natra" not in RECIPES:
        raise SystemExit("the natra recipe is not available in this checkout (augment.natra missing); drop the natra rows with --recipes")
    bench = SyntheticBenchmark(size=args.size, seed=0)
    train = bench.split("train", args.n_train)
    shift_sets = [f"shift_{f}" for f in bench.correlated]
    tests = {name: bench.split(name, args.n_test) for name in ["test_iid", "test_shift", *shift_sets]}
    robust_set = {"test_iid": tests["test_iid"].take(args.robust_n, seed=0)}
    generator = load_generator(args.generator) if any(n in GENERATOR_KEYS for n in names) or args.generated_grid else None
    if args.generated_grid:
        write_generated_grid(args.generated_grid, train, generator, args.generated, device)
    print(f"# shortcut benchmark: {args.n_train} train images {args.size}px, correlated {bench.correlated} (strength {bench.strength}), "
          f"{args.arch} width {args.width}, {args.epochs} epochs, batch {args.batch_size}, device {device}", flush=True)

    pgd_suite, pgd_name = eval_attack(args.eval_pgd)
    rows: dict[str, list[dict]] = {}
    for name in names:
        spec = RECIPES_TABLE[name].format(**_formats(args))
        seeds = args.slow_seeds if (name in SLOW and args.slow_seeds is not None) else args.seeds
        for seed in range(args.first_seed, args.first_seed + seeds):
            torch.manual_seed(seed)
            clf = build_classifier(args.arch, 10, (3, args.size, args.size), class_names=train.class_names, device=device,
                                   **({"width": args.width} if args.arch in ("smallcnn", "preact_resnet") else {}))
            out = Path(args.runs) / f"{name}-s{seed}" if args.runs else None
            start = time.time()
            result = harden(clf, train, spec, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                            seed=seed, device=device, generator=generator, out=out, progress=None)
            seconds = time.time() - start
            metrics = evaluate(result.classifier, tests, ["clean"], seed=seed)
            metrics.update(evaluate(result.classifier, robust_set, [f"corruptions@{args.severity:g}", pgd_suite], seed=seed))
            row = {
                "seed": seed,
                "train_seconds": seconds,
                "train_loss": result.history[-1]["train_loss"],
                "test_iid": metrics["test_iid/acc"],
                "test_shift": metrics["test_shift/acc"],
                **{s: metrics[f"{s}/acc"] for s in shift_sets},
                "corruption": metrics["test_iid/corruptions.mean_acc"],
                "pgd": metrics[f"test_iid/{pgd_name}.acc"],
            }
            rows.setdefault(name, []).append(row)
            print(f"{name:<18} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("seed",)), flush=True)

    specs = {name: RECIPES_TABLE[name].format(**_formats(args)) for name in rows}
    for path in args.merge:
        earlier = json.loads(Path(path).read_text())
        _check_same_setup(earlier["args"], vars(args), path)
        for name, rs in earlier["rows"].items():
            spec = earlier["summary"][name]["spec"]
            if name not in rows:
                rows[name] = rs
                specs[name] = spec
            elif spec == specs[name] and not {r["seed"] for r in rs} & {r["seed"] for r in rows[name]}:
                rows[name] = sorted(rows[name] + rs, key=lambda r: r["seed"])  # more seeds of the same recipe
    rows = {name: rows[name] for name in RECIPES_TABLE if name in rows}
    columns = ["test_iid", "test_shift", *shift_sets, "corruption", "pgd", "train_seconds"]
    summary = {name: {c: _stats([r[c] for r in rs]) for c in columns} | {"seeds": len(rs), "spec": specs[name]}
               for name, rs in rows.items()}
    gap = _gap(summary)
    print()
    print(markdown(summary, columns, gap))
    targets = _targets(summary, gap)
    for line in targets:
        print(line)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
                   f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}",
        "command": "python " + " ".join(sys.argv),
        "args": vars(args),
        "rows": rows,
        "summary": summary,
        "gap_closed": gap,
        "targets": targets,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


# Settings that must agree for rows of two runs to share one table.
SETUP = ("n_train", "n_test", "size", "arch", "width", "epochs", "batch_size", "optimizer", "lr", "eval_pgd", "robust_n", "severity")


def write_generated_grid(path: str, train, generator, options: str, device: torch.device) -> None:
    """A picture of what the generated recipe trains on: per class, 5 training images then 5 samples."""
    import torch.nn.functional as F
    from torchvision.utils import save_image

    from robust.models import build_classifier as build
    from robust.train.recipes import Batch, RecipeContext, get_recipe

    recipe = get_recipe(f"generated{options}")
    recipe.bind(RecipeContext(build("smallcnn", train.num_classes, (train.channels, *train.size), width=4), train, device, generator=generator))
    tiles = []
    for k in range(train.num_classes):
        idx = (train.labels == k).nonzero().squeeze(1)[:5]
        (fake,) = recipe.views(Batch(train.images[idx].to(device), train.labels[idx].to(device), idx, idx, torch.Generator(), 0, 0), None)
        tiles += [*train.images[idx], *fake.cpu()]
    save_image(F.interpolate(torch.stack(tiles), scale_factor=2, mode="nearest"), path, nrow=10, padding=2, pad_value=1.0)
    print(f"# wrote {path}: per class, 5 training images then 5 samples of generated{options}", flush=True)


def _formats(args: argparse.Namespace) -> dict[str, str]:
    """The command-line parts of the recipe specs in RECIPES_TABLE."""
    share = args.generated_share
    if not 0 < share < 1:
        raise SystemExit(f"--generated-share: a share in (0, 1), got {share}")
    return {"pgd": args.pgd, "natra": args.natra, "generated": args.generated, "share": f"{share:g}", "rest": f"{1 - share:g}"}


def _check_same_setup(earlier: dict, now: dict, path: str) -> None:
    diffs = [k for k in SETUP if earlier.get(k) != now.get(k)]
    if diffs:
        raise SystemExit(f"--merge {path}: different settings {diffs}; rows are only comparable under the same setup")


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def _gap(summary: dict) -> dict[str, float]:
    """Fraction of the erm -> oracle gap on test_shift each recipe closes."""
    if "erm" not in summary or "oracle" not in summary:
        return {}
    erm, oracle = summary["erm"]["test_shift"]["mean"], summary["oracle"]["test_shift"]["mean"]
    if oracle - erm <= 1e-9:
        return {}
    return {name: (s["test_shift"]["mean"] - erm) / (oracle - erm) for name, s in summary.items()}


def markdown(summary: dict, columns: list[str], gap: dict[str, float]) -> str:
    head = "| recipe | seeds | " + " | ".join(columns) + " | gap closed |"
    lines = [head, "|" + "---|" * (len(columns) + 3)]
    for name, s in summary.items():
        cells = []
        for c in columns:
            m, sd = s[c]["mean"], s[c]["std"]
            cells.append(f"{m:.0f}s" if c == "train_seconds" else (f"{100 * m:.1f} ± {100 * sd:.1f}" if s["seeds"] > 1 else f"{100 * m:.1f}"))
        g = f"{100 * gap[name]:.0f}%" if name in gap else "-"
        lines.append(f"| {name} | {s['seeds']} | " + " | ".join(cells) + f" | {g} |")
    return "\n".join(lines)


def _targets(summary: dict, gap: dict[str, float]) -> list[str]:
    natra = [n for n in NATRA_KEYS if n in summary]
    if not natra:
        return ["targets: no natra recipe in this run"]
    best = max(natra, key=lambda n: summary[n]["test_shift"]["mean"])
    out = [f"best natra variant on test_shift: {best}"]
    if best in gap:
        out.append(f"gap closed {100 * gap[best]:.0f}% (target >= 60%, moonshot 80%): {'met' if gap[best] >= 0.6 else 'NOT met'}")
    for rival in ("classic", "augmix"):
        if rival in summary:
            d = 100 * (summary[best]["test_shift"]["mean"] - summary[rival]["test_shift"]["mean"])
            out.append(f"test_shift vs {rival}: {d:+.1f} points (target >= +5): {'met' if d >= 5 else 'NOT met'}")
    if "erm" in summary:
        d = 100 * (summary["erm"]["test_iid"]["mean"] - summary[best]["test_iid"]["mean"])
        out.append(f"test_iid cost vs erm: {d:.1f} points (target <= 1): {'met' if d <= 1 else 'NOT met'}")
    return out


if __name__ == "__main__":
    main()
