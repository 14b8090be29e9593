"""An encoder that predicts W+ codes for a whole batch in one pass (the start of batch inversion).

Files are safetensors + JSON (format ``robust-gan-encoder``) and record the fingerprint of the
generator they belong to.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robust.errors import FileFormatError, InputError
from robust.gan.checkpoint import ASSETS
from robust.gan.latent import LatentPrior, latent_stats, sample_conditioning
from robust.gan.networks import Generator
from robust.io import checkpoint_paths, fingerprint_tensors, load_checkpoint, load_state, save_checkpoint
from robust.models import eval_mode, frozen
from robust.seeding import derive_seed, make_generator
from robust.validation import check_images, check_number

ENCODER_FORMAT = "robust-gan-encoder"
DEMO_ENCODER = ASSETS / "demo_encoder"


def generator_fingerprint(G: Generator) -> str:
    """A short hash of every parameter and buffer of ``G`` (identifies the generator codes belong to)."""
    return fingerprint_tensors(*[t for _, t in sorted(G.state_dict().items())])


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class _Stage(nn.Module):
    """Two 3x3 convolutions, the first one with stride 2, and a strided 1x1 skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = nn.Conv2d(cin, cout, 3, 2, 1)
        self.norm0 = _group_norm(cout)
        self.conv1 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.norm1 = _group_norm(cout)
        self.skip = nn.Conv2d(cin, cout, 1, 2, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.norm0(self.conv0(x)), 0.2)
        y = self.norm1(self.conv1(y))
        return F.leaky_relu(y + self.skip(x), 0.2)


class Encoder(nn.Module):
    """Images ``[N, C, R, R]`` in ``[0, 1]`` -> W+ codes ``[N, num_ws, w_dim]`` of one generator.

    Written from the descriptions of pSp/e4e: a convolutional pyramid down to 4x4 whose flattened
    output predicts one base code and a small per-layer offset for every W+ layer (e4e's "delta"
    form, which keeps predictions close to W); :func:`train_encoder` trains it on the generator's
    own samples, whose codes are known, and optionally on real images.

    The prediction is ``mean + std * (base + offset_i)`` for W+ layer ``i``, with ``mean``/``std``
    the generator's W statistics (buffers, so a saved encoder is self-contained).
    """

    def __init__(self, img_resolution: int, img_channels: int, num_ws: int, w_dim: int, channels: int = 32,
                 channel_max: int = 128, hidden: int = 256):
        super().__init__()
        log2 = int(round(math.log2(img_resolution)))
        if img_resolution < 8 or 2 ** log2 != img_resolution:
            raise InputError("img_resolution", "a power of two >= 8", img_resolution)
        self.img_resolution, self.img_channels, self.num_ws, self.w_dim = img_resolution, img_channels, num_ws, w_dim
        self.channels, self.channel_max, self.hidden = channels, channel_max, hidden
        self.stem = nn.Conv2d(img_channels, channels, 3, 1, 1)
        stages, cin = [], channels
        for i in range(log2 - 2):
            cout = min(channels * 2 ** (i + 1), channel_max)
            stages.append(_Stage(cin, cout))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin * 16, hidden)
        self.base = nn.Linear(hidden, w_dim)
        self.offsets = nn.Linear(hidden, num_ws * w_dim)
        # Offsets start at zero: a fresh encoder predicts W codes (one w for every layer).
        nn.init.zeros_(self.offsets.weight)
        nn.init.zeros_(self.offsets.bias)
        self.register_buffer("w_mean", torch.zeros(w_dim))
        self.register_buffer("w_std", torch.ones([]))

    def init_kwargs(self) -> dict[str, Any]:
        return {"img_resolution": self.img_resolution, "img_channels": self.img_channels, "num_ws": self.num_ws, "w_dim": self.w_dim,
                "channels": self.channels, "channel_max": self.channel_max, "hidden": self.hidden}

    @classmethod
    def for_generator(cls, G: Generator, stats: LatentPrior | None = None, **kwargs: Any) -> Encoder:
        """An untrained encoder sized for ``G``, with its W statistics."""
        enc = cls(G.img_resolution, G.img_channels, G.num_ws, G.w_dim, **kwargs)
        stats = stats or latent_stats(G)
        enc.w_mean.copy_(stats.mean.cpu())
        enc.w_std.fill_(stats.std)
        return enc.to(G.device)

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.stem(images01 * 2 - 1), 0.2)
        h = F.leaky_relu(self.fc(self.stages(x).flatten(1)), 0.2)
        delta = self.base(h)[:, None, :] + self.offsets(h).view(-1, self.num_ws, self.w_dim)
        return self.w_mean + self.w_std * delta


def save_encoder(encoder: Encoder, path: str | Path, generator: Generator | str, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``path.safetensors`` and ``path.json`` (constructor arguments, generator fingerprint, ``extra``)."""
    fp = generator if isinstance(generator, str) else generator_fingerprint(generator)
    config: dict[str, Any] = {"format": ENCODER_FORMAT, "version": 1, "encoder": encoder.init_kwargs(), "generator_fingerprint": fp}
    if extra:
        config["extra"] = dict(extra)
    return save_checkpoint(path, encoder.state_dict(), config)


def load_encoder(path: str | Path, generator: Generator | None = None, device: torch.device | str | None = None) -> Encoder:
    """Read an encoder file; with ``generator``, check that it was trained for that generator."""
    tensors, config = load_checkpoint(path, ENCODER_FORMAT)
    try:
        encoder = Encoder(**config["encoder"])
    except (KeyError, TypeError) as exc:
        raise FileFormatError(path, "encoder constructor arguments", f"unusable ({exc})") from None
    load_state(encoder, tensors, path, "encoder weights matching its config")
    encoder.generator_fingerprint = config.get("generator_fingerprint")
    encoder.extra = dict(config.get("extra", {}))
    if generator is not None:
        fp = generator_fingerprint(generator)
        if encoder.generator_fingerprint != fp:
            raise InputError("encoder", f"an encoder trained for this generator (fingerprint {fp})",
                             f"one trained for {encoder.generator_fingerprint}")
        if (encoder.num_ws, encoder.w_dim, encoder.img_resolution) != (generator.num_ws, generator.w_dim, generator.img_resolution):
            raise InputError("encoder", "an encoder shaped for this generator", encoder.init_kwargs())
    encoder.eval().requires_grad_(False)
    return encoder.to(device) if device is not None else encoder


def encoder_for(G: Generator, spec: Any = "auto") -> Encoder | None:
    """Resolve an encoder choice: an :class:`Encoder`, ``None``/``"none"``, a file path, or ``"auto"``
    (the shipped demo encoder when ``G`` is the generator it was trained for, else ``None``)."""
    if spec is None or isinstance(spec, Encoder):
        return spec.to(G.device) if isinstance(spec, Encoder) else None
    text = str(spec)
    if text == "none":
        return None
    if text in ("auto", "demo"):
        weights, _ = checkpoint_paths(DEMO_ENCODER)
        if not weights.is_file():
            if text == "demo":
                raise FileFormatError(weights, "the shipped demo encoder", "no such file")
            return None
        try:
            return load_encoder(DEMO_ENCODER, G, G.device)
        except InputError:
            if text == "demo":
                raise
            return None
    return load_encoder(text, G, G.device)


@dataclass
class EncoderTraining:
    """How :func:`train_encoder` trains: ``steps`` Adam steps on batches of ``batch_size`` at learning
    rate ``lr`` (warm-up over 50 steps, then cosine decay), the loss weights, the share ``mixing`` of
    samples whose W+ layers come from two codes, and the ``seed`` of every random draw."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    latent_weight: float = 1.0
    pixel_weight: float = 10.0
    prior_weight: float = 0.0
    mixing: float = 0.5
    seed: int = 0

    def checked(self) -> EncoderTraining:
        return replace(self, steps=check_number(self.steps, "steps", low=1, integer=True),
                       batch_size=check_number(self.batch_size, "batch_size", low=2, integer=True),
                       prior_weight=check_number(self.prior_weight, "prior_weight", low=0.0))


def train_encoder(
    G: Generator,
    config: EncoderTraining | None = None,
    *,
    real_images: torch.Tensor | None = None,
    encoder: Encoder | None = None,
    stats: LatentPrior | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    **options: Any,
) -> tuple[Encoder, dict[str, Any]]:
    """Train an encoder for ``G``; returns it (eval mode) and a report.

    Each step draws generator samples with known codes (with probability ``mixing`` their W+ layers
    come from two codes with a random crossover, so W+ is covered) and, when ``real_images`` are
    given, a batch of reals. Loss: ``latent_weight`` x squared code error in W standard deviations
    (samples) + ``pixel_weight`` x squared pixel error of the re-rendered prediction (samples and
    reals) + ``prior_weight`` x the W prior of the codes predicted for reals
    (:meth:`LatentPrior.penalty`, the term shifting also minimises; without it the codes of real
    images can lie far outside W. On the demo generator it brings them near W at a cost in PSNR,
    also after shifting: benchmarks/results/natra.md). Deterministic by ``seed`` on a CPU.

    ``options``: fields of :class:`EncoderTraining` (``steps=``, ``lr=``, ...) replacing those of
    ``config``, and the sizes of a fresh :class:`Encoder` (``channels=``, ``channel_max=``,
    ``hidden=``; a given ``encoder`` is trained as it is).
    """
    names = {f.name for f in fields(EncoderTraining)}
    config = replace(config or EncoderTraining(), **{k: v for k, v in options.items() if k in names}).checked()
    sizes = {k: v for k, v in options.items() if k not in names}
    if real_images is not None:
        real_images = check_images(real_images, "real_images", channels=G.img_channels, size=(G.img_resolution, G.img_resolution))
    stats = (stats or latent_stats(G, seed=derive_seed(config.seed, "encoder-stats") % (1 << 31))).to(G.device)
    if encoder is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(config.seed, "encoder-init") % (1 << 31))
            encoder = Encoder.for_generator(G, stats, **sizes)
    encoder.train().requires_grad_(True)
    gen = make_generator(derive_seed(config.seed, "encoder-train"))
    opt = torch.optim.Adam(encoder.parameters(), lr=config.lr, betas=(0.9, 0.99))
    start = time.perf_counter()
    history: list[dict[str, float]] = []
    with frozen(G), eval_mode(G):
        for step in range(config.steps):
            for group in opt.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / config.steps))
            losses = _encoder_step(G, encoder, opt, config, stats, real_images, gen)
            history.append(losses)
            if on_step is not None:
                on_step(step, losses)
    encoder.eval().requires_grad_(False)
    tail = history[-max(1, config.steps // 20):]
    report = {"steps": config.steps, "batch_size": config.batch_size, "lr": config.lr, "prior_weight": config.prior_weight,
              "seed": config.seed, "seconds": round(time.perf_counter() - start, 1),
              "real_images": 0 if real_images is None else int(real_images.shape[0])}
    for key in tail[0]:
        report[f"final_{key}"] = sum(h[key] for h in tail) / len(tail)
    return encoder, report


@torch.no_grad()
def _known_samples(G: Generator, n: int, mixing: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples in ``[0, 1]`` and their W+ codes; with probability ``mixing`` a code's layers
    from a random crossover on switch to a second code."""
    device = G.device
    z = torch.randn(n, G.z_dim, generator=gen).to(device)
    c = sample_conditioning(G, n, gen)
    ws = G.mapping(z, c.to(device) if c is not None else None)
    z2 = torch.randn(n, G.z_dim, generator=gen).to(device)
    ws2 = G.mapping(z2, c.to(device) if c is not None else None)
    cut = torch.randint(1, G.num_ws, (n, 1), generator=gen).to(device)
    mix = (torch.rand(n, 1, generator=gen) < mixing).to(device)
    layer = torch.arange(G.num_ws, device=device)[None]
    ws = torch.where((mix & (layer >= cut))[:, :, None], ws2, ws)
    return G.to_unit(G.synthesis(ws, noise_mode="const")), ws


def _encoder_step(G: Generator, encoder: Encoder, opt: torch.optim.Optimizer, config: EncoderTraining, stats: LatentPrior,
                  real_images: torch.Tensor | None, gen: torch.Generator) -> dict[str, float]:
    """One optimiser step on a batch of samples (and reals); the losses it measured."""
    fakes, ws = _known_samples(G, config.batch_size, config.mixing, gen)
    pred = encoder(fakes)
    latent = ((pred - ws) / stats.std).square().mean()
    pixel = (G.to_unit(G.synthesis(pred, noise_mode="const")) - fakes).square().mean()
    loss = config.latent_weight * latent + config.pixel_weight * pixel
    losses = {"latent": float(latent.detach()), "pixel": float(pixel.detach())}
    if real_images is not None:
        idx = torch.randint(0, real_images.shape[0], (config.batch_size,), generator=gen)
        reals = real_images[idx].to(G.device, torch.float32)
        real_codes = encoder(reals)
        real_pixel = (G.to_unit(G.synthesis(real_codes, noise_mode="const")) - reals).square().mean()
        loss = loss + config.pixel_weight * real_pixel
        losses["real_pixel"] = float(real_pixel.detach())
        if config.prior_weight > 0:
            real_prior = stats.penalty(real_codes).mean()
            loss = loss + config.prior_weight * real_prior
            losses["real_prior"] = float(real_prior.detach())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return losses
