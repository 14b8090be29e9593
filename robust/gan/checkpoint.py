"""Generator files: our safetensors + JSON format, training snapshots, official pickles, the shipped demo generator.

``load(path)`` accepts a generator checkpoint (``.safetensors``/``.json``), a training snapshot
(its EMA generator is used) or an official StyleGAN2-ADA ``.pkl`` (read by the restricted unpickler
in :mod:`robust.gan.pickle_import`, which never runs code from the file).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robust.errors import FileFormatError
from robust.gan.networks import Discriminator, Generator
from robust.io import checkpoint_paths, load_checkpoint, load_state, read_json, save_checkpoint

GENERATOR_FORMAT = "robust-gan-generator"
SNAPSHOT_FORMAT = "robust-gan-snapshot"
DISCRIMINATOR_FORMAT = "robust-gan-discriminator"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_GENERATOR = ASSETS / "demo_generator"


def generator_config(G: Generator, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"format": GENERATOR_FORMAT, "version": 1, "generator": G.init_kwargs()}
    if extra:
        config["extra"] = dict(extra)
    return config


def save_generator(G: Generator, path: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``path.safetensors`` (every parameter and buffer) and ``path.json`` (constructor arguments + ``extra``)."""
    return save_checkpoint(path, G.state_dict(), generator_config(G, extra))


def generator_from_state(kwargs: dict[str, Any], tensors: dict[str, torch.Tensor], path: Any, prefix: str = "") -> Generator:
    try:
        G = Generator.from_kwargs(kwargs)
    except TypeError as exc:
        raise FileFormatError(path, "generator constructor arguments", f"unusable ({exc})") from None
    return load_state(G, tensors, path, "weights matching the generator config", prefix).eval().requires_grad_(False)


def load_generator(path: str | Path, device: torch.device | str | None = None) -> Generator:
    """Read a generator checkpoint or a training snapshot (EMA weights), in eval mode without gradients."""
    _, config_path = checkpoint_paths(path)
    tensors, config = load_checkpoint(path, (GENERATOR_FORMAT, SNAPSHOT_FORMAT))
    fmt = config["format"]
    if "generator" not in config:
        raise FileFormatError(config_path, "a config with generator constructor arguments", "no 'generator' entry")
    G = generator_from_state(config["generator"], tensors, path, "" if fmt == GENERATOR_FORMAT else "G_ema.")
    G.extra = dict(config.get("extra", {}))
    return G.to(device) if device is not None else G


def save_discriminator(D: Discriminator, path: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write a discriminator (``path.safetensors`` + ``path.json`` with its constructor arguments)."""
    config: dict[str, Any] = {"format": DISCRIMINATOR_FORMAT, "version": 1, "discriminator": D.init_args}
    if extra:
        config["extra"] = dict(extra)
    return save_checkpoint(path, D.state_dict(), config)


def load_discriminator(path: str | Path, device: torch.device | str | None = None) -> Discriminator:
    """A discriminator from a discriminator file or a training snapshot, in eval mode without gradients."""
    _, config_path = checkpoint_paths(path)
    config = read_json(config_path)
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt not in (SNAPSHOT_FORMAT, DISCRIMINATOR_FORMAT):
        raise FileFormatError(config_path, f"a training snapshot or a {DISCRIMINATOR_FORMAT} file", f"format {fmt!r}")
    tensors, config = load_checkpoint(path, fmt)
    prefix = "D." if fmt == SNAPSHOT_FORMAT else ""
    try:
        D = Discriminator(**config["discriminator"])
    except (KeyError, TypeError) as exc:
        raise FileFormatError(config_path, "discriminator constructor arguments", f"unusable ({exc!r})") from None
    D = load_state(D, tensors, path, "discriminator weights matching its config", prefix).eval().requires_grad_(False)
    return D.to(device) if device is not None else D


def load(path: str | Path, device: torch.device | str | None = None) -> Generator:
    """Any accepted generator file -> :class:`Generator` (eval mode, no gradients)."""
    path = Path(path)
    if path.suffix.lower() == ".pkl":
        from robust.gan.pickle_import import load_official

        G = load_official(path).G_ema
        return G.to(device) if device is not None else G
    return load_generator(path, device)


def load_demo(device: torch.device | str | None = None) -> Generator:
    """The shipped class-conditional 32x32 generator of the synthetic benchmark (see its JSON for provenance)."""
    weights, _ = checkpoint_paths(DEMO_GENERATOR)
    if not weights.is_file():
        raise FileFormatError(weights, "the shipped demo generator", "no such file (the package data is incomplete)")
    return load_generator(DEMO_GENERATOR, device)
