"""Unsupervised latent directions: finders, realistic magnitude ranges, class-independence scores, strips.

Finders are registered by name in :data:`DIRECTION_FINDERS` and return unit directions in W (a
range of W+ layers may be chosen); magnitudes are in W units. The finders, :func:`calibrate_ranges`,
:func:`score_directions` and :func:`select_directions` document their methods.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robust.errors import FileFormatError, InputError
from robust.gan.checkpoint import ASSETS
from robust.gan.encoder import generator_fingerprint
from robust.gan.latent import LatentPrior, check_ws, latent_stats, sample_ws, synthesize
from robust.gan.networks import Discriminator, Generator
from robust.gan.swapping import SwapAutoencoder
from robust.io import checkpoint_paths, load_checkpoint, save_checkpoint
from robust.models import Classifier
from robust.registry import Registry
from robust.seeding import derive_seed, make_generator
from robust.validation import check_number

DIRECTIONS_FORMAT = "robust-gan-directions"
DEMO_DIRECTIONS = ASSETS / "demo_directions"
#: Score names :func:`score_directions` fills in.
SCORE_NAMES = ("class_preservation", "class_alignment", "score")


# -- the result type ------------------------------------------------------------------------------

@dataclass
class Directions:
    """``K`` unit directions in W and how far each may be followed.

    ``vectors [K, w_dim]`` (unit rows); ``layers``: the W+ layers an edit moves (None: all);
    ``ranges [K, 2]``: realistic magnitudes ``(low <= 0 <= high)`` in W units; ``names``;
    ``method``: the finder; ``values [K]``: the finder's strength of each direction (eigenvalue,
    variance or singular value); ``scores``: per-direction scores (``class_preservation``,
    ``class_alignment``, ``score``); ``kept [K]``: the selection (None: not selected yet);
    ``meta``: provenance (generator fingerprint, seed, options).
    """

    vectors: torch.Tensor
    layers: list[int] | None
    ranges: torch.Tensor
    names: list[str]
    method: str = ""
    values: torch.Tensor | None = None
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    kept: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.vectors, torch.Tensor) or self.vectors.dim() != 2 or self.vectors.shape[0] < 1:
            raise InputError("vectors", "a tensor [K, w_dim] with K >= 1", getattr(self.vectors, "shape", type(self.vectors).__name__))
        k = self.vectors.shape[0]
        self.vectors = self.vectors.float() / self.vectors.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.ranges = torch.as_tensor(self.ranges, dtype=torch.float32)
        if self.ranges.shape != (k, 2) or bool((self.ranges[:, 0] > 0).any() | (self.ranges[:, 1] < 0).any()):
            raise InputError("ranges", f"a tensor [{k}, 2] of (low <= 0 <= high)", self.ranges.tolist() if k <= 4 else tuple(self.ranges.shape))
        if len(self.names) != k:
            raise InputError("names", f"{k} names", len(self.names))
        if self.layers is not None:
            self.layers = sorted({int(i) for i in self.layers})
            if not self.layers or self.layers[0] < 0:
                raise InputError("layers", "non-negative W+ layer indices (or None for all)", self.layers)
        for key, value in self.scores.items():
            if value.shape != (k,):
                raise InputError(f"scores[{key!r}]", f"a tensor [{k}]", tuple(value.shape))
        if self.kept is not None and self.kept.shape != (k,):
            raise InputError("kept", f"a bool tensor [{k}]", tuple(self.kept.shape))

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def w_dim(self) -> int:
        return int(self.vectors.shape[1])

    def to(self, device: torch.device | str) -> Directions:
        return Directions(self.vectors.to(device), self.layers, self.ranges.to(device), list(self.names), self.method,
                          self.values.to(device) if self.values is not None else None,
                          {k: v.to(device) for k, v in self.scores.items()},
                          self.kept.to(device) if self.kept is not None else None, dict(self.meta))

    def select(self, indices: Sequence[int] | torch.Tensor) -> Directions:
        """The directions at ``indices`` (in that order)."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx.numel() == 0:
            raise InputError("indices", "at least one direction index", "none")
        if int(idx.min()) < 0 or int(idx.max()) >= len(self):
            raise InputError("indices", f"direction indices in [0, {len(self) - 1}]", idx.tolist())
        cpu = idx.cpu().tolist()
        return Directions(self.vectors[idx.to(self.vectors.device)], self.layers, self.ranges[idx.to(self.ranges.device)],
                          [self.names[i] for i in cpu], self.method,
                          self.values[idx.to(self.values.device)] if self.values is not None else None,
                          {k: v[idx.to(v.device)] for k, v in self.scores.items()},
                          self.kept[idx.to(self.kept.device)] if self.kept is not None else None,
                          {**self.meta, "selected_from": [int(i) for i in cpu]})

    def kept_directions(self) -> Directions:
        """Only the kept directions (all of them when no selection was made)."""
        if self.kept is None:
            return self
        idx = self.kept.nonzero().squeeze(1)
        if idx.numel() == 0:
            raise InputError("directions", "at least one kept direction (lower the thresholds or include some)", "none kept")
        return self.select(idx)

    def layer_mask(self, num_ws: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``[num_ws]`` float mask of the layers an edit moves."""
        mask = torch.ones(num_ws, device=device)
        if self.layers is not None:
            if self.layers[-1] >= num_ws:
                raise InputError("directions layers", f"W+ layer indices below {num_ws}", self.layers)
            mask = torch.zeros(num_ws, device=device)
            mask[self.layers] = 1.0
        return mask

    def offsets(self, magnitudes: torch.Tensor, num_ws: int) -> torch.Tensor:
        """Code offsets ``[N, num_ws, w_dim]`` for magnitudes ``[N, K]`` (differentiable in them)."""
        if magnitudes.dim() != 2 or magnitudes.shape[1] != len(self):
            raise InputError("magnitudes", f"a tensor [N, {len(self)}]", tuple(magnitudes.shape))
        step = magnitudes.float() @ self.vectors.to(magnitudes.device)
        return step[:, None, :] * self.layer_mask(num_ws, magnitudes.device)[None, :, None]

    def apply(self, ws: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
        """``ws [N, num_ws, w_dim]`` moved by ``magnitudes [N, K]`` along every direction."""
        if ws.dim() != 3 or ws.shape[2] != self.w_dim or magnitudes.shape[0] != ws.shape[0]:
            raise InputError("ws", f"a tensor [N, num_ws, {self.w_dim}] matching magnitudes [N, K]", (tuple(ws.shape), tuple(magnitudes.shape)))
        return ws + self.offsets(magnitudes.to(ws.device), ws.shape[1]).to(ws.dtype)

    def along(self, index: int, values: torch.Tensor) -> torch.Tensor:
        """Magnitudes ``[N, K]`` that move only along direction ``index`` by ``values [N]``."""
        if not 0 <= int(index) < len(self):
            raise InputError("direction index", f"an index in [0, {len(self) - 1}]", index)
        out = torch.zeros(values.shape[0], len(self), device=values.device)
        out[:, int(index)] = values.float()
        return out

    def describe(self, index: int, magnitude: float | None = None) -> str:
        """``"sefa_3 [-2.1, 1.9]"`` or, with a magnitude, ``"sefa_3 at +1.25"``."""
        if magnitude is None:
            low, high = self.ranges[index].tolist()
            return f"{self.names[index]} [{low:+.3g}, {high:+.3g}]"
        return f"{self.names[index]} at {magnitude:+.3g}"

    def table(self) -> list[dict[str, Any]]:
        """One row per direction: index, name, range, value, scores, kept."""
        rows = []
        for i in range(len(self)):
            row: dict[str, Any] = {"index": i, "name": self.names[i], "low": float(self.ranges[i, 0]), "high": float(self.ranges[i, 1])}
            if self.values is not None:
                row["value"] = float(self.values[i])
            for key, value in self.scores.items():
                row[key] = float(value[i])
            if self.kept is not None:
                row["kept"] = bool(self.kept[i])
            rows.append(row)
        return rows

    def save(self, path: str | Path, generator: Generator | SwapAutoencoder | None = None) -> tuple[Path, Path]:
        """Write ``path.safetensors`` (vectors, ranges, values, scores, kept) and ``path.json``."""
        tensors = {"vectors": self.vectors, "ranges": self.ranges}
        if self.values is not None:
            tensors["values"] = self.values.float()
        for key, value in self.scores.items():
            tensors[f"scores.{key}"] = value.float()
        if self.kept is not None:
            tensors["kept"] = self.kept.to(torch.uint8)
        meta = dict(self.meta)
        if generator is not None:
            meta["generator_fingerprint"] = generator_fingerprint(generator)
        config = {"format": DIRECTIONS_FORMAT, "version": 1, "method": self.method, "layers": self.layers, "names": list(self.names),
                  "meta": meta}
        return save_checkpoint(path, tensors, config)


def load_directions(path: str | Path, generator: Generator | SwapAutoencoder | None = None) -> Directions:
    """Read a directions file; with ``generator`` (or a swap model), check that they were found for that model."""
    tensors, config = load_checkpoint(path, DIRECTIONS_FORMAT)
    try:
        directions = Directions(tensors["vectors"], config.get("layers"), tensors["ranges"], list(config["names"]), config.get("method", ""),
                                tensors.get("values"), {k[len("scores."):]: v for k, v in tensors.items() if k.startswith("scores.")},
                                tensors["kept"].bool() if "kept" in tensors else None, dict(config.get("meta", {})))
    except KeyError as exc:
        raise FileFormatError(path, "directions with vectors, ranges and names", f"missing {exc}") from None
    if generator is not None:
        fp = directions.meta.get("generator_fingerprint")
        if fp is not None and fp != generator_fingerprint(generator):
            raise InputError("directions", f"directions found for this generator (fingerprint {generator_fingerprint(generator)})",
                             f"directions of generator {fp}")
        size = code_dim(generator)
        if directions.w_dim != size:
            raise InputError("directions", f"vectors of size {size} (the model's code size)", directions.w_dim)
    return directions


def code_dim(model: Generator | SwapAutoencoder) -> int:
    """The size of the codes directions move: a generator's ``w_dim``, a swap model's ``appearance_dim``."""
    return int(model.config.appearance_dim) if isinstance(model, SwapAutoencoder) else int(model.w_dim)


def directions_for(G: Generator, spec: Any = "auto") -> Directions | None:
    """A :class:`Directions`, a file path, or ``"auto"`` (the shipped demo directions when ``G`` is the
    generator they were found for, else ``None``)."""
    if spec is None or isinstance(spec, Directions):
        return spec
    if str(spec) in ("auto", "demo"):
        weights, _ = checkpoint_paths(DEMO_DIRECTIONS)
        if not weights.is_file():
            if str(spec) == "demo":
                raise FileFormatError(weights, "the shipped demo directions", "no such file")
            return None
        try:
            return load_directions(DEMO_DIRECTIONS, G)
        except InputError:
            if str(spec) == "demo":
                raise
            return None
    return load_directions(spec, G)


# -- layers ---------------------------------------------------------------------------------------

def resolve_layers(G: Generator, layers: Any) -> list[int] | None:
    """``None``/``"all"`` -> None (every layer); ``"coarse"``/``"middle"``/``"fine"`` (thirds of W+);
    ``"a-b"`` (inclusive); ``"1,3,5"``; or a sequence of ints."""
    n = G.num_ws
    if layers is None or layers == "all":
        return None
    if isinstance(layers, str):
        text = layers.strip()
        thirds = {"coarse": (0, math.ceil(n / 3)), "middle": (math.ceil(n / 3), math.ceil(2 * n / 3)), "fine": (math.ceil(2 * n / 3), n)}
        if text in thirds:
            a, b = thirds[text]
            chosen = list(range(a, max(b, a + 1)))
        else:
            chosen = []
            try:
                for part in filter(None, (p.strip() for p in text.split(","))):
                    if "-" in part:
                        a, b = (int(v) for v in part.split("-", 1))
                        chosen.extend(range(a, b + 1))
                    else:
                        chosen.append(int(part))
            except ValueError:
                raise InputError("layers", "all, coarse, middle, fine, a-b or a comma list of W+ layer indices", layers) from None
    else:
        chosen = [int(i) for i in layers]
    chosen = sorted(set(chosen))
    if not chosen or chosen[0] < 0 or chosen[-1] >= n:
        raise InputError("layers", f"W+ layer indices in [0, {n - 1}]", layers)
    return None if chosen == list(range(n)) else chosen


def _affine_weights(G: Generator, layers: list[int] | None) -> list[torch.Tensor]:
    """Effective weights ``[out, w_dim]`` of the style affines that read the chosen W+ layers."""
    out = []
    for index, affine in G.style_affines():
        if layers is None or index in layers:
            out.append(affine.weight.detach().float() * float(getattr(affine, "weight_gain", 1.0)))
    if not out:
        raise InputError("layers", "W+ layers that some style affine reads", layers)
    return out


def _canonical_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each row so its largest-magnitude entry is positive (eigenvectors are defined up to sign)."""
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    return vectors * torch.sign(vectors.gather(1, idx)).clamp_min(0).mul(2).sub(1)


def _default_ranges(vectors: torch.Tensor, stats: LatentPrior, sigmas: float = 3.0) -> torch.Tensor:
    spread = stats.spread(vectors.to(stats.components.device)).cpu()
    return torch.stack([-sigmas * spread, sigmas * spread], dim=1)


# -- finders --------------------------------------------------------------------------------------

Finder = Callable[..., Directions]
#: Direction finders by name: ``fn(G, k, layers, seed, **options) -> Directions``.
DIRECTION_FINDERS: Registry[Finder] = Registry("direction finder")


def sefa_from_weights(weights: Sequence[torch.Tensor], k: int, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form factorisation: the top-``k`` eigenvectors ``[k, w_dim]`` of ``A^T A`` and their eigenvalues.

    ``A`` is the row-wise concatenation of ``weights`` (each ``[out, w_dim]``); with ``normalize``
    every row (one output unit's weight vector) is scaled to unit length first, as in SeFa.
    """
    A = torch.cat([w.detach().double() for w in weights], dim=0)
    if normalize:
        A = A / A.norm(dim=1, keepdim=True).clamp_min(1e-12)
    values, vectors = torch.linalg.eigh(A.T @ A)
    order = torch.argsort(values, descending=True)[: int(k)]
    return _canonical_signs(vectors[:, order].T.float()), values[order].float()


@DIRECTION_FINDERS.register("sefa", description="closed-form factorisation of the style-affine weights (SeFa)")
def sefa_directions(G: Generator, k: int = 16, layers: list[int] | None = None, seed: int = 0, *, normalize: bool = True,
                    stats: LatentPrior | None = None) -> Directions:
    """SeFa (Shen & Zhou 2021, closed-form factorisation): eigenvectors of ``A^T A`` for the concatenated
    style-affine weights ``A`` of the chosen layers (each output unit's weight vector normalised to
    unit length with ``normalize``), by falling eigenvalue."""
    k = min(int(k), G.w_dim)
    vectors, values = sefa_from_weights(_affine_weights(G, layers), k, normalize)
    stats = stats or latent_stats(G, seed=seed)
    return Directions(vectors, layers, _default_ranges(vectors, stats), [f"sefa_{i}" for i in range(k)], "sefa", values,
                      meta={"normalize": normalize})


@DIRECTION_FINDERS.register("ganspace", description="principal axes of sampled w, or of a feature map regressed onto W (GANSpace)")
def ganspace_directions(G: Generator, k: int = 16, layers: list[int] | None = None, seed: int = 0, *, n: int = 10_000,
                        center: str = "class", activations: int | None = None, stats: LatentPrior | None = None,
                        batch_size: int = 256) -> Directions:
    """GANSpace (Harkonen et al. 2020): PCA of ``n`` sampled codes; ``center="class"`` removes each class's
    mean first (within-class axes, so class changes do not dominate).

    With ``activations=res`` the PCA runs on the feature map at that resolution (up to 2000
    samples) and each component is regressed back onto W (least squares of centred w on the
    component coefficients).
    """
    if center not in ("class", "mean"):
        raise InputError("center", "class or mean", center)
    k = min(int(k), G.w_dim)
    stats = stats or latent_stats(G, seed=seed)
    count = min(int(n), 2000) if activations is not None else int(n)
    ws, c = sample_ws(G, count, seed=derive_seed(seed, "ganspace"))
    w = ws[:, 0].double()
    if center == "class" and c is not None and stats.class_means is not None and G.conditioning is not None:
        w_c = w - stats.class_means.to(w.device).double()[G.conditioning.decode(c)["class"].to(w.device)]
    else:
        w_c = w - w.mean(0)
    if activations is None:
        _, s, vh = torch.linalg.svd(w_c, full_matrices=False)
        vectors, values = vh[:k].float(), (s[:k].square() / (count - 1)).float()
    else:
        res = int(activations)
        G.synthesis.feature_shape(res)
        feats = []
        with torch.no_grad():
            for i in range(0, count, batch_size):
                _, f = G.synthesis(ws[i: i + batch_size], return_features=[res])
                feats.append(f[res].flatten(1).double())
        X = torch.cat(feats)
        X = X - X.mean(0)
        u, s, _ = torch.linalg.svd(X, full_matrices=False)
        coef = u[:, :k] * s[:k]
        # Least-squares map from component coefficients to centred codes: one W direction per component.
        B = torch.linalg.lstsq(coef, w_c).solution
        vectors, values = B.float(), (s[:k].square() / (count - 1)).float()
    vectors = _canonical_signs(vectors)
    return Directions(vectors, layers, _default_ranges(vectors, stats), [f"ganspace_{i}" for i in range(vectors.shape[0])], "ganspace",
                      values, meta={"n": count, "center": center, "activations": activations})


@dataclass
class TokenCodes:
    """Where each attribute token puts the codes: per group (not ``class``), its ``tokens``, the group's
    ``centre [w_dim]`` (the mean of the tokens' mean codes) and each token's ``offsets [T, w_dim]``
    from it; ``basis [w_dim, r]`` is an orthonormal basis of the offsets' span."""

    groups: list[tuple[str, list[str], torch.Tensor, torch.Tensor, torch.Tensor]]

    def to(self, device: torch.device | str) -> TokenCodes:
        return TokenCodes([(name, tokens, centre.to(device), offsets.to(device), basis.to(device))
                           for name, tokens, centre, offsets, basis in self.groups])


def token_codes(G: Generator, n: int = 4096, seed: int = 0) -> TokenCodes:
    """Mean codes of ``n`` samples per attribute token (see :class:`TokenCodes`); tokens never drawn are left out."""
    cond = G.conditioning
    groups = [(name, tokens) for name, tokens in (cond.groups if cond is not None else []) if name != "class"]
    if not groups:
        raise InputError("generator", "a generator conditioned on attribute tokens besides 'class'",
                         "no conditioning" if cond is None else f"groups {[name for name, _ in cond.groups]}")
    count = check_number(n, "n", low=16, integer=True)
    ws, c = sample_ws(G, count, seed=derive_seed(seed, "tokens"))
    w = ws[:, 0].double()
    drawn = cond.decode(c.to(w.device))
    out = []
    for name, tokens in groups:
        present = [i for i in range(len(tokens)) if bool((drawn[name] == i).any())]
        if len(present) < 2:
            continue
        means = torch.stack([w[drawn[name] == i].mean(0) for i in present])
        centre = means.mean(0)
        offsets = means - centre
        u, sv, _ = torch.linalg.svd(offsets.T, full_matrices=False)
        basis = u[:, sv > 1e-6 * float(sv.max())]
        out.append((name, [tokens[i] for i in present], centre.float(), offsets.float(), basis.float()))
    return TokenCodes(out)


@DIRECTION_FINDERS.register("tokens", description="mean code of each attribute token minus its group's mean (generators conditioned on attributes)")
def token_directions(G: Generator, k: int = 16, layers: list[int] | None = None, seed: int = 0, *, n: int = 4096,
                     stats: LatentPrior | None = None) -> Directions:
    """Directions read off the generator's own conditioning (not unsupervised in the strict sense; SAGE's
    prompt vocabulary): for every token of every attribute group
    other than ``class`` (the "prompt" vocabulary, e.g. ``texture=stripes``), the mean ``w`` of ``n``
    samples drawn with that token minus the mean over the group's tokens (:func:`token_codes`).
    Following one moves a code toward the token's typical codes. The ``k`` longest are returned, by
    length (``values``)."""
    codes = token_codes(G, n, seed)
    stats = stats or latent_stats(G, seed=seed)
    offsets = torch.cat([off for _, _, _, off, _ in codes.groups])
    names = [f"{name}={token}" for name, tokens, _, _, _ in codes.groups for token in tokens]
    lengths = offsets.norm(dim=1)
    order = torch.argsort(lengths, descending=True)[: int(k)]
    unit = offsets[order] / lengths[order, None].clamp_min(1e-12)
    return Directions(unit, layers, _default_ranges(unit, stats), [names[i] for i in order.tolist()], "tokens", lengths[order],
                      meta={"n": int(n)})


def householder_vectors(Q: torch.Tensor) -> torch.Tensor:
    """Householder vectors ``[m, r]`` (unit diagonal, zero above it) whose reflections' product has ``Q``'s
    columns as its first ``r`` columns, up to each column's sign."""
    a, _ = torch.geqrf(Q.double())
    m, r = Q.shape
    return (a.tril(-1) + torch.eye(m, r, dtype=a.dtype, device=a.device)).to(Q.dtype)


def householder_orthonormal(vectors: torch.Tensor) -> torch.Tensor:
    """The first ``r`` columns ``[m, r]`` of the product of the reflections ``I - 2 v v^T / |v|^2`` (orthonormal)."""
    m, r = vectors.shape
    v = vectors.tril(-1) + torch.eye(m, r, dtype=vectors.dtype, device=vectors.device)
    return torch.linalg.householder_product(v, 2.0 / v.square().sum(0))


class HouseholderProjector(nn.Module):
    """A matrix ``[m, n]`` of rank ``r`` as ``U diag(s) V^T``; ``U``, ``V`` have orthonormal columns, each
    the product of ``r`` Householder reflections, so they stay orthonormal under any gradient step.

    Initialised from the truncated SVD of ``weight``: equal to it at full rank.
    """

    def __init__(self, weight: torch.Tensor, rank: int):
        super().__init__()
        m, n = weight.shape
        rank = int(rank)
        if not 1 <= rank <= min(m, n):
            raise InputError("rank", f"a rank in [1, {min(m, n)}]", rank)
        U, S, Vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
        U, S, V = U[:, :rank], S[:rank], Vh[:rank].T
        self.u = nn.Parameter(householder_vectors(U))
        self.v = nn.Parameter(householder_vectors(V))
        # Each reflection product matches U's (V's) columns up to sign; the signs go into s.
        du = (householder_orthonormal(self.u.data) * U).sum(0).sign()
        dv = (householder_orthonormal(self.v.data) * V).sum(0).sign()
        self.s = nn.Parameter(S * du * dv)
        self.float()

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return householder_orthonormal(self.u), self.s, householder_orthonormal(self.v)

    def forward(self) -> torch.Tensor:
        U, s, V = self.factors()
        return (U * s) @ V.T


@DIRECTION_FINDERS.register("householder", description="low-rank orthogonal (Householder) re-parametrisation of the style affines, fine-tuned")
def householder_directions(G: Generator, k: int = 16, layers: list[int] | None = None, seed: int = 0, *, rank: int | None = None,
                           steps: int = 100, batch_size: int = 16, lr: float = 2e-3, discriminator: Discriminator | None = None,
                           gan_weight: float = 0.1, stats: LatentPrior | None = None) -> Directions:
    """Householder directions (Song et al. 2023): the chosen layers' concatenated style affines
    re-parametrised as a low-rank ``U diag(s) V^T`` whose orthonormal factors are products of
    Householder reflections (:class:`HouseholderProjector`), fine-tuned for ``steps`` steps; the
    directions are the columns of ``V`` by ``|s|``.

    The fine-tuned copy of ``G`` must keep producing the original's images for the same codes
    (squared pixel error); with a ``discriminator`` its non-saturating GAN loss (weight
    ``gan_weight``) is added. ``G`` itself is not changed. ``rank`` defaults to ``max(k, w_dim // 4)``.
    """
    stats = stats or latent_stats(G, seed=seed)
    affines = [(idx, aff) for idx, aff in G.style_affines() if layers is None or idx in layers]
    weights = _affine_weights(G, layers)
    A = torch.cat(weights)
    k = min(int(k), G.w_dim, A.shape[0])
    rank = min(max(k, int(rank) if rank is not None else max(k, G.w_dim // 4)), min(A.shape))
    projector = HouseholderProjector(A, rank).to(G.device)
    report: dict[str, Any] = {"rank": rank, "steps": int(steps), "discriminator": discriminator is not None}
    if steps > 0:
        student = copy.deepcopy(G).eval().requires_grad_(False)
        names = {id(m): name for name, m in student.named_modules()}
        chosen = [a for i, a in student.style_affines() if layers is None or i in layers]
        targets = [(names[id(aff_s)] + ".weight", aff.weight.shape[0], float(getattr(aff, "weight_gain", 1.0)))
                   for (_, aff), aff_s in zip(affines, chosen)]

        def student_images(ws: torch.Tensor) -> torch.Tensor:
            full, params, start = projector(), {}, 0
            for name, rows, gain in targets:
                params[name] = full[start: start + rows] / gain
                start += rows
            return _call_synthesis(student, params, ws)

        # A fixed batch measures how far the re-parametrised generator is from the original.
        probe, _ = sample_ws(G, 64, seed=derive_seed(seed, "householder-probe"))
        with torch.no_grad():
            probe_target = G.synthesis(probe, noise_mode="const")
            report["initial_error"] = float((student_images(probe) - probe_target).square().mean())
        opt = torch.optim.Adam(projector.parameters(), lr=lr)
        flags = [(p, p.requires_grad) for p in (discriminator.parameters() if discriminator is not None else [])]
        if discriminator is not None:
            discriminator.requires_grad_(False)
        try:
            for step in range(int(steps)):
                ws, c = sample_ws(G, batch_size, seed=derive_seed(seed, "householder", step))
                with torch.no_grad():
                    teacher = G.synthesis(ws, noise_mode="const")
                img = student_images(ws)
                loss = (img - teacher).square().mean()
                if discriminator is not None:
                    loss = loss + gan_weight * F.softplus(-discriminator(img, c.to(G.device) if c is not None else None)).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
        with torch.no_grad():
            report["final_error"] = float((student_images(probe) - probe_target).square().mean())
    with torch.no_grad():
        _, s, V = (t.detach() for t in projector.factors())
    order = torch.argsort(s.abs(), descending=True)[:k]
    vectors = _canonical_signs(V[:, order].T.float().cpu())
    return Directions(vectors, layers, _default_ranges(vectors, stats), [f"householder_{i}" for i in range(k)], "householder",
                      s.abs()[order].float().cpu(), meta=report)


def _call_synthesis(student: Generator, params: dict[str, torch.Tensor], ws: torch.Tensor) -> torch.Tensor:
    """``student.synthesis(ws)`` with some of its parameters replaced by ``params`` (names relative to the generator)."""
    prefix = "synthesis."
    local = {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}
    return torch.func.functional_call(student.synthesis, local, (ws,), {"noise_mode": "const", "fused": False}, strict=False)


def without_class_subspace(directions: Directions, basis: torch.Tensor, min_norm: float = 0.2) -> Directions:
    """Each direction minus its projection on the class subspace ``basis [w_dim, d]``, renormalised;
    directions keeping less than ``min_norm`` of their length (mostly class) are dropped."""
    V = directions.vectors.to(basis.device)
    rest = V - (V @ basis) @ basis.T
    norms = rest.norm(dim=1)
    keep = (norms >= min_norm).nonzero().squeeze(1).cpu()
    if keep.numel() == 0:
        raise InputError("directions", "some direction outside the class subspace", "every direction lies in it")
    out = directions.select(keep)
    out.vectors = rest[keep.to(rest.device)].cpu() / norms[keep.to(norms.device)].cpu()[:, None]
    out.meta = {**directions.meta, "class_free": {"dropped": [directions.names[i] for i in range(len(directions)) if i not in keep.tolist()],
                                                   "kept_norm": [float(norms[i]) for i in keep.tolist()]}}
    out.meta.pop("selected_from", None)
    return out


def find_directions(G: Generator, method: str = "sefa", k: int = 16, layers: Any = None, seed: int = 0, *,
                    calibrate: bool = True, class_free: bool = False, discriminator: Discriminator | None = None,
                    stats: LatentPrior | None = None, calibrate_kwargs: dict[str, Any] | None = None, **options: Any) -> Directions:
    """Directions from a registered finder, with realistic ranges (:func:`calibrate_ranges`) unless ``calibrate=False``.

    ``layers``: see :func:`resolve_layers`; ``class_free`` removes from every direction its part in
    the class-conditioning subspace (:func:`class_subspace`, conditional generators) and drops the
    directions that were mostly class; ``options`` go to the finder (e.g. ``normalize`` for sefa,
    ``activations`` for ganspace, ``rank``/``steps`` for householder).
    """
    finder = DIRECTION_FINDERS.get(method)
    k = check_number(k, "k", low=1, integer=True)
    chosen = resolve_layers(G, layers)
    stats = stats or latent_stats(G, seed=seed)
    if method == "householder":
        options["discriminator"] = discriminator
    directions = finder(G, k, chosen, seed, stats=stats, **options)
    if class_free:
        basis = class_subspace(G, seed=seed)
        if basis is None:
            raise InputError("class_free", "a generator conditioned on a 'class' group", G.conditioning)
        directions = without_class_subspace(directions, basis)
        directions.ranges = _default_ranges(directions.vectors, stats)
    directions.meta.update({"generator_fingerprint": generator_fingerprint(G), "seed": seed, "k": k})
    if calibrate:
        directions = calibrate_ranges(G, directions, stats=stats, discriminator=discriminator, seed=seed, **(calibrate_kwargs or {}))
    return directions


# -- realistic ranges -----------------------------------------------------------------------------

@torch.no_grad()
def calibrate_ranges(G: Generator, directions: Directions, *, stats: LatentPrior | None = None, discriminator: Discriminator | None = None,
                     n: int = 64, max_sigma: float = 4.0, grid: int = 8, min_fraction: float = 0.9, seed: int = 0) -> Directions:
    """Per direction and side, the largest magnitude (on a grid up to ``max_sigma`` standard deviations
    of W along the direction) up to which at least ``min_fraction`` of ``n`` samples stay realistic.

    Realistic (:meth:`LatentPrior.realistic`): every edited layer's code within the W distribution's
    radius, image statistics within the band of unedited samples, and the discriminator's logit
    above its 1st percentile on samples when a discriminator is given. ``stats`` without image
    bands gets them here (:meth:`LatentPrior.with_images`).
    """
    n = check_number(n, "n", low=1, integer=True)
    grid = check_number(grid, "grid", low=1, integer=True)
    stats = (stats or latent_stats(G, seed=seed)).to(G.device)
    if stats.images is None:
        stats = stats.with_images(G, discriminator=discriminator, seed=seed)
    ws, c = sample_ws(G, n, seed=derive_seed(seed, "calibrate"))
    spread = stats.spread(directions.vectors.to(G.device)).cpu()
    base_ok = stats.realistic(G, ws, c)
    counted = base_ok if bool(base_ok.any()) else torch.ones_like(base_ok)
    ranges = torch.zeros(len(directions), 2)
    for i in range(len(directions)):
        for side, col in ((-1.0, 0), (1.0, 1)):
            reach = 0.0
            for j in range(1, grid + 1):
                alpha = side * max_sigma * float(spread[i]) * j / grid
                mags = directions.along(i, torch.full((n,), alpha, device=G.device))
                ok = stats.realistic(G, directions.apply(ws, mags), c)
                # Samples that are unusual before any edit do not count against the direction.
                if float(ok[counted].float().mean()) < min_fraction:
                    break
                reach = alpha
            ranges[i, col] = reach
    out = copy.copy(directions)
    out.ranges = ranges.to(directions.ranges.device)
    out.meta = {**directions.meta, "calibration": {"n": n, "max_sigma": max_sigma, "grid": grid, "min_fraction": min_fraction,
                                                     "discriminator": discriminator is not None}}
    return out


# -- class independence ---------------------------------------------------------------------------

@torch.no_grad()
def class_subspace(G: Generator, *, n: int = 256, energy: float = 0.99, seed: int = 0) -> torch.Tensor | None:
    """An orthonormal basis ``[w_dim, d]`` (``d < K`` classes) of the W directions of the class conditioning.

    For ``n`` random ``z`` (and other tokens), the code of every class is computed; each class's
    mean code minus the mean over classes is the class embedding's effect in W. The basis is the
    principal axes holding ``energy`` of those effects. ``None`` for generators without a ``class``
    conditioning group.
    """
    if G.conditioning is None or "class" not in G.conditioning.names:
        return None
    num = len(G.conditioning.tokens("class"))
    gen = make_generator(derive_seed(seed, "class-subspace"))
    z = torch.randn(n, G.z_dim, generator=gen).to(G.device)
    tokens = G.conditioning.sample(n, gen)
    means = []
    for k in range(num):
        tokens["class"] = torch.full((n,), k, dtype=torch.long)
        means.append(G.mapping(z, G.conditioning.encode(tokens).to(G.device))[:, 0].double().mean(0))
    effects = torch.stack(means)
    effects = effects - effects.mean(0)
    _, s, vh = torch.linalg.svd(effects, full_matrices=False)
    share = s.square().cumsum(0) / s.square().sum().clamp_min(1e-30)
    d = min(int((share < energy).sum()) + 1, max(1, num - 1))
    return vh[:d].T.float()


def train_judge(G: Generator, *, n: int = 5000, epochs: int = 3, width: int = 16, seed: int = 0, batch_size: int = 128,
                lr: float = 3e-3) -> Classifier:
    """A SmallCNN trained to tell the conditioned class from the generator's own samples (the reference judge)."""
    from robust.models import build_classifier

    if G.conditioning is None or "class" not in G.conditioning.names:
        raise InputError("generator", "a generator conditioned on a 'class' group (or give a judge classifier)", G.conditioning)
    names = G.conditioning.tokens("class")
    gen = make_generator(derive_seed(seed, "judge"))
    classes = torch.arange(n) % len(names)
    ws, _ = sample_ws(G, n, seed=derive_seed(seed, "judge-samples"), classes=classes)
    with torch.no_grad():
        images = torch.cat([G.to_unit(G.synthesis(ws[i: i + 256], noise_mode="const")) for i in range(0, n, 256)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "judge-init") % (1 << 31))
        judge = build_classifier("smallcnn", len(names), (G.img_channels, G.img_resolution, G.img_resolution), class_names=names,
                                 device=G.device, width=width)
    net = judge.network
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    total, step = epochs * math.ceil(n / batch_size), 0
    net.train()
    for _ in range(int(epochs)):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i: i + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(net(images[idx].to(G.device)), classes[idx].to(G.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    net.eval()
    judge.name = "judge"
    judge.accuracy_on_samples = judge.accuracy(images[: min(n, 1000)], classes[: min(n, 1000)])
    return judge


def score_directions(G: Generator, directions: Directions, *, judge: Classifier | None = None, n: int = 128,
                     fractions: Sequence[float] = (-1.0, -0.5, 0.5, 1.0), seed: int = 0, batch_size: int = 256) -> Directions:
    """Fill ``scores``: ``class_preservation`` (the fraction of ``n`` samples whose judged class stays
    the same at every magnitude ``fraction x`` the direction's range; for class-conditional
    generators, samples the judge assigns to their conditioned class), ``class_alignment`` (the norm
    of the direction's projection on :func:`class_subspace`, the span of the class embedding's
    effects in W; NaN without class conditioning) and
    ``score = preservation x (1 - alignment)``.

    ``judge`` defaults to :func:`train_judge` on the generator's samples (class-conditional
    generators only); for others give a classifier of the generator's domain.
    """
    if judge is None:
        judge = train_judge(G, seed=seed)
    if judge.input_size[0] != G.img_channels:
        raise InputError("judge", f"a classifier of {G.img_channels}-channel images", judge.input_size)
    with torch.no_grad():
        return _score(G, directions, judge, n, fractions, seed, batch_size)


def _judge_images(G: Generator, judge: Classifier, codes: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = []
    for i in range(0, codes.shape[0], batch_size):
        out.append(judge.predict(G.to_unit(G.synthesis(codes[i: i + batch_size], noise_mode="const")).to(judge.device)).cpu())
    return torch.cat(out)


def _preservation(G: Generator, directions: Directions, judge: Classifier, ws: torch.Tensor, base: torch.Tensor, i: int,
                  fractions: Sequence[float], batch_size: int, scale: float = 1.0) -> float:
    """The fraction of codes ``ws`` whose judged class stays ``base`` at every ``fraction x scale x range``."""
    n = ws.shape[0]
    same = torch.ones(n, dtype=torch.bool)
    low, high = directions.ranges[i].tolist()
    for frac in fractions:
        alpha = float(frac) * scale * (high if frac > 0 else -low)
        if alpha == 0:
            continue
        moved = directions.apply(ws, directions.along(i, torch.full((n,), alpha, device=G.device)))
        same &= _judge_images(G, judge, moved, batch_size) == base
    return float(same.float().mean())


def _scoring_codes(G: Generator, judge: Classifier, n: int, seed: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``n`` codes to score directions on, the judge's class of each, and how they were chosen.

    For a class-conditional generator these are samples the judge assigns to their conditioned class
    (up to 4n are drawn): a sample whose class the judge cannot tell already flips under any edit,
    which would measure the generator's weak samples rather than the direction. Otherwise (or when
    fewer than 8 such samples turn up) the first ``n`` samples, whatever the judge says.
    """
    conditional = G.conditioning is not None and "class" in G.conditioning.names
    draw = 4 * n if conditional else n
    ws, c = sample_ws(G, draw, seed=derive_seed(seed, "score"))
    base = _judge_images(G, judge, ws, batch_size)
    if conditional:
        recognised = (base == G.conditioning.decode(c)["class"].to(base.device)).nonzero().flatten()
        if len(recognised) >= 8:
            keep = recognised[:n]
            info = {"samples": "recognised", "n": int(len(keep)), "recognised_rate": float(len(recognised) / draw)}
            return ws[keep.to(ws.device)], base[keep], info
    return ws[:n], base[:n], {"samples": "all", "n": n}


def _class_alignment(G: Generator, directions: Directions, seed: int) -> torch.Tensor:
    """Norm of each direction's projection on :func:`class_subspace` (NaN without class conditioning)."""
    basis = class_subspace(G, seed=seed)
    if basis is None:
        return torch.full((len(directions),), float("nan"))
    return (directions.vectors.to(basis.device) @ basis).norm(dim=1).clamp(0, 1).cpu()


def _preservation_scores(preservation: torch.Tensor, alignment: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"class_preservation": preservation, "class_alignment": alignment,
            "score": preservation * (1 - torch.nan_to_num(alignment, nan=0.0))}


def _score(G: Generator, directions: Directions, judge: Classifier, n: int, fractions: Sequence[float], seed: int,
           batch_size: int) -> Directions:
    ws, base, counted = _scoring_codes(G, judge, n, seed, batch_size)
    preservation = torch.tensor([_preservation(G, directions, judge, ws, base, i, fractions, batch_size) for i in range(len(directions))])
    alignment = _class_alignment(G, directions, seed)
    out = copy.copy(directions)
    out.scores = {**directions.scores, **_preservation_scores(preservation, alignment)}
    out.meta = {**directions.meta, "scoring": {"n": n, "fractions": list(map(float, fractions)), "judge": judge.name,
                                                 "judge_accuracy": getattr(judge, "accuracy_on_samples", None), "counted": counted}}
    return out


@torch.no_grad()
def class_safe_ranges(G: Generator, directions: Directions, *, judge: Classifier | None = None, min_preservation: float = 0.95,
                      scales: Sequence[float] = (1.0, 0.7, 0.5, 0.35, 0.25), n: int = 128,
                      fractions: Sequence[float] = (-1.0, -0.5, 0.5, 1.0), seed: int = 0, batch_size: int = 256) -> Directions:
    """Shrink each direction's range to the largest of ``scales`` (fractions of its realistic range) at
    which the judge keeps the class of at least ``min_preservation`` of ``n`` samples, and rescore.

    A generator whose class is fragile (a weak one) has few directions that are class-independent over
    their whole realistic range but may have many over part of it: this keeps the safe part. A
    direction that changes the class even at the smallest scale keeps that scale and its (low)
    preservation, so :func:`select_directions` leaves it out. ``scores["range_scale"]`` records the
    scale chosen per direction.
    """
    min_preservation = check_number(min_preservation, "min_preservation", low=0.0, high=1.0)
    scales = sorted({float(check_number(v, "scales", low=0.0, high=1.0)) for v in scales}, reverse=True)
    if not scales or scales[-1] <= 0:
        raise InputError("scales", "fractions of the range in (0, 1]", scales)
    if judge is None:
        judge = train_judge(G, seed=seed)
    if judge.input_size[0] != G.img_channels:
        raise InputError("judge", f"a classifier of {G.img_channels}-channel images", judge.input_size)
    ws, base, counted = _scoring_codes(G, judge, n, seed, batch_size)
    chosen = torch.full((len(directions),), scales[-1])
    preservation = torch.zeros(len(directions))
    for i in range(len(directions)):
        for scale in scales:
            preservation[i] = _preservation(G, directions, judge, ws, base, i, fractions, batch_size, scale)
            if preservation[i] >= min_preservation:
                chosen[i] = scale
                break
    alignment = directions.scores.get("class_alignment")
    alignment = _class_alignment(G, directions, seed) if alignment is None else alignment.cpu()
    out = copy.copy(directions)
    out.ranges = directions.ranges * chosen.to(directions.ranges.device)[:, None]
    out.scores = {**directions.scores, **_preservation_scores(preservation, alignment), "range_scale": chosen}
    out.meta = {**directions.meta, "class_safe_ranges": {"n": n, "scales": scales, "min_preservation": min_preservation,
                                                           "fractions": list(map(float, fractions)), "judge": judge.name,
                                                           "counted": counted}}
    return out


def select_directions(directions: Directions, *, min_preservation: float = 0.95, max_alignment: float = 0.5,
                      include: Sequence[int] = (), exclude: Sequence[int] = (), min_range: float = 0.0) -> Directions:
    """Mark the kept directions: scored class preservation >= ``min_preservation``, alignment with the
    class subspace <= ``max_alignment`` (ignored when unknown) and a non-trivial range; ``include`` /
    ``exclude`` (direction indices) override the thresholds."""
    k = len(directions)
    for name, idx in (("include", include), ("exclude", exclude)):
        bad = [int(i) for i in idx if not 0 <= int(i) < k]
        if bad:
            raise InputError(name, f"direction indices in [0, {k - 1}]", bad)
    overlap = sorted(set(map(int, include)) & set(map(int, exclude)))
    if overlap:
        raise InputError("include/exclude", "disjoint index sets", overlap)
    keep = torch.ones(k, dtype=torch.bool)
    if "class_preservation" in directions.scores:
        keep &= directions.scores["class_preservation"].cpu() >= min_preservation
    if "class_alignment" in directions.scores:
        align = directions.scores["class_alignment"].cpu()
        keep &= torch.isnan(align) | (align <= max_alignment)
    width = (directions.ranges[:, 1] - directions.ranges[:, 0]).cpu()
    keep &= width > min_range
    for i in include:
        keep[int(i)] = True
    for i in exclude:
        keep[int(i)] = False
    out = copy.copy(directions)
    out.kept = keep.to(directions.vectors.device)
    out.meta = {**directions.meta, "selection": {"min_preservation": min_preservation, "max_alignment": max_alignment,
                                                   "include": [int(i) for i in include], "exclude": [int(i) for i in exclude]}}
    return out


# -- directions in a structure/appearance model's appearance-code space -------------------------------

APPEARANCE_METHODS = ("pca", "sefa")


def appearance_directions(model: SwapAutoencoder, appearance: torch.Tensor, method: str = "pca", k: int = 16, *,
                          sigmas: float = 2.0) -> Directions:
    """Unsupervised directions in a swap model's appearance-code space, with ranges from the codes' spread.

    ``appearance [M, A]``: the codes of a dataset (e.g. the training images,
    :func:`robust.gan.codes_cache.load_or_encode`). ``pca``: the principal axes of the centred codes
    (falling variance); ``sefa``: the top eigenvectors of ``A^T A`` for the first modulation weights
    that read the appearance code (the generator's first style affine, rows normalised, as SeFa).
    Each range is ``+-sigmas`` standard deviations of the codes' projections on the direction, so an
    edit moves a code about as far as the training codes spread. Directions keep no layers (every
    style reads the appearance code); ``meta`` records the model's fingerprint.
    """
    if not isinstance(model, SwapAutoencoder):
        raise InputError("model", "a robust.gan.swapping.SwapAutoencoder", type(model).__name__)
    if method not in APPEARANCE_METHODS:
        raise InputError("method", " or ".join(APPEARANCE_METHODS) + " (appearance directions)", method)
    size = code_dim(model)
    if not isinstance(appearance, torch.Tensor) or appearance.dim() != 2 or appearance.shape[1] != size or appearance.shape[0] < 2:
        raise InputError("appearance", f"codes [M >= 2, {size}]", getattr(appearance, "shape", type(appearance).__name__))
    k = min(int(check_number(k, "k", low=1, integer=True)), size)
    check_number(sigmas, "sigmas", low=0)
    codes = appearance.detach().double().cpu()
    centred = codes - codes.mean(0)
    if method == "pca":
        _, s, vh = torch.linalg.svd(centred, full_matrices=False)
        vectors, values = _canonical_signs(vh[:k].float()), (s[:k].square() / (codes.shape[0] - 1)).float()
    else:
        affine = model.generator.head0.affine
        weight = affine.weight.detach().float().cpu() * float(getattr(affine, "weight_gain", 1.0))
        vectors, values = sefa_from_weights([weight], k)
    k = vectors.shape[0]
    spread = (centred.float() @ vectors.T).std(0)
    ranges = torch.stack([-sigmas * spread, sigmas * spread], dim=1)
    meta = {"generator_fingerprint": generator_fingerprint(model), "codes": int(codes.shape[0]), "sigmas": float(sigmas), "k": k}
    return Directions(vectors, None, ranges, [f"appearance_{method}_{i}" for i in range(k)], f"appearance_{method}", values, meta=meta)


# -- strips and ground-truth effects --------------------------------------------------------------

@torch.no_grad()
def traversal(G: Generator, directions: Directions, index: int, *, ws: torch.Tensor | None = None, n: int = 4, steps: int = 7,
              seed: int = 0, residual: torch.Tensor | None = None, expand_res: int | None = None) -> torch.Tensor:
    """Images ``[n * steps, C, H, W]`` in ``[0, 1]``: each row one code moved across the direction's range
    (from ``low`` to ``high``, ``steps`` values). Codes are ``ws`` (with their expansion residual) or
    ``n`` random samples."""
    if ws is None:
        ws, _ = sample_ws(G, n, seed=derive_seed(seed, "traversal"))
    ws = check_ws(G, ws).to(G.device)
    n = ws.shape[0]
    low, high = directions.ranges[index].tolist()
    values = torch.linspace(low, high, int(steps), device=G.device)
    rows = []
    for i in range(n):
        codes = directions.apply(ws[i: i + 1].expand(len(values), -1, -1), directions.along(index, values))
        res = residual[i: i + 1].expand(len(values), -1, -1, -1).to(G.device) if residual is not None else None
        rows.append(synthesize(G, codes, res, expand_res))
    return torch.cat(rows)


def write_traversals(G: Generator, directions: Directions, folder: str | Path, *, n: int = 4, steps: int = 7, seed: int = 0) -> list[Path]:
    """One PNG per direction (``<folder>/<name>.png``; rows: samples, columns: magnitudes low -> high)."""
    from robust.gan.training import write_png

    folder = Path(folder)
    paths = []
    for i in range(len(directions)):
        strip = traversal(G, directions, i, n=n, steps=steps, seed=seed)
        paths.append(write_png(folder / f"{directions.names[i]}.png", strip.cpu(), columns=steps))
    return paths


def factor_changes(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], classes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image change ``[N]`` of every synthetic-benchmark nuisance factor between two regressor
    readings, on a common ``[0, 1]`` scale: continuous factors as the fraction of their range
    (circular ones wrapped, as a fraction of half a period), categorical ones as 0/1. Factors an
    image does not show (the mark's hue without a mark, the phase of a plain texture, the rotation of
    a rotation-invariant shape) count as no change."""
    from robust.gan.metrics import HIDDEN_WHEN, SYMMETRY
    from robust.synthetic import CLASS_NAMES, FACTORS

    order = torch.tensor([SYMMETRY[name] for name in CLASS_NAMES])[classes.long().cpu()]
    out = {}
    for f in FACTORS:
        a, b = before[f.name].float(), after[f.name].float()
        if f.is_categorical:
            change = (a != b).float()
        elif f.circular:
            period = torch.full_like(a, f.high - f.low)
            if f.name == "rotation":
                period = period / order.clamp_min(1).float()
            diff = torch.remainder(b - a + period / 2, period) - period / 2
            change = diff.abs() / (period / 2)
            if f.name == "rotation":
                change = change * (order > 0).float()
        else:
            change = (b - a).abs() / (f.high - f.low)
        if f.name in HIDDEN_WHEN:
            cond, hidden = HIDDEN_WHEN[f.name]
            change = change * ((before[cond] != hidden) & (after[cond] != hidden)).float()
        out[f.name] = change
    return out


@torch.no_grad()
def factor_effects(G: Generator, directions: Directions, *, regressor: Any = None, oracle: Classifier | None = None, n: int = 128,
                   fraction: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    """What each direction does to the synthetic benchmark's ground-truth factors (32x32 RGB generators).

    For ``n`` samples moved to ``fraction x`` each end of the range, the factor regressor's change
    per factor (:func:`factor_changes`, averaged over samples and both ends); ``purity`` is the
    largest share of the summed change that one factor takes (``dominant``); ``class_kept`` the
    fraction of samples whose oracle class is the same at both ends as unedited.
    """
    from robust.gan.metrics import load_factor_regressor, load_oracle

    regressor = regressor or load_factor_regressor(device=G.device)
    oracle = oracle or load_oracle(device=G.device)
    ws, _ = sample_ws(G, n, seed=derive_seed(seed, "factor-effects"))
    base_images = G.to_unit(G.synthesis(ws, noise_mode="const"))
    base = regressor.predict(base_images)
    base_class = oracle.predict(base_images).cpu()
    rows = []
    for i in range(len(directions)):
        low, high = directions.ranges[i].tolist()
        totals: dict[str, float] = {}
        kept = torch.ones(n, dtype=torch.bool)
        for alpha in (fraction * low, fraction * high):
            if alpha == 0:
                continue
            images = G.to_unit(G.synthesis(directions.apply(ws, directions.along(i, torch.full((n,), alpha, device=G.device))),
                                           noise_mode="const"))
            after = regressor.predict(images)
            kept &= oracle.predict(images).cpu() == base_class
            for name, change in factor_changes(base, after, base["class"]).items():
                totals[name] = totals.get(name, 0.0) + float(change.mean()) / 2
        total = sum(totals.values())
        dominant = max(totals, key=totals.get) if totals else None
        rows.append({"index": i, "name": directions.names[i], "dominant": dominant,
                     "purity": totals[dominant] / total if total > 0 else 0.0, "change": total,
                     "class_kept": float(kept.float().mean()), "changes": totals})
    return rows
