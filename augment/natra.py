"""NaTra: natural transformations made of a generator's class-independent latent directions.

:class:`NaturalTransform` moves images (through their W+ codes, cached or inverted on the fly)
along kept directions (:mod:`robust.gan.directions`) and re-renders them, adding back the
inversion residual when the codes are expanded. The magnitudes are, per image, the three modes of
model-based robust training:

* ``random``: ``per_sample`` directions chosen at random, each with a magnitude uniform in its
  realistic range (scaled by ``strength``);
* ``worst_of_k``: ``k`` such draws, keeping the one with the highest loss of the classifier;
* ``gradient``: the random draw, then ``steps`` signed-gradient ascent steps on the classifier's
  loss over the chosen directions' magnitudes, projected into the range; the worst iterate is kept.

With ``swap`` > 0 (generators conditioned on attribute tokens besides the class) each draw also
resamples the image's attribute tokens: for every attribute group, with probability ``swap``, the
code moves by the difference between a random token's offset and the offset of the token it is
nearest to in the span of the group's offsets (:func:`robust.gan.directions.token_codes`). The
image gets that token's look (texture, fill, ...) without the transform being told which token it had.

Every draw comes from counter-based noise keyed by ``seed`` and each image's id, so an image's
transformation does not depend on the batch it is in. Usage in a training loop::

    codes = robust.gan.codes_cache.load_or_invert(G, train_set, expand_res=16)
    nt = NaturalTransform(G, directions, mode="gradient", expand_res=16)
    ws, residual = codes.batch(batch_indices, device)
    x_aug = nt(x, y, ws=ws, residual=residual, classifier=clf, seed=step, sample_ids=batch_indices)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from robust import noise
from robust.errors import GradientUnavailableError, InputError
from robust.gan.directions import Directions, token_codes
from robust.gan.inversion import invert_batch
from robust.gan.latent import check_expand_res, check_ws, synthesize
from robust.gan.networks import Generator
from robust.models import Classifier
from robust.seeding import derive_seed
from robust.validation import check_choice, check_images, check_labels, check_number

MODES = ("random", "worst_of_k", "gradient")
LOSSES = ("ce", "margin")


@dataclass
class NaturalTransformResult:
    """The transformed images ``[N, C, H, W]`` in ``[0, 1]``, the magnitudes ``[N, K]`` that made them,
    and the classifier's loss on them (``None`` in random mode without a classifier)."""

    images: torch.Tensor
    magnitudes: torch.Tensor
    loss: torch.Tensor | None = None


def per_image_loss(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``ce`` (cross-entropy) or ``margin`` (best other logit minus the true one), per image."""
    if name == "ce":
        return F.cross_entropy(logits, labels, reduction="none")
    true = logits.gather(1, labels[:, None]).squeeze(1)
    return logits.scatter(1, labels[:, None], float("-inf")).amax(1) - true


class NaturalTransform:
    """A batched, seeded natural transformation along a generator's kept latent directions.

    ``directions``: a :class:`robust.gan.directions.Directions` (only its kept directions are used
    when a selection was made). ``strength`` scales the realistic ranges. ``classifier`` (or the one
    passed per call) is needed by ``worst_of_k`` and ``gradient``. ``step_size`` is a fraction of
    each direction's range per gradient step. Without cached codes, images are inverted on the fly
    with ``encoder`` and ``invert_steps`` shifting steps (and ``expand_res``). ``pixel_residual``
    adds back the pixel difference between each image and its reconstruction, so magnitude 0
    returns the image exactly. ``swap``: the probability per attribute group that a draw resamples
    the image's token of that group (see the module notes; 0 turns it off).
    """

    def __init__(self, G: Generator, directions: Directions, mode: str = "random", *, classifier: Classifier | None = None,
                 k: int = 4, steps: int = 5, step_size: float = 0.25, strength: float = 1.0, per_sample: int = 1,
                 loss: str = "ce", encoder: Any = None, invert_steps: int = 20, expand_res: int | None = None,
                 pixel_residual: bool = False, noise_mode: str = "const", swap: float = 0.0):
        if not isinstance(G, Generator):
            raise InputError("G", "a robust.gan.Generator", type(G).__name__)
        if not isinstance(directions, Directions):
            raise InputError("directions", "a robust.gan.directions.Directions", type(directions).__name__)
        self.G = G
        self.directions = directions.kept_directions().to(G.device)
        if self.directions.w_dim != G.w_dim:
            raise InputError("directions", f"vectors of size {G.w_dim} (the generator's w_dim)", self.directions.w_dim)
        self.directions.layer_mask(G.num_ws)
        self.mode = check_choice(mode, "mode", MODES)
        self.classifier = classifier
        self.k = check_number(k, "k", low=1, integer=True)
        self.steps = check_number(steps, "steps", low=1, integer=True)
        self.step_size = check_number(step_size, "step_size", low=0, high=1)
        self.strength = check_number(strength, "strength", low=0)
        self.per_sample = min(check_number(per_sample, "per_sample", low=1, integer=True), len(self.directions))
        self.loss = check_choice(loss, "loss", LOSSES)
        self.encoder = encoder
        self.invert_steps = check_number(invert_steps, "invert_steps", low=0, integer=True)
        self.expand_res = check_expand_res(G, expand_res)
        self.pixel_residual = bool(pixel_residual)
        self.noise_mode = noise_mode
        self.swap = check_number(swap, "swap", low=0, high=1)
        self.tokens = token_codes(G).to(G.device) if self.swap > 0 else None

    def __repr__(self) -> str:
        return (f"NaturalTransform(mode={self.mode!r}, directions={len(self.directions)} ({self.directions.method}), "
                f"strength={self.strength:g}, per_sample={self.per_sample}" + (f", swap={self.swap:g})" if self.swap else ")"))

    # -- parameters ----------------------------------------------------------------------------

    def bounds(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Lowest and highest magnitude ``[K]`` of every direction (the realistic ranges x ``strength``)."""
        r = self.directions.ranges.to(device) * self.strength
        return r[:, 0], r[:, 1]

    def sample(self, keys: torch.Tensor, draw: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``draw`` of the random magnitudes: ``([N, K] magnitudes, [N, K] bool mask of the chosen directions)``."""
        n, k = keys.shape[0], len(self.directions)
        scores = noise.uniform(keys, (k,), stream=2 * draw).to(device)
        chosen = torch.zeros(n, k, dtype=torch.bool, device=device)
        chosen.scatter_(1, scores.topk(self.per_sample, dim=1).indices, True)
        u = noise.uniform(keys, (k,), stream=2 * draw + 1).to(device)
        low, high = self.bounds(device)
        return torch.where(chosen, low + u * (high - low), torch.zeros_like(u)), chosen

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

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """The transformed images (see :meth:`transform` for the arguments)."""
        return self.transform(images, labels, **kwargs).images

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
            mags, _ = self.sample(keys, 0, device)
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
        best = None
        for draw in range(self.k):
            mags, _ = self.sample(keys, draw, ws.device)
            images = self.render(ws, mags, residual, offset, self.swap_shift(ws, keys, draw))
            best = _keep_worse(best, images, mags, self._score(clf, images, labels))
        images, mags, loss = best
        return NaturalTransformResult(images.to(home), mags.to(home), loss.to(home))

    def _gradient(self, clf: Classifier, ws: torch.Tensor, residual: torch.Tensor | None, offset: torch.Tensor | None,
                  labels: torch.Tensor, keys: torch.Tensor, home: torch.device) -> NaturalTransformResult:
        low, high = self.bounds(ws.device)
        step = self.step_size * (high - low)
        mags, chosen = self.sample(keys, 0, ws.device)
        shift = self.swap_shift(ws, keys, 0)
        mask = chosen.float()
        best = None
        for t in range(self.steps + 1):
            m = mags.detach().requires_grad_(t < self.steps)
            with torch.enable_grad() if t < self.steps else torch.no_grad():
                images = self.render(ws, m, residual, offset, shift)
                loss = self._score(clf, images, labels)
                grad = torch.autograd.grad(loss.sum(), [m])[0] if t < self.steps else None
            best = _keep_worse(best, images.detach(), m.detach(), loss.detach())
            if grad is not None:
                mags = torch.maximum(torch.minimum(m.detach() + step * grad.sign() * mask, high), low) * mask
        images, mags, loss = best
        return NaturalTransformResult(images.to(home), mags.to(home), loss.to(home))


def _keep_worse(best: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, images: torch.Tensor, mags: torch.Tensor,
                loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, whichever of ``best`` and the new candidate has the higher loss (ties keep ``best``)."""
    if best is None:
        return images, mags, loss
    b_images, b_mags, b_loss = best
    better = loss > b_loss
    return (torch.where(better[:, None, None, None], images, b_images), torch.where(better[:, None], mags, b_mags),
            torch.where(better, loss, b_loss))
