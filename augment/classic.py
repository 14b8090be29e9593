"""Classic augmentations - AugMix, RandAugment, TrivialAugment - as batched, seeded transforms on any device.

Each is a :class:`robust.transforms.Transform` with a magnitude and a per-image ``seed`` from which
every random choice is drawn (counter-based noise), so a batch is augmented in one pass and any
image reproduces alone. :func:`augmix_consistency_loss` is AugMix's Jensen-Shannon term.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

import augment._corruption_ops as ops
from robust import noise
from robust.errors import InputError
from robust.transforms import Param, Params, Transform, register_transform

OpFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# -- image operations: op(x [M, C, H, W], signed magnitude [M]) -> x' ------------------------------
# kornia's (equalize, posterize, solarize, sharpness, affine warps; imported on first use) or
# PIL-equivalent blends (brightness, colour, contrast, autocontrast).

def _grey(x: torch.Tensor) -> torch.Tensor:
    return ops.luma(x)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance: ``b + factor * (a - b)`` (factor 1 keeps ``a``), clipped."""
    return (b + factor.view(-1, 1, 1, 1) * (a - b)).clamp(0, 1)


def _affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Warp about the image centre with per-image 2x2 ``matrix`` ``[M, 2, 3]`` (last column: shift in pixels)."""
    _, _, h, w = x.shape
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=x.device, dtype=x.dtype)
    m = matrix.to(x.dtype).clone()
    m[:, :, 2] = m[:, :, 2] + centre - m[:, :, :2] @ centre
    import kornia.geometry.transform as KG  # imported on first use: keeps `import augment` light

    return KG.warp_affine(x, m, (h, w), mode="bilinear", padding_mode="zeros", align_corners=True)


def _eye(n: int, device: torch.device) -> torch.Tensor:
    m = torch.zeros(n, 2, 3, device=device)
    m[:, 0, 0] = 1
    m[:, 1, 1] = 1
    return m


def op_identity(x, v):
    return x


def op_autocontrast(x, v):
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-12), x)


def op_equalize(x, v):
    import kornia.enhance as KE

    return KE.equalize(x)


def op_rotate(x, degrees):
    a = torch.deg2rad(degrees.float())
    m = _eye(x.shape[0], x.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = torch.cos(a), -torch.sin(a), torch.sin(a), torch.cos(a)
    return _affine(x, m)


def op_shear_x(x, shear):
    m = _eye(x.shape[0], x.device)
    m[:, 0, 1] = shear
    return _affine(x, m)


def op_shear_y(x, shear):
    m = _eye(x.shape[0], x.device)
    m[:, 1, 0] = shear
    return _affine(x, m)


def op_translate_x(x, fraction):
    m = _eye(x.shape[0], x.device)
    m[:, 0, 2] = fraction * x.shape[-1]
    return _affine(x, m)


def op_translate_y(x, fraction):
    m = _eye(x.shape[0], x.device)
    m[:, 1, 2] = fraction * x.shape[-2]
    return _affine(x, m)


def op_brightness(x, delta):
    return _blend(x, torch.zeros_like(x), 1 + delta)


def op_color(x, delta):
    return _blend(x, _grey(x).expand_as(x), 1 + delta)


def op_contrast(x, delta):
    mean = _grey(x).mean((2, 3), keepdim=True)
    return _blend(x, mean.expand_as(x), 1 + delta)


def op_sharpness(x, delta):
    import kornia.enhance as KE

    return KE.sharpness(x, (1 + delta).clamp_min(0)).clamp(0, 1)


def op_posterize(x, bits):
    import kornia.enhance as KE

    return KE.posterize(x, bits.round().clamp(0, 8).to(torch.int64))


def op_solarize(x, threshold):
    import kornia.enhance as KE

    return KE.solarize(x, threshold.clamp(0, 1))


OPERATIONS: dict[str, OpFn] = {
    "identity": op_identity, "autocontrast": op_autocontrast, "equalize": op_equalize, "rotate": op_rotate,
    "shear_x": op_shear_x, "shear_y": op_shear_y, "translate_x": op_translate_x, "translate_y": op_translate_y,
    "brightness": op_brightness, "color": op_color, "contrast": op_contrast, "sharpness": op_sharpness,
    "posterize": op_posterize, "solarize": op_solarize,
}
_SIGNED = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y", "brightness", "color", "contrast", "sharpness"}


def _op_value(name: str, level: torch.Tensor, sign: torch.Tensor, ranges: dict[str, tuple[float, float]], pixels: int = 0) -> torch.Tensor:
    """Map a level in [0, 1] to the operation's argument: ``start + level * (end - start)``, signed if it
    has a direction. With ``pixels`` set, translation ranges are in pixels and become fractions of it."""
    start, end = ranges.get(name, (0.0, 0.0))
    value = start + level * (end - start)
    if pixels and name in ("translate_x", "translate_y"):
        value = value / pixels
    return value * sign if name in _SIGNED else value


def _apply_grouped(x: torch.Tensor, choice: torch.Tensor, names: Sequence[str], values: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply operation ``names[choice[i]]`` to image ``i`` (images grouped by operation, one call each)."""
    out = x.clone()
    for j, name in enumerate(names):
        idx = (choice == j).nonzero().squeeze(1)
        if idx.numel() == 0 or name == "identity":
            continue
        out[idx] = OPERATIONS[name](x[idx], values[name][idx]).to(x.dtype)
    return out


def _check_ops(names: Sequence[str], what: str) -> tuple[str, ...]:
    for n in names:
        if n not in OPERATIONS:
            raise InputError(what, "operations among " + ", ".join(OPERATIONS), n)
    if not names:
        raise InputError(what, "at least one operation", "none")
    return tuple(names)


class _SeededAugment(Transform):
    """Shared machinery: per-image random draws from the ``seed`` parameter."""

    differentiable: ClassVar[bool] = False

    @staticmethod
    def _draws(seeds: torch.Tensor, stream: int, count: int) -> torch.Tensor:
        return noise.uniform32(noise.keys32(seeds.to(torch.int64), stream), (count,))


# -- RandAugment ----------------------------------------------------------------------------------
RANDAUGMENT_OPS: tuple[str, ...] = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
    "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize",
)
# (value at magnitude 0, value at the top of the scale); translations are fractions of the size.
RANDAUGMENT_RANGES: dict[str, tuple[float, float]] = {
    "shear_x": (0.0, 0.3), "shear_y": (0.0, 0.3), "translate_x": (0.0, 150 / 331), "translate_y": (0.0, 150 / 331),
    "rotate": (0.0, 30.0), "brightness": (0.0, 0.9), "color": (0.0, 0.9), "contrast": (0.0, 0.9),
    "sharpness": (0.0, 0.9), "posterize": (8.0, 4.0), "solarize": (1.0, 0.0),
}
RANDAUGMENT_BINS = 31


@register_transform
class RandAugment(_SeededAugment):
    """RandAugment (Cubuk et al. 2020): ``num_ops`` operations per image (uniform, with replacement) at
    ``magnitude`` (0-30, default 9), with the ranges of torchvision's implementation.

    ``sample`` keeps the configured magnitude (RandAugment's single global M) and draws seeds;
    ``at_severity(s)`` maps severity 0-5 onto magnitude 0-30 for sweeps and searches.
    """

    name = "randaugment"
    params = (Param("magnitude", 0.0, RANDAUGMENT_BINS - 1.0, 0.0), Param("seed", 0, 0, kind="seed"))

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, ops_list: Sequence[str] = RANDAUGMENT_OPS):
        if int(num_ops) != num_ops or num_ops < 1:
            raise InputError("num_ops", "a positive whole number", num_ops)
        if not (0 <= magnitude <= RANDAUGMENT_BINS - 1):
            raise InputError("magnitude", f"a value in [0, {RANDAUGMENT_BINS - 1}]", magnitude)
        self.num_ops = int(num_ops)
        self.magnitude = float(magnitude)
        self.ops = _check_ops(ops_list, "ops_list")

    def sample(self, seeds: torch.Tensor, *, device: torch.device | str | None = None, stream: int = 0) -> Params:
        out = super().sample(seeds, device=device, stream=stream)
        out["magnitude"] = torch.full_like(out["magnitude"], self.magnitude)
        return out

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        level = (params["magnitude"].to(images.device).float() / (RANDAUGMENT_BINS - 1)).clamp(0, 1)
        seeds = params["seed"].to(images.device)
        x = images
        for k in range(self.num_ops):
            u = self._draws(seeds, 10 + k, 2)
            choice = (u[:, 0] * len(self.ops)).long().clamp_max(len(self.ops) - 1)
            sign = torch.where(u[:, 1] < 0.5, -1.0, 1.0)
            values = {name: _op_value(name, level, sign, RANDAUGMENT_RANGES) for name in self.ops}
            x = _apply_grouped(x, choice, self.ops, values)
        return x

    def __repr__(self) -> str:
        return f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude:g})"


# -- TrivialAugment -------------------------------------------------------------------------------
TRIVIALAUGMENT_RANGES: dict[str, tuple[float, float]] = {
    "shear_x": (0.0, 0.99), "shear_y": (0.0, 0.99), "translate_x": (0.0, 32.0), "translate_y": (0.0, 32.0),
    "rotate": (0.0, 135.0), "brightness": (0.0, 0.99), "color": (0.0, 0.99), "contrast": (0.0, 0.99),
    "sharpness": (0.0, 0.99), "posterize": (8.0, 2.0), "solarize": (1.0, 0.0),
}


@register_transform
class TrivialAugment(_SeededAugment):
    """TrivialAugment (Mueller & Hutter 2021, "wide" ranges): one operation per image at a magnitude
    drawn uniformly in [0, 1].

    Translations are up to 32 pixels, as published, whatever the image size.
    """

    name = "trivialaugment"
    params = (Param("magnitude", 0.0, 1.0, 0.0), Param("seed", 0, 0, kind="seed"))

    def __init__(self, ops_list: Sequence[str] = RANDAUGMENT_OPS):
        self.ops = _check_ops(ops_list, "ops_list")

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        w = images.shape[-1]
        level = params["magnitude"].to(images.device).float().clamp(0, 1)
        u = self._draws(params["seed"].to(images.device), 20, 2)
        choice = (u[:, 0] * len(self.ops)).long().clamp_max(len(self.ops) - 1)
        sign = torch.where(u[:, 1] < 0.5, -1.0, 1.0)
        values = {name: _op_value(name, level, sign, TRIVIALAUGMENT_RANGES, pixels=w) for name in self.ops}
        return _apply_grouped(images, choice, self.ops, values)

    def __repr__(self) -> str:
        return "TrivialAugment()"


# -- AugMix ---------------------------------------------------------------------------------------
AUGMIX_OPS: tuple[str, ...] = (
    "autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y",
)
# At AugMix severity 10: rotate 30 degrees, shear 0.3, translate a third of the size, posterize
# from 4 bits down to 0, solarize threshold from 1 down to 0.
AUGMIX_RANGES: dict[str, tuple[float, float]] = {
    "rotate": (0.0, 30.0), "shear_x": (0.0, 0.3), "shear_y": (0.0, 0.3), "translate_x": (0.0, 1 / 3),
    "translate_y": (0.0, 1 / 3), "posterize": (4.0, 0.0), "solarize": (1.0, 0.0),
}
AUGMIX_MAX_SEVERITY = 10.0
#: The sample streams of AugMix's two views (:meth:`AugMix.augment_pair`, the augmix training recipe).
PAIR_STREAMS = (0xA0, 0xA1)


def _gamma(alpha: float, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Gamma(alpha, 1) samples from normals ``z`` and uniforms ``u`` ``[..., T]`` (Marsaglia-Tsang, T tries).

    For alpha < 1 the last uniform boosts a Gamma(alpha + 1) sample by ``u^(1/alpha)``.
    """
    boost = None
    if alpha < 1:
        boost = u[..., -1].pow(1 / alpha)
        alpha = alpha + 1
    d = alpha - 1 / 3
    c = 1 / math.sqrt(9 * d)
    v = (1 + c * z).clamp_min(1e-12) ** 3
    ok = (z > -1 / c) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v))
    first = torch.where(ok.any(-1), ok.float().argmax(-1), torch.zeros_like(ok[..., 0], dtype=torch.long))
    sample = torch.where(ok.any(-1), (d * v).gather(-1, first.unsqueeze(-1)).squeeze(-1), torch.full_like(v[..., 0], d))
    return sample * boost if boost is not None else sample


@register_transform
class AugMix(_SeededAugment):
    """AugMix (Hendrycks et al. 2020): ``(1 - m) x + m * sum_i w_i chain_i(x)``, ``w ~ Dirichlet(alpha)``,
    ``m ~ Beta(alpha, alpha)``, with no operation that overlaps the ImageNet-C corruptions.

    Each of ``width`` chains applies ``depth`` operations (1-3 at random when ``depth`` is 0), each at
    a level drawn uniformly in ``[0.1, severity]`` on AugMix's 0-10 scale. ``sample`` keeps the
    configured severity and draws seeds; :meth:`augment_pair` gives the two independent views the
    Jensen-Shannon consistency loss compares.
    """

    name = "augmix"
    params = (Param("severity", 0.0, AUGMIX_MAX_SEVERITY, 0.0), Param("seed", 0, 0, kind="seed"))

    def __init__(self, severity: float = 3.0, width: int = 3, depth: int = 0, alpha: float = 1.0, ops_list: Sequence[str] = AUGMIX_OPS):
        if not (0 <= severity <= AUGMIX_MAX_SEVERITY):
            raise InputError("severity", f"a value in [0, {AUGMIX_MAX_SEVERITY:g}]", severity)
        if int(width) != width or width < 1:
            raise InputError("width", "a positive whole number", width)
        if int(depth) != depth or depth < 0:
            raise InputError("depth", "0 (random 1-3) or a positive whole number", depth)
        if not alpha > 0:
            raise InputError("alpha", "a positive number", alpha)
        self.severity = float(severity)
        self.width = int(width)
        self.depth = int(depth)
        self.alpha = float(alpha)
        self.ops = _check_ops(ops_list, "ops_list")

    def sample(self, seeds: torch.Tensor, *, device: torch.device | str | None = None, stream: int = 0) -> Params:
        out = super().sample(seeds, device=device, stream=stream)
        out["severity"] = torch.full_like(out["severity"], self.severity)
        return out

    def _mixing(self, seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tries = 8
        keys = noise.keys32(seeds, 30)
        z = noise.normal32(noise.subkeys32(keys, 0), (self.width + 2, tries))
        u = noise.uniform32(noise.subkeys32(keys, 1), (self.width + 2, tries))
        g = _gamma(self.alpha, z, u)  # [N, width + 2]
        weights = g[:, : self.width] / g[:, : self.width].sum(1, keepdim=True)
        m = g[:, self.width] / (g[:, self.width] + g[:, self.width + 1])
        return weights, m

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        seeds = params["seed"].to(images.device).to(torch.int64)
        top = (params["severity"].to(images.device).float() / AUGMIX_MAX_SEVERITY).clamp(0, 1)
        weights, m = self._mixing(seeds)
        max_depth = self.depth or 3
        depth_u = self._draws(seeds, 31, self.width)
        mix = torch.zeros_like(images)
        for i in range(self.width):
            depth = torch.full_like(top, float(self.depth)) if self.depth else (1 + (depth_u[:, i] * 3).floor().clamp_max(2))
            chain = images
            for k in range(max_depth):
                u = self._draws(seeds, 40 + 3 * i + k, 3)
                choice = (u[:, 0] * len(self.ops)).long().clamp_max(len(self.ops) - 1)
                choice = torch.where(depth > k, choice, torch.full_like(choice, -1))
                level = (0.1 / AUGMIX_MAX_SEVERITY + u[:, 1] * (top - 0.1 / AUGMIX_MAX_SEVERITY)).clamp_min(0)
                sign = torch.where(u[:, 2] < 0.5, -1.0, 1.0)
                values = {name: _op_value(name, level, sign, AUGMIX_RANGES) for name in self.ops}
                chain = _apply_grouped(chain, choice, self.ops, values)
            mix = mix + weights[:, i].view(-1, 1, 1, 1).to(images.dtype) * chain
        mv = m.view(-1, 1, 1, 1).to(images.dtype)
        out = (1 - mv) * images + mv * mix
        # Severity 0 means no operation: the identity, whatever the mixing weights.
        return torch.where((top > 0).view(-1, 1, 1, 1), out, images).clamp(0, 1)

    def augment_pair(self, images: torch.Tensor, seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independently augmented views of ``images`` from per-image ``seeds`` (for
        :func:`augmix_consistency_loss`): the draws at the two :data:`PAIR_STREAMS`."""
        first, second = (self(images, self.sample(seeds, device=images.device, stream=s)) for s in PAIR_STREAMS)
        return first, second

    def __repr__(self) -> str:
        return f"AugMix(severity={self.severity:g}, width={self.width}, depth={self.depth}, alpha={self.alpha:g})"


def augmix_consistency_loss(logits_clean: torch.Tensor, logits_aug1: torch.Tensor, logits_aug2: torch.Tensor) -> torch.Tensor:
    """AugMix's Jensen-Shannon consistency: the mean KL divergence of the three predictive
    distributions from their average (a scalar, averaged over the batch).

    AugMix adds it to the cross-entropy of the clean logits with weight 12.
    """
    for name, t in (("logits_clean", logits_clean), ("logits_aug1", logits_aug1), ("logits_aug2", logits_aug2)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise InputError(name, "logits of shape [N, num_classes]", getattr(t, "shape", type(t).__name__))
        if t.shape != logits_clean.shape:
            raise InputError(name, f"the shape of logits_clean {tuple(logits_clean.shape)}", tuple(t.shape))
    probs = [F.softmax(t, dim=1) for t in (logits_clean, logits_aug1, logits_aug2)]
    log_mixture = torch.clamp((probs[0] + probs[1] + probs[2]) / 3, 1e-7, 1).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / 3
