"""NaTra: natural transformations along a generator's class-independent latent directions.

:class:`NaturalTransform` is a :class:`robust.transforms.Transform` whose parameters are the
magnitudes along the kept directions; :meth:`NaturalTransform.transform` runs the three modes of
model-based robust training (random, worst-of-k, gradient) on cached or inverted W+ codes.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from robust import noise
from robust.data import ImageSet
from robust.errors import GradientUnavailableError, InputError
from robust.gan.codes_cache import CodeSet
from robust.gan.directions import Directions, token_codes
from robust.gan.inversion import invert_batch
from robust.gan.latent import check_expand_res, check_ws, latent_stats, synthesize
from robust.gan.networks import Generator
from robust.io import fingerprint_tensors
from robust.losses import per_image_loss
from robust.models import Classifier
from robust.seeding import derive_seed
from robust.transforms import Param, Params, Transform
from robust.transforms.search import Box, constant_rate, gradient_ascent, worst_of_k
from robust.validation import check_choice, check_images, check_labels, check_number, with_options

MODES = ("random", "worst_of_k", "gradient")
LOSSES = ("ce", "margin")


@dataclass
class NaturalTransformResult:
    """The transformed images ``[N, C, H, W]`` in ``[0, 1]``, the magnitudes ``[N, K]`` that made them,
    and the classifier's loss on them (``None`` in random mode without a classifier)."""

    images: torch.Tensor
    magnitudes: torch.Tensor
    loss: torch.Tensor | None = None


@dataclass(frozen=True)
class NaturalConfig:
    """How a :class:`NaturalTransform` draws, searches and renders.

    ``k``: draws of ``worst_of_k``; ``steps``/``step_size``: signed-gradient steps of ``gradient``,
    each a fraction of every direction's range; ``strength`` scales the realistic ranges;
    ``per_sample``: directions moved per image and draw; ``loss`` (``ce``/``margin``) what the
    classifier-driven modes maximise; ``invert_steps``/``expand_res``: the inversion of images
    without cached codes; ``pixel_residual`` (:meth:`NaturalTransform.transform`) adds back the
    pixel difference between each image and its reconstruction, so magnitude 0 returns the image;
    ``noise_mode``: the generator's; ``swap``: the probability per attribute group that a draw
    resamples the image's token of that group (generators conditioned on attribute tokens: the code
    moves by the difference between a random token's offset and the offset of the token it is
    nearest to in the group's span, :func:`robust.gan.directions.token_codes`; 0 turns it off).
    """

    k: int = 4
    steps: int = 5
    step_size: float = 0.25
    strength: float = 1.0
    per_sample: int = 1
    loss: str = "ce"
    invert_steps: int = 20
    expand_res: int | None = None
    pixel_residual: bool = False
    noise_mode: str = "const"
    swap: float = 0.0

    def __post_init__(self) -> None:
        check_number(self.k, "k", low=1, integer=True)
        check_number(self.steps, "steps", low=1, integer=True)
        check_number(self.step_size, "step_size", low=0, high=1)
        check_number(self.strength, "strength", low=0)
        check_number(self.per_sample, "per_sample", low=1, integer=True)
        check_choice(self.loss, "loss", LOSSES)
        check_number(self.invert_steps, "invert_steps", low=0, integer=True)
        check_number(self.swap, "swap", low=0, high=1)


class NaturalTransform(Transform):
    """A batched, seeded natural transformation along a generator's kept latent directions.

    ``directions``: a :class:`robust.gan.directions.Directions` (only its kept directions are used
    when a selection was made); ``mode``: ``random``, ``worst_of_k`` or ``gradient`` (see
    :meth:`transform`); ``classifier`` (or the one passed per call) drives ``worst_of_k`` and
    ``gradient``; ``encoder`` speeds up the inversion of images without cached codes; ``config``
    (or its fields as ``options``) the rest (:class:`NaturalConfig`).

    As a :class:`robust.transforms.Transform` its parameters are the magnitudes along the kept
    directions (named after them, within the realistic ranges x ``strength``), so strategies,
    testing, the search module and recipes treat it like any other transform: :meth:`apply` edits
    images through their codes (:meth:`with_codes` says where to find them), :meth:`sample` is the
    random mode's draw.
    """

    def __init__(self, G: Generator, directions: Directions, mode: str = "random", *, classifier: Classifier | None = None,
                 encoder: Any = None, config: NaturalConfig | None = None, **options: Any):
        if not isinstance(G, Generator):
            raise InputError("G", "a robust.gan.Generator", type(G).__name__)
        if not isinstance(directions, Directions):
            raise InputError("directions", "a robust.gan.directions.Directions", type(directions).__name__)
        config = with_options(config if config is not None else NaturalConfig(), options)
        self.G = G
        self.directions = directions.kept_directions().to(G.device)
        if self.directions.w_dim != G.w_dim:
            raise InputError("directions", f"vectors of size {G.w_dim} (the generator's w_dim)", self.directions.w_dim)
        self.directions.layer_mask(G.num_ws)
        self.mode = check_choice(mode, "mode", MODES)
        self.classifier = classifier
        self.encoder = encoder
        self.k, self.steps, self.step_size = int(config.k), int(config.steps), float(config.step_size)
        self.strength, self.loss, self.swap = float(config.strength), config.loss, float(config.swap)
        self.per_sample = min(int(config.per_sample), len(self.directions))
        self.invert_steps = int(config.invert_steps)
        self.expand_res = check_expand_res(G, config.expand_res)
        self.pixel_residual = bool(config.pixel_residual)
        self.noise_mode = config.noise_mode
        self.tokens = token_codes(G).to(G.device) if self.swap > 0 else None
        self.name = f"natra:{self.directions.method or 'latent'}"
        low, high = self.bounds("cpu")
        self.params = tuple(Param(name, float(lo), float(hi), 0.0) for name, lo, hi in zip(self.directions.names, low, high))
        self.codes: ImageCodes | None = None

    def __repr__(self) -> str:
        return (f"NaturalTransform(mode={self.mode!r}, directions={len(self.directions)} ({self.directions.method}), "
                f"strength={self.strength:g}, per_sample={self.per_sample}" + (f", swap={self.swap:g})" if self.swap else ")"))

    # -- parameters ----------------------------------------------------------------------------

    def bounds(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest magnitude ``[K]`` of every direction (the realistic ranges x ``strength``)."""
        r = self.directions.ranges.to(device) * self.strength
        return r[:, 0], r[:, 1]

    def draw_magnitudes(self, keys: torch.Tensor, draw: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``draw`` of the random magnitudes: ``([N, K] magnitudes, [N, K] bool mask of the chosen directions)``."""
        n, k = keys.shape[0], len(self.directions)
        scores = noise.uniform(keys, (k,), stream=2 * draw).to(device)
        chosen = torch.zeros(n, k, dtype=torch.bool, device=device)
        chosen.scatter_(1, scores.topk(self.per_sample, dim=1).indices, True)
        u = noise.uniform(keys, (k,), stream=2 * draw + 1).to(device)
        low, high = self.bounds(device)
        return torch.where(chosen, low + u * (high - low), torch.zeros_like(u)), chosen

    def sample(self, seeds: torch.Tensor, *, device: torch.device | str | None = None, stream: int = 0) -> Params:
        """The random mode's draw number ``stream`` from per-image ``seeds``: ``per_sample`` directions
        moved by magnitudes uniform in their ranges, the others at 0."""
        seeds = noise.check_seeds(seeds)
        mags, _ = self.draw_magnitudes(seeds, stream, seeds.device if device is None else device)
        return self.as_params(mags)

    def as_params(self, magnitudes: torch.Tensor) -> Params:
        """Magnitudes ``[N, K]`` as parameters (one ``[N]`` tensor per direction)."""
        return {p.name: magnitudes[:, i] for i, p in enumerate(self.params)}

    def magnitudes(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Parameters as magnitudes ``[N, K]`` (the inverse of :meth:`as_params`)."""
        return torch.stack([params[p.name] for p in self.params], 1)

    def draw_swaps(self, keys: torch.Tensor, draw: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``draw`` of the token swaps: ``([N, G] bool, which groups swap; [N, G] the new tokens)``
        over the attribute groups of :attr:`tokens` (empty without ``swap``)."""
        groups = self.tokens.groups if self.tokens is not None else []
        u = noise.uniform(keys, (max(1, len(groups)), 2), stream=1_000_003 + draw).to(device)
        counts = torch.tensor([len(tokens) for _, tokens, _, _, _ in groups] or [1], device=device)
        on = (u[..., 0] < self.swap)[:, : len(groups)]
        target = (u[..., 1] * counts).long().minimum(counts - 1)[:, : len(groups)]
        return on, target

    def swap_shift(self, ws: torch.Tensor, keys: torch.Tensor, draw: int) -> torch.Tensor | None:
        """The change ``[N, w_dim]`` (added to every W+ layer) that resamples the drawn attribute tokens
        of ``ws``; ``None`` without ``swap``."""
        if self.tokens is None:
            return None
        on, target = self.draw_swaps(keys, draw, ws.device)
        w = ws.mean(1)
        shift = torch.zeros_like(w)
        for g, (_, _, centre, offsets, basis) in enumerate(self.tokens.groups):
            # The token the code is nearest to in the group's subspace is taken for the image's own;
            # the swap adds the difference of the two tokens' offsets (the code's own part stays).
            inside = ((w + shift - centre) @ basis) @ basis.T
            own = torch.cdist(inside, offsets).argmin(1)
            shift = shift + (offsets[target[:, g]] - offsets[own]) * on[:, g, None]
        return shift

    # -- rendering -----------------------------------------------------------------------------

    def render(self, ws: torch.Tensor, magnitudes: torch.Tensor, residual: torch.Tensor | None = None,
               offset: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
        """Images in ``[0, 1]`` of ``ws`` (plus a token-swap ``shift [N, w_dim]``) moved by ``magnitudes
        [N, K]`` (plus the expansion ``residual`` and a pixel ``offset``); differentiable in the magnitudes."""
        if shift is not None:
            ws = ws + shift[:, None]
        images = synthesize(self.G, self.directions.apply(ws, magnitudes), residual, self.expand_res if residual is not None else None,
                            noise_mode=self.noise_mode)
        return images if offset is None else (images + offset).clamp(0, 1)

    # -- the transformation ------------------------------------------------------------------------

    def __call__(self, images: torch.Tensor, labels: Any = None, **kwargs: Any) -> torch.Tensor:
        """The transformed images of :meth:`transform`'s mode (``labels`` and its keywords); with a
        parameter dict, or ``severity=``/``seeds=``, the :class:`robust.transforms.Transform` call."""
        if isinstance(labels, Mapping) or "severity" in kwargs or "seeds" in kwargs:
            return super().__call__(images, labels, **kwargs)
        return self.transform(images, labels, **kwargs).images

    # -- as a Transform: editing given images by given magnitudes --------------------------------

    def with_codes(self, codes: CodeSet | None = None, data: ImageSet | None = None, seed: int = 0) -> NaturalTransform:
        """A copy that finds the codes of the images it edits in ``codes`` (cached codes of ``data``'s
        images), else inverts each new image on its own, seeded by ``seed`` (see :class:`ImageCodes`)."""
        bound = copy.copy(self)
        bound.codes = ImageCodes(self, codes, data, seed)
        return bound

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """:meth:`edit` by the magnitudes in ``params`` (one ``[N]`` tensor per direction)."""
        return self.edit(images, self.magnitudes(params))

    def edit(self, images: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
        """``images [N, C, H, W]`` moved by ``magnitudes [N, K]`` through their codes, in ``[0, 1]``.

        Each image's code is moved and re-rendered, and the pixel difference between the image and
        its unedited reconstruction is added back, so zero magnitudes return the image itself (without
        a gradient to track, such images are not rendered at all) and only the edit changes it.
        Differentiable in the magnitudes.
        """
        G = self.G
        images = check_images(images, "images", channels=G.img_channels, size=(G.img_resolution, G.img_resolution))
        if magnitudes.shape != (images.shape[0], len(self.directions)):
            raise InputError(f"{self.name} magnitudes", f"a tensor [{images.shape[0]}, {len(self.directions)}]", tuple(magnitudes.shape))
        tracked = torch.is_grad_enabled() and magnitudes.requires_grad
        # Unmoved images are returned as they are, unless the magnitudes' gradient is wanted (it is not zero at 0).
        moving = (magnitudes.detach().cpu() != 0).any(1) | tracked
        moving = moving.nonzero().squeeze(1)
        if moving.numel() == 0:
            return images.clone()
        rows = moving.to(images.device)
        sub = images[rows]
        if self.codes is None:
            self.codes = ImageCodes(self)
        ws, residual = self.codes(sub.detach())
        mags = magnitudes[moving.to(magnitudes.device)].to(G.device, torch.float32)
        with torch.no_grad():
            base = self.render(ws, torch.zeros_like(mags), residual)
        with torch.set_grad_enabled(tracked):
            edited = self.render(ws, mags, residual)
        return images.index_copy(0, rows, (sub + (edited - base).to(sub.device, sub.dtype)).clamp(0, 1))

    def transform(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, ws: torch.Tensor | None = None,
                  residual: torch.Tensor | None = None, classifier: Classifier | None = None, seed: int = 0,
                  sample_ids: torch.Tensor | None = None) -> NaturalTransformResult:
        """Transform ``images [N, C, H, W]`` (labels needed by the classifier-driven modes).

        ``ws``/``residual``: the images' cached codes (:meth:`robust.gan.codes_cache.CodeSet.batch`);
        inverted on the fly when ``ws`` is None. ``sample_ids`` ``[N]`` (e.g. dataset indices) key
        each image's random draws together with ``seed``.
        """
        G = self.G
        images = check_images(images, "images", channels=G.img_channels, size=(G.img_resolution, G.img_resolution))
        n, home, device = images.shape[0], images.device, G.device
        clf = classifier or self.classifier
        if self.mode != "random":
            if clf is None:
                raise InputError("classifier", f"a classifier for mode {self.mode!r}", None)
            if self.mode == "gradient" and not clf.has_gradients:
                raise GradientUnavailableError(f"{clf.name} has no gradients (ONNX): use mode 'random' or 'worst_of_k'")
        if labels is not None:
            labels = check_labels(labels, n, clf.num_classes if clf is not None else None).to(device)
        elif clf is not None and self.mode != "random":
            raise InputError("labels", "the images' labels (the classifier-driven modes maximise its loss)", None)
        ids = torch.arange(n, dtype=torch.int64) if sample_ids is None else torch.as_tensor(sample_ids).to(torch.int64).cpu()
        if ids.shape != (n,):
            raise InputError("sample_ids", f"{n} integer ids", tuple(ids.shape))
        keys = ids + derive_seed(seed, "natra", self.directions.method) % (1 << 40)
        x = images.to(device, torch.float32)
        if ws is None:
            inv = invert_batch(G, x, encoder=self.encoder, steps=self.invert_steps, expand_res=self.expand_res, seed=seed)
            ws, residual = inv.ws, inv.residual
        ws = check_ws(G, ws).to(device, torch.float32)
        if ws.shape[0] != n:
            raise InputError("ws", f"{n} codes (one per image)", ws.shape[0])
        if residual is not None:
            if self.expand_res is None:
                raise InputError("residual", "None (this transform has no expand_res)", tuple(residual.shape))
            residual = residual.to(device, torch.float32)
        offset = None
        if self.pixel_residual:
            with torch.no_grad():
                offset = x - synthesize(G, ws, residual, self.expand_res if residual is not None else None, noise_mode=self.noise_mode)
        if self.mode == "random":
            mags, _ = self.draw_magnitudes(keys, 0, device)
            with torch.no_grad():
                out = self.render(ws, mags, residual, offset, self.swap_shift(ws, keys, 0))
            loss = None
            if clf is not None and labels is not None:
                with torch.no_grad():
                    loss = per_image_loss(self.loss, clf.forward(out, check=False).float(), labels)
            return NaturalTransformResult(out.to(home), mags.to(home), loss.to(home) if loss is not None else None)
        if self.mode == "worst_of_k":
            return self._worst_of_k(clf, ws, residual, offset, labels, keys, home)
        return self._gradient(clf, ws, residual, offset, labels, keys, home)

    def _score(self, clf: Classifier, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return per_image_loss(self.loss, clf.forward(images, check=False).float(), labels)

    @torch.no_grad()
    def _worst_of_k(self, clf: Classifier, ws: torch.Tensor, residual: torch.Tensor | None, offset: torch.Tensor | None,
                    labels: torch.Tensor, keys: torch.Tensor, home: torch.device) -> NaturalTransformResult:
        def candidate(draw: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            mags, _ = self.draw_magnitudes(keys, draw, ws.device)
            images = self.render(ws, mags, residual, offset, self.swap_shift(ws, keys, draw))
            return self._score(clf, images, labels), {"x": mags, "images": images}

        worst = worst_of_k(candidate, self.k)
        return NaturalTransformResult(worst["images"].to(home), worst["x"].to(home), worst.loss.to(home))

    def _gradient(self, clf: Classifier, ws: torch.Tensor, residual: torch.Tensor | None, offset: torch.Tensor | None,
                  labels: torch.Tensor, keys: torch.Tensor, home: torch.device) -> NaturalTransformResult:
        low, high = self.bounds(ws.device)
        mags, chosen = self.draw_magnitudes(keys, 0, ws.device)
        shift = self.swap_shift(ws, keys, 0)

        def score(m: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            images = self.render(ws, m, residual, offset, shift)
            return self._score(clf, images, labels), {"images": images}

        # Steps of a fixed fraction of each range; only the drawn directions move.
        worst = gradient_ascent(score, mags, steps=self.steps, rate=constant_rate(self.step_size * (high - low)),
                                box=Box(low, high, chosen.float()))
        return NaturalTransformResult(worst["images"].to(home), worst["x"].to(home), worst.loss.to(home))


class ImageCodes:
    """The W+ codes of the images a :class:`NaturalTransform` edits, found by the images' content.

    Images of ``data`` take their rows of ``codes`` (a :class:`robust.gan.codes_cache.CodeSet` of
    that dataset, e.g. from ``load_or_invert``); any other image is inverted on its own the first
    time it is seen (with the transform's encoder, ``invert_steps`` and ``expand_res``, seeded by
    ``seed``) and its code remembered. One image at a time keeps each code independent of the
    batch it came in, so the same image is edited the same way in any batch.
    """

    def __init__(self, natural: NaturalTransform, codes: CodeSet | None = None, data: ImageSet | None = None, seed: int = 0):
        self.natural = natural
        self.seed = int(check_number(seed, "seed", low=0, integer=True))
        self._known: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._stats: Any = None
        if (codes is None) != (data is None):
            raise InputError("codes/data", "both (codes of data's images) or neither", "only codes" if codes is not None else "only data")
        if codes is None or data is None:
            return
        if not isinstance(codes, CodeSet):
            raise InputError("codes", "a robust.gan.codes_cache.CodeSet", type(codes).__name__)
        if len(codes.ws) != len(data):
            raise InputError("codes", f"codes of the {len(data)} images of {data.name}", f"{len(codes.ws)} codes")
        if codes.expand_res != natural.expand_res:
            raise InputError("codes", f"codes expanded at {natural.expand_res} (the NaturalTransform's expand_res)", codes.expand_res)
        ws = check_ws(natural.G, codes.ws, "codes ws").detach().cpu()
        residual = codes.residual.detach().cpu() if codes.residual is not None else None
        for i in range(len(data)):
            self._known.setdefault(_image_key(data.images[i]), (ws[i], residual[i] if residual is not None else None))

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
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
        nt = self.natural
        if self._stats is None:
            # The statistics invert_batch would compute for this seed, computed once for every image.
            self._stats = latent_stats(nt.G, seed=derive_seed(self.seed, "stats") % (1 << 31))
        out = invert_batch(nt.G, image[None].to(nt.G.device, torch.float32), encoder=nt.encoder, steps=nt.invert_steps,
                           expand_res=nt.expand_res, seed=self.seed, stats=self._stats, noise_mode=nt.noise_mode)
        return out.ws[0].detach().cpu(), out.residual[0].detach().cpu() if out.residual is not None else None


def _image_key(image: torch.Tensor) -> str:
    return fingerprint_tensors(image.detach().float())
