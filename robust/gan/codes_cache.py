"""Codes of datasets cached on disk: a dataset is inverted (or encoded) once per model and settings, then reused.

``load_or_invert(G, data)`` returns a :class:`CodeSet` (W+ codes, expansion residuals, per-image
PSNR/SSIM) for every image of ``data``, in order. The file
``<cache_dir>/<data name>-<key>.safetensors`` (+ ``.json``) is keyed by the dataset's and the
generator's fingerprints and the inversion settings, so training (the ``natra`` recipe), audits and
attacks share one inversion. Index a :class:`CodeSet` with the dataset indices of a batch::

    codes = load_or_invert(G, train_set, expand_res=16)
    ws, residual = codes.batch(batch_indices, device)

A structure/appearance model needs no inversion: :func:`load_or_encode` caches its encoder's
(structure, appearance) codes of a dataset the same way (:class:`SwapCodes`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robust.data import ImageSet
from robust.errors import FileFormatError, InputError
from robust.gan.encoder import Encoder, encoder_for, generator_fingerprint
from robust.gan.inversion import InversionConfig, invert_batch
from robust.gan.latent import LatentPrior, latent_stats
from robust.gan.networks import Discriminator, Generator
from robust.gan.swapping import SwapAutoencoder
from robust.io import fingerprint_tensors, load_checkpoint, save_checkpoint
from robust.models import Classifier

CODES_FORMAT = "robust-gan-codes"
SWAP_CODES_FORMAT = "robust-swap-codes"
CACHE_ENV = "ROBUST_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$ROBUST_CACHE_DIR/codes`` when set, else ``~/.cache/robust/codes``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "robust") / "codes"


@dataclass
class CodeSet:
    """Codes of a dataset: ``ws [N, num_ws, w_dim]``, ``residual [N, C, r, r]`` (or None) at
    ``expand_res``, ``psnr``/``ssim`` ``[N]`` of the reconstructions; ``key`` names the cache entry."""

    ws: torch.Tensor
    residual: torch.Tensor | None
    expand_res: int | None
    psnr: torch.Tensor
    ssim: torch.Tensor
    key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ws.shape[0])

    def batch(self, indices: torch.Tensor | list[int] | slice, device: torch.device | str | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(ws, residual)`` of the images at ``indices`` (dataset positions), on ``device``."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(indices, dtype=torch.long).cpu()
            if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= len(self)):
                raise InputError("indices", f"dataset positions in [0, {len(self) - 1}]", indices.tolist()[:8])
        ws = self.ws[indices]
        residual = self.residual[indices] if self.residual is not None else None
        if device is not None:
            ws = ws.to(device)
            residual = residual.to(device) if residual is not None else None
        return ws, residual

    def summary(self) -> dict[str, Any]:
        return {"n": len(self), "psnr": float(self.psnr.mean()), "ssim": float(self.ssim.mean()), "expand_res": self.expand_res,
                "key": self.key, **{k: v for k, v in self.meta.items() if k in ("seconds_per_image", "steps", "encoder")}}

    def save(self, path: str | Path) -> tuple[Path, Path]:
        tensors = {"ws": self.ws, "psnr": self.psnr, "ssim": self.ssim}
        if self.residual is not None:
            # Half precision halves the file (the expanded feature maps dominate it); rendering from the
            # rounded maps moves pixels by ~1e-4 (measured on the demo generator's training-set codes).
            tensors["residual"] = self.residual.to(torch.float16)
        config = {"format": CODES_FORMAT, "version": 1, "key": self.key, "expand_res": self.expand_res, "meta": self.meta}
        return save_checkpoint(path, tensors, config)


def load_codes(path: str | Path) -> CodeSet:
    tensors, config = load_checkpoint(path, CODES_FORMAT)
    try:
        residual = tensors.get("residual")
        residual = residual.to(torch.float32) if residual is not None else None
        return CodeSet(tensors["ws"], residual, config.get("expand_res"), tensors["psnr"], tensors["ssim"],
                       str(config.get("key", "")), dict(config.get("meta", {})))
    except KeyError as exc:
        raise FileFormatError(path, "a codes file with ws, psnr and ssim", f"missing {exc}") from None


def _module_fingerprint(obj: Any) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, Classifier):
        return obj.fingerprint()
    if isinstance(obj, torch.nn.Module):
        return fingerprint_tensors(*[t for _, t in sorted(obj.state_dict().items())])
    return getattr(obj, "__qualname__", type(obj).__qualname__)


def cache_key(G: Generator, data_fingerprint: str, *, encoder: Encoder | None, seed: int, config: InversionConfig,
              feature_net: Any = None) -> str:
    """A 16-hex-digit key of everything that determines the codes (``config`` resolved for ``G``).

    The batch size and noise mode have never been part of the key; leaving them out keeps the
    existing cache entries valid.
    """
    parts = {"data": data_fingerprint, "generator": generator_fingerprint(G), "encoder": _module_fingerprint(encoder),
             "steps": config.steps, "expand_res": config.expand_res, "expand_steps": config.expand_steps, "seed": seed,
             "config": config.optimisation(), "features": _module_fingerprint(feature_net), "format": 1}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _class_conditioning(G: Generator, data: ImageSet) -> torch.Tensor | None:
    """``c`` carrying each image's class when the generator's class tokens are the dataset's class names
    (only the class group is read by the inversion: it picks the class-mean start code)."""
    cond = G.conditioning
    if cond is None or "class" not in cond.names or cond.tokens("class") != list(data.class_names):
        return None
    tokens = {name: torch.zeros(len(data), dtype=torch.long) for name in cond.names}
    tokens["class"] = data.labels.long()
    return cond.encode(tokens)


def load_or_invert(
    G: Generator,
    data: ImageSet | torch.Tensor,
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    encoder: Any = "auto",
    seed: int = 0,
    config: InversionConfig | None = None,
    feature_net: Discriminator | Classifier | Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
    stats: LatentPrior | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> CodeSet:
    """Codes of every image of ``data`` (an :class:`robust.data.ImageSet` or images ``[N, C, H, W]``).

    Read from the cache when an entry with the same key exists, else inverted with
    :func:`robust.gan.inversion.invert_batch` (``encoder``: an Encoder, a file, ``"auto"`` for the
    shipped demo encoder when it belongs to ``G``, or ``"none"``) and written atomically.
    ``use_cache=False`` neither reads nor writes. ``options`` replace fields of ``config``
    (``steps=``, ``expand_res=``, ``expand_steps=``, ``batch_size=``, ...).
    """
    images = data.images if isinstance(data, ImageSet) else data
    if not isinstance(images, torch.Tensor):
        raise InputError("data", "an ImageSet or an image tensor [N, C, H, W]", type(data).__name__)
    name = data.name if isinstance(data, ImageSet) else "images"
    data_fp = data.fingerprint() if isinstance(data, ImageSet) else fingerprint_tensors(images)
    config = (config or InversionConfig()).resolve(G, options)
    enc = encoder_for(G, encoder)
    key = cache_key(G, data_fp, encoder=enc, seed=int(seed), config=config, feature_net=feature_net)
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{key}"
    if use_cache and path.with_name(path.name + ".safetensors").is_file():
        codes = load_codes(path)
        if codes.key == key and len(codes) == images.shape[0]:
            return codes
    c = _class_conditioning(G, data) if isinstance(data, ImageSet) and enc is None else None
    result = invert_batch(G, images, c, encoder=enc, seed=seed, feature_net=feature_net, config=config,
                          stats=stats or latent_stats(G, seed=seed), progress=progress)
    meta = {"data": name, "data_fingerprint": data_fp, "generator_fingerprint": generator_fingerprint(G), "steps": config.steps,
            "encoder": _module_fingerprint(enc) or "none",
            "seed": int(seed), "seconds_per_image": result.seconds_per_image}
    # The residual is rounded as the cache stores it, so a first run and a cached one use the same codes.
    residual = result.residual.cpu().to(torch.float16).to(torch.float32) if result.residual is not None else None
    codes = CodeSet(result.ws.cpu(), residual, config.expand_res,
                    result.psnr.cpu(), result.ssim.cpu(), key, meta)
    if use_cache:
        codes.save(path)
    return codes


# -- structure/appearance codes -------------------------------------------------------------------

@dataclass
class SwapCodes:
    """A structure/appearance model's codes of a dataset: ``structure [N, S, r, r]``, ``appearance [N, A]``;
    ``key`` names the cache entry."""

    structure: torch.Tensor
    appearance: torch.Tensor
    key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.appearance.shape[0])

    def batch(self, indices: torch.Tensor | list[int], device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(structure, appearance)`` of the images at ``indices`` (dataset positions), on ``device``."""
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= len(self)):
            raise InputError("indices", f"dataset positions in [0, {len(self) - 1}]", indices.tolist()[:8])
        structure, appearance = self.structure[indices], self.appearance[indices]
        return (structure.to(device), appearance.to(device)) if device is not None else (structure, appearance)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        config = {"format": SWAP_CODES_FORMAT, "version": 1, "key": self.key, "meta": self.meta}
        return save_checkpoint(path, {"structure": self.structure, "appearance": self.appearance}, config)


def load_swap_codes(path: str | Path) -> SwapCodes:
    tensors, config = load_checkpoint(path, SWAP_CODES_FORMAT)
    try:
        return SwapCodes(tensors["structure"], tensors["appearance"], str(config.get("key", "")), dict(config.get("meta", {})))
    except KeyError as exc:
        raise FileFormatError(path, "a swap codes file with structure and appearance", f"missing {exc}") from None


@torch.no_grad()
def encode_images(model: SwapAutoencoder, images: torch.Tensor, batch_size: int = 256,
                  progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(structure, appearance)`` codes (CPU, float32) of ``images`` in ``[0, 1]``, ``batch_size`` at a time."""
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    for start in range(0, images.shape[0], batch_size):
        s, a = model.encode(images[start: start + batch_size])
        parts.append((s.float().cpu(), a.float().cpu()))
        if progress is not None:
            progress(min(start + batch_size, images.shape[0]))
    if not parts:
        raise InputError("images", "at least one image", 0)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def load_or_encode(model: SwapAutoencoder, data: ImageSet, *, cache_dir: str | Path | None = None, use_cache: bool = True,
                   progress: Callable[[int], None] | None = None) -> SwapCodes:
    """The (structure, appearance) codes of every image of ``data``, from the cache (keyed by the model's
    and the data's fingerprints, in ``cache_dir``, default :func:`default_cache_dir`) or encoded and cached.

    Encoding is one forward pass (about 12 ms an image on one loaded CPU thread for the default
    32x32 network), so the cache mostly spares repeated runs on one training set.
    """
    if not isinstance(model, SwapAutoencoder):
        raise InputError("model", "a robust.gan.swapping.SwapAutoencoder", type(model).__name__)
    if not isinstance(data, ImageSet):
        raise InputError("data", "an ImageSet", type(data).__name__)
    parts = {"data": data.fingerprint(), "model": _module_fingerprint(model), "format": 1}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', data.name)}-swap-{key}"
    if use_cache and path.with_name(path.name + ".safetensors").is_file():
        codes = load_swap_codes(path)
        if codes.key == key and len(codes) == len(data):
            return codes
    structure, appearance = encode_images(model, data.images, progress=progress)
    codes = SwapCodes(structure, appearance, key, {"data": data.name, "data_fingerprint": parts["data"], "model_fingerprint": parts["model"]})
    if use_cache:
        codes.save(path)
    return codes
