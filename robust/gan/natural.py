"""Models of natural variation of either kind: a StyleGAN2 :class:`~robust.gan.networks.Generator` or a
structure/appearance :class:`~robust.gan.swapping.SwapAutoencoder`. :func:`load_model` reads a model
file's JSON sidecar and returns the right kind; :func:`resolve_model` picks the model a NaTra recipe
or suite uses (the one given, a file, or the shipped one for the synthetic benchmark).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robust.data import ImageSet
from robust.errors import FileFormatError, InputError
from robust.gan.checkpoint import DEMO_GENERATOR, GENERATOR_FORMAT, SNAPSHOT_FORMAT, load, load_demo
from robust.gan.networks import Generator
from robust.gan.swapping import DEMO_SWAP, SWAP_FORMAT, SWAP_SNAPSHOT_FORMAT, SwapAutoencoder, load_demo_swap, load_swap_model
from robust.io import checkpoint_paths, read_json

#: Model kinds: ``stylegan`` (a Generator) and ``swap`` (a SwapAutoencoder).
KINDS = ("stylegan", "swap")
#: What a recipe's or suite's ``model=`` option takes besides a file path.
CHOICES = ("auto", *KINDS)
_FORMATS = {GENERATOR_FORMAT: "stylegan", SNAPSHOT_FORMAT: "stylegan", SWAP_FORMAT: "swap", SWAP_SNAPSHOT_FORMAT: "swap"}
_DESCRIBED = {"stylegan": "a StyleGAN2 generator", "swap": "a structure/appearance (swap) model"}
_DEMOS = {"demo": "stylegan", "demo-swap": "swap"}


def model_kind(model: Any) -> str | None:
    """``"stylegan"`` for a Generator, ``"swap"`` for a SwapAutoencoder, else None."""
    if isinstance(model, Generator):
        return "stylegan"
    if isinstance(model, SwapAutoencoder):
        return "swap"
    return None


def file_kind(path: str | Path) -> str:
    """The kind of model a file holds, read from its JSON sidecar (an official ``.pkl`` is a StyleGAN2 generator)."""
    if Path(path).suffix.lower() == ".pkl":
        return "stylegan"
    _, config_path = checkpoint_paths(path)
    if not config_path.is_file():
        raise FileFormatError(config_path, "the JSON sidecar of a model file (<name>.safetensors + <name>.json)", "no such file")
    config = read_json(config_path)
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt not in _FORMATS:
        raise FileFormatError(config_path, "a model file: " + ", ".join(repr(f) for f in _FORMATS), f"format {fmt!r}")
    return _FORMATS[fmt]


def load_model(path: str | Path, device: torch.device | str | None = None, *, kind: str | None = None) -> Any:
    """A model file (or snapshot) of either kind, in eval mode without gradients: a :class:`Generator` or a
    :class:`SwapAutoencoder`, as its JSON sidecar says. ``"demo"`` and ``"demo-swap"`` name the shipped
    models. With ``kind`` (``stylegan``/``swap``) a file of the other kind is refused with an
    :class:`InputError` that says what it holds."""
    if kind is not None and kind not in KINDS:
        raise InputError("kind", " or ".join(KINDS), kind)
    found = _DEMOS.get(str(path)) or file_kind(path)
    if kind is not None and found != kind:
        raise InputError("model file", f"{_DESCRIBED[kind]} file", f"{path}, {_DESCRIBED[found]}")
    if str(path) in _DEMOS:
        return load_demo(device) if found == "stylegan" else load_demo_swap(device)
    return load(path, device) if found == "stylegan" else load_swap_model(path, device)


def shipped(kind: str) -> bool:
    """Whether the shipped model of ``kind`` is installed."""
    weights, _ = checkpoint_paths(DEMO_SWAP if kind == "swap" else DEMO_GENERATOR)
    return weights.is_file()


def is_synthetic32(data: ImageSet | None) -> bool:
    """Whether ``data`` are 32x32 images of the synthetic benchmark (what the shipped models draw)."""
    from robust.synthetic import CLASS_NAMES

    return (data is not None and str(data.name).startswith("synthetic") and tuple(data.size) == (32, 32) and data.channels == 3
            and list(data.class_names) == list(CLASS_NAMES))


def resolve_model(choice: Any, given: Any, data: ImageSet | None, device: torch.device | str | None = None, *,
                  name: str = "model") -> Any:
    """The model a NaTra recipe or suite uses.

    ``choice``: ``auto`` (``given`` whatever its kind; else, for 32x32 synthetic-benchmark ``data``,
    the shipped structure/appearance model when it is installed, else the shipped generator),
    ``swap``/``stylegan`` (``given`` when it is of that kind, else the shipped one of that kind, for
    synthetic data), a model file, or a model itself. ``name`` heads the error when there is none.
    """
    if model_kind(choice) is not None:
        model = choice
    elif not isinstance(choice, (str, Path)):
        raise InputError(f"{name} choice", "auto, swap, stylegan, a model file or a model", type(choice).__name__)
    elif str(choice) not in CHOICES:
        model = load_model(choice, device)
    elif given is not None and model_kind(given) is None:
        raise InputError(name, "a robust.gan.Generator or a robust.gan.swapping.SwapAutoencoder", type(given).__name__)
    elif given is not None and str(choice) in ("auto", model_kind(given)):
        model = given
    else:
        wanted = [str(choice)] if choice != "auto" else [k for k in ("swap", "stylegan") if shipped(k)][:1]
        if not wanted or not is_synthetic32(data) or not shipped(wanted[0]):
            what = _DESCRIBED[str(choice)] if choice != "auto" else "a StyleGAN2 generator or a structure/appearance model"
            raise InputError(name, f"{what} (--generator <file>, harden(generator=...) or model=<file>; shipped models "
                             "serve only the synthetic benchmark's 32x32 images)", given if given is None else f"{model_kind(given)} model")
        model = load_demo_swap() if wanted[0] == "swap" else load_demo()
    return model.to(device) if device is not None else model
