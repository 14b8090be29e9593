"""The latent space of a generator: drawing z, w and tokens, where codes are typical (the prior), rendering codes.

Inversion, directions, NaTra and SAGE all read the latent space through this module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from robust import noise
from robust.errors import InputError
from robust.seeding import derive_seed, make_generator
from robust.validation import check_number

#: Noise stream of prompts drawn per seed together with z (SAGE's chains and the prompt prior's fit).
PROMPT_STREAM = 3
# Calibration sizes of a prompt prior: latents per prompt mean, prompts for the covariance, held-out samples.
_MEAN_SAMPLES = 64
_FIT_PROMPTS = 32
_CALIBRATION_PROMPTS = 256
_CALIBRATION_PER_PROMPT = 8
_SHRINKAGE = 0.05


def generator_device(G: Any) -> torch.device:
    """The device of a generator's mapping network (CPU for generators without one)."""
    return G.mapping.w_avg.device if hasattr(G.mapping, "w_avg") else torch.device("cpu")


# -- drawing codes ---------------------------------------------------------------------------------

def sample_z(G: Any, seeds: torch.Tensor, *, stream: int = 0) -> torch.Tensor:
    """Standard normal ``z [N, z_dim]`` (on G's device), one independent draw per int64 seed (:mod:`robust.noise`)."""
    return noise.normal(seeds, (int(G.z_dim),), stream=stream).to(generator_device(G))


def sample_conditioning(G: Any, n: int, generator: torch.Generator, classes: torch.Tensor | None = None) -> torch.Tensor | None:
    """Random conditioning ``c [n, c_dim]`` from a ``torch.Generator`` (the bulk path of
    :meth:`Conditioning.sample`; the ``class`` group set to ``classes`` if given)."""
    if G.conditioning is None or G.c_dim == 0:
        return None
    tokens = G.conditioning.sample(n, generator)
    if classes is not None:
        if "class" not in G.conditioning.names:
            raise InputError("classes", "a generator with a 'class' conditioning group", G.conditioning)
        tokens["class"] = classes.long().cpu()
    return G.conditioning.encode(tokens)


@torch.no_grad()
def sample_ws(G: Any, n: int, *, seed: int = 0, classes: torch.Tensor | None = None, truncation_psi: float = 1.0,
              batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` codes ``ws [n, num_ws, w_dim]`` (on G's device) from random ``z`` and conditioning, and the ``c`` used.

    A bulk draw from one ``torch.Generator`` seeded by ``seed`` (the W statistics, direction finders
    and their calibration depend on exactly these samples); per-sample draws use :func:`sample_z`.
    """
    gen = make_generator(derive_seed(seed, "gan-sample-ws"))
    z = torch.randn(n, G.z_dim, generator=gen)
    c = sample_conditioning(G, n, gen, classes)
    out = []
    for i in range(0, n, batch_size):
        ci = c[i: i + batch_size].to(G.device) if c is not None else None
        out.append(G.mapping(z[i: i + batch_size].to(G.device), ci, truncation_psi=truncation_psi))
    return torch.cat(out), c


# -- rendering codes -------------------------------------------------------------------------------

def check_ws(G: Any, ws: Any, name: str = "ws") -> torch.Tensor:
    """``ws`` itself when it is a tensor ``[N, num_ws, w_dim]`` of ``G``'s codes."""
    if not isinstance(ws, torch.Tensor) or ws.dim() != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
        got = tuple(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
        raise InputError(name, f"a tensor of shape [N, {G.num_ws}, {G.w_dim}]", got)
    return ws


def check_expand_res(G: Any, expand_res: int | None) -> int | None:
    """``None`` or a block resolution strictly inside the synthesis network (not the output resolution)."""
    if expand_res is None:
        return None
    allowed = [r for r in G.synthesis.block_resolutions if r < G.img_resolution]
    if int(expand_res) not in allowed:
        raise InputError("expand_res", "one of " + ", ".join(map(str, allowed)) + " (or None)", expand_res)
    return int(expand_res)


def synthesize(G: Any, ws: torch.Tensor, residual: torch.Tensor | None = None, expand_res: int | None = None, *,
               noise_mode: str = "const") -> torch.Tensor:
    """Images in ``[0, 1]`` from W+ codes, with an expansion ``residual`` added to the feature map at ``expand_res``.

    One pass through the synthesis network: the feature map the (possibly edited) codes produce at
    ``expand_res`` gets the residual added before the higher blocks run, which is what lets W+ edits
    propagate through an expanded code (details W+ cannot reach stay reconstructed). Differentiable
    in ``ws`` and ``residual``.
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


def render_prompts(G: Any, tokens: torch.Tensor, z: torch.Tensor, delta: torch.Tensor | None, c: torch.Tensor | None = None, *,
                   truncation_psi: float = 1.0, noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images in [0, 1], ws, mapped ws)`` of prompts (token rows ``[N, groups]``) and ``z``; ``delta``
    ``[N, 1 | num_ws, w_dim]`` is added to the mapping's ws; ``c`` replaces the prompts' encoding when given."""
    if c is None:
        c = G.conditioning.encode(tokens)
    mapped = G.mapping(z, c, truncation_psi=truncation_psi)
    ws = mapped if delta is None else mapped + delta
    images = G.to_unit(G.synthesis(ws, noise_mode=noise_mode))
    return images, ws, mapped


def image_statistics(images01: torch.Tensor) -> torch.Tensor:
    """Per-image statistics ``[N, 2C + 2]``: channel means and standard deviations, the fraction of
    saturated pixels, and the mean absolute Laplacian (high-frequency energy)."""
    x = images01.float()
    means = x.mean(dim=(2, 3))
    stds = x.std(dim=(2, 3))
    saturated = ((x < 0.01) | (x > 0.99)).float().mean(dim=(1, 2, 3))
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=x.device)
    lap = F.conv2d(x.flatten(0, 1)[:, None], kernel[None, None], padding=1).abs().mean(dim=(1, 2, 3)).view(x.shape[0], -1).mean(1)
    return torch.cat([means, stds, saturated[:, None], lap[:, None]], dim=1)


# -- z: the standard normal --------------------------------------------------------------------------

def chi2_cdf(x: torch.Tensor, dof: int) -> torch.Tensor:
    """CDF of the chi-square distribution with ``dof`` degrees of freedom (float64 maths)."""
    return torch.special.gammainc(torch.tensor(dof / 2.0, dtype=torch.float64), x.double().clamp_min(0) / 2.0)


def chi2_quantile(p: float, dof: int) -> float:
    """Inverse CDF of the chi-square distribution, by bisection."""
    lo, hi = 0.0, float(dof) + 40.0 * math.sqrt(2.0 * dof) + 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(chi2_cdf(torch.tensor(mid), dof)) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def ks_statistic(z: torch.Tensor) -> torch.Tensor:
    """Kolmogorov-Smirnov distance between each row's coordinates and the standard normal, ``[N]``."""
    n = z.shape[1]
    values = torch.sort(z.double(), dim=1).values
    cdf = torch.special.ndtr(values)
    upper = torch.arange(1, n + 1, dtype=torch.float64, device=z.device) / n
    lower = torch.arange(0, n, dtype=torch.float64, device=z.device) / n
    return torch.maximum((upper - cdf).abs(), (cdf - lower).abs()).amax(1)


class ZPrior:
    """Whether codes ``z`` look like draws of the standard normal the mapping network reads.

    The norm's chi-square two-sided test and a Kolmogorov-Smirnov test of the coordinates against
    N(0, 1), each at level ``alpha``; :meth:`score` is the larger test statistic over its critical
    value (<= 1: in distribution). :meth:`project` pulls norms into ``radius_band``, the band holding
    the central ``1 - 5 alpha`` (at most 75 %) of the chi-square mass.
    """

    def __init__(self, dim: int, alpha: float = 0.01):
        self.dim, self.alpha = int(dim), float(alpha)
        self.norm_critical = float(torch.special.ndtri(torch.tensor(1.0 - self.alpha / 2.0, dtype=torch.float64)))
        self.ks_critical = math.sqrt(-0.5 * math.log(self.alpha / 2.0)) / math.sqrt(self.dim)
        band = min(0.25, 5.0 * self.alpha)
        self.radius_band = (math.sqrt(chi2_quantile(band / 2.0, self.dim)), math.sqrt(chi2_quantile(1.0 - band / 2.0, self.dim)))

    @torch.no_grad()
    def score(self, z: torch.Tensor) -> torch.Tensor:
        """In-distribution score ``[N]`` of codes ``z [N, dim]`` (<= 1: in distribution)."""
        cdf = chi2_cdf(z.detach().square().sum(1), z.shape[1]).clamp(1e-300, 1 - 1e-16)
        norm_stat = torch.special.ndtri(cdf).abs() / self.norm_critical
        return torch.maximum(norm_stat, ks_statistic(z.detach()) / self.ks_critical).float()

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` with each row's norm pulled into :attr:`radius_band`."""
        norms = z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        lo, hi = self.radius_band
        return z * (norms.clamp(lo, hi) / norms)


# -- W: the prior ----------------------------------------------------------------------------------

class PromptMeans:
    """The mapping's mean ``w`` of each prompt over fixed reference codes ``z [M, z_dim]``, cached per distinct prompt."""

    def __init__(self, G: Any, z: torch.Tensor, truncation_psi: float = 1.0):
        self.G, self.z, self.truncation_psi = G, z, float(truncation_psi)
        self._means: dict[tuple[int, ...], torch.Tensor] = {}

    @torch.no_grad()
    def map(self, z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The mapping's ``w [N, w_dim]`` of codes ``z`` and prompts (token rows)."""
        return self.G.mapping(z, self.G.conditioning.encode(tokens), truncation_psi=self.truncation_psi)[:, 0].float()

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean ``w [N, w_dim]`` of each row's prompt (token rows ``[N, groups]``)."""
        keys = [tuple(int(v) for v in row) for row in tokens.tolist()] if tokens.numel() else [() for _ in range(tokens.shape[0])]
        missing = sorted({k for k in keys if k not in self._means})
        m = self.z.shape[0]
        for start in range(0, len(missing), 64):
            part = missing[start: start + 64]
            rows = torch.tensor(part, dtype=torch.long).reshape(len(part), -1)
            w = self.map(self.z.repeat(len(part), 1), rows.repeat_interleave(m, 0).to(self.z.device))
            for key, mean in zip(part, w.reshape(len(part), m, -1).mean(1)):
                self._means[key] = mean
        return torch.stack([self._means[k] for k in keys]).to(self.z.device)


@dataclass
class ImageBands:
    """What the generator's images look like: bands ``[low, high]`` of :func:`image_statistics` of
    samples, and the discriminator's lowest usual logit on them (when there is a discriminator)."""

    low: torch.Tensor
    high: torch.Tensor
    discriminator: Any = None
    d_floor: float | None = None


@dataclass
class LatentPrior:
    """Where a generator's codes are typical: a Gaussian model of W and the region holding most samples.

    ``mean [w_dim]``; ``components [w_dim, w_dim]``: principal axes of the covariance (columns, by
    falling variance) and ``variances`` their variances; ``std``: the root mean variance (the natural
    unit of W); ``radius``: the :meth:`distance` below which the fraction ``quantile`` of fresh codes
    lies (beyond it a code is unusual for the generator); ``class_means [K, w_dim]``: the mean w of
    each class (generators with a ``class`` group). ``root``: a square root ``L`` of the covariance
    (``L L^T = cov``; the whitening of :meth:`whiten_step`). Two fits:

    * :func:`latent_stats` (unconditional): distances from ``mean`` along the principal axes, with a
      variance floor, per dimension (about 1 for typical codes). Inversion, the encoder and
      directions use it.
    * :func:`prompt_prior` (conditional on the prompt): distances from each prompt's mean
      (``prompt_means``) under the shrunk within-prompt ``precision``. SAGE uses it.

    ``images`` (:meth:`with_images`) adds what realistic images look like, for :meth:`realistic`.
    """

    mean: torch.Tensor
    components: torch.Tensor
    variances: torch.Tensor
    std: float
    radius: float
    quantile: float
    class_means: torch.Tensor | None = None
    root: torch.Tensor | None = None
    precision: torch.Tensor | None = None
    prompt_means: PromptMeans | None = None
    images: ImageBands | None = None

    def __post_init__(self) -> None:
        if self.root is None:
            self.root = self.components * self.variances.sqrt()

    def to(self, device: torch.device | str) -> LatentPrior:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return t.to(device) if t is not None else None

        return replace(self, mean=self.mean.to(device), components=self.components.to(device), variances=self.variances.to(device),
                       class_means=move(self.class_means), root=move(self.root), precision=move(self.precision))

    # -- distances --------------------------------------------------------------------------------

    def distance(self, ws: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Squared Mahalanobis distance of codes from the centre, in the units of :attr:`radius`.

        Unconditional priors: ``ws [..., w_dim] -> [...]``, divided by ``w_dim``. Prompt priors:
        ``ws [N, L, w_dim] -> [N, L]`` from each row's prompt mean (``tokens [N, groups]``; the mean
        of W without them).
        """
        if self.precision is None:
            # A floor on the variances keeps near-degenerate axes from dominating (W is close to a manifold).
            floor = 1e-3 * float(self.variances.mean())
            coords = (ws - self.mean.to(ws.dtype)) @ self.components.to(ws.dtype)
            return (coords.square() / (self.variances.to(ws.dtype) + floor)).mean(-1)
        diff = ws.float() - self._centre(tokens)
        return torch.einsum("nld,de,nle->nl", diff, self.precision, diff)

    def _centre(self, tokens: torch.Tensor | None) -> torch.Tensor:
        if tokens is None or self.prompt_means is None:
            return self.mean
        return self.prompt_means(tokens)[:, None]

    @torch.no_grad()
    def score(self, ws: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """In-distribution score ``[N]`` of codes ``ws [N, L, w_dim]``: the largest layer's distance over the radius (<= 1: typical)."""
        return (self.distance(ws.detach(), tokens).amax(1) / self.radius).float()

    def typical(self, ws: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """``[N]`` bool: every layer of ``ws [N, L, w_dim]`` within the radius."""
        return (self.distance(ws, tokens) <= self.radius).all(dim=1)

    def penalty(self, ws: torch.Tensor) -> torch.Tensor:
        """The W prior of W+ codes ``[N, num_ws, w_dim]``, per code ``[N]``: each layer's distance plus
        the spread of the layers around their mean (in W standard deviations), both about 1 for
        random codes (the term inversion and the encoder minimise)."""
        spread = ((ws - ws.mean(1, keepdim=True)) / self.std).square().mean(-1)
        return (self.distance(ws) + spread).mean(-1)

    def spread(self, direction: torch.Tensor) -> torch.Tensor:
        """Standard deviation of w along each unit direction (rows of ``direction`` ``[K, w_dim]``)."""
        proj = direction.to(self.components.dtype) @ self.components.to(direction.device)
        return (proj.square() * self.variances.to(direction.device)).sum(-1).sqrt()

    # -- moving codes ------------------------------------------------------------------------------

    def project(self, ws: torch.Tensor, tokens: torch.Tensor | None = None, *, margin: float = 1.0) -> torch.Tensor:
        """Each layer of ``ws [N, L, w_dim]`` moved towards its centre until its distance is at most ``margin x radius``."""
        centre = self._centre(tokens)
        d2 = self.distance(ws, tokens)
        limit = margin * self.radius
        scale = torch.where(d2 > limit, (limit / d2.clamp_min(1e-12)).sqrt(), torch.ones_like(d2))
        return centre + (ws - centre) * scale[..., None]

    def whiten_step(self, grad: torch.Tensor) -> torch.Tensor:
        """A unit ascent step in whitened coordinates, mapped back: ``L u / |u|`` with ``u = L^T g`` (per row of ``grad [N, L, w_dim]``)."""
        u = torch.einsum("dk,nld->nlk", self.root, grad)
        u = u / u.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        return torch.einsum("dk,nlk->nld", self.root, u)

    # -- realistic images --------------------------------------------------------------------------

    @torch.no_grad()
    def with_images(self, G: Any, *, discriminator: Any = None, n: int = 512, seed: int = 0, quantile: float = 0.005,
                    batch_size: int = 256) -> LatentPrior:
        """This prior plus :class:`ImageBands` from ``n`` samples: the ``quantile`` and ``1 - quantile``
        of their image statistics (with 5 % slack) and the 1st percentile of the discriminator's logits."""
        ws, c = sample_ws(G, n, seed=derive_seed(seed, "realism"))
        feats, logits = [], []
        for i in range(0, n, batch_size):
            img = G.synthesis(ws[i: i + batch_size], noise_mode="const")
            feats.append(image_statistics(G.to_unit(img)))
            if discriminator is not None:
                logits.append(discriminator(img, c[i: i + batch_size].to(G.device) if c is not None else None).flatten())
        s = torch.cat(feats)
        low, high = torch.quantile(s, quantile, dim=0), torch.quantile(s, 1 - quantile, dim=0)
        # A little slack: the bands are estimated from a finite sample.
        slack = 0.05 * (high - low) + 1e-4
        floor = float(torch.quantile(torch.cat(logits), 0.01)) if logits else None
        return replace(self, images=ImageBands(low - slack, high + slack, discriminator, floor))

    @torch.no_grad()
    def realistic(self, G: Any, ws: torch.Tensor, c: torch.Tensor | None = None, images: torch.Tensor | None = None) -> torch.Tensor:
        """``[N]`` bool: the codes are :meth:`typical` and (with :attr:`images`) their images, rendered or
        given in ``[0, 1]``, look like the generator's samples and satisfy the discriminator."""
        ok = self.typical(ws)
        if self.images is None:
            return ok
        bands = self.images
        raw = G.synthesis(ws, noise_mode="const") if images is None else images * 2 - 1
        s = image_statistics(G.to_unit(raw))
        ok &= ((s >= bands.low.to(s.device)) & (s <= bands.high.to(s.device))).all(dim=1)
        if bands.discriminator is not None and bands.d_floor is not None:
            ok &= bands.discriminator(raw, c.to(raw.device) if c is not None else None).flatten() >= bands.d_floor
        return ok


def latent_stats(G: Any, n: int = 4096, seed: int = 0, quantile: float = 0.99) -> LatentPrior:
    """The unconditional :class:`LatentPrior` from ``n`` bulk samples of the mapping network (:func:`sample_ws`; cheap: no synthesis)."""
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
    prior = LatentPrior(mean.float(), components, variances, float(variances.mean().sqrt()), 0.0, quantile, class_means)
    prior.radius = float(torch.quantile(prior.distance(w.float()), quantile))
    return prior


def prompt_prior(G: Any, alpha: float = 0.01, *, seed: int = 0, truncation_psi: float = 1.0) -> LatentPrior:
    """The :class:`LatentPrior` of W conditional on the prompt (token rows of ``G.conditioning``).

    Each prompt's mean is the mapping's mean w over 64 fixed reference codes; the covariance is the
    within-prompt covariance pooled over 32 random prompts, shrunk 5 % toward its mean variance; the
    radius is the ``1 - alpha`` quantile of the distances of 2048 held-out samples (256 prompts x 8),
    so fresh samples pass with probability about ``1 - alpha``. Every draw is per seed, from ``seed``.
    """
    device = generator_device(G)
    cond = G.conditioning

    def reference_z(n: int, stream: str) -> torch.Tensor:
        return sample_z(G, torch.tensor([derive_seed(seed, "sage-prior", stream, i) for i in range(n)], dtype=torch.int64))

    def prompts(n: int, stream: str) -> torch.Tensor:
        seeds = torch.tensor([derive_seed(seed, "sage-prior-prompt", stream, i) for i in range(n)], dtype=torch.int64)
        return cond.rows(cond.sample(seeds, stream=PROMPT_STREAM)).to(device)

    means = PromptMeans(G, reference_z(_MEAN_SAMPLES, "means"), truncation_psi)
    rows = prompts(_FIT_PROMPTS, "fit").repeat_interleave(_MEAN_SAMPLES, 0)
    w = means.map(reference_z(_FIT_PROMPTS * _MEAN_SAMPLES, "fit"), rows)
    residual = (w - means(rows)).double()
    cov = residual.T @ residual / max(1, residual.shape[0] - _FIT_PROMPTS)
    d = cov.shape[0]
    ridge = (torch.trace(cov) / d).clamp_min(1e-12) * torch.eye(d, dtype=cov.dtype, device=cov.device)
    cov = (1.0 - _SHRINKAGE) * cov + _SHRINKAGE * ridge
    variances, components = torch.linalg.eigh(cov)
    order = torch.argsort(variances, descending=True)
    variances, components = variances[order].clamp_min(0).float(), components[:, order].float()
    prior = LatentPrior(w.mean(0), components, variances, float(variances.mean().sqrt()), float("nan"), 1.0 - float(alpha),
                        root=torch.linalg.cholesky(cov).float(),
                        precision=torch.cholesky_inverse(torch.linalg.cholesky(cov)).float(), prompt_means=means)
    held_out = prompts(_CALIBRATION_PROMPTS, "calibrate").repeat_interleave(_CALIBRATION_PER_PROMPT, 0)
    w = means.map(reference_z(_CALIBRATION_PROMPTS * _CALIBRATION_PER_PROMPT, "calibrate"), held_out)
    prior.radius = float(torch.quantile(prior.distance(w[:, None], held_out)[:, 0].double(), 1.0 - float(alpha)))
    return prior
