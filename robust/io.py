"""Files: atomic writes, safetensors + JSON checkpoints, PNG images and content fingerprints.

Nothing here executes code from a file: weights are safetensors, configs are JSON, and
``torch.load`` is only ever called with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from robust.errors import FileFormatError

PathLike = str | os.PathLike


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed over ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates owner-only files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_writable(folder: PathLike, argument: str) -> Path:
    """``folder``, created if missing, once a file could be made in it; else :class:`InputError` naming ``argument``.

    Commands call this before their work starts, so a folder they cannot write fails in one line
    instead of after the work (when the first result is saved).
    """
    from robust.errors import InputError

    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".robust-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(argument, "a folder robust can create and write", f"{str(path)!r} ({reason})") from None
    return path


def write_text(path: PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def png_bytes(image: torch.Tensor) -> bytes:
    """Encode one image ``[C, H, W]`` (uint8, or float in ``[0, 1]``) as PNG: 1 channel grey, 3 RGB, 4 RGBA.

    Other channel counts have no picture format: their first channel is shown as grey.
    """
    from PIL import Image

    from robust.results import to_uint8_image

    pixels = to_uint8_image(image)
    if pixels.shape[0] in (3, 4):
        pil = Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy())
    else:
        pil = Image.fromarray(pixels[0].numpy())
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: PathLike, image: torch.Tensor) -> Path:
    """Write one image ``[C, H, W]`` as a PNG file (atomically; see :func:`png_bytes`)."""
    return write_bytes(path, png_bytes(image))


def write_json(path: PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(path, "an existing JSON file", "no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(path, "valid JSON", f"unreadable ({exc})") from None


def checkpoint_paths(path: PathLike) -> tuple[Path, Path]:
    """``model``, ``model.safetensors`` or ``model.json`` -> (weights path, config path)."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_checkpoint(path: PathLike, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write weights (safetensors) and config (JSON) atomically; the config is written last."""
    weights_path, config_path = checkpoint_paths(path)
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(weights_path) as tmp:
        save_file(plain, str(tmp))
    write_json(config_path, dict(config))
    return weights_path, config_path


def load_checkpoint(path: PathLike, expected_format: str | tuple[str, ...] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; checks the config's ``format`` field (one of
    ``expected_format``'s, when a tuple)."""
    weights_path, config_path = checkpoint_paths(path)
    # A config of another kind says more than missing weights, so it is checked first when it exists.
    if not weights_path.is_file() and not config_path.is_file():
        raise FileFormatError(weights_path, "a safetensors weights file", "no such file")
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise FileFormatError(config_path, "a JSON object", type(config).__name__)
    expected = (expected_format,) if isinstance(expected_format, str) else expected_format
    if expected is not None and config.get("format") not in expected:
        raise FileFormatError(config_path, "a config with format " + " or ".join(repr(f) for f in expected), f"format {config.get('format')!r}")
    if not weights_path.is_file():
        raise FileFormatError(weights_path, "a safetensors weights file", "no such file")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(weights_path, "a safetensors file", f"unreadable ({exc})") from None
    return tensors, config


def load_state(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], path: PathLike, expected: str, prefix: str = "") -> Any:
    """Load the ``prefix``-ed entries of ``tensors`` into ``module`` exactly (every parameter and buffer, nothing
    else), or raise a :class:`FileFormatError` naming ``path``, ``expected`` and what was missing or unexpected."""
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FileFormatError(path, expected, f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    return module


def torch_load_tensors(path: PathLike) -> Any:
    """``torch.load`` restricted to tensors and plain containers (never executes code from the file)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileFormatError(path, "an existing .pt file", "no such file") from None
    except Exception as exc:  # the weights-only unpickler raises many types for foreign content
        raise FileFormatError(path, "a .pt file holding only tensors and plain containers", f"unreadable ({type(exc).__name__}: {exc})") from None


def fingerprint_tensors(*tensors: torch.Tensor) -> str:
    """A short sha256 of tensors' bytes, shapes and dtypes (identifies models and data in reports)."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        digest.update(f"{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def fingerprint_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
