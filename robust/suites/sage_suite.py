"""Suite ``sage``: SAGE search of the generator's prompt and latent space for verified, natural failures.

Options, metrics and cases: :func:`sage_suite`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from robust.audit import SUITES, AuditContext, SuiteSkipped
from robust.errors import InputError
from robust.models import Classifier, load_classifier
from robust.registry import Spec
from robust.results import CaseResult, Curve, FailureExample, SuiteResult
from robust.validation import check_choice

DEFAULT_QUERIES = 1000
DEFAULT_REGIONS = 8
DEFAULT_MODES = 8
EXAMPLES_PER_MODE = 6


# -- inputs ---------------------------------------------------------------------------------------

def is_synthetic_generator(G: Any) -> bool:
    """A 32x32 RGB generator conditioned on the synthetic benchmark's class names."""
    from robust.synthetic import CLASS_NAMES

    cond = getattr(G, "conditioning", None)
    if cond is None or "class" not in cond.names:
        return False
    return cond.tokens("class") == list(CLASS_NAMES) and G.img_resolution == 32 and G.img_channels == 3


def load_oracle_spec(spec: str, device: torch.device | str | None = None) -> Classifier:
    """``synthetic`` (the shipped oracle of the generator metrics) or any model spec :func:`load_classifier` reads (a
    checkpoint, an ``.onnx`` file, ``package.module:attribute`` naming a Classifier)."""
    if spec == "synthetic":
        from robust.gan.metrics import load_oracle

        return load_oracle(device=device)
    return load_classifier(spec, device=device, argument="oracle")


def synthetic_ensemble(G: Any, device: torch.device | str | None) -> Any:
    """The shipped oracle ensemble (:mod:`robust.gan.oracles`) for a generator of the synthetic benchmark, else None."""
    from robust.gan.oracles import ensemble_available, load_ensemble

    if is_synthetic_generator(G) and ensemble_available():
        return load_ensemble(device=device)
    return None


def default_oracles(G: Any, specs: Sequence[str], device: torch.device | str | None) -> list[Classifier]:
    """The named oracles, or for a generator of the synthetic benchmark the class members of the shipped
    oracle ensemble (trained on real renders only; none used by the generator's training or snapshot choice)."""
    if specs:
        return [load_oracle_spec(s, device) for s in specs]
    ensemble = synthetic_ensemble(G, device)
    if ensemble is not None:
        return list(ensemble.classes)
    raise InputError("oracle", "an oracle classifier (oracle=path; the shipped ensemble only fits a generator of the synthetic benchmark)",
                     "none")


# -- verification beyond the oracles -----------------------------------------------------------------

@dataclass
class Verification:
    """What verifies candidates beyond the oracles: attribute-token oracles, the candidate checks
    (:class:`attacks.sage_verify.Verifier`), and the reference classifier of the false-failure estimate.
    ``skipped``: checks asked for (or on by default) that could not run, with the reason."""

    token_verifier: Any = None
    token_scorer: Any = None
    checks: Any = None
    reference: Classifier | None = None
    reference_accuracy: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        out = ["oracles", "in_distribution"] + (["tokens"] if self.token_verifier is not None else [])
        return out + (list(self.checks.names) if self.checks is not None else [])

    def describe(self) -> dict[str, Any]:
        from attacks.sage_verify import DESCRIPTIONS

        out: dict[str, Any] = {"checks": {n: DESCRIPTIONS[n] for n in self.names()}, "skipped": dict(self.skipped),
                               "reference": self.reference.name if self.reference is not None else None,
                               "reference_accuracy": self.reference_accuracy}
        if self.checks is not None:
            out["calibration"] = self.checks.describe()
        return out


def _real_bank(oracles: Sequence[Classifier], reals: Any, G: Any, config: Any, seed: int) -> tuple[Any, str | None]:
    """The realism check's real images in the oracles' feature space, or ``(None, why not)``."""
    from attacks.sage_verify import real_bank_for

    if reals is None:
        return None, "no real images given"
    if not all(hasattr(o.model, "forward_features") for o in oracles if hasattr(o, "model")) or any(not o.has_gradients for o in oracles):
        return None, "the oracles have no feature layer (forward_features) to compare images in"
    tokens = G.conditioning.tokens("class")
    if len(reals) < 20 or not all(t in reals.class_names for t in tokens):
        return None, f"the real images ({len(reals)}, classes {', '.join(reals.class_names[:5])}) do not cover the generator's classes"
    return real_bank_for(oracles, reals.images, reals.labels, tokens, reals.class_names, config, seed=seed), None


def default_verification(G: Any, oracles: Sequence[Classifier], *, checks: Any = "auto", reals: Any = None, reference: str | None = None,
                         encoder: Any = None, device: torch.device | str | None = None, seed: int = 0) -> Verification:
    """The verification of a SAGE run: ``checks`` (``auto``: realism where real images and the oracles'
    features allow, and twins; ``none``; or names joined by ``+``), token oracles and the
    reference of the false-failure estimate (``reference``; for a generator of the synthetic
    benchmark, the shipped ensemble's held-out member)."""
    from attacks.sage_verify import Verifier, VerifyConfig

    out = Verification()
    ensemble = synthetic_ensemble(G, device)
    if ensemble is not None:
        out.token_verifier = ensemble.token_verifier(G.conditioning.groups)
        out.token_scorer = ensemble.token_scorer(G.conditioning.groups)
    if reference is not None:
        out.reference = load_classifier(reference, device=device, argument="reference")
    elif ensemble is not None and ensemble.held_out:
        out.reference = ensemble.held_out[0]
        out.reference_accuracy = ensemble.held_out[0].extra.get("heldout_accuracy")
    else:
        out.skipped["false-failure estimate"] = "no reference classifier known to be right on real images (reference=path)"
    auto = str(checks) == "auto"
    wanted = ["realism", "twins"] if auto else ([] if str(checks) == "none" else list(checks) if not isinstance(checks, str)
                                                  else str(checks).split("+"))
    config = VerifyConfig(checks=tuple(wanted))
    bank = None
    if "realism" in wanted:
        bank, why = _real_bank(oracles, reals, G, config, seed)
        if bank is None:
            if not auto:
                raise InputError("realism check", "real images of the generator's classes and oracles with features", why)
            out.skipped["realism"] = why
            config = replace(config, checks=tuple(c for c in config.checks if c != "realism"))
    if "reinversion" in wanted and encoder is None:
        from robust.gan.encoder import encoder_for

        encoder = encoder_for(G, "auto")
    if config.checks:
        out.checks = Verifier(config, bank=bank, encoder=encoder)
    return out


def search_groups(text: Any, G: Any = None) -> tuple[str, ...] | None:
    """``auto``/None (the search's default), ``all`` (every group of ``G``), ``none`` or groups joined by ``+``."""
    if text is None or str(text) == "auto":
        return None
    if str(text) == "all":
        if G is None:
            raise InputError("prompt groups", "a generator to take 'all' groups from", None)
        return tuple(G.conditioning.names)
    if str(text) == "none":
        return ()
    return tuple(str(text).split("+"))


# -- running a whole SAGE analysis -------------------------------------------------------------------

@dataclass
class SageRun:
    """A search, its baseline, modes, regions and (on the synthetic benchmark) the ground-truth check."""

    result: Any  # attacks.sage.SageResult
    baseline: Any | None
    modes: list[Any]
    regions: Any | None
    ground_truth: Any | None
    extras: dict[str, Any] = field(default_factory=dict)
    verification: Verification | None = None
    estimate: Any | None = None  # attacks.sage_verify.FalseFailureEstimate

    def metrics(self) -> dict[str, float]:
        r = self.result
        out = {
            "failures": float(len(r.failures)),
            "queries": float(r.queries),
            "failures_per_1k_queries": r.failures_per_1k_queries,
            "first_failure_s": r.first_failure_seconds if r.first_failure_seconds is not None else math.inf,
            "first_failure_query": float(r.first_failure_query) if r.first_failure_query is not None else math.inf,
            "failures_per_minute": r.failures_per_minute,
            "ood_rate": r.ood_rate,
            "oracle_rejections": float(r.counts["rejected_oracle"]),
            "modes": float(len(self.modes)),
            "top_mode_share": self.modes[0].share if self.modes else 0.0,
        }
        if self.baseline is not None:
            b = self.baseline.failures_per_1k_queries
            out["random_failures_per_1k_queries"] = b
            out["ratio_vs_random"] = r.failures_per_1k_queries / b if b > 0 else (math.inf if r.failures else math.nan)
        if self.regions is not None and self.regions.radius.numel():
            out["region_radius"] = float(self.regions.radius.median())
        if self.ground_truth is not None:
            out["ground_truth_confirmed"] = self.ground_truth.confirmed_rate
        if self.estimate is not None:
            out["false_failure_estimate"] = self.estimate.rate
        for key, value in r.counts.items():
            if key.startswith("rejected_") and key not in ("rejected_oracle", "rejected_tokens", "rejected_distribution"):
                out[key] = float(value)
        return out


def run_sage(
    generator: Any,
    model: Classifier,
    oracles: Sequence[Classifier],
    config: Any,
    *,
    seed: int = 0,
    synthetic: bool | None = None,
    verification: Verification | None = None,
    regions: int = DEFAULT_REGIONS,
    baseline: bool = True,
    directions: Any = None,
    progress: bool | None = None,
) -> SageRun:
    """Search, optionally the random baseline, failure modes, failure regions, the false-failure estimate and the ground-truth check.

    ``verification`` (default: :func:`default_verification` without real images) holds the token
    oracles, the candidate checks and the reference classifier of the false-failure estimate
    (:func:`attacks.sage_verify.estimate_false_failures`, run when there is one). ``synthetic``
    (default: detected) uses the benchmark's factor regressor, a measuring instrument only, to
    describe the modes by their factors and run :func:`attacks.sage_synthetic.ground_truth_check`.
    """
    from attacks.sage import failure_regions, random_search, sage_search
    from attacks.sage_modes import failure_modes
    from attacks.sage_verify import estimate_false_failures
    from robust.gan.latent import generator_device

    synthetic = is_synthetic_generator(generator) if synthetic is None else synthetic
    v = verification if verification is not None else default_verification(generator, oracles, device=generator_device(generator),
                                                                          seed=seed)
    judge = None
    if synthetic:
        from attacks.sage_synthetic import SyntheticJudge
        from robust.gan.metrics import oracle_available

        if oracle_available():
            judge = SyntheticJudge(generator, device=generator_device(generator))
    kwargs = {"token_verifier": v.token_verifier, "checks": v.checks, "progress": progress}
    result = sage_search(generator, model, oracles, config, seed=seed, token_scorer=v.token_scorer, **kwargs)
    base = random_search(generator, model, oracles, config, seed=seed, **kwargs) if baseline else None
    estimate = None
    if v.reference is not None:
        estimate = estimate_false_failures(generator, v.reference, oracles, result, token_scorer=v.token_scorer,
                                           reference_accuracy=v.reference_accuracy, **kwargs)
    measured = None
    if regions > 0 and result.failures:
        count = min(regions, len(result.failures))
        picks = torch.linspace(0, len(result.failures) - 1, count).round().long().unique().tolist()
        measured = failure_regions(generator, model, oracles, result, picks, token_verifier=v.token_verifier)
    estimates = judge.factor_estimates(result) if judge is not None and result.failures else None
    phrases = None
    if synthetic:
        from attacks.sage_synthetic import PHRASES

        phrases = PHRASES
    if estimates is None and directions is None:
        directions = default_directions(generator)
    modes = failure_modes(result, factors=estimates, directions=directions, phrases=phrases)
    truth = None
    if judge is not None and result.failures:
        from attacks.sage_synthetic import ground_truth_check

        truth = ground_truth_check(model, result, modes, size=int(generator.img_resolution), seed=seed)
    return SageRun(result, base, modes, measured, truth, verification=v, estimate=estimate)


def default_directions(G: Any) -> Any:
    """Directions that name a mode's dominant latent move: the shipped ones for the demo generator, else SeFa's."""
    from robust.gan import Generator
    from robust.gan.directions import directions_for, find_directions

    if not isinstance(G, Generator):
        return None
    return directions_for(G, "auto") or find_directions(G, "sefa", k=16, calibrate=False)


def suite_result(run: SageRun, *, modes_shown: int = DEFAULT_MODES, name: str = "sage") -> SuiteResult:
    """The :class:`SuiteResult` of a :class:`SageRun`: metrics, one case (with images) per leading mode, tables."""
    from attacks.sage_modes import modes_table

    r = run.result
    model_index = {c: i for i, c in enumerate(r.model_classes)}
    cases = []
    for mode in run.modes[:modes_shown]:
        examples = []
        ranked = sorted(mode.indices, key=lambda i: (-r.failures[i].confidence, i))[:EXAMPLES_PER_MODE]
        for i in ranked:
            f = r.failures[i]
            examples.append(FailureExample(
                index=-1, label=model_index.get(f.label_name, f.label), prediction=f.prediction, confidence=f.confidence,
                description=f"{f.prompt}; oracle p={f.oracle_prob:.2f}; in-distribution score {f.in_distribution:.2f}",
                params={"prompt": f.prompt, "chain": f.chain, "step": f.step, "query": f.query, "oracle_prob": f.oracle_prob,
                        "in_distribution": f.in_distribution, "region_radius": f.region_radius, "checks": dict(f.checks)},
                seed=r.seed, image=f.image))
        metrics = {"failures": float(mode.count), "share": mode.share, "lift": mode.lift}
        if mode.region_radius is not None:
            metrics["region_radius"] = mode.region_radius
        if run.ground_truth is not None and mode.name in run.ground_truth.per_mode:
            metrics["ground_truth_confirmed"] = run.ground_truth.per_mode[mode.name]
        cases.append(CaseResult(mode.name, metrics, params={"description": mode.description, "tokens": dict(mode.tokens),
                                                           "dominant": mode.dominant}, n=mode.count, failures=examples))
    curves = []
    if run.regions is not None and run.regions.radii:
        curves.append(Curve("still failing", list(run.regions.radii), run.regions.curve(),
                            "neighbour radius (fraction of the prior's norm)", "share still a verified failure"))
    stats_rows = [["sage" if r.config.method == "gradient" else "random sampling (the run itself)", r.queries, len(r.failures), r.failures_per_1k_queries, r.first_failure_seconds, r.failures_per_minute]]
    if run.baseline is not None:
        b = run.baseline
        stats_rows.append(["random sampling", b.queries, len(b.failures), b.failures_per_1k_queries, b.first_failure_seconds,
                           b.failures_per_minute])
    tables = [modes_table(run.modes),
              {"title": "search vs random sampling (same checks, same budget)",
               "columns": ["method", "generator queries", "verified failures", "per 1k queries", "first failure (s)", "per minute"],
               "rows": stats_rows},
              {"title": "candidates that fooled the model",
               "columns": ["fooled", "rejected by the oracle", "rejected by the token check", "rejected as out of distribution"],
               "rows": [[r.counts["fooled"], r.counts["rejected_oracle"], r.counts["rejected_tokens"], r.counts["rejected_distribution"]]]},
              checks_table(run)]
    metrics = run.metrics()
    notes = [f"{len(r.failures)} verified failures in {r.queries} generator queries ({r.failures_per_1k_queries:.1f} per 1k; "
             f"search in {r.config.space}, stopped on {r.stopped})."]
    if run.baseline is not None and "ratio_vs_random" in metrics:
        notes.append(f"Random sampling under the same checks: {run.baseline.failures_per_1k_queries:.1f} per 1k queries "
                     f"(ratio {metrics['ratio_vs_random']:.3g}).")
    if run.modes:
        notes.append("Largest failure modes: " + "; ".join(f"{m.description}: {m.count}" for m in run.modes[:3]) + ".")
    notes += verification_notes(run)
    if run.ground_truth is not None:
        notes.append(f"Ground truth: {run.ground_truth.confirmed_rate:.0%} of failures reproduce when their mode's named factors are "
                     "re-rendered with the benchmark's renderer (other factors random).")
    details: dict[str, Any] = {"tables": tables, "notes": notes, "plot_cases": "failures", "search": r.summary(),
                               "modes": [m.to_dict() for m in run.modes]}
    if run.baseline is not None:
        details["baseline"] = run.baseline.summary()
    if run.regions is not None:
        details["regions"] = run.regions.to_dict()
    if run.verification is not None:
        details["verification"] = run.verification.describe()
    if run.estimate is not None:
        details["false_failure_estimate"] = run.estimate.to_dict()
    if run.ground_truth is not None:
        kept = ("confirmed_rate", "level", "renders", "per_mode")
        details["ground_truth"] = {k: v for k, v in run.ground_truth.to_dict().items() if k in kept}
    return SuiteResult(name, metrics=metrics, cases=cases, curves=curves, details=details,
                       params={"space": r.config.space, "queries": r.config.budget_queries, "seed": r.seed})


def checks_table(run: SageRun) -> dict[str, Any]:
    """A report table of every check a failure had to pass: what it asks and how many candidates it rejected."""
    from attacks.sage_verify import DESCRIPTIONS

    counts = run.result.counts
    rejected = {"oracles": counts["rejected_oracle"], "tokens": counts["rejected_tokens"], "in_distribution": counts["rejected_distribution"]}
    names = run.verification.names() if run.verification is not None else ["oracles", "in_distribution"]
    rows = [[n, DESCRIPTIONS[n], rejected.get(n, counts.get(f"rejected_{n}", 0))] for n in names]
    if run.verification is not None:
        rows += [[n, f"not run: {why}", "-"] for n, why in run.verification.skipped.items()]
    return {"title": "checks every reported failure passed (in order)", "columns": ["check", "what it asks", "candidates rejected"],
            "rows": rows}


def verification_notes(run: SageRun) -> list[str]:
    """The report's lines on the checks and the false-failure estimate."""
    v = run.verification
    notes = []
    if v is not None:
        notes.append("Checks: " + ", ".join(v.names()) + "." + (" Not run: " + "; ".join(f"{k} ({why})" for k, why in v.skipped.items()) + "."
                                                              if v.skipped else ""))
    if run.estimate is not None:
        text = run.estimate.text()
        notes.append(text[0].upper() + text[1:] + ".")
    return notes


def config_from_spec(spec: Spec, time_left: float | None = None, G: Any = None) -> Any:
    from attacks.sage import SageConfig

    opts = spec.options
    seconds = opts.get("seconds")
    seconds = float(seconds) if seconds is not None else None
    if time_left is not None:
        # The search, its random baseline and the false-failure estimate each get 30% of what is left; regions the rest.
        share = max(1.0, 0.3 * time_left)
        seconds = min(seconds, share) if seconds is not None else share
    kwargs: dict[str, Any] = {"budget_queries": int(opts.get("queries", DEFAULT_QUERIES)), "budget_seconds": seconds,
                              "search_groups": search_groups(opts.get("prompt"), G)}
    for key, field_name, cast in (("space", "space", str), ("batch", "batch_size", int), ("steps", "steps", int), ("agreement", "oracle_agreement", str),
                                  ("step_size", "step_size", float), ("threshold", "oracle_threshold", float),
                                  ("alpha", "alpha", float), ("confidence", "min_confidence", float)):
        if key in opts:
            kwargs[field_name] = cast(opts[key])
    return SageConfig(**kwargs)


_KNOWN = {"queries", "seconds", "space", "batch", "steps", "step_size", "prompt", "threshold", "alpha", "confidence", "regions", "baseline",
          "modes", "verify", "oracle", "method", "checks", "reference", "agreement"}
_METHODS = ("auto", "gradient", "random")


def search_method(option: Any, classifier: Classifier) -> str:
    """The search method for ``classifier``: ``auto`` picks the gradient search when it has gradients, else random sampling."""
    method = "auto" if option is None else str(option)
    if method not in _METHODS:
        raise InputError("sage method", " or ".join(_METHODS), method)
    if method == "auto":
        return "gradient" if classifier.has_gradients else "random"
    if method == "gradient" and not classifier.has_gradients:
        raise InputError("sage method", f"random or auto for {classifier.name}, which has no gradients (ONNX)", "gradient")
    return method


def check_sage_suite(spec: Spec) -> None:
    """The options a ``sage`` spec may take, its method and search settings (those that need no generator)."""
    unknown = sorted(set(spec.options) - _KNOWN)
    if unknown:
        raise InputError("sage options", ", ".join(sorted(_KNOWN)), unknown)
    check_choice(str(spec.options.get("method", "auto")), "sage method", _METHODS)
    config_from_spec(Spec(spec.name, spec.target, spec.at, {k: v for k, v in spec.options.items() if k != "prompt"}))


@SUITES.register("sage", description="SAGE search of the generator's prompt and latent space: verified natural failures, modes, regions",
                 check=check_sage_suite)
def sage_suite(ctx: AuditContext, spec: Spec) -> SuiteResult:
    """Needs a generator (``robust audit --generator demo``) and oracles: with a generator of the
    synthetic benchmark the shipped oracle ensemble (:mod:`robust.gan.oracles`), otherwise name them
    with ``oracle=path`` (several joined by ``+``; a robust checkpoint, an ``.onnx`` file or
    ``package.module:attribute``). Options: ``queries`` (generator queries, default 1000),
    ``seconds`` (wall time), ``space`` (z, w, w+), ``batch``, ``steps``, ``step_size``, ``prompt``
    (token groups the search may change joined by ``+``, ``auto``, ``all`` or ``none``), ``threshold`` (oracle
    probability), ``agreement`` (``all`` oracles or their ``mean``), ``confidence`` (the model's
    probability for its wrong class a failure needs), ``checks`` (candidate checks joined by ``+``:
    ``realism`` against the audited real images, ``twins``, ``reinversion``, ``stability``; ``auto``: realism where
    possible and twins; ``none``), ``reference`` (a classifier known to be right on real images, for
    the false-failure estimate; the ensemble's held-out member on the synthetic benchmark; one of
    the model's architecture trained on real images tracks the model's false failures more closely),
    ``regions`` (failures whose failure region is measured, default 8), ``baseline`` (also run random
    sampling with the same budget, default true), ``modes`` (cases shown, default 8), ``verify``
    (check attribute tokens with the ensemble's token oracles, default true), ``method`` (``auto``:
    the gradient search, or random sampling under the same checks for a model without gradients such
    as an ONNX file; ``gradient``; ``random``).

    Metrics: ``failures``, ``failures_per_1k_queries``, ``random_failures_per_1k_queries``,
    ``ratio_vs_random``, ``first_failure_s``, ``failures_per_minute``, ``ood_rate``, ``modes``,
    ``region_radius``, ``false_failure_estimate``, ``rejected_<check>``, and
    ``ground_truth_confirmed`` on the synthetic benchmark. One case per failure mode (the most
    distinctive and largest first), with its images; every failure records the value of each check.
    """
    if ctx.generator is None:
        raise SuiteSkipped("sage needs a generator (--generator demo or a checkpoint)")
    check_sage_suite(spec)
    method = search_method(spec.options.get("method"), ctx.classifier)
    G = ctx.generator
    from robust.gan.natural import model_kind

    if model_kind(G) == "swap":
        raise SuiteSkipped("sage searches a generator's latent and prompt space; a structure/appearance model has neither "
                           "(its swaps are audited by the natural and natra suites)")
    if getattr(G, "conditioning", None) is None:
        raise SuiteSkipped("sage needs a conditional generator (a class token group is the prompt)")
    drawn = (int(G.img_channels), int(G.img_resolution), int(G.img_resolution))
    if tuple(ctx.classifier.input_size) != drawn:
        raise SuiteSkipped("the generator draws {}x{}x{} images and the model takes {}x{}x{}".format(*drawn, *ctx.classifier.input_size))
    oracle_text = spec.options.get("oracle")
    try:
        oracles = default_oracles(G, str(oracle_text).split("+") if oracle_text else [], ctx.device)
    except InputError as exc:
        raise SuiteSkipped(str(exc)) from None
    config = replace(config_from_spec(spec, ctx.time_left(), G), method=method)
    # Random sampling is its own baseline: running it twice would only spend the budget again.
    baseline = bool(spec.options.get("baseline", True)) and method == "gradient"
    seed = ctx.seed_for("search")
    verification = default_verification(G, oracles, checks=spec.options.get("checks", "auto"), reals=ctx.data,
                                        reference=spec.options.get("reference"), device=ctx.device, seed=seed)
    if not bool(spec.options.get("verify", True)):
        verification.token_verifier = verification.token_scorer = None
    run = run_sage(G, ctx.classifier, oracles, config, seed=seed, verification=verification,
                   regions=int(spec.options.get("regions", DEFAULT_REGIONS)), baseline=baseline, progress=ctx.progress)
    suite = suite_result(run, modes_shown=int(spec.options.get("modes", DEFAULT_MODES)))
    if method == "random":
        reason = "has no gradients (ONNX)" if not ctx.classifier.has_gradients else "was asked for method=random"
        suite.details["notes"].insert(0, f"{ctx.classifier.name} {reason}: (prompt, z) were sampled at random under the same oracle, "
                                         "token and in-distribution checks instead of searched by gradients.")
        suite.params["method"] = "random"
    return suite
