"""The 19 ImageNet-C corruptions as batched, seeded torch transforms, with mCE.

Fifteen benchmark corruptions (:data:`BENCHMARK_CORRUPTIONS`) and four held-out ones
(:data:`HELDOUT_CORRUPTIONS`) after Hendrycks & Dietterich (ICLR 2019), each a
:class:`robust.transforms.Transform` with a continuous ``severity`` in ``[0, 5]`` (1..5 the published
tables, fractions interpolate, 0 the identity) and a per-image noise ``seed``. How lengths scale with
the image size and where we approximate the reference: benchmarks/results/corruptions.md.
"""
from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

import augment._corruption_ops as ops
from robust import noise
from robust.errors import InputError, UnknownNameError
from robust.registry import Registry, Spec, parse_number, parse_spec
from robust.seeding import derive_seed
from robust.transforms import MAX_SEVERITY, TRANSFORMS, Param, Params, Transform
from robust.validation import check_images, check_labels

REFERENCE_SIZE = 224
BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
HELDOUT_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = BENCHMARK_CORRUPTIONS + HELDOUT_CORRUPTIONS
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

CORRUPTIONS: Registry[type[Corruption]] = Registry("corruption")

#: AlexNet's top-1 error on ImageNet-C, averaged over severities 1-5 (Hendrycks & Dietterich), the
#: reference of the published mCE. Only sums over severities enter CE, so the averages suffice.
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592,
    "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
#: AlexNet's clean top-1 error on the ImageNet validation set (the reference of relative mCE).
ALEXNET_CLEAN_ERROR = 0.4345


def spatial_scale(height: int, width: int) -> float:
    """Pixels of this image per pixel of the 224x224 reference: ``min(H, W) / 224``."""
    return min(height, width) / REFERENCE_SIZE


FINE_FACTOR_MAX = 4


def fine_factor(height: int, width: int) -> int:
    """Supersampling factor for thresholded noise patterns (snow, spatter): toward the 224-pixel
    scale, at most :data:`FINE_FACTOR_MAX` (the cost grows with its square)."""
    return int(min(FINE_FACTOR_MAX, max(1, math.ceil(REFERENCE_SIZE / min(height, width)))))


def _severity_error(got: Any) -> InputError:
    return InputError("severity", f"a value in [0, {MAX_SEVERITY:g}] (1-5 are the published levels, fractions interpolate, 0 is the identity)", got)


class Corruption(Transform):
    """Base class of the corruptions: a severity table, the resolution rule and identity at severity 0.

    Subclasses declare ``table`` (column -> values at severities 0, 1, ..., 5), the ``spatial``
    columns (lengths in reference pixels, scaled by :func:`spatial_scale`) and implement
    :meth:`corrupt_levels`, which receives the interpolated, scaled columns as ``[N]`` tensors.
    """

    params: ClassVar[tuple[Param, ...]] = (Param("severity", 0.0, MAX_SEVERITY, 0.0), Param("seed", 0, 0, kind="seed"))
    differentiable: ClassVar[bool] = False
    category: ClassVar[str] = ""
    table: ClassVar[dict[str, tuple[float, ...]]] = {}
    spatial: ClassVar[tuple[str, ...]] = ()

    def levels(self, severity: torch.Tensor | float, height: int = REFERENCE_SIZE, width: int = REFERENCE_SIZE) -> dict[str, torch.Tensor]:
        """The table columns at ``severity`` (``[N]`` or scalar), with spatial columns scaled to ``height x width``."""
        sev = torch.as_tensor(severity, dtype=torch.float32)
        sev = sev.reshape(-1)
        if bool(((sev < 0) | (sev > MAX_SEVERITY) | ~torch.isfinite(sev)).any()):
            raise _severity_error(sev.tolist() if sev.numel() <= 8 else "out-of-range values")
        low = sev.floor().clamp(0, MAX_SEVERITY - 1)
        frac = sev - low
        index = low.long()
        scale = spatial_scale(height, width)
        out: dict[str, torch.Tensor] = {}
        for column, values in self.table.items():
            v = torch.tensor(values, dtype=torch.float32, device=sev.device)
            value = v[index] * (1 - frac) + v[index + 1] * frac
            out[column] = value * scale if column in self.spatial else value
        return out

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        x = images.float()
        n, _, h, w = x.shape
        sev = params["severity"].to(device=x.device, dtype=torch.float32)
        identity = sev == 0
        if bool(identity.all()):
            self.levels(sev, h, w)  # validates the range
            return images.clone()
        levels = self.levels(sev, h, w)
        seeds = params["seed"].to(device=x.device, dtype=torch.int64)
        out = self.corrupt_levels(x, levels, seeds)
        if bool(identity.any()):
            out = torch.where(identity.view(n, 1, 1, 1), x, out)
        return out.clamp_(0, 1).to(images.dtype)

    @abstractmethod
    def corrupt_levels(self, x: torch.Tensor, p: dict[str, torch.Tensor], seeds: torch.Tensor) -> torch.Tensor:
        """Corrupt float32 images ``x`` with per-image columns ``p`` and noise ``seeds`` (output is clipped after)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _register(cls: type[Corruption]) -> type[Corruption]:
    CORRUPTIONS.add(cls.name, cls, category=cls.category)
    TRANSFORMS.add(f"corruptions:{cls.name}", cls)
    return cls


def _col(p: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return p[name].view(-1, 1, 1, 1)


# -- noise --------------------------------------------------------------------------------------

@_register
class GaussianNoise(Corruption):
    """Additive Gaussian noise of standard deviation ``sigma``."""

    name = "gaussian_noise"
    category = "noise"
    table = {"sigma": (0.0, 0.08, 0.12, 0.18, 0.26, 0.38)}

    def corrupt_levels(self, x, p, seeds):
        z = noise.normal32(noise.keys32(seeds, 1), tuple(x.shape[1:]))
        return x + _col(p, "sigma") * z


@_register
class ShotNoise(Corruption):
    """Poisson (photon) noise: ``Poisson(x * photons) / photons``; the table holds ``1/sqrt(photons)``
    (the noise level), so photons are 60, 25, 12, 5, 3 at levels 1-5 and infinite at 0."""

    name = "shot_noise"
    category = "noise"
    table = {"level": (0.0, 60**-0.5, 25**-0.5, 12**-0.5, 5**-0.5, 3**-0.5)}

    def corrupt_levels(self, x, p, seeds):
        photons = _col(p, "level").clamp_min(1e-4).pow(-2)
        counts = noise.poisson32(x * photons, noise.keys32(seeds, 1))
        return counts / photons


@_register
class ImpulseNoise(Corruption):
    """Salt-and-pepper noise: a fraction ``amount`` of the values (per channel) set to 0 or 1."""

    name = "impulse_noise"
    category = "noise"
    table = {"amount": (0.0, 0.03, 0.06, 0.09, 0.17, 0.27)}

    def corrupt_levels(self, x, p, seeds):
        bits = noise.bits32(noise.keys32(seeds, 1), x[0].numel()).view(x.shape)
        u = torch.bitwise_right_shift(bits, 8).bitwise_and_(0xFFFFFF).float().mul_(1.0 / (1 << 24))
        salt = bits.bitwise_and_(1).float()
        return torch.where(u < _col(p, "amount"), salt, x)


@_register
class SpeckleNoise(Corruption):
    """Multiplicative Gaussian noise: ``x + x * N(0, c^2)``."""

    name = "speckle_noise"
    category = "noise"
    table = {"c": (0.0, 0.15, 0.2, 0.35, 0.45, 0.6)}

    def corrupt_levels(self, x, p, seeds):
        z = noise.normal32(noise.keys32(seeds, 1), tuple(x.shape[1:]))
        return x + x * _col(p, "c") * z


# -- blur ---------------------------------------------------------------------------------------

@_register
class GaussianBlur(Corruption):
    """Gaussian blur of standard deviation ``sigma`` (edge pixels replicated)."""

    name = "gaussian_blur"
    category = "blur"
    table = {"sigma": (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)}
    spatial = ("sigma",)

    def corrupt_levels(self, x, p, seeds):
        return ops.gaussian_blur(x, p["sigma"], mode="replicate")


@_register
class DefocusBlur(Corruption):
    """Defocus: convolution with a disk of ``radius``, anti-aliased by a Gaussian of ``alias``."""

    name = "defocus_blur"
    category = "blur"
    table = {"radius": (0.0, 3.0, 4.0, 6.0, 8.0, 10.0), "alias": (0.0, 0.1, 0.5, 0.5, 0.5, 0.5)}
    spatial = ("radius", "alias")

    def corrupt_levels(self, x, p, seeds):
        return ops.convolve(x, ops.disk_kernels(p["radius"], p["alias"]), mode="reflect")


@_register
class GlassBlur(Corruption):
    """Frosted glass: Gaussian blur, ``iterations`` rounds of local pixel displacement up to ``delta``
    pixels, Gaussian blur again. A fractional iteration count scales the last round's displacement."""

    name = "glass_blur"
    category = "blur"
    table = {
        "sigma": (0.0, 0.7, 0.9, 1.0, 1.1, 1.5),
        "delta": (0.0, 1.0, 2.0, 2.0, 3.0, 4.0),
        "iterations": (2.0, 2.0, 1.0, 3.0, 2.0, 2.0),
    }
    spatial = ("sigma", "delta")

    def corrupt_levels(self, x, p, seeds):
        n, c, h, w = x.shape
        y = ops.gaussian_blur(x, p["sigma"])
        keys = noise.keys32(seeds, 1)
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        for j in range(int(math.ceil(float(p["iterations"].max())))):
            reach = (p["delta"] * (p["iterations"] - j).clamp(0, 1)).view(n, 1, 1)
            if float(reach.max()) <= 0:
                continue
            ux, uy, vx, vy = noise.uniform_bytes32(noise.subkeys32(keys, j), (h, w), 4)
            # Dithered rounding: whole-pixel moves whose expected value is the continuous offset.
            ox = torch.floor((2 * ux - 1) * reach + vx).long()
            oy = torch.floor((2 * uy - 1) * reach + vy).long()
            src = (rows + oy).clamp(0, h - 1) * w + (cols + ox).clamp(0, w - 1)
            y = y.reshape(n, c, h * w).gather(2, src.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
        return ops.gaussian_blur(y, p["sigma"])


@_register
class MotionBlur(Corruption):
    """Motion: a one-sided line kernel of length ``2 * radius`` with Gaussian (``sigma``) weights,
    at an angle drawn uniformly in [-45, 45] degrees per image."""

    name = "motion_blur"
    category = "blur"
    table = {"radius": (0.0, 10.0, 15.0, 15.0, 15.0, 20.0), "sigma": (0.0, 3.0, 5.0, 8.0, 12.0, 15.0)}
    spatial = ("radius", "sigma")

    def corrupt_levels(self, x, p, seeds):
        angle = noise.uniform32(noise.keys32(seeds, 1), (1,))[:, 0] * 90 - 45
        return ops.convolve(x, ops.line_kernels(2 * p["radius"], p["sigma"], angle), mode="replicate")


@_register
class ZoomBlur(Corruption):
    """Zoom: the mean of the image and 16 copies enlarged about the centre by factors from 1 to ``zoom``."""

    name = "zoom_blur"
    category = "blur"
    table = {"zoom": (1.0, 1.11, 1.15, 1.20, 1.24, 1.30)}

    def corrupt_levels(self, x, p, seeds):
        step = p["zoom"].clamp_min(1).pow(1.0 / 15)
        acc = x
        # Four rounds of "average with a copy zoomed by step^(2^j)" give the mean over step^0..step^15.
        for j in range(4):
            acc = 0.5 * (acc + ops.zoom_center(acc, step.pow(2**j)))
        return (x + 16 * acc) / 17


# -- weather ------------------------------------------------------------------------------------

@_register
class Snow(Corruption):
    """Snow: thresholded noise flakes (lattice ``zoom`` pixels) streaked by motion blur, added with their
    180-degree rotation over a whitened image (``blend`` weights the original)."""

    name = "snow"
    category = "weather"
    table = {
        "loc": (0.1, 0.1, 0.2, 0.55, 0.55, 0.55),
        "scale": (0.3, 0.3, 0.3, 0.3, 0.3, 0.3),
        "zoom": (3.0, 3.0, 2.0, 4.0, 4.5, 2.5),
        "threshold": (0.5, 0.5, 0.5, 0.9, 0.85, 0.85),
        "radius": (10.0, 10.0, 12.0, 12.0, 12.0, 12.0),
        "sigma": (4.0, 4.0, 4.0, 8.0, 8.0, 12.0),
        "blend": (1.0, 0.8, 0.7, 0.7, 0.65, 0.55),
        "gain": (0.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    }
    spatial = ("zoom", "radius", "sigma")

    def corrupt_levels(self, x, p, seeds):
        n, _, h, w = x.shape
        k = fine_factor(h, w)
        keys = noise.keys32(seeds, 1)
        layer = ops.value_noise(noise.subkeys32(keys, 0), h * k, w * k, p["zoom"] * k, p["loc"], p["scale"])
        threshold = p["threshold"]
        if ops.same_for_all(threshold):  # one pass: zero below the threshold
            layer = F.threshold(layer, float(threshold[0]), 0.0).clamp_(0, 1)
        else:
            layer = (layer * (layer > _col(p, "threshold"))).clamp_(0, 1)
        angle = noise.uniform32(noise.subkeys32(keys, 1), (1,))[:, 0] * 90 - 135
        # The streaks are linear in the flakes, so the area average down to the image grid comes first
        # and the motion blur runs at image resolution (its kernel sees the bilinear pixel footprint).
        if k > 1:
            layer = F.avg_pool2d(layer, k)
        layer = ops.convolve(layer, ops.line_kernels(2 * p["radius"], p["sigma"], angle), mode="replicate")
        layer = layer * _col(p, "gain")
        blend = _col(p, "blend")
        whitened = blend * x + (1 - blend) * torch.maximum(x, ops.luma(x) * 1.5 + 0.5)
        return whitened + layer + layer.flip(-1, -2)


@_register
class Frost(Corruption):
    """Frost: ``image_weight * x + frost_weight * texture`` with a procedural frost texture."""

    name = "frost"
    category = "weather"
    table = {"image_weight": (1.0, 1.0, 0.8, 0.7, 0.65, 0.6), "frost_weight": (0.0, 0.4, 0.6, 0.7, 0.7, 0.75)}

    def corrupt_levels(self, x, p, seeds):
        _, c, h, w = x.shape
        texture = ops.frost_texture(noise.keys32(seeds, 1), c, h, w, spatial_scale(h, w))
        return _col(p, "image_weight") * x + _col(p, "frost_weight") * texture


@_register
class Fog(Corruption):
    """Fog: ``(x + amount * plasma) * max / (max + amount)`` with fractal plasma of roughness ``decay``."""

    name = "fog"
    category = "weather"
    table = {"amount": (0.0, 1.5, 2.0, 2.5, 2.5, 3.0), "decay": (2.0, 2.0, 2.0, 1.7, 1.5, 1.4)}

    def corrupt_levels(self, x, p, seeds):
        _, _, h, w = x.shape
        field = ops.plasma(noise.keys32(seeds, 1), h, w, 256 * spatial_scale(h, w), p["decay"])
        peak = x.amax((1, 2, 3), keepdim=True)
        amount = _col(p, "amount")
        return (x + amount * field) * peak / (peak + amount)


@_register
class Brightness(Corruption):
    """Brightness: HSV value raised by ``delta`` (hue and saturation kept)."""

    name = "brightness"
    category = "weather"
    table = {"delta": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)}

    def corrupt_levels(self, x, p, seeds):
        return ops.add_hsv_value(x, p["delta"])


@_register
class Spatter(Corruption):
    """Spatter: water droplets (levels 1-3, a pale turquoise sheen of strength ``water``) or mud (levels
    4-5, brown blots); both grow from smoothed noise above ``threshold``. ``mud`` blends the two."""

    name = "spatter"
    category = "weather"
    table = {
        "loc": (0.65, 0.65, 0.65, 0.65, 0.65, 0.67),
        "scale": (0.3, 0.3, 0.3, 0.3, 0.3, 0.4),
        "sigma": (4.0, 4.0, 3.0, 2.0, 1.0, 1.0),
        "threshold": (0.69, 0.69, 0.68, 0.68, 0.65, 0.65),
        "water": (0.0, 0.6, 0.6, 0.5, 0.5, 0.5),
        "mud_sigma": (1.5, 1.5, 1.5, 1.5, 1.5, 1.5),
        "mud": (0.0, 0.0, 0.0, 0.0, 1.0, 1.0),
    }
    spatial = ("sigma", "mud_sigma")
    WATER = (175 / 255, 238 / 255, 238 / 255)
    MUD = (63 / 255, 42 / 255, 20 / 255)

    def corrupt_levels(self, x, p, seeds):
        n, c, h, w = x.shape
        k = fine_factor(h, w)
        hf, wf = h * k, w * k
        keys = noise.keys32(seeds, 1)
        # Per-pixel noise on a grid of s*k grid pixels per reference pixel: scaling its amplitude by s*k
        # keeps the smoothed field's statistics those of the reference at any grid resolution.
        grid = k * spatial_scale(h, w)
        liquid = _col(p, "loc") + _col(p, "scale") * grid * noise.normal32(keys, (1, hf, wf))
        liquid = ops.gaussian_blur(liquid, p["sigma"] * k)
        threshold = _col(p, "threshold")
        weight = _col(p, "mud")
        water_out = mud_out = None
        if bool((weight < 1).any()):
            # Water: droplets as thick as the liquid rises above the threshold (so the sparse, shallow
            # droplets of level 1 stay faint), softened, with an emboss relief giving a highlight on one rim.
            unit = torch.full_like(p["sigma"], grid)
            depth = ((liquid - threshold) / 0.1).clamp_(0, 1)
            soft = ops.gaussian_blur(depth, unit)
            emboss = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]], device=x.device).flip(0, 1)
            relief = ops.convolve(soft, emboss.expand(n, 3, 3), mode="replicate")
            sheen = (soft + 0.5 * relief).clamp_(0, 1) * _col(p, "water")
            if k > 1:
                sheen = F.avg_pool2d(sheen, k)
            water_out = (x + sheen * ops.colour(self.WATER, c, x.device)).clamp(0, 1)
        if bool((weight > 0).any()):
            # Mud: smoothed wet mask, kept where it is dense.
            mud = ops.gaussian_blur((liquid >= threshold).to(x.dtype), p["mud_sigma"] * k)
            mud = mud.masked_fill_(mud < 0.8, 0)
            if k > 1:
                mud = F.avg_pool2d(mud, k)
            mud_out = x * (1 - mud) + mud * ops.colour(self.MUD, c, x.device)
        # Integer levels are all water (1-3) or all mud (4-5): only the branch in use is computed.
        if mud_out is None:
            return water_out
        if water_out is None:
            return mud_out
        return (1 - weight) * water_out + weight * mud_out


# -- digital ------------------------------------------------------------------------------------

@_register
class Contrast(Corruption):
    """Contrast: each channel pulled toward its mean by ``factor``."""

    name = "contrast"
    category = "digital"
    table = {"factor": (1.0, 0.4, 0.3, 0.2, 0.1, 0.05)}

    def corrupt_levels(self, x, p, seeds):
        mean = x.mean((2, 3), keepdim=True)
        return (x - mean) * _col(p, "factor") + mean


@_register
class ElasticTransform(Corruption):
    """Elastic: displacement by ``alpha`` times uniform noise (``+-0.005 H``) smoothed by a Gaussian of
    ``0.01 * size``, bilinear resampling with mirrored borders."""

    name = "elastic_transform"
    category = "digital"
    table = {"alpha": (0.0, 12.5, 16.25, 21.25, 25.0, 30.0)}
    spatial = ("alpha",)

    def corrupt_levels(self, x, p, seeds):
        n, _, h, w = x.shape
        reach = 0.005 * h
        field = (noise.uniform32(noise.keys32(seeds, 1), (2, h, w)) * 2 - 1) * reach
        kh = ops.gaussian_kernels(torch.full((1,), 0.01 * h, device=x.device), truncate=3.0)
        kw = ops.gaussian_kernels(torch.full((1,), 0.01 * w, device=x.device), truncate=3.0)
        field = ops.blur_separable(field, kh, kw, mode="reflect") * _col(p, "alpha")
        return ops.warp(x, field[:, 0], field[:, 1], padding_mode="reflection")


@_register
class Pixelate(Corruption):
    """Pixelate: box-downsample to ``ratio`` of the size and box-upsample back."""

    name = "pixelate"
    category = "digital"
    table = {"ratio": (1.0, 0.6, 0.5, 0.4, 0.3, 0.25)}

    def corrupt_levels(self, x, p, seeds):
        return ops.pixelate(x, p["ratio"])


@_register
class JpegCompression(Corruption):
    """JPEG: encode and decode at ``quality`` (IJG scale; 100 at severity 0+, where the input is returned)."""

    name = "jpeg_compression"
    category = "digital"
    table = {"quality": (100.0, 25.0, 18.0, 15.0, 10.0, 7.0)}

    def corrupt_levels(self, x, p, seeds):
        return ops.jpeg(x, p["quality"])


@_register
class Saturate(Corruption):
    """Saturate: HSV saturation ``S * factor + offset`` (levels 1-2 desaturate, 3-5 oversaturate)."""

    name = "saturate"
    category = "digital"
    table = {"factor": (1.0, 0.3, 0.1, 2.0, 5.0, 20.0), "offset": (0.0, 0.0, 0.0, 0.0, 0.1, 0.2)}

    def corrupt_levels(self, x, p, seeds):
        return ops.scale_hsv_saturation(x, p["factor"], p["offset"])


# -- lookup and application ----------------------------------------------------------------------

def get_corruption(name: str) -> Corruption:
    """A corruption by name (``"gaussian_noise"`` or ``"corruptions:gaussian_noise"``); unknown names
    raise :class:`robust.errors.UnknownNameError` listing the valid ones."""
    if not isinstance(name, str):
        raise InputError("corruption", "a corruption name such as 'gaussian_noise'", type(name).__name__)
    key = name.strip()
    if key.startswith("corruptions:"):
        key = key[len("corruptions:"):]
    return CORRUPTIONS.get(key)()


def image_seeds(seed: int, name: str, n: int, start: int = 0, device: torch.device | str = "cpu", *,
                ids: torch.Tensor | None = None) -> torch.Tensor:
    """Noise seeds of images ``start .. start + n - 1`` (or of the image ids ``ids``): image ``i`` gets
    ``derive_seed(seed, name, i)``, the one key of corruption noise: the run's seed, the corruption
    and the image's position in its dataset, nothing else (not the batch, the device, the command or
    the suite spec that asked for it). The severity then only sets the parameters, so the corrupted
    pixels depend on (seed, corruption, severity, image) alone."""
    positions = range(start, start + n) if ids is None else ids.tolist()
    return torch.tensor([derive_seed(seed, name, int(i)) for i in positions], dtype=torch.int64, device=device)


def corrupt(images: torch.Tensor, name: str, severity: float | torch.Tensor, seed: int = 0, *, start: int = 0,
            ids: torch.Tensor | None = None) -> torch.Tensor:
    """Corrupt ``images [N, C, H, W]`` in ``[0, 1]`` with ``name`` at ``severity`` (a number in [0, 5] or ``[N]``).

    Image ``i`` gets the noise seed ``derive_seed(seed, name, start + i)`` (``start`` is the index of
    the first image in its dataset; ``ids [N]`` give every image's index instead), so
    ``corrupt(images[i:i+1], name, severity, seed, start=i)`` reproduces image ``i`` of a batch on its own.
    """
    check_images(images)
    transform = get_corruption(name)
    n = images.shape[0]
    if ids is not None and tuple(ids.shape) != (n,):
        raise InputError("ids", f"{n} image ids (one per image)", f"shape {tuple(ids.shape)}")
    if isinstance(severity, torch.Tensor) and severity.dim() > 0:
        if severity.shape != (n,):
            raise InputError("severity", f"a number or a tensor of shape [{n}]", f"shape {tuple(severity.shape)}")
        sev = severity.to(device=images.device, dtype=torch.float32)
    else:
        try:
            value = float(severity)
        except (TypeError, ValueError):
            raise _severity_error(severity) from None
        if not (0 <= value <= MAX_SEVERITY):
            raise _severity_error(severity)
        sev = torch.full((n,), value, device=images.device)
    params = {"severity": sev, "seed": image_seeds(seed, transform.name, n, start, images.device, ids=ids)}
    return transform(images, params)


# -- metrics ------------------------------------------------------------------------------------
Errors = Mapping[str, Sequence[float]]
Reference = Mapping[str, "Sequence[float] | float"]


def _rates(values: Any, name: str) -> list[float]:
    if isinstance(values, (int, float)):
        values = [values]
    try:
        rates = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(name, "a list of error rates in [0, 1]", values) from None
    if not rates or any(not (0 <= r <= 1) or math.isnan(r) for r in rates):
        raise InputError(name, "a non-empty list of error rates in [0, 1]", values)
    return rates


def _reference_total(reference: Sequence[float] | float, count: int, name: str) -> float:
    """Sum of the reference's errors over ``count`` severities (a float reference is a mean over severities)."""
    if isinstance(reference, (int, float)):
        return _rates(reference, name)[0] * count
    ref = _rates(reference, name)
    if len(ref) != count:
        raise InputError(name, f"{count} error rates (one per severity) or their mean", f"{len(ref)} values")
    return sum(ref)


def corruption_error(errors: Sequence[float], reference: Sequence[float] | float) -> float:
    """CE: the sum of a model's errors over severities divided by the reference model's sum.

    ``reference`` is a list with one error per severity or a single mean over severities.
    """
    e = _rates(errors, "errors")
    total = _reference_total(reference, len(e), "reference")
    if total <= 0:
        raise InputError("reference", "errors above zero (CE divides by them)", reference)
    return sum(e) / total


def relative_corruption_error(errors: Sequence[float], clean_error: float, reference: Sequence[float] | float, reference_clean: float) -> float:
    """Relative CE: the sum over severities of (error - clean error), divided by the same for the reference."""
    e = _rates(errors, "errors")
    clean = _rates(clean_error, "clean_error")[0]
    ref_clean = _rates(reference_clean, "reference_clean")[0]
    gap = _reference_total(reference, len(e), "reference") - len(e) * ref_clean
    if gap <= 0:
        raise InputError("reference", "errors above the reference's clean error (relative CE divides by the gap)", reference)
    return sum(v - clean for v in e) / gap


def _names(errors: Errors, names: Sequence[str] | None, reference: Reference | None = None) -> list[str]:
    chosen = list(errors) if names is None else list(names)
    if not chosen:
        raise InputError("errors", "errors for at least one corruption", "none")
    for n in chosen:
        if n not in errors:
            raise InputError("names", "corruptions present in errors: " + ", ".join(errors), n)
        if reference is not None and n not in reference:
            raise InputError("reference", f"an entry for {n} (it has " + (", ".join(reference) or "none") + ")", n)
    return chosen


def mce(errors: Errors, reference: Reference, names: Sequence[str] | None = None) -> float:
    """Mean corruption error: the mean of :func:`corruption_error` over ``names`` (default: all in ``errors``).

    For the published ImageNet-C mCE pass the 15 benchmark corruptions and :data:`ALEXNET_ERRORS`;
    for your own data pass a baseline model's errors. Returned as a fraction (x100 for the paper's %).
    """
    chosen = _names(errors, names, reference)
    return sum(corruption_error(errors[n], reference[n]) for n in chosen) / len(chosen)


def relative_mce(errors: Errors, clean_error: float, reference: Reference, reference_clean: float, names: Sequence[str] | None = None) -> float:
    """Mean relative corruption error (degradation beyond clean error, normalised by the reference's)."""
    chosen = _names(errors, names, reference)
    return sum(relative_corruption_error(errors[n], clean_error, reference[n], reference_clean) for n in chosen) / len(chosen)


def average_error(errors: Errors, names: Sequence[str] | None = None) -> float:
    """Unnormalised mean error over corruptions and severities (for small datasets without a reference)."""
    chosen = _names(errors, names)
    values = [v for n in chosen for v in _rates(errors[n], f"errors[{n!r}]")]
    return sum(values) / len(values)


@dataclass
class CorruptionErrors:
    """A classifier's error per corruption and severity, with its clean error, and the summary metrics."""

    clean_error: float
    errors: dict[str, list[float]]
    severities: list[float] = field(default_factory=lambda: [float(s) for s in SEVERITIES])
    n: int = 0

    def average_error(self, names: Sequence[str] | None = None) -> float:
        return average_error(self.errors, names)

    def mce(self, reference: Reference, names: Sequence[str] | None = None) -> float:
        return mce(self.errors, reference, names)

    def relative_mce(self, reference: Reference, reference_clean: float, names: Sequence[str] | None = None) -> float:
        return relative_mce(self.errors, self.clean_error, reference, reference_clean, names)

    def to_dict(self) -> dict[str, Any]:
        return {"clean_error": self.clean_error, "errors": self.errors, "severities": self.severities, "n": self.n}


def corruption_errors(
    classifier: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    names: Sequence[str] = ALL_CORRUPTIONS,
    severities: Sequence[float] = SEVERITIES,
    seed: int = 0,
    batch_size: int = 128,
) -> CorruptionErrors:
    """Top-1 error of ``classifier`` (a :class:`robust.models.Classifier`) on every corruption x severity.

    Images are corrupted batch by batch on the classifier's device; image ``i`` of the set gets the
    noise seed ``derive_seed(seed, name, i)`` whatever the batch size.
    """
    check_images(images)
    labels = check_labels(labels, images.shape[0])
    transforms = [get_corruption(n) for n in names]
    device = classifier.device
    n = images.shape[0]

    def error(name: str | None, severity: float = 0.0) -> float:
        wrong = 0
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].to(device)
            pred = classifier.predict(x if name is None else corrupt(x, name, severity, seed, start=start))
            wrong += int((pred.cpu() != labels[start : start + batch_size]).sum())
        return wrong / n

    clean = error(None)
    table = {t.name: [error(t.name, float(s)) for s in severities] for t in transforms}
    return CorruptionErrors(clean, table, [float(s) for s in severities], n)


# -- corruption sets and severities in specs ------------------------------------------------------

#: Named sets a spec may give in place of corruption names.
CORRUPTION_SETS: dict[str, tuple[str, ...]] = {"benchmark": BENCHMARK_CORRUPTIONS, "heldout": HELDOUT_CORRUPTIONS, "all": ALL_CORRUPTIONS}


def parse_corruption_set(spec: str | Spec, argument: str = "corruptions") -> tuple[list[str], list[float]]:
    """The corruptions and severities of ``corruptions[:set|:name][@severity][,names=a+b][,severities=1+3+5]``.

    The one syntax of the corruptions suite, the ``corrupt`` recipe and ``robust corrupt``. The
    target is a set of :data:`CORRUPTION_SETS` (default ``benchmark``) or one corruption; ``names=``
    (instead of a target) joins corruptions or sets with ``+``; names keep their order, without
    repeats. Severities come from ``@`` or ``severities=`` (not both): values in (0, 5] joined by
    ``+``, returned sorted without repeats, empty when the spec gives none (the caller's default
    applies). Only these parts are read (the spec's name and other options are the caller's);
    errors are :class:`InputError` naming ``argument``.
    """
    if isinstance(spec, str):
        spec = parse_spec(spec, argument)
    if spec.target is not None and "names" in spec.options:
        raise InputError(argument, "a target or names=..., not both", str(spec))
    if spec.at is not None and "severities" in spec.options:
        raise InputError(argument, "@severity or severities=..., not both", str(spec))
    names: list[str] = []
    listed = spec.target if spec.target is not None else spec.options.get("names", "benchmark")
    for part in str(listed).split("+"):
        part = part.strip()
        if part not in CORRUPTION_SETS and part not in CORRUPTIONS:
            raise UnknownNameError(argument, part, [*CORRUPTION_SETS, *CORRUPTIONS])
        names += [name for name in CORRUPTION_SETS.get(part, (part,)) if name not in names]
    text = spec.at if spec.at is not None else spec.options.get("severities")
    if text is None:
        return names, []
    values = [parse_number(part, argument) for part in str(text).split("+")]
    if not all(0 < value <= MAX_SEVERITY for value in values):  # NaN fails too
        raise InputError(argument, f"severities in (0, {MAX_SEVERITY:g}] joined by + (e.g. 1+3+5)", str(text))
    return names, sorted(set(values))
