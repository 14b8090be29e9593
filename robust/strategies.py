"""Hypothesis strategies for robustness tests: parameters of any :class:`robust.transforms.Transform`
(latent directions included), dataset images and batches. Cases shrink toward the mildest failing
setting and print as calls that rebuild them (``transform_case('brightness', delta=0.3005)``).
"""
from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from hypothesis import strategies as st

from robust.data import ImageSet, load_dataset
from robust.errors import InputError
from robust.plugins import load_all, register_profiles
from robust.transforms import MAX_SEVERITY, TRANSFORMS, Param, Params, Transform, get_transform
from robust.validation import check_number

if TYPE_CHECKING:
    from augment.natra import NaturalTransform
    from augment.swap import AppearanceSwap

DEFAULT_RESOLUTION = 1000
SIDES = ("both", "up", "down")
# Values are rounded so the printed example reproduces the tested one exactly.
_DIGITS = 6
_SEED_MAX = 2**31 - 1

register_profiles()


def _resolve(transform: str | Transform) -> Transform:
    if isinstance(transform, str):
        load_all()
        return get_transform(transform)
    if not isinstance(transform, Transform):
        raise InputError("transform", "a registered name or a robust.transforms.Transform", type(transform).__name__)
    return transform


def registered_name(transform: Transform) -> str | None:
    """The name ``transform``'s class is registered under in TRANSFORMS (``"corruptions:fog"``), if any."""
    name = transform.name
    if name in TRANSFORMS and type(transform) is TRANSFORMS.get(name):
        return name
    return next((key for key in TRANSFORMS.names() if type(transform) is TRANSFORMS.get(key)), None)


@dataclass(frozen=True, eq=False)
class TransformCase:
    """One drawn transformation: a transform and one value per parameter (seeds as integers).

    ``severity`` is the drawn severity in ``[0, 5]`` (``None`` when the case was written by hand).
    ``repr`` is a :func:`transform_case` call that rebuilds the case.
    """

    transform: Transform
    values: dict[str, float]
    severity: float | None = None

    @property
    def name(self) -> str:
        """The registered name (``"corruptions:fog"``), else the transform's own ``name``."""
        return registered_name(self.transform) or str(self.transform.name)

    def params(self, n: int, device: torch.device | str = "cpu") -> Params:
        return self.transform.expand(self.values, n, device)

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


def transform_case(transform: str | Transform, **values: float) -> TransformCase:
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
    transform: str | Transform,
    *,
    max_severity: float = MAX_SEVERITY,
    sides: str = "both",
    fixed: Mapping[str, float] | None = None,
    resolution: int = DEFAULT_RESOLUTION,
) -> st.SearchStrategy[TransformCase]:
    """Cases of one transform whose magnitude shrinks toward the identity.

    ``transform`` is a registered name (``"brightness"``, ``"corruptions:fog"``) or any
    :class:`robust.transforms.Transform`. One severity drives every ``magnitude`` parameter: an
    integer step ``k`` in ``[0, resolution]`` gives ``s = k / resolution * max_severity``, mapped
    by :meth:`robust.transforms.Param.at_severity`; hypothesis shrinks ``k`` toward 0 by exact
    search, so a failure shrinks to within one step of the mildest failing severity. Each
    two-sided parameter gets its own sign unless ``sides`` is ``"up"`` (toward ``high``) or
    ``"down"`` (toward ``low``). ``free`` parameters are drawn on a grid over their range
    (shrinking toward ``low``); seeds shrink to 0. ``fixed`` pins parameters to given values.
    Values are rounded so the printed case reproduces the tested one exactly.

    Usage::

        @given(case=rs.transform_params("brightness", max_severity=2), data=st.data())
        def test_brightness(robust_model, robust_data, case, data):
            batch = data.draw(rs.batches(robust_data, max_size=8))
            assert_invariant(robust_model, batch, case)
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
                side = sides if sides != "both" else ("down" if draw(st.booleans()) else "up") if p.two_sided else p.side
                # + 0.0 turns -0.0 (identity reached from the low side) into 0.0 for a clean printout.
                values[p.name] = round(p.at_severity(severity, side), _DIGITS) + 0.0
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

def _natural_transform(source: Any, generator: Any) -> NaturalTransform | AppearanceSwap:
    try:
        from augment.natra import NaturalTransform
        from augment.swap import AppearanceSwap
    except ModuleNotFoundError:
        raise InputError("source", "the augment package (robust's NaturalTransform) installed", type(source).__name__) from None
    from robust.gan.directions import Directions
    from robust.gan.swapping import SwapAutoencoder

    if isinstance(source, (NaturalTransform, AppearanceSwap)):
        own = source.G if isinstance(source, NaturalTransform) else source.model
        if generator is not None and generator is not own:
            raise InputError("generator", f"None with a {type(source).__name__} (it brings its own model)", type(generator).__name__)
        return source
    if isinstance(source, Directions):
        if generator is None:
            raise InputError("generator", "the generator the directions belong to (generator=...)", None)
        if isinstance(generator, SwapAutoencoder):
            return AppearanceSwap(generator, None, directions=source)
        return NaturalTransform(generator, source)
    raise InputError("source", "a NaturalTransform, or Directions with generator=... (a generator or a swap model's appearance "
                     "directions), or an AppearanceSwap", type(source).__name__)


class LatentSource:
    """A natural transform's moves, bound to the codes of the images its cases edit.

    The moves are the kept directions of a NaturalTransform (W+ codes), or the swap (``"swap"``: the
    strength toward a donor, with the donor's seed) and the appearance directions of an
    AppearanceSwap. ``codes``/``data``/``seed``: where the codes come from (the transform's
    ``with_codes``: cached codes of ``data``'s images, else each image inverted on its own on first
    sight, seeded by ``seed``, or encoded), so a printed case renders the same images again.
    """

    def __init__(self, natural: NaturalTransform | AppearanceSwap, codes: Any = None, data: Any = None, seed: int = 0):
        from augment.swap import AppearanceSwap

        data = _as_imageset(data) if data is not None else None
        self.swaps = isinstance(natural, AppearanceSwap)
        self.natural = natural.with_codes(codes, data) if self.swaps else natural.with_codes(codes, data, seed)
        self._params = [p for p in natural.params if p.kind == "magnitude"]
        scale = 10**_DIGITS
        # Rounded inward, so drawn magnitudes (rounded to _DIGITS for printing) stay inside the range.
        self.lows = [math.ceil(p.low * scale) / scale + 0.0 for p in self._params]
        self.highs = [math.floor(p.high * scale) / scale + 0.0 for p in self._params]
        self._directions: dict[int, LatentDirection] = {}

    @property
    def names(self) -> list[str]:
        return ["swap" if p.name == "strength" and self.swaps else p.name for p in self._params]

    def param_name(self, index: int) -> str:
        """The transform parameter move ``index`` sets (``strength`` for the swap)."""
        return self._params[index].name

    @property
    def label(self) -> str:
        """``<sefa directions>`` or ``<swap:appearance_pca>``: how printed cases name their source."""
        if self.swaps:
            return f"<{self.natural.name}>"
        return f"<{self.natural.directions.method or 'latent'} directions>"

    def index(self, direction: int | str) -> int:
        """A move's position, from its position or its name."""
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

    def direction(self, index: int | str) -> LatentDirection:
        i = self.index(index)
        if i not in self._directions:
            self._directions[i] = LatentDirection(self, i)
        return self._directions[i]


class LatentDirection(Transform):
    """One move of a :class:`LatentSource` as a :class:`robust.transforms.Transform`.

    Its parameter ``magnitude`` spans the move's range (a direction's realistic range times the
    transform's strength, or the swap strength), rounded inward to the printed digits; the swap also
    has ``donor`` (a seed: image ``i`` of a batch takes the donor of seed ``donor + i``). :meth:`apply`
    is the transform's edit along this move alone: a NaturalTransform's magnitude 0 returns the
    image itself and only the edit changes it.
    """

    def __init__(self, source: LatentSource, index: int):
        self.source = source
        self.index = int(index)
        self.direction_name = source.names[self.index]
        self.name = f"latent:{self.direction_name}"
        magnitude = Param("magnitude", source.lows[self.index], source.highs[self.index], 0.0)
        self.params = (magnitude, Param("donor", 0, 0, kind="seed")) if self.swap else (magnitude,)

    @property
    def swap(self) -> bool:
        return self.direction_name == "swap" and self.source.swaps

    @property
    def low(self) -> float:
        return self.params[0].low

    @property
    def high(self) -> float:
        return self.params[0].high

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Edit ``images`` ``[N, C, H, W]`` by ``params["magnitude"]`` ``[N]``; returns images in ``[0, 1]``."""
        mags = params.get("magnitude") if isinstance(params, Mapping) else None
        if not isinstance(mags, torch.Tensor) or mags.shape != (images.shape[0],):
            raise InputError(f"{self.name} params['magnitude']", f"a tensor of shape [{images.shape[0]}]", getattr(mags, "shape", type(mags).__name__))
        natural = self.source.natural
        full = natural.identity(images.shape[0], mags.device)
        full[self.source.param_name(self.index)] = mags
        if self.swap:
            full["donor"] = params["donor"]
        return natural.apply(images, full)

    def describe(self, params: Mapping[str, torch.Tensor], index: int = 0) -> str:
        """``"latent:sefa_2(magnitude=-0.75)"`` (``"latent:swap(magnitude=0.5, donor=7)"``) for one image of the batch."""
        donor = f", donor={int(params['donor'][index])}" if self.swap else ""
        return f"{self.name}(magnitude={float(params['magnitude'][index]):.4g}{donor})"

    def __repr__(self) -> str:
        return f"LatentDirection({self.direction_name!r}, range=[{self.low:+.6g}, {self.high:+.6g}])"


class LatentCase(TransformCase):
    """A drawn latent edit: move ``direction`` (its index) by ``magnitude`` (and, for a swap, the ``donor`` seed).

    It is a :class:`TransformCase`, so :func:`robust.testing.assert_invariant` and
    ``assert_accuracy`` take it as they are. Its ``repr`` is a :func:`latent_case` call: give that
    call the same transform (or directions and generator) to rebuild the case.
    """

    transform: LatentDirection

    @property
    def direction(self) -> int:
        return self.transform.index

    @property
    def magnitude(self) -> float:
        return float(self.values["magnitude"])

    def __repr__(self) -> str:
        donor = f", donor={int(self.values['donor'])}" if "donor" in self.values else ""
        return f"latent_case({self.transform.source.label}, direction={self.direction}, magnitude={self.magnitude!r}{donor})"


def _latent_case(case: TransformCase) -> LatentCase:
    return LatentCase(case.transform, case.values, case.severity)


def latent_case(source: Any, direction: int | str, magnitude: float, *, generator: Any = None, codes: Any = None,
                data: Any = None, seed: int = 0, donor: int = 0) -> LatentCase:
    """Rebuild a printed case: ``latent_case(natural, direction=2, magnitude=-0.75)``.

    ``source``, ``generator``, ``codes``, ``data`` and ``seed`` as for :func:`latent_directions`;
    ``direction`` is a move's index or name; ``magnitude`` must lie in its range; ``donor`` is the
    swap's donor seed.
    """
    tf = LatentSource(_natural_transform(source, generator), codes, data, seed).direction(direction)
    value = check_number(magnitude, "magnitude", low=tf.low, high=tf.high)
    values: dict[str, float] = {"magnitude": float(value) + 0.0}
    if tf.swap:
        values["donor"] = int(check_number(donor, "donor", low=0, integer=True))
    return LatentCase(tf, values)


def latent_directions(
    source: Any,
    *,
    generator: Any = None,
    which: int | str | Sequence[int | str] | None = None,
    max_severity: float = MAX_SEVERITY,
    sides: str = "both",
    resolution: int = DEFAULT_RESOLUTION,
    codes: Any = None,
    data: Any = None,
    seed: int = 0,
) -> st.SearchStrategy[LatentCase]:
    """Latent edits: a move of a model of natural variation and a magnitude in its range, shrinking toward 0.

    ``source``: an :class:`augment.natra.NaturalTransform` (its kept directions, ``strength``,
    encoder, ``invert_steps`` and ``expand_res``); an :class:`augment.swap.AppearanceSwap` (moves:
    ``swap``, the strength toward a donor of its bank with a drawn donor seed, and its appearance
    directions); or :class:`robust.gan.directions.Directions` with ``generator=`` (a generator, or
    a structure/appearance model for appearance directions: a default transform of them).
    ``which``: moves (indices or names) to draw from, in shrinking order; default every move with
    a non-empty range. The magnitude is drawn as :func:`transform_params` draws a magnitude: a severity in
    ``[0, max_severity]`` on ``resolution`` steps (5 reaches the edge of the range) and a side
    (``both``, ``up`` toward the range's high end, ``down`` toward its low end). A failing example
    shrinks to the first failing direction, then to within one step of its mildest failing
    magnitude. ``codes``/``data``: cached codes of a dataset's images (else images are inverted
    on first sight, seeded by ``seed``, or encoded by a swap model; ``data`` alone gives a swap
    its images' labels, so their donors come from other classes).

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
