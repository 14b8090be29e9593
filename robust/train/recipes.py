"""Training recipes: what each training image becomes before the loss, and the loss it pays.

A recipe turns a (shard of a) batch into one or more *views* (clean images, re-rendered images,
adversarial examples, corruptions, augmentations, natural transformations); the loop forwards
every view of every recipe in one pass of the network in training mode, and the recipe turns the
logits of its views into one loss per image. Recipes mix per batch by ratio
(``"0.5*natra+0.5*classic"``): each image of a global batch is given to exactly one recipe, in
proportion to the weights.

Randomness: every built-in recipe draws from per-image seeds (``batch.seeds``, through the
counter-based :mod:`robust.noise`, or the images' indices), so an image's view does not depend on
the batch it lands in, and a run split over processes equals the single-process run. Custom recipes
may use ``batch.generator`` (seeded by step, recipe and rank) instead.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from robust.data import ImageSet
from robust.errors import InputError
from robust.models import Classifier
from robust.registry import Registry, Spec, parse_number, parse_spec

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class RecipeContext:
    """What a recipe may check and prepare against before training starts (see :meth:`Recipe.bind`)."""

    classifier: Classifier
    data: ImageSet
    device: torch.device
    seed: int = 0
    generator: Any = None  # a robust.gan.Generator, for recipes that need one (natra)
    amp: bool = False  # bf16 autocast for the forward passes recipes make (attacks, searches)


@dataclass
class Batch:
    """The images one recipe receives in one step (on the training device).

    ``indices`` are positions in the training set (CPU), ``seeds`` per-image noise seeds that depend
    only on the run's seed, the epoch and the image's index.
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    seeds: torch.Tensor
    generator: torch.Generator
    step: int
    epoch: int


class Recipe(ABC):
    """One way to train: :meth:`views` builds the inputs, :meth:`loss` scores their logits per image.

    :meth:`views` runs with the network's parameters frozen; ``classifier(x)`` there is an eval-mode,
    differentiable forward (what attacks and worst-case searches need).
    """

    name: ClassVar[str] = "recipe"
    options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: Spec | str | None = None):
        spec = parse_spec(spec, "recipe") if isinstance(spec, str) else (spec or Spec(self.name))
        if spec.name != self.name:
            raise InputError("recipe spec", f"a {self.name} spec", str(spec))
        unknown = sorted(set(spec.options) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise InputError(f"recipe {spec.name} options", f"options among: {valid}", ", ".join(unknown))
        self.spec = spec

    @classmethod
    def from_spec(cls, spec: Spec) -> Recipe:
        return cls(spec)

    def bind(self, ctx: RecipeContext) -> None:
        """Check the recipe fits the model and data, and prepare what it needs (fail early, clearly)."""

    @abstractmethod
    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        """Images to forward in training mode, each ``[n, C, H, W]`` in ``[0, 1]``."""

    def loss(self, logits: list[torch.Tensor], labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        """Loss per image ``[n]`` from the logits of :meth:`views` (default: cross-entropy on the first view)."""
        return F.cross_entropy(logits[0].float(), labels, reduction="none", label_smoothing=label_smoothing)

    def __str__(self) -> str:
        return str(self.spec)


def eval_logits(classifier: Classifier, x: torch.Tensor, amp: bool) -> torch.Tensor:
    """Float32 logits of an eval-mode, differentiable forward (bf16 autocast when ``amp``)."""
    if not amp:
        return classifier.forward(x, check=False).float()
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        return classifier.forward(x, check=False).float()


RECIPES: Registry[type[Recipe]] = Registry("recipe")


def _option(spec: Spec, key: str, default: Any, kind: type = float) -> Any:
    value = spec.options.get(key, default)
    if value is None:
        return None
    try:
        if kind is bool:
            if isinstance(value, str):
                raise ValueError(value)
            return bool(value)
        if kind is float and isinstance(value, str):
            return parse_number(value, f"{spec.name} {key}")
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(f"recipe {spec.name} option {key}", f"a {kind.__name__}", value) from None


# -- the mixture ------------------------------------------------------------------------------------

_PART_RE = re.compile(r"^\s*(?:(?P<weight>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*\*)?\s*(?P<spec>.+?)\s*$")


@dataclass
class RecipeMix:
    """Recipes with their shares of every batch (weights normalised to sum to one)."""

    recipes: list[Recipe]
    weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.recipes:
            raise InputError("recipe", "at least one recipe", "none")
        if not self.weights:
            self.weights = [1.0] * len(self.recipes)
        if len(self.weights) != len(self.recipes) or any(not w > 0 for w in self.weights):
            raise InputError("recipe weights", "one positive weight per recipe", self.weights)
        total = float(sum(self.weights))
        self.weights = [float(w) / total for w in self.weights]

    def assign(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Recipe index per position of a batch of ``n``: counts follow the weights, places are random.

        Counts are the floors of ``weight * n`` plus the remaining images given to recipes drawn in
        proportion to their fractional parts, so every recipe gets its share on average.
        """
        if len(self.recipes) == 1:
            return torch.zeros(n, dtype=torch.long)
        w = torch.tensor(self.weights, dtype=torch.float64) * n
        counts = w.floor().long()
        rest = n - int(counts.sum())
        if rest > 0:
            extra = torch.multinomial((w - counts).float(), rest, replacement=False, generator=generator)
            counts[extra] += 1
        ids = torch.repeat_interleave(torch.arange(len(self.recipes)), counts)
        return ids[torch.randperm(n, generator=generator)]

    def __str__(self) -> str:
        if len(self.recipes) == 1:
            return str(self.recipes[0])
        return "+".join(f"{w:.4g}*{r}" for w, r in zip(self.weights, self.recipes))


def get_recipe(spec: str | Spec | Recipe) -> Recipe:
    """A recipe from a spec string (``"pgd:linf@8/255,steps=7"``), a parsed spec, or an instance."""
    if isinstance(spec, Recipe):
        return spec
    parsed = parse_spec(spec, "recipe") if isinstance(spec, str) else spec
    return RECIPES.get(parsed.name).from_spec(parsed)


def parse_recipes(spec: str | Recipe | RecipeMix | Sequence[str | Recipe]) -> RecipeMix:
    """``"erm"``, ``"natra+classic"``, ``"0.7*natra:gradient+0.3*erm"``, a recipe, or a list -> :class:`RecipeMix`."""
    if isinstance(spec, RecipeMix):
        return spec
    if isinstance(spec, Recipe):
        return RecipeMix([spec])
    if isinstance(spec, str):
        parts = [p for p in spec.split("+")]
        if any(not p.strip() for p in parts):
            raise InputError("recipe", "recipes joined by + such as natra+classic or 0.7*natra+0.3*erm", spec)
        recipes, weights = [], []
        for part in parts:
            match = _PART_RE.match(part)
            if match is None:
                raise InputError("recipe", "[weight*]name[:target][@value][,key=value...]", part)
            weights.append(float(match.group("weight")) if match.group("weight") else 1.0)
            recipes.append(get_recipe(match.group("spec")))
        return RecipeMix(recipes, weights)
    if isinstance(spec, Sequence):
        return RecipeMix([get_recipe(s) for s in spec])
    raise InputError("recipe", "a recipe spec string, Recipe, RecipeMix or list of them", type(spec).__name__)


# -- recipes that need nothing but the data -------------------------------------------------------

@RECIPES.register("erm")
class ERM(Recipe):
    """Empirical risk minimisation: the clean images, cross-entropy."""

    name = "erm"

    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        return [batch.images]


class CallableRecipe(Recipe):
    """A user function ``augment(x, y, generator) -> x'`` as a recipe (what :func:`robust.train.fit` takes)."""

    name = "callable"

    def __init__(self, augment: Augment):
        super().__init__()
        self.spec = Spec("callable", target=getattr(augment, "__name__", None))
        self.augment = augment

    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        out = self.augment(batch.images, batch.labels, batch.generator)
        if not isinstance(out, torch.Tensor) or out.shape != batch.images.shape:
            raise InputError("augment output", f"a tensor of shape {tuple(batch.images.shape)}", getattr(out, "shape", type(out).__name__))
        return [out]


def independent_factors(seeds: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every synthetic-benchmark factor drawn uniformly and independently, one draw per image seed."""
    from robust.noise import uniform
    from robust.synthetic import FACTORS

    u = uniform(seeds, (len(FACTORS),), stream=0x0AC1E)
    out: dict[str, torch.Tensor] = {}
    for k, f in enumerate(FACTORS):
        if f.is_categorical:
            out[f.name] = (u[:, k] * len(f.categories)).long().clamp_(max=len(f.categories) - 1)
        else:
            out[f.name] = f.low + (f.high - f.low) * u[:, k]
    return out


@RECIPES.register("oracle")
class Oracle(Recipe):
    """The upper bound on the synthetic benchmark: each image re-rendered, same class, fresh factors.

    Every nuisance factor is drawn independently (no shortcut survives), so this is training on the
    shift distribution itself. Needs only the labels; works on data with the benchmark's classes.
    """

    name = "oracle"

    def bind(self, ctx: RecipeContext) -> None:
        from robust.synthetic import CLASS_NAMES, SIZE_RANGE

        data = ctx.data
        if list(data.class_names) != list(CLASS_NAMES):
            raise InputError("oracle recipe data", "the synthetic benchmark's classes (" + ", ".join(CLASS_NAMES) + ")",
                             f"classes {data.class_names[:5]}...")
        h, w = data.size
        if data.channels != 3 or h != w or not SIZE_RANGE[0] <= h <= SIZE_RANGE[1]:
            raise InputError("oracle recipe data", f"square RGB images of {SIZE_RANGE[0]}-{SIZE_RANGE[1]} px", f"{data.channels}x{h}x{w}")
        self.size = h

    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        from robust.synthetic import render

        return [render(batch.labels, independent_factors(batch.seeds), self.size)]


def bind_generator(ctx: RecipeContext, recipe: str) -> Any:
    """The generator of ``ctx`` for a recipe that renders with it: checked to be a robust.gan.Generator
    that draws images of the data's shape, moved to the training device and put in eval mode."""
    from robust.gan import Generator

    G = ctx.generator
    if not isinstance(G, Generator):
        raise InputError(f"{recipe} recipe generator", "a robust.gan.Generator (harden(generator=...) or --generator)",
                         type(G).__name__ if G is not None else None)
    shape = (G.img_channels, G.img_resolution, G.img_resolution)
    if shape != (ctx.data.channels, *ctx.data.size):
        raise InputError(f"{recipe} recipe data", "images of the generator's shape {}x{}x{}".format(*shape),
                         "{}x{}x{}".format(ctx.data.channels, *ctx.data.size))
    return G.to(ctx.device).eval()


@RECIPES.register("generated")
class GeneratedSamples(Recipe):
    """Each image replaced by a sample of the generator conditioned on the image's label.

    Spec: ``generated[@psi][,center=condition|mean]``. Every sample gets a fresh z and, for a
    generator conditioned on attribute tokens besides ``class`` (texture, fill, ...), uniformly drawn
    tokens, so the nuisance factors the generator models are drawn independently of the class: the
    oracle recipe with the generator in place of the benchmark's renderer. ``psi`` truncates toward
    ``center`` (``condition``: the mean code of each sample's own conditioning; see
    :class:`robust.gan.networks.MappingNetwork`), trading variety for samples that show their class
    more clearly. Needs a generator whose ``class`` tokens are the data's class names. Mix it with
    the real images, e.g. ``0.5*generated+0.5*erm``. Draws follow each image's seed.
    """

    name = "generated"
    options = ("center",)

    def __init__(self, spec: Spec | str | None = None):
        super().__init__(spec)
        from robust.gan.networks import TRUNCATION_CENTERS

        spec = self.spec
        if spec.target is not None:
            raise InputError("recipe generated", "generated[@psi][,center=condition|mean] (no target)", str(spec))
        self.psi = parse_number(spec.at, "generated psi") if spec.at is not None else 1.0
        if not 0 <= self.psi <= 1:
            raise InputError("recipe generated psi", "a truncation psi in [0, 1]", spec.at)
        self.center = str(spec.options.get("center", "condition"))
        if self.center not in TRUNCATION_CENTERS:
            raise InputError("recipe generated option center", " or ".join(TRUNCATION_CENTERS), self.center)
        self.G: Any = None
        self.classes: torch.Tensor | None = None

    def bind(self, ctx: RecipeContext) -> None:
        G = bind_generator(ctx, "generated")
        cond = G.conditioning
        if cond is None or "class" not in cond.names:
            raise InputError("generated recipe generator", "a generator conditioned on a 'class' token group",
                             "no conditioning" if cond is None else f"groups {cond.names}")
        names, tokens = list(ctx.data.class_names), cond.tokens("class")
        missing = [name for name in names if name not in tokens]
        if missing:
            raise InputError("generated recipe data", "class names among the generator's class tokens (" + ", ".join(tokens) + ")",
                             "classes " + ", ".join(missing) + " it cannot draw")
        # The data's label k is the generator's class token classes[k].
        self.classes = torch.tensor([tokens.index(name) for name in names], dtype=torch.long)
        self.G = G

    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        from robust.gan.latent import sample_z

        G, cond = self.G, self.G.conditioning
        tokens = cond.sample(batch.seeds, groups=[name for name in cond.names if name != "class"], stream=0x6E4)
        tokens["class"] = self.classes[batch.labels.cpu()]
        z = sample_z(G, batch.seeds, stream=0x6E5)
        c = cond.encode(tokens).to(G.device)
        with torch.no_grad():
            images = G.to_unit(G(z, c, truncation_psi=self.psi, truncation_center=self.center, noise_mode="const"))
        return [images.to(batch.images.device, batch.images.dtype)]


# -- adversarial training ------------------------------------------------------------------------

@RECIPES.register("pgd")
class PGDTraining(Recipe):
    """Adversarial training (Madry et al. 2018): PGD examples in a Linf/L2 ball; ``trades=BETA`` for TRADES.

    Spec: ``pgd[:linf|l2][@eps][,steps=7][,step_size=...][,random_start=true][,trades=6]`` with the
    threat model read by :func:`attacks.get_attack`. Unlike the evaluation attack, training PGD
    perturbs every image for every step (no early stop, misclassified images included). With
    ``trades`` the inner loop maximises KL(p(x) || p(x')) from a small Gaussian start and the loss is
    CE(x) + BETA * KL(p(x) || p(x')) (Zhang et al. 2019).
    """

    name = "pgd"
    options = ("steps", "step_size", "random_start", "trades")

    def __init__(self, spec: Spec | str | None = None):
        super().__init__(spec)
        from attacks import get_attack

        spec = self.spec
        attack_opts = {k: v for k, v in spec.options.items() if k in ("steps", "step_size", "random_start")}
        attack_opts.setdefault("steps", 7)
        attack = get_attack(str(Spec("pgd", spec.target or "linf", spec.at or "8/255", attack_opts)))
        self.norm, self.eps, self.steps = attack.norm, float(attack.eps), int(attack.steps)
        self.alpha, self.random_start = float(attack.alpha), bool(attack.random_start)
        self.beta = _option(spec, "trades", None, float)
        if self.beta is not None and not self.beta > 0:
            raise InputError("recipe pgd option trades", "a positive TRADES weight (beta), e.g. 6", self.beta)
        self.amp = False

    def bind(self, ctx: RecipeContext) -> None:
        self.amp = ctx.amp

    def objective(self, classifier: Classifier, x: torch.Tensor, labels: torch.Tensor,
                  clean_probs: torch.Tensor | None) -> torch.Tensor:
        """Per-image loss the inner loop maximises: CE, or the TRADES KL to the clean prediction."""
        logits = eval_logits(classifier, x, self.amp)
        if clean_probs is None:
            return F.cross_entropy(logits, labels, reduction="none")
        return F.kl_div(F.log_softmax(logits, 1), clean_probs, reduction="none").sum(1)

    def perturb(self, batch: Batch, classifier: Classifier) -> torch.Tensor:
        from robust.perturbation import ascent_direction, project, random_start
        from robust import noise

        x = batch.images
        clean_probs = None
        if self.beta is not None:
            with torch.no_grad():
                clean_probs = eval_logits(classifier, x, self.amp).softmax(1)
            start = x + 0.001 * noise.normal(batch.seeds, tuple(x.shape[1:]), stream=7).to(x.device, x.dtype)
            adv = project(x, start, self.norm, self.eps)
        elif self.random_start:
            adv = random_start(x, batch.seeds, self.norm, self.eps, stream=0)
        else:
            adv = x.clone()
        for _ in range(self.steps):
            adv = adv.detach().requires_grad_(True)
            with torch.enable_grad():
                value = self.objective(classifier, adv, batch.labels, clean_probs)
                (grad,) = torch.autograd.grad(value.sum(), adv)
            adv = project(x, adv.detach() + self.alpha * ascent_direction(grad, self.norm), self.norm, self.eps)
        return adv.detach()

    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        adv = self.perturb(batch, classifier)
        return [batch.images, adv] if self.beta is not None else [adv]

    def loss(self, logits: list[torch.Tensor], labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        if self.beta is None:
            return super().loss(logits, labels, label_smoothing)
        clean, adv = logits[0].float(), logits[1].float()
        ce = F.cross_entropy(clean, labels, reduction="none", label_smoothing=label_smoothing)
        kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="none").sum(1)
        return ce + self.beta * kl


# -- corruptions and classic augmentation ------------------------------------------------------------

@RECIPES.register("corrupt")
class CorruptionTraining(Recipe):
    """Training on corruptions: each image gets one corruption of a set at a random severity.

    Spec: ``corrupt[:set|:name][@max_severity][,names=a+b]``, the corruption-set syntax of
    :func:`augment.corruptions.parse_corruption_set` (default ``benchmark``: the 15 ImageNet-C
    corruptions, so a corruption evaluation is then not held out; ``corrupt:heldout`` trains on the
    4 others). The corruption is drawn uniformly from the set and the severity uniformly in the draw
    range ``[1, max_severity]`` (default 5, so ``max_severity`` lies in [1, 5]). Draws follow each
    image's seed. The older spellings ``set=heldout`` and ``names=a/b`` are still read.
    """

    name = "corrupt"
    options = ("names", "set")

    def __init__(self, spec: Spec | str | None = None):
        super().__init__(spec)
        from augment.corruptions import CORRUPTION_SETS, get_corruption, parse_corruption_set

        spec = self.spec
        options, target = dict(spec.options), spec.target
        if "set" in options:  # the older spelling of the target
            target = str(options.pop("set"))
            if target not in CORRUPTION_SETS or spec.target is not None:
                raise InputError("recipe corrupt option set", "one of " + ", ".join(CORRUPTION_SETS) + " (or a target instead)", target)
        if "names" in options:
            options["names"] = str(options["names"]).replace("/", "+")  # the older separator
        self.names, levels = parse_corruption_set(Spec(spec.name, target, spec.at, options), "recipe corrupt")
        if len(levels) > 1 or (levels and levels[0] < 1):
            raise InputError("recipe corrupt severity", "one maximum severity in [1, 5] (severities are drawn in [1, max])", spec.at)
        self.max_severity = levels[0] if levels else 5.0
        self.corruptions = [get_corruption(n) for n in self.names]

    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        from robust.noise import uniform

        u = uniform(batch.seeds, (2,), stream=0xC0)
        which = (u[:, 0] * len(self.corruptions)).long().clamp_(max=len(self.corruptions) - 1)
        # Levels 1..max (ImageNet-C's scale): below 1 the corruptions are barely visible.
        severity = 1.0 + u[:, 1] * (self.max_severity - 1.0)
        out = batch.images.clone()
        with torch.no_grad():
            for k, corruption in enumerate(self.corruptions):
                rows = (which == k).nonzero().squeeze(1)
                if rows.numel():
                    params = {"severity": severity[rows], "seed": batch.seeds[rows]}
                    out[rows] = corruption.apply(batch.images[rows], params).to(out.dtype)
        return [out]


_CLASSIC = ("randaugment", "trivialaugment")
_CLASSIC_STREAM = 0xC1A5


@RECIPES.register("classic")
class ClassicAugmentation(Recipe):
    """Classic augmentation: RandAugment (default, ``n`` ops at magnitude ``m`` of 30) or TrivialAugment.

    Spec: ``classic[:randaugment|trivialaugment][,n=2][,m=9]``; each image's operations follow its seed.
    """

    name = "classic"
    options = ("n", "m")

    def __init__(self, spec: Spec | str | None = None):
        super().__init__(spec)
        from augment.classic import RandAugment, TrivialAugment

        kind = self.spec.target or "randaugment"
        if kind not in _CLASSIC:
            raise InputError("recipe classic", "classic:randaugment or classic:trivialaugment", kind)
        if kind == "randaugment":
            self.transform = RandAugment(num_ops=_option(self.spec, "n", 2, int), magnitude=_option(self.spec, "m", 9.0))
        else:
            if self.spec.options:
                raise InputError("recipe classic:trivialaugment options", "none (TrivialAugment has no settings)", sorted(self.spec.options))
            self.transform = TrivialAugment()
        self.kind = kind

    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        # RandAugment keeps its magnitude M, TrivialAugment draws one; both draw each image's operations from its seed.
        params = self.transform.sample(batch.seeds, device=batch.images.device, stream=_CLASSIC_STREAM)
        with torch.no_grad():
            return [self.transform.apply(batch.images, params)]


@RECIPES.register("augmix")
class AugMixTraining(Recipe):
    """AugMix (Hendrycks et al. 2020) with its Jensen-Shannon consistency loss.

    Spec: ``augmix[@severity][,width=3][,depth=0][,alpha=1][,jsd=true][,weight=12]``. With ``jsd``
    the network sees the clean image and two AugMix views; the loss is CE(clean) + ``weight`` x JS.
    Without it, CE on one AugMix view.
    """

    name = "augmix"
    options = ("width", "depth", "alpha", "jsd", "weight")

    def __init__(self, spec: Spec | str | None = None):
        super().__init__(spec)
        from augment.classic import AugMix

        spec = self.spec
        severity = parse_number(spec.at, "augmix severity") if spec.at is not None else 3.0
        self.transform = AugMix(severity=severity, width=_option(spec, "width", 3, int), depth=_option(spec, "depth", 0, int),
                                alpha=_option(spec, "alpha", 1.0))
        self.jsd = _option(spec, "jsd", True, bool)
        self.weight = _option(spec, "weight", 12.0)
        if self.weight < 0:
            raise InputError("recipe augmix option weight", "a non-negative weight of the consistency loss", self.weight)

    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        from augment.classic import PAIR_STREAMS

        images = batch.images
        with torch.no_grad():
            mixed = [self.transform.apply(images, self.transform.sample(batch.seeds, device=images.device, stream=stream))
                     for stream in PAIR_STREAMS[: 2 if self.jsd else 1]]
        return [images, *mixed] if self.jsd else mixed

    def loss(self, logits: list[torch.Tensor], labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        ce = super().loss(logits, labels, label_smoothing)
        if not self.jsd:
            return ce
        from augment.classic import augmix_consistency_loss

        # The consistency term is a batch mean: spread evenly over the images, the summed loss is
        # exactly CE + weight x JS summed over the images (the only thing the optimiser sees).
        js = augmix_consistency_loss(*(t.float() for t in logits))
        return ce + self.weight * js.expand_as(ce)


# -- any registered transform --------------------------------------------------------------------------

_TRANSFORM_MODES = ("random", "worst_of_k", "gradient")
# The options each mode reads besides ``mode`` (a spec naming another is refused, not ignored).
_TRANSFORM_MODE_OPTIONS = {"random": ("p",), "worst_of_k": ("k", "loss", "p"), "gradient": ("k", "steps", "step_size", "loss", "p")}
# Draw j takes streams _TRANSFORM_STREAM + 4j (+1, +2 inside Transform.sample / at_severity, +3 its severity).
_TRANSFORM_STREAM = 0x7F00
_TRANSFORM_COIN_STREAM = 0x7EFF


@RECIPES.register("transform")
class TransformTraining(Recipe):
    """Any registered transform (:mod:`robust.transforms`) as training augmentation, random or adversarial.

    Spec: ``transform:<name>[@max_severity][,mode=random|worst_of_k|gradient][,k=4][,steps=5][,step_size=0.25]``
    ``[,loss=ce][,p=1]``, e.g. ``transform:hue`` (hue rotation over the full circle) or
    ``transform:rotation@3,mode=worst_of_k,k=8``. A *draw* gives each image parameters from its seed:
    uniform over every parameter's range (:meth:`Transform.sample`), or with ``@s`` at a severity
    drawn uniformly in ``[0, s]`` (:meth:`Transform.at_severity`). ``random`` trains on one draw;
    ``worst_of_k`` on the draw of ``k`` (default 4) with the highest ``loss`` (``ce``, ``margin`` or
    ``dlr``) for the model being trained; ``gradient`` (differentiable transforms) runs ``steps``
    signed-gradient steps on that loss from each of ``k`` draws (default 1), the first of
    ``step_size`` of each parameter's range, falling along a cosine, inside the ranges (with ``@s``,
    the part of them severity ``s`` reaches), and keeps the worst iterate. Both search with
    :mod:`robust.transforms.search`, as the transform attacks do. ``p`` is each image's chance of
    being transformed (a coin from its seed). Seed parameters (noise) follow the draw, unsearched.
    Names with a colon (``corruptions:fog``) are the ``corrupt`` recipe's.
    """

    name = "transform"
    options = ("mode", "k", "steps", "step_size", "loss", "p")

    def __init__(self, spec: Spec | str | None = None):
        super().__init__(spec)
        from robust.losses import LOSSES
        from robust.plugins import load_all
        from robust.transforms import TRANSFORMS, check_severity, get_transform
        from robust.validation import check_choice, check_number

        load_all()  # augment's transforms (augmix, randaugment, ...) register when it is imported
        spec = self.spec
        names = [n for n in TRANSFORMS.names() if ":" not in n]
        check_choice(spec.target, "recipe transform target (transform:<name>)", names)
        self.transform = get_transform(spec.target)
        self.mode = check_choice(spec.options.get("mode", "random"), "recipe transform option mode", _TRANSFORM_MODES)
        allowed = _TRANSFORM_MODE_OPTIONS[self.mode]
        extra = sorted(set(spec.options) - {"mode", *allowed})
        if extra:
            raise InputError(f"recipe transform option {extra[0]}", f"options of mode {self.mode}: " + ", ".join(allowed), spec.options[extra[0]])
        if self.mode == "gradient" and not self.transform.differentiable:
            raise InputError("recipe transform option mode", f"random or worst_of_k ({spec.target} is not differentiable)", self.mode)

        def number(key: str, default: float, **bounds: Any) -> float:
            return check_number(spec.options.get(key, default), f"recipe transform option {key}", **bounds)

        severity = None if spec.at is None else parse_number(spec.at, "recipe transform severity")
        self.max_severity = None if severity is None else check_severity(severity, "recipe transform severity")
        self.k = int(number("k", 4 if self.mode == "worst_of_k" else 1, low=1, integer=True))
        self.steps = int(number("steps", 5, low=1, integer=True))
        self.step_size = number("step_size", 0.25, low=0, high=1)
        self.p = number("p", 1.0, low=0, high=1)
        self.search_loss = check_choice(spec.options.get("loss", "ce"), "recipe transform option loss", LOSSES)
        self.searched = [p for p in self.transform.params if p.optimisable]
        self.amp = False

    def bind(self, ctx: RecipeContext) -> None:
        from robust.errors import GradientUnavailableError

        if self.mode == "gradient" and not ctx.classifier.has_gradients:
            raise GradientUnavailableError(f"{ctx.classifier.name} has no gradients (ONNX): use mode random or worst_of_k")
        self.amp = ctx.amp

    def draw(self, seeds: torch.Tensor, j: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Draw ``j`` of every image's parameters, from its seed alone (draw 0 is what ``random`` trains on)."""
        from robust import noise

        stream = _TRANSFORM_STREAM + 4 * j
        if self.max_severity is None:
            return self.transform.sample(seeds, device=device, stream=stream)
        severity = self.max_severity * noise.uniform(seeds, (1,), stream + 3)[:, 0]
        return self.transform.at_severity(severity, seeds, device=device, stream=stream)

    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        from robust import noise

        images = batch.images
        chosen = (noise.uniform(batch.seeds, (1,), _TRANSFORM_COIN_STREAM)[:, 0] < self.p).nonzero().squeeze(1)
        if chosen.numel() == images.shape[0]:
            return [self._transformed(images, batch.labels, batch.seeds, classifier)]
        out = images.clone()
        if chosen.numel():
            rows = chosen.to(images.device)
            out[rows] = self._transformed(images[rows], batch.labels[rows], batch.seeds[chosen], classifier).to(out.dtype)
        return [out]

    def _transformed(self, x: torch.Tensor, labels: torch.Tensor, seeds: torch.Tensor, classifier: Classifier) -> torch.Tensor:
        from robust.losses import per_image_loss
        from robust.transforms.search import worst_of_k

        tf = self.transform
        if self.mode == "random":
            with torch.no_grad():
                return tf.apply(x, self.draw(seeds, 0, x.device))

        def score(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            images = tf.apply(x, params)
            return per_image_loss(self.search_loss, eval_logits(classifier, images, self.amp), labels), {"images": images}

        if self.mode == "worst_of_k":
            with torch.no_grad():
                return worst_of_k(lambda j: score(self.draw(seeds, j, x.device)), self.k)["images"]
        return self._ascend(score, seeds, x.device)

    def _ascend(self, score: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]],
                seeds: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Gradient ascent on the searched parameters, in coordinates scaled to [0, 1] over their box, from each draw."""
        from robust.transforms.search import Box, Worst, cosine_rate, gradient_ascent

        names = [p.name for p in self.searched]
        low, high = (torch.tensor(side, dtype=torch.float32, device=device) for side in zip(*map(self._bounds, self.searched)))
        span = high - low
        worst = Worst()
        for j in range(self.k):
            draw = self.draw(seeds, j, device)
            start = (torch.stack([draw[name] for name in names], 1) - low) / span.clamp_min(1e-12)

            def unit_score(u: torch.Tensor, draw: dict[str, torch.Tensor] = draw) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
                values = low + u * span
                return score({**draw, **{name: values[:, i] for i, name in enumerate(names)}})

            gradient_ascent(unit_score, start.clamp(0, 1), steps=self.steps, rate=cosine_rate(self.step_size, self.steps),
                            box=Box(0.0, 1.0), worst=worst)
        return worst["images"]

    def _bounds(self, param: Any) -> tuple[float, float]:
        """Where a searched parameter may go: its range, or the part of it ``max_severity`` reaches (magnitudes)."""
        if self.max_severity is None or param.kind != "magnitude":
            return float(param.low), float(param.high)
        return float(param.at_severity(self.max_severity, "down")), float(param.at_severity(self.max_severity, "up"))


# -- natural transformations ------------------------------------------------------------------------

_NATRA_TRANSFORM_OPTIONS = {"k": int, "steps": int, "step_size": float, "strength": float, "per_sample": int, "loss": str,
                            "swap": float}
_DIRECTION_METHODS = ("sefa", "ganspace", "householder", "tokens")
# Options of one model kind only (the others serve both).
_STYLEGAN_ONLY = ("swap", "codes", "invert_steps", "invert_seed", "expand_res")
_SWAP_OPTIONS = {"min_strength": float, "mix": bool, "direction_scale": float}


@RECIPES.register("natra")
class NaTraTraining(Recipe):
    """NaTra: each image moved by a model of natural variation, a StyleGAN2 generator or a structure/appearance model.

    Spec: ``natra[:random|worst_of_k|gradient][@strength][,model=auto|swap|stylegan|<file>][,k=4][,steps=5]``
    ``[,step_size=0.25][,per_sample=1][,loss=ce][,directions=...][,n_directions=16][,cache_dir=<dir>][,pixel_residual=...]``.
    ``model``: ``auto`` (default) takes the generator given (``--generator``, ``harden(generator=...)``)
    whatever its kind, else for the synthetic benchmark's 32x32 images the shipped structure/appearance
    model when it is installed, else the shipped generator; ``swap``/``stylegan`` the given model of
    that kind, else the shipped one; or a model file (:func:`robust.gan.natural.load_model`).

    With a **structure/appearance model** (:class:`augment.swap.AppearanceSwap`) each image keeps its
    structure code and takes the appearance code of a training image of another class, ``strength``
    (at most 1) of the way: the random draw is uniform in ``[min_strength, strength]``; ``worst_of_k``
    keeps the classifier's worst of ``k`` donors; ``gradient`` ascends the strength (and with
    ``mix=true`` a convex mix of ``k`` donors). The donors are the training set's appearance codes
    and labels only (the honest protocol); the codes are encoded once and cached (``cache_dir``).
    ``directions=pca|sefa|<file>`` adds moves along appearance directions (``n_directions``, ranges
    from the codes' spread x ``direction_scale``); default none. ``pixel_residual`` defaults to off.

    With a **StyleGAN2 generator** (:class:`augment.natra.NaturalTransform`) each image moves along
    the generator's natural directions: ``[,swap=0][,directions=auto|sefa|ganspace|householder|tokens|<file>]``
    ``[,codes=<file>][,invert_steps=30][,invert_seed=0][,expand_res=R][,pixel_residual=true]``.
    Codes: ``codes=`` names an existing cache file (made by ``robust.gan.codes_cache.load_or_invert``;
    a missing one fails before training); otherwise the training set is inverted once and cached
    (``cache_dir``, default the robust cache). The inversion follows ``invert_seed``, not the run's
    seed, so runs that differ only in their seed share one cache entry. ``directions=auto`` takes
    the directions shipped for the generator, else finds SeFa directions. ``pixel_residual`` keeps
    the detail the generator cannot reconstruct. ``swap=P`` (generators conditioned on attribute
    tokens) also resamples each attribute token of an image with probability ``P`` per draw.

    Each image's draw follows its index, the epoch and the seed.
    """

    name = "natra"
    options = (*_NATRA_TRANSFORM_OPTIONS, *_SWAP_OPTIONS, "model", "directions", "n_directions", "codes", "cache_dir", "invert_steps",
               "invert_seed", "expand_res", "pixel_residual")

    def __init__(self, spec: Spec | str | None = None, *, directions: Any = None, codes: Any = None, model: Any = None):
        super().__init__(spec)
        from augment.natra import MODES

        spec = self.spec
        self.mode = spec.target or "random"
        if self.mode not in MODES:
            raise InputError("recipe natra mode", "one of " + ", ".join(MODES), self.mode)
        self.strength = parse_number(spec.at, "natra strength") if spec.at is not None else 1.0
        self.transform_options = {k: _option(spec, k, None, kind) for k, kind in _NATRA_TRANSFORM_OPTIONS.items() if k in spec.options}
        self.swap_options = {k: _option(spec, k, None, kind) for k, kind in _SWAP_OPTIONS.items() if k in spec.options}
        self.model_choice = model if model is not None else spec.options.get("model", "auto")
        self.direction_spec = directions if directions is not None else spec.options.get("directions", "auto")
        self.n_directions = _option(spec, "n_directions", 16, int)
        self.codes = codes
        self.codes_path = spec.options.get("codes")
        self.cache_dir = spec.options.get("cache_dir")
        self.invert_steps = _option(spec, "invert_steps", 30, int)
        self.invert_seed = _option(spec, "invert_seed", 0, int)
        if self.invert_seed < 0:
            raise InputError("recipe natra option invert_seed", "a non-negative integer", self.invert_seed)
        self.expand_res = _option(spec, "expand_res", None, int)
        self.pixel_residual = _option(spec, "pixel_residual", True, bool)
        self.transform: Any = None
        self.kind = ""
        self.seed = 0

    def bind(self, ctx: RecipeContext) -> None:
        from dataclasses import replace

        from augment.natra import NaturalConfig, NaturalTransform
        from robust.gan.natural import model_kind, resolve_model

        model = resolve_model(self.model_choice, ctx.generator, ctx.data, ctx.device, name="natra recipe generator")
        self.kind = model_kind(model)
        self._check_options()
        self.seed = ctx.seed
        if self.kind == "swap":
            self._bind_swap(model, ctx)
            return
        G = bind_generator(replace(ctx, generator=model), "natra")
        codes = self._codes(G, ctx)
        directions = self._directions(G, ctx.seed)
        expand_res = codes.expand_res if codes.residual is not None else None
        self.codes = codes
        config = NaturalConfig(strength=self.strength, expand_res=expand_res, pixel_residual=self.pixel_residual, **self.transform_options)
        self.transform = NaturalTransform(G, directions, self.mode, config=config)

    def _check_options(self) -> None:
        """Options of the other model kind fail clearly (before any encoding or inversion)."""
        other = _SWAP_OPTIONS if self.kind == "stylegan" else _STYLEGAN_ONLY
        given = sorted(k for k in other if k in self.spec.options)
        if given:
            kinds = {"stylegan": "a StyleGAN2 generator", "swap": "a structure/appearance model"}
            raise InputError("recipe natra options", f"options for {kinds[self.kind]} (the model this run uses)", ", ".join(given))

    def _bind_swap(self, model: Any, ctx: RecipeContext) -> None:
        from augment.swap import AppearanceSwap, DonorBank, SwapConfig
        from robust.gan.codes_cache import SwapCodes, load_or_encode
        from robust.train.distributed import barrier, current_world

        c = model.config
        if (c.img_channels, c.resolution, c.resolution) != (ctx.data.channels, *ctx.data.size):
            raise InputError("natra recipe data", f"images of the model's shape {c.img_channels}x{c.resolution}x{c.resolution}",
                             "{}x{}x{}".format(ctx.data.channels, *ctx.data.size))
        if isinstance(self.direction_spec, str) and self.direction_spec in ("ganspace", "householder", "tokens"):
            raise InputError("recipe natra option directions", "pca, sefa, none or a directions file (structure/appearance model)",
                             self.direction_spec)
        model = model.to(ctx.device).eval().requires_grad_(False)
        codes = self.codes
        if not isinstance(codes, SwapCodes):
            # One process encodes and writes the cache; the others wait and read it.
            world = current_world()
            if not world.is_main:
                barrier(world)
            codes = load_or_encode(model, ctx.data, cache_dir=self.cache_dir)
            if world.is_main:
                barrier(world)
        self.codes = codes
        bank = DonorBank.from_codes(codes, ctx.data)
        options = {k: v for k, v in self.transform_options.items() if k != "swap"}
        if "pixel_residual" in self.spec.options:
            options["pixel_residual"] = self.pixel_residual
        config = SwapConfig(**{"strength": self.strength, **options, **self.swap_options})
        self.transform = AppearanceSwap(model, bank, self.mode, directions=self._appearance_directions(model, codes), config=config)

    def _appearance_directions(self, model: Any, codes: Any) -> Any:
        from robust.gan.directions import APPEARANCE_METHODS, Directions, appearance_directions, load_directions

        spec = self.direction_spec
        if isinstance(spec, Directions):
            return spec
        if spec in ("auto", "none"):
            return None
        if spec in APPEARANCE_METHODS:
            return appearance_directions(model, codes.appearance, str(spec), self.n_directions)
        return load_directions(spec, model)

    def _directions(self, G: Any, seed: int) -> Any:
        from robust.gan.directions import Directions, directions_for, find_directions

        spec = self.direction_spec
        if isinstance(spec, Directions):
            return spec
        if spec in _DIRECTION_METHODS:
            return find_directions(G, str(spec), k=self.n_directions, seed=seed)
        found = directions_for(G, spec)
        return found if found is not None else find_directions(G, "sefa", k=self.n_directions, seed=seed)

    def _codes(self, G: Any, ctx: RecipeContext) -> Any:
        from robust.gan.codes_cache import CodeSet, load_codes, load_or_invert
        from robust.gan.encoder import generator_fingerprint
        from robust.train.distributed import barrier, current_world

        codes = self.codes
        if isinstance(codes, CodeSet):
            pass
        elif self.codes_path is not None:
            from robust.io import checkpoint_paths

            weights, _ = checkpoint_paths(str(self.codes_path))
            if not weights.is_file():
                raise InputError("natra codes cache", "an existing codes file made by robust.gan.codes_cache.load_or_invert "
                                 "(or leave out codes= to invert the training set once and cache it)", f"no file {weights}")
            codes = load_codes(str(self.codes_path))
            meta = codes.meta
            if meta.get("data_fingerprint") not in (None, ctx.data.fingerprint()):
                raise InputError("natra codes cache", "codes of this training set", f"codes of {meta.get('data', 'other data')}")
            if meta.get("generator_fingerprint") not in (None, generator_fingerprint(G)):
                raise InputError("natra codes cache", "codes made with this generator", "codes of another generator")
        else:
            # One process inverts and writes the cache; the others wait and read it.
            world = current_world()
            if not world.is_main:
                barrier(world)
            codes = load_or_invert(G, ctx.data, cache_dir=self.cache_dir, steps=self.invert_steps, expand_res=self.expand_res,
                                   seed=self.invert_seed)
            if world.is_main:
                barrier(world)
        if len(codes) != len(ctx.data):
            raise InputError("natra codes cache", f"codes of the {len(ctx.data)} training images", f"{len(codes)} codes")
        return codes

    def views(self, batch: Batch, classifier: Classifier) -> list[torch.Tensor]:
        from robust.seeding import derive_seed

        # A new draw for every image every epoch, the same one wherever the image lands in a batch.
        seed = derive_seed(self.seed, "natra-epoch", batch.epoch)
        clf = classifier if self.mode != "random" else None
        if self.kind == "swap":
            codes = self.codes.batch(batch.indices, batch.images.device)
            out = self.transform.transform(batch.images, batch.labels, codes=codes, classifier=clf, seed=seed, sample_ids=batch.indices)
            return [out.images.detach()]
        ws, residual = self.codes.batch(batch.indices, batch.images.device)
        out = self.transform.transform(batch.images, batch.labels, ws=ws, residual=residual, classifier=clf, seed=seed,
                                       sample_ids=batch.indices)
        return [out.images.detach()]
