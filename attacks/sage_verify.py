"""Verification of SAGE's candidates without ground truth, and the false-failure estimate of a report.

A candidate that fools the model and that the oracles accept may still be a generator artefact (an
image no real camera or renderer makes, which the oracles happen to accept). :class:`Verifier`
adds named checks that need no ground truth, only real images and the generator itself:

* ``realism``: the candidate's nearest real images, in the feature space of the oracle ensemble
  (members trained on real images only), are about as close as real images are to each other and
  mostly show the prompt's class (:class:`RealBank`, calibrated on held-out real images);
* ``twins``: nearby latents (and other noise draws where the generator has noise inputs) fool the
  model too, with the oracles' agreement, in at least half of the twins;
* ``reinversion``: encoding the image with the generator's encoder and re-rendering it still
  gives a verified failure;
* ``stability``: the image moved by one pixel each way and slightly blurred still fools the model,
  with the oracles' agreement (a natural failure survives what a camera changes from shot to shot;
  a failure that hangs on the exact pixels is the search's, as in feature squeezing, Xu et al. 2018).

:func:`estimate_false_failures` puts a number on what is left: the same search and checks run
against a *reference* classifier known to be right on real images (a held-out oracle); whatever it
"fails" on is false, so its rate per query over the model's estimates the share of false failures.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from attacks.sage import (
    SageResult,
    SearchContext,
    neighbour_codes,
    sage_search,
)
from robust.errors import InputError
from robust.gan.latent import render_prompts
from robust.models import Classifier
from robust.seeding import derive_seed, make_generator
from robust.validation import check_number

CHECKS = ("realism", "twins", "reinversion", "stability")
#: What every check a failure's record names means (the judge's three and the candidate checks).
DESCRIPTIONS = {
    "oracles": "every oracle (classifiers trained on real images only) gives the prompt's class its top probability, at least "
               "the threshold",
    "tokens": "the attribute tokens of the prompt are seen in the image (the attribute oracles)",
    "in_distribution": "the latent code is typical for the prompt (the prior's test at level alpha)",
    "realism": "the nearest real images in the oracles' feature space are about as close as real images are to each other "
               "and mostly of the prompt's class",
    "twins": "nearby latents (and other noise draws) fool the model too, with the oracles' agreement, in at least half of "
             "the twins",
    "reinversion": "encoding the image with the generator's encoder and re-rendering it is still a verified failure",
    "stability": "the image moved by one pixel each way and slightly blurred still fools the model, with the oracles' agreement",
}
#: Embeds images ``[N, C, H, W]`` in ``[0, 1]`` into features ``[N, D]``.
Embedding = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class VerifyConfig:
    """Which candidate checks run, in this order, and how strict each is.

    ``neighbours``/``vote``/``quantile``/``holdout``: the realism check (k nearest real images,
    the share of them that must show the prompt's class, the quantile of held-out real images'
    distances a candidate may reach, the share of real images held out to calibrate it).
    ``twins``/``twin_radius``/``twin_level``: how many twins, how far (a fraction of the
    prior's typical norm, as in :func:`attacks.sage.failure_regions`) and the share of them
    that must be verified failures too. ``stability_blur``/``stability_level``: the stability check's
    Gaussian blur (pixels) beside its four one-pixel shifts, and the share of those copies that
    must stay verified failures.
    """

    checks: tuple[str, ...] = ("realism", "twins")
    neighbours: int = 10
    vote: float = 0.5
    quantile: float = 0.99
    holdout: float = 0.2
    twins: int = 8
    twin_radius: float = 0.1
    twin_level: float = 0.5
    stability_blur: float = 0.5
    stability_level: float = 0.8

    def __post_init__(self) -> None:
        self.checks = tuple(str(c) for c in self.checks)
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise InputError("checks", "some of " + ", ".join(CHECKS), unknown)
        self.neighbours = int(check_number(self.neighbours, "neighbours", low=1, integer=True))
        self.vote = check_number(self.vote, "vote", low=0, high=1)
        self.quantile = check_number(self.quantile, "quantile", low=0.5, high=1)
        self.holdout = check_number(self.holdout, "holdout", low=0.05, high=0.5)
        self.twins = int(check_number(self.twins, "twins", low=1, integer=True))
        self.twin_radius = check_number(self.twin_radius, "twin_radius", low=0)
        self.twin_level = check_number(self.twin_level, "twin_level", low=0, high=1)
        self.stability_blur = check_number(self.stability_blur, "stability_blur", low=0)
        self.stability_level = check_number(self.stability_level, "stability_level", low=0, high=1)


# -- realism: the nearest real images ------------------------------------------------------------------

def ensemble_embedding(members: Sequence[Classifier]) -> Embedding:
    """Each member's penultimate features, unit length, concatenated (over ``sqrt(M)``, so the whole has unit length)."""
    from robust.gan.metrics import classifier_features

    def embed(images01: torch.Tensor) -> torch.Tensor:
        parts = [torch.nn.functional.normalize(classifier_features(m, images01), dim=1) for m in members]
        return torch.cat(parts, 1) / math.sqrt(len(parts))

    return embed


@dataclass
class RealBank:
    """Real images in a feature space, for the realism check.

    ``distance(x)``: mean distance to the ``k`` nearest real images; ``share(x, label)``: the share
    of them whose class is ``label``. ``radius``: the ``quantile`` of the held-out real images'
    distances; ``real_pass_rate``: the share of held-out real images that pass the whole check
    (what it costs real failures).
    """

    embed: Embedding
    features: torch.Tensor  # [N, D]
    labels: torch.Tensor  # [N] class token indices
    k: int
    vote: float
    radius: float = math.inf
    real_pass_rate: float = float("nan")

    @classmethod
    def build(cls, embed: Embedding, images01: torch.Tensor, labels: torch.Tensor, config: VerifyConfig | None = None,
              *, seed: int = 0) -> RealBank:
        """Embed ``images01`` (class token indices ``labels``), hold out ``config.holdout`` of them and calibrate the check."""
        config = config or VerifyConfig()
        n = images01.shape[0]
        if n < 20 or labels.shape[0] != n:
            raise InputError("real images", "at least 20 labelled real images", f"{n} images, {labels.shape[0]} labels")
        order = torch.randperm(n, generator=make_generator(derive_seed(seed, "sage-real-bank")))
        held = order[: max(1, int(round(config.holdout * n)))]
        kept = order[held.numel():]
        feats = embed(images01).float().cpu()
        bank = cls(embed, feats[kept], labels.cpu().long()[kept], min(config.neighbours, kept.numel()), config.vote)
        distance, share = bank.measure(feats[held], labels.cpu().long()[held])
        bank.radius = float(torch.quantile(distance.double(), config.quantile))
        bank.real_pass_rate = float(((distance <= bank.radius) & (share >= bank.vote)).float().mean())
        return bank

    def measure(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean distance to the k nearest real images [N], share of them of class labels[i] [N])``."""
        out_d, out_s = [], []
        for i in range(0, features.shape[0], 512):
            d = torch.cdist(features[i: i + 512].float(), self.features)
            near, idx = d.topk(self.k, dim=1, largest=False)
            out_d.append(near.mean(1))
            out_s.append((self.labels[idx] == labels[i: i + 512, None].cpu()).float().mean(1))
        return torch.cat(out_d), torch.cat(out_s)

    def check(self, images01: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ok [N], value [N])``: value = the vote share, or its negative distance excess when the image is too far."""
        distance, share = self.measure(self.embed(images01).float().cpu(), labels.cpu().long())
        near = distance <= self.radius
        value = torch.where(near, share, self.radius - distance)
        return near & (share >= self.vote), value

    def describe(self) -> dict[str, Any]:
        return {"real_images": int(self.features.shape[0]), "k": self.k, "vote": self.vote, "radius": self.radius,
                "real_pass_rate": self.real_pass_rate}


def real_bank_for(members: Sequence[Classifier], images01: torch.Tensor, labels: torch.Tensor, class_tokens: Sequence[str],
                  class_names: Sequence[str], config: VerifyConfig | None = None, *, seed: int = 0) -> RealBank:
    """A :class:`RealBank` of real images labelled by ``class_names`` (mapped onto the generator's class tokens by name)."""
    missing = [t for t in class_tokens if t not in class_names]
    if missing:
        raise InputError("real images", "classes named like the generator's class tokens", f"no images of {missing[:5]}")
    lookup = torch.tensor([list(class_tokens).index(c) if c in class_tokens else -1 for c in class_names])
    mapped = lookup[labels.long().cpu()]
    keep = mapped >= 0
    return RealBank.build(ensemble_embedding(members), images01[keep], mapped[keep], config, seed=seed)


# -- the verifier ------------------------------------------------------------------------------------

class Verifier:
    """The candidate checks of :class:`VerifyConfig` (:class:`attacks.sage.CandidateChecks`), run in order, each on what passed the previous.

    ``bank``: real images for ``realism``; ``encoder(images01) -> ws`` for ``reinversion``. A check
    whose input is missing is refused here rather than skipped silently.
    """

    def __init__(self, config: VerifyConfig | None = None, *, bank: RealBank | None = None,
                 encoder: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.config = config or VerifyConfig()
        if "realism" in self.config.checks and bank is None:
            raise InputError("realism check", "real images (a RealBank)", None)
        if "reinversion" in self.config.checks and encoder is None:
            raise InputError("reinversion check", "an encoder of the generator", None)
        self.bank, self.encoder = bank, encoder
        self.names = tuple(self.config.checks)
        self.cost = ((self.config.twins if "twins" in self.names else 0) + (1 if "reinversion" in self.names else 0)
                     + (STABILITY_COPIES if "stability" in self.names else 0))
        self.context: SearchContext | None = None

    def bind(self, context: SearchContext) -> None:
        self.context = context

    def __call__(self, images: torch.Tensor, tokens: torch.Tensor, z: torch.Tensor, delta: torch.Tensor | None,
                 keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.context is None:
            raise InputError("verifier", "a verifier bound to a search (sage_search binds it)", "an unbound one")
        n = images.shape[0]
        ok = torch.ones(n, len(self.names), dtype=torch.bool)
        values = torch.full((n, len(self.names)), float("nan"))
        alive = torch.ones(n, dtype=torch.bool)
        spent = 0
        labels = tokens[:, self.context.judge.class_col]
        for j, name in enumerate(self.names):
            rows = alive.nonzero().squeeze(1)
            if not rows.numel():
                break
            dev = images.device
            sub = (images[rows.to(dev)], tokens[rows.to(dev)], z[rows.to(dev)], None if delta is None else delta[rows.to(dev)],
                   keys[rows])
            if name == "realism":
                passed, value = self.bank.check(sub[0], labels[rows.to(dev)])
            elif name == "twins":
                passed, value, used = self.twins(*sub)
                spent += used
            elif name == "stability":
                passed, value = self.stability(sub[0], sub[1])
                spent += STABILITY_COPIES * rows.numel()
            else:
                passed, value = self.reinversion(sub[0], sub[1])
                spent += rows.numel()
            ok[rows, j] = passed.cpu()
            values[rows, j] = value.float().cpu()
            alive[rows] = passed.cpu()
        return ok, values, spent

    @torch.no_grad()
    def twins(self, images: torch.Tensor, tokens: torch.Tensor, z: torch.Tensor, delta: torch.Tensor | None,
              keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(ok, share of twins that are verified failures, queries)``: ``twins`` neighbours per candidate at ``twin_radius``."""
        ctx, cfg = self.context, self.config
        t = cfg.twins
        seeds = torch.tensor([derive_seed(ctx.seed, "sage-twin", int(k), i) for k in keys.tolist() for i in range(t)], dtype=torch.int64)
        radius = torch.full((seeds.numel(),), float(cfg.twin_radius), device=z.device)
        zt, dt = neighbour_codes(z.repeat_interleave(t, 0), None if delta is None else delta.repeat_interleave(t, 0), ctx.root,
                                 radius, seeds)
        rows = tokens.repeat_interleave(t, 0)
        shot = _render(ctx, rows, zt, dt, keys)
        verdict = ctx.judge.check(shot, rows)
        good = (verdict["fooled"] & verdict["oracle_ok"] & verdict["tokens_ok"]).float().view(-1, t).mean(1).cpu()
        return good >= cfg.twin_level, good, int(seeds.numel())

    @torch.no_grad()
    def reinversion(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ok, 1.0 / 0.0)``: the image encoded, re-rendered and judged again."""
        G = self.context.generator
        ws = self.encoder(images.to(_device(G)))
        again = G.to_unit(G.synthesis(ws, noise_mode=self.context.config.noise_mode))
        verdict = self.context.judge.check(again, tokens)
        ok = (verdict["fooled"] & verdict["oracle_ok"] & verdict["tokens_ok"]).cpu()
        return ok, ok.float()

    @torch.no_grad()
    def stability(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ok, share of the copies that are verified failures)``: four one-pixel shifts and a slight blur of each image."""
        copies = small_variations(images, self.config.stability_blur)
        verdict = self.context.judge.check(copies.flatten(0, 1), tokens.repeat(copies.shape[0], 1))
        good = (verdict["fooled"] & verdict["oracle_ok"] & verdict["tokens_ok"]).float().view(copies.shape[0], -1).mean(0).cpu()
        return good >= self.config.stability_level, good

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"checks": list(self.names), "config": {k: getattr(self.config, k) for k in
                                                                        ("neighbours", "vote", "quantile", "twins", "twin_radius",
                                                                         "twin_level", "stability_blur", "stability_level")}}
        if self.bank is not None:
            out["realism"] = self.bank.describe()
        return out


#: Copies the stability check judges per candidate: four one-pixel shifts and one blur.
STABILITY_COPIES = 5


def small_variations(images01: torch.Tensor, blur: float) -> torch.Tensor:
    """``[STABILITY_COPIES, N, C, H, W]``: each image shifted by one pixel right, left, down and up (edge colour
    fills the border) and blurred with a Gaussian of ``blur`` pixels."""
    from robust.transforms import get_transform

    h, w = images01.shape[-2], images01.shape[-1]

    def full(value: float) -> torch.Tensor:
        return torch.full((images01.shape[0],), float(value), device=images01.device)

    shift = get_transform("translation")
    copies = [shift.apply(images01, {"dx": full(dx / w), "dy": full(dy / h)}) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    copies.append(get_transform("blur").apply(images01, {"sigma": full(blur)}))
    return torch.stack(copies)


def _device(G: Any) -> torch.device:
    from robust.gan.latent import generator_device

    return generator_device(G)


def _render(ctx: SearchContext, tokens: torch.Tensor, z: torch.Tensor, delta: torch.Tensor | None, keys: torch.Tensor) -> torch.Tensor:
    """Twins as the search renders them, but with fresh noise per candidate (seeded by its key) where the generator has noise inputs."""
    from robust.gan import Generator

    G, cfg = ctx.generator, ctx.config
    if not isinstance(G, Generator) or cfg.noise_mode != "const":
        return render_prompts(G, tokens, z, delta, truncation_psi=cfg.truncation_psi, noise_mode=cfg.noise_mode)[0]
    mapped = G.mapping(z, G.conditioning.encode(tokens), truncation_psi=cfg.truncation_psi)
    ws = mapped if delta is None else mapped + delta
    t = tokens.shape[0] // max(1, keys.numel())
    parts = []
    for i, key in enumerate(keys.tolist()):
        gen = torch.Generator(device=ws.device).manual_seed(derive_seed(ctx.seed, "sage-twin-noise", int(key)) % (1 << 63))
        parts.append(G.synthesis(ws[i * t: (i + 1) * t], noise_mode="random", generator=gen))
    return G.to_unit(torch.cat(parts))


# -- the false-failure estimate ----------------------------------------------------------------------

@dataclass
class FalseFailureEstimate:
    """The estimated share of a report's failures that are false (``rate``), and how it was estimated.

    ``method="reference"``: the same search, checks and budget run against ``reference``, a
    classifier known to be right on real images (``reference_accuracy`` on held-out real images);
    its verified failures are false failures of the pipeline, so ``rate = min(1, reference rate /
    model rate)`` per query. A reference with real errors of its own makes the estimate high; a reference
    that judges the generator's artefacts as the oracles do makes it low (measured on the synthetic
    benchmark: 0% estimated where 12-100% of the failures were artefacts, benchmarks/results/sage.md),
    so the text calls it a lower bound. ``interval`` is the 95% interval of that ratio from the two
    counts alone (:func:`rate_ratio_interval`): how far the figure may move by chance.
    """

    rate: float
    method: str
    reference: str
    reference_accuracy: float | None
    reference_failures: int
    reference_queries: int
    model_failures: int
    model_queries: int
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def interval(self) -> tuple[float, float]:
        return rate_ratio_interval(self.reference_failures, self.reference_queries, self.model_failures, self.model_queries)

    @property
    def reference_per_1k(self) -> float:
        return 1000.0 * self.reference_failures / max(1, self.reference_queries)

    @property
    def model_per_1k(self) -> float:
        return 1000.0 * self.model_failures / max(1, self.model_queries)

    def text(self) -> str:
        if math.isnan(self.rate):
            return "no failures reported, so no false-failure rate to estimate"
        acc = f" (accuracy {self.reference_accuracy:.1%} on held-out real images)" if self.reference_accuracy is not None else ""
        low, high = self.interval
        return (f"estimated false failures: {self.rate:.0%} of those reported (95% interval from the counts {low:.0%}-{high:.0%}; "
                f"a lower bound: artefacts that the reference "
                f"judges as the oracles do are not counted). Estimated by running the same search, checks and "
                f"budget against {self.reference}{acc}, a classifier known to be right on real images: {self.reference_failures} "
                f"'failures' in {self.reference_queries} queries ({self.reference_per_1k:.1f} per 1k) against the model's "
                f"{self.model_per_1k:.1f} per 1k")

    def to_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "method": self.method, "reference": self.reference, "reference_accuracy": self.reference_accuracy,
                "reference_failures": self.reference_failures, "reference_queries": self.reference_queries,
                "reference_per_1k": self.reference_per_1k, "model_failures": self.model_failures, "model_queries": self.model_queries,
                "model_per_1k": self.model_per_1k, "interval": list(self.interval) if self.model_failures else None,
                "seconds": self.seconds, "text": self.text(), **self.extra}


def rate_ratio_interval(a: int, qa: int, b: int, qb: int, level: float = 0.95) -> tuple[float, float]:
    """A ``level`` interval of ``(a / qa) / (b / qb)``, clipped to ``[0, 1]``: ``a`` and ``b`` Poisson counts in
    ``qa`` and ``qb`` queries. Given ``a + b``, ``a`` is binomial with ``p = R qa / (R qa + qb)``; the exact
    (Clopper-Pearson) bounds of ``p`` map to bounds of the ratio ``R``. ``(nan, nan)`` without model failures."""
    from scipy.stats import beta

    for name, value in (("a", a), ("qa", qa), ("b", b), ("qb", qb)):
        check_number(value, name, low=0, integer=True)
    level = check_number(level, "level", low=0, high=1)
    if b == 0 or qa == 0 or qb == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low_p = float(beta.ppf(tail, a, b + 1)) if a > 0 else 0.0
    high_p = float(beta.ppf(1 - tail, a + 1, b))

    def ratio(p: float) -> float:
        return min(1.0, p * qb / ((1 - p) * qa)) if p < 1 else 1.0

    return ratio(low_p), ratio(high_p)


def estimate_false_failures(generator: Any, reference: Classifier, oracles: Sequence[Classifier], result: SageResult, *,
                            checks: Verifier | None = None, token_verifier: Any = None, token_scorer: Any = None,
                            reference_accuracy: float | None = None, progress: bool | None = None) -> FalseFailureEstimate:
    """Estimate the share of ``result``'s failures that are false by searching ``reference`` the same way (see :class:`FalseFailureEstimate`).

    The reference search uses ``result``'s configuration and budget and a seed derived from
    ``result.seed``; the reference must not be one of the oracles (they agree with themselves).
    """
    if any(reference is o for o in oracles):
        raise InputError("reference", "a classifier that is not one of the oracles", reference.name)
    found = sage_search(generator, reference, oracles, result.config, seed=derive_seed(result.seed, "sage-reference"),
                        token_verifier=token_verifier, token_scorer=token_scorer if result.config.method == "gradient" else None,
                        checks=checks, progress=progress)
    model_rate = result.failures_per_1k_queries
    rate = min(1.0, found.failures_per_1k_queries / model_rate) if result.failures else float("nan")
    return FalseFailureEstimate(rate, "reference", reference.name, reference_accuracy, len(found.failures), found.queries,
                                len(result.failures), result.queries, found.seconds)
