"""``robust train``: train or harden a classifier with recipes, evaluate every epoch, resume, run under torchrun."""
from __future__ import annotations

import re
from pathlib import Path

import click

from robust.cli.common import device_option, quiet_option, seed_option, threads_option


_EVAL_NAME = re.compile(r"^([A-Za-z_][\w\-]*)=")


def _list_recipes(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from robust.train.recipes import RECIPES

    for name in RECIPES.names():
        doc = (RECIPES.get(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:<10} {doc[0] if doc else ''}")
    ctx.exit(0)


@click.command()
@click.option("--model", default="smallcnn", show_default=True,
              help="Architecture (smallcnn, preact_resnet, timm:<name>) or a checkpoint to fine-tune.")
@click.option("--data", "data_spec", required=True, help="Training data: synthetic:train, digits:train, a folder, .npz or .pt.")
@click.option("-n", "--n", "n", type=click.IntRange(1), default=None, help="Train on a seeded, class-balanced subset of this many images.")
@click.option("--eval", "eval_specs", multiple=True, metavar="[NAME=]DATA",
              help="Evaluation set, repeatable (e.g. --eval synthetic:test_shift or --eval val=data/val.npz).")
@click.option("--eval-n", type=click.IntRange(1), default=None, help="Evaluate on at most this many images per set.")
@click.option("--suite", "suites", multiple=True, default=("clean",), show_default=True, metavar="SPEC",
              help="Per-epoch evaluation suite (an audit suite), repeatable: clean, corruptions@3, pgd:linf@8/255,steps=10, "
                   "natra:random@0.5 (,on=<set>); logged as <set>/acc, <set>/loss and <set>/<suite>.<metric>.")
@click.option("--recipe", default="erm", show_default=True,
              help="Recipe or mixture: erm, oracle, pgd:linf@8/255, augmix, corrupt, classic, natra:gradient, natra+classic, 0.7*pgd+0.3*erm.")
@click.option("--list-recipes", is_flag=True, expose_value=False, is_eager=True, callback=_list_recipes, help="List the recipes and exit.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True, help="Global batch (split over torchrun processes).")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--lr", type=float, default=None, help="Base learning rate [default: 2e-3 for adamw, 0.1 for sgd].")
@click.option("--weight-decay", type=float, default=None, help="[default: 0.05 for adamw, 5e-4 for sgd]")
@click.option("--schedule", type=click.Choice(["cosine", "constant", "step"]), default="cosine", show_default=True)
@click.option("--warmup-steps", type=click.IntRange(0), default=None, help="Linear warm-up steps [default: 5% of the run].")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True)
@click.option("--ema", "ema_decay", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Keep an EMA of the weights with this decay (e.g. 0.999); it is evaluated and saved.")
@click.option("--grad-clip", type=click.FloatRange(0, min_open=True), default=None, help="Clip the gradient norm.")
@click.option("--amp/--no-amp", default=None, help="bf16 autocast [default: on for CUDA].")
@click.option("--channels-last/--no-channels-last", default=None, help="[default: on for CUDA]")
@click.option("--sync-bn", is_flag=True, help="SyncBatchNorm across torchrun processes (CUDA only).")
@click.option("--select", default=None, help="Metric the best checkpoint maximises [default: <first eval set>/acc].")
@click.option("--checkpoint-every", type=click.IntRange(1), default=None, help="Also save the resumable state every N steps.")
@click.option("--generator", "generator_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Model for the natra and generated recipes: a generator or a structure/appearance (swap) model file "
                   "(default: the shipped one).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder: log.jsonl, best/last checkpoints, state.")
@click.option("--resume", is_flag=True, help="Continue the run saved in --out (same arguments) where it stopped.")
@quiet_option
@threads_option
@seed_option
@device_option
def train(model: str, data_spec: str, n: int | None, eval_specs: tuple[str, ...], eval_n: int | None, suites: tuple[str, ...],
          recipe: str, epochs: int, batch_size: int, optimizer: str, lr: float | None, weight_decay: float | None, schedule: str,
          warmup_steps: int | None, label_smoothing: float, ema_decay: float | None, grad_clip: float | None, amp: bool | None,
          channels_last: bool | None, sync_bn: bool, select: str | None, checkpoint_every: int | None, generator_path: str | None,
          out: str, resume: bool, quiet: bool, threads: int | None, seed: int, device: str) -> None:
    """Train or harden a classifier; evaluate every epoch; keep best/last checkpoints and a resumable state.

    \b
    Example:
      robust train --data synthetic:train --eval synthetic:test_iid --eval synthetic:test_shift \\
          --recipe pgd:linf@4/255,steps=5 --epochs 15 --out runs/pgd
    \b
    Several processes (one per GPU, or gloo on CPUs):
      torchrun --nproc_per_node 2 -m robust.cli train --data synthetic:train --out runs/ddp
    """
    from robust.data import load_dataset
    from robust.io import check_writable
    from robust.train import TrainConfig, harden
    from robust.train.distributed import setup_from_env, teardown
    from robust.train.evaluation import resolve_suite
    from robust.train.loop import eval_set_name
    from robust.train.recipes import parse_recipes

    # Every spec is checked, and the run folder made, before any data is loaded.
    parse_recipes(recipe)
    for text in suites:
        resolve_suite(text)
    check_writable(out, "--out")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay, schedule=schedule,
                         warmup_steps=warmup_steps, label_smoothing=label_smoothing, ema_decay=ema_decay, grad_clip=grad_clip, amp=amp,
                         channels_last=channels_last, sync_bn=sync_bn, eval_suites=suites, select=select,
                         checkpoint_every=checkpoint_every, seed=seed)
    world, device = setup_from_env(device)
    try:
        train_data = load_dataset(data_spec, n=n, seed=seed)
        eval_sets = {}
        for spec in eval_specs:
            named = _EVAL_NAME.match(spec)  # NAME=DATA; a data spec's own options (shapes/val,size=32) are not a name
            name, source = (named.group(1), spec[named.end():]) if named else ("", spec)
            data = load_dataset(source, n=eval_n, seed=seed)
            eval_sets[name or eval_set_name(data.name)] = data
        generator = None
        if "natra" in recipe or "generated" in recipe or any(s.startswith("natra") for s in suites):
            from robust.gan import load_demo, load_model

            # natra picks its own default (robust.gan.natural.resolve_model); generated needs the demo generator.
            generator = load_model(generator_path) if generator_path else load_demo() if "generated" in recipe else None
        result = harden(model, train_data, recipe, eval_sets=eval_sets, config=config, out=out, resume=resume, generator=generator,
                        device=device, progress=False if quiet else None)
        if world.is_main:
            click.echo(f"trained {result.recipe} for {result.steps} steps in {result.seconds:.0f}s on {device} x{world.size}")
            for key, value in result.metrics.items():
                click.echo(f"  {key:<32} {value:.4f}")
            if result.best:
                click.echo(f"best {result.best['metric']} = {result.best['value']:.4f} at epoch {result.best['epoch']}")
            written = [name for name in ("best.safetensors", "last.safetensors", "log.jsonl") if (Path(out) / name).is_file()]
            click.echo(f"run folder: {out} ({', '.join(written)})")
    finally:
        teardown()
