"""``robust demo``: the main job with nothing but the installed package.

Train a small classifier on the shortcut split of the synthetic benchmark (or reuse one), audit it
(clean accuracy, distribution shift, corruptions, a pixel attack, worst-case transforms, and the
generator suites when the demo generator ships), and print where the report is. The report shows the
shortcut: near-perfect accuracy while object hue and background texture follow the class, far
lower once they do not. Exit code 0 (gates failing is the point of the demo), 3 if a suite errored.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from robust.cli.common import announce_suite, device_option, quiet_option, seed_option, threads_option


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run: the full one (a few minutes on 2 CPU cores) or the quick one (seconds).

    ``generator`` lists the generator suites run when the demo generator ships (before the
    transform search, the most expensive of the rest). ``time_budget`` (seconds of audit) keeps the
    whole demo under five minutes on two CPU cores: suites that would start later are reported as
    skipped, and budget-aware suites (sage) size their search to what is left.
    """

    size: int
    width: int
    train_samples: int
    epochs: int
    samples: int
    suites: tuple[str, ...]
    generator: tuple[str, ...] = ()
    time_budget: float | None = None
    batch_size: int = 128


FULL = DemoPlan(32, 16, 4000, 2, 300, (
    "clean",
    "shift,sweep_n=100,steps=6",
    "corruptions,n=150",
    "pgd:linf@8/255,steps=10,grid=2/255+4/255+8/255,n=150",
    "transforms,names=hue+rotation+scale+brightness+blur+illumination,n=100,steps=7",
), generator=(
    "natural,n=64,max_directions=4,invert_steps=15,expand=16",
    "sage,queries=512,regions=4",
), time_budget=200.0)
# Small batches give the quick run enough optimiser steps to learn (a real, if rough, classifier).
QUICK = DemoPlan(16, 8, 1000, 2, 24, (
    "clean",
    "shift,sweep=obj_hue,sweep_n=24,steps=3",
    "corruptions,names=gaussian_noise,severities=3",
    "pgd:linf@4/255,steps=1",
    "transforms:brightness,sweep_steps=3",
), batch_size=32)
GATES = ("clean.acc>=0.8", "shift.shift_acc>=0.8", "corruptions.mean_acc>=0.5", "pgd.acc>=0.2")


def generator_suites(wanted: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """``("demo", specs)``: the ``wanted`` generator suite specs whose suites are installed, when the
    demo generator ships (the natural suite on the shipped structure/appearance model when that
    ships too); ``(None, [])`` otherwise."""
    from robust.audit import GENERATOR_SUITES, load_suites

    try:
        import robust.gan as gan
    except ImportError:
        return None, []
    if not hasattr(gan, "load_demo"):
        return None, []
    asset = Path(__file__).resolve().parents[1] / "assets"
    if not any(asset.glob("demo_generator.*")):
        return None, []
    from robust.gan.natural import shipped

    registry = load_suites()
    available = {s for s in GENERATOR_SUITES if s in registry}
    suites = [s for s in wanted if s.split(",")[0].split(":")[0] in available]
    # The natural suite moves the shortcut with the structure/appearance model when it is installed (sage keeps the generator).
    suites = [f"{s},model=swap" if s.startswith("natural") and shipped("swap") else s for s in suites]
    return ("demo", suites) if suites else (None, [])


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="robust-demo", show_default=True, help="Folder for the classifier and the report.")
@click.option("--classifier", "classifier_path", type=click.Path(), default=None,
              help="Audit this checkpoint instead of training one (it must take the benchmark's images).")
@click.option("--epochs", type=click.IntRange(1, 100), default=None, help="Training epochs (default 2, also with --quick).")
@click.option("--quick", is_flag=True, help="A seconds-long run at 16x16 with a few images per suite (for smoke tests).")
@click.option("--no-generator", is_flag=True, help="Leave out the generator suites even when the demo generator is installed.")
@quiet_option
@threads_option
@seed_option
@device_option
@click.pass_context
def demo(ctx: click.Context, out: str, classifier_path: str | None, epochs: int | None, quick: bool, no_generator: bool,
         quiet: bool, threads: int | None, seed: int, device: str) -> None:
    """Train a small classifier on the shortcut split of the synthetic benchmark and audit it.

    Finishes in a few minutes on 2 CPU cores (faster on a GPU); the report shows where the
    classifier breaks, starting with the shortcut it learned.

    Example: robust demo --out robust-demo
    """
    from reports import format_summary
    from robust.audit import AuditConfig, exit_code, run_audit
    from robust.io import check_writable
    from robust.models import build_classifier, load_classifier, save_classifier
    from robust.seeding import resolve_device
    from robust.synthetic import SyntheticBenchmark
    from robust.train import fit

    plan = QUICK if quick else FULL
    out_dir = check_writable(out, "--out")
    dev = resolve_device(device)
    bench = SyntheticBenchmark(size=plan.size, seed=seed)
    shown = False if quiet else None
    start = time.time()
    if classifier_path is None:
        train = bench.split("train", plan.train_samples)
        click.echo(f"training smallcnn on {len(train)} images of the shortcut split ({plan.size}x{plan.size}; "
                   f"{', '.join(bench.correlated)} follow the class with probability {bench.strength:g}) on {dev}")
        clf = build_classifier("smallcnn", len(train.class_names), (3, plan.size, plan.size), class_names=train.class_names,
                               device=dev, width=plan.width, seed=seed)
        history = fit(clf, train, epochs=epochs or plan.epochs, batch_size=plan.batch_size, seed=seed, progress=shown)
        save_classifier(clf, out_dir / "classifier", extra={"demo": True, "seed": seed, "history": history})
        click.echo(f"trained in {time.time() - start:.0f}s (training accuracy {history[-1]['acc']:.3f}); "
                   f"saved {out_dir / 'classifier.safetensors'}")
    else:
        clf = load_classifier(classifier_path, device=dev)

    generator, extra = (None, []) if no_generator else generator_suites(plan.generator)
    # Generator suites go before the transform search so the time budget reaches them first.
    suites = [*plan.suites[:-1], *extra, plan.suites[-1]]
    click.echo(f"auditing: {', '.join(s.split(',')[0] for s in suites)}")
    config = AuditConfig(suites, gates=GATES, out=out_dir, seed=seed, max_samples=plan.samples, device=dev, time_budget=plan.time_budget,
                         progress=shown)
    result = run_audit(clf, f"synthetic:test_iid,size={plan.size}", config, generator=generator,
                       on_suite=None if quiet else announce_suite)
    click.echo(format_summary(result, out_dir, color=sys.stdout.isatty()))
    shift = next((s for s in result.suites if s.name == "shift" and s.status == "ok"), None)
    if shift is not None:
        click.echo(f"shortcut: accuracy {shift.metrics['iid_acc']:.3f} while hue and texture follow the class, "
                   f"{shift.metrics['shift_acc']:.3f} when they do not (the shift section of the report shows why).")
    click.echo(f"demo finished in {time.time() - start:.0f}s; open {(out_dir / 'index.html').resolve()}")
    code = exit_code(result)
    ctx.exit(code if code == 3 else 0)
