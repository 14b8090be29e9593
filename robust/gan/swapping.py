"""A structure/appearance model of natural variation (after the Swapping Autoencoder, Park et al. 2020).

An encoder maps an image to a spatial *structure* code (few channels at low resolution: the layout)
and a global *appearance* code (a vector: colours, textures, light); a generator made of our
StyleGAN2 modulated convolutions renders ``(structure, appearance)``, the appearance code acting as
every layer's style. Swapping appearance codes between images resamples their look, keeping shape.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robust import noise
from robust.errors import FileFormatError, InputError
from robust.gan.checkpoint import ASSETS
from robust.gan.networks import (
    Conv2dLayer,
    DiscriminatorBlock,
    FullyConnectedLayer,
    Generator,
    SynthesisBlock,
    SynthesisLayer,
    ToRGBLayer,
)
from robust.io import checkpoint_paths, load_checkpoint, load_state, save_checkpoint
from robust.seeding import derive_seed
from robust.validation import check_images, check_number

SWAP_FORMAT = "robust-swap-autoencoder"
SWAP_SNAPSHOT_FORMAT = "robust-swap-snapshot"
DEMO_SWAP = ASSETS / "demo_swap"


@dataclass(frozen=True)
class SwapNetConfig:
    """Architecture: images ``resolution`` px; structure code ``[structure_channels, structure_res,
    structure_res]``; appearance code ``[appearance_dim]``; ``min(width * resolution / r, channel_max)``
    feature channels at resolution ``r``. ``fourier_orientations`` > 0 adds fixed plane waves (that many
    orientations, :data:`FOURIER_CYCLES` cycles per image, sine and cosine) to the generator's input;
    ``appearance_patch`` > 0 encodes the appearance from patches of that size alone (:class:`SwapEncoder`)."""

    resolution: int = 32
    img_channels: int = 3
    structure_res: int = 8
    structure_channels: int = 4
    appearance_dim: int = 128
    width: int = 32
    channel_max: int = 128
    fourier_orientations: int = 0
    appearance_patch: int = 0

    def __post_init__(self) -> None:
        for name in ("resolution", "structure_res"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 4 or value & (value - 1):
                raise InputError(name, "a power of two >= 4", value)
        if self.structure_res >= self.resolution:
            raise InputError("structure_res", f"a resolution below the image's ({self.resolution})", self.structure_res)
        for name in ("img_channels", "structure_channels", "appearance_dim", "width", "channel_max"):
            check_number(getattr(self, name), name, low=1, integer=True)
        check_number(self.fourier_orientations, "fourier_orientations", low=0, integer=True)
        p = self.appearance_patch
        if p and (not isinstance(p, int) or p < 8 or p & (p - 1) or p >= self.resolution):
            raise InputError("appearance_patch", f"0 or a power of two in [8, {self.resolution // 2}]", p)

    def channels(self, res: int) -> int:
        return min(self.width * self.resolution // res, self.channel_max)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SwapNetConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError("swap network config", "fields of SwapNetConfig (" + ", ".join(sorted(names)) + ")", unknown)
        return cls(**dict(data))


class SwapEncoder(nn.Module):
    """Images in ``[-1, 1]`` -> (structure ``[N, S, r, r]``, appearance ``[N, A]``).

    The structure comes from a residual trunk down to the structure resolution. The appearance code
    pools globally over space (the paper's design), so it keeps statistics and loses layout; with
    ``appearance_patch`` > 0 it is the mean over the image's non-overlapping patches of that size,
    each encoded on its own (a bag of patches, which cannot see the layout at all).
    """

    def __init__(self, config: SwapNetConfig):
        super().__init__()
        res = [config.resolution >> i for i in range((config.resolution // config.structure_res).bit_length() - 1)]
        self.trunk = nn.ModuleList(
            DiscriminatorBlock(0 if r == config.resolution else config.channels(r), config.channels(r), config.channels(r // 2),
                               config.img_channels, first=r == config.resolution) for r in res)
        c = config.channels(config.structure_res)
        self.structure = nn.Sequential(Conv2dLayer(c, c, 3, activation="lrelu"), Conv2dLayer(c, config.structure_channels, 1))
        self.patch = config.appearance_patch
        if self.patch:
            def ch(r: int) -> int:
                return min(2 * config.width * self.patch // r, config.channel_max)

            res = [self.patch >> i for i in range((self.patch // 4).bit_length() - 1)]
            self.patch_blocks = nn.ModuleList(DiscriminatorBlock(0 if r == self.patch else ch(r), ch(r), ch(r // 2), config.img_channels,
                                                                 first=r == self.patch) for r in res)
            c_a = min(2 * ch(4), config.channel_max)
            self.appearance_conv = nn.Sequential(Conv2dLayer(ch(4), c_a, 3, activation="lrelu"))
        else:
            c_a = 2 * c
            self.appearance_conv = nn.Sequential(Conv2dLayer(c, c_a, 3, activation="lrelu", down=True),
                                                 Conv2dLayer(c_a, c_a, 1, activation="lrelu"))
        self.appearance = FullyConnectedLayer(c_a, config.appearance_dim)

    def _trunk(self, images: torch.Tensor) -> torch.Tensor:
        x = None
        for block in self.trunk:
            x = block(x, images)
        return x

    def structure_code(self, images: torch.Tensor) -> torch.Tensor:
        return self.structure(self._trunk(images))

    def appearance_code(self, images: torch.Tensor, trunk: torch.Tensor | None = None) -> torch.Tensor:
        """The appearance code (``trunk``: the trunk's output for ``images``, when already computed)."""
        if not self.patch:
            x = trunk if trunk is not None else self._trunk(images)
            return self.appearance(self.appearance_conv(x).mean(dim=(2, 3)))
        n, c, p = images.shape[0], images.shape[1], self.patch
        patches = images.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(-1, c, p, p)
        x = None
        for block in self.patch_blocks:
            x = block(x, patches)
        features = self.appearance_conv(x).mean(dim=(2, 3))
        return self.appearance(features.view(n, -1, features.shape[1]).mean(1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._trunk(images)
        return self.structure(x), self.appearance_code(images, x)


FOURIER_CYCLES = (2.5, 3.5, 5.0)


def fourier_features(orientations: int, res: int) -> torch.Tensor:
    """Plane waves ``[2 * orientations * len(FOURIER_CYCLES), res, res]`` over the image (pixel centres in ``[-1, 1]``).

    Not in the Swapping Autoencoder paper: a fixed positional input (as StyleGAN3's Fourier features)
    from which the appearance code can select periodic textures of any phase, so that a texture
    need not be copied from the structure code.
    """
    coords = (torch.arange(res, dtype=torch.float64) + 0.5) / res * 2 - 1
    y, x = coords[:, None], coords[None, :]
    waves = []
    for k in range(orientations):
        angle = math.pi * k / orientations
        for cycles in FOURIER_CYCLES:
            t = (x * math.cos(angle) + y * math.sin(angle)) * (math.pi * cycles)
            waves += [torch.sin(t), torch.cos(t)]
    return torch.stack(waves).float() if waves else torch.zeros(0, res, res)


class SwapGenerator(nn.Module):
    """(structure, appearance) -> images in about ``[-1, 1]``: modulated convolutions at the structure
    resolution, then StyleGAN2 synthesis blocks up to the image, the appearance code as every style."""

    def __init__(self, config: SwapNetConfig):
        super().__init__()
        c, a = config.channels(config.structure_res), config.appearance_dim
        self.register_buffer("waves", fourier_features(config.fourier_orientations, config.structure_res))
        self.head0 = SynthesisLayer(config.structure_channels + self.waves.shape[0], c, a, config.structure_res)
        self.head1 = SynthesisLayer(c, c, a, config.structure_res)
        self.head_rgb = ToRGBLayer(c, config.img_channels, a)
        res = [config.structure_res << i for i in range(1, (config.resolution // config.structure_res).bit_length())]
        self.blocks = nn.ModuleList(
            SynthesisBlock(config.channels(r // 2), config.channels(r), a, r, config.img_channels, is_last=r == config.resolution)
            for r in res)

    def forward(self, structure: torch.Tensor, appearance: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        if self.waves.shape[0]:
            structure = torch.cat([structure, self.waves.to(structure.dtype).expand(structure.shape[0], -1, -1, -1)], dim=1)
        x = self.head1(self.head0(structure, appearance, noise_mode), appearance, noise_mode)
        img = self.head_rgb(x, appearance)
        styles = appearance[:, None].expand(-1, 2, -1)
        for block in self.blocks:
            x = block.forward_features(x, styles, noise_mode, False, None)
            img = block.forward_rgb(x, img, appearance, False)
        return img


class SwapAutoencoder(nn.Module):
    """Encoder and generator of the structure/appearance model; images in ``[0, 1]`` at the edges.

    ``encode(x) -> (structure, appearance)``, ``decode(structure, appearance) -> images``,
    ``swap(x, donor_appearance, strength)``: the image's structure rendered with its appearance code
    moved ``strength`` of the way toward the donor's (0: the reconstruction, 1: the donor's code).
    """

    def __init__(self, config: SwapNetConfig | None = None):
        super().__init__()
        self.config = config or SwapNetConfig()
        self.encoder = SwapEncoder(self.config)
        self.generator = SwapGenerator(self.config)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def structure_shape(self) -> tuple[int, int, int]:
        c = self.config
        return (c.structure_channels, c.structure_res, c.structure_res)

    def encode_raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes of images already in the network's ``[-1, 1]`` range (training)."""
        return self.encoder(images)

    def encode(self, images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images [N, C, R, R]`` in ``[0, 1]`` -> (structure ``[N, S, r, r]``, appearance ``[N, A]``)."""
        c = self.config
        images01 = check_images(images01, "images", channels=c.img_channels, size=(c.resolution, c.resolution))
        return self.encoder(Generator.from_unit(images01.to(self.device, torch.float32)))

    def decode_raw(self, structure: torch.Tensor, appearance: torch.Tensor) -> torch.Tensor:
        """Images in the network's ``[-1, 1]`` range, unclamped (training)."""
        return self.generator(structure, appearance)

    def decode(self, structure: torch.Tensor, appearance: torch.Tensor) -> torch.Tensor:
        """(structure ``[N, S, r, r]``, appearance ``[N, A]``) -> images ``[N, C, R, R]`` in ``[0, 1]``."""
        self._check_codes(structure, appearance)
        return Generator.to_unit(self.generator(structure.to(self.device), appearance.to(self.device)))

    def reconstruct(self, images01: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(images01))

    def swap(self, images01: torch.Tensor, donor_appearance: torch.Tensor, strength: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The images' structure with appearance ``lerp(own, donor, strength)`` (a number or ``[N]``), in ``[0, 1]``."""
        structure, own = self.encode(images01)
        t = torch.as_tensor(strength, dtype=own.dtype, device=own.device)
        if t.dim() == 0:
            check_number(float(t), "strength", low=0, high=1)
        elif t.shape != (own.shape[0],) or bool(((t < 0) | (t > 1)).any()):
            raise InputError("strength", f"a number or [{own.shape[0]}] values in [0, 1]", tuple(t.shape))
        if not isinstance(donor_appearance, torch.Tensor) or donor_appearance.shape != own.shape:
            got = tuple(donor_appearance.shape) if isinstance(donor_appearance, torch.Tensor) else type(donor_appearance).__name__
            raise InputError("donor_appearance", f"a tensor of shape {tuple(own.shape)}", got)
        # lerp returns the end points exactly at 0 and 1.
        return self.decode(structure, torch.lerp(own, donor_appearance.to(own), t[:, None] if t.dim() else t))

    def _check_codes(self, structure: Any, appearance: Any) -> None:
        n = structure.shape[0] if isinstance(structure, torch.Tensor) and structure.dim() == 4 else None
        if n is None or tuple(structure.shape[1:]) != self.structure_shape:
            got = tuple(structure.shape) if isinstance(structure, torch.Tensor) else type(structure).__name__
            raise InputError("structure", "a tensor of shape [N, {}, {}, {}]".format(*self.structure_shape), got)
        if not isinstance(appearance, torch.Tensor) or tuple(appearance.shape) != (n, self.config.appearance_dim):
            got = tuple(appearance.shape) if isinstance(appearance, torch.Tensor) else type(appearance).__name__
            raise InputError("appearance", f"a tensor of shape [{n}, {self.config.appearance_dim}]", got)


def build_swap_model(config: SwapNetConfig | None = None, seed: int = 0) -> SwapAutoencoder:
    """A fresh model whose initial weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "swap-init"))
        return SwapAutoencoder(config)


class DonorSwap:
    """A natural transform: each image takes (``strength`` of the way) the appearance code of a donor
    drawn from ``donors`` (images in ``[0, 1]``, e.g. the training set, any class).

    The donor of an image follows ``seed`` and its sample id only (``sample_ids``, default its
    position), so its transformation does not depend on the batch it is in.
    """

    def __init__(self, model: SwapAutoencoder, donors: torch.Tensor, strength: float = 1.0, seed: int = 0, batch_size: int = 256):
        self.model = model
        self.strength = check_number(strength, "strength", low=0, high=1)
        self.seed = int(seed)
        self.batch_size = check_number(batch_size, "batch_size", low=1, integer=True)
        with torch.no_grad():
            self.appearance = torch.cat([model.encode(donors[i: i + self.batch_size])[1] for i in range(0, donors.shape[0], self.batch_size)])

    def donor_index(self, sample_ids: torch.Tensor) -> torch.Tensor:
        keys = sample_ids.to(torch.int64).cpu() + derive_seed(self.seed, "donor-swap") % (1 << 40)
        u = noise.uniform(keys, (1,))[:, 0]
        return (u * self.appearance.shape[0]).long().clamp_max(self.appearance.shape[0] - 1)

    def __call__(self, images: torch.Tensor, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        n = images.shape[0]
        ids = torch.arange(n) if sample_ids is None else torch.as_tensor(sample_ids)
        if ids.shape != (n,):
            raise InputError("sample_ids", f"{n} integer ids", tuple(ids.shape))
        donor = self.appearance[self.donor_index(ids)]
        out = []
        with torch.no_grad():
            for i in range(0, n, self.batch_size):
                out.append(self.model.swap(images[i: i + self.batch_size], donor[i: i + self.batch_size], self.strength).to(images.device))
        return torch.cat(out)


# -- files ----------------------------------------------------------------------------------------

def save_swap_model(model: SwapAutoencoder, path: str | Path, extra: Mapping[str, Any] | None = None, half: bool = True) -> tuple[Path, Path]:
    """Write ``path.safetensors`` (weights, float16 when ``half``) and ``path.json`` (architecture + ``extra``)."""
    tensors = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    config = {"format": SWAP_FORMAT, "version": 1, "network": model.config.to_dict(),
              "weights_dtype": "float16" if half else "float32", "extra": dict(extra or {})}
    return save_checkpoint(path, tensors, config)


def load_swap_model(path: str | Path, device: torch.device | str | None = None) -> SwapAutoencoder:
    """A model file (:func:`save_swap_model`) or a training snapshot (its EMA weights), in eval mode
    without gradients, float32. Only safetensors and JSON are read."""
    weights, config_path = checkpoint_paths(path)
    tensors, config = load_checkpoint(path, (SWAP_FORMAT, SWAP_SNAPSHOT_FORMAT))
    fmt = config["format"]
    try:
        net = SwapNetConfig.from_dict(config["network"])
    except (KeyError, TypeError) as exc:
        raise FileFormatError(config_path, "swap network constructor arguments", f"unusable ({exc!r})") from None
    prefix = "" if fmt == SWAP_FORMAT else "model_ema."
    model = SwapAutoencoder(net)
    state = {k[len(prefix):]: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith(prefix)}
    load_state(model, state, weights, "weights matching the swap network config")
    model.extra = dict(config.get("extra", {}))
    model.eval().requires_grad_(False)
    return model.to(device) if device is not None else model


def load_demo_swap(device: torch.device | str | None = None) -> SwapAutoencoder:
    """The shipped structure/appearance model of the synthetic benchmark's ``train`` split (see its JSON)."""
    weights, _ = checkpoint_paths(DEMO_SWAP)
    if not weights.is_file():
        raise FileFormatError(weights, "the shipped demo swap model", "no such file (the package data is incomplete)")
    return load_swap_model(DEMO_SWAP, device)
