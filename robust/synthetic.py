"""The synthetic natural-variation benchmark: ten shapes under thirteen known nuisance factors.

Images are rendered procedurally and vectorised in torch (no files, no downloads), exactly
reproducible from ``(classes, factors)`` through :func:`render`. The class is the object's
*shape* only; every nuisance factor is returned as ground truth with each image. The ``train``
split correlates chosen factors with the class (a shortcut a classifier will learn), the
``test_shift`` split breaks the correlation, and ``generator`` draws every factor independently
(the diverse data a GAN learns natural variation from).

Coordinates: pixel centres map to ``[-1, 1]`` (x right, y down). Shapes are defined by
approximate signed distances in a local unit frame (positive inside) and anti-aliased over one
pixel.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from robust.errors import InputError
from robust.imageset import ImageSet
from robust.registry import Spec, parse_spec
from robust.seeding import derive_seed, make_generator
from robust.validation import check_number

CLASS_NAMES: tuple[str, ...] = (
    "disk", "ring", "triangle", "square", "cross", "star", "crescent", "bar", "corner", "half_disk",
)
NUM_CLASSES = len(CLASS_NAMES)
TEXTURES = ("plain", "stripes", "dots", "checker", "noise")
FILLS = ("solid", "gradient", "hatched")
MARKS = ("none", "top_left", "top_right", "bottom_left", "bottom_right")
TAU = 2 * math.pi


@dataclass(frozen=True)
class Factor:
    """A nuisance factor: continuous in ``[low, high]`` (``circular`` wraps) or categorical."""

    name: str
    kind: str  # "continuous" or "categorical"
    low: float = 0.0
    high: float = 1.0
    categories: tuple[str, ...] = ()
    circular: bool = False
    description: str = ""

    @property
    def is_categorical(self) -> bool:
        return self.kind == "categorical"


FACTORS: tuple[Factor, ...] = (
    Factor("light_angle", "continuous", 0.0, TAU, circular=True, description="direction the light comes from (radians)"),
    Factor("light_strength", "continuous", 0.0, 0.45, description="strength of the shading field"),
    Factor("obj_hue", "continuous", 0.0, 1.0, circular=True, description="hue of the object"),
    Factor("bg_hue", "continuous", 0.0, 1.0, circular=True, description="hue of the background"),
    Factor("texture", "categorical", categories=TEXTURES, description="background texture"),
    Factor("texture_phase", "continuous", 0.0, 1.0, circular=True, description="orientation/phase of the texture"),
    Factor("fill", "categorical", categories=FILLS, description="object fill (material)"),
    Factor("pos_x", "continuous", -0.15, 0.15, description="horizontal offset of the object"),
    Factor("pos_y", "continuous", -0.15, 0.15, description="vertical offset of the object"),
    Factor("scale", "continuous", 0.55, 0.85, description="object size"),
    Factor("rotation", "continuous", 0.0, TAU, circular=True, description="object rotation (radians)"),
    Factor("mark", "categorical", categories=MARKS, description="small corner mark: absent or which corner"),
    Factor("mark_hue", "continuous", 0.0, 1.0, circular=True, description="hue of the corner mark"),
)
FACTOR_NAMES = tuple(f.name for f in FACTORS)
_BY_NAME = {f.name: f for f in FACTORS}

#: Factors correlated with the class in ``train``/``test_iid`` unless chosen otherwise.
DEFAULT_CORRELATED: tuple[str, ...] = ("obj_hue", "texture")
DEFAULT_STRENGTH = 0.9
SPLIT_SIZES = {"generator": 50_000, "train": 10_000, "test_iid": 2_000, "test_shift": 2_000}
SHIFT_PREFIX = "shift_"
SIZE_RANGE = (16, 128)
OBJECT_RADIUS = 0.8  # object radius (in [-1, 1] image units) at scale 1


def factor(name: str) -> Factor:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise InputError("factor", "one of " + ", ".join(FACTOR_NAMES), name) from None


def split_names() -> list[str]:
    return list(SPLIT_SIZES) + [SHIFT_PREFIX + f for f in FACTOR_NAMES]


# -- factor sampling -----------------------------------------------------------------------------

def sample_independent(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every factor drawn independently and uniformly over its range."""
    out: dict[str, torch.Tensor] = {}
    for f in FACTORS:
        if f.is_categorical:
            out[f.name] = torch.randint(0, len(f.categories), (n,), generator=generator)
        else:
            out[f.name] = f.low + (f.high - f.low) * torch.rand(n, generator=generator)
    return out


def class_linked_value(name: str, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The value a factor takes when it follows the class: category ``k mod K``, or the k-th of ten bins.

    Continuous values are drawn from the middle 60% of the class's bin so neighbouring classes
    stay apart.
    """
    f = factor(name)
    if f.is_categorical:
        return classes % len(f.categories)
    width = (f.high - f.low) / NUM_CLASSES
    jitter = 0.2 + 0.6 * torch.rand(classes.shape[0], generator=generator)
    return f.low + (classes.to(torch.float32) + jitter) * width


def sample_factors(
    classes: torch.Tensor,
    generator: torch.Generator,
    correlated: Sequence[str] = (),
    strength: float = DEFAULT_STRENGTH,
) -> dict[str, torch.Tensor]:
    """Factors for the given classes; each ``correlated`` factor follows the class with probability ``strength``."""
    if not 0.0 <= strength <= 1.0:
        raise InputError("strength", "a probability in [0, 1]", strength)
    n = classes.shape[0]
    out = sample_independent(n, generator)
    for name in correlated:
        linked = class_linked_value(name, classes, generator)
        follow = torch.rand(n, generator=generator) < strength
        out[name] = torch.where(follow, linked.to(out[name].dtype), out[name])
    return out


def check_factors(factors: Mapping[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    missing = [f for f in FACTOR_NAMES if f not in factors]
    if missing:
        raise InputError("factors", "all of " + ", ".join(FACTOR_NAMES), "missing " + ", ".join(missing))
    out = {}
    for f in FACTORS:
        value = torch.as_tensor(factors[f.name])
        if value.shape != (n,):
            raise InputError(f"factors[{f.name!r}]", f"shape [{n}]", tuple(value.shape))
        if f.is_categorical:
            if value.is_floating_point():
                value = value.round()
            value = value.long()
            if n and (int(value.min()) < 0 or int(value.max()) >= len(f.categories)):
                raise InputError(f"factors[{f.name!r}]", f"indices in [0, {len(f.categories) - 1}]", value.tolist()[:8])
        else:
            value = value.to(torch.float32)
        out[f.name] = value
    return out


# -- rendering ------------------------------------------------------------------------------------

def _hsv_to_rgb(h: torch.Tensor, s: float, v: float) -> torch.Tensor:
    """Hue ``[N]`` in ``[0, 1)`` with fixed saturation/value -> RGB ``[N, 3]``."""
    k = (torch.tensor([5.0, 3.0, 1.0], device=h.device) + h[:, None] * 6.0) % 6.0
    return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def _shape_sdf(cls: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (positive inside) of shape ``cls`` in its local unit frame."""
    if cls in (0, 1, 5, 6):
        r = torch.sqrt(u * u + v * v + 1e-12)
    if cls == 0:  # disk
        return 0.95 - r
    if cls == 1:  # ring
        return torch.minimum(r - 0.5, 0.95 - r)
    if cls == 2:  # triangle (equilateral, apex up, inradius 0.5, circumradius 1); y points down
        bottom = 0.5 - v
        right = 0.5 - (0.8660254 * u - 0.5 * v)
        left = 0.5 - (-0.8660254 * u - 0.5 * v)
        return torch.minimum(bottom, torch.minimum(right, left))
    if cls == 3:  # square
        return 0.68 - torch.maximum(u.abs(), v.abs())
    if cls == 4:  # cross
        a = torch.minimum(0.3 - u.abs(), 0.92 - v.abs())
        b = torch.minimum(0.3 - v.abs(), 0.92 - u.abs())
        return torch.maximum(a, b)
    if cls == 5:  # five-pointed star (radius linear in angle between tips and notches)
        theta = torch.atan2(v, u) + math.pi / 2
        t = torch.remainder(theta, TAU / 5) / (TAU / 5)
        radius = 0.42 + 0.56 * (2 * t - 1).abs()
        return (radius - r) * 0.7
    if cls == 6:  # crescent
        du = u - 0.42
        return torch.minimum(0.95 - r, torch.sqrt(du * du + v * v + 1e-12) - 0.72)
    if cls == 7:  # bar
        return torch.minimum(0.95 - u.abs(), 0.3 - v.abs())
    if cls == 8:  # corner (L)
        a = torch.minimum(0.72 - u.abs(), 0.25 - (v - 0.47).abs())
        b = torch.minimum(0.25 - (u + 0.47).abs(), 0.72 - v.abs())
        return torch.maximum(a, b)
    if cls == 9:  # half disk, flat side down
        dv = v - 0.3
        return torch.minimum(0.92 - torch.sqrt(u * u + dv * dv + 1e-12), -dv)
    raise InputError("class", f"an index in [0, {NUM_CLASSES - 1}]", cls)


def _texture(kind: int, x: torch.Tensor, y: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Background pattern in ``[-1, 1]`` for one texture kind; ``phase`` is ``[n, 1, 1]``."""
    if kind == 0:
        return torch.zeros_like(x + phase)
    if kind == 1:  # stripes at an orientation set by the phase
        ang = phase * TAU
        t = x * torch.cos(ang) + y * torch.sin(ang)
        return torch.tanh(3.0 * torch.sin(t * (TAU / 0.42)))
    if kind == 2:  # dots on a grid shifted by the phase
        gx = torch.remainder(x + phase * 0.4, 0.4) - 0.2
        gy = torch.remainder(y + phase * 0.4, 0.4) - 0.2
        d = torch.sqrt(gx * gx + gy * gy)
        return torch.clamp((0.1 - d) * 20.0, -1.0, 1.0)
    if kind == 3:  # checker
        cx = torch.sin((x + phase) * (math.pi / 0.3))
        cy = torch.sin((y + phase) * (math.pi / 0.3))
        return torch.tanh(4.0 * cx * cy)
    if kind == 4:  # band-limited noise: three plane waves with phase-set orientations
        acc = torch.zeros_like(x + phase)
        for k, freq in enumerate((5.0, 7.3, 11.1)):
            ang = (phase + 0.37 * k) * TAU
            acc = acc + torch.sin((x * torch.cos(ang) + y * torch.sin(ang)) * freq + phase * (17.0 + k))
        return acc / 2.2
    raise InputError("texture", f"an index in [0, {len(TEXTURES) - 1}]", kind)


def _grid(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2 - 1
    return coords[None, :].expand(size, size), coords[:, None].expand(size, size)


# Rendering works through the batch in chunks small enough to stay in cache (about 3x faster on a CPU).
_CHUNK_PIXELS = 512 * 32 * 32


def render(classes: torch.Tensor | Sequence[int], factors: Mapping[str, torch.Tensor], size: int = 32) -> torch.Tensor:
    """Render images ``[N, 3, size, size]`` in ``[0, 1]`` for the given classes and factors, exactly.

    Runs on the device of ``classes``; the result for one image does not depend on the others.
    """
    if not SIZE_RANGE[0] <= int(size) <= SIZE_RANGE[1]:
        raise InputError("size", f"an image size in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}]", size)
    classes = torch.as_tensor(classes).long().reshape(-1)
    n = classes.shape[0]
    if n and (int(classes.min()) < 0 or int(classes.max()) >= NUM_CLASSES):
        raise InputError("classes", f"indices in [0, {NUM_CLASSES - 1}]", classes.tolist()[:8])
    f = {k: v.to(classes.device) for k, v in check_factors(factors, n).items()}
    chunk = n if classes.device.type != "cpu" else max(1, _CHUNK_PIXELS // (size * size))
    if n <= chunk:
        return _render(classes, f, int(size))
    parts = [_render(classes[i : i + chunk], {k: v[i : i + chunk] for k, v in f.items()}, int(size)) for i in range(0, n, chunk)]
    return torch.cat(parts)


def _render(classes: torch.Tensor, f: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    n = classes.shape[0]
    device = classes.device
    gx, gy = _grid(size, device)
    x, y = gx[None], gy[None]  # [1, H, W]
    half_px = size / 2.0

    # Background: hue with a texture modulating its value.
    texture = torch.zeros(n, size, size, device=device)
    phase = f["texture_phase"][:, None, None]
    for kind in range(len(TEXTURES)):
        idx = (f["texture"] == kind).nonzero().squeeze(1)
        if idx.numel():
            texture[idx] = _texture(kind, x, y, phase[idx])
    bg_rgb = _hsv_to_rgb(f["bg_hue"], 0.55, 0.42)  # [N, 3]
    image = bg_rgb[:, :, None, None] * (1.0 + 0.35 * texture[:, None])

    alpha, u, v = _object_alpha(classes, f, x, y, half_px)

    shade = torch.ones(n, size, size, device=device)
    fill = f["fill"]
    grad_idx = (fill == 1).nonzero().squeeze(1)
    if grad_idx.numel():
        shade[grad_idx] = 0.7 + 0.3 * torch.clamp((u[grad_idx] + 1.0) / 2.0, 0.0, 1.0)
    hatch_idx = (fill == 2).nonzero().squeeze(1)
    if hatch_idx.numel():
        hatch = torch.sin((u[hatch_idx] + v[hatch_idx]) * 7.0)
        shade[hatch_idx] = 0.82 + 0.18 * torch.tanh(4.0 * hatch)
    obj_rgb = _hsv_to_rgb(f["obj_hue"], 0.8, 0.95)
    obj = obj_rgb[:, :, None, None] * shade[:, None]
    image = image + alpha[:, None] * (obj - image)

    # Corner mark: a small square drawn on top (absent for mark == 0).
    mark = f["mark"]
    has_mark = (mark > 0).nonzero().squeeze(1)
    if has_mark.numel():
        m = mark[has_mark]
        sx = torch.where((m == 1) | (m == 3), -1.0, 1.0)[:, None, None]
        sy = torch.where((m == 1) | (m == 2), -1.0, 1.0)[:, None, None]
        # Distance inside the corner square [0.74, 0.96] along both axes (in the mirrored frame).
        mx, my = x * sx, y * sy
        inside = torch.minimum(torch.minimum(mx - 0.74, 0.96 - mx), torch.minimum(my - 0.74, 0.96 - my))
        m_alpha = torch.clamp(inside * half_px + 0.5, 0.0, 1.0)
        m_rgb = _hsv_to_rgb(f["mark_hue"][has_mark], 0.9, 1.0)
        sub = image[has_mark]
        image[has_mark] = sub + m_alpha[:, None] * (m_rgb[:, :, None, None] - sub)

    # Illumination: a linear shading field across the whole scene.
    ang = f["light_angle"][:, None, None]
    light = 1.0 + f["light_strength"][:, None, None] * (torch.cos(ang) * x + torch.sin(ang) * y)
    return torch.clamp(image * light[:, None], 0.0, 1.0)


def _object_alpha(
    classes: torch.Tensor, f: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, half_px: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Object coverage ``[N, H, W]`` and the local frame ``(u, v)``: rotate(-rotation) of (p - pos) / radius."""
    n, size = classes.shape[0], x.shape[-1]
    radius = f["scale"] * OBJECT_RADIUS
    rot = f["rotation"]
    cos_r, sin_r = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    dx = (x - f["pos_x"][:, None, None]) / radius[:, None, None]
    dy = (y - f["pos_y"][:, None, None]) / radius[:, None, None]
    u = cos_r * dx + sin_r * dy
    v = cos_r * dy - sin_r * dx
    sdf = torch.empty(n, size, size, device=classes.device)
    for cls in range(NUM_CLASSES):
        idx = (classes == cls).nonzero().squeeze(1)
        if idx.numel():
            sdf[idx] = _shape_sdf(cls, u[idx], v[idx])
    alpha = torch.clamp(sdf * (radius * half_px)[:, None, None] + 0.5, 0.0, 1.0)
    return alpha, u, v


def object_mask(classes: torch.Tensor | Sequence[int], factors: Mapping[str, torch.Tensor], size: int = 32) -> torch.Tensor:
    """Coverage ``[N, size, size]`` in ``[0, 1]`` of the object alone (for ground-truth checks)."""
    classes = torch.as_tensor(classes).long().reshape(-1)
    f = {k: v.to(classes.device) for k, v in check_factors(factors, classes.shape[0]).items()}
    gx, gy = _grid(size, classes.device)
    return _object_alpha(classes, f, gx[None], gy[None], size / 2.0)[0]


# -- splits ---------------------------------------------------------------------------------------

class SyntheticBenchmark:
    """The benchmark's splits, deterministic by ``seed``.

    ``correlated`` names the factors that follow the class in ``train`` and ``test_iid`` with
    probability ``strength``. Splits: ``generator`` (all factors independent: diverse data for
    training a generator), ``train`` and ``test_iid`` (shortcut-correlated), ``test_shift``
    (all factors independent) and ``shift_<factor>`` (only that factor's correlation broken).
    """

    class_names = CLASS_NAMES
    factors = FACTORS

    def __init__(
        self,
        size: int = 32,
        correlated: Iterable[str] = DEFAULT_CORRELATED,
        strength: float = DEFAULT_STRENGTH,
        seed: int = 0,
    ):
        if not SIZE_RANGE[0] <= int(size) <= SIZE_RANGE[1]:
            raise InputError("size", f"an image size in [{SIZE_RANGE[0]}, {SIZE_RANGE[1]}]", size)
        self.size = int(size)
        self.correlated = tuple(correlated)
        for name in self.correlated:
            factor(name)
        if not 0.0 <= strength <= 1.0:
            raise InputError("strength", "a probability in [0, 1]", strength)
        self.strength = float(strength)
        self.seed = int(seed)

    def split_spec(self, split: str) -> tuple[tuple[str, ...], float]:
        """The (correlated factors, strength) a split is drawn with."""
        if split in ("train", "test_iid"):
            return self.correlated, self.strength
        if split in ("generator", "test_shift"):
            return (), 0.0
        if split.startswith(SHIFT_PREFIX):
            broken = split[len(SHIFT_PREFIX):]
            factor(broken)
            return tuple(c for c in self.correlated if c != broken), self.strength
        raise InputError("split", "one of " + ", ".join(split_names()), split)

    def sample(self, split: str, n: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Classes and factors of a split (without rendering); balanced classes in a seeded order."""
        correlated, strength = self.split_spec(split)
        n = SPLIT_SIZES.get(split, 2_000) if n is None else int(n)
        if n < 1:
            raise InputError("n", "a positive number of images", n)
        gen = make_generator(derive_seed(self.seed, "synthetic", split, self.size))
        classes = torch.arange(n) % NUM_CLASSES
        classes = classes[torch.randperm(n, generator=gen)]
        return classes, sample_factors(classes, gen, correlated, strength)

    def split(self, split: str, n: int | None = None) -> ImageSet:
        """A rendered split as an :class:`ImageSet` (factors attached)."""
        classes, factors = self.sample(split, n)
        images = render(classes, factors, self.size)
        return ImageSet(images, classes, list(CLASS_NAMES), factors=factors, name=f"synthetic:{split}")

    def render(self, classes: torch.Tensor | Sequence[int], factors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return render(classes, factors, self.size)

    def describe(self) -> dict[str, object]:
        return {"size": self.size, "correlated": list(self.correlated), "strength": self.strength, "seed": self.seed}


# -- the data spec ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticSource:
    """What a ``synthetic`` data spec names: the benchmark, its split and the image count (None: not given)."""

    benchmark: SyntheticBenchmark
    split: str
    n: int | None


def parse_synthetic(spec: str | Spec, *, size: int = 32, seed: int = 0) -> SyntheticSource:
    """``synthetic[:<split>][,size=..][,strength=..][,correlated=a+b][,seed=..][,n=..]`` -> :class:`SyntheticSource`.

    ``size`` and ``seed`` apply when the spec names none; the split defaults to ``test_shift``.
    """
    if not isinstance(spec, Spec):
        spec = parse_spec(str(spec), "data")
    if spec.name != "synthetic":
        raise InputError("data", "a synthetic[:<split>] spec", str(spec))
    opts = dict(spec.options)
    unknown = sorted(set(opts) - {"size", "strength", "correlated", "seed", "n"})
    if unknown:
        raise InputError("synthetic options", "size, strength, correlated, seed or n", unknown)
    correlated = opts.get("correlated")
    bench = SyntheticBenchmark(
        size=check_number(opts.get("size", size), "synthetic option size", integer=True),
        correlated=tuple(str(correlated).split("+")) if correlated else DEFAULT_CORRELATED,
        strength=check_number(opts.get("strength", DEFAULT_STRENGTH), "synthetic option strength"),
        seed=check_number(opts.get("seed", seed), "synthetic option seed", integer=True),
    )
    count = opts.get("n")
    count = check_number(count, "synthetic option n", low=1, integer=True) if count is not None else None
    return SyntheticSource(bench, spec.target or "test_shift", count)
