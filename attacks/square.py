"""Square attack (Andriushchenko et al. 2020): a score-based black-box attack for Linf and L2.

It needs only the model's scores, never gradients, so it attacks ONNX models as deployed. Each
iteration proposes a change inside one random square window (Linf: the window's perturbation set to
``+-eps`` per channel; L2: a centred "pyramid" pattern of the paper's eq. 3 that moves mass from a
second window) and keeps it if the loss grows. The window covers a fraction ``p`` of the image that
starts at ``p_init`` and halves at the paper's iteration marks (10, 50, 200, 500, 1000, 2000, 4000,
6000, 8000 of 10,000, rescaled to the query budget). ``p_init`` defaults to 0.8, AutoAttack's
setting, which is much stronger on small images with budgets of hundreds of queries than the
paper's ImageNet value 0.05. Initialisation: vertical stripes of ``+-eps``
(Linf); a grid of pyramid tiles with random signs scaled to norm ``eps`` (L2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from attacks.base import ATTACKS, Attack, AttackRun, hit, select
from robust import noise
from robust.perturbation import project
from robust.validation import check_choice, check_number

SCHEDULE_MARKS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, iteration: int, queries: int) -> float:
    """Fraction of the image the window covers at ``iteration``: ``p_init`` halved at each mark passed."""
    scaled = int(iteration / queries * 10_000)
    return p_init / 2 ** sum(scaled > mark for mark in SCHEDULE_MARKS)


def pyramid(rows: int, cols: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The paper's eq. 3 pattern: ``sum_{k=0}^{M(r,s)} 1 / (n + 1 - k)^2``, largest at the centre, 0 beyond ``n``."""
    n = max(rows // 2, cols // 2)
    r = torch.arange(rows, device=device).view(-1, 1)
    s = torch.arange(cols, device=device).view(1, -1)
    reach = n - torch.maximum((r - rows // 2).abs(), (s - cols // 2).abs())
    terms = 1.0 / (n + 1 - torch.arange(n + 1, device=device, dtype=torch.float32)) ** 2
    cumulative = torch.cat([torch.zeros(1, device=device), terms.cumsum(0)])
    return cumulative[(reach + 1).clamp(min=0)]


def window_pattern(side: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The L2 proposal: a pyramid on the left half and a negative one on the right, unit norm."""
    left = side // 2
    parts = [pyramid(side, left, device)] if left else []
    parts.append(-pyramid(side, side - left, device))
    pattern = torch.cat(parts, dim=1)
    return pattern / pattern.norm().clamp_min(1e-12)


def _window(pos_r: torch.Tensor, pos_c: torch.Tensor, side: int, h: int, w: int) -> torch.Tensor:
    """Boolean masks ``[N, 1, H, W]`` of the square windows with top-left corners ``(pos_r, pos_c)``."""
    rows = torch.arange(h, device=pos_r.device)
    cols = torch.arange(w, device=pos_r.device)
    in_r = (rows >= pos_r[:, None]) & (rows < pos_r[:, None] + side)
    in_c = (cols >= pos_c[:, None]) & (cols < pos_c[:, None] + side)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _positions(u: torch.Tensor, side: int, size: int) -> torch.Tensor:
    return (u * (size - side + 1)).long().clamp(0, size - side)


def _place(pattern: torch.Tensor, pos_r: torch.Tensor, pos_c: torch.Tensor, transpose: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Each image's ``side x side`` pattern (transposed where asked) placed at its window, zero elsewhere."""
    side = pattern.shape[0]
    per_image = torch.where(transpose.view(-1, 1, 1), pattern.t(), pattern).flatten(1)
    rows = torch.arange(h, device=pos_r.device)
    cols = torch.arange(w, device=pos_r.device)
    lr = rows[None, :] - pos_r[:, None]
    lc = cols[None, :] - pos_c[:, None]
    inside = ((lr >= 0) & (lr < side))[:, :, None] & ((lc >= 0) & (lc < side))[:, None, :]
    index = (lr.clamp(0, side - 1)[:, :, None] * side + lc.clamp(0, side - 1)[:, None, :]).flatten(1)
    values = per_image.gather(1, index).view(-1, h, w)
    return torch.where(inside, values, torch.zeros_like(values))[:, None]


def _sq_norm(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return (t * t).sum(dim=dims)


@ATTACKS.register("square")
@dataclass
class Square(Attack):
    """Square attack: ``queries`` model evaluations per image at most (the initial one included).

    ``p_init`` is the starting window fraction (AutoAttack's 0.8 by default); ``loss`` is
    ``margin`` (the paper's choice) or ``ce``. Works on any classifier, gradients or not.
    """

    queries: int = 1000
    p_init: float = 0.8
    loss: str = "margin"

    name: ClassVar[str] = "square"
    needs_gradients: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.queries = check_number(self.queries, "queries", low=1, integer=True)
        self.p_init = check_number(self.p_init, "p_init", low=1e-6, high=1)
        check_choice(self.loss, "square loss", ("margin", "ce"))

    def _perturb(self, run: AttackRun, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None,
                 seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        dev = x.device
        delta = self._init_linf(x, seeds) if self.norm == "linf" else self._init_l2(x, seeds)
        adv = project(x, x + delta, self.norm, self.eps)
        if self.norm == "l2":
            delta = adv - x
        logits = run.logits(adv)
        out_adv = adv.clone()
        out_pred = logits.argmax(1)
        s = {
            "x": x, "labels": labels, "targets": targets, "seeds": seeds, "rows": torch.arange(n, device=dev),
            "delta": delta, "adv": adv, "loss": run.loss(logits, labels, targets), "pred": logits.argmax(1),
            "won": hit(logits, labels, targets),
        }
        for i in range(1, self.queries):
            keep = ~s["won"]
            remaining = int(keep.sum())  # the loop stops when every image is broken: one sync per iteration
            if remaining < keep.numel():
                gone = ~keep
                out_adv[s["rows"][gone]] = s["adv"][gone]
                out_pred[s["rows"][gone]] = s["pred"][gone]
                if remaining == 0:
                    return out_adv, out_pred
                s = select(s, keep)
            side = max(1, min(h, w, int(round(math.sqrt(square_fraction(self.p_init, i, self.queries) * h * w)))))
            if self.norm == "linf":
                delta = self._propose_linf(s, side, i)
            else:
                delta = self._propose_l2(s, max(side, 2) if min(h, w) >= 2 else 1, i)
            adv = project(s["x"], s["x"] + delta, self.norm, self.eps)
            logits = run.logits(adv)
            loss = run.loss(logits, s["labels"], s["targets"])
            won = hit(logits, s["labels"], s["targets"])
            take = won | (loss > s["loss"])
            t4 = take.view(-1, 1, 1, 1)
            s["delta"] = torch.where(t4, delta if self.norm == "linf" else adv - s["x"], s["delta"])
            s["adv"] = torch.where(t4, adv, s["adv"])
            s["loss"] = torch.where(take, loss, s["loss"])
            s["pred"] = torch.where(take, logits.argmax(1), s["pred"])
            s["won"] = s["won"] | won
        out_adv[s["rows"]] = s["adv"]
        out_pred[s["rows"]] = s["pred"]
        return out_adv, out_pred

    # -- Linf ---------------------------------------------------------------------------------------
    def _init_linf(self, x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        u = noise.uniform(seeds, (c, 1, w), stream=1).to(x.device, x.dtype)
        return torch.where(u < 0.5, -self.eps, self.eps).expand(-1, -1, h, -1)

    def _propose_linf(self, s: dict, side: int, iteration: int) -> torch.Tensor:
        delta = s["delta"]
        _, c, h, w = delta.shape
        u = noise.uniform(s["seeds"], (2 + c,), stream=10_000 + iteration).to(delta.device)
        window = _window(_positions(u[:, 0], side, h), _positions(u[:, 1], side, w), side, h, w)
        values = torch.where(u[:, 2:] < 0.5, -self.eps, self.eps).to(delta.dtype).view(-1, c, 1, 1)
        proposal = torch.where(window, values, delta)
        # A proposal equal to the current window wastes a query: flip its signs instead.
        same = ~((proposal != delta) & window).flatten(1).any(1)
        values = torch.where(same.view(-1, 1, 1, 1), -values, values)
        return torch.where(window, values, delta)

    # -- L2 -----------------------------------------------------------------------------------------
    def _init_l2(self, x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        tile = max(1, min(h, w) // 5)
        th, tw = math.ceil(h / tile), math.ceil(w / tile)
        u = noise.uniform(seeds, (c, th, tw), stream=1).to(x.device, x.dtype)
        signs = torch.where(u < 0.5, -1.0, 1.0).to(x.dtype)
        signs = signs.repeat_interleave(tile, dim=2).repeat_interleave(tile, dim=3)[:, :, :h, :w]
        tiles = pyramid(tile, tile, x.device).to(x.dtype).repeat(th, tw)[:h, :w]
        delta = signs * tiles
        return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * self.eps

    def _propose_l2(self, s: dict, side: int, iteration: int) -> torch.Tensor:
        """The paper's Algorithm 3: new pattern in window 1 with window 2's mass and the unused budget; window 2 emptied."""
        nu = s["delta"]
        n, c, h, w = nu.shape
        u = noise.uniform(s["seeds"], (5 + c,), stream=10_000 + iteration).to(nu.device)
        r1, c1 = _positions(u[:, 0], side, h), _positions(u[:, 1], side, w)
        r2, c2 = _positions(u[:, 2], side, h), _positions(u[:, 3], side, w)
        w1 = _window(r1, c1, side, h, w)
        w12 = w1 | _window(r2, c2, side, h, w)
        pattern = _place(window_pattern(side, nu.device).to(nu.dtype), r1, c1, u[:, 4] < 0.5, h, w)
        rho = torch.where(u[:, 5:] < 0.5, -1.0, 1.0).to(nu.dtype).view(n, c, 1, 1)
        unused = (self.eps ** 2 - _sq_norm(nu, (1, 2, 3))).clamp_min(0).view(n, 1)
        in_w1 = nu * w1
        w1_norm = _sq_norm(in_w1, (2, 3)).sqrt().clamp_min(1e-12).view(n, c, 1, 1)
        temp = rho * pattern + in_w1 / w1_norm
        available = (_sq_norm(nu * w12, (2, 3)) + unused / c).sqrt().view(n, c, 1, 1)
        temp = temp / _sq_norm(temp, (2, 3)).sqrt().clamp_min(1e-12).view(n, c, 1, 1) * available
        return torch.where(w1, temp, torch.where(w12, torch.zeros_like(nu), nu))
