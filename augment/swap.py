"""NaTra with a structure/appearance model: each image keeps its structure code and takes (part of the
way) the appearance code of a training image of another class, and may move along unsupervised
appearance directions.

:class:`AppearanceSwap` is a :class:`robust.transforms.Transform` (parameters: the donor, a seed;
the swap strength, identity 0; a magnitude per appearance direction); :meth:`AppearanceSwap.transform`
runs the modes of :class:`augment.natra.NaturalTransform` (random, worst_of_k, gradient). The donors
form a :class:`DonorBank`: the training images' appearance codes and class labels, nothing else.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from augment.natra import LOSSES, MODES
from robust import noise
from robust.data import ImageSet
from robust.errors import GradientUnavailableError, InputError
from robust.gan.codes_cache import SwapCodes
from robust.gan.directions import Directions, code_dim
from robust.gan.swapping import SwapAutoencoder
from robust.io import fingerprint_tensors
from robust.losses import per_image_loss
from robust.models import Classifier
from robust.seeding import derive_seed
from robust.transforms import Param, Params, Transform
from robust.transforms.search import Box, constant_rate, gradient_ascent, worst_of_k
from robust.validation import check_choice, check_images, check_labels, check_number, with_options

# Streams of one draw j: 3j the donor seed, 3j + 1 the strength and magnitudes, 3j + 2 the chosen directions.
_STREAMS = 3


class DonorBank:
    """Donor appearance codes ``[M, A]`` with their class labels ``[M]`` (e.g. the training split's).

    :meth:`pick` maps a donor seed to a donor of another class than the image's (any donor when the
    image's label is unknown, ``-1``), uniformly, from the seed alone.
    """

    def __init__(self, appearance: torch.Tensor, labels: torch.Tensor):
        if not isinstance(appearance, torch.Tensor) or appearance.dim() != 2 or appearance.shape[0] < 2:
            raise InputError("donor appearance", "codes [M >= 2, A]", getattr(appearance, "shape", type(appearance).__name__))
        labels = check_labels(labels, appearance.shape[0], None, "donor labels").cpu()
        if int(labels.unique().numel()) < 2:
            raise InputError("donor labels", "donors of at least two classes (each image takes another class's appearance)",
                             f"only class {int(labels[0])}")
        self.appearance = appearance.detach().float()
        self.labels = labels
        self.order = torch.argsort(labels, stable=True)
        classes = int(labels.max()) + 1
        self.counts = torch.bincount(labels, minlength=classes)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    @classmethod
    def from_codes(cls, codes: SwapCodes, data: ImageSet) -> DonorBank:
        """The appearance codes of ``data``'s images (``codes``, in data order) with their labels."""
        if len(codes) != len(data):
            raise InputError("donor codes", f"codes of the {len(data)} images of {data.name}", f"{len(codes)} codes")
        return cls(codes.appearance, data.labels)

    def __len__(self) -> int:
        return int(self.appearance.shape[0])

    def pick(self, seeds: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Donor indices ``[N]`` (CPU) for donor ``seeds [N]``: uniform over the donors whose class differs
        from ``labels [N]`` (``-1`` or ``None``: any donor)."""
        seeds = noise.check_seeds(seeds).cpu()
        u = noise.uniform(seeds, (1,), stream=0, dtype=torch.float64)[:, 0]
        m = len(self)
        if labels is None:
            return (u * m).long().clamp_max(m - 1)
        labels = torch.as_tensor(labels).long().cpu()
        known = (labels >= 0) & (labels < self.counts.shape[0])
        own = torch.where(known, self.counts[labels.clamp(0, self.counts.shape[0] - 1)], torch.zeros_like(labels))
        start = torch.where(known, self.starts[labels.clamp(0, self.counts.shape[0] - 1)], torch.full_like(labels, m))
        j = (u * (m - own)).long().minimum(m - own - 1)
        # Position j among the donors of the other classes: those before the own class's block, then those after it.
        return self.order[torch.where(j < start, j, j + own)]


@dataclass(frozen=True)
class SwapConfig:
    """How an :class:`AppearanceSwap` draws, searches and renders.

    ``strength``: the largest swap strength ``t`` in ``[0, 1]`` (appearance ``(1 - t) a + t a_donor``;
    0 turns swapping off); the random draws of ``t`` are uniform in ``[min_strength, strength]``.
    ``direction_scale`` scales the appearance directions' ranges; ``per_sample`` directions move
    per image and draw. ``k``: draws of ``worst_of_k`` (``k`` donors), and with ``mix`` the donors
    whose convex mix ``gradient`` also ascends; ``steps``/``step_size``: its signed-gradient steps,
    each a fraction of every range; ``loss`` (``ce``/``margin``) what the classifier-driven modes
    maximise. ``pixel_residual`` adds back each image's difference from its reconstruction
    ``x - decode(encode(x))``; off, strength 0 gives the reconstruction (measured in the README:
    the residual carries the image's own colours back and shortens the reach).
    """

    k: int = 4
    steps: int = 5
    step_size: float = 0.25
    strength: float = 1.0
    min_strength: float = 0.0
    mix: bool = False
    direction_scale: float = 1.0
    per_sample: int = 1
    loss: str = "ce"
    pixel_residual: bool = False

    def __post_init__(self) -> None:
        check_number(self.k, "k", low=1, integer=True)
        check_number(self.steps, "steps", low=1, integer=True)
        check_number(self.step_size, "step_size", low=0, high=1)
        check_number(self.strength, "strength", low=0, high=1)
        check_number(self.min_strength, "min_strength", low=0, high=self.strength)
        check_number(self.direction_scale, "direction_scale", low=0)
        check_number(self.per_sample, "per_sample", low=1, integer=True)
        check_choice(self.loss, "loss", LOSSES)


@dataclass
class SwapResult:
    """The transformed images ``[N, C, H, W]`` in ``[0, 1]``, the parameters that made them (``mix``:
    the donor weights ``[N, k]`` of a gradient search over mixes), the donors' bank indices ``[N]``
    (draw 0's under ``mix``; -1 without a bank) and the classifier's loss (``None`` in random mode
    without a classifier)."""

    images: torch.Tensor
    params: Params
    donors: torch.Tensor
    loss: torch.Tensor | None = None
    mix: torch.Tensor | None = None


class AppearanceSwap(Transform):
    """A batched, seeded natural transformation through a structure/appearance model.

    ``model``: a :class:`robust.gan.swapping.SwapAutoencoder`; ``bank``: the :class:`DonorBank`
    (None: no swaps); ``directions``: appearance directions
    (:func:`robust.gan.directions.appearance_directions`; only the kept ones are used); ``mode``:
    ``random``, ``worst_of_k`` or ``gradient`` (:meth:`transform`); ``classifier`` (or the one passed
    per call) drives the searches; ``config`` or its fields (:class:`SwapConfig`).

    As a Transform its parameters are ``donor`` (a seed, mapped to a donor by :meth:`DonorBank.pick`),
    ``strength`` (in ``[0, config.strength]``) and one magnitude per direction; :meth:`apply`
    encodes the images (or finds their cached codes, :meth:`with_codes`) and renders the edit.
    """

    def __init__(self, model: SwapAutoencoder, bank: DonorBank | None = None, mode: str = "random", *,
                 directions: Directions | None = None, classifier: Classifier | None = None, config: SwapConfig | None = None,
                 **options: Any):
        if not isinstance(model, SwapAutoencoder):
            raise InputError("model", "a robust.gan.swapping.SwapAutoencoder", type(model).__name__)
        if bank is not None and not isinstance(bank, DonorBank):
            raise InputError("bank", "an augment.swap.DonorBank", type(bank).__name__)
        config = with_options(config if config is not None else SwapConfig(), options)
        self.model, self.mode, self.classifier = model, check_choice(mode, "mode", MODES), classifier
        self.config = config
        self.bank = bank if config.strength > 0 else None
        if self.bank is not None and self.bank.appearance.shape[1] != code_dim(model):
            raise InputError("bank", f"appearance codes of size {code_dim(model)}", self.bank.appearance.shape[1])
        self.directions = None
        if directions is not None:
            if not isinstance(directions, Directions):
                raise InputError("directions", "a robust.gan.directions.Directions", type(directions).__name__)
            self.directions = directions.kept_directions().to(model.device)
            if self.directions.w_dim != code_dim(model):
                raise InputError("directions", f"appearance directions of size {code_dim(model)}", self.directions.w_dim)
        if self.bank is None and self.directions is None:
            raise InputError("bank/directions", "a donor bank (with strength > 0) or appearance directions", "neither")
        swap = (Param("donor", 0, 0, kind="seed"), Param("strength", 0.0, float(config.strength))) if self.bank is not None else ()
        low, high = self.direction_bounds("cpu")
        names = self.directions.names if self.directions is not None else []
        self.params = (*swap, *(Param(n, float(lo), float(hi)) for n, lo, hi in zip(names, low, high)))
        method = self.directions.method if self.directions is not None else ""
        self.name = ("swap" if self.bank is not None else "natra") + (f":{method}" if method else "")
        self._known: dict[str, int] = {}
        self._codes: SwapCodes | None = None
        self._labels: torch.Tensor | None = None

    def __repr__(self) -> str:
        parts = [f"mode={self.mode!r}"]
        if self.bank is not None:
            parts.append(f"donors={len(self.bank)}, strength={self.config.strength:g}")
        if self.directions is not None:
            parts.append(f"directions={len(self.directions)} ({self.directions.method})")
        return f"AppearanceSwap({', '.join(parts)})"

    @property
    def k_directions(self) -> int:
        return len(self.directions) if self.directions is not None else 0

    def direction_bounds(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest magnitude ``[K]`` of every direction (its range x ``direction_scale``)."""
        if self.directions is None:
            return torch.zeros(0, device=device), torch.zeros(0, device=device)
        r = self.directions.ranges.to(device) * self.config.direction_scale
        return r[:, 0], r[:, 1]

    # -- draws and parameters ----------------------------------------------------------------------

    def draw(self, keys: torch.Tensor, j: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``j`` from per-image ``keys``: ``(donor seeds [N], strengths [N], magnitudes [N, K], chosen [N, K] bool)``."""
        cfg, k = self.config, self.k_directions
        donor = noise.subseeds(keys, _STREAMS * j)
        u = noise.uniform(keys, (1 + k,), stream=_STREAMS * j + 1).to(device)
        t = (cfg.min_strength + u[:, 0] * (cfg.strength - cfg.min_strength)) if self.bank is not None else torch.zeros_like(u[:, 0])
        chosen = torch.zeros(keys.shape[0], k, dtype=torch.bool, device=device)
        if k:
            scores = noise.uniform(keys, (k,), stream=_STREAMS * j + 2).to(device)
            chosen.scatter_(1, scores.topk(min(cfg.per_sample, k), dim=1).indices, True)
        low, high = self.direction_bounds(device)
        mags = torch.where(chosen, low + u[:, 1:] * (high - low), torch.zeros_like(u[:, 1:]))
        return donor.to(device), t, mags, chosen

    def sample(self, seeds: torch.Tensor, *, device: torch.device | str | None = None, stream: int = 0) -> Params:
        """The random mode's draw number ``stream`` from per-image ``seeds``."""
        seeds = noise.check_seeds(seeds)
        donor, t, mags, _ = self.draw(seeds, stream, seeds.device if device is None else device)
        return self.as_params(donor, t, mags)

    def as_params(self, donor: torch.Tensor, strength: torch.Tensor, magnitudes: torch.Tensor) -> Params:
        out: Params = {"donor": donor, "strength": strength} if self.bank is not None else {}
        out.update({name: magnitudes[:, i] for i, name in enumerate(self.directions.names if self.directions is not None else [])})
        return out

    def split_params(self, params: Mapping[str, torch.Tensor], n: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(donor seeds [N], strengths [N], magnitudes [N, K])`` of a parameter dict (the inverse of :meth:`as_params`)."""
        names = self.directions.names if self.directions is not None else []
        mags = torch.stack([params[name].to(device, torch.float32) for name in names], 1) if names else torch.zeros(n, 0, device=device)
        if self.bank is None:
            return torch.zeros(n, dtype=torch.int64), torch.zeros(n, device=device), mags
        return params["donor"].to(torch.int64).cpu(), params["strength"].to(device, torch.float32), mags

    # -- codes and rendering ---------------------------------------------------------------------------

    def with_codes(self, codes: SwapCodes | None = None, data: ImageSet | None = None) -> AppearanceSwap:
        """A copy that knows ``data``'s images: their cached ``codes`` (encoded now when None) and their
        labels (so :meth:`apply` gives them donors of other classes). Other images are encoded as they come."""
        bound = copy.copy(self)
        if data is None:
            if codes is not None:
                raise InputError("codes/data", "data with the codes (codes of data's images)", "only codes")
            bound._known, bound._codes, bound._labels = {}, None, None
            return bound
        if codes is None:
            from robust.gan.codes_cache import encode_images

            codes = SwapCodes(*encode_images(self.model, data.images))
        if len(codes) != len(data):
            raise InputError("codes", f"codes of the {len(data)} images of {data.name}", f"{len(codes)} codes")
        bound._known = {}
        for i in range(len(data)):
            bound._known.setdefault(fingerprint_tensors(data.images[i].float()), i)
        bound._codes, bound._labels = codes, data.labels.cpu()
        return bound

    def codes_of(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(structure, appearance, labels)`` of ``images`` on the model's device: cached codes and labels
        of known images, the others encoded (label ``-1``)."""
        rows = [self._known.get(fingerprint_tensors(x.detach().float())) for x in images] if self._known else [None] * len(images)
        hits = torch.tensor([i for i, r in enumerate(rows) if r is not None], dtype=torch.long)
        index = torch.tensor([r for r in rows if r is not None], dtype=torch.long)
        labels = torch.full((len(images),), -1, dtype=torch.int64)
        if self._codes is not None and len(hits) == len(images):
            structure, appearance = self._codes.batch(index, self.model.device)
        else:
            with torch.no_grad():
                structure, appearance = self.model.encode(images.detach())
            if len(hits):
                s, a = self._codes.batch(index, structure.device)
                structure[hits], appearance[hits] = s.to(structure.dtype), a.to(appearance.dtype)
        if len(hits):
            labels[hits] = self._labels[index]
        return structure.float(), appearance.float(), labels

    def donor_codes(self, seeds: torch.Tensor, labels: torch.Tensor | None, own: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(donor appearance [N, A], bank indices [N])`` for donor ``seeds``; without a bank the images' ``own`` codes (index -1)."""
        if self.bank is None:
            return own, torch.full((own.shape[0],), -1, dtype=torch.int64)
        index = self.bank.pick(seeds, labels)
        return self.bank.appearance[index].to(own.device, own.dtype), index

    def render(self, structure: torch.Tensor, own: torch.Tensor, donor: torch.Tensor, strength: torch.Tensor,
               magnitudes: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Images of ``structure`` with appearance ``lerp(own, donor, strength) + magnitudes @ directions`` (plus a
        pixel ``offset``), in ``[0, 1]``; differentiable in the donor code, the strength and the magnitudes."""
        appearance = torch.lerp(own, donor, strength.to(own.dtype)[:, None])
        if self.directions is not None:
            appearance = appearance + magnitudes.to(own.dtype) @ self.directions.vectors.to(own.device, own.dtype)
        images = self.model.decode(structure, appearance)
        return images if offset is None else (images + offset).clamp(0, 1)

    def offset(self, images: torch.Tensor, structure: torch.Tensor, own: torch.Tensor) -> torch.Tensor | None:
        """The pixel residual ``images - decode(structure, own)`` (None without ``pixel_residual``)."""
        if not self.config.pixel_residual:
            return None
        with torch.no_grad():
            return images.to(own.device, torch.float32) - self.model.decode(structure, own)

    # -- as a Transform ---------------------------------------------------------------------------------

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """``images`` edited by ``params`` (donor seeds, strengths, magnitudes), in ``[0, 1]``; differentiable
        in the strengths and magnitudes. With ``pixel_residual``, images at the identity come back as they are."""
        c = self.model.config
        images = check_images(images, "images", channels=c.img_channels, size=(c.resolution, c.resolution))
        n, device = images.shape[0], self.model.device
        donor_seeds, t, mags = self.split_params(params, n, device)
        tracked = torch.is_grad_enabled() and (t.requires_grad or mags.requires_grad)
        if self.config.pixel_residual and not tracked and not bool((t != 0).any() or (mags != 0).any()):
            return images.clone()
        structure, own, labels = self.codes_of(images)
        donor, _ = self.donor_codes(donor_seeds, labels, own)
        with torch.set_grad_enabled(tracked):
            out = self.render(structure, own, donor, t, mags, self.offset(images, structure, own))
        return out.to(images.device, images.dtype)

    def __call__(self, images: torch.Tensor, labels: Any = None, **kwargs: Any) -> torch.Tensor:
        """The transformed images of :meth:`transform`'s mode; with a parameter dict, or ``severity=``/``seeds=``,
        the :class:`robust.transforms.Transform` call."""
        if isinstance(labels, Mapping) or "severity" in kwargs or "seeds" in kwargs:
            return super().__call__(images, labels, **kwargs)
        return self.transform(images, labels, **kwargs).images

    # -- the modes ------------------------------------------------------------------------------------

    def transform(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, codes: tuple[torch.Tensor, torch.Tensor] | None = None,
                  classifier: Classifier | None = None, seed: int = 0, sample_ids: torch.Tensor | None = None) -> SwapResult:
        """Transform ``images [N, C, H, W]`` in the transform's mode.

        ``labels``: the images' classes (donors are drawn from the other classes; needed by the
        classifier-driven modes); ``codes``: their cached ``(structure, appearance)`` codes (else
        encoded now); ``sample_ids [N]`` (e.g. dataset indices) key each image's draws with ``seed``,
        so an image's transformation does not depend on its batch.
        """
        c = self.model.config
        images = check_images(images, "images", channels=c.img_channels, size=(c.resolution, c.resolution))
        n, home, device = images.shape[0], images.device, self.model.device
        clf = classifier or self.classifier
        self._check_classifier(clf, labels)
        if labels is not None:
            labels = check_labels(labels, n, clf.num_classes if clf is not None else None).cpu()
        ids = torch.arange(n, dtype=torch.int64) if sample_ids is None else torch.as_tensor(sample_ids).to(torch.int64).cpu()
        if ids.shape != (n,):
            raise InputError("sample_ids", f"{n} integer ids", tuple(ids.shape))
        keys = ids + derive_seed(seed, "natra-swap") % (1 << 40)
        if codes is None:
            structure, own, known = self.codes_of(images)
            labels = labels if labels is not None else known
        else:
            structure, own = (t.to(device, torch.float32) for t in codes)
            if structure.shape[0] != n or own.shape[0] != n:
                raise InputError("codes", f"(structure, appearance) codes of the {n} images", (tuple(structure.shape), tuple(own.shape)))
        offset = self.offset(images, structure, own)
        y = labels.to(device) if labels is not None else None
        args = (clf, structure, own, offset, labels, y, keys)
        result = self._random(*args) if self.mode == "random" else self._worst_of_k(*args) if self.mode == "worst_of_k" \
            else self._gradient(*args)
        result.images = result.images.to(home)
        return result

    def _check_classifier(self, clf: Classifier | None, labels: torch.Tensor | None) -> None:
        if self.mode == "random":
            return
        if clf is None:
            raise InputError("classifier", f"a classifier for mode {self.mode!r}", None)
        if self.mode == "gradient" and not clf.has_gradients:
            raise GradientUnavailableError(f"{clf.name} has no gradients (ONNX): use mode 'random' or 'worst_of_k'")
        if labels is None:
            raise InputError("labels", "the images' labels (the classifier-driven modes maximise its loss)", None)

    def _score(self, clf: Classifier, images: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_image_loss(self.config.loss, clf.forward(images, check=False).float(), y)

    @torch.no_grad()
    def _candidate(self, j: int, structure: torch.Tensor, own: torch.Tensor, offset: torch.Tensor | None, labels: torch.Tensor | None,
                   keys: torch.Tensor) -> dict[str, torch.Tensor]:
        donor_seeds, t, mags, _ = self.draw(keys, j, own.device)
        donor, index = self.donor_codes(donor_seeds, labels, own)
        images = self.render(structure, own, donor, t, mags, offset)
        return {"images": images, "donor": donor_seeds, "strength": t, "mags": mags, "index": index}

    def _result(self, values: Mapping[str, torch.Tensor], loss: torch.Tensor | None, mix: torch.Tensor | None = None) -> SwapResult:
        params = self.as_params(values["donor"].cpu(), values["strength"].cpu(), values["mags"].cpu())
        return SwapResult(values["images"], params, values["index"].cpu(), loss.cpu() if loss is not None else None,
                          mix.cpu() if mix is not None else None)

    def _random(self, clf: Classifier | None, structure: torch.Tensor, own: torch.Tensor, offset: torch.Tensor | None,
                labels: torch.Tensor | None, y: torch.Tensor | None, keys: torch.Tensor) -> SwapResult:
        values = self._candidate(0, structure, own, offset, labels, keys)
        loss = None
        if clf is not None and y is not None:
            with torch.no_grad():
                loss = self._score(clf, values["images"], y)
        return self._result(values, loss)

    def _worst_of_k(self, clf: Classifier, structure: torch.Tensor, own: torch.Tensor, offset: torch.Tensor | None,
                    labels: torch.Tensor | None, y: torch.Tensor, keys: torch.Tensor) -> SwapResult:
        def candidate(j: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            values = self._candidate(j, structure, own, offset, labels, keys)
            with torch.no_grad():
                return self._score(clf, values["images"], y), values

        worst = worst_of_k(candidate, self.config.k)
        return self._result(worst.values, worst.loss)

    def _gradient(self, clf: Classifier, structure: torch.Tensor, own: torch.Tensor, offset: torch.Tensor | None,
                  labels: torch.Tensor | None, y: torch.Tensor, keys: torch.Tensor) -> SwapResult:
        """Signed-gradient ascent from draw 0 on the strength and the drawn directions' magnitudes (and, with
        ``mix``, on the weights of a convex mix of the ``k`` draws' donors, starting at draw 0's donor)."""
        cfg, k, device = self.config, self.k_directions, own.device
        donor_seeds, t0, mags0, chosen = self.draw(keys, 0, device)
        draws = [self.donor_codes(donor_seeds, labels, own)]
        if cfg.mix and self.bank is not None:
            draws += [self.donor_codes(self.draw(keys, j, device)[0], labels, own) for j in range(1, cfg.k)]
        bank = torch.stack([code for code, _ in draws], 1)
        m = bank.shape[1] if len(draws) > 1 else 0
        low_d, high_d = self.direction_bounds(device)
        strength_high = cfg.strength if self.bank is not None else 0.0
        low = torch.cat([torch.zeros(1, device=device), low_d, torch.zeros(m, device=device)])
        high = torch.cat([torch.full((1,), float(strength_high), device=device), high_d, torch.ones(m, device=device)])
        mask = torch.cat([torch.ones(len(own), 1, device=device), chosen.float(), torch.ones(len(own), m, device=device)], 1)
        weights0 = torch.nn.functional.one_hot(torch.zeros(len(own), dtype=torch.long), m).float().to(device) if m else own[:, :0]
        start = torch.cat([t0[:, None], mags0, weights0], 1)

        def score(x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            donor = bank[:, 0] if not m else _convex(x[:, 1 + k:], bank)
            images = self.render(structure, own, donor, x[:, 0], x[:, 1: 1 + k], offset)
            return self._score(clf, images, y), {"images": images}

        worst = gradient_ascent(score, start, steps=cfg.steps, rate=constant_rate(cfg.step_size * (high - low)), box=Box(low, high, mask))
        x = worst["x"]
        values = {"images": worst["images"], "donor": donor_seeds, "strength": x[:, 0], "mags": x[:, 1: 1 + k], "index": draws[0][1]}
        return self._result(values, worst.loss, _normalised(x[:, 1 + k:]) if m else None)


def _normalised(weights: torch.Tensor) -> torch.Tensor:
    """Non-negative weights ``[N, k]`` scaled to sum to one (uniform where they are all zero)."""
    total = weights.sum(1, keepdim=True)
    return torch.where(total > 0, weights / total.clamp_min(1e-12), torch.full_like(weights, 1.0 / weights.shape[1]))


def _convex(weights: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The convex mix ``[N, A]`` of ``codes [N, k, A]`` with ``weights [N, k]`` (normalised)."""
    return (_normalised(weights)[:, :, None] * codes).sum(1)

