"""SAGE: adversarial search of a generator's latent and prompt space for verified, natural failures.

:func:`sage_search` (the algorithm is in its documentation), :func:`random_search` (the baseline)
and :func:`failure_regions`; modes, regression cases and the synthetic ground truth live in
``attacks.sage_modes``, ``attacks.sage_regression`` and ``attacks.sage_synthetic``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from attacks.base import check_classifier
from robust import noise
from robust.errors import GradientUnavailableError, InputError
from robust.gan.conditioning import Conditioning
from robust.gan.latent import (
    PROMPT_STREAM,
    LatentPrior,
    ZPrior,
    generator_device,
    prompt_prior,
    render_prompts,
    sample_z,
)
from robust.models import Classifier, frozen
from robust.seeding import derive_seed
from robust.validation import check_choice, check_number

SPACES = ("z", "w", "w+")
METHODS = ("gradient", "random")
AGREEMENTS = ("all", "mean")
CLASS_GROUP = "class"
#: ``images01 -> {group: predicted token index}`` for the attribute groups a verifier can read.
TokenVerifier = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
#: ``images01 -> {group: log-probabilities [N, tokens of the group]}``, differentiable in the images.
TokenScorer = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]

# Codes are pulled this far inside the prior's acceptance region, so that a verified code keeps
# some margin to the boundary the final check uses.
_PROJECTION_MARGIN = 0.9


# -- configuration ---------------------------------------------------------------------------------

@dataclass
class SageConfig:
    """How a SAGE search runs.

    ``space``: ``z``, ``w`` (one offset added to the mapping's output) or ``w+`` (one offset per
    layer). ``budget_queries``: images the generator may synthesise in all; ``budget_seconds``: wall
    time (None: unlimited; makes the result depend on the machine's speed). ``batch_size``: chains
    run together. ``steps``: latent steps before a chain without a failure restarts.
    ``step_size``: length of a step as a fraction of the prior's typical norm (``sqrt(dim)`` in
    whitened units). ``search_groups``: token groups the prompt search may change (None: the
    attribute groups, or the class when there are none; ``()``: latent search only). ``prompt_every``: a prompt step after every
    that many latent steps; ``prompt_candidates``: token swaps evaluated per prompt step.
    ``prompts``: fixed starting prompts (``{group: token name or index}``, missing groups drawn at
    random), cycled over the chains; None draws every group at random. ``loss_cap``: margin (in
    logits) beyond which fooling the model more earns nothing. ``oracle_threshold``: the oracle
    ensemble's probability for the prompt's class a failure needs; ``oracle_weight``: weight of
    the penalty that keeps it there during the search. ``min_confidence``: the model's probability
    for its wrong prediction a failure needs (0: any misclassification; the loss cap is raised to
    the margin this takes). ``oracle_agreement``: ``all`` (every oracle must agree: the ``oracles``
    check; the penalty keeps each one there) or ``mean`` (the ensemble's mean probability must).
    ``alpha``: level of the in-distribution tests. ``max_failures``: stop
    early after this many verified failures. ``adaptive_restart``: restart a chain as soon as the
    success per query measured so far for chains that went on from its step is below that of fresh
    samples (so a model that fails on many random samples is not searched step by step in vain).
    ``method``: ``gradient`` (SAGE) or ``random`` (the baseline: fresh samples, no search).
    """

    space: str = "w"
    method: str = "gradient"
    budget_queries: int = 2000
    budget_seconds: float | None = None
    batch_size: int = 32
    steps: int = 10
    step_size: float = 0.25
    search_groups: tuple[str, ...] | None = None
    prompt_every: int = 4
    prompt_candidates: int = 3
    prompts: tuple[dict[str, Any], ...] | None = None
    loss_cap: float = 1.0
    oracle_threshold: float = 0.8
    oracle_weight: float = 1.0
    oracle_agreement: str = "all"
    min_confidence: float = 0.0
    alpha: float = 0.01
    require_in_distribution: bool = True
    truncation_psi: float = 1.0
    noise_mode: str = "const"
    max_failures: int | None = None
    adaptive_restart: bool = True
    keep_images: bool = True
    baseline_images: int = 1024

    def __post_init__(self) -> None:
        check_choice(self.space, "space", SPACES)
        check_choice(self.method, "method", METHODS)
        check_choice(self.noise_mode, "noise_mode", ("const", "none"))
        check_choice(self.oracle_agreement, "oracle_agreement", AGREEMENTS)
        self.budget_queries = int(check_number(self.budget_queries, "budget_queries", low=1, integer=True))
        if self.budget_seconds is not None:
            self.budget_seconds = check_number(self.budget_seconds, "budget_seconds", low=0)
        for name in ("batch_size", "steps", "prompt_every"):
            setattr(self, name, int(check_number(getattr(self, name), name, low=1, integer=True)))
        self.prompt_candidates = int(check_number(self.prompt_candidates, "prompt_candidates", low=1, integer=True))
        self.step_size = check_number(self.step_size, "step_size", low=0)
        self.loss_cap = check_number(self.loss_cap, "loss_cap", low=0)
        self.oracle_threshold = check_number(self.oracle_threshold, "oracle_threshold", low=0, high=1)
        self.oracle_weight = check_number(self.oracle_weight, "oracle_weight", low=0)
        self.min_confidence = check_number(self.min_confidence, "min_confidence", low=0, high=0.999)
        if self.min_confidence > 0.5:
            # Two classes sharing the rest: the margin at which the prediction reaches min_confidence.
            self.loss_cap = max(self.loss_cap, math.log(self.min_confidence / (1.0 - self.min_confidence)) + 0.5)
        self.alpha = check_number(self.alpha, "alpha", low=1e-6, high=0.5)
        self.truncation_psi = check_number(self.truncation_psi, "truncation_psi", low=0, high=1)
        if self.max_failures is not None:
            self.max_failures = int(check_number(self.max_failures, "max_failures", low=1, integer=True))
        self.baseline_images = int(check_number(self.baseline_images, "baseline_images", low=0, integer=True))
        if self.search_groups is not None:
            self.search_groups = tuple(str(g) for g in self.search_groups)
        if self.prompts is not None:
            if isinstance(self.prompts, Mapping):
                self.prompts = (dict(self.prompts),)
            self.prompts = tuple(dict(p) for p in self.prompts)
            if not self.prompts:
                raise InputError("prompts", "at least one prompt, or None for random prompts", "an empty list")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["search_groups"] = list(self.search_groups) if self.search_groups is not None else None
        out["prompts"] = [dict(p) for p in self.prompts] if self.prompts is not None else None
        return out

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


# -- classes: generator tokens -> classifier outputs ------------------------------------------------

def class_indices(classifier: Classifier, class_tokens: Sequence[str], name: str = "model") -> torch.Tensor:
    """The classifier output index of every class token: by name, else by position when the counts agree."""
    names = list(classifier.class_names)
    if all(t in names for t in class_tokens):
        return torch.tensor([names.index(t) for t in class_tokens], dtype=torch.long)
    numeric = names == [str(i) for i in range(len(names))]
    if numeric and len(names) >= len(class_tokens):
        return torch.arange(len(class_tokens))
    raise InputError(f"{name} classes", "class names that include the generator's class tokens (" + ", ".join(class_tokens[:10]) + ")",
                     ", ".join(names[:10]))


# -- the in-distribution prior -----------------------------------------------------------------------

@dataclass
class _SpacePrior:
    """The in-distribution check of one search space: :class:`ZPrior` for ``z``, the prompt's
    :class:`LatentPrior` (:func:`robust.gan.latent.prompt_prior`) for ``w`` / ``w+``."""

    space: str
    alpha: float
    z: ZPrior | None = None
    w: LatentPrior | None = None

    @classmethod
    def fit(cls, G: Any, space: str, alpha: float, *, seed: int, truncation_psi: float) -> _SpacePrior:
        if check_choice(space, "space", SPACES) == "z":
            return cls(space, float(alpha), z=ZPrior(int(G.z_dim), alpha))
        return cls(space, float(alpha), w=prompt_prior(G, alpha, seed=seed, truncation_psi=truncation_psi))

    def score(self, z: torch.Tensor, ws: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """In-distribution score ``[N]`` (<= 1: in distribution) of the codes that made ``ws``."""
        return self.z.score(z) if self.w is None else self.w.score(ws, tokens)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"space": self.space, "alpha": self.alpha}
        if self.w is None:
            out.update({"test": "chi-square norm + Kolmogorov-Smirnov", "radius_band": list(self.z.radius_band),
                        "ks_critical": self.z.ks_critical})
        else:
            out.update({"test": "Mahalanobis distance to the prompt's mean w", "threshold_d2": self.w.radius})
        return out


# -- prompts -------------------------------------------------------------------------------------------

def default_search_groups(names: Sequence[str]) -> list[str]:
    """The attribute groups; the class group only when there is nothing else.

    Changing the class mid-chain changes the label the loss is measured against, which the
    gradient of the relaxed conditioning cannot see, and throws away the latent progress made for
    the old class; chains still start from every class.
    """
    attributes = [g for g in names if g != CLASS_GROUP]
    return attributes or [CLASS_GROUP]


# -- the verdict on one batch ------------------------------------------------------------------------

@dataclass
class SearchContext:
    """What candidate checks need from a search: its generator, judge, W prior root (None for ``z``), configuration and seed."""

    generator: Any
    judge: Judge
    root: torch.Tensor | None
    config: SageConfig
    seed: int


class CandidateChecks(Protocol):
    """Checks a candidate must pass after the judge's (``attacks.sage_verify.Verifier``), in order.

    ``__call__(images, tokens, z, delta, keys)`` runs on the rows that passed everything else
    (``keys``: a unique int64 per row, for seeding) and returns ``(ok [n, C], values [n, C],
    generator queries spent)``; a check after a failed one is not run (ok True, value nan).
    ``cost``: the most generator queries the checks spend on one candidate.
    """

    names: tuple[str, ...]
    cost: int

    def bind(self, context: SearchContext) -> None: ...

    def __call__(self, images: torch.Tensor, tokens: torch.Tensor, z: torch.Tensor, delta: torch.Tensor | None,
                 keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]: ...


class Judge:
    """The model-under-test, the oracle ensemble and the token verifier, on images of the prompts.

    ``model_index[k]`` / the oracles' indices map class token ``k`` to each classifier's output.
    ``agreement``: ``all`` (every oracle must give the prompt's class its top probability, at
    least ``threshold``) or ``mean`` (the ensemble's mean probability must); one oracle: the same.
    """

    def __init__(self, model: Classifier, oracles: Sequence[Classifier], class_tokens: Sequence[str],
                 token_verifier: TokenVerifier | None, groups: Sequence[str], threshold: float, min_confidence: float = 0.0,
                 token_scorer: TokenScorer | None = None, agreement: str = "all"):
        self.model = model
        self.oracles = list(oracles)
        self.model_index = class_indices(model, class_tokens, "model").to(model.device)
        self.oracle_index = [class_indices(o, class_tokens, f"oracle {o.name}").to(o.device) for o in self.oracles]
        self.token_verifier = token_verifier
        self.token_scorer = token_scorer
        self.groups = list(groups)
        self.threshold = float(threshold)
        self.min_confidence = float(min_confidence)
        self.agreement = check_choice(agreement, "oracle agreement", AGREEMENTS)
        self.class_col = self.groups.index(CLASS_GROUP)

    def model_logits(self, net: torch.nn.Module | None, images: torch.Tensor) -> torch.Tensor:
        if net is None:
            return self.model.forward(images, check=False).float()
        return net(images.to(self.model.device)).float().to(images.device)

    def member_probs(self, images: torch.Tensor, nets: Sequence[torch.nn.Module | None] | None = None) -> torch.Tensor:
        """Every oracle's probability of every class token ``[M, N, K]`` (differentiable where ``nets`` has the oracle's network)."""
        nets = list(nets) if nets is not None else [None] * len(self.oracles)
        out = []
        for oracle, net, index in zip(self.oracles, nets, self.oracle_index):
            if net is None:
                with torch.no_grad():
                    logits = oracle.forward(images.detach(), check=False).float()
            else:
                logits = net(images.to(oracle.device)).float()
            out.append(logits.softmax(1)[:, index.to(logits.device)].to(images.device))
        return torch.stack(out)

    def oracle_probs(self, images: torch.Tensor, nets: Sequence[torch.nn.Module | None]) -> torch.Tensor:
        """Mean oracle probability of every class token ``[N, K]`` (differentiable where the oracles are)."""
        return self.member_probs(images, nets).mean(0)

    def oracle_verdict(self, probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(per-oracle probability of the label [M, N], oracle_ok [N], reported probability [N], preferred class [N])``
        from :meth:`member_probs`; the reported probability is the ensemble's lowest under ``all``, its mean under ``mean``."""
        labels = labels.to(probs.device)
        p_label = probs.gather(2, labels[None, :, None].expand(probs.shape[0], -1, 1))[..., 0]
        mean = probs.mean(0)
        preferred = mean.argmax(1)
        with torch.no_grad():
            if self.agreement == "all":
                ok = ((p_label >= self.threshold) & (probs.argmax(2) == labels[None])).all(0)
                reported = p_label.amin(0)
            else:
                reported = mean.gather(1, labels[:, None])[:, 0]
                ok = (reported >= self.threshold) & (preferred == labels)
        return p_label, ok, reported.detach(), preferred

    @torch.no_grad()
    def check(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Verdicts on images of ``tokens`` without gradients: ``fooled``, ``oracle_ok``, ``tokens_ok``, ``prediction``, ``oracle_prob``."""
        labels = tokens[:, self.class_col].to(images.device)
        confidence, prediction = self.model.logits(images).softmax(1).max(1)
        prediction = prediction.to(images.device)
        wrong = prediction != self.model_index.to(images.device)[labels]
        fooled = wrong & (confidence.to(images.device) >= self.min_confidence)
        _, oracle_ok, reported, _ = self.oracle_verdict(self.member_probs(images), labels)
        return {"fooled": fooled, "oracle_ok": oracle_ok, "tokens_ok": self.verify_tokens(images, tokens), "prediction": prediction,
                "oracle_prob": reported}

    def verify_tokens(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        ok = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        if self.token_verifier is None:
            return ok
        with torch.no_grad():
            seen = self.token_verifier(images.detach())
        for group, values in seen.items():
            if group == CLASS_GROUP or group not in self.groups:
                continue
            ok &= values.to(images.device).long() == tokens[:, self.groups.index(group)].to(images.device)
        return ok


@dataclass
class _Verdict:
    objective: torch.Tensor  # [N] (differentiable when the forward was)
    margin: torch.Tensor  # model: best other logit - logit of the prompt's class (> 0: fooled)
    prediction: torch.Tensor  # model output index
    confidence: torch.Tensor  # model probability of its prediction
    oracle_prob: torch.Tensor  # oracle ensemble probability of the prompt's class
    oracle_prediction: torch.Tensor  # class token the oracles prefer
    tokens_ok: torch.Tensor
    score: torch.Tensor  # in-distribution score
    fooled: torch.Tensor
    oracle_ok: torch.Tensor
    verified: torch.Tensor
    checks: torch.Tensor  # [N, len(checks)] each candidate check's value (nan: not run on that row)


# -- results ------------------------------------------------------------------------------------------

@dataclass
class Failure:
    """One verified failure: the image, its prompt and latent, and every verdict on it."""

    tokens: dict[str, str]  # group -> token name (the prompt)
    token_ids: list[int]  # token indices in the conditioning's group order
    label: int  # the prompt's class token index
    label_name: str
    prediction: int  # the model's output index
    prediction_name: str
    confidence: float  # the model's probability for its prediction
    oracle_prob: float  # the oracle ensemble's probability for the prompt's class
    oracle_prediction: str
    in_distribution: float  # score (<= 1: in distribution)
    z: torch.Tensor  # [z_dim]
    delta: torch.Tensor | None  # [1 | num_ws, w_dim] offset added to the mapping's ws (None for z search)
    w: torch.Tensor  # [w_dim]: mean over layers of the ws that made the image
    start_w: torch.Tensor  # [w_dim]: the same for the chain's starting sample
    query: int  # generator queries spent when it was found
    seconds: float
    chain: int  # restart id of the chain (seed index of its starting sample)
    step: int  # latent steps the chain had taken
    image: torch.Tensor | None = None  # [C, H, W] in [0, 1]
    region_radius: float | None = None
    factors: dict[str, float] = field(default_factory=dict)  # estimated ground-truth factors (synthetic benchmark)
    checks: dict[str, float] = field(default_factory=dict)  # candidate check -> its value on this failure

    @property
    def prompt(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.tokens.items())

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("image", "z", "delta", "w", "start_w")}
        out["prompt"] = self.prompt
        out["z"] = [float(v) for v in self.z.reshape(-1)]
        out["delta"] = self.delta.tolist() if self.delta is not None else None
        return out


@dataclass
class SageResult:
    """What a search found, what it spent and how its candidates fared."""

    failures: list[Failure]
    queries: int
    seconds: float
    stopped: str  # "queries", "time" or "max_failures"
    config: SageConfig
    seed: int
    counts: dict[str, int]  # evaluated, fooled, rejected_oracle, rejected_tokens, rejected_distribution, chains
    prior: dict[str, Any]
    groups: list[tuple[str, list[str]]]
    model_classes: list[str]
    baseline_tokens: torch.Tensor  # [M, groups] prompts of the chains' starting samples
    baseline_predictions: torch.Tensor  # [M] the model's prediction on them
    baseline_images: torch.Tensor | None = None  # [<=baseline_images, C, H, W] the first starting samples
    first_failure_seconds: float | None = None
    first_failure_query: int | None = None
    cpu_seconds: float | None = None  # CPU time of this process during the search (all its threads)

    @property
    def failures_per_1k_queries(self) -> float:
        return 1000.0 * len(self.failures) / max(1, self.queries)

    @property
    def failures_per_minute(self) -> float:
        return 60.0 * len(self.failures) / max(1e-9, self.seconds)

    @property
    def ood_rate(self) -> float:
        """Among candidates that fooled the model with the oracle's agreement: the share rejected as out of distribution."""
        real = self.counts["fooled_oracle_ok"]
        return self.counts["rejected_distribution"] / real if real else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.config.method,
            "space": self.config.space,
            "failures": len(self.failures),
            "queries": self.queries,
            "seconds": self.seconds,
            "stopped": self.stopped,
            "failures_per_1k_queries": self.failures_per_1k_queries,
            "failures_per_minute": self.failures_per_minute,
            "cpu_seconds": self.cpu_seconds,
            "failures_per_cpu_minute": 60.0 * len(self.failures) / self.cpu_seconds if self.cpu_seconds else None,
            "first_failure_seconds": self.first_failure_seconds,
            "first_failure_query": self.first_failure_query,
            "ood_rate": self.ood_rate,
            "mean_in_distribution_score": (sum(f.in_distribution for f in self.failures) / len(self.failures)) if self.failures else None,
            "counts": dict(self.counts),
            "seed": self.seed,
            "prior": dict(self.prior),
            "config": self.config.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "failures_list": [f.to_dict() for f in self.failures]}


# -- the search -----------------------------------------------------------------------------------------

@dataclass
class _Chains:
    """The state of the chains running together (rows are chains)."""

    tokens: torch.Tensor  # [B, groups]
    z: torch.Tensor  # [B, z_dim]
    delta: torch.Tensor | None  # [B, L, w_dim]
    start_w: torch.Tensor  # [B, w_dim] (filled at step 0)
    step: torch.Tensor  # [B]
    chain: torch.Tensor  # [B] restart ids

    def take(self, keep: torch.Tensor) -> _Chains:
        return _Chains(self.tokens[keep], self.z[keep], None if self.delta is None else self.delta[keep], self.start_w[keep],
                       self.step[keep], self.chain[keep])


def _check_models(model: Any, oracles: Any, method: str) -> tuple[Classifier, list[Classifier]]:
    model = check_classifier(model)
    if isinstance(oracles, Classifier):
        oracles = [oracles]
    oracles = [check_classifier(o) for o in (oracles or [])]
    if not oracles:
        raise InputError("oracles", "at least one oracle classifier (the check that keeps failures real)", "none")
    if method == "gradient" and not model.has_gradients:
        raise GradientUnavailableError(f"{model.name} has no gradients (ONNX): use SageConfig(method='random')")
    return model, oracles


def sage_search(
    generator: Any,
    model: Any,
    oracles: Classifier | Sequence[Classifier],
    config: SageConfig | None = None,
    *,
    seed: int = 0,
    token_verifier: TokenVerifier | None = None,
    token_scorer: TokenScorer | None = None,
    checks: CandidateChecks | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> SageResult:
    """Search the generator's prompt and latent space for verified failures of ``model``.

    After "Discovering Failure Modes of Text-guided Diffusion Models via Adversarial Search" (SAGE),
    for our StyleGAN2-ADA: a *prompt* is the generator's conditioning (the class token plus any
    attribute tokens, :class:`robust.gan.Conditioning`), a *latent* is ``z``, ``w`` or ``W+``. Search
    chains start from random ``(prompt, z)`` samples and climb the model's loss for the prompt's
    class by normalised gradient steps on the latent, interleaved with greedy coordinate steps on the
    prompt (candidate token swaps ranked by the gradient of the continuous relaxation of the one-hot
    conditioning, the best one evaluated and kept), while

    * an **oracle** ensemble must still assign the prompt's class with probability >=
      ``oracle_threshold`` (a penalty in the objective, a hard check at the end): the surrogate that
      keeps failures real rather than adversarial noise;
    * an optional **token verifier** must still see the prompt's attribute tokens (an optional
      differentiable token scorer adds the matching penalty to the objective);
    * the code stays **in distribution**: ``z`` keeps a chi-square norm band and passes a
      Kolmogorov-Smirnov test of Gaussianity (:class:`robust.gan.latent.ZPrior`); ``w`` / ``W+``
      stay inside the Mahalanobis ball that holds ``1 - alpha`` of the mapping network's outputs for
      the prompt (:func:`robust.gan.latent.prompt_prior`).

    A chain that reaches a verified failure records it and restarts from a fresh sample; a chain
    that finds none within ``steps`` restarts too, and so does one whose further steps have so far
    found failures less cheaply than fresh samples do (``adaptive_restart``). The budget is counted
    in generator queries (images synthesised; a gradient step is one query per chain, every
    evaluated prompt candidate one more) and wall time. ``method="random"`` is the baseline: fresh
    random samples under the same checks.

    ``generator``: a conditional :class:`robust.gan.Generator` with a ``class`` token group.
    ``model``/``oracles``: :class:`Classifier` s whose class names include the class tokens (or
    numbered outputs in token order). ``token_verifier(images) -> {group: token index}`` checks
    attribute tokens; ``token_scorer(images) -> {group: log-probabilities}`` (differentiable) adds
    the penalty that keeps them rendered during the search, as the oracle's does for the class.
    ``checks``: further checks (:class:`CandidateChecks`, e.g. :class:`attacks.sage_verify.Verifier`);
    their queries count against the budget. ``overrides`` replace fields of ``config``.
    Deterministic by ``seed`` unless ``budget_seconds`` stops it first. Typical use::

        result = sage_search(G, model, [oracle], SageConfig(budget_queries=2000, space="w"), seed=0)
        modes = attacks.sage_modes.failure_modes(result)
    """
    unknown = set(overrides) - SageConfig.field_names()
    if unknown:
        raise InputError("search options", "fields of SageConfig", sorted(unknown))
    config = replace(config or SageConfig(), **overrides) if overrides else (config or SageConfig())
    model, oracles = _check_models(model, oracles, config.method)
    groups = Conditioning.of(generator, CLASS_GROUP).groups
    names = [g for g, _ in groups]
    class_tokens = groups[names.index(CLASS_GROUP)][1]
    search_groups = default_search_groups(names) if config.search_groups is None else list(config.search_groups)
    for g in search_groups:
        if g not in names:
            raise InputError("search_groups", "groups of the generator's conditioning (" + ", ".join(names) + ")", g)
    judge = Judge(model, oracles, class_tokens, token_verifier, names, config.oracle_threshold, config.min_confidence,
                  token_scorer, config.oracle_agreement)
    prior = _SpacePrior.fit(generator, config.space, config.alpha, seed=derive_seed(seed, "sage-prior"),
                            truncation_psi=config.truncation_psi)
    fixed = [generator.conditioning.parse(p) for p in config.prompts] if config.prompts else None
    with ExitStack() as stack:
        net = stack.enter_context(model.eval_mode())
        stack.enter_context(frozen(net if model.has_gradients else None))
        stack.enter_context(frozen(generator))
        oracle_nets: list[torch.nn.Module | None] = []
        for o in oracles:
            onet = stack.enter_context(o.eval_mode())
            stack.enter_context(frozen(onet if o.has_gradients else None))
            oracle_nets.append(onet if o.has_gradients else None)
        return _Search(generator, judge, prior, config, seed, groups, search_groups, fixed,
                       net if model.has_gradients else None, oracle_nets, progress, checks).run()


def random_search(generator: Any, model: Any, oracles: Classifier | Sequence[Classifier], config: SageConfig | None = None,
                  **kwargs: Any) -> SageResult:
    """The baseline: fresh random ``(prompt, z)`` samples under the same checks and budget (no search)."""
    config = replace(config or SageConfig(), method="random")
    return sage_search(generator, model, oracles, config, **kwargs)


class _Search:
    """One run of :func:`sage_search` (state kept on the object so the loop reads as the algorithm)."""

    def __init__(self, G: Any, judge: Judge, prior: _SpacePrior, config: SageConfig, seed: int,
                 groups: list[tuple[str, list[str]]], search_groups: list[str], fixed: list[dict[str, int]] | None,
                 net: torch.nn.Module | None, oracle_nets: list[torch.nn.Module | None], progress: bool | None,
                 checks: CandidateChecks | None = None):
        self.G, self.judge, self.prior, self.cfg, self.seed = G, judge, prior, config, int(seed)
        self.groups = groups
        self.names = [g for g, _ in groups]
        self.search_cols = [self.names.index(g) for g in search_groups]
        self.fixed = fixed
        self.net, self.oracle_nets = net, oracle_nets
        self.progress = progress
        self.device = generator_device(G)
        self.gradient = config.method == "gradient"
        self.layers = 0 if config.space == "z" else (1 if config.space == "w" else int(G.num_ws))
        self.failures: list[Failure] = []
        self.queries = 0
        self.next_chain = 0
        self.counts = {"evaluated": 0, "fooled": 0, "fooled_oracle_ok": 0, "rejected_oracle": 0, "rejected_tokens": 0,
                       "rejected_distribution": 0, "chains": 0, "prompt_steps": 0, "prompt_swaps": 0, "check_queries": 0}
        self.checks = checks
        if checks is not None:
            checks.bind(SearchContext(G, judge, None if prior.w is None else prior.w.root, config, self.seed))
        self.base_tokens: list[torch.Tensor] = []
        self.base_predictions: list[torch.Tensor] = []
        self.base_images: list[torch.Tensor] = []
        self.base_image_count = 0
        self.first: tuple[float, int] | None = None
        self.class_tokens = groups[self.names.index(CLASS_GROUP)][1]
        # Per step index: chains evaluated there, verified failures there, queries spent there.
        self.reached = [0] * config.steps
        self.hits = [0] * config.steps
        self.spent = [0.0] * config.steps
        self.start = 0.0

    # -- chains ------------------------------------------------------------------------------------

    def _new_chains(self, n: int) -> _Chains:
        ids = torch.arange(self.next_chain, self.next_chain + n, dtype=torch.int64)
        self.next_chain += n
        self.counts["chains"] += n
        seeds = torch.tensor([derive_seed(self.seed, "sage-chain", int(i)) for i in ids], dtype=torch.int64)
        z = sample_z(self.G, seeds)
        tokens = self.G.conditioning.rows(self.G.conditioning.sample(seeds, stream=PROMPT_STREAM))
        if self.fixed:
            for row, chain in enumerate(ids.tolist()):
                for group, value in self.fixed[chain % len(self.fixed)].items():
                    tokens[row, self.names.index(group)] = value
        tokens = tokens.to(self.device)
        delta = None if self.layers == 0 else torch.zeros(n, self.layers, int(self.G.w_dim), device=self.device)
        return _Chains(tokens, z, delta, torch.zeros(n, int(self.G.w_dim), device=self.device),
                       torch.zeros(n, dtype=torch.long, device=self.device), ids.to(self.device))

    @staticmethod
    def _cat(a: _Chains, b: _Chains) -> _Chains:
        return _Chains(torch.cat([a.tokens, b.tokens]), torch.cat([a.z, b.z]),
                       None if a.delta is None else torch.cat([a.delta, b.delta]), torch.cat([a.start_w, b.start_w]),
                       torch.cat([a.step, b.step]), torch.cat([a.chain, b.chain]))

    # -- one evaluation ----------------------------------------------------------------------------

    def _evaluate(self, tokens: torch.Tensor, z: torch.Tensor, delta: torch.Tensor | None, c: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, _Verdict]:
        cfg = self.cfg
        images, ws, _ = render_prompts(self.G, tokens, z, delta, c, truncation_psi=cfg.truncation_psi, noise_mode=cfg.noise_mode)
        keys = torch.arange(self.queries, self.queries + images.shape[0], dtype=torch.int64)
        self.queries += images.shape[0]
        labels = tokens[:, self.judge.class_col]
        logits = self.judge.model_logits(self.net, images)
        index = self.judge.model_index.to(logits.device)[labels.to(logits.device)]
        own = logits.gather(1, index[:, None])[:, 0]
        other = logits.scatter(1, index[:, None], float("-inf")).amax(1)
        margin = other - own
        members, oracle_ok, oracle_prob, oracle_pred = self.judge.oracle_verdict(self.judge.member_probs(images, self.oracle_nets), labels)
        # Penalised from a little above the verification threshold, so accepted codes keep a margin;
        # under "all" every oracle is held there, under "mean" their mean.
        target = min(0.999, cfg.oracle_threshold + 0.5 * (1.0 - cfg.oracle_threshold))
        held = members if cfg.oracle_agreement == "all" else members.mean(0, keepdim=True)
        penalty = F.relu(math.log(target) - held.clamp_min(1e-12).log().to(margin.device)).mean(0)
        if self.judge.token_scorer is not None:
            # The same hinge on the probability that each attribute token is still rendered.
            for group, log_probs in self.judge.token_scorer(images).items():
                if group in self.names and group != CLASS_GROUP:
                    wanted = tokens[:, self.names.index(group)].to(log_probs.device)
                    seen = log_probs.gather(1, wanted[:, None])[:, 0].to(margin.device)
                    penalty = penalty + F.relu(math.log(target) - seen)
        objective = margin.clamp(max=cfg.loss_cap) - cfg.oracle_weight * penalty
        with torch.no_grad():
            probs = logits.detach().softmax(1)
            confidence, prediction = probs.max(1)
            fooled = (prediction != index) & (confidence >= cfg.min_confidence)
            oracle_pred, oracle_ok = oracle_pred.to(labels.device), oracle_ok.to(labels.device)
            tokens_ok = self.judge.verify_tokens(images, tokens).to(labels.device)
            score = self.prior.score(z, ws, tokens).to(labels.device)
            in_dist = score <= 1.0 if cfg.require_in_distribution else torch.ones_like(fooled)
            fooled = fooled.to(labels.device)
            verified = fooled & oracle_ok & tokens_ok & in_dist
            values = self._run_checks(verified, images, tokens, z, delta, keys)
        verdict = _Verdict(objective, margin.detach(), prediction.to(labels.device), confidence.to(labels.device),
                           oracle_prob.to(labels.device), oracle_pred, tokens_ok, score, fooled, oracle_ok, verified, values)
        self._count(verdict, in_dist)
        return images, ws, verdict

    def _run_checks(self, verified: torch.Tensor, images: torch.Tensor, tokens: torch.Tensor, z: torch.Tensor,
                    delta: torch.Tensor | None, keys: torch.Tensor) -> torch.Tensor:
        """Run the candidate checks on the rows ``verified`` so far; clears the rows they reject (in place); their values ``[N, C]``."""
        names = self.checks.names if self.checks is not None else ()
        values = torch.full((verified.shape[0], len(names)), float("nan"))
        rows = verified.nonzero().squeeze(1)
        if not names or not rows.numel():
            return values
        # Checks spend queries too: candidates the budget cannot pay for stay unverified.
        room = max(0, self.cfg.budget_queries - self.queries) // max(1, self.checks.cost)
        if rows.numel() > room:
            self.counts["unchecked_budget"] = self.counts.get("unchecked_budget", 0) + rows.numel() - room
            verified[rows[room:]] = False
            rows = rows[:room]
            if not rows.numel():
                return values
        ok, found, spent = self.checks(images[rows].detach(), tokens[rows], z[rows].detach(),
                                       None if delta is None else delta[rows].detach(), keys[rows.cpu()])
        self.queries += int(spent)
        self.counts["check_queries"] += int(spent)
        values[rows.cpu()] = found.float().cpu()
        for j, name in enumerate(names):
            key = f"rejected_{name}"
            self.counts[key] = self.counts.get(key, 0) + int((~ok[:, j]).sum())
        verified[rows] = ok.all(1).to(verified.device)
        return values

    def _count(self, v: _Verdict, in_dist: torch.Tensor) -> None:
        c = self.counts
        c["evaluated"] += int(v.fooled.numel())
        c["fooled"] += int(v.fooled.sum())
        c["rejected_oracle"] += int((v.fooled & ~v.oracle_ok).sum())
        c["fooled_oracle_ok"] += int((v.fooled & v.oracle_ok).sum())
        c["rejected_tokens"] += int((v.fooled & v.oracle_ok & ~v.tokens_ok).sum())
        c["rejected_distribution"] += int((v.fooled & v.oracle_ok & v.tokens_ok & ~in_dist).sum())

    def _record(self, rows: torch.Tensor, chains: _Chains, images: torch.Tensor, ws: torch.Tensor, v: _Verdict,
                tokens: torch.Tensor, z: torch.Tensor, delta: torch.Tensor | None) -> None:
        elapsed = time.monotonic() - self.start
        model_names = self.judge.model.class_names
        for r in rows.tolist():
            if self.cfg.max_failures is not None and len(self.failures) >= self.cfg.max_failures:
                return
            label = int(tokens[r, self.judge.class_col])
            pred = int(v.prediction[r])
            self.failures.append(Failure(
                tokens=self.G.conditioning.token_names(tokens[r].tolist()),
                token_ids=[int(t) for t in tokens[r].tolist()],
                label=label,
                label_name=self.class_tokens[label],
                prediction=pred,
                prediction_name=model_names[pred] if pred < len(model_names) else str(pred),
                confidence=float(v.confidence[r]),
                oracle_prob=float(v.oracle_prob[r]),
                oracle_prediction=self.class_tokens[int(v.oracle_prediction[r])],
                in_distribution=float(v.score[r]),
                checks=self._check_record(v, r),
                z=z[r].detach().float().cpu().clone(),
                delta=None if delta is None else delta[r].detach().float().cpu().clone(),
                w=ws[r].detach().float().mean(0).cpu(),
                start_w=chains.start_w[r].detach().float().cpu().clone(),
                query=self.queries,
                seconds=elapsed,
                chain=int(chains.chain[r]),
                step=int(chains.step[r]),
                image=images[r].detach().float().cpu().clone() if self.cfg.keep_images else None,
            ))
            if self.first is None:
                self.first = (elapsed, self.queries)

    def _check_record(self, v: _Verdict, row: int) -> dict[str, float]:
        """Every check's value on a recorded failure: the judge's (``oracles``, ``tokens``, ``in_distribution``) and the candidate checks'."""
        out = {"oracles": float(v.oracle_prob[row]), "in_distribution": float(v.score[row])}
        if self.judge.token_verifier is not None:
            out["tokens"] = 1.0
        for j, name in enumerate(self.checks.names if self.checks is not None else ()):
            out[name] = float(v.checks[row, j])
        return out

    def _note_starts(self, chains: _Chains, images: torch.Tensor, ws: torch.Tensor, v: _Verdict) -> None:
        fresh = (chains.step == 0).nonzero().squeeze(1)
        if not fresh.numel():
            return
        chains.start_w[fresh] = ws[fresh].detach().float().mean(1)
        self.base_tokens.append(chains.tokens[fresh].detach().cpu())
        self.base_predictions.append(v.prediction[fresh].detach().cpu())
        room = self.cfg.baseline_images - self.base_image_count
        if room > 0:
            part = images[fresh[:room]].detach().float().cpu()
            self.base_images.append(part)
            self.base_image_count += part.shape[0]

    # -- steps -------------------------------------------------------------------------------------

    def _latent_step(self, chains: _Chains, grad: torch.Tensor, mapped: torch.Tensor) -> None:
        cfg = self.cfg
        with torch.no_grad():
            if self.layers == 0:
                step = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
                chains.z = self.prior.z.project(chains.z + cfg.step_size * math.sqrt(chains.z.shape[1]) * step)
                return
            scale = cfg.step_size * math.sqrt(grad.shape[-1] * grad.shape[1])
            delta = chains.delta + scale * self.prior.w.whiten_step(grad)
            mapped_layers = mapped.detach()[:, : self.layers] if self.layers > 1 else mapped.detach()[:, :1]
            ws = self.prior.w.project(mapped_layers + delta, chains.tokens, margin=_PROJECTION_MARGIN)
            chains.delta = ws - mapped_layers

    def _prompt_step(self, chains: _Chains, rows: torch.Tensor, grad_c: torch.Tensor, current: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy coordinate step on the prompts of ``rows``: ``(rows that ended at a verified failure, rows whose prompt changed)``."""
        cfg = self.cfg
        k = cfg.prompt_candidates
        sizes = [len(t) for _, t in self.groups]
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        n = rows.numel()
        # Score of every swap (group, token): first-order change of the objective, -inf for the current token.
        scores, swaps = [], []
        for col in self.search_cols:
            a, size = offsets[col], sizes[col]
            g = grad_c[rows][:, a: a + size]
            cur = chains.tokens[rows, col]
            s = g - g.gather(1, cur[:, None])
            s = s.scatter(1, cur[:, None], float("-inf"))
            scores.append(s)
            swaps += [(col, t) for t in range(size)]
        if not swaps:
            empty = torch.zeros(0, dtype=torch.long, device=rows.device)
            return empty, empty
        table = torch.cat(scores, dim=1)  # [n, swaps]
        k = min(k, table.shape[1])
        top = torch.topk(table, k, dim=1, sorted=True).indices  # ties: lowest index (deterministic)
        valid = torch.isfinite(table.gather(1, top))
        cand = chains.tokens[rows].repeat_interleave(k, 0).clone()
        for j, (col, tok) in enumerate(swaps):
            hit = (top.reshape(-1) == j)
            cand[hit, col] = tok
        z = chains.z[rows].repeat_interleave(k, 0)
        delta = None if chains.delta is None else chains.delta[rows].repeat_interleave(k, 0)
        with torch.no_grad():
            images, ws, v = self._evaluate(cand, z, delta)
        self.counts["prompt_steps"] += n
        obj = v.objective.detach().reshape(n, k).masked_fill(~valid, float("-inf"))
        verified = (v.verified.reshape(n, k) & valid)
        # A verified candidate wins outright; otherwise the best candidate replaces the prompt if it is better.
        ranked = torch.where(verified, obj + 1e6, obj)
        best = ranked.argmax(1)
        pick = torch.arange(n, device=rows.device) * k + best
        hit_rows = verified.any(1)
        improve = (obj.gather(1, best[:, None])[:, 0] > current[rows]) | hit_rows
        chains.tokens[rows[improve]] = cand[pick[improve]]
        self.counts["prompt_swaps"] += int(improve.sum())
        found = hit_rows.nonzero().squeeze(1)
        if found.numel():
            self._record_picked(rows[found], chains, images, ws, v, cand, z, delta, pick[found])
        return rows[found], rows[improve]

    def _record_picked(self, chain_rows: torch.Tensor, chains: _Chains, images: torch.Tensor, ws: torch.Tensor, v: _Verdict,
                       cand: torch.Tensor, z: torch.Tensor, delta: torch.Tensor | None, picks: torch.Tensor) -> None:
        sub = chains.take(chain_rows)
        self._record(torch.arange(picks.numel()), sub, images[picks], ws[picks], _select(v, picks), cand[picks], z[picks],
                     None if delta is None else delta[picks])

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> SageResult:
        cfg = self.cfg
        from robust.progress import progress

        self.start = time.monotonic()
        cpu = time.process_time()
        stopped = "queries"
        chains = self._new_chains(min(cfg.batch_size, cfg.budget_queries))
        bar = progress(total=cfg.budget_queries, desc=f"sage {cfg.method}", unit="queries", enabled=self.progress)
        try:
            while True:
                if cfg.max_failures is not None and len(self.failures) >= cfg.max_failures:
                    stopped = "max_failures"
                    break
                if cfg.budget_seconds is not None and time.monotonic() - self.start >= cfg.budget_seconds:
                    stopped = "time"
                    break
                left = cfg.budget_queries - self.queries
                if left <= 0:
                    break
                if chains.tokens.shape[0] > left:
                    chains = chains.take(torch.arange(left, device=self.device))
                before = self.queries
                chains = self._iteration(chains)
                bar.update(self.queries - before)
                bar.set_postfix(failures=len(self.failures), refresh=False)
        finally:
            bar.close()
        seconds = time.monotonic() - self.start
        cpu = time.process_time() - cpu
        counts = dict(self.counts)
        counts.update({f"reached_step_{t}": n for t, n in enumerate(self.reached) if n})
        counts.update({f"found_at_step_{t}": n for t, n in enumerate(self.hits) if n})
        return SageResult(
            failures=self.failures, queries=self.queries, seconds=seconds, cpu_seconds=cpu, stopped=stopped, config=cfg, seed=self.seed,
            counts=counts, prior=self.prior.describe(), groups=self.groups, model_classes=list(self.judge.model.class_names),
            baseline_tokens=torch.cat(self.base_tokens) if self.base_tokens else torch.zeros(0, len(self.groups), dtype=torch.long),
            baseline_predictions=torch.cat(self.base_predictions) if self.base_predictions else torch.zeros(0, dtype=torch.long),
            baseline_images=torch.cat(self.base_images) if self.base_images else None,
            first_failure_seconds=self.first[0] if self.first else None, first_failure_query=self.first[1] if self.first else None,
        )

    def _iteration(self, chains: _Chains) -> _Chains:
        cfg = self.cfg
        n = chains.tokens.shape[0]
        prompt_rows = torch.zeros(0, dtype=torch.long, device=self.device)
        if self.gradient and self.search_cols:
            due = ((chains.step + 1) % cfg.prompt_every == 0) & (chains.step + 1 < cfg.steps)
            prompt_rows = due.nonzero().squeeze(1)
        # The prompt step runs only where the whole iteration fits the budget.
        if prompt_rows.numel() and self.queries + n + prompt_rows.numel() * cfg.prompt_candidates > cfg.budget_queries:
            prompt_rows = prompt_rows[: max(0, (cfg.budget_queries - self.queries - n) // cfg.prompt_candidates)]
        if not self.gradient:
            with torch.no_grad():
                images, ws, v = self._evaluate(chains.tokens, chains.z, chains.delta)
            self._note_starts(chains, images, ws, v)
            found = v.verified.nonzero().squeeze(1)
            self._record(found, chains, images, ws, v, chains.tokens, chains.z, chains.delta)
            return self._new_chains(n)

        latent = (chains.z if self.layers == 0 else chains.delta).detach().requires_grad_(True)
        c = self.G.conditioning.encode(chains.tokens).detach().requires_grad_(prompt_rows.numel() > 0)
        with torch.enable_grad():
            z = latent if self.layers == 0 else chains.z
            delta = None if self.layers == 0 else latent
            images, ws, v = self._evaluate(chains.tokens, z, delta, c)
            inputs = [latent] + ([c] if prompt_rows.numel() else [])
            grads = torch.autograd.grad(v.objective.sum(), inputs)
        self._note_starts(chains, images, ws, v)
        found = v.verified.nonzero().squeeze(1)
        self._record(found, chains, images, ws, v, chains.tokens, chains.z, chains.delta)
        done = v.verified.clone()
        # The mapped ws (before the offset) are needed to project W codes.
        mapped = ws.detach() - (0 if chains.delta is None else chains.delta.detach())
        if prompt_rows.numel():
            prompt_rows = prompt_rows[~done[prompt_rows]]
        # A chain whose prompt changed skips this latent step: its gradient and mapped w belong to the old prompt.
        keep = ~done
        if prompt_rows.numel():
            hits, swapped = self._prompt_step(chains, prompt_rows, grads[1].detach(), v.objective.detach())
            done[hits] = True
            keep[swapped] = False
        self._tally(chains.step, done, prompt_rows)
        keep &= ~done
        self._latent_step_rows(chains, keep, grads[0].detach(), mapped)
        chains.step = chains.step + 1
        finish = done | (chains.step >= cfg.steps)
        if cfg.adaptive_restart:
            worth = torch.tensor([self._worth_continuing(s) for s in range(cfg.steps)] + [False], device=chains.step.device)
            finish |= ~worth[chains.step.clamp_max(cfg.steps)]
        if bool(finish.any()):
            survivors = chains.take((~finish).nonzero().squeeze(1))
            chains = self._cat(survivors, self._new_chains(int(finish.sum())))
        return chains

    def _tally(self, steps: torch.Tensor, done: torch.Tensor, prompt_rows: torch.Tensor) -> None:
        cost = torch.ones_like(steps, dtype=torch.float64)
        cost[prompt_rows] += self.cfg.prompt_candidates
        for t, hit, q in zip(steps.tolist(), done.tolist(), cost.tolist()):
            self.reached[t] += 1
            self.hits[t] += int(hit)
            self.spent[t] += q

    def _worth_continuing(self, step: int) -> bool:
        """Whether going on from ``step`` has found failures at least as cheaply as fresh samples have.

        Success per query of a fresh sample (step 0) against the best success per query of going
        on to any later horizon, both from the counts so far; a step without data yet counts as
        promising (an even chance), so every step gets explored before it is judged.
        """
        if step <= 0:
            return True
        fresh = (self.hits[0] + 0.5) / (self.reached[0] + 1.0) / max(1.0, self.spent[0] / max(1, self.reached[0]))
        alive, found, cost, best = 1.0, 0.0, 0.0, 0.0
        for u in range(step, self.cfg.steps):
            hazard = (self.hits[u] + 1.0) / (self.reached[u] + 2.0)
            per_chain = self.spent[u] / self.reached[u] if self.reached[u] else 1.0
            cost += alive * per_chain
            found += alive * hazard
            alive *= 1.0 - hazard
            best = max(best, found / cost)
        return best >= fresh

    def _latent_step_rows(self, chains: _Chains, rows: torch.Tensor, grad: torch.Tensor, mapped: torch.Tensor) -> None:
        if not bool(rows.any()):
            return
        idx = rows.nonzero().squeeze(1)
        sub = chains.take(idx)
        self._latent_step(sub, grad[idx], mapped[idx])
        chains.z[idx] = sub.z
        if chains.delta is not None:
            chains.delta[idx] = sub.delta


def _select(v: _Verdict, idx: torch.Tensor) -> _Verdict:
    return _Verdict(*(getattr(v, f.name)[idx] for f in fields(_Verdict)))


# -- failure regions ----------------------------------------------------------------------------------

def neighbour_codes(z: torch.Tensor, delta: torch.Tensor | None, root: torch.Tensor | None, radius: torch.Tensor,
                    seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Codes at ``radius [N]`` (a fraction of the prior's typical norm) from ``(z, delta)`` in a random direction per seed.

    Without ``delta`` (a ``z`` search) the step is in ``z`` (norm ``sqrt(z_dim)``); otherwise it is
    added to every layer of ``delta`` as ``root @ u`` for a unit ``u`` (``root``: the prompt prior's
    whitening root, norm ``sqrt(w_dim)`` whitened units).
    """
    if delta is None:
        u = noise.normal(seeds, (z.shape[1],)).to(z.device)
        return z + (radius * math.sqrt(z.shape[1]))[:, None] * u / u.norm(dim=1, keepdim=True).clamp_min(1e-12), None
    u = noise.normal(seeds, (delta.shape[-1],)).to(delta.device)
    u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
    step = (root.to(u.device) @ u.T).T * (radius.to(u.device) * math.sqrt(delta.shape[-1]))[:, None]
    return z, delta + step[:, None, :]


@dataclass
class RegionResult:
    """How far from each failing latent the failure persists.

    ``still_failing[i, j]``: share of ``samples`` random neighbours at radius ``radii[j]`` that are
    still verified failures (model fooled, oracle and token checks passed); ``radius[i]``: the
    largest radius at which at least ``level`` of them are (0 when none). Radii are fractions of
    the prior's typical norm: ``sqrt(z_dim)`` for ``z``, ``sqrt(w_dim)`` whitened units for ``w``.
    """

    indices: list[int]
    radii: list[float]
    still_failing: torch.Tensor
    radius: torch.Tensor
    level: float
    queries: int

    def curve(self) -> list[float]:
        """Mean share still failing at each radius (over the measured failures)."""
        return [float(v) for v in self.still_failing.mean(0)] if self.still_failing.numel() else []

    def to_dict(self) -> dict[str, Any]:
        return {"indices": list(self.indices), "radii": list(self.radii), "level": self.level, "queries": self.queries,
                "still_failing": self.still_failing.tolist(), "radius": self.radius.tolist(), "curve": self.curve()}


def failure_regions(
    generator: Any,
    model: Any,
    oracles: Classifier | Sequence[Classifier],
    result: SageResult,
    indices: Sequence[int] | None = None,
    *,
    radii: Sequence[float] = (0.05, 0.1, 0.2, 0.4),
    samples: int = 8,
    level: float = 0.5,
    token_verifier: TokenVerifier | None = None,
    batch_size: int = 128,
) -> RegionResult:
    """Measure the failure region around failures of ``result`` (all by default) by random neighbours.

    Each neighbour is the failing code plus a random direction (seeded by the failure's chain and
    the neighbour's index) scaled to the radius, in the space the search used; neighbours keep the
    failure's prompt. Costs ``len(indices) * len(radii) * samples`` generator queries. Sets
    ``region_radius`` on the failures it measures.
    """
    model, oracles = _check_models(model, oracles, "random")
    cfg = result.config
    groups = Conditioning.of(generator, CLASS_GROUP).groups
    names = [g for g, _ in groups]
    indices = list(range(len(result.failures))) if indices is None else [int(i) for i in indices]
    radii = [float(check_number(r, "radii", low=0)) for r in radii]
    samples = int(check_number(samples, "samples", low=1, integer=True))
    judge = Judge(model, oracles, groups[names.index(CLASS_GROUP)][1], token_verifier, names, cfg.oracle_threshold, cfg.min_confidence,
                  agreement=cfg.oracle_agreement)
    root = None if cfg.space == "z" else prompt_prior(generator, cfg.alpha, seed=derive_seed(result.seed, "sage-prior"),
                                                      truncation_psi=cfg.truncation_psi).root
    device = generator_device(generator)
    # One row per (failure, radius, sample).
    plan = [(i, j, s) for i in indices for j in range(len(radii)) for s in range(samples)]
    hits = torch.zeros(len(indices), len(radii), dtype=torch.float64)
    queries = 0
    position = {i: p for p, i in enumerate(indices)}
    for start in range(0, len(plan), batch_size):
        part = plan[start: start + batch_size]
        fails = [result.failures[i] for i, _, _ in part]
        tokens = torch.tensor([f.token_ids for f in fails], dtype=torch.long, device=device)
        seeds = torch.tensor([derive_seed(result.seed, "sage-region", f.chain, f.query, j, s) for f, (_, j, s) in zip(fails, part)],
                             dtype=torch.int64)
        r = torch.tensor([radii[j] for _, j, _ in part], device=device)
        z = torch.stack([f.z for f in fails]).to(device)
        delta = None if cfg.space == "z" else torch.stack([f.delta for f in fails]).to(device)
        z, delta = neighbour_codes(z, delta, root, r, seeds)
        with torch.no_grad():
            images, _, _ = render_prompts(generator, tokens, z, delta, truncation_psi=cfg.truncation_psi, noise_mode=cfg.noise_mode)
            verdict = judge.check(images, tokens)
        queries += images.shape[0]
        ok = (verdict["fooled"] & verdict["oracle_ok"] & verdict["tokens_ok"]).float().cpu()
        for (i, j, _), v in zip(part, ok.tolist()):
            hits[position[i], j] += v
    still = hits / samples
    radius = torch.zeros(len(indices), dtype=torch.float64)
    for p in range(len(indices)):
        passing = [radii[j] for j in range(len(radii)) if float(still[p, j]) >= level]
        radius[p] = max(passing) if passing else 0.0
        result.failures[indices[p]].region_radius = float(radius[p])
    return RegionResult(indices, radii, still, radius, float(level), queries)
