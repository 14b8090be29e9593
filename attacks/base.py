"""The attack interface: spec strings, checks at entry, the model runner, losses and the result type.

Every attack takes a :class:`robust.models.Classifier`, images in ``[0, 1]`` and labels, and runs
batched on the model's device with the whole network in eval mode for the whole attack (every
module's mode is restored afterwards). Normalisation lives in the classifier, so perturbations are
measured in ``[0, 1]`` pixel units. Gradients are taken with respect to the input only
(``torch.autograd.grad``): no parameter's ``.grad`` is ever written. Each image's random stream is
keyed by its own id (:mod:`robust.noise`), so a seed reproduces every image's result whatever batch
it was attacked in.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from robust import noise
from robust.errors import GradientUnavailableError, InputError
from robust.losses import per_image_loss
from robust.models import Classifier, frozen
from robust.perturbation import NORMS
from robust.registry import Registry, parse_number, parse_spec
from robust.seeding import derive_seed
from robust.transforms.search import Worst
from robust.transforms.search import restarts as search_restarts
from robust.validation import check_choice, check_labels, check_number

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

ATTACKS: Registry[type["Attack"]] = Registry("attack")


class AttackWarning(UserWarning):
    """The attack ran but its result may overstate robustness (the checks AutoAttack also makes)."""


def format_eps(eps: float) -> str:
    """``8/255`` for multiples of 1/255 below 1 (how Linf budgets are usually written), else ``0.5``."""
    scaled = eps * 255
    if 0 < eps < 1 and abs(scaled - round(scaled)) < 1e-6:
        return f"{round(scaled)}/255"
    return f"{eps:g}"


# -- losses (per image, to be maximised) ---------------------------------------------------------

def hit(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """Whether each image is an attack success: misclassified, or classified as its target."""
    pred = logits.argmax(1)
    return pred != labels if targets is None else pred == targets


# -- geometry of the threat models ---------------------------------------------------------------

# -- the runner: one classifier, in eval mode, for the length of one attack -------------------------

class AttackRun:
    """The model as an attack sees it: float32 logits, optional AMP/channels_last, query and gradient counts.

    Built inside ``classifier.eval_mode()`` by :meth:`Attack.__call__`; ``net`` is the eval-mode
    network (``None`` for classifiers without gradients, which are called through their adapter).
    Nothing here synchronises with the device: counters are Python ints or device tensors.
    """

    def __init__(self, classifier: Classifier, net: torch.nn.Module | None, *, loss: str = "ce",
                 amp: str | None = None, channels_last: bool = False):
        self.classifier = classifier
        self.net = net
        self.loss_name = loss
        self.amp_dtype = AMP_DTYPES.get(amp) if amp else None
        self.channels_last = channels_last
        self.device = classifier.device
        self.queries = 0
        self.zero_gradients = torch.zeros((), dtype=torch.int64, device=self.device)
        self.checked_gradients = torch.zeros((), dtype=torch.int64, device=self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 logits of ``x`` (differentiable when grad mode is on and the model has gradients)."""
        self.queries += x.shape[0]
        if self.net is None:
            return self.classifier.forward(x, check=False).float()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.amp_dtype):
                return self.net(x).float()
        return self.net(x).float()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(x)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None, name: str | None = None) -> torch.Tensor:
        return per_image_loss(name or self.loss_name, logits, labels, targets)

    def gradient(self, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None, *,
                 check_zero: bool = False, loss: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(d loss / d x, logits, per-image loss) at ``x``; only the input's gradient is computed."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.forward(x)
            value = self.loss(logits, labels, targets, loss)
            (grad,) = torch.autograd.grad(value.sum(), x)
        if check_zero:
            self.zero_gradients += (grad.flatten(1).abs().amax(1) == 0).sum()
            self.checked_gradients += grad.shape[0]
        return grad, logits.detach(), value.detach()


# -- results --------------------------------------------------------------------------------------

class PerImageOutcome:
    """Accessors shared by the per-image results of every failure search (pixel attacks, transform and
    latent searches): subclasses are dataclasses with ``success``, ``predictions``, ``clean_correct``
    and ``labels`` tensors."""

    success: torch.Tensor
    predictions: torch.Tensor
    clean_correct: torch.Tensor
    labels: torch.Tensor

    @property
    def clean_accuracy(self) -> float:
        """Accuracy before the search."""
        return float(self.clean_correct.float().mean())

    def accuracy_after(self) -> float:
        """Fraction still classified correctly when every image meets what the search found."""
        return float((self.predictions == self.labels).float().mean())

    def failures(self) -> torch.Tensor:
        """Indices of the images the model had right that the search broke."""
        return (self.success & self.clean_correct).nonzero().squeeze(1)


@dataclass
class AttackResult(PerImageOutcome):
    """What an attack found, per image (tensors on the device the images came from).

    ``success``: misclassified after the attack (targeted: classified as the target); images the
    model already got wrong count as successes with ``adversarial`` equal to the clean image.
    ``queries``: per-image model evaluations made, summed over the batch (gradient steps included,
    the clean evaluation too).
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    predictions: torch.Tensor
    clean_correct: torch.Tensor
    queries: int
    clean_predictions: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None
    eps: float
    norm: str
    attack: str
    seed: int = 0

    @property
    def robust_accuracy(self) -> float:
        """Fraction still classified correctly after the attack."""
        return self.accuracy_after()

    @property
    def success_rate(self) -> float:
        """Fraction of the attacked images (clean-correct, untargeted) the attack broke."""
        attacked = self.clean_correct if self.targets is None else self.clean_predictions != self.targets
        if not bool(attacked.any()):
            return 0.0
        return float(self.success[attacked].float().mean())

    def perturbation_norms(self, images: torch.Tensor) -> torch.Tensor:
        """The norm (of this attack's kind) of ``adversarial - images`` per image."""
        delta = (self.adversarial - images.to(self.adversarial.device)).flatten(1)
        return delta.abs().amax(1) if self.norm == "linf" else delta.norm(dim=1)

    def summary(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "norm": self.norm,
            "eps": self.eps,
            "n": int(self.labels.shape[0]),
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "success_rate": self.success_rate,
            "failures": int(self.failures().numel()),
            "queries": int(self.queries),
            "targeted": self.targets is not None,
            "seed": self.seed,
        }


# -- the base class -------------------------------------------------------------------------------

@dataclass
class Attack(ABC):
    """Base class of the pixel attacks: a configuration (dataclass) plus :meth:`__call__`.

    ``norm`` is ``linf`` or ``l2``; ``eps`` the budget in ``[0, 1]`` pixel units; ``batch_size``
    images go through the model at once (the classifier's batch size when omitted); ``amp``
    (``bf16``/``fp16``) runs the forward passes under autocast; ``channels_last`` hands the model
    channels-last inputs (for networks converted with ``.to(memory_format=torch.channels_last)``).
    """

    norm: str = "linf"
    eps: float = 8 / 255
    batch_size: int | None = None
    amp: str | None = None
    channels_last: bool = False

    name: ClassVar[str] = "attack"
    needs_gradients: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = NORMS

    def __post_init__(self) -> None:
        check_choice(self.norm, f"{self.name} norm", self.norms)
        self.eps = check_eps(self.eps, self.norm, f"{self.name} eps")
        if self.batch_size is not None:
            self.batch_size = check_number(self.batch_size, "batch_size", low=1, integer=True)
        if self.amp is not None:
            check_choice(self.amp, "amp", tuple(AMP_DTYPES))

    # -- configuration ----------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The spec string that rebuilds this attack with :func:`get_attack`."""
        text = f"{self.name}:{self.norm}@{format_eps(self.eps)}"
        for f in fields(self):
            if f.name in ("norm", "eps"):
                continue
            value = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else None
            if value != default:
                text += f",{f.name}={format_eps(value) if isinstance(value, float) else value}"
        return text

    def with_eps(self, eps: float) -> Attack:
        return dataclasses.replace(self, eps=eps)

    # -- running ----------------------------------------------------------------------------------
    def __call__(self, classifier: Classifier, images: torch.Tensor, labels: Any, *, seed: int = 0,
                 targets: Any = None, sample_ids: torch.Tensor | None = None) -> AttackResult:
        """Attack ``images`` (``[N, C, H, W]`` in ``[0, 1]``) with true ``labels``; see :class:`AttackResult`.

        ``targets`` makes the attack targeted. ``sample_ids`` (default ``0..N-1``) key each image's
        random stream, so an image attacked in another batch or subset gets the same result.
        """
        clf = check_classifier(classifier)
        if self.needs_gradients and not clf.has_gradients:
            raise GradientUnavailableError(
                f"{self.name} needs gradients, but {clf.name} has none (an ONNX model): use the score-based "
                f"square attack instead, e.g. get_attack('square:{self.norm}@{format_eps(self.eps)}')")
        images = clf.check_input(images)
        n = images.shape[0]
        labels = check_labels(labels, n, clf.num_classes)
        if targets is not None:
            targets = check_labels(targets, n, clf.num_classes, "targets")
        check_eps(self.eps, self.norm, f"{self.name} eps", dims=images[0].numel())
        seed = check_number(seed, "seed", low=0, integer=True)
        ids = noise.check_seeds(sample_ids, n, "sample_ids").cpu()
        self._check_call(clf, targets)

        device = clf.device
        x = images.detach().to(device, torch.float32)
        y = labels.to(device)
        t = targets.to(device) if targets is not None else None
        seeds = (ids.to(device) + derive_seed(seed, "attack", self.name) % (1 << 62))
        batch = self.batch_size or clf.batch_size
        with clf.eval_mode() as net, frozen(clf):
            run = AttackRun(clf, net if clf.has_gradients else None, loss=getattr(self, "loss", "ce"), amp=self.amp, channels_last=self.channels_last)
            clean_logits = torch.cat([run.logits(x[i : i + batch]) for i in range(0, n, batch)])
            preflight(run, x[: min(n, 8)], clean_logits[: min(n, 8)])
            clean_pred = clean_logits.argmax(1)
            todo = ~hit(clean_logits, y, t)
            adversarial = x.clone()
            predictions = clean_pred.clone()
            index = todo.nonzero().squeeze(1)
            for start in range(0, index.numel(), batch):
                j = index[start : start + batch]
                adv, pred = self._perturb(run, x[j], y[j], t[j] if t is not None else None, seeds[j])
                adversarial[j] = adv
                predictions[j] = pred
        report_gradients(run, self.name)
        success = predictions != y if t is None else predictions == t
        home = images.device
        return AttackResult(
            adversarial=adversarial.to(home), success=success.to(home), predictions=predictions.to(home),
            clean_correct=(clean_pred == y).to(home), queries=run.queries, clean_predictions=clean_pred.to(home),
            labels=labels.to(home), targets=targets.to(home) if targets is not None else None,
            eps=float(self.eps), norm=self.norm, attack=self.spec, seed=seed,
        )

    def _check_call(self, classifier: Classifier, targets: torch.Tensor | None) -> None:
        """Per-attack checks of a call's arguments (losses that need enough classes, for instance)."""
        loss = getattr(self, "loss", None)
        if loss == "dlr":
            need = 3 if targets is None else 4
            if classifier.num_classes < need:
                raise InputError("loss", f"ce or margin for a model with fewer than {need} classes (dlr needs {need})", "dlr")

    @abstractmethod
    def _perturb(self, run: AttackRun, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
                 seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attack one batch of images the model gets right; return (adversarial images, their predictions)."""


# -- checks ---------------------------------------------------------------------------------------

def check_eps(eps: Any, norm: str, name: str = "eps", dims: int | None = None) -> float:
    """A positive, finite budget: at most 1 for Linf; at most ``sqrt(dims)`` (the box's diameter) for L2."""
    value = check_number(eps, name, low=0)
    if value <= 0:
        raise InputError(name, "a positive budget (eps > 0)", eps)
    if norm == "linf" and value > 1:
        hint = f" (looks like a 0-255 budget: write {value:g}/255)" if value <= 255 else ""
        raise InputError(name, "a Linf budget in (0, 1] in [0, 1] pixel units" + hint, eps)
    if norm == "l2" and dims is not None and value > math.sqrt(dims):
        raise InputError(name, f"an L2 budget in (0, {math.sqrt(dims):.4g}] (the diameter of the [0, 1] box)", eps)
    return value


def check_classifier(classifier: Any) -> Classifier:
    if not isinstance(classifier, Classifier):
        raise InputError("classifier", "a robust.models.Classifier (wrap a model with robust.models.load_classifier)",
                         type(classifier).__name__)
    return classifier


def preflight(run: AttackRun, probe: torch.Tensor, probe_logits: torch.Tensor) -> None:
    """Warn when the model's outputs make attack results unreliable (randomness, probabilities)."""
    again = run.logits(probe)
    scale = float(probe_logits.abs().max()) + 1.0
    if not torch.allclose(again, probe_logits, rtol=1e-4, atol=1e-4 * scale):
        warnings.warn(
            f"{run.classifier.name} gives different outputs for the same input in eval mode: the model is "
            "randomised, so attack results (and robust accuracy) are unreliable; make it deterministic or "
            "average gradients over its randomness (EOT)", AttackWarning, stacklevel=3)
    rows = probe_logits.sum(1)
    if bool(((probe_logits >= 0) & (probe_logits <= 1)).all()) and bool(torch.allclose(rows, torch.ones_like(rows), atol=1e-3)):
        warnings.warn(
            f"{run.classifier.name} seems to output probabilities, not logits: a softmax inside the model weakens "
            "gradient attacks (and cross-entropy is wrong on probabilities); remove the final softmax", AttackWarning, stacklevel=3)


def report_gradients(run: AttackRun, name: str) -> None:
    """Warn when some attacked images had an all-zero input gradient at the first step (gradient masking)."""
    checked = int(run.checked_gradients)
    zero = int(run.zero_gradients)
    if zero:
        warnings.warn(
            f"{name}: the input gradient is exactly zero for {zero} of {checked} attacked images (saturated softmax, "
            "non-differentiable layers or gradient masking): gradient attacks overstate robustness there; "
            "try the score-based square attack or a margin loss", AttackWarning, stacklevel=3)


# -- registry -------------------------------------------------------------------------------------

def get_attack(spec: str | Attack, **overrides: Any) -> Attack:
    """An attack from a spec string such as ``"pgd:linf@8/255,steps=20"`` (or an attack, with overrides).

    The target after ``:`` is the norm, the value after ``@`` the budget ``eps``; options are the
    attack's fields (``steps``, ``step_size``, ``restarts``, ``loss``, ``queries``, ...).
    """
    if isinstance(spec, Attack):
        return dataclasses.replace(spec, **overrides) if overrides else spec
    if not isinstance(spec, str):
        raise InputError("attack", "a spec string such as pgd:linf@8/255 or an Attack", type(spec).__name__)
    parsed = parse_spec(spec, "attack")
    cls = ATTACKS.get(parsed.name)
    kwargs: dict[str, Any] = {}
    if parsed.target is not None:
        kwargs["norm"] = parsed.target
    if parsed.at is not None:
        kwargs["eps"] = parse_number(parsed.at, "eps")
    kwargs.update(parsed.options)
    kwargs.update(overrides)
    valid = sorted(f.name for f in fields(cls))
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise InputError(f"{parsed.name} options", "some of " + ", ".join(valid), ", ".join(unknown))
    return cls(**kwargs)


def list_attacks() -> list[str]:
    return ATTACKS.names()


def best_of_restarts(once: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]], restarts: int,
                     run: AttackRun, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
                     seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``once(run, x, labels, targets, seeds, restart)`` up to ``restarts`` times on the images still resisting.

    ``once`` returns (adversarial, prediction, loss, success) per image; an image keeps its first
    success, or else its highest-loss result over the restarts (:func:`robust.transforms.search.restarts`).
    """
    n = x.shape[0]
    worst = Worst(torch.full((n,), float("-inf"), device=x.device), adversarial=x.clone(),
                  prediction=torch.empty(n, dtype=torch.int64, device=x.device))

    def attempt(rows: torch.Tensor, restart: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        adv, pred, loss, won = once(run, x[rows], labels[rows], targets[rows] if targets is not None else None, seeds[rows], restart)
        return loss, {"adversarial": adv, "prediction": pred}, won

    search_restarts(attempt, restarts, worst)
    return worst["adversarial"], worst["prediction"]


def select(tensors: dict[str, torch.Tensor | None], keep: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Keep the rows ``keep`` of every per-image state tensor (``None`` entries stay ``None``)."""
    return {k: (v[keep] if v is not None else None) for k, v in tensors.items()}


__all__ = [
    "ATTACKS", "AMP_DTYPES", "Attack", "AttackResult", "AttackRun", "AttackWarning",
    "per_image_loss", "best_of_restarts", "check_eps", "format_eps", "get_attack", "hit", "list_attacks", "select",
]
