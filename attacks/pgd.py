"""Gradient attacks: FGSM, PGD (Linf/L2, restarts, step-size schedules, CE/margin) and APGD.

PGD is Madry et al.'s projected gradient ascent. APGD follows the description in Croce & Hein
(2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks"): step size ``2 eps`` halved at checkpoints when too few steps improved the loss or nothing
changed since the last checkpoint, momentum 0.75, restart from the best point after each halving.

With ``early_stop`` (the default) an image leaves the batch at its first successful iterate: the
remaining steps are spent only on images that still resist, which changes no success and saves most of
the work on undefended models. ``early_stop=False`` runs every step on every image and returns the last
iterate, as the textbook algorithm (and torchattacks) does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from attacks.base import ATTACKS, Attack, AttackRun, best_of_restarts, hit, select
from robust.perturbation import ascent_direction, project, random_start
from robust.errors import InputError
from robust.validation import check_choice, check_number

SCHEDULES = ("constant", "cosine", "step")


def step_factor(schedule: str, step: int, steps: int) -> float:
    """Multiplier of the step size at ``step`` of ``steps``: constant, cosine decay, or halved at 50% and 75%."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / steps))
    return 1.0 if step < steps // 2 else (0.5 if step < (3 * steps) // 4 else 0.25)


def _check_loss(loss: str, name: str) -> None:
    check_choice(loss, f"{name} loss", ("ce", "margin", "dlr"))


@ATTACKS.register("fgsm")
@dataclass
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size ``eps`` (normalised gradient for L2)."""

    loss: str = "ce"

    name: ClassVar[str] = "fgsm"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_loss(self.loss, self.name)

    def _perturb(self, run: AttackRun, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
                 seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad, _, _ = run.gradient(x, labels, targets, check_zero=True)
        adv = project(x, x + self.eps * ascent_direction(grad, self.norm), self.norm, self.eps)
        return adv, run.logits(adv).argmax(1)


@ATTACKS.register("pgd")
@dataclass
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018).

    ``steps`` gradient steps of ``step_size`` (default ``2.5 * eps / steps``) scaled by ``schedule``
    (constant, cosine or step); ``random_start`` begins at a seeded random point of the ball;
    ``restarts`` runs that many times on the images still resisting, keeping the best; ``loss`` is
    ``ce``, ``margin`` (Carlini-Wagner) or ``dlr``.
    """

    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    schedule: str = "constant"
    loss: str = "ce"
    early_stop: bool = True

    name: ClassVar[str] = "pgd"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.steps = check_number(self.steps, "steps", low=1, integer=True)
        self.restarts = check_number(self.restarts, "restarts", low=1, integer=True)
        if self.step_size is not None:
            self.step_size = check_number(self.step_size, "step_size", low=0)
            if self.step_size <= 0:
                raise InputError("step_size", "a positive step size", self.step_size)
        check_choice(self.schedule, "schedule", SCHEDULES)
        _check_loss(self.loss, self.name)
        self.random_start = bool(self.random_start)
        self.early_stop = bool(self.early_stop)

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def _perturb(self, run: AttackRun, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
                 seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return best_of_restarts(self._once, self.restarts, run, x, labels, targets, seeds)

    def _once(self, run: AttackRun, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
              seeds: torch.Tensor, restart: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run from one start: (adversarial, prediction, loss, success) per image."""
        n = x.shape[0]
        adv = random_start(x, seeds, self.norm, self.eps, stream=restart) if self.random_start else x.clone()
        out_adv = adv.clone()
        out_pred = torch.empty(n, dtype=torch.int64, device=x.device)
        out_loss = torch.empty(n, device=x.device)
        rows = torch.arange(n, device=x.device)
        state = {"x": x, "adv": adv, "labels": labels, "targets": targets, "rows": rows}
        for step in range(self.steps):
            grad, logits, loss = run.gradient(state["adv"], state["labels"], state["targets"], check_zero=restart == 0 and step == 0)
            if self.early_stop:
                won = hit(logits, state["labels"], state["targets"])
                keep = ~won
                remaining = int(keep.sum())  # the one host sync per step; it buys dropping finished images
                if remaining < keep.numel():
                    gone = state["rows"][won]
                    out_adv[gone] = state["adv"][won]
                    out_pred[gone] = logits.argmax(1)[won]
                    out_loss[gone] = loss[won]
                    if remaining == 0:
                        return out_adv, out_pred, out_loss, torch.ones(n, dtype=torch.bool, device=x.device)
                    state = select(state, keep)
                    grad = grad[keep]
            alpha = self.alpha * step_factor(self.schedule, step, self.steps)
            state["adv"] = project(state["x"], state["adv"] + alpha * ascent_direction(grad, self.norm), self.norm, self.eps)
        logits = run.logits(state["adv"])
        rows = state["rows"]
        out_adv[rows] = state["adv"]
        out_pred[rows] = logits.argmax(1)
        out_loss[rows] = run.loss(logits, state["labels"], state["targets"])
        won = out_pred != labels if targets is None else out_pred == targets
        return out_adv, out_pred, out_loss, won


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step: ``ceil(p_j * steps)`` with p_0 = 0, p_1 = 0.22,
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (Croce & Hein 2020, section 3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # The tolerance keeps float sums such as 0.22 + 0.19 from rounding 41 up to 42.
    points = sorted({math.ceil(q * steps - 1e-9) for q in p if q <= 1.0})
    return [w for w in points if 0 < w < steps]


@ATTACKS.register("apgd")
@dataclass
class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020): step-size-free PGD with momentum and checkpointed step halving.

    ``steps`` gradient evaluations per restart (the paper's N_iter, 100); ``loss`` is ``ce``
    (APGD-CE), ``dlr`` (APGD-DLR) or ``margin``; ``rho`` is the fraction of improving steps below
    which the step is halved; ``momentum`` the paper's alpha.
    """

    steps: int = 100
    restarts: int = 1
    loss: str = "ce"
    rho: float = 0.75
    momentum: float = 0.75
    random_start: bool = True
    early_stop: bool = True

    name: ClassVar[str] = "apgd"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.steps = check_number(self.steps, "steps", low=2, integer=True)
        self.restarts = check_number(self.restarts, "restarts", low=1, integer=True)
        self.rho = check_number(self.rho, "rho", low=0, high=1)
        self.momentum = check_number(self.momentum, "momentum", low=0, high=1)
        _check_loss(self.loss, self.name)
        self.random_start = bool(self.random_start)
        self.early_stop = bool(self.early_stop)

    def _perturb(self, run: AttackRun, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
                 seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return best_of_restarts(self._once, self.restarts, run, x, labels, targets, seeds)

    def _once(self, run: AttackRun, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
              seeds: torch.Tensor, restart: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        dev = x.device
        start = random_start(x, seeds, self.norm, self.eps, stream=restart) if (self.random_start or restart) else x.clone()
        grad, logits, loss = run.gradient(start, labels, targets, check_zero=restart == 0)
        out_adv = start.clone()
        out_pred = logits.argmax(1)
        out_loss = loss.clone()
        out_won = hit(logits, labels, targets)
        eta = torch.full((n,), 2.0 * self.eps, device=dev)
        s = {
            "x": x, "labels": labels, "targets": targets, "rows": torch.arange(n, device=dev),
            "cur": start, "prev": start, "grad": grad, "loss": loss,
            "best": start, "best_grad": grad, "best_loss": loss, "best_pred": logits.argmax(1),
            "eta": eta, "gains": torch.zeros(n, device=dev),
            "eta_at_check": eta.clone(), "best_at_check": loss.clone(),
        }
        checkpoints = apgd_checkpoints(self.steps)
        last_check = 0
        for k in range(self.steps - 1):
            if self.early_stop:
                keep = ~out_won[s["rows"]]
                remaining = int(keep.sum())
                if remaining == 0:
                    break
                if remaining < keep.numel():
                    s = select(s, keep)
            eta_b = s["eta"].view(-1, 1, 1, 1)
            z = project(s["x"], s["cur"] + eta_b * ascent_direction(s["grad"], self.norm), self.norm, self.eps)
            if k == 0:
                new = z
            else:
                a = self.momentum
                new = project(s["x"], s["cur"] + a * (z - s["cur"]) + (1 - a) * (s["cur"] - s["prev"]), self.norm, self.eps)
            grad, logits, loss = run.gradient(new, s["labels"], s["targets"])
            s["prev"], s["cur"], s["grad"] = s["cur"], new, grad
            s["gains"] = s["gains"] + (loss > s["loss"]).float()
            s["loss"] = loss
            won = hit(logits, s["labels"], s["targets"])
            rows = s["rows"]
            first = won & ~out_won[rows]
            out_adv[rows] = torch.where(first.view(-1, 1, 1, 1), new, out_adv[rows])
            out_pred[rows] = torch.where(first, logits.argmax(1), out_pred[rows])
            out_loss[rows] = torch.where(first, loss, out_loss[rows])
            out_won[rows] = out_won[rows] | won
            improved = loss > s["best_loss"]
            imp4 = improved.view(-1, 1, 1, 1)
            s["best"] = torch.where(imp4, new, s["best"])
            s["best_grad"] = torch.where(imp4, grad, s["best_grad"])
            s["best_loss"] = torch.where(improved, loss, s["best_loss"])
            s["best_pred"] = torch.where(improved, logits.argmax(1), s["best_pred"])
            if k + 1 in checkpoints:
                span = k + 1 - last_check
                last_check = k + 1
                few_gains = s["gains"] < self.rho * span
                stalled = (s["eta_at_check"] == s["eta"]) & (s["best_at_check"] == s["best_loss"])
                halve = few_gains | stalled
                s["eta_at_check"] = s["eta"].clone()
                s["best_at_check"] = s["best_loss"].clone()
                s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
                h4 = halve.view(-1, 1, 1, 1)
                # Restart the halved ones from their best point, without momentum.
                s["cur"] = torch.where(h4, s["best"], s["cur"])
                s["prev"] = torch.where(h4, s["best"], s["prev"])
                s["grad"] = torch.where(h4, s["best_grad"], s["grad"])
                s["gains"] = torch.zeros_like(s["gains"])
        rows = s["rows"]
        lost = ~out_won[rows]
        l4 = lost.view(-1, 1, 1, 1)
        out_adv[rows] = torch.where(l4, s["best"], out_adv[rows])
        out_pred[rows] = torch.where(lost, s["best_pred"], out_pred[rows])
        out_loss[rows] = torch.where(lost, s["best_loss"], out_loss[rows])
        return out_adv, out_pred, out_loss, out_won
