"""The shortcut benchmark: hardening recipes on the synthetic benchmark's shortcut-correlated split.

Same architecture, data and budget for every recipe, several seeds; reports mean and spread of
accuracy on ``test_iid``, ``test_shift``, the single-factor shift sets of the correlated factors
(``shift_<factor>``: shortcut switching shows there), mean corruption accuracy and PGD accuracy on
``test_iid``, train seconds and time per training step (and its ratio to erm's), then the fraction
of the erm -> oracle gap on ``test_shift`` each recipe closes, and the targets.

Protocol of each row (the table's first column; honest rows come first, they are the headline):
- ``honest``: every learned part the recipe uses was trained on the shortcut ``train`` split's
  images and class labels alone (no ground-truth factors, no decorrelated split, no nuisance
  tokens): erm, the hue-rotation baseline, classic, AugMix, pgd, and NaTra with a
  structure/appearance model trained on this ``train`` split (``natra_swap``).
- ``instrument``: the oracle re-renders each image with the benchmark's renderer (fresh nuisance
  factors): the upper bound, a measuring instrument, not a method.
- ``privileged``: the StyleGAN natra rows and the ``generated`` rows with the demo generator,
  trained on the decorrelated ``generator`` split conditioned on ground-truth texture/fill/mark
  tokens (``--generator-protocol honest`` declares a generator trained on this ``train`` split with
  class conditioning only).

Targets (honest NaTra rows only): closes >= 60% of the gap, beats hue rotation, classic and AugMix
on test_shift by >= 5 points, costs <= 1 point of test_iid.

    python benchmarks/bench_shortcut.py --recipes erm,oracle,hue_rotation --n-train 5000 --n-test 1000 --width 16 \\
        --epochs 8 --seeds 3 --robust-n 300 --device cpu --threads 1 --json honest.json
    python benchmarks/bench_shortcut.py --recipes natra_swap --natra-swap "natra:random,<option>={swap_model}" ... --merge honest.json
    python benchmarks/bench_shortcut.py --correlated bg_hue,mark --swap-model <model of THAT train split> ...

``--recipes`` picks a subset (names below); ``--slow-seeds`` gives the expensive recipes fewer seeds.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust.models import build_classifier  # noqa: E402
from robust.registry import Spec, parse_spec  # noqa: E402
from robust.seeding import resolve_device  # noqa: E402
from robust.synthetic import DEFAULT_CORRELATED, DEFAULT_STRENGTH, SyntheticBenchmark  # noqa: E402
from robust.train import evaluate, harden  # noqa: E402
from robust.train.recipes import RECIPES  # noqa: E402

HONEST, INSTRUMENT, PRIVILEGED = "honest", "instrument", "privileged"
PROTOCOL_ORDER = (HONEST, INSTRUMENT, PRIVILEGED)


@dataclass(frozen=True)
class Row:
    """A row of the table: its recipe spec (``{...}`` parts come from the command line) and protocol."""

    spec: str
    protocol: str
    uses: str = ""  # the generator ("stylegan") or structure/appearance model ("swap") the recipe needs


ROWS = {
    "erm": Row("erm", HONEST),
    "hue_rotation": Row("{hue}", HONEST),
    "classic": Row("classic", HONEST),
    "augmix": Row("augmix", HONEST),
    "pgd": Row("{pgd}", HONEST),
    "natra_swap": Row("{natra_swap}", HONEST, "swap"),
    "oracle": Row("oracle", INSTRUMENT),
    "natra_random": Row("natra:random{natra}", PRIVILEGED, "stylegan"),
    "natra_worst_of_k": Row("natra:worst_of_k{natra}", PRIVILEGED, "stylegan"),
    "natra_gradient": Row("natra:gradient{natra}", PRIVILEGED, "stylegan"),
    "natra+classic": Row("natra:random{natra}+classic", PRIVILEGED, "stylegan"),
    "generated": Row("generated{generated}", PRIVILEGED, "stylegan"),
    "generated+erm": Row("{share}*generated{generated}+{rest}*erm", PRIVILEGED, "stylegan"),
    "generated+natra": Row("{share}*generated{generated}+{rest}*natra:random{natra}", PRIVILEGED, "stylegan"),
}
SLOW = {"pgd", "natra_worst_of_k", "natra_gradient"}
NATRA_ROWS = ("natra_swap", "natra_random", "natra_worst_of_k", "natra_gradient", "natra+classic")
RIVALS = ("hue_rotation", "classic", "augmix")
PROTOCOL_NOTES = {
    HONEST: "honest",
    INSTRUMENT: "instrument (benchmark renderer)",
    PRIVILEGED: "privileged (generator split + nuisance tokens)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="erm,hue_rotation,classic,augmix,natra_swap,oracle", help="comma-separated subset of: " + ", ".join(ROWS))
    p.add_argument("--correlated", default=",".join(DEFAULT_CORRELATED), help="the factors the train split correlates with the class (a,b)")
    p.add_argument("--strength", type=float, default=DEFAULT_STRENGTH, help="probability a correlated factor follows the class")
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
    p.add_argument("--slow-seeds", type=int, default=None, help="seeds for " + ", ".join(sorted(SLOW)) + " (default: --seeds)")
    p.add_argument("--hue", default="transform:hue", help="the hue_rotation row's spec (pixel hue rotation over the full circle)")
    p.add_argument("--pgd", default="pgd:linf@4/255,steps=5", help="the pgd recipe's spec")
    p.add_argument("--natra-swap", default=None, metavar="SPEC",
                   help="the natra_swap row's recipe spec; {swap_model} stands for the structure/appearance model's path")
    p.add_argument("--swap-model", default=None, metavar="PATH",
                   help="structure/appearance model trained on THIS run's train split (default: the shipped demo_swap, "
                        "for the default correlated pair and strength only)")
    p.add_argument("--natra", default="", help="options appended to every StyleGAN natra recipe, e.g. ',k=4,steps=3'")
    p.add_argument("--generated", default="", help="options appended to the generated recipes, e.g. '@0.8,center=condition'")
    p.add_argument("--generated-share", type=float, default=0.5, help="share of each batch the generated+erm row draws from the generator")
    p.add_argument("--generated-grid", default=None, metavar="PNG",
                   help="also write 5 training images and 5 generated samples of the same labels per class (one row per class)")
    p.add_argument("--generator", default=None, help="StyleGAN checkpoint for natra and generated (default: the shipped demo generator)")
    p.add_argument("--generator-protocol", default=PRIVILEGED, choices=(PRIVILEGED, HONEST),
                   help="honest: the generator (and its encoder, directions) was trained on this train split, class-conditioned only")
    p.add_argument("--eval-pgd", default="pgd:linf@2/255,steps=10", help="attack for the PGD accuracy column")
    p.add_argument("--robust-n", type=int, default=500, help="test_iid images for the corruption and PGD columns")
    p.add_argument("--severity", type=float, default=3.0, help="corruption severity of the corruption column")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--runs", default=None, help="folder for each run's log and checkpoints (default: none kept)")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--merge", action="append", default=[], metavar="JSON",
                   help="add the rows of an earlier run with the same data/model/budget settings (repeatable)")
    args = p.parse_args(argv)
    args.correlated = ",".join(f.strip() for f in args.correlated.split(",") if f.strip())
    return args


def selected_rows(args: argparse.Namespace) -> list[str]:
    """The rows ``--recipes`` names, checked against :data:`ROWS` and this checkout's recipes."""
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; choose from {list(ROWS)}")
    if "natra_swap" in names and not args.natra_swap:
        raise SystemExit("natra_swap: give the natra recipe's spec for the structure/appearance model with --natra-swap "
                         "(e.g. 'natra:random,<option>={swap_model}')")
    if any(ROWS[n].uses == "stylegan" and "natra" in ROWS[n].spec for n in names) and "natra" not in RECIPES:
        raise SystemExit("the natra recipe is not available in this checkout (augment.natra missing); drop the natra rows with --recipes")
    return names


def default_setup(args: argparse.Namespace) -> bool:
    """Whether the run's split is the one the shipped models were trained on (default pair, strength, 32 px)."""
    return args.correlated == ",".join(DEFAULT_CORRELATED) and args.strength == DEFAULT_STRENGTH and args.size == 32


def swap_model_path(args: argparse.Namespace) -> str:
    """The structure/appearance model of this run's train split: ``--swap-model``, else the shipped one
    (only for the split it was trained on: a model of another pair's split would not be honest)."""
    if args.swap_model:
        return args.swap_model
    if not default_setup(args):
        raise SystemExit(f"natra_swap on correlated {args.correlated} (strength {args.strength:g}, {args.size}px): give --swap-model, "
                         "a structure/appearance model trained on THIS train split (the shipped one saw the default split)")
    from robust.gan.swapping import DEMO_SWAP

    if not DEMO_SWAP.with_suffix(".safetensors").is_file():
        raise SystemExit(f"no shipped structure/appearance model at {DEMO_SWAP}.safetensors yet: give --swap-model")
    return str(DEMO_SWAP)


def model_provenance(path: str) -> dict[str, Any]:
    """What a model's JSON sidecar says about its training (command, data, seed), for the report."""
    sidecar = Path(path).with_suffix(".json") if Path(path).suffix != ".json" else Path(path)
    try:
        extra = json.loads(sidecar.read_text()).get("extra", {})
    except (OSError, ValueError, AttributeError):
        return {"path": path, "sidecar": None}
    return {"path": path, "sidecar": str(sidecar), **{k: extra[k] for k in ("command", "data", "seed", "hardware") if k in extra}}


def models_used(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """Provenance of the learned models the rows use (their sidecars' commands), for the report."""
    out = {}
    if "natra_swap" in names and "{swap_model}" in (args.natra_swap or ""):
        out["swap"] = model_provenance(swap_model_path(args))
    if any(ROWS[n].uses == "stylegan" for n in names):
        out["stylegan"] = {"path": args.generator or "shipped demo generator", "protocol": args.generator_protocol}
    return out


def row_specs(args: argparse.Namespace, names: list[str]) -> dict[str, str]:
    """Each row's recipe spec with the command line's parts filled in."""
    share = args.generated_share
    if not 0 < share < 1:
        raise SystemExit(f"--generated-share: a share in (0, 1), got {share}")
    parts = {"hue": args.hue, "pgd": args.pgd, "natra": args.natra, "generated": args.generated, "share": f"{share:g}",
             "rest": f"{1 - share:g}", "natra_swap": args.natra_swap or ""}
    specs = {name: ROWS[name].spec.format(**parts) for name in names}
    if "natra_swap" in specs and "{swap_model}" in specs["natra_swap"]:
        specs["natra_swap"] = specs["natra_swap"].replace("{swap_model}", swap_model_path(args))
    return specs


def row_protocols(args: argparse.Namespace, names: list[str]) -> dict[str, str]:
    """Each row's protocol; StyleGAN rows take ``--generator-protocol``."""
    return {name: args.generator_protocol if ROWS[name].uses == "stylegan" else ROWS[name].protocol for name in names}


def eval_attack(text: str) -> tuple[str, str]:
    """The PGD column's audit suite spec, at its budget alone (``grid=<budget>``), and its result name."""
    spec = parse_spec(text, "--eval-pgd")
    options = {"grid": spec.at, **spec.options} if spec.at is not None else dict(spec.options)
    return str(Spec(spec.name, spec.target, spec.at, options)), str(spec.options.get("name", spec.name))


def load_generator(args: argparse.Namespace):
    """The StyleGAN for natra/generated rows; an honest one may be conditioned on the class alone."""
    import robust.gan as gan

    G = gan.load(args.generator) if args.generator else gan.load_demo()
    groups = [g for g in (G.conditioning.names if G.conditioning is not None else []) if g != "class"]
    if args.generator_protocol == HONEST and groups:
        raise SystemExit(f"--generator-protocol honest: this generator is conditioned on nuisance tokens {groups}, which the "
                         "train split does not have")
    return G


@dataclass
class Setup:
    """The data and evaluation every row of a run shares."""

    train: Any
    tests: dict[str, Any]
    robust_set: dict[str, Any]
    shift_sets: list[str]
    pgd_suite: str
    pgd_name: str
    device: torch.device
    generator: Any = None


def build_setup(args: argparse.Namespace, names: list[str]) -> Setup:
    bench = SyntheticBenchmark(size=args.size, correlated=args.correlated.split(","), strength=args.strength, seed=0)
    train = bench.split("train", args.n_train)
    shift_sets = [f"shift_{f}" for f in bench.correlated]
    tests = {name: bench.split(name, args.n_test) for name in ["test_iid", "test_shift", *shift_sets]}
    robust_set = {"test_iid": tests["test_iid"].take(args.robust_n, seed=0)}
    device = resolve_device(args.device)
    generator = load_generator(args) if any(ROWS[n].uses == "stylegan" for n in names) or args.generated_grid else None
    pgd_suite, pgd_name = eval_attack(args.eval_pgd)
    print(f"# shortcut benchmark: {args.n_train} train images {args.size}px, correlated {bench.correlated} (strength {bench.strength}), "
          f"{args.arch} width {args.width}, {args.epochs} epochs, batch {args.batch_size}, device {device}", flush=True)
    return Setup(train, tests, robust_set, shift_sets, pgd_suite, pgd_name, device, generator)


def run_row(args: argparse.Namespace, setup: Setup, name: str, spec: str, seed: int) -> dict[str, float]:
    """Train one recipe with one seed and measure it."""
    train, device = setup.train, setup.device
    torch.manual_seed(seed)
    clf = build_classifier(args.arch, train.num_classes, (train.channels, args.size, args.size), class_names=train.class_names,
                           device=device, **({"width": args.width} if args.arch in ("smallcnn", "preact_resnet") else {}))
    out = Path(args.runs) / f"{name}-s{seed}" if args.runs else None
    start = time.time()
    result = harden(clf, train, spec, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                    seed=seed, device=device, generator=setup.generator, out=out, progress=None)
    seconds = time.time() - start
    metrics = evaluate(result.classifier, setup.tests, ["clean"], seed=seed)
    metrics.update(evaluate(result.classifier, setup.robust_set, [f"corruptions@{args.severity:g}", setup.pgd_suite], seed=seed))
    steps_per_epoch = result.steps / max(1, len(result.history))
    return {
        "seed": seed,
        "train_seconds": seconds,
        # The median epoch excludes one-off work before training (a natra inversion, a model load).
        "step_ms": 1000 * statistics.median(r["seconds"] for r in result.history) / steps_per_epoch,
        "train_loss": result.history[-1]["train_loss"],
        "test_iid": metrics["test_iid/acc"],
        "test_shift": metrics["test_shift/acc"],
        **{s: metrics[f"{s}/acc"] for s in setup.shift_sets},
        "corruption": metrics["test_iid/corruptions.mean_acc"],
        "pgd": metrics[f"test_iid/{setup.pgd_name}.acc"],
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = selected_rows(args)
    specs = row_specs(args, names)
    protocols = row_protocols(args, names)
    setup = build_setup(args, names)
    if args.generated_grid:
        write_generated_grid(args.generated_grid, setup.train, setup.generator, args.generated, setup.device)
    rows: dict[str, list[dict]] = {}
    for name in names:
        seeds = args.slow_seeds if (name in SLOW and args.slow_seeds is not None) else args.seeds
        for seed in range(args.first_seed, args.first_seed + seeds):
            row = run_row(args, setup, name, specs[name], seed)
            rows.setdefault(name, []).append(row)
            print(f"{name:<18} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "seed"), flush=True)
    for path in args.merge:
        merge(json.loads(Path(path).read_text()), path, args, rows, specs, protocols)
    columns = ["test_iid", "test_shift", *setup.shift_sets, "corruption", "pgd", "train_seconds", "step_ms"]
    summary = summarise(rows, specs, protocols, columns)
    gap = gap_closed(summary)
    print()
    print(markdown(summary, columns, gap))
    targets = target_lines(summary, gap)
    for line in targets:
        print(line)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
                   f"{torch.cuda.get_device_name(setup.device) if setup.device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}",
        "command": "python " + " ".join(sys.argv),
        "args": vars(args),
        "models": models_used(args, names),
        "rows": rows,
        "summary": summary,
        "gap_closed": gap,
        "targets": targets,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


# Settings that must agree for rows of two runs to share one table.
SETUP = ("correlated", "strength", "n_train", "n_test", "size", "arch", "width", "epochs", "batch_size", "optimizer", "lr",
         "eval_pgd", "robust_n", "severity")


def merge(earlier: dict, path: str, args: argparse.Namespace, rows: dict, specs: dict, protocols: dict) -> None:
    """Add an earlier run's rows (same setup): new rows, or more seeds of the same recipe spec."""
    diffs = [k for k in SETUP if earlier["args"].get(k) != vars(args).get(k)]
    if diffs:
        raise SystemExit(f"--merge {path}: different settings {diffs}; rows are only comparable under the same setup")
    for name, rs in earlier["rows"].items():
        spec = earlier["summary"][name]["spec"]
        if name not in rows:
            rows[name], specs[name], protocols[name] = rs, spec, earlier["summary"][name]["protocol"]
        elif spec != specs[name] or {r["seed"] for r in rs} & {r["seed"] for r in rows[name]}:
            raise SystemExit(f"--merge {path}: row {name} has another spec ({spec} vs {specs[name]}) or the same seeds")
        else:
            rows[name] = sorted(rows[name] + rs, key=lambda r: r["seed"])


def summarise(rows: dict, specs: dict, protocols: dict, columns: list[str]) -> dict[str, dict]:
    """Mean and spread per column, in the table's order: honest rows, the instrument, privileged rows."""
    order = {p: i for i, p in enumerate(PROTOCOL_ORDER)}
    names = sorted(rows, key=lambda n: (order[protocols[n]], list(ROWS).index(n) if n in ROWS else len(ROWS)))
    return {name: {c: _stats([r[c] for r in rows[name] if c in r]) for c in columns}
            | {"seeds": len(rows[name]), "spec": specs[name], "protocol": protocols[name]} for name in names}


def write_generated_grid(path: str, train, generator, options: str, device: torch.device) -> None:
    """A picture of what the generated recipe trains on: per class, 5 training images then 5 samples."""
    import torch.nn.functional as F
    from torchvision.utils import save_image

    from robust.train.recipes import Batch, RecipeContext, get_recipe

    recipe = get_recipe(f"generated{options}")
    recipe.bind(RecipeContext(build_classifier("smallcnn", train.num_classes, (train.channels, *train.size), width=4), train, device,
                              generator=generator))
    tiles = []
    for k in range(train.num_classes):
        idx = (train.labels == k).nonzero().squeeze(1)[:5]
        (fake,) = recipe.views(Batch(train.images[idx].to(device), train.labels[idx].to(device), idx, idx, torch.Generator(), 0, 0), None)
        tiles += [*train.images[idx], *fake.cpu()]
    save_image(F.interpolate(torch.stack(tiles), scale_factor=2, mode="nearest"), path, nrow=10, padding=2, pad_value=1.0)
    print(f"# wrote {path}: per class, 5 training images then 5 samples of generated{options}", flush=True)


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None  # a column an earlier run did not measure
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def gap_closed(summary: dict) -> dict[str, float]:
    """Fraction of the erm -> oracle gap on test_shift each recipe closes."""
    if "erm" not in summary or "oracle" not in summary:
        return {}
    erm, oracle = summary["erm"]["test_shift"]["mean"], summary["oracle"]["test_shift"]["mean"]
    if oracle - erm <= 1e-9:
        return {}
    return {name: (s["test_shift"]["mean"] - erm) / (oracle - erm) for name, s in summary.items()}


def _cell(stat: dict | None, column: str, seeds: int) -> str:
    if stat is None:
        return "-"
    m, sd = stat["mean"], stat["std"]
    if column in ("train_seconds", "step_ms"):
        return f"{m:.0f}"
    return f"{100 * m:.1f} ± {100 * sd:.1f}" if seeds > 1 else f"{100 * m:.1f}"


def markdown(summary: dict, columns: list[str], gap: dict[str, float]) -> str:
    """The table: protocol first, then the figures; step cost also as a ratio to erm's."""
    heads = [{"train_seconds": "train s", "step_ms": "ms/step"}.get(c, c) for c in columns]
    lines = ["| protocol | recipe | seeds | " + " | ".join(heads) + " | step x erm | gap closed |", "|" + "---|" * (len(columns) + 5)]
    erm_step = (summary.get("erm", {}).get("step_ms") or {}).get("mean")
    for name, s in summary.items():
        cells = [_cell(s[c], c, s["seeds"]) for c in columns]
        step = s.get("step_ms")
        ratio = f"{step['mean'] / erm_step:.2f}" if step and erm_step else "-"
        g = f"{100 * gap[name]:.0f}%" if name in gap else "-"
        lines.append(f"| {PROTOCOL_NOTES[s['protocol']]} | {name} | {s['seeds']} | " + " | ".join(cells) + f" | {ratio} | {g} |")
    return "\n".join(lines)


def target_lines(summary: dict, gap: dict[str, float]) -> list[str]:
    """The targets, judged on the best honest NaTra row (privileged rows do not count)."""
    natra = [n for n in NATRA_ROWS if n in summary and summary[n]["protocol"] == HONEST]
    if not natra:
        return ["targets: no honest natra row in this run"]
    best = max(natra, key=lambda n: summary[n]["test_shift"]["mean"])
    out = [f"best honest natra row on test_shift: {best}"]
    if best in gap:
        out.append(f"gap closed {100 * gap[best]:.0f}% (target >= 60%, moonshot 80%): {'met' if gap[best] >= 0.6 else 'NOT met'}")
    for rival in RIVALS:
        if rival in summary:
            d = 100 * (summary[best]["test_shift"]["mean"] - summary[rival]["test_shift"]["mean"])
            out.append(f"test_shift vs {rival}: {d:+.1f} points (target >= +5): {'met' if d >= 5 else 'NOT met'}")
    if "erm" in summary:
        d = 100 * (summary["erm"]["test_iid"]["mean"] - summary[best]["test_iid"]["mean"])
        out.append(f"test_iid cost vs erm: {d:.1f} points (target <= 1): {'met' if d <= 1 else 'NOT met'}")
        step, erm_step = summary[best].get("step_ms"), summary["erm"].get("step_ms")
        if step and erm_step:
            out.append(f"training step cost: {step['mean'] / erm_step['mean']:.2f}x erm ({step['mean']:.0f} vs {erm_step['mean']:.0f} ms)")
    return out


if __name__ == "__main__":
    main()
