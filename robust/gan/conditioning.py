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

from robust import noise
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

    def _check_complete(self, tokens: Mapping[str, Any]) -> None:
        missing = [g for g in self.names if g not in tokens]
        if missing:
            raise InputError("tokens", "a value for every group (" + ", ".join(self.names) + ")", "missing " + ", ".join(missing))

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

    @staticmethod
    def of(G: Any, group: str = "class") -> Conditioning:
        """The conditioning of generator ``G``, which must have the token group ``group`` (a prompt's class)."""
        cond = getattr(G, "conditioning", None)
        if cond is None or not cond.groups:
            raise InputError("generator", f"a conditional generator whose conditioning has a {group!r} group", "an unconditional generator")
        if group not in cond.names:
            raise InputError("generator conditioning", f"a {group!r} token group", ", ".join(cond.names))
        return cond

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

    def encode(self, tokens: Mapping[str, Any] | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """``{group: LongTensor [N]}`` (every group), or token rows ``[N, groups]`` in group order -> ``c [N, c_dim]`` float32."""
        if isinstance(tokens, torch.Tensor):
            if tokens.dim() != 2 or tokens.shape[1] != len(self.groups):
                raise InputError("tokens", f"token rows of shape [N, {len(self.groups)}] (one column per group)", tuple(tokens.shape))
            tokens = {name: tokens[:, i] for i, name in enumerate(self.names)}
        self._check_complete(tokens)
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

    def rows(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{group: LongTensor [N]}`` (every group) -> token rows ``[N, groups]`` in group order."""
        self._check_complete(tokens)
        return torch.stack([torch.as_tensor(tokens[name]).long() for name in self.names], dim=1)

    def token_names(self, row: Sequence[int]) -> dict[str, str]:
        """One token row (indices in group order) -> ``{group: token name}``."""
        return {name: tokens[int(v)] for (name, tokens), v in zip(self.groups, row)}

    def sample(self, seeds: torch.Tensor | int, generator: torch.Generator | None = None, *, groups: Sequence[str] | None = None,
               stream: int = 0) -> dict[str, torch.Tensor]:
        """Tokens drawn uniformly and independently per group (all groups, or ``groups`` in that order): ``{group: LongTensor [N]}``.

        ``seeds``: int64 seeds ``[N]``, one draw per seed from :mod:`robust.noise` on ``stream``
        (counter-based: a sample's tokens depend only on its seed, never on the batch it is in).
        This is how tokens are drawn. The bulk path: an int ``n`` and a ``torch.Generator`` draw
        ``n`` samples from that generator, group after group; it stays for the bulk draws whose
        existing numbers depend on it (W statistics and samples of :mod:`robust.gan.latent`, sample
        grids, ``robust gan sample``, the class subspace of directions).
        """
        chosen = self.groups if groups is None else [(name, self.tokens(name)) for name in groups]
        if not isinstance(seeds, torch.Tensor):
            return {name: torch.randint(0, len(names), (int(seeds),), generator=generator) for name, names in chosen}
        if seeds.dim() != 1 or seeds.is_floating_point() or generator is not None:
            raise InputError("seeds", "a 1-D integer tensor of per-sample seeds (and no generator)",
                             f"{seeds.dtype} of shape {tuple(seeds.shape)}")
        u = noise.uniform(seeds, (len(chosen),), stream=stream)
        return {name: (u[:, k] * len(names)).floor().long().clamp_(max=len(names) - 1) for k, (name, names) in enumerate(chosen)}

    def parse(self, prompt: str | Mapping[str, Any]) -> dict[str, int]:
        """A prompt, ``"class=disk,texture=stripes"`` or ``{"class": "disk", "texture": 1}`` (names or indices) -> ``{group: index}``."""
        if not isinstance(prompt, str):
            return {str(g): self.index(str(g), t if isinstance(t, str) else int(t)) for g, t in prompt.items()}
        out: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in prompt.split(","))):
            if "=" not in part:
                raise InputError("prompt", "group=token pairs such as class=disk,texture=stripes", part)
            group, token = (s.strip() for s in part.split("=", 1))
            out[self._check_group(group)] = self.index(group, token)
        return out

    def describe(self, c: torch.Tensor) -> list[str]:
        """Readable prompts, one per row of ``c`` (``"class=disk texture=stripes ..."``)."""
        decoded = self.decode(c)
        return [" ".join(f"{name}={names[int(decoded[name][i])]}" for name, names in self.groups) for i in range(c.shape[0])]
