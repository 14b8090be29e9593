"""Batch GAN inversion: images -> W+ codes (and an "expanded" feature-map residual) of a generator.

:func:`invert_batch` starts from an encoder's prediction or the mean code and shifts every code of a
batch together by a few dozen Adam steps on a reconstruction loss with the W prior.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import kornia
import torch
from torch import nn

from robust.errors import InputError
from robust.gan.latent import LatentPrior, check_expand_res, check_ws, latent_stats, synthesize
from robust.gan.networks import Discriminator, Generator
from robust.models import Classifier, eval_mode, frozen
from robust.seeding import derive_seed, make_generator
from robust.validation import check_images, check_number

FeatureFn = Callable[[torch.Tensor], list[torch.Tensor]]


# -- reconstruction losses ------------------------------------------------------------------------

def _unit_normalize(f: torch.Tensor) -> torch.Tensor:
    return f / (f.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()


class FeatureDistance:
    """A perceptual distance: mean squared difference of channel-normalised features, averaged over layers.

    ``net`` is a :class:`robust.gan.Discriminator` (its block outputs), a
    :class:`robust.models.Classifier` (the outputs of up to ``max_layers`` of its convolutions,
    spread over depth), or a callable ``images01 -> list of feature maps``. Its parameters never get
    gradients.
    """

    def __init__(self, net: Discriminator | Classifier | FeatureFn, max_layers: int = 5):
        self.net = net
        self.max_layers = int(max_layers)
        self._layers: list[nn.Module] | None = None

    def features(self, images01: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        if isinstance(net, Discriminator):
            x, img, out = None, images01 * 2 - 1, []
            for res in net.block_resolutions:
                x = getattr(net, f"b{res}")(x, img)
                out.append(x.float())
            return out
        if isinstance(net, Classifier):
            if not net.has_gradients:
                raise InputError("feature network", "a classifier with gradients", f"{net.name} (ONNX)")
            if self._layers is None:
                convs = [m for m in net.network.modules() if isinstance(m, nn.Conv2d)]
                if not convs:
                    raise InputError("feature network", "a classifier with convolutions", net.name)
                pick = torch.linspace(0, len(convs) - 1, min(self.max_layers, len(convs))).round().long().unique().tolist()
                self._layers = [convs[i] for i in pick]
            captured: list[torch.Tensor] = []
            hooks = [m.register_forward_hook(lambda _m, _i, o: captured.append(o.float())) for m in self._layers]
            try:
                with net.eval_mode() as module:
                    module(images01.to(net.device))
            finally:
                for h in hooks:
                    h.remove()
            return captured
        return [f.float() for f in net(images01)]

    def __call__(self, images01: torch.Tensor, target_features: list[torch.Tensor]) -> torch.Tensor:
        """Per-image distance ``[N]`` between ``images01`` and precomputed target features."""
        feats = self.features(images01)
        parts = [(_unit_normalize(a) - _unit_normalize(b)).square().flatten(1).sum(1) / (a[0, 0].numel())
                 for a, b in zip(feats, target_features)]
        return torch.stack(parts).mean(0)


def _ssim_window(size: int) -> int:
    return 11 if size >= 32 else 7 if size >= 16 else 3


def image_quality(reconstructions01: torch.Tensor, targets01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB, peak 1) and SSIM (Gaussian window) with kornia, shape ``[N]`` each."""
    recon, target = reconstructions01.detach().float(), targets01.detach().float().to(reconstructions01.device)
    psnr = torch.stack([kornia.metrics.psnr(a[None], b[None], 1.0) for a, b in zip(recon, target)])
    window = _ssim_window(min(recon.shape[-2:]))
    ssim = kornia.metrics.ssim(recon, target, window, max_val=1.0).flatten(1).mean(1)
    return psnr, ssim


# -- inversion ------------------------------------------------------------------------------------

#: Fields of :class:`InversionConfig` that say what runs rather than how the optimiser weighs and schedules it.
RUN_FIELDS = ("steps", "expand_res", "expand_steps", "batch_size", "noise_mode")


@dataclass
class InversionConfig:
    """What an inversion does: its steps, expansion and batching, and the weights and schedule of its optimisation.

    ``steps``: Adam steps shifting the W+ codes (0: the start codes as they are). ``expand_res``:
    also optimise the feature map at that resolution, for ``expand_steps`` steps (None: ``steps``).
    ``batch_size``: images whose codes shift together. ``noise_mode`` of the synthesis network.

    ``lr`` is in units of the W standard deviation per step. ``prior_weight`` scales the W prior
    (:meth:`robust.gan.latent.LatentPrior.penalty`: whitened squared distance of every layer's code
    plus the spread of the W+ layers around their mean, both about 1 for random codes).
    ``initial_noise`` (in W standard deviations) perturbs the codes early on and fades out over the
    first ``noise_ramp`` of the steps (it helps the batch leave the start point's basin).
    ``expand_weight`` pulls the expanded feature map toward the one the W+ code produces (relative
    to that map's variance). Codes that start from an encoder are already close: they shift with
    ``encoder_initial_noise``, ``encoder_lr`` and a longer warm-up, ``encoder_warmup`` (the mean
    code's early noise and quick ramp undo part of the encoder's work in the first steps). With
    fewer than ``encoder_lr_steps`` steps the encoder start's step size shrinks in proportion (a
    short run cannot recover from a large first step: measured on the demo generator, the best step
    size grows about linearly with the step count up to 20 steps).
    """

    lr: float = 0.3
    encoder_lr: float = 0.3
    encoder_lr_steps: int = 20
    encoder_initial_noise: float = 0.0
    encoder_warmup: float = 0.5
    warmup: float = 0.05
    pixel_weight: float = 1.0
    ssim_weight: float = 0.05
    feature_weight: float = 0.1
    prior_weight: float = 1e-3
    initial_noise: float = 0.05
    noise_ramp: float = 0.5
    expand_lr: float = 0.2
    expand_weight: float = 1e-3
    steps: int = 30
    expand_res: int | None = None
    expand_steps: int | None = None
    batch_size: int = 256
    noise_mode: str = "const"

    def optimisation(self) -> dict[str, Any]:
        """The optimiser's weights and schedule: every field but the :data:`RUN_FIELDS`."""
        return {k: v for k, v in vars(self).items() if k not in RUN_FIELDS}

    def resolve(self, G: Generator, options: Mapping[str, Any] | None = None) -> InversionConfig:
        """A copy with ``options`` (field names) applied and the run fields checked against ``G``."""
        unknown = sorted(set(options or {}) - {f.name for f in fields(self)})
        if unknown:
            raise InputError("inversion options", "fields of InversionConfig", unknown)
        config = replace(self, **(options or {}))
        steps = check_number(config.steps, "steps", low=0, integer=True)
        expand_res = check_expand_res(G, config.expand_res)
        expand_steps = None if config.expand_steps is None else check_number(config.expand_steps, "expand_steps", low=0, integer=True)
        batch_size = check_number(config.batch_size, "batch_size", low=1, integer=True)
        return replace(config, steps=steps, expand_res=expand_res, expand_steps=expand_steps, batch_size=batch_size)


@dataclass
class InversionResult:
    """W+ codes of a batch and how well they reproduce it.

    ``ws [N, num_ws, w_dim]``; ``features`` is ``None`` or ``{expand_res: feature map [N, C, r, r]}``
    (the optimised expanded code); ``residual`` the same map minus the one ``ws`` produces (what
    :func:`synthesize` adds back after edits); ``reconstructions01`` the rendered codes;
    ``psnr``/``ssim`` ``[N]`` per image; ``seconds_per_image`` the wall time divided by ``N``;
    ``start_psnr`` the PSNR of the starting codes (encoder or mean code), before shifting.
    """

    ws: torch.Tensor
    features: dict[int, torch.Tensor] | None
    reconstructions01: torch.Tensor
    psnr: torch.Tensor
    ssim: torch.Tensor
    seconds_per_image: float
    residual: torch.Tensor | None = None
    expand_res: int | None = None
    start_psnr: torch.Tensor | None = None
    steps: int = 0
    history: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        out = {"n": int(self.ws.shape[0]), "psnr": float(self.psnr.mean()), "ssim": float(self.ssim.mean()),
               "seconds_per_image": self.seconds_per_image, "steps": self.steps}
        if self.start_psnr is not None:
            out["start_psnr"] = float(self.start_psnr.mean())
        if self.expand_res is not None:
            out["expand_res"] = self.expand_res
        return out


class LatentAdam:
    """Adam (Kingma & Ba 2015) on one tensor of codes, updated in place.

    A few lines instead of :mod:`torch.optim`, whose first use imports the compiler stack (seconds).
    """

    def __init__(self, param: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param, self.betas, self.eps = param, betas, eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor, lr: float) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-lr / (1 - b1 ** self.t))


def _lr_factor(t: int, steps: int, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` of the steps, then a cosine fall to zero."""
    ramp = max(1, int(round(warmup * steps)))
    if t < ramp:
        return (t + 1) / ramp
    return 0.5 * (1.0 + math.cos(math.pi * (t - ramp) / max(1, steps - ramp)))


def _start_codes(G: Generator, n: int, c: torch.Tensor | None, stats: LatentPrior, device: torch.device) -> torch.Tensor:
    """The mean code, or each image's class-mean code when its class is known from ``c``."""
    w = stats.mean.to(device).expand(n, -1)
    if c is not None and stats.class_means is not None and G.conditioning is not None:
        classes = G.conditioning.decode(c.to(device))["class"]
        w = stats.class_means.to(device)[classes]
    return w[:, None, :].repeat(1, G.num_ws, 1).clone()


def _recon_loss(img: torch.Tensor, target: torch.Tensor, config: InversionConfig, feat: FeatureDistance | None,
                target_feats: list[torch.Tensor] | None) -> torch.Tensor:
    """Per-image reconstruction loss ``[N]`` (images in ``[0, 1]``)."""
    loss = config.pixel_weight * (img - target).square().flatten(1).mean(1)
    if config.ssim_weight > 0:
        window = _ssim_window(min(img.shape[-2:]))
        loss = loss + config.ssim_weight * (1 - kornia.metrics.ssim(img, target, window, max_val=1.0).flatten(1).mean(1))
    if feat is not None and target_feats is not None and config.feature_weight > 0:
        loss = loss + config.feature_weight * feat(img, target_feats)
    return loss


def _objective(img: torch.Tensor, ws: torch.Tensor, target: torch.Tensor, config: InversionConfig, feat: FeatureDistance | None,
               target_feats: list[torch.Tensor] | None, stats: LatentPrior) -> torch.Tensor:
    """The shifting objective per image ``[N]``: reconstruction loss plus the W prior of the codes ``ws``."""
    loss = _recon_loss(img, target, config, feat, target_feats)
    if config.prior_weight > 0:
        loss = loss + config.prior_weight * stats.penalty(ws)
    return loss


def _keep_best(best_loss: torch.Tensor, best_u: torch.Tensor, loss: torch.Tensor, u: torch.Tensor) -> None:
    """Where ``loss [N]`` beats ``best_loss``, take it and the codes ``u`` (in place)."""
    better = loss < best_loss
    best_loss.copy_(torch.where(better, loss, best_loss))
    best_u.copy_(torch.where(better[:, None, None], u, best_u))


@dataclass
class _Chunk:
    """One chunk of images being inverted together, and what its objective needs."""

    G: Generator
    target: torch.Tensor
    config: InversionConfig
    stats: LatentPrior
    feat: FeatureDistance | None
    target_feats: list[torch.Tensor] | None = None

    def render(self, ws: torch.Tensor) -> torch.Tensor:
        return self.G.to_unit(self.G.synthesis(ws, noise_mode=self.config.noise_mode))

    def render_with_features(self, ws: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Images in ``[0, 1]`` and the feature map at ``expand_res`` (when expanding)."""
        res = self.config.expand_res
        img, feats = self.G.synthesis(ws, noise_mode=self.config.noise_mode, return_features=[res] if res else [])
        return self.G.to_unit(img), feats

    def recon_loss(self, img: torch.Tensor) -> torch.Tensor:
        return _recon_loss(img, self.target, self.config, self.feat, self.target_feats)

    def objective(self, img: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        return _objective(img, ws, self.target, self.config, self.feat, self.target_feats, self.stats)


def invert_batch(
    G: Generator,
    images01: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    encoder: nn.Module | None = None,
    seed: int = 0,
    feature_net: Discriminator | Classifier | FeatureFn | None = None,
    config: InversionConfig | None = None,
    stats: LatentPrior | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> InversionResult:
    """Invert a batch of images ``[N, C, H, W]`` in ``[0, 1]`` into W+ codes of ``G``.

    ``encoder`` (a :class:`robust.gan.encoder.Encoder`) gives the starting codes; without it every
    code starts at the mean code (the class mean when ``c`` gives the classes). ``config.steps`` Adam
    steps then shift all codes of a chunk of ``config.batch_size`` images together on a
    reconstruction loss (pixels, structure (SSIM) and, with ``feature_net``, the features of a
    discriminator or classifier) plus the W prior ``stats`` (:func:`robust.gan.latent.latent_stats`
    when not given), under a warm-up/cosine learning-rate schedule; each image ends at the best codes
    it reached by its own objective, never worse than its start.

    *Latent codes expansion*: with ``config.expand_res`` the feature map at that resolution is then
    optimised for ``expand_steps`` steps too, regularised toward the one the W+ code produces. The
    difference (the *residual*) is returned with the codes; :func:`robust.gan.latent.synthesize`
    adds it back on top of whatever the (edited) W+ code produces, so details W+ cannot reach are
    reconstructed while edits in W+ still propagate.

    ``options`` replace fields of ``config`` (``steps=``, ``expand_res=``, ``batch_size=``, ...).
    Random choices (the early code noise) follow ``seed``. ``progress(k)`` is called after each
    chunk with the number of images done. Results are on the device of ``images01``.
    """
    images01 = check_images(images01, "images01", channels=G.img_channels, size=(G.img_resolution, G.img_resolution))
    config = (config or InversionConfig()).resolve(G, options)
    n = images01.shape[0]
    if c is not None and (G.c_dim == 0 or not isinstance(c, torch.Tensor) or tuple(c.shape) != (n, G.c_dim)):
        raise InputError("c", f"None or a tensor of shape [{n}, {G.c_dim}]" if G.c_dim else "None (unconditional generator)",
                         tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__)
    device = G.device
    stats = (stats or latent_stats(G, seed=derive_seed(seed, "stats") % (1 << 31))).to(device)
    feat = FeatureDistance(feature_net) if feature_net is not None else None
    home = images01.device
    start_time = time.perf_counter()
    parts: dict[str, list[torch.Tensor]] = {}
    history: list[float] = []
    with frozen(G, encoder, feature_net), eval_mode(G):
        for start in range(0, n, config.batch_size):
            chunk = _Chunk(G, images01[start: start + config.batch_size].to(device, torch.float32), config, stats, feat)
            chunk_c = c[start: start + config.batch_size] if c is not None else None
            out = _invert_chunk(chunk, chunk_c, encoder, derive_seed(seed, "invert", start), history)
            for key, value in out.items():
                parts.setdefault(key, []).append(value.to(home))
            if progress is not None:
                progress(min(n, start + config.batch_size))
    elapsed = time.perf_counter() - start_time
    cat = {key: torch.cat(value) for key, value in parts.items()}
    residual = cat.get("residual")
    features = None
    if residual is not None:
        features = {config.expand_res: cat["base"] + residual}
    return InversionResult(ws=cat["ws"], features=features, reconstructions01=cat["recon"], psnr=cat["psnr"], ssim=cat["ssim"],
                           seconds_per_image=elapsed / n, residual=residual, expand_res=config.expand_res, start_psnr=cat["start_psnr"],
                           steps=config.steps, history=history)


def _invert_chunk(chunk: _Chunk, c: torch.Tensor | None, encoder: nn.Module | None, seed: int,
                  history: list[float]) -> dict[str, torch.Tensor]:
    G, target, config = chunk.G, chunk.target, chunk.config
    with torch.no_grad():
        if encoder is not None:
            ws0 = encoder(target).to(target.device, torch.float32)
            check_ws(G, ws0, "encoder output")
        else:
            ws0 = _start_codes(G, target.shape[0], c, chunk.stats, target.device)
        chunk.target_feats = [f.detach() for f in chunk.feat.features(target)] if chunk.feat is not None else None
    ws, start_psnr, recon, feats = _shift(chunk, ws0, encoder is not None, seed, history)
    out: dict[str, torch.Tensor] = {"ws": ws, "start_psnr": start_psnr}
    if config.expand_res is not None:
        if config.steps == 0:
            with torch.no_grad():
                _, feats = chunk.render_with_features(ws0)
        recon, residual, base = _expand(chunk, ws, feats[config.expand_res], history)
        out.update(residual=residual, base=base)
    psnr, ssim = image_quality(recon, target)
    out.update(recon=recon, psnr=psnr, ssim=ssim)
    return out


def _shift(chunk: _Chunk, ws0: torch.Tensor, from_encoder: bool, seed: int, history: list[float],
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """Shift the start codes ``ws0``: ``(codes, start PSNR, their images, their feature maps)``.

    Every image keeps the best codes it has been at (by its own objective, measured on the
    unperturbed codes each step renders anyway), so shifting never returns worse codes than it
    started from, whatever the step size.
    """
    config, steps, target = chunk.config, chunk.config.steps, chunk.target
    std = chunk.stats.std
    # Optimise in units of the W standard deviation so one learning rate fits every generator.
    u = torch.zeros_like(ws0, requires_grad=True)
    gen = make_generator(seed, target.device)
    opt = LatentAdam(u)
    lr = config.encoder_lr * min(1.0, steps / max(1, config.encoder_lr_steps)) if from_encoder else config.lr
    initial_noise = config.encoder_initial_noise if from_encoder else config.initial_noise
    warmup = config.encoder_warmup if from_encoder else config.warmup
    start_img = start_psnr = None
    if steps == 0 or initial_noise > 0:
        with torch.no_grad():
            start_img = chunk.render(ws0)
            start_psnr, _ = image_quality(start_img, target)
    if steps == 0:
        return (ws0 + std * u).detach(), start_psnr, start_img, {}
    best_loss = torch.full((target.shape[0],), float("inf"), device=target.device)
    best_u = u.detach().clone()
    if start_img is not None:
        with torch.no_grad():
            best_loss = chunk.objective(start_img, ws0)
    for t in range(steps):
        noise_scale = initial_noise * max(0.0, 1.0 - t / max(1e-8, config.noise_ramp * steps)) ** 2
        with torch.enable_grad():
            ws = ws0 + std * u
            noisy = ws + std * noise_scale * torch.randn(ws.shape, generator=gen, device=target.device) if noise_scale > 0 else ws
            img = chunk.render(noisy)
            if start_psnr is None:  # the first step renders the start codes unperturbed: no extra pass for the start quality
                start_psnr, _ = image_quality(img.detach(), target)
            per_image = chunk.objective(img, ws)
            loss = per_image.mean()
            (grad,) = torch.autograd.grad(loss, [u])
        if noise_scale == 0:
            _keep_best(best_loss, best_u, per_image.detach(), u.detach())
        opt.step(grad, lr * _lr_factor(t, steps, warmup))
        history.append(float(loss.detach()))
    ws, img, feats = _best_codes(chunk, ws0, (ws0 + std * u).detach(), ws0 + std * best_u, best_loss)
    return ws, start_psnr, img, feats


@torch.no_grad()
def _best_codes(chunk: _Chunk, ws0: torch.Tensor, ws: torch.Tensor, best_ws: torch.Tensor, best_loss: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """The final codes ``ws``, with those of the images whose last step made them worse than their best
    replaced by ``best_ws``; only those images are rendered again."""
    img, feats = chunk.render_with_features(ws)
    worse = (chunk.objective(img, ws) > best_loss).nonzero().flatten()
    if worse.numel():
        ws = ws.index_copy(0, worse, best_ws[worse])
        again, again_feats = chunk.render_with_features(ws[worse])
        img = img.index_copy(0, worse, again)
        feats = {r: f.index_copy(0, worse, again_feats[r]) for r, f in feats.items()}
    return ws, img, feats


def _expand(chunk: _Chunk, ws: torch.Tensor, base: torch.Tensor, history: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Optimise the feature map at ``expand_res`` from ``base`` (the one ``ws`` produces): ``(images, residual, base)``."""
    config = chunk.config
    steps = config.steps if config.expand_steps is None else config.expand_steps
    base = base.float()
    scale = base.var(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    r = torch.zeros_like(base, requires_grad=True)
    opt = LatentAdam(r)
    base_std = scale.sqrt()
    for t in range(steps):
        with torch.enable_grad():
            residual = r * base_std
            img = synthesize(chunk.G, ws, residual, config.expand_res, noise_mode=config.noise_mode)
            loss = chunk.recon_loss(img).mean()
            loss = loss + config.expand_weight * (residual.square() / scale).mean()
            (grad,) = torch.autograd.grad(loss, [r])
        opt.step(grad, config.expand_lr * _lr_factor(t, steps, config.warmup))
        history.append(float(loss.detach()))
    residual = (r * base_std).detach()
    with torch.no_grad():
        recon = synthesize(chunk.G, ws, residual, config.expand_res, noise_mode=config.noise_mode)
    return recon, residual, base
