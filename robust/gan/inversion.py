"""Batch GAN inversion: images -> W+ codes (and an "expanded" feature-map residual) of a generator.

:func:`invert_batch` maps a whole batch into the generator's latent space at once. It starts from
an encoder's prediction (one forward pass, :mod:`robust.gan.encoder`) or from the mean code, then
"shifts" every code of the batch together by a few dozen Adam steps on a reconstruction loss
(pixels, structure (SSIM) and, optionally, the features of a network available offline: the
discriminator or a classifier), with a prior that keeps each code near the W distribution and the
W+ layers near each other, under a warm-up/cosine learning-rate schedule.

*Latent codes expansion*: with ``expand_res`` the feature map at that resolution is then optimised
too, regularised toward the one the W+ code produces. The difference (the *residual*) is stored
with the code; :func:`synthesize` adds it back on top of whatever the (edited) W+ code produces,
so details W+ cannot reach are reconstructed while edits in W+ still propagate.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kornia
import torch
from torch import nn

from robust.errors import InputError
from robust.gan.networks import Discriminator, Generator
from robust.models import Classifier, eval_mode, frozen
from robust.seeding import derive_seed, make_generator
from robust.validation import check_images, check_number

FeatureFn = Callable[[torch.Tensor], list[torch.Tensor]]


# -- the W distribution ---------------------------------------------------------------------------

@dataclass
class LatentStats:
    """Statistics of ``w = mapping(z, c)`` over random ``z`` (and random conditioning tokens).

    ``components`` ``[w_dim, w_dim]`` holds the principal axes (columns, by falling variance),
    ``variances`` their variances; ``std`` is the root mean variance per dimension (the natural
    unit of W). ``radius`` is the ``quantile`` of the whitened squared distance (divided by
    ``w_dim``) of the samples themselves: codes beyond it are unusual for the generator.
    ``class_means`` ``[K, w_dim]`` (conditional generators with a ``class`` group) are the mean w
    of each class.
    """

    mean: torch.Tensor
    components: torch.Tensor
    variances: torch.Tensor
    std: float
    radius: float
    quantile: float
    class_means: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> LatentStats:
        return LatentStats(self.mean.to(device), self.components.to(device), self.variances.to(device), self.std, self.radius,
                           self.quantile, self.class_means.to(device) if self.class_means is not None else None)

    def whitened_distance(self, w: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance from the mean divided by ``w_dim`` (about 1 for typical codes), shape ``w.shape[:-1]``."""
        # A floor on the variances keeps near-degenerate axes from dominating (W is close to a manifold).
        floor = 1e-3 * float(self.variances.mean())
        coords = (w - self.mean.to(w.dtype)) @ self.components.to(w.dtype)
        return (coords.square() / (self.variances.to(w.dtype) + floor)).mean(-1)

    def prior(self, ws: torch.Tensor) -> torch.Tensor:
        """The W prior of W+ codes ``[N, num_ws, w_dim]``, per code ``[N]``: each layer's whitened
        distance plus the spread of the layers around their mean (in W standard deviations), both
        about 1 for random codes."""
        spread = ((ws - ws.mean(1, keepdim=True)) / self.std).square().mean(-1)
        return (self.whitened_distance(ws) + spread).mean(-1)

    def spread(self, direction: torch.Tensor) -> torch.Tensor:
        """Standard deviation of w along each unit direction (rows of ``direction`` ``[K, w_dim]``)."""
        proj = direction.to(self.components.dtype) @ self.components.to(direction.device)
        return (proj.square() * self.variances.to(direction.device)).sum(-1).sqrt()


def sample_conditioning(G: Generator, n: int, generator: torch.Generator, classes: torch.Tensor | None = None) -> torch.Tensor | None:
    """Random conditioning ``c [n, c_dim]`` (tokens uniform per group; the ``class`` group set to ``classes`` if given)."""
    if G.conditioning is None or G.c_dim == 0:
        return None
    tokens = G.conditioning.sample(n, generator)
    if classes is not None:
        if "class" not in G.conditioning.names:
            raise InputError("classes", "a generator with a 'class' conditioning group", G.conditioning)
        tokens["class"] = classes.long().cpu()
    return G.conditioning.encode(tokens)


@torch.no_grad()
def sample_ws(G: Generator, n: int, *, seed: int = 0, classes: torch.Tensor | None = None, truncation_psi: float = 1.0,
              batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` codes ``ws [n, num_ws, w_dim]`` (on G's device) from random ``z`` and conditioning, and the ``c`` used."""
    gen = make_generator(derive_seed(seed, "gan-sample-ws"))
    z = torch.randn(n, G.z_dim, generator=gen)
    c = sample_conditioning(G, n, gen, classes)
    out = []
    for i in range(0, n, batch_size):
        ci = c[i: i + batch_size].to(G.device) if c is not None else None
        out.append(G.mapping(z[i: i + batch_size].to(G.device), ci, truncation_psi=truncation_psi))
    return torch.cat(out), c


def latent_stats(G: Generator, n: int = 4096, seed: int = 0, quantile: float = 0.99) -> LatentStats:
    """Estimate :class:`LatentStats` from ``n`` samples of the mapping network (cheap: no synthesis)."""
    n = check_number(n, "n", low=16, integer=True)
    ws, c = sample_ws(G, n, seed=seed)
    w = ws[:, 0].double()
    mean = w.mean(0)
    cov = (w - mean).T @ (w - mean) / (n - 1)
    variances, components = torch.linalg.eigh(cov)
    order = torch.argsort(variances, descending=True)
    variances, components = variances[order].clamp_min(0).float(), components[:, order].float()
    class_means = None
    if c is not None and G.conditioning is not None and "class" in G.conditioning.names:
        labels = G.conditioning.decode(c)["class"].to(w.device)
        k = len(G.conditioning.tokens("class"))
        sums = torch.zeros(k, w.shape[1], dtype=w.dtype, device=w.device).index_add_(0, labels, w)
        counts = torch.bincount(labels, minlength=k).clamp_min(1).to(w.dtype)
        class_means = (sums / counts[:, None]).float()
    stats = LatentStats(mean.float(), components, variances, float(variances.mean().sqrt()), 0.0, quantile, class_means)
    stats.radius = float(torch.quantile(stats.whitened_distance(w.float()), quantile))
    return stats


# -- rendering codes ------------------------------------------------------------------------------

def check_ws(G: Generator, ws: Any, name: str = "ws") -> torch.Tensor:
    if not isinstance(ws, torch.Tensor) or ws.dim() != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
        got = tuple(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
        raise InputError(name, f"a tensor of shape [N, {G.num_ws}, {G.w_dim}]", got)
    return ws


def check_expand_res(G: Generator, expand_res: int | None) -> int | None:
    """``None`` or a block resolution strictly inside the synthesis network (not the output resolution)."""
    if expand_res is None:
        return None
    allowed = [r for r in G.synthesis.block_resolutions if r < G.img_resolution]
    if int(expand_res) not in allowed:
        raise InputError("expand_res", "one of " + ", ".join(map(str, allowed)) + " (or None)", expand_res)
    return int(expand_res)


def synthesize(G: Generator, ws: torch.Tensor, residual: torch.Tensor | None = None, expand_res: int | None = None, *,
               noise_mode: str = "const") -> torch.Tensor:
    """Images in ``[0, 1]`` from W+ codes, with an expansion ``residual`` added to the feature map at ``expand_res``.

    One pass through the synthesis network: the feature map the (possibly edited) codes produce at
    ``expand_res`` gets the residual added before the higher blocks run, which is what lets W+ edits
    propagate through an expanded code. Differentiable in ``ws`` and ``residual``.
    """
    ws = check_ws(G, ws)
    if residual is None:
        return G.to_unit(G.synthesis(ws, noise_mode=noise_mode))
    res = check_expand_res(G, expand_res)
    if res is None:
        raise InputError("expand_res", "the resolution the residual belongs to", None)
    want = G.synthesis.feature_shape(res)
    if residual.dim() != 4 or tuple(residual.shape[1:]) != want or residual.shape[0] != ws.shape[0]:
        raise InputError("residual", f"a tensor of shape [{ws.shape[0]}, {want[0]}, {want[1]}, {want[2]}]", tuple(residual.shape))
    synthesis = G.synthesis
    fused = not synthesis.training and not torch.is_grad_enabled()
    ws = ws.float()
    index = synthesis.ws_index()
    x = img = None
    for block_res, block in synthesis.blocks():
        i = index[block_res]
        x = block.forward_features(x, ws[:, i: i + block.num_conv], noise_mode, fused, None)
        if block_res == res:
            x = x + residual.to(x.dtype)
        img = block.forward_rgb(x, img, ws[:, i + block.num_conv], fused)
    return G.to_unit(img)


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

@dataclass
class InversionConfig:
    """Weights and schedule of the shifting (and expansion) optimisation.

    ``lr`` is in units of the W standard deviation per step. ``prior_weight`` scales the W prior
    (whitened squared distance of every layer's code plus the spread of the W+ layers around their
    mean, both about 1 for random codes). ``initial_noise`` (in W standard deviations) perturbs the
    codes early on and fades out over the first ``noise_ramp`` of the steps (it helps the batch
    leave the start point's basin). ``expand_weight`` pulls the expanded feature map toward the one
    the W+ code produces (relative to that map's variance). Codes that start from an encoder are
    already close: they shift with ``encoder_initial_noise``, ``encoder_lr`` and a longer warm-up,
    ``encoder_warmup`` (the mean code's early noise and quick ramp undo part of the encoder's work
    in the first steps). With fewer than ``encoder_lr_steps`` steps the encoder start's step size
    shrinks in proportion (a short run cannot recover from a large first step: measured on the
    demo generator, the best step size grows about linearly with the step count up to 20 steps).
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


def _start_codes(G: Generator, n: int, c: torch.Tensor | None, stats: LatentStats, device: torch.device) -> torch.Tensor:
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
               target_feats: list[torch.Tensor] | None, stats: LatentStats) -> torch.Tensor:
    """The shifting objective per image ``[N]``: reconstruction loss plus the W prior of the codes ``ws``."""
    loss = _recon_loss(img, target, config, feat, target_feats)
    if config.prior_weight > 0:
        loss = loss + config.prior_weight * stats.prior(ws)
    return loss


def _keep_best(best_loss: torch.Tensor, best_u: torch.Tensor, loss: torch.Tensor, u: torch.Tensor) -> None:
    """Where ``loss [N]`` beats ``best_loss``, take it and the codes ``u`` (in place)."""
    better = loss < best_loss
    best_loss.copy_(torch.where(better, loss, best_loss))
    best_u.copy_(torch.where(better[:, None, None], u, best_u))


def invert_batch(
    G: Generator,
    images01: torch.Tensor,
    c: torch.Tensor | None = None,
    *,
    encoder: nn.Module | None = None,
    steps: int = 30,
    expand_res: int | None = None,
    expand_steps: int | None = None,
    seed: int = 0,
    feature_net: Discriminator | Classifier | FeatureFn | None = None,
    config: InversionConfig | None = None,
    stats: LatentStats | None = None,
    batch_size: int = 256,
    noise_mode: str = "const",
    progress: Callable[[int], None] | None = None,
) -> InversionResult:
    """Invert a batch of images ``[N, C, H, W]`` in ``[0, 1]`` into W+ codes of ``G``.

    ``encoder`` (a :class:`robust.gan.encoder.Encoder`) gives the starting codes; without it every
    code starts at the mean code (the class mean when ``c`` gives the classes). ``steps`` Adam
    steps then shift all codes of a chunk of ``batch_size`` images together (0: the start codes
    as they are); each image ends at the best codes it reached by its own objective, never worse
    than its start. ``expand_res`` also optimises the feature map at that resolution for
    ``expand_steps`` (default ``steps``) steps. ``feature_net`` adds a perceptual term. Random
    choices (the early code noise) follow ``seed``. ``progress(k)`` is called after each chunk
    with the number of images done. Results are on the device of ``images01``.
    """
    images01 = check_images(images01, "images01", channels=G.img_channels, size=(G.img_resolution, G.img_resolution))
    steps = check_number(steps, "steps", low=0, integer=True)
    expand_res = check_expand_res(G, expand_res)
    expand_steps = steps if expand_steps is None else check_number(expand_steps, "expand_steps", low=0, integer=True)
    batch_size = check_number(batch_size, "batch_size", low=1, integer=True)
    config = config or InversionConfig()
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
        for start in range(0, n, batch_size):
            target = images01[start: start + batch_size].to(device, torch.float32)
            chunk_c = c[start: start + batch_size] if c is not None else None
            out = _invert_chunk(G, target, chunk_c, encoder, steps, expand_res, expand_steps,
                                derive_seed(seed, "invert", start), feat, config, stats, noise_mode, history)
            for key, value in out.items():
                parts.setdefault(key, []).append(value.to(home))
            if progress is not None:
                progress(min(n, start + batch_size))
    elapsed = time.perf_counter() - start_time
    cat = {key: torch.cat(value) for key, value in parts.items()}
    residual = cat.get("residual")
    features = None
    if residual is not None:
        features = {expand_res: cat["base"] + residual}
    return InversionResult(ws=cat["ws"], features=features, reconstructions01=cat["recon"], psnr=cat["psnr"], ssim=cat["ssim"],
                           seconds_per_image=elapsed / n, residual=residual, expand_res=expand_res, start_psnr=cat["start_psnr"],
                           steps=steps, history=history)


def _invert_chunk(G: Generator, target: torch.Tensor, c: torch.Tensor | None, encoder: nn.Module | None, steps: int,
                  expand_res: int | None, expand_steps: int, seed: int, feat: FeatureDistance | None, config: InversionConfig,
                  stats: LatentStats, noise_mode: str, history: list[float]) -> dict[str, torch.Tensor]:
    n = target.shape[0]
    device = target.device
    with torch.no_grad():
        if encoder is not None:
            ws0 = encoder(target).to(device, torch.float32)
            check_ws(G, ws0, "encoder output")
        else:
            ws0 = _start_codes(G, n, c, stats, device)
        target_feats = [f.detach() for f in feat.features(target)] if feat is not None else None
    std = stats.std
    # Optimise in units of the W standard deviation so one learning rate fits every generator.
    u = torch.zeros_like(ws0, requires_grad=True)
    gen = make_generator(seed, device)
    opt = LatentAdam(u)
    lr = config.encoder_lr * min(1.0, steps / max(1, config.encoder_lr_steps)) if encoder is not None else config.lr
    initial_noise = config.encoder_initial_noise if encoder is not None else config.initial_noise
    warmup = config.encoder_warmup if encoder is not None else config.warmup
    start_img = start_psnr = None
    if steps == 0 or initial_noise > 0:
        with torch.no_grad():
            start_img = G.to_unit(G.synthesis(ws0, noise_mode=noise_mode))
            start_psnr, _ = image_quality(start_img, target)
    # Every image keeps the best codes it has been at (by its own objective, measured on the
    # unperturbed codes each step renders anyway), so shifting never returns worse codes than it
    # started from, whatever the step size.
    best_loss = torch.full((n,), float("inf"), device=device)
    best_u = u.detach().clone()
    if start_img is not None and steps > 0:
        with torch.no_grad():
            best_loss = _objective(start_img, ws0, target, config, feat, target_feats, stats)
    for t in range(steps):
        noise_scale = initial_noise * max(0.0, 1.0 - t / max(1e-8, config.noise_ramp * steps)) ** 2
        with torch.enable_grad():
            ws = ws0 + std * u
            noisy = ws + std * noise_scale * torch.randn(ws.shape, generator=gen, device=device) if noise_scale > 0 else ws
            img = G.to_unit(G.synthesis(noisy, noise_mode=noise_mode))
            if start_psnr is None:  # the first step renders the start codes unperturbed: no extra pass for the start quality
                start_psnr, _ = image_quality(img.detach(), target)
            per_image = _objective(img, ws, target, config, feat, target_feats, stats)
            loss = per_image.mean()
            (grad,) = torch.autograd.grad(loss, [u])
        if noise_scale == 0:
            _keep_best(best_loss, best_u, per_image.detach(), u.detach())
        opt.step(grad, lr * _lr_factor(t, steps, warmup))
        history.append(float(loss.detach()))
    ws = (ws0 + std * u).detach()
    final_img = None
    if steps > 0:
        with torch.no_grad():
            final_img, feats = G.synthesis(ws, noise_mode=noise_mode, return_features=[expand_res] if expand_res else [])
            final_img = G.to_unit(final_img)
            worse = (_objective(final_img, ws, target, config, feat, target_feats, stats) > best_loss).nonzero().flatten()
            if worse.numel():  # only the images whose last step made them worse are rendered again, at their best codes
                ws = ws.index_copy(0, worse, (ws0 + std * best_u)[worse])
                again, again_feats = G.synthesis(ws[worse], noise_mode=noise_mode, return_features=[expand_res] if expand_res else [])
                final_img = final_img.index_copy(0, worse, G.to_unit(again))
                feats = {r: f.index_copy(0, worse, again_feats[r]) for r, f in feats.items()}
    out: dict[str, torch.Tensor] = {"ws": ws, "start_psnr": start_psnr}
    if expand_res is None:
        recon = start_img if steps == 0 else final_img
    else:
        if steps == 0:
            with torch.no_grad():
                _, feats = G.synthesis(ws0, noise_mode=noise_mode, return_features=[expand_res])
        base = feats[expand_res].float()
        scale = base.var(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        r = torch.zeros_like(base, requires_grad=True)
        opt = LatentAdam(r)
        base_std = scale.sqrt()
        for t in range(expand_steps):
            with torch.enable_grad():
                residual = r * base_std
                img = synthesize(G, ws, residual, expand_res, noise_mode=noise_mode)
                loss = _recon_loss(img, target, config, feat, target_feats).mean()
                loss = loss + config.expand_weight * (residual.square() / scale).mean()
                (grad,) = torch.autograd.grad(loss, [r])
            opt.step(grad, config.expand_lr * _lr_factor(t, expand_steps, config.warmup))
            history.append(float(loss.detach()))
        residual = (r * base_std).detach()
        with torch.no_grad():
            recon = synthesize(G, ws, residual, expand_res, noise_mode=noise_mode)
        out.update(residual=residual, base=base)
    psnr, ssim = image_quality(recon, target)
    out.update(recon=recon, psnr=psnr, ssim=ssim)
    return out
