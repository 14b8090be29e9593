"""``robust gan``: train, sample, measure and import StyleGAN2-ADA generators; train structure/appearance (swap) models."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from robust.cli.common import device_option, progress, seed_option, threads_option
from robust.provenance import command_line, hardware


@click.group()
def gan() -> None:
    """Models of natural variation: our own StyleGAN2-ADA, and a structure/appearance (swap) model.

    \b
    Presets: tiny (tests), synthetic32 (the demo generator), cifar, paper256; swap models: tiny, default.
    Example: robust gan train --data synthetic:generator --condition class,texture,fill,mark --out runs/demo
    Example: robust gan train --model swap --data myfolder --minutes 120 --out runs/swap
    """


def _overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    from robust.errors import InputError
    from robust.registry import _parse_value

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError("--set", "key=value (a GANConfig field)", pair)
        key, value = pair.split("=", 1)
        out[key.strip()] = None if value.strip().lower() == "none" else _parse_value(value.strip())
    return out


def _relaunch_distributed(gpus: int) -> None:
    """Re-run this command under torchrun with ``gpus`` processes (without the ``--gpus`` option)."""
    import subprocess

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--gpus":
            skip = True
            continue
        if arg.startswith("--gpus="):
            continue
        args.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m", "robust.cli", *args]
    raise SystemExit(subprocess.call(cmd))


@gan.command()
@click.option("--model", "model_kind", type=click.Choice(["stylegan", "swap"]), default="stylegan", show_default=True,
              help="stylegan: a StyleGAN2-ADA generator; swap: a structure/appearance model of the images (no labels used).")
@click.option("--data", "data_spec", default="synthetic:generator", show_default=True,
              help="Dataset (a built-in name or a path); with --model swap the default is synthetic:train.")
@click.option("--limit", "n", type=click.IntRange(1), default=None, help="Use a seeded subset of this many images.")
@click.option("--condition", default="class", show_default=True,
              help="Comma-separated token groups: class and/or categorical factors (texture,fill,mark); 'none' for unconditional.")
@click.option("--preset", "preset_name", default="synthetic32", show_default=True,
              help="tiny, synthetic32, cifar or paper256; with --model swap: tiny or default.")
@click.option("--set", "overrides", multiple=True,
              help="Override a config field, e.g. --set batch=64 --set r1_gamma=0.1 (swap: --set network.appearance_dim=64).")
@click.option("--kimg", type=float, default=None, help="Train until this many thousand real images were shown (default: the preset's).")
@click.option("--snapshot-kimg", type=float, default=None, help="Snapshot (+ grid + metrics) every this many kimg.")
@click.option("--minutes", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this much training time (then snapshot and export as usual).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder (snapshots, sample grids, log.jsonl).")
@click.option("--resume", type=click.Path(exists=True), default=None, help="A snapshot, or a run folder (its latest snapshot).")
@click.option("--init", "init_path", default=None,
              help="Start a new run from this trained generator ('demo', ours, a snapshot or an official .pkl) with the same "
                   "architecture and conditioning; the discriminator starts fresh unless --init-discriminator is given "
                   "(consider --set d_warmup_kimg=20).")
@click.option("--init-discriminator", default=None,
              help="With --init: a discriminator file written by 'robust gan import --with-discriminator'.")
@click.option("--new-data", is_flag=True, default=False, help="With --resume: allow data other than the snapshot's (fine-tuning).")
@click.option("--metrics", "metric_names", default="auto", show_default=True,
              help="Metrics at each snapshot: synthetic, fd, none, or auto (synthetic on the synthetic benchmark).")
@click.option("--metric-samples", type=click.IntRange(100), default=2000, show_default=True, help="Samples per snapshot metric.")
@click.option("--export", type=click.Path(dir_okay=False), default=None,
              help="Also write the final EMA generator here (with a provenance JSON); with --model swap the model is always "
                   "written, by default to <out>/swap_model.")
@threads_option
@click.option("--gpus", type=click.IntRange(1), default=1, show_default=True, help="More than 1: re-run under torchrun (one process per GPU).")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Progress (default on: a bar on a terminal, lines in logs).")
@seed_option
@device_option
def train(model_kind: str, data_spec: str, n: int | None, condition: str, preset_name: str, overrides: tuple[str, ...],
          kimg: float | None, snapshot_kimg: float | None, minutes: float | None, out: str, resume: str | None, init_path: str | None,
          init_discriminator: str | None, new_data: bool, metric_names: str,
          metric_samples: int, export: str | None, threads: int | None, gpus: int, show_progress: bool | None, seed: int,
          device: str) -> None:
    """Train a StyleGAN2-ADA generator (resumable; bit-exact on a CPU), or with --model swap a structure/appearance model.

    \b
    Example: robust gan train --data synthetic:generator --condition class,texture,fill,mark --preset synthetic32 --kimg 300 --out runs/demo
    \b
    A structure/appearance model of your own images (only the images are used, not their labels), then NaTra with it:
      robust gan train --model swap --data myfolder --kimg 160 --out runs/swap
      robust gan train --model swap --data myfolder --kimg 320 --out runs/swap --resume runs/swap
      robust train --data myfolder --recipe natra --generator runs/swap/swap_model.safetensors --out runs/natra
    """
    import os

    if model_kind == "swap":
        _refuse_stylegan_options(gpus)
        if click.get_current_context().get_parameter_source("data_spec") is click.core.ParameterSource.DEFAULT:
            data_spec = "synthetic:train"  # the honest protocol: the training split's images, never the decorrelated one
        _train_swap(data_spec, n, preset_name, _overrides(overrides), kimg=kimg, snapshot_kimg=snapshot_kimg, minutes=minutes, out=out,
                    resume=resume, export=export, threads=threads, show_progress=show_progress, seed=seed, device=device)
        return

    from robust.data import load_dataset
    from robust.gan.presets import preset
    from robust.gan.training import prepare_data

    if init_path is not None and resume is not None:
        raise click.BadParameter("--init starts a new run from a generator; --resume continues a run: give one", param_hint="--init")
    if init_discriminator is not None and init_path is None:
        raise click.BadParameter("needs --init (the generator it goes with)", param_hint="--init-discriminator")
    dev, rank, world = _start_processes(gpus, threads, device)
    config = preset(preset_name, **_overrides(overrides))
    groups = [] if condition.strip().lower() in ("", "none") else [g.strip() for g in condition.split(",") if g.strip()]
    dataset = load_dataset(data_spec, n=n, seed=seed)
    data = prepare_data(dataset, groups, resolution=config.resolution)
    metrics = _build_metrics(metric_names, data_spec, dataset, dev, seed, metric_samples) if rank == 0 else {}
    trainer, resume_path = _trainer(config, data, seed, dev, metrics, rank, world, resume=resume, overrides=_overrides(overrides),
                                    new_data=new_data, init_path=init_path, init_discriminator=init_discriminator)
    total = kimg if kimg is not None else trainer.config.kimg
    command = command_line(world)
    trainer.runs.append({"command": command, "hardware": hardware(dev), "world_size": world,
                         "load_average_at_start": round(os.getloadavg()[0], 1),
                         "from_kimg": trainer.cur_nimg / 1000, "started": time.strftime("%Y-%m-%d %H:%M")})
    if rank == 0:
        click.echo(f"{data.name}: {len(data)} images {data.resolution}x{data.resolution}, conditioning {data.conditioning}; "
                   f"preset {trainer.config.name}; G {sum(p.numel() for p in trainer.G.parameters()):,} params, "
                   f"D {sum(p.numel() for p in trainer.D.parameters()):,}; {hardware(dev)}; "
                   f"from kimg {trainer.cur_nimg / 1000:.1f} to {total:g}", err=True)
    bar = progress(total=round(total * 1000), desc="gan", unit="img", enabled=show_progress)
    bar.update(trainer.cur_nimg)
    try:
        history = trainer.run(total, out_dir=out, snapshot_kimg=snapshot_kimg, on_step=_progress_hook(bar),
                              max_seconds=minutes * 60 if minutes else None)
    finally:
        bar.close()
    if rank != 0:
        return
    final = history[-1] if history else {}
    click.echo("final: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()))
    if export:
        provenance = {"command": command, "hardware": hardware(dev), "world_size": world,
                      "data": {"spec": data_spec, "name": data.name, "n": len(data), "fingerprint": data.fingerprint},
                      "resumed_from": str(resume_path) if resume_path else None, "metrics": {k: v for k, v in final.items()}}
        _export_trained(trainer, export, provenance)


# -- the structure/appearance (swap) model ------------------------------------------------------------

_STYLEGAN_OPTIONS = ("condition", "init_path", "init_discriminator", "new_data", "metric_names", "metric_samples")


def _refuse_stylegan_options(gpus: int) -> None:
    ctx = click.get_current_context()
    given = [f"--{name.replace('_path', '').replace('_names', 's').replace('_', '-')}" for name in _STYLEGAN_OPTIONS
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if gpus > 1:
        given.append("--gpus")
    if given:
        raise click.UsageError(f"{', '.join(given)} belong to StyleGAN training; --model swap takes --data, --limit, --preset, --set, "
                               "--kimg, --snapshot-kimg, --minutes, --out, --resume, --export, --threads, --seed, --device")


def _swap_config(preset_name: str, dataset: Any, overrides: dict[str, Any], latest: Path | None) -> Any:
    """A new run's configuration (``preset_name`` tiny/default, the data's resolution and channels, ``overrides``),
    or a resumed run's own."""
    from robust.gan.swap_training import SwapTrainConfig
    from robust.io import checkpoint_paths, read_json

    if latest is not None:
        if overrides:
            raise click.UsageError("--set configures a new run; a resumed run keeps its configuration (--kimg and --snapshot-kimg apply)")
        return SwapTrainConfig.from_dict(read_json(checkpoint_paths(latest)[1])["config"])
    h, w = dataset.size
    if h != w or h < 8 or h & (h - 1):
        raise click.BadParameter(f"the swap model takes square images whose side is a power of two (16, 32, 64 ...), got {h}x{w}",
                                 param_hint="--data")
    if preset_name not in ("tiny", "default", "synthetic32"):
        raise click.BadParameter(f"swap model presets: tiny or default, got {preset_name}", param_hint="--preset")
    network: dict[str, Any] = {"resolution": h, "img_channels": dataset.channels}
    config: dict[str, Any] = {}
    if preset_name == "tiny":
        network.update(structure_res=4, structure_channels=2, appearance_dim=8, width=8, channel_max=16)
        config.update(batch=4, patch_size=8, patch_refs=2, patch_queries=1, d_width=4, d_channel_max=16, r1_interval=2, ema_kimg=0.01,
                      steps=4, snapshot_every=2)
    for key, value in overrides.items():
        (network if key.startswith("network.") else config)[key.removeprefix("network.")] = value
    return SwapTrainConfig.from_dict({**config, "network": network})


def _swap_run_folder(out: Path, resume: str | None) -> Path | None:
    """The newest snapshot to continue from (``--resume``: the run folder ``--out`` or its newest snapshot), or None for a new run."""
    from robust.gan.training import latest_snapshot

    latest = latest_snapshot(out) if out.is_dir() else None
    if resume is None:
        if latest is not None:
            raise click.BadParameter(f"{out} holds a run ({latest.name}): continue it with --resume {out}, or choose another --out",
                                     param_hint="--out")
        return None
    chosen = Path(resume)
    folder = chosen if chosen.is_dir() else chosen.parent
    if folder.resolve() != out.resolve() or latest is None or (chosen.is_file() and chosen.with_suffix(".safetensors") != latest):
        raise click.BadParameter(f"a swap run continues in its own folder from its newest snapshot: give --resume {out} "
                                 f"(the --out folder{', newest ' + latest.name if latest else ', which holds no snapshot'})",
                                 param_hint="--resume")
    return latest


def _train_swap(data_spec: str, n: int | None, preset_name: str, overrides: dict[str, Any], *, kimg: float | None,
                snapshot_kimg: float | None, minutes: float | None, out: str, resume: str | None, export: str | None,
                threads: int | None, show_progress: bool | None, seed: int, device: str) -> None:
    """``robust gan train --model swap``: train (or continue) a structure/appearance model and write it with its provenance."""
    import math
    from dataclasses import replace

    from robust.data import load_dataset
    from robust.gan.swap_training import swap_data, train_swap

    dev, _, _ = _start_processes(1, threads, device)
    out_dir = Path(out)
    latest = _swap_run_folder(out_dir, resume)
    dataset = load_dataset(data_spec, n=n, seed=seed)
    config = _swap_config(preset_name, dataset, overrides, latest)
    if kimg is not None:
        config = replace(config, steps=max(1, math.ceil(kimg * 1000 / config.batch)))
    if snapshot_kimg is not None:
        config = replace(config, snapshot_every=max(1, round(snapshot_kimg * 1000 / config.batch)))
    data = swap_data(dataset, data_spec + (f" n={n}" if n else ""))
    click.echo(f"{data.name}: {len(data)} images {config.network.resolution}x{config.network.resolution} (labels unused); swap model "
               f"{config.network.to_dict()}; {hardware(dev)}; " + (f"resuming {latest.name}; " if latest else "") +
               f"to step {config.steps} (batch {config.batch})", err=True)
    bar = progress(total=config.steps, desc="swap", unit="step", enabled=show_progress)
    on_step = _swap_progress(bar, config)
    try:
        trainer = train_swap(data, config, out_dir, seed=seed, device=dev, max_seconds=minutes * 60 if minutes else None, on_step=on_step)
    finally:
        bar.close()
    extra = {"command": command_line(), "hardware": hardware(dev), "date": time.strftime("%Y-%m-%d %H:%M"),
             "data": {"spec": data_spec, "n": len(data), "fingerprint": data.fingerprint},
             "protocol": "the images only: no labels, factors or tokens"}
    paths = trainer.export(export or out_dir / "swap_model", extra)
    click.echo(f"step {trainer.step_count} of {config.steps} in {trainer.wall_seconds:.0f}s; snapshots and log.jsonl in {out_dir}")
    click.echo(f"swap model written to {paths[0]} (use: robust train --recipe natra --generator {paths[0]})")


def _swap_progress(bar: Any, config: Any) -> Any:
    """``on_step`` for the swap trainer: advance the bar (losses at most once a second) and print a line at every snapshot."""
    last = {"t": 0.0, "step": None}

    def on_step(step: int, stats: dict[str, float]) -> None:
        if last["step"] is None:
            bar.update(step - 1)
        last["step"] = step
        bar.update(1)
        text = " ".join(f"{k} {v:.3f}" for k, v in stats.items())
        now = time.time()
        if now - last["t"] > 1.0:
            last["t"] = now
            bar.set_postfix_str(text)
        if step % config.snapshot_every == 0 or step == config.steps:
            click.echo(f"step {step}/{config.steps}: {text}", err=True)

    return on_step


def _start_processes(gpus: int, threads: int | None, device: str) -> tuple[Any, int, int]:
    """``(device, rank, world size)``: re-launched under torchrun for several GPUs, the process group joined."""
    import torch

    from robust.gan.training import distributed_env
    from robust.seeding import resolve_device

    rank, world, local_rank = distributed_env()
    if gpus > 1 and world == 1:
        _relaunch_distributed(gpus)
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    if world > 1:
        import torch.distributed as dist

        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return dev, rank, world


def _trainer(config: Any, data: Any, seed: int, dev: Any, metrics: dict[str, Any], rank: int, world: int, *, resume: str | None,
             overrides: dict[str, Any], new_data: bool, init_path: str | None, init_discriminator: str | None) -> tuple[Any, Path | None]:
    """A trainer resumed from ``resume`` (a snapshot or a run folder) or a new one (from ``init_path``
    when given), and the snapshot it resumed."""
    from robust.gan.training import Trainer, latest_snapshot

    if resume is None:
        trainer = Trainer(config, data, seed=seed, device=dev, metrics=metrics, rank=rank, world_size=world)
        if init_path is not None:
            from robust.gan.checkpoint import DEMO_GENERATOR

            trainer.initialise_from(DEMO_GENERATOR if init_path == "demo" else init_path, init_discriminator)
        return trainer, None
    resume_path = Path(resume)
    if resume_path.is_dir():
        resume_path = latest_snapshot(resume_path)
        if resume_path is None:
            raise click.BadParameter(f"no snapshot-*.safetensors in {resume}", param_hint="--resume")
    trainer = Trainer.resume(resume_path, data, device=dev, metrics=metrics, rank=rank, world_size=world,
                             config_overrides=overrides or None, check_data=not new_data)
    return trainer, resume_path


def _progress_hook(bar: Any) -> Any:
    """``on_step`` for :meth:`Trainer.run`: advance the bar, and show the losses at most once a second."""
    last = {"t": 0.0}

    def on_step(stats: Any) -> None:
        bar.update(stats.kimg * 1000 - bar.n)
        now = time.time()
        if now - last["t"] > 1.0:
            last["t"] = now
            s = stats.losses
            bar.set_postfix_str(f"kimg {stats.kimg:.1f} G {s.get('loss_G', 0):.3f} D {s.get('loss_D', 0):.3f} p {stats.p:.3f}")

    return on_step


def _export_trained(trainer: Any, path: str, provenance: dict[str, Any]) -> None:
    """Write the final EMA generator to ``path`` with the run's provenance."""
    import torch

    from robust.gan.checkpoint import save_generator

    extra = {
        "command": provenance["command"], "runs": trainer.runs, "seed": trainer.seed, "hardware": provenance["hardware"],
        "world_size": provenance["world_size"], "wall_seconds": round(trainer.wall_seconds, 1), "kimg": trainer.cur_nimg / 1000,
        "preset": trainer.config.to_dict(), "data": provenance["data"], "resumed_from": provenance["resumed_from"],
        "metrics": provenance["metrics"], "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
    }
    paths = save_generator(trainer.G_ema, path, extra)
    click.echo(f"generator written to {paths[0]}")


def _build_metrics(names: str, data_spec: str, dataset: Any, device: Any, seed: int, n: int) -> dict[str, Any]:
    chosen = [m.strip() for m in names.split(",") if m.strip()]
    if chosen in ([], ["none"]):
        return {}
    from robust.gan import metrics as gm

    if chosen == ["auto"]:
        chosen = ["synthetic"] if str(data_spec).startswith("synthetic") and gm.oracle_available() else []
    return {name: gm.snapshot_metric(name, dataset, device=device, seed=seed, n=n) for name in chosen}


@gan.command("oracle")
@click.option("-n", "--n", type=click.IntRange(1000), default=30_000, show_default=True, help="Training renders.")
@click.option("--epochs", type=click.IntRange(1), default=6, show_default=True)
@click.option("--width", type=click.IntRange(4), default=16, show_default=True, help="SmallCNN width.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Prefix for <out>.safetensors/.json (oracle) and <out>_factors.* (regressor); default: the package assets.")
@threads_option
@click.option("--seed", type=int, default=1, show_default=True, help="Benchmark seed of the training renders (not the generator's data).")
@device_option
def oracle(n: int, epochs: int, width: int, out: str | None, threads: int | None, seed: int, device: str) -> None:
    """Train the oracle and factor regressor that judge generators of the synthetic benchmark.

    Example: robust gan oracle --n 30000 --epochs 6
    """
    import torch

    from robust.gan import metrics as gm
    from robust.seeding import resolve_device

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    start = time.time()
    oracle_model, regressor, report = gm.train_oracle(
        n=n, epochs=epochs, width=width, seed=seed, device=dev,
        on_epoch=lambda r: click.echo(f"epoch {r['epoch']}: loss {r['loss']:.3f}, held-out class acc {r['acc.class']:.4f}", err=True))
    report["seconds"] = round(time.time() - start, 1)
    report["hardware"] = hardware(dev)
    report["command"] = command_line()
    oracle_path = Path(out) if out else gm.ORACLE
    regressor_path = Path(str(out) + "_factors") if out else gm.FACTOR_REGRESSOR
    gm.save_oracle(oracle_model, regressor, report, oracle_path=oracle_path, regressor_path=regressor_path)
    click.echo("held-out: " + ", ".join(f"{k}={v:.3f}" for k, v in report.items() if k.startswith(("acc.", "mae."))))
    click.echo(f"oracle written to {oracle_path}.safetensors, regressor to {regressor_path}.safetensors")


def _load_generator(spec: str, device: Any) -> Any:
    from robust.gan.natural import load_model

    return load_model(spec, device, kind="stylegan")


# The choices of robust.gan.networks.TRUNCATION_CENTERS (not imported here: the CLI loads torch lazily).
truncation_center_option = click.option(
    "--truncation-center", type=click.Choice(["mean", "condition"]), default="mean", show_default=True,
    help="Truncate toward the mean w, or toward the mean w of each sample's own conditioning (class and tokens).")


@gan.command()
@click.option("--generator", "generator_spec", default="demo", show_default=True,
              help="'demo' (the shipped generator), a generator/snapshot checkpoint or an official .pkl.")
@click.option("-n", "--n", "count", type=click.IntRange(1, 4096), default=64, show_default=True, help="Number of samples.")
@click.option("--prompt", default=None, help="Fix some tokens, e.g. class=disk,texture=stripes (others drawn at random).")
@click.option("--psi", type=float, default=1.0, show_default=True, help="Truncation psi (1: none).")
@truncation_center_option
@click.option("--columns", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="samples.png", show_default=True, help="PNG grid to write.")
@click.option("--npz", type=click.Path(dir_okay=False), default=None, help="Also save images, labels and tokens to this .npz.")
@seed_option
@device_option
def sample(generator_spec: str, count: int, prompt: str | None, psi: float, truncation_center: str, columns: int, out: str,
           npz: str | None, seed: int, device: str) -> None:
    """Draw samples from a generator into a PNG grid (and optionally an .npz dataset).

    Example: robust gan sample --generator demo --prompt class=star,texture=stripes -n 16 --out stars.png
    """
    import torch

    from robust.gan.metrics import generate
    from robust.gan.training import write_png
    from robust.seeding import derive_seed, make_generator, resolve_device

    G = _load_generator(generator_spec, resolve_device(device))
    tokens = None
    if G.conditioning is not None:
        tokens = G.conditioning.sample(count, make_generator(derive_seed(seed, "sample-tokens")))
        for group, index in (G.conditioning.parse(prompt) if prompt else {}).items():
            tokens[group] = torch.full((count,), index, dtype=torch.long)
    elif prompt:
        raise click.BadParameter("this generator is unconditional", param_hint="--prompt")
    images, tokens = generate(G, count, tokens=tokens, seed=seed, truncation_psi=psi, truncation_center=truncation_center)
    write_png(out, images, columns)
    click.echo(f"wrote {out} ({count} samples)")
    if npz:
        from robust.data import ImageSet

        if tokens and "class" in tokens:
            labels, names = tokens["class"], G.conditioning.tokens("class")
        else:
            labels, names = torch.zeros(count, dtype=torch.long), ["sample"]
        ImageSet(images, labels, names, factors={k: v for k, v in tokens.items() if k != "class"}, name="gan-samples").save_npz(npz)
        click.echo(f"wrote {npz}")


@gan.command()
@click.option("--generator", "generator_spec", default="demo", show_default=True, help="'demo', a checkpoint or an official .pkl.")
@click.option("--metric", "metric_name", type=click.Choice(["synthetic", "fd"]), default="synthetic", show_default=True)
@click.option("--data", "data_spec", default="synthetic:generator", show_default=True, help="Reference data for fd.")
@click.option("-n", "--n", "count", type=click.IntRange(100), default=2000, show_default=True, help="Samples (and real images).")
@click.option("--psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@truncation_center_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the figures to this JSON file.")
@seed_option
@device_option
def metrics(generator_spec: str, metric_name: str, data_spec: str, count: int, psi: float, truncation_center: str,
            json_path: str | None, seed: int, device: str) -> None:
    """Measure a generator: oracle class/token agreement, factor coverage, Frechet distance.

    Example: robust gan metrics --generator demo -n 2000 --json demo-metrics.json
    """
    from robust.gan import metrics as gm
    from robust.io import write_json
    from robust.seeding import resolve_device

    dev = resolve_device(device)
    G = _load_generator(generator_spec, dev)
    start = time.time()
    if metric_name == "synthetic":
        figures = gm.synthetic_metrics(G, n=count, seed=seed, truncation_psi=psi, truncation_center=truncation_center)
    else:
        from robust.data import load_dataset

        figures = gm.fd_metric(load_dataset(data_spec, seed=seed), n=count, seed=seed, device=dev)(G)
    figures["seconds"] = round(time.time() - start, 1)
    for key, value in figures.items():
        click.echo(f"{key:<40} {value:.4f}" if isinstance(value, float) else f"{key:<40} {value}")
    if json_path:
        write_json(json_path, {"generator": generator_spec, "metric": metric_name, "n": count, "psi": psi,
                               "truncation_center": truncation_center, "seed": seed, "figures": figures})


@gan.command("import")
@click.argument("pkl", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Prefix of the converted <out>.safetensors/.json.")
@click.option("--with-discriminator/--no-discriminator", default=False, show_default=True, help="Also write <out>_D.safetensors.")
def import_pkl(pkl: str, out: str, with_discriminator: bool) -> None:
    """Convert an official StyleGAN2-ADA .pkl into our safetensors format without running code from it.

    Example: robust gan import network-snapshot.pkl --out ffhq256
    """
    from robust.gan.checkpoint import save_discriminator, save_generator
    from robust.gan.pickle_import import load_official

    ckpt = load_official(pkl, networks=("G_ema", "D") if with_discriminator else ("G_ema",))
    G = ckpt.G_ema
    paths = save_generator(G, out, extra={**getattr(G, "extra", {}), "training_set_kwargs": ckpt.training_set_kwargs})
    click.echo(f"G_ema: {G.img_resolution}x{G.img_resolution}, z {G.z_dim}, w {G.w_dim}, c {G.c_dim}, {G.num_ws} ws -> {paths[0]}")
    if with_discriminator and ckpt.D is not None:
        d_paths = save_discriminator(ckpt.D, f"{out}_D")
        click.echo(f"D -> {d_paths[0]}")


@gan.command("export")
@click.argument("snapshot", type=click.Path(exists=True))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Prefix of <out>.safetensors/.json.")
@click.option("--fp16/--fp32", default=False, show_default=True, help="Store weights in half precision (half the size).")
@click.option("--measure", "measure_n", type=click.IntRange(0), default=0, show_default=True,
              help="Measure the synthetic-benchmark metrics (oracle class/token agreement, factor coverage, FD; psi 1) on this "
                   "many samples and store them with the generator (32x32 generators of the synthetic benchmark; 0: off).")
@click.option("--note", "notes", multiple=True, help="A provenance note stored with the generator (repeatable).")
@click.option("--with-discriminator/--no-discriminator", default=False, show_default=True,
              help="Also write the snapshot's discriminator to <out>_D (lets 'gan train --init' continue without a cold critic).")
@seed_option
def export(snapshot: str, out: str, fp16: bool, measure_n: int, notes: tuple[str, ...], with_discriminator: bool, seed: int) -> None:
    """Write a snapshot's EMA generator with its provenance (commands, seed, hardware, time, kimg, metrics).

    Example: robust gan export runs/demo/snapshot-000200000.safetensors --out robust/assets/demo_generator
    """
    import torch

    from robust.gan.checkpoint import (
        SNAPSHOT_FORMAT,
        generator_config,
        generator_from_state,
        load_discriminator,
        save_discriminator,
    )
    from robust.io import load_checkpoint, save_checkpoint

    tensors, state = load_checkpoint(snapshot, SNAPSHOT_FORMAT)
    G = generator_from_state(state["generator"], tensors, snapshot, "G_ema.")
    history = state.get("history", [])
    entry = next((h for h in reversed(history) if h.get("nimg") == state["cur_nimg"]), {})
    extra = {
        "command": state["runs"][-1]["command"] if state.get("runs") else None, "runs": state.get("runs", []),
        "seed": state["seed"], "hardware": state["runs"][-1]["hardware"] if state.get("runs") else None,
        "world_size": state.get("world_size", 1), "wall_seconds": round(float(state.get("wall_seconds", 0.0)), 1),
        "kimg": state["cur_nimg"] / 1000, "preset": state["config"], "data": state["data"], "metrics": entry,
        "exported_from": str(Path(snapshot).name), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
        "weights_dtype": "float16" if fp16 else "float32",
    }
    if notes:
        extra["notes"] = list(notes)
    if measure_n:
        from robust.gan import metrics as gm

        if not (gm.oracle_reads(G) and G.conditioning is not None):
            raise click.BadParameter("the synthetic metrics need a 32x32 RGB generator conditioned on the synthetic "
                                     "benchmark's tokens and the shipped oracle", param_hint="--measure")
        started = time.time()
        figures = gm.synthetic_metrics(G, n=measure_n, seed=seed, truncation_psi=1.0)
        extra["metrics_at_export"] = {"n": measure_n, "seed": seed, "truncation_psi": 1.0, "seconds": round(time.time() - started, 1),
                                      "figures": figures}
        click.echo(f"class agreement {figures['class_agreement']:.3f} (real renders {figures['real.class_accuracy']:.3f}), "
                   f"Frechet distance (oracle features) {figures['fd_oracle']:.2f}, n={measure_n}")
    weights = {k: (v.half() if fp16 and v.is_floating_point() else v) for k, v in G.state_dict().items()}
    paths = save_checkpoint(out, weights, generator_config(G, extra))
    click.echo(f"generator written to {paths[0]} ({paths[0].stat().st_size / 1e6:.2f} MB), kimg {extra['kimg']:g}")
    if with_discriminator:
        d_paths = save_discriminator(load_discriminator(snapshot), f"{out}_D",
                                     {"exported_from": extra["exported_from"], "kimg": extra["kimg"], "generator": str(paths[0].name)})
        click.echo(f"discriminator written to {d_paths[0]}")


def _attach_encoder_command() -> None:
    # The encoder belongs to the inversion code (NaTra), but users look for it next to the generator.
    from robust.cli.natra_cmd import train_encoder

    gan.add_command(train_encoder)


_attach_encoder_command()
