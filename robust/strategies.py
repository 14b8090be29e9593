"""Hypothesis strategies for robustness tests: transform parameters, dataset images and batches.

The strategies draw *parameters* of transforms, never pixels. Every magnitude is drawn as an
integer step ``k`` in ``[0, resolution]`` of a severity ``s = k / resolution * max_severity``
(plus a sign for two-sided parameters) and mapped to parameter values the way
:meth:`robust.transforms.Transform.at_severity` does: ``identity + s / 5 * reach``. Hypothesis
shrinks integers toward 0 by exact search, so a failing example shrinks to the *mildest* failing
transformation, within one step of the true threshold (``max_severity / resolution``).

Drawn values print as a call that rebuilds them, e.g.
``transform_case('brightness', delta=0.3005)`` and ``Batch(source='digits:test', indices=[3])``,
so a failure is reproducible from its printed parameters (and, outside the derandomized
``robust-ci`` profile, from hypothesis's example database).

Any object shaped like a :class:`robust.transforms.Transform` (a ``name``, a tuple of ``params``
with ``name/low/high/identity/kind``, and ``apply(images, params)``) works with
:func:`transform_params`; that is the extension point for latent-direction transforms:
:func:`latent_directions` draws a generator's latent direction and a magnitude in its realistic
range (shrinking toward the first direction and magnitude 0, the unchanged image), printed as
``latent_case(<sefa directions>, direction=2, magnitude=-0.75)``.

Usage::

    from hypothesis import given, strategies as st
    import robust.strategies as rs
    from robust.testing import assert_invariant

    @given(case=rs.transform_params("brightness", max_severity=2), data=st.data())
    def test_brightness(robust_model, robust_data, case, data):
        batch = data.draw(rs.batches(robust_data, max_size=8))
        assert_invariant(robust_model, batch, case)
"""
from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from hypothesis import strategies as st

from robust.data import ImageSet, load_dataset
from robust.errors import InputError
from robust.io import fingerprint_tensors
from robust.plugins import load_all, register_profiles
from robust.transforms import MAX_SEVERITY, TRANSFORMS, Param, Params, get_transform
from robust.validation import check_images, check_number

if TYPE_CHECKING:
    from augment.natra import NaturalTransform
    from robust.gan.codes_cache import CodeSet

DEFAULT_RESOLUTION = 1000
SIDES = ("both", "up", "down")
# Values are rounded so the printed example reproduces the tested one exactly.
_DIGITS = 6
_SEED_MAX = 2**31 - 1

register_profiles()


class ParamLike(Protocol):
    name: str
    low: float
    high: float
    identity: float
    kind: str


class TransformLike(Protocol):
    """What the strategies need of a transform (:class:`robust.transforms.Transform` has it)."""

    name: str
    params: Sequence[ParamLike]

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor: ...


def _resolve(transform: str | TransformLike) -> TransformLike:
    if isinstance(transform, str):
        load_all()
        return get_transform(transform)
    missing = [a for a in ("name", "params", "apply") if not hasattr(transform, a)]
    if missing:
        raise InputError("transform", "a registered name or an object with name, params and apply()", f"{type(transform).__name__} without {', '.join(missing)}")
    return transform


def registered_name(transform: TransformLike) -> str | None:
    """The name ``transform``'s class is registered under in TRANSFORMS (``"corruptions:fog"``), if any."""
    name = getattr(transform, "name", None)
    if isinstance(name, str) and name in TRANSFORMS and type(transform) is TRANSFORMS.get(name):
        return name
    return next((key for key in TRANSFORMS.names() if type(transform) is TRANSFORMS.get(key)), None)


def expand_values(transform: TransformLike, values: Mapping[str, float], n: int, device: torch.device | str = "cpu") -> Params:
    """One parameter setting broadcast to ``n`` images; image ``i`` gets noise seed ``seed + i``."""
    expand = getattr(transform, "expand", None)
    if callable(expand):
        seed = next((int(values[p.name]) for p in transform.params if p.kind == "seed" and p.name in values), 0)
        return expand(values, n, device, seed=seed)
    out: Params = {}
    for p in transform.params:
        if p.kind == "seed":
            out[p.name] = torch.arange(n, dtype=torch.int64, device=device) + int(values.get(p.name, 0))
        else:
            out[p.name] = torch.full((n,), float(values.get(p.name, p.identity)), device=device)
    return out


@dataclass(frozen=True, eq=False)
class TransformCase:
    """One drawn transformation: a transform and one value per parameter (seeds as integers).

    ``severity`` is the drawn severity in ``[0, 5]`` (``None`` when the case was written by hand).
    ``repr`` is a :func:`transform_case` call that rebuilds the case.
    """

    transform: TransformLike
    values: dict[str, float]
    severity: float | None = None

    @property
    def name(self) -> str:
        """The registered name (``"corruptions:fog"``), else the transform's own ``name``."""
        return registered_name(self.transform) or str(self.transform.name)

    def params(self, n: int, device: torch.device | str = "cpu") -> Params:
        return expand_values(self.transform, self.values, n, device)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Transform ``images`` ``[N, C, H, W]`` (every image with these values)."""
        return self.transform.apply(images, self.params(images.shape[0], images.device))

    def describe(self) -> str:
        """``"brightness(delta=0.3005)"``."""
        parts = []
        for p in self.transform.params:
            v = self.values.get(p.name, p.identity)
            parts.append(f"{p.name}={int(v)}" if p.kind == "seed" else f"{p.name}={float(v):.6g}")
        return f"{self.name}({', '.join(parts)})"

    @property
    def is_identity(self) -> bool:
        return all(
            float(self.values.get(p.name, p.identity)) == float(p.identity)
            for p in self.transform.params
            if p.kind == "magnitude"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints dataclasses field by field; the rebuilding call is what users need.
        printer.text(repr(self))

    def __repr__(self) -> str:
        key = registered_name(self.transform)
        target = repr(key) if key is not None else repr(self.transform)
        args = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"transform_case({target}{', ' + args if args else ''})"


def transform_case(transform: str | TransformLike, **values: float) -> TransformCase:
    """Rebuild a printed case: ``transform_case('brightness', delta=0.3005)``.

    Parameters left out take their identity value (seeds 0); unknown names raise :class:`InputError`.
    """
    tf = _resolve(transform)
    known = {p.name: p for p in tf.params}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"{tf.name} parameters", "some of " + ", ".join(known), unknown)
    full: dict[str, float] = {}
    for name, p in known.items():
        v = values.get(name, 0 if p.kind == "seed" else p.identity)
        full[name] = int(v) if p.kind == "seed" else float(v)
    return TransformCase(tf, full)


def _check_options(max_severity: float, resolution: int, sides: str) -> None:
    if not 0 < float(max_severity) <= MAX_SEVERITY:
        raise InputError("max_severity", f"a value in (0, {MAX_SEVERITY:g}]", max_severity)
    if int(resolution) != resolution or resolution < 1:
        raise InputError("resolution", "a positive whole number of severity steps", resolution)
    if sides not in SIDES:
        raise InputError("sides", "one of " + ", ".join(SIDES), sides)


def severities(max_severity: float = MAX_SEVERITY, resolution: int = DEFAULT_RESOLUTION) -> st.SearchStrategy[float]:
    """Severities in ``[0, max_severity]`` on a grid of ``resolution`` steps; shrink toward 0."""
    _check_options(max_severity, resolution, "both")
    step = float(max_severity) / int(resolution)
    return st.integers(0, int(resolution)).map(lambda k: round(k * step, _DIGITS))


def seeds() -> st.SearchStrategy[int]:
    """Noise seeds (shrink toward 0)."""
    return st.integers(0, _SEED_MAX)


def transform_params(
    transform: str | TransformLike,
    *,
    max_severity: float = MAX_SEVERITY,
    sides: str = "both",
    fixed: Mapping[str, float] | None = None,
    resolution: int = DEFAULT_RESOLUTION,
) -> st.SearchStrategy[TransformCase]:
    """Cases of one transform whose magnitude shrinks toward the identity.

    ``transform`` is a registered name (``"brightness"``, ``"corruptions:fog"``) or any
    Transform-like object. One severity in ``[0, max_severity]`` drives every ``magnitude``
    parameter (as :meth:`Transform.at_severity` does); each two-sided parameter gets its own sign
    unless ``sides`` is ``"up"`` (toward ``high``) or ``"down"`` (toward ``low``). ``free``
    parameters are drawn on a grid over their range (shrinking toward ``low``); seeds shrink to 0.
    ``fixed`` pins parameters to given values.
    """
    tf = _resolve(transform)
    _check_options(max_severity, resolution, sides)
    fixed = dict(fixed or {})
    names = [p.name for p in tf.params]
    unknown = sorted(set(fixed) - set(names))
    if unknown:
        raise InputError(f"{tf.name} fixed parameters", "some of " + ", ".join(names), unknown)
    steps = int(resolution)
    scaled = any(p.kind == "magnitude" and p.name not in fixed for p in tf.params)

    @st.composite
    def draw_case(draw: Any) -> TransformCase:
        severity = draw(severities(max_severity, steps)) if scaled else None
        values: dict[str, float] = {}
        for p in tf.params:
            if p.name in fixed:
                values[p.name] = int(fixed[p.name]) if p.kind == "seed" else float(fixed[p.name])
            elif p.kind == "seed":
                values[p.name] = draw(seeds())
            elif p.kind == "free":
                k = draw(st.integers(0, steps))
                values[p.name] = round(p.low + (p.high - p.low) * k / steps, _DIGITS)
            else:
                up, down = p.high - p.identity, p.identity - p.low
                if sides == "up" or (sides == "both" and down <= 0):
                    reach = up
                elif sides == "down" or up <= 0:
                    reach = -down
                else:
                    reach = -down if draw(st.booleans()) else up
                # + 0.0 turns -0.0 (identity reached from the low side) into 0.0 for a clean printout.
                values[p.name] = round(p.identity + severity / MAX_SEVERITY * reach, _DIGITS) + 0.0
        return TransformCase(tf, values, severity)

    return draw_case()


def transforms(
    names: str | Sequence[str] = "*",
    *,
    max_severity: float = MAX_SEVERITY,
    sides: str = "both",
    resolution: int = DEFAULT_RESOLUTION,
) -> st.SearchStrategy[TransformCase]:
    """Cases of registered transforms: ``names`` is a list or a pattern (``"corruptions:*"``).

    The transform shrinks toward the first name (in the order given, patterns expanded sorted), its
    parameters toward the identity.
    """
    load_all()
    patterns = [names] if isinstance(names, str) else list(names)
    chosen: list[str] = []
    for pattern in patterns:
        matched = TRANSFORMS.names(pattern) if any(c in pattern for c in "*?[") else [pattern]
        for name in matched:
            TRANSFORMS.get(name)
            if name not in chosen:
                chosen.append(name)
    if not chosen:
        raise InputError("transforms", "a pattern matching registered transforms (" + ", ".join(TRANSFORMS.names()) + ")", patterns)
    # One strategy (and one transform instance) per name, built once rather than on every draw.
    by_name = {name: transform_params(name, max_severity=max_severity, sides=sides, resolution=resolution) for name in chosen}
    return st.sampled_from(chosen).flatmap(by_name.__getitem__)


def corruptions(
    names: str | Sequence[str] | None = None,
    *,
    max_severity: float = MAX_SEVERITY,
    resolution: int = DEFAULT_RESOLUTION,
) -> st.SearchStrategy[TransformCase]:
    """Cases of corruptions (``augment``) and their severity; ``names`` without the ``corruptions:`` prefix."""
    load_all()
    if not TRANSFORMS.names("corruptions:*"):
        raise InputError("corruptions", "the augment package (which registers corruptions:<name>)", "none registered")
    if names is None:
        patterns: list[str] = ["corruptions:*"]
    else:
        patterns = [f"corruptions:{n}" for n in ([names] if isinstance(names, str) else names)]
    return transforms(patterns, max_severity=max_severity, sides="up", resolution=resolution)


# -- images ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Batch:
    """Images drawn from a dataset: ``images`` ``[N, C, H, W]``, ``labels`` ``[N]`` and their ``indices``."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: list[int]
    source: str = "data"
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __repr__(self) -> str:
        return f"Batch(source={self.source!r}, indices={self.indices!r})"


_DATA_CACHE: dict[str, ImageSet] = {}


def _as_imageset(data: Any) -> ImageSet:
    if isinstance(data, ImageSet):
        return data
    if isinstance(data, str):
        if data not in _DATA_CACHE:
            _DATA_CACHE[data] = load_dataset(data)
        return _DATA_CACHE[data]
    return load_dataset(data)


def _batch(data: ImageSet, indices: list[int]) -> Batch:
    index = torch.as_tensor(indices, dtype=torch.long)
    return Batch(data.images[index], data.labels[index], list(indices), data.name, list(data.class_names))


def batches(data: Any, *, min_size: int = 1, max_size: int = 8) -> st.SearchStrategy[Batch]:
    """Batches of distinct images of ``data`` (an ImageSet or anything ``load_dataset`` takes).

    Shrinks toward fewer images with smaller indices, so a failure is reported on the smallest
    batch that shows it.
    """
    images = _as_imageset(data)
    if int(min_size) != min_size or not 1 <= min_size <= max_size:
        raise InputError("min_size/max_size", "whole numbers with 1 <= min_size <= max_size", (min_size, max_size))
    if min_size > len(images):
        raise InputError("min_size", f"at most the dataset's {len(images)} images", min_size)
    upper = min(int(max_size), len(images))
    # Plain lists deduplicated afterwards: hypothesis shrinks them to the one failing index, while
    # unique=True lists shrink toward [0, 1, 2, ...] instead.
    indices = st.lists(st.integers(0, len(images) - 1), min_size=int(min_size), max_size=upper)
    return indices.filter(lambda idx: len(set(idx)) >= min_size).map(lambda idx: _batch(images, list(dict.fromkeys(idx))))


def samples(data: Any) -> st.SearchStrategy[Batch]:
    """Single images of ``data`` as one-image batches (shrink toward index 0)."""
    images = _as_imageset(data)
    return st.integers(0, len(images) - 1).map(lambda i: _batch(images, [i]))


# -- latent directions ----------------------------------------------------------------------------

def _image_key(image: torch.Tensor) -> str:
    return fingerprint_tensors(image.detach().float())


def _natural_transform(source: Any, generator: Any) -> NaturalTransform:
    try:
        from augment.natra import NaturalTransform
    except ModuleNotFoundError:
        raise InputError("source", "the augment package (robust's NaturalTransform) installed", type(source).__name__) from None
    from robust.gan.directions import Directions

    if isinstance(source, NaturalTransform):
        if generator is not None and generator is not source.G:
            raise InputError("generator", "None with a NaturalTransform (it brings its own generator)", type(generator).__name__)
        return source
    if isinstance(source, Directions):
        if generator is None:
            raise InputError("generator", "the generator the directions belong to (generator=...)", None)
        return NaturalTransform(generator, source)
    raise InputError("source", "a NaturalTransform, or Directions with generator=...", type(source).__name__)


class LatentSource:
    """A NaturalTransform's kept directions and the W+ codes of the images its cases edit.

    Images of ``data`` take their rows of ``codes`` (a :class:`robust.gan.codes_cache.CodeSet` of
    that dataset, e.g. from ``load_or_invert``); any other image is inverted on its own the first
    time it is seen (with the transform's encoder, ``invert_steps`` and ``expand_res``, seeded by
    ``seed``) and its code remembered by the image's content. One image at a time keeps each code
    independent of the batch it came in, so a printed case renders the same images again.
    """

    def __init__(self, natural: NaturalTransform, codes: CodeSet | None = None, data: Any = None, seed: int = 0):
        from robust.gan.latent import check_ws

        self.natural = natural
        self.seed = int(check_number(seed, "seed", low=0, integer=True))
        self._known: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._stats: Any = None
        if (codes is None) != (data is None):
            raise InputError("codes/data", "both (codes of data's images) or neither", "only codes" if codes is not None else "only data")
        if codes is not None:
            images = _as_imageset(data)
            if not all(hasattr(codes, a) for a in ("ws", "residual", "expand_res")):
                raise InputError("codes", "a robust.gan.codes_cache.CodeSet", type(codes).__name__)
            if len(codes.ws) != len(images):
                raise InputError("codes", f"codes of the {len(images)} images of {images.name}", f"{len(codes.ws)} codes")
            if codes.expand_res != natural.expand_res:
                raise InputError("codes", f"codes expanded at {natural.expand_res} (the NaturalTransform's expand_res)", codes.expand_res)
            ws = check_ws(natural.G, codes.ws, "codes ws").detach().cpu()
            residual = codes.residual.detach().cpu() if codes.residual is not None else None
            for i in range(len(images)):
                self._known.setdefault(_image_key(images.images[i]), (ws[i], residual[i] if residual is not None else None))
        bounds = natural.bounds("cpu")
        scale = 10**_DIGITS
        # Rounded inward, so drawn magnitudes (rounded to _DIGITS for printing) stay inside the range.
        self.lows = [math.ceil(float(v) * scale) / scale + 0.0 for v in bounds[0]]
        self.highs = [math.floor(float(v) * scale) / scale + 0.0 for v in bounds[1]]
        self._directions: dict[int, LatentDirection] = {}

    @property
    def names(self) -> list[str]:
        return list(self.natural.directions.names)

    @property
    def label(self) -> str:
        """``<sefa directions>``: how printed cases name their source."""
        return f"<{self.natural.directions.method or 'latent'} directions>"

    def index(self, direction: int | str) -> int:
        """A kept direction's position, from its position or its name."""
        names = self.names
        if isinstance(direction, str):
            if direction not in names:
                raise InputError("direction", "one of " + ", ".join(names), direction)
            return names.index(direction)
        expected = f"a direction name or an index in [0, {len(names) - 1}]"
        try:
            i = operator.index(direction)
        except TypeError:
            raise InputError("direction", expected, direction) from None
        if isinstance(direction, bool) or not 0 <= i < len(names):
            raise InputError("direction", expected, direction)
        return i

    def direction(self, index: int) -> LatentDirection:
        i = self.index(index)
        if i not in self._directions:
            self._directions[i] = LatentDirection(self, i)
        return self._directions[i]

    def lookup(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(ws [N, num_ws, w_dim], residual or None)`` of ``images`` on the generator's device."""
        keys = [_image_key(x) for x in images]
        for key, x in zip(keys, images):
            if key not in self._known:
                self._known[key] = self._invert(x)
        device = self.natural.G.device
        ws = torch.stack([self._known[k][0] for k in keys]).to(device)
        parts = [self._known[k][1] for k in keys]
        residual = torch.stack(parts).to(device) if all(p is not None for p in parts) else None
        return ws, residual

    def _invert(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        from robust.gan.inversion import invert_batch
        from robust.gan.latent import latent_stats
        from robust.seeding import derive_seed

        nt = self.natural
        if self._stats is None:
            # The statistics invert_batch would compute for this seed, computed once for every image.
            self._stats = latent_stats(nt.G, seed=derive_seed(self.seed, "stats") % (1 << 31))
        out = invert_batch(nt.G, image[None].to(nt.G.device, torch.float32), encoder=nt.encoder, steps=nt.invert_steps,
                           expand_res=nt.expand_res, seed=self.seed, stats=self._stats, noise_mode=nt.noise_mode)
        return out.ws[0].detach().cpu(), out.residual[0].detach().cpu() if out.residual is not None else None


class LatentDirection:
    """One kept direction of a :class:`LatentSource` as a Transform-like object.

    Its one parameter ``magnitude`` (W units) spans the direction's realistic range times the
    NaturalTransform's ``strength``. :meth:`apply` moves each image's code along the direction,
    re-renders it and adds back the pixel difference between the image and its unedited
    reconstruction (as ``NaturalTransform(pixel_residual=True)`` does), so magnitude 0 returns the
    image itself and only the edit changes it.
    """

    differentiable = False

    def __init__(self, source: LatentSource, index: int):
        self.source = source
        self.index = int(index)
        self.direction_name = source.names[self.index]
        self.name = f"latent:{self.direction_name}"
        self.params = (Param("magnitude", source.lows[self.index], source.highs[self.index], 0.0),)

    @property
    def low(self) -> float:
        return self.params[0].low

    @property
    def high(self) -> float:
        return self.params[0].high

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Edit ``images`` ``[N, C, H, W]`` by ``params["magnitude"]`` ``[N]``; returns images in ``[0, 1]``."""
        nt = self.source.natural
        G = nt.G
        images = check_images(images, "images", channels=G.img_channels, size=(G.img_resolution, G.img_resolution))
        n = images.shape[0]
        mags = params.get("magnitude") if isinstance(params, Mapping) else None
        if not isinstance(mags, torch.Tensor) or mags.shape != (n,):
            raise InputError(f"{self.name} params['magnitude']", f"a tensor of shape [{n}]", getattr(mags, "shape", type(mags).__name__))
        out = images.detach().clone()
        moving = (mags.detach().cpu() != 0).nonzero().squeeze(1)
        if moving.numel() == 0:
            return out
        sub = out[moving.to(out.device)]
        ws, residual = self.source.lookup(sub)
        values = mags.detach()[moving.to(mags.device)].to(G.device, torch.float32)
        with torch.no_grad():
            base = nt.render(ws, torch.zeros(len(ws), len(nt.directions), device=G.device), residual)
            edited = nt.render(ws, nt.directions.along(self.index, values), residual)
        out[moving.to(out.device)] = (sub + (edited - base).to(sub.device, sub.dtype)).clamp(0, 1)
        return out

    def describe(self, params: Mapping[str, torch.Tensor], index: int = 0) -> str:
        """``"latent:sefa_2(magnitude=-0.75)"`` for one image of the batch."""
        return f"{self.name}(magnitude={float(params['magnitude'][index]):.4g})"

    def __repr__(self) -> str:
        return f"LatentDirection({self.direction_name!r}, range=[{self.low:+.6g}, {self.high:+.6g}])"


class LatentCase(TransformCase):
    """A drawn latent edit: kept direction ``direction`` (its index) moved by ``magnitude`` (W units).

    It is a :class:`TransformCase`, so :func:`robust.testing.assert_invariant` and
    ``assert_accuracy`` take it as they are. Its ``repr`` is a :func:`latent_case` call: give that
    call the same NaturalTransform (or directions and generator) to rebuild the case.
    """

    transform: LatentDirection

    @property
    def direction(self) -> int:
        return self.transform.index

    @property
    def magnitude(self) -> float:
        return float(self.values["magnitude"])

    def __repr__(self) -> str:
        return f"latent_case({self.transform.source.label}, direction={self.direction}, magnitude={self.magnitude!r})"


def _latent_case(case: TransformCase) -> LatentCase:
    return LatentCase(case.transform, case.values, case.severity)


def latent_case(source: Any, direction: int | str, magnitude: float, *, generator: Any = None, codes: CodeSet | None = None,
                data: Any = None, seed: int = 0) -> LatentCase:
    """Rebuild a printed case: ``latent_case(natural, direction=2, magnitude=-0.75)``.

    ``source``, ``generator``, ``codes``, ``data`` and ``seed`` as for :func:`latent_directions`;
    ``direction`` is a kept direction's index or name; ``magnitude`` must lie in its range.
    """
    tf = LatentSource(_natural_transform(source, generator), codes, data, seed).direction(direction)
    value = check_number(magnitude, "magnitude", low=tf.low, high=tf.high)
    return LatentCase(tf, {"magnitude": float(value) + 0.0})


def latent_directions(
    source: Any,
    *,
    generator: Any = None,
    which: int | str | Sequence[int | str] | None = None,
    max_severity: float = MAX_SEVERITY,
    sides: str = "both",
    resolution: int = DEFAULT_RESOLUTION,
    codes: CodeSet | None = None,
    data: Any = None,
    seed: int = 0,
) -> st.SearchStrategy[LatentCase]:
    """Latent edits: a generator direction and a magnitude in its range, shrinking toward magnitude 0.

    ``source``: an :class:`augment.natra.NaturalTransform` (its kept directions, ``strength``,
    encoder, ``invert_steps`` and ``expand_res``), or :class:`robust.gan.directions.Directions`
    with ``generator=`` (a default NaturalTransform of them). ``which``: kept directions (indices
    or names) to draw from, in shrinking order; default every kept direction with a non-empty
    range. The magnitude is drawn as :func:`transform_params` draws a magnitude: a severity in
    ``[0, max_severity]`` on ``resolution`` steps (5 reaches the edge of the range) and a side
    (``both``, ``up`` toward the range's high end, ``down`` toward its low end). A failing example
    shrinks to the first failing direction, then to within one step of its mildest failing
    magnitude. ``codes``/``data``: cached codes of a dataset's images (else images are inverted
    on first sight, seeded by ``seed``).

    Usage::

        natural = NaturalTransform(G, load_directions("directions"), expand_res=16)

        @given(case=rs.latent_directions(natural, max_severity=2), data=st.data())
        def test_latent_edits(robust_model, robust_data, case, data):
            batch = data.draw(rs.batches(robust_data, max_size=8))
            assert_invariant(robust_model, batch, case, margin=0.1)
    """
    latent = LatentSource(_natural_transform(source, generator), codes, data, seed)
    _check_options(max_severity, resolution, sides)
    if which is None:
        chosen = [i for i in range(len(latent.names)) if latent.highs[i] > latent.lows[i]]
        if not chosen:
            raise InputError("source", "at least one kept direction with a non-empty range", "none")
    else:
        items = [which] if isinstance(which, (int, str)) else list(which)
        if not items:
            raise InputError("which", "at least one direction (an index or a name)", "none")
        chosen = list(dict.fromkeys(latent.index(d) for d in items))
        empty = [latent.names[i] for i in chosen if latent.highs[i] <= latent.lows[i]]
        if empty:
            raise InputError("which", "directions with a non-empty range", empty)
    by_index = {i: transform_params(latent.direction(i), max_severity=max_severity, sides=sides, resolution=resolution).map(_latent_case)
                for i in chosen}
    return st.sampled_from(chosen).flatmap(by_index.__getitem__)
