"""Conditioning of a generator: the "prompt" as groups of discrete tokens, encoded as concatenated one-hots.

A class-conditional model has one group (``class``); the demo generator has four (the synthetic
benchmark's shape class and its categorical factors texture, fill and mark), so a search can ask for
"class 3 with a striped background". The encoding ``c`` is what the mapping network and the
discriminator's projection read.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from robust.errors import InputError


class Conditioning:
    """Discrete token groups ``[(name, [token names...]), ...]`` <-> ``c [N, c_dim]`` (concatenated one-hots)."""

    def __init__(self, groups: Sequence[tuple[str, Sequence[str]]]):
        parsed: list[tuple[str, list[str]]] = []
        seen: set[str] = set()
        for item in groups:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise InputError("groups", "(name, [token names]) pairs", item)
            name, tokens = str(item[0]), [str(t) for t in item[1]]
            if name in seen:
                raise InputError("groups", "distinct group names", name)
            if len(tokens) < 1:
                raise InputError(f"groups[{name!r}]", "at least one token", tokens)
            seen.add(name)
            parsed.append((name, tokens))
        self.groups: list[tuple[str, list[str]]] = parsed
        self._offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for name, tokens in parsed:
            self._offsets[name] = (start, start + len(tokens))
            start += len(tokens)
        self.c_dim = start

    # -- description -----------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.groups]

    def tokens(self, group: str) -> list[str]:
        return list(self.groups[self.names.index(self._check_group(group))][1])

    def span(self, group: str) -> tuple[int, int]:
        """Columns ``[start, stop)`` of a group inside ``c``."""
        return self._offsets[self._check_group(group)]

    def _check_group(self, group: str) -> str:
        if group not in self._offsets:
            raise InputError("conditioning group", "one of " + ", ".join(self.names), group)
        return group

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [[name, list(tokens)] for name, tokens in self.groups]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conditioning:
        try:
            return cls([(g[0], g[1]) for g in data["groups"]])
        except (KeyError, TypeError, IndexError):
            raise InputError("conditioning", "a dict with groups [[name, [tokens]], ...]", data) from None

    @classmethod
    def classes(cls, names: Sequence[str]) -> Conditioning:
        """One group named ``class`` (an ordinary class-conditional model)."""
        return cls([("class", list(names))])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Conditioning) and self.groups == other.groups

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}[{len(tokens)}]" for name, tokens in self.groups)
        return f"Conditioning({parts})"

    # -- encoding ---------------------------------------------------------------------------------

    def index(self, group: str, token: str | int) -> int:
        """The index of a token given by name or index."""
        names = self.tokens(group)
        if isinstance(token, str) and not token.isdigit():
            if token not in names:
                raise InputError(f"token of {group!r}", "one of " + ", ".join(names), token)
            return names.index(token)
        value = int(token)
        if not 0 <= value < len(names):
            raise InputError(f"token of {group!r}", f"an index in [0, {len(names) - 1}]", value)
        return value

    def encode(self, tokens: Mapping[str, Any], device: torch.device | str | None = None) -> torch.Tensor:
        """``{group: LongTensor [N]}`` (every group) -> ``c [N, c_dim]`` float32."""
        missing = [g for g in self.names if g not in tokens]
        if missing:
            raise InputError("tokens", "a value for every group (" + ", ".join(self.names) + ")", "missing " + ", ".join(missing))
        extra = [g for g in tokens if g not in self._offsets]
        if extra:
            raise InputError("tokens", "only the groups " + ", ".join(self.names), "unknown " + ", ".join(map(str, extra)))
        columns = []
        n = None
        for name, names in self.groups:
            value = torch.as_tensor(tokens[name])
            if value.dim() == 0:
                value = value[None]
            if value.dim() != 1 or value.is_floating_point():
                raise InputError(f"tokens[{name!r}]", "a 1-D integer tensor of token indices", f"{value.dtype} of shape {tuple(value.shape)}")
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise InputError(f"tokens[{name!r}]", f"{n} values (like the other groups)", value.shape[0])
            if value.numel() and (int(value.min()) < 0 or int(value.max()) >= len(names)):
                raise InputError(f"tokens[{name!r}]", f"indices in [0, {len(names) - 1}]", value.tolist()[:8])
            columns.append(torch.nn.functional.one_hot(value.long(), len(names)).to(torch.float32))
        c = torch.cat(columns, dim=1)
        return c.to(device) if device is not None else c

    def decode(self, c: torch.Tensor) -> dict[str, torch.Tensor]:
        """``c [N, c_dim]`` -> ``{group: LongTensor [N]}`` (the arg-max inside each group)."""
        if not isinstance(c, torch.Tensor) or c.dim() != 2 or c.shape[1] != self.c_dim:
            raise InputError("c", f"a tensor of shape [N, {self.c_dim}]", tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__)
        return {name: c[:, a:b].argmax(1) for name, (a, b) in self._offsets.items()}

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Tokens drawn uniformly and independently per group."""
        return {name: torch.randint(0, len(names), (n,), generator=generator) for name, names in self.groups}

    def parse(self, text: str) -> dict[str, int]:
        """``"class=disk,texture=stripes"`` (names or indices) -> ``{group: index}``."""
        out: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "=" not in part:
                raise InputError("prompt", "group=token pairs such as class=disk,texture=stripes", part)
            group, token = (s.strip() for s in part.split("=", 1))
            out[self._check_group(group)] = self.index(group, token)
        return out

    def describe(self, c: torch.Tensor) -> list[str]:
        """Readable prompts, one per row of ``c`` (``"class=disk texture=stripes ..."``)."""
        decoded = self.decode(c)
        return [" ".join(f"{name}={names[int(decoded[name][i])]}" for name, names in self.groups) for i in range(c.shape[0])]
