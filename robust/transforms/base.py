"""The transform interface: :class:`Param` (a range, an identity and the severity rule) and
:class:`Transform` (parameters drawn from per-image seeds, swept, broadcast, then applied by a pure
batched function of images ``[N, C, H, W]`` in ``[0, 1]`` and per-image parameters ``[N]``), and the registry.
"""
from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from robust.errors import InputError
from robust.noise import check_seeds, subseeds, uniform
from robust.registry import Registry, format_number, parse_number, parse_spec
from robust.validation import check_images, check_number

Params = dict[str, torch.Tensor]

MAX_SEVERITY = 5.0
SIDES = ("up", "down")


def check_severity(value: Any, name: str = "severity") -> Any:
    """A severity in ``[0, MAX_SEVERITY]`` (the one range of every transform), else :class:`InputError`.

    A number comes back as a float, a tensor (one severity per image) as it is.
    """
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        if bool(((value < 0) | (value > MAX_SEVERITY) | ~torch.isfinite(value)).any()):
            raise InputError(name, f"values in [0, {MAX_SEVERITY:g}]", value.tolist() if value.numel() <= 8 else "out-of-range values")
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(name, f"a value in [0, {MAX_SEVERITY:g}]", value) from None
    if not 0 <= number <= MAX_SEVERITY:
        raise InputError(name, f"a value in [0, {MAX_SEVERITY:g}]", value)
    return number


def _check_side(side: Any, name: str) -> str:
    if side not in SIDES:
        raise InputError(f"{name} side", "up or down", side)
    return side


@dataclass(frozen=True)
class Param:
    """One parameter of a transform.

    ``kind`` says how severity acts on it:
    ``"magnitude"``: severity ``s`` in ``[0, 5]`` moves it from ``identity`` toward ``low`` or ``high``
    by the fraction ``s / 5`` (side drawn at random when both sides exist);
    ``"free"``: drawn uniformly in ``[low, high]`` whatever the severity (e.g. a direction angle);
    ``"seed"``: an integer noise seed, never optimised.
    """

    name: str
    low: float
    high: float
    identity: float = 0.0
    kind: str = "magnitude"

    def __post_init__(self) -> None:
        if self.kind not in ("magnitude", "free", "seed"):
            raise ValueError(f"Param.kind must be magnitude, free or seed, got {self.kind!r}")
        if self.kind != "seed" and not (self.low <= self.identity <= self.high or self.kind == "free"):
            raise ValueError(f"Param {self.name}: identity {self.identity} outside [{self.low}, {self.high}]")

    @property
    def optimisable(self) -> bool:
        return self.kind != "seed"

    def reach(self, side: str) -> float:
        """The change :data:`MAX_SEVERITY` makes: toward ``high`` (``"up"``, >= 0) or ``low`` (``"down"``, <= 0)."""
        return self.high - self.identity if _check_side(side, self.name) == "up" else -(self.identity - self.low)

    @property
    def two_sided(self) -> bool:
        """Whether severity can move the value both ways (a side is drawn per image then)."""
        return self.high - self.identity > 0 and self.identity - self.low > 0

    @property
    def side(self) -> str:
        """The side a one-sided parameter moves toward: ``"down"`` when only ``low`` has room, else ``"up"``."""
        return "down" if self.high - self.identity <= 0 < self.identity - self.low else "up"

    def at_severity(self, severity: float | torch.Tensor, side: str | torch.Tensor = "up") -> float | torch.Tensor:
        """``identity + severity / MAX_SEVERITY * reach(side)``: severity 0 is the identity, :data:`MAX_SEVERITY`
        the range's edge. ``side`` is ``"up"``/``"down"``, or a bool tensor (true: up) choosing per image.

        For a tensor of severities the line is a ``torch.lerp``, exact at both ends in float32.
        """
        if not isinstance(severity, torch.Tensor):
            if isinstance(side, torch.Tensor):
                raise InputError(f"{self.name} side", "up or down for a single severity", "a tensor")
            return self.identity + severity / MAX_SEVERITY * self.reach(side)
        severity = severity if severity.is_floating_point() else severity.float()
        if isinstance(side, torch.Tensor):
            up = side.to(severity.device)
        else:
            up = torch.full(severity.shape, _check_side(side, self.name) == "up", dtype=torch.bool, device=severity.device)
        edge = torch.where(up, self.high, self.low).to(severity.dtype)
        return torch.lerp(torch.full_like(severity, self.identity), edge, severity / MAX_SEVERITY)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """``low + (high - low) * u``: the value at ``u`` in ``[0, 1]`` across the range."""
        return self.low + (self.high - self.low) * u

    def grid(self, steps: int) -> list[float]:
        """``steps`` evenly spaced values from ``low`` to ``high``, plus the identity for magnitudes (sorted)."""
        values = torch.linspace(self.low, self.high, steps, dtype=torch.float64).tolist()
        if self.kind == "magnitude":
            # A point within rounding of the identity is the identity (no second, near-zero grid point).
            tol = 1e-9 * max(1.0, self.high - self.low)
            values = sorted({self.identity if abs(v - self.identity) <= tol else v for v in values} | {self.identity})
        return values


TRANSFORMS: Registry[type["Transform"]] = Registry("transform")


class Transform(ABC):
    """Base class: subclasses declare ``name``, ``params`` and implement :meth:`apply`.

    ``name`` and ``params`` are class attributes of fixed transforms, or set per instance by those
    whose parameters depend on their configuration (a natural transform: one per latent direction).
    ``differentiable`` is true when :meth:`apply` is differentiable in the images and in every
    optimisable parameter (so gradient-based search and training can use it).
    """

    name: str = "transform"
    params: tuple[Param, ...] = ()
    differentiable: ClassVar[bool] = True

    # -- parameters -------------------------------------------------------------------------
    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise InputError(f"{self.name} parameter", "one of " + ", ".join(self.param_names), name)

    def identity(self, n: int, device: torch.device | str = "cpu") -> Params:
        """Parameters that leave images unchanged (seeds 0)."""
        out: Params = {}
        for p in self.params:
            if p.kind == "seed":
                out[p.name] = torch.zeros(n, dtype=torch.int64, device=device)
            else:
                out[p.name] = torch.full((n,), float(p.identity), device=device)
        return out

    def sample(self, seeds: torch.Tensor, *, device: torch.device | str | None = None, stream: int = 0) -> Params:
        """Parameters drawn uniformly over their ranges, image ``i``'s from ``seeds[i]`` alone (random augmentation).

        Counter-based (:mod:`robust.noise`): at ``stream``, seed parameters are ``noise.subseeds(seeds,
        stream)`` (one column each) and the others ``Param.from_unit`` of ``noise.uniform(seeds, ...,
        stream + 1)`` (one column each, in order), so an image's parameters never depend on its batch.
        """
        seeds = check_seeds(seeds)
        device = seeds.device if device is None else device
        seeded = [p for p in self.params if p.kind == "seed"]
        valued = [p for p in self.params if p.kind != "seed"]
        out: Params = {}
        if seeded:
            drawn = subseeds(seeds, stream, len(seeded)).to(device)
            out.update({p.name: drawn[:, j] for j, p in enumerate(seeded)})
        if valued:
            u = uniform(seeds, (len(valued),), stream + 1).to(device)
            out.update({p.name: p.from_unit(u[:, j]) for j, p in enumerate(valued)})
        return {p.name: out[p.name] for p in self.params}

    def at_severity(self, severity: float | torch.Tensor, seeds: torch.Tensor, *, device: torch.device | str | None = None,
                    stream: int = 0) -> Params:
        """Parameters at a severity in ``[0, MAX_SEVERITY]`` (scalar or ``[N]``): 0 is the identity, 5 the range's edge.

        Magnitudes follow :meth:`Param.at_severity`; a two-sided one's side is a coin per image
        (``noise.uniform(seeds, ..., stream + 2)``); free and seed parameters are :meth:`sample`'s.
        Integer severities 1..5 are the levels of severity sweeps; any real value in between is valid,
        which is what augmentation and hypothesis shrinking use.
        """
        seeds = check_seeds(seeds)
        n = seeds.shape[0]
        device = seeds.device if device is None else device
        sev = torch.as_tensor(severity, dtype=torch.float32)
        if sev.dim() == 0:
            sev = sev.expand(n)
        if sev.shape != (n,):
            raise InputError("severity", f"a number or a tensor of shape [{n}]", f"shape {tuple(sev.shape)}")
        sev = check_severity(sev).to(device)
        out = self.sample(seeds, device=device, stream=stream)
        up = uniform(seeds, (len(self.params),), stream + 2).to(device) < 0.5
        for j, p in enumerate(self.params):
            if p.kind == "magnitude":
                out[p.name] = p.at_severity(sev, up[:, j] if p.two_sided else p.side)
        return out

    def grid(self, steps: int = 5) -> list[dict[str, float]]:
        """A grid over the optimisable parameters (``steps`` values each, identity included)."""
        chosen = [p for p in self.params if p.optimisable]
        axes = [p.grid(steps) for p in chosen]
        return [dict(zip([p.name for p in chosen], combo)) for combo in itertools.product(*axes)]

    def expand(self, values: Mapping[str, Any], n: int, device: torch.device | str = "cpu", seed: int = 0) -> Params:
        """One parameter setting (e.g. a grid point) broadcast to a batch of ``n``: the one way to do it.

        ``values`` holds numbers, or ``[N]`` tensors kept per image; parameters left out take their
        identity. Seed parameters give image ``i`` the seed ``value + i`` (``seed + i`` when left out).
        """
        unknown = sorted(set(values) - set(self.param_names))
        if unknown:
            raise InputError(f"{self.name} params", "some of " + ", ".join(self.param_names), unknown)
        out: Params = {}
        for p in self.params:
            value = values.get(p.name)
            if isinstance(value, torch.Tensor) and value.dim() == 1:
                if value.shape[0] != n:
                    raise InputError(f"{self.name} params[{p.name!r}]", f"a number or a tensor of shape [{n}]", f"shape {tuple(value.shape)}")
                out[p.name] = value.detach().to(device, torch.int64 if p.kind == "seed" else torch.float32)
            elif p.kind == "seed":
                out[p.name] = torch.arange(n, dtype=torch.int64, device=device) + (seed if value is None else int(value))
            else:
                number = p.identity if value is None else check_number(value, f"{self.name} params[{p.name!r}]")
                out[p.name] = torch.full((n,), float(number), device=device)
        return out

    def clamp(self, params: Params) -> Params:
        """Project parameters back into their ranges (after a gradient step)."""
        out = dict(params)
        for p in self.params:
            if p.optimisable and p.name in out:
                out[p.name] = out[p.name].clamp(p.low, p.high)
        return out

    def check_params(self, params: Mapping[str, torch.Tensor], n: int) -> None:
        for p in self.params:
            if p.name not in params:
                raise InputError(f"{self.name} params", "keys " + ", ".join(self.param_names), sorted(params))
            value = params[p.name]
            if not isinstance(value, torch.Tensor) or value.shape != (n,):
                raise InputError(f"{self.name} params[{p.name!r}]", f"a tensor of shape [{n}]", getattr(value, "shape", type(value).__name__))

    def describe(self, params: Mapping[str, torch.Tensor], index: int = 0) -> str:
        """``"brightness(delta=0.312)"`` for one image of the batch (4 significant digits; round-off reads as 0)."""
        parts = []
        for p in self.params:
            v = params[p.name][index]
            parts.append(f"{p.name}={int(v)}" if p.kind == "seed" else f"{p.name}={format_number(float(v), 4, p.high - p.low)}")
        return f"{self.name}({', '.join(parts)})"

    # -- application ------------------------------------------------------------------------
    @abstractmethod
    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Transform ``images`` with per-image ``params``; pure, batched, output in ``[0, 1]``."""

    def __call__(
        self,
        images: torch.Tensor,
        params: Params | None = None,
        *,
        severity: float | torch.Tensor | None = None,
        seeds: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Apply given ``params``, or parameters at ``severity``, or random ones.

        Drawn parameters follow per-image ``seeds`` (``[N]``; an integer ``s`` gives image ``i`` the seed
        ``s + i``; default ``0 + i``).
        """
        check_images(images)
        n = images.shape[0]
        if params is None:
            if seeds is None or isinstance(seeds, int):
                seeds = torch.arange(n, dtype=torch.int64, device=images.device) + int(seeds or 0)
            seeds = check_seeds(seeds, n)
            if severity is None:
                params = self.sample(seeds, device=images.device)
            else:
                params = self.at_severity(severity, seeds, device=images.device)
        self.check_params(params, n)
        return self.apply(images, params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def register_transform(cls: type[Transform]) -> type[Transform]:
    """Class decorator: register a transform under its ``name``."""
    return TRANSFORMS.add(cls.name, cls)


def get_transform(spec: str | Transform, **kwargs: Any) -> Transform:
    """A transform instance from a name (``"brightness"``) or an instance (returned as is)."""
    if isinstance(spec, Transform):
        return spec
    parsed = parse_spec(spec, "transform")
    cls = TRANSFORMS.get(parsed.name if parsed.target is None else f"{parsed.name}:{parsed.target}")
    return cls(**{**parsed.options, **kwargs})


def severity_from_spec(text: str | None) -> float | None:
    """``"3"`` -> 3.0; ``None`` -> None; out-of-range values raise :class:`InputError`."""
    if text is None:
        return None
    return check_severity(parse_number(text, "severity"))
