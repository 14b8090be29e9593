"""``robust invert``, ``robust directions`` and ``robust gan train-encoder``: the NaTra tools on the command line."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from robust.cli.common import device_option, progress, seed_option, threads_option
from robust.provenance import command_line, hardware


def _setup(threads: int | None, device: str) -> Any:
    import torch

    from robust.seeding import resolve_device

    if threads:
        torch.set_num_threads(threads)
    return resolve_device(device)


def _load_generator(spec: str, device: Any, kind: str | None = "stylegan") -> Any:
    """'demo', 'demo-swap' or a model file (:func:`robust.gan.natural.load_model`; ``kind`` None takes either kind)."""
    from robust.gan.natural import load_model

    return load_model(spec, device, kind=kind)


def _indices(text: str, name: str) -> list[int]:
    from robust.errors import InputError

    try:
        return [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise InputError(name, "comma-separated direction indices such as 0,3,5", text) from None


def _check_json_is_not_the_sidecar(json_path: str | None, out: str | None) -> None:
    """``--json out.json`` would overwrite the JSON half of ``--out out``: refuse before any work."""
    if out and json_path:
        from robust.io import checkpoint_paths

        if Path(json_path).resolve() == checkpoint_paths(out)[1].resolve():
            raise click.BadParameter(f"{json_path} is the sidecar of --out {out}; give the JSON another name", param_hint="--json")


def _feature_net(spec: str, G: Any, device: Any) -> Any:
    """The network of ``robust invert --features``: None, the shipped oracle, a discriminator or a classifier."""
    from robust.errors import FileFormatError, InputError
    from robust.gan.checkpoint import DISCRIMINATOR_FORMAT, SNAPSHOT_FORMAT, load_discriminator
    from robust.gan.metrics import load_oracle, oracle_reads
    from robust.io import checkpoint_paths, read_json
    from robust.models import load_classifier

    if spec == "none":
        return None
    if spec == "oracle":
        if not oracle_reads(G):
            raise click.BadParameter("the oracle reads 32x32 RGB images of the synthetic benchmark; this generator draws "
                                     f"{G.img_channels}x{G.img_resolution}x{G.img_resolution}", param_hint="--features")
        return load_oracle(device=device)
    _, config_path = checkpoint_paths(spec)
    config = read_json(config_path) if config_path.is_file() else None
    if isinstance(config, dict) and config.get("format") in (SNAPSHOT_FORMAT, DISCRIMINATOR_FORMAT):
        net = load_discriminator(spec, device)
        if net.img_resolution != G.img_resolution or net.img_channels != G.img_channels:
            raise InputError("--features", f"a discriminator of {G.img_channels}x{G.img_resolution}x{G.img_resolution} images",
                             f"one of {net.img_channels}x{net.img_resolution}x{net.img_resolution}")
        return net
    try:
        net = load_classifier(spec, device=device)
    except (InputError, FileFormatError) as exc:
        raise click.BadParameter(f"none, oracle, a discriminator/snapshot file or a classifier file ({exc})",
                                 param_hint="--features") from None
    if not net.has_gradients:
        raise InputError("--features", "a classifier with gradients (a PyTorch checkpoint or timm model)", f"{spec} (ONNX)")
    return net


@click.command()
@click.option("--generator", "generator_spec", default="demo", show_default=True, help="'demo', a generator/snapshot checkpoint or an official .pkl.")
@click.option("--data", "data_spec", default="synthetic:test_shift", show_default=True, help="Images to invert (a built-in name or a path).")
@click.option("-n", "--n", type=click.IntRange(1), default=256, show_default=True, help="Invert a seeded, class-balanced subset of this many images.")
@click.option("--encoder", "encoder_spec", default="auto", show_default=True,
              help="auto (the shipped encoder when it belongs to the generator), none (start at the mean code) or an encoder file.")
@click.option("--steps", type=click.IntRange(0), default=30, show_default=True, help="Shifting steps (batched Adam on the W+ codes).")
@click.option("--expand-res", type=int, default=None, help="Also optimise the feature map at this resolution (latent codes expansion).")
@click.option("--features", "features_spec", default="none", show_default=True,
              help="Add a feature (perceptual) term to the pixel loss: none, oracle (the shipped synthetic 32x32 shape "
                   "classifier), a GAN snapshot or discriminator file, or a classifier file (not ONNX: it needs gradients).")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Code cache folder (default: $ROBUST_CACHE_DIR/codes when set, else ~/.cache/robust/codes).")
@click.option("--cache/--no-cache", default=True, show_default=True, help="Reuse and write cached codes.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the codes to <out>.safetensors/.json.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the summary as JSON.")
@threads_option
@seed_option
@device_option
def invert(generator_spec: str, data_spec: str, n: int, encoder_spec: str, steps: int, expand_res: int | None, features_spec: str,
           batch_size: int, cache_dir: str | None, cache: bool, out: str | None, json_path: str | None, threads: int | None, seed: int,
           device: str) -> None:
    """Invert images into the generator's W+ space (encoder + batched shifting, optional expansion).

    Prints mean PSNR/SSIM of the reconstructions and the time per image; codes are cached for
    training and audits.

    Example: robust invert --generator demo --data synthetic:test_shift --n 512 --steps 30 --expand-res 16
    """
    from robust.data import load_dataset
    from robust.gan.codes_cache import load_or_invert
    from robust.io import write_json

    _check_json_is_not_the_sidecar(json_path, out)
    dev = _setup(threads, device)
    G = _load_generator(generator_spec, dev)
    feature_net = _feature_net(features_spec, G, dev)
    data = load_dataset(data_spec, n=n, seed=seed)
    bar = progress(total=len(data), desc="invert", unit="img")
    start = time.perf_counter()
    try:
        codes = load_or_invert(G, data, cache_dir=cache_dir, use_cache=cache, encoder=encoder_spec, steps=steps, expand_res=expand_res,
                               seed=seed, batch_size=batch_size, feature_net=feature_net,
                               progress=lambda done: bar.update(done - bar.n))
    finally:
        bar.close()
    summary = {**codes.summary(), "wall_seconds": round(time.perf_counter() - start, 2), "data": data_spec, "generator": generator_spec,
               "features": features_spec,
               "hardware": hardware(dev), "command": command_line()}
    click.echo(f"{len(codes)} images: PSNR {summary['psnr']:.2f} dB, SSIM {summary['ssim']:.4f}, "
               f"{codes.meta.get('seconds_per_image', 0.0) * 1000:.1f} ms/image (inversion), key {codes.key}")
    if out:
        paths = codes.save(out)
        click.echo(f"codes written to {paths[0]}")
    if json_path:
        write_json(json_path, summary)


@click.command()
@click.option("--generator", "generator_spec", default="demo", show_default=True,
              help="'demo', 'demo-swap', a generator/snapshot checkpoint, an official .pkl, or a structure/appearance (swap) model file.")
@click.option("--data", "data_spec", default=None,
              help="Swap models: the images whose appearance codes give the PCA and every direction's range (e.g. the training set).")
@click.option("--method", default="sefa", show_default=True,
              help="A direction finder: sefa, ganspace, householder or tokens (attribute-conditioned generators); swap models: pca or sefa.")
@click.option("-k", "k", type=click.IntRange(1), default=16, show_default=True, help="Number of directions.")
@click.option("--layers", default="all", show_default=True, help="W+ layers edited: all, coarse, middle, fine, a-b or 0,1,2.")
@click.option("--class-free/--no-class-free", default=False, show_default=True,
              help="Remove each direction's part in the class-conditioning subspace (conditional generators).")
@click.option("--judge", "judge_spec", default="auto", show_default=True,
              help="Class judge: auto (the oracle for synthetic 32x32; else one trained on samples of a class-conditional generator; else none: nothing scored, every direction kept), oracle, train, none, or a classifier file.")
@click.option("--discriminator", "discriminator_path", default=None, help="A GAN snapshot or discriminator file (realism check, householder loss).")
@click.option("--score-n", type=click.IntRange(8), default=128, show_default=True, help="Samples per direction for class preservation.")
@click.option("--min-preservation", type=click.FloatRange(0, 1), default=0.95, show_default=True)
@click.option("--safe-ranges/--full-ranges", default=False, show_default=True,
              help="Shrink each range (to 0.7, 0.5, 0.35 or 0.25 of it) until the judge keeps the class for "
                   "--min-preservation of samples: keeps the class-safe part of directions on a weak generator.")
@click.option("--max-alignment", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Largest alignment with the class subspace kept.")
@click.option("--include", default="", help="Direction indices always kept (e.g. 0,3).")
@click.option("--exclude", default="", help="Direction indices never kept.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the directions to <out>.safetensors/.json.")
@click.option("--strips", type=click.Path(file_okay=False), default=None, help="Write one traversal PNG per direction here.")
@click.option("--factors/--no-factors", default=False, show_default=True,
              help="Report each direction's effect on the synthetic benchmark's ground-truth factors (32x32 synthetic generators).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the direction table as JSON.")
@threads_option
@seed_option
@device_option
def directions(generator_spec: str, data_spec: str | None, method: str, k: int, layers: str, class_free: bool, judge_spec: str,
               discriminator_path: str | None, score_n: int, min_preservation: float, safe_ranges: bool, max_alignment: float, include: str,
               exclude: str, out: str | None, strips: str | None, factors: bool, json_path: str | None, threads: int | None, seed: int,
               device: str) -> None:
    """Discover latent directions without labels, calibrate their ranges, keep the class-independent ones.

    \b
    Example: robust directions --generator demo --method sefa -k 16 --out demo_dirs --strips strips/ --factors
    With a structure/appearance model: directions in its appearance-code space (PCA of the codes of
    --data, or SeFa on its first modulation weights), ranges from the codes' spread:
      robust directions --generator runs/swap/swap_model.safetensors --data myfolder --method pca -k 8 --out swap_dirs
    """
    from robust.gan import directions as D
    from robust.gan.checkpoint import load_discriminator
    from robust.gan.metrics import load_oracle, oracle_reads
    from robust.io import write_json
    from robust.models import load_classifier

    _check_json_is_not_the_sidecar(json_path, out)
    dev = _setup(threads, device)
    G = _load_generator(generator_spec, dev, kind=None)
    if not hasattr(G, "w_dim"):
        _swap_directions(G, data_spec, method, k, out, strips, json_path, seed)
        return
    if data_spec is not None:
        raise click.BadParameter("gives the images of a structure/appearance model's directions; a generator's are found from "
                                 "its own samples", param_hint="--data")
    disc = load_discriminator(discriminator_path, dev) if discriminator_path else None
    start = time.perf_counter()
    found = D.find_directions(G, method, k, layers, seed, class_free=class_free, discriminator=disc)
    judge = None
    if judge_spec in ("auto", "oracle") and oracle_reads(G):
        judge = load_oracle(device=dev)
    elif judge_spec in ("auto", "train") and G.conditioning is not None and "class" in G.conditioning.names:
        judge = D.train_judge(G, seed=seed)
    elif judge_spec not in ("auto", "none", "oracle", "train"):
        judge = load_classifier(judge_spec, device=dev)
    elif judge_spec in ("oracle", "train"):
        raise click.BadParameter(f"{judge_spec} is not available for this generator", param_hint="--judge")
    if judge is not None and safe_ranges:
        found = D.class_safe_ranges(G, found, judge=judge, min_preservation=min_preservation, n=score_n, seed=seed)
    elif judge is not None:
        found = D.score_directions(G, found, judge=judge, n=score_n, seed=seed)
    elif safe_ranges:
        raise click.BadParameter("needs a class judge (not --judge none)", param_hint="--safe-ranges")
    found = D.select_directions(found, min_preservation=min_preservation, max_alignment=max_alignment,
                                include=_indices(include, "--include"), exclude=_indices(exclude, "--exclude"))
    found.meta.update({"command": command_line(), "hardware": hardware(dev), "seconds": round(time.perf_counter() - start, 1),
                       "date": time.strftime("%Y-%m-%d")})
    rows = found.table()
    if factors:
        for row, effect in zip(rows, D.factor_effects(G, found, seed=seed)):
            row.update(dominant_factor=effect["dominant"], purity=effect["purity"], oracle_class_kept=effect["class_kept"])
    for row in rows:
        extra = "".join(f" {key}={row[key]:.3f}" for key in ("class_preservation", "class_alignment", "range_scale", "purity") if key in row)
        factor = f" factor={row['dominant_factor']}" if "dominant_factor" in row else ""
        kept = " kept" if row.get("kept") else ""
        click.echo(f"{row['index']:3d} {row['name']:<16} [{row['low']:+.3f}, {row['high']:+.3f}]{extra}{factor}{kept}")
    if out:
        paths = found.save(out, G)
        click.echo(f"directions written to {paths[0]}")
    if strips:
        written = D.write_traversals(G, found, strips, seed=seed)
        click.echo(f"{len(written)} traversal strips written to {strips}")
    if json_path:
        write_json(json_path, {"method": method, "layers": found.layers, "rows": rows, "meta": found.meta})


_GENERATOR_DIRECTION_OPTIONS = ("layers", "class_free", "judge_spec", "discriminator_path", "score_n", "min_preservation", "safe_ranges",
                                "max_alignment", "include", "exclude", "factors")


def _swap_directions(model: Any, data_spec: str | None, method: str, k: int, out: str | None, strips: str | None, json_path: str | None,
                     seed: int) -> None:
    """``robust directions`` for a structure/appearance model: appearance directions from the codes of ``--data``."""
    import torch

    from robust.data import load_dataset
    from robust.gan.codes_cache import load_or_encode
    from robust.gan.directions import appearance_directions
    from robust.io import write_json

    ctx = click.get_current_context()
    given = [f"--{name.removesuffix('_spec').removesuffix('_path').replace('_', '-')}" for name in _GENERATOR_DIRECTION_OPTIONS
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if given:
        raise click.UsageError(f"{', '.join(given)} apply to a generator's directions, not to a structure/appearance model's")
    if data_spec is None:
        raise click.BadParameter("a structure/appearance model's directions come from the appearance codes of images: give --data "
                                 "(e.g. its training images)", param_hint="--data")
    method = {"ganspace": "pca"}.get(method, method)
    start = time.perf_counter()
    data = load_dataset(data_spec, seed=seed)
    codes = load_or_encode(model, data)
    found = appearance_directions(model, codes.appearance, method, k)
    found.meta.update({"data": data_spec, "command": command_line(), "hardware": hardware(model.device),
                       "seconds": round(time.perf_counter() - start, 1), "date": time.strftime("%Y-%m-%d")})
    for row in found.table():
        click.echo(f"{row['index']:3d} {row['name']:<22} [{row['low']:+.3f}, {row['high']:+.3f}] value={row['value']:.4g}")
    if out:
        click.echo(f"directions written to {found.save(out, model)[0]}")
    if strips:
        from robust.gan.training import write_png

        s, a = codes.batch(torch.arange(min(4, len(data))), model.device)
        steps = torch.linspace(0, 1, 7)
        for i, name in enumerate(found.names):
            low, high = found.ranges[i].tolist()
            moved = a[:, None] + (low + steps * (high - low)).to(a)[None, :, None] * found.vectors[i].to(a)
            with torch.no_grad():
                frames = model.decode(s.repeat_interleave(len(steps), 0), moved.flatten(0, 1))
            write_png(Path(strips) / f"{name}.png", frames.cpu(), columns=len(steps))
        click.echo(f"{len(found)} traversal strips written to {strips}")
    if json_path:
        write_json(json_path, {"method": found.method, "rows": found.table(), "meta": found.meta})


@click.command("train-encoder")
@click.option("--generator", "generator_spec", default="demo", show_default=True, help="'demo', a generator/snapshot checkpoint or an official .pkl.")
@click.option("--data", "data_spec", default=None, help="Real images to add a reconstruction loss on (e.g. synthetic:generator).")
@click.option("-n", "--n", type=click.IntRange(1), default=10_000, show_default=True, help="Real images used (a seeded subset).")
@click.option("--steps", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--batch-size", type=click.IntRange(2), default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--prior-weight", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Weight of the W prior on the codes of real images (what shifting also minimises; 0.01 matches its "
                   "default balance against the pixel loss). Codes nearer W, lower PSNR.")
@click.option("--init", "init_spec", default=None,
              help="Continue from this encoder ('demo' or an encoder file trained for the same generator) instead of a fresh one.")
@click.option("--channels", type=click.IntRange(4), default=32, show_default=True, help="Width of a fresh encoder's first stage.")
@click.option("--channel-max", type=click.IntRange(4), default=128, show_default=True, help="Widest stage of a fresh encoder.")
@click.option("--hidden", type=click.IntRange(8), default=256, show_default=True, help="Width of a fresh encoder's code layer.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Write <out>.safetensors and <out>.json (with provenance).")
@threads_option
@seed_option
@device_option
def train_encoder(generator_spec: str, data_spec: str | None, n: int, steps: int, batch_size: int, lr: float, prior_weight: float,
                  init_spec: str | None, channels: int, channel_max: int, hidden: int, out: str, threads: int | None, seed: int,
                  device: str) -> None:
    """Train the inversion encoder of a generator on its own samples (known codes) and optional real images.

    Example: robust gan train-encoder --generator demo --data synthetic:generator --steps 2000 --out robust/assets/demo_encoder
    """
    import torch

    from robust.data import load_dataset
    from robust.gan.encoder import encoder_for, save_encoder, train_encoder as fit

    if init_spec:
        ctx = click.get_current_context()
        sized = [f"--{name.replace('_', '-')}" for name in ("channels", "channel_max", "hidden")
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if sized:
            raise click.UsageError(f"{', '.join(sized)} size a fresh encoder, but --init continues {init_spec!r} at its own size: "
                                   "drop one or the other")
    dev = _setup(threads, device)
    G = _load_generator(generator_spec, dev)
    start = encoder_for(G, init_spec) if init_spec else None
    reals = load_dataset(data_spec, n=n, seed=seed).images if data_spec else None
    bar = progress(total=steps, desc="encoder", unit="step")
    last = {"t": 0.0}

    def on_step(step: int, stats: dict[str, float]) -> None:
        bar.update(1)
        now = time.time()
        if now - last["t"] > 1.0:
            last["t"] = now
            bar.set_postfix_str(" ".join(f"{k} {v:.4f}" for k, v in stats.items()))

    try:
        sizes = {} if start is not None else {"channels": channels, "channel_max": channel_max, "hidden": hidden}
        encoder, report = fit(G, real_images=reals, steps=steps, batch_size=batch_size, lr=lr, prior_weight=prior_weight, seed=seed,
                              on_step=on_step, encoder=start, **sizes)
    finally:
        bar.close()
    extra = {"command": command_line(), "seed": seed, "hardware": hardware(dev), "date": time.strftime("%Y-%m-%d"),
             "torch": torch.__version__, "generator": generator_spec, "data": data_spec, "initialised_from": init_spec,
             "report": report}
    paths = save_encoder(encoder, out, G, extra)
    click.echo(json.dumps(report))
    click.echo(f"encoder written to {paths[0]}")
