"""Registries: attacks, corruptions, transforms, direction finders, suites and formats are looked up by name.

A spec string names a registered thing and optionally its parameters, the same way in the CLI,
config files, the pytest plugin and reports: ``"corruptions:gaussian_noise@3"``,
``"pgd:linf@8/255"``, ``"pgd:linf@8/255,steps=20"``.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from robust.errors import InputError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of constructors or objects; ``register`` is used as a decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or getattr(obj, "name", None) or getattr(obj, "__name__")
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return decorator

    def add(self, name: str, obj: T, **meta: Any) -> T:
        return self.register(name, **meta)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def names(self, pattern: str | None = None) -> list[str]:
        names = sorted(self._items)
        return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


_SPEC_RE = re.compile(r"^(?P<name>[A-Za-z_][\w\-]*)(?::(?P<target>[\w\-\.]+))?(?:@(?P<at>[^,]+))?(?P<opts>(?:,[^,]+)*)$")


@dataclass(frozen=True)
class Spec:
    """A parsed spec string: ``name[:target][@at][,key=value...]``."""

    name: str
    target: str | None = None
    at: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        text = self.name
        if self.target:
            text += f":{self.target}"
        if self.at is not None:
            text += f"@{self.at}"
        for k, v in self.options.items():
            text += f",{k}={v}"
        return text


def parse_number(text: str, name: str = "value") -> float:
    """Parse ``"0.5"``, ``"8/255"`` or ``"1e-3"`` into a float."""
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise InputError(name, "a number such as 0.5 or 8/255", text) from None


#: Below this fraction of a value's scale a number is float round-off and reads as 0 (``delta=-1.49e-08``).
ZERO_FRACTION = 1e-6


def format_number(value: float, digits: int = 4, scale: float = 1.0) -> str:
    """A number for a label or a caption: ``digits`` significant digits, and ``0`` for anything smaller
    than :data:`ZERO_FRACTION` of ``scale`` (the size of the range it comes from), so round-off
    never reads as a value. The inverse of :func:`parse_number` for the numbers robust writes."""
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        return str(number)
    if abs(number) < ZERO_FRACTION * abs(scale):
        number = 0.0
    return f"{number + 0.0:.{digits}g}"


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return parse_number(text)
    except InputError:
        return text


def parse_options(text: str, name: str = "spec") -> dict[str, Any]:
    """``",steps=10,loss=dlr"`` -> ``{"steps": 10, "loss": "dlr"}`` (numbers and true/false converted)."""
    options: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise InputError(name, "options written key=value", part)
        key, value = part.split("=", 1)
        options[key.strip()] = _parse_value(value.strip())
    return options


def parse_spec(text: str, name: str = "spec") -> Spec:
    """Parse a spec string; raises :class:`InputError` naming ``name`` when it is malformed."""
    match = _SPEC_RE.match(text.strip())
    if not match:
        raise InputError(name, "name[:target][@value][,key=value...] such as pgd:linf@8/255", text)
    return Spec(match.group("name"), match.group("target"), match.group("at"), parse_options(match.group("opts"), name))
