"""Adaptive discriminator augmentation (ADA): a differentiable pipeline applied to every image the discriminator sees.

Following the StyleGAN2-ADA paper, each augmentation is applied to each image with the same
probability ``p``; ``p`` is tuned during training by the overfitting heuristic
``r_t = E[sign(D(real))]`` towards a target (0.6). Because the pipeline is differentiable and
applied to real and generated images alike, its effects do not leak into the generator as long as
``p`` stays below about 0.8.

Groups: ``b`` pixel blitting (x-flip, 90-degree rotations, integer translation), ``g`` general
geometric (isotropic and anisotropic scaling, arbitrary rotation, fractional translation; composed
into one affine warp with reflection padding), ``c`` colour (brightness, contrast, luma flip, hue
rotation, saturation; composed into one 4x4 colour matrix), ``n`` additive Gaussian noise and
``o`` cutout. Images are in the network's ``[-1, 1]`` range. All randomness comes from a given
``torch.Generator``; the same number of random values is drawn whatever ``p`` is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from robust.errors import InputError

GROUPS = {
    "b": ("xflip", "rotate90", "xint"),
    "g": ("scale", "rotate", "aniso", "xfrac"),
    "c": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
    "n": ("noise",),
    "o": ("cutout",),
}


@dataclass
class AugmentConfig:
    """Which augmentations run (multipliers of ``p``) and their strengths (the paper's defaults)."""

    groups: str = "bgc"
    xint_max: float = 0.125
    scale_std: float = 0.2
    rotate_max: float = 1.0
    aniso_std: float = 0.2
    xfrac_std: float = 0.125
    brightness_std: float = 0.2
    contrast_std: float = 0.5
    hue_max: float = 1.0
    saturation_std: float = 1.0
    noise_std: float = 0.1
    cutout_size: float = 0.5
    enabled: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        unknown = set(self.groups) - set(GROUPS)
        if unknown:
            raise InputError("augment groups", "letters from " + "".join(GROUPS) + " (b blit, g geometric, c colour, n noise, o cutout)", self.groups)
        self.enabled = tuple(name for g in self.groups for name in GROUPS[g])


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    m = torch.eye(3, device=theta.device).repeat(theta.shape[0], 1, 1)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, device=sx.device).repeat(sx.shape[0], 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, device=tx.device).repeat(tx.shape[0], 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


class _Draws:
    """The random values of one pass, in the order they are drawn, from one ``torch.Generator``."""

    def __init__(self, n: int, generator: torch.Generator | None, device: torch.device):
        self.n, self.generator, self.device = n, generator, device

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape or (self.n,), generator=self.generator, device=self.device)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape or (self.n,), generator=self.generator, device=self.device)

    def gate(self, prob: float) -> torch.Tensor:
        """1 for the images an augmentation applies to (probability ``prob``), else 0."""
        return (self.rand() < prob).float()


class AugmentPipe(torch.nn.Module):
    """``pipe(images [-1, 1], p, generator) -> augmented images`` (same shape; differentiable in the images)."""

    def __init__(self, config: AugmentConfig | None = None):
        super().__init__()
        self.config = config or AugmentConfig()

    def forward(self, images: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dim() != 4:
            raise InputError("images", "a tensor [N, C, H, W]", tuple(images.shape))
        if not 0.0 <= p <= 1.0:
            raise InputError("p", "a probability in [0, 1]", p)
        on = set(self.config.enabled)
        draws = _Draws(images.shape[0], generator, images.device)
        x = images
        if on & set(GROUPS["b"] + GROUPS["g"]):
            x = self._geometric(x, p, on, draws)
        if on & set(GROUPS["c"]):
            x = self._colour(x, p, on, draws)
        return self._pixels(x, p, on, draws)

    def _geometric(self, x: torch.Tensor, p: float, on: set[str], draws: _Draws) -> torch.Tensor:
        """One affine map from output to input coordinates (normalised to [-1, 1]), applied as one warp."""
        cfg, rand, randn, gate = self.config, draws.rand, draws.randn, draws.gate
        n, _, h, w = x.shape
        device = x.device
        m = torch.eye(3, device=device).repeat(n, 1, 1)
        if "xflip" in on:
            flip = torch.floor(rand() * 2) * gate(p)
            m = m @ _scale2d(1 - 2 * flip, torch.ones(n, device=device))
        if "rotate90" in on:
            k = torch.floor(rand() * 4) * gate(p)
            m = m @ _rotation(k * (math.pi / 2))
        if "xint" in on:
            g = gate(p)
            tx = torch.round((rand() * 2 - 1) * cfg.xint_max * w) * 2 / w * g
            ty = torch.round((rand() * 2 - 1) * cfg.xint_max * h) * 2 / h * g
            m = m @ _translate2d(tx, ty)
        if "scale" in on:
            s = torch.exp2(randn() * cfg.scale_std * gate(p))
            m = m @ _scale2d(s, s)
        p_rot = 1 - math.sqrt(max(0.0, 1 - p))  # applied twice (before and after aniso) so the total is about p
        if "rotate" in on:
            m = m @ _rotation((rand() * 2 - 1) * math.pi * cfg.rotate_max * gate(p_rot))
        if "aniso" in on:
            s = torch.exp2(randn() * cfg.aniso_std * gate(p))
            m = m @ _scale2d(s, 1 / s)
        if "rotate" in on:
            m = m @ _rotation((rand() * 2 - 1) * math.pi * cfg.rotate_max * gate(p_rot))
        if "xfrac" in on:
            g = gate(p)
            m = m @ _translate2d(randn() * cfg.xfrac_std * 2 * g, randn() * cfg.xfrac_std * 2 * g)
        moved = (m - torch.eye(3, device=device)).abs().amax(dim=(1, 2)) > 0
        if not bool(moved.any()):
            return x
        grid = F.affine_grid(m[:, :2, :].to(x.dtype), list(x.shape), align_corners=False)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return torch.where(moved[:, None, None, None], warped, x)

    def _colour(self, x: torch.Tensor, p: float, on: set[str], draws: _Draws) -> torch.Tensor:
        """One 4x4 matrix acting on homogeneous RGB (brightness and contrast only on grey images)."""
        cfg, rand, randn, gate = self.config, draws.rand, draws.randn, draws.gate
        n, channels = x.shape[:2]
        device = x.device
        c = torch.eye(4, device=device).repeat(n, 1, 1)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)
        vv = torch.outer(luma, luma)
        if "brightness" in on:
            b = randn() * cfg.brightness_std * gate(p)
            t = torch.eye(4, device=device).repeat(n, 1, 1)
            t[:, :3, 3] = b[:, None]
            c = t @ c
        if "contrast" in on:
            s = torch.exp2(randn() * cfg.contrast_std * gate(p))
            t = torch.eye(4, device=device).repeat(n, 1, 1)
            t[:, 0, 0] = t[:, 1, 1] = t[:, 2, 2] = s
            c = t @ c
        if channels != 3:
            return x * c[:, 0, 0, None, None, None].to(x.dtype) + c[:, 0, 3, None, None, None].to(x.dtype)
        if "lumaflip" in on:
            i = torch.floor(rand() * 2) * gate(p)
            c = (torch.eye(4, device=device) - 2 * vv * i[:, None, None]) @ c
        if "hue" in on:
            theta = (rand() * 2 - 1) * math.pi * cfg.hue_max * gate(p)
            c = _rotate3d(luma[:3], theta) @ c
        if "saturation" in on:
            s = torch.exp2(randn() * cfg.saturation_std * gate(p))
            c = (vv + (torch.eye(4, device=device) - vv) * s[:, None, None]) @ c
        return torch.einsum("nij,njhw->nihw", c[:, :3, :3].to(x.dtype), x) + c[:, :3, 3, None, None].to(x.dtype)

    def _pixels(self, x: torch.Tensor, p: float, on: set[str], draws: _Draws) -> torch.Tensor:
        """Additive Gaussian noise and cutout."""
        cfg, rand, randn, gate = self.config, draws.rand, draws.randn, draws.gate
        n, channels, h, w = x.shape
        if "noise" in on:
            sigma = randn().abs() * cfg.noise_std * gate(p)
            x = x + randn(n, channels, h, w) * sigma[:, None, None, None]
        if "cutout" in on:
            g = gate(p)
            cx, cy = rand(), rand()
            ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h
            xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w
            inside_x = ((xs[None, :] - cx[:, None]).abs() < cfg.cutout_size / 2)
            inside_y = ((ys[None, :] - cy[:, None]).abs() < cfg.cutout_size / 2)
            mask = (inside_y[:, :, None] & inside_x[:, None, :]).to(x.dtype) * g[:, None, None]
            x = x * (1 - mask[:, None])
        return x


def _rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """4x4 homogeneous rotations by ``theta [N]`` about a unit ``axis`` (Rodrigues' formula)."""
    n = theta.shape[0]
    kx, ky, kz = axis.tolist()
    k = torch.tensor([[0.0, -kz, ky], [kz, 0.0, -kx], [-ky, kx, 0.0]], device=theta.device)
    r = torch.eye(3, device=theta.device) + torch.sin(theta)[:, None, None] * k + (1 - torch.cos(theta))[:, None, None] * (k @ k)
    m = torch.eye(4, device=theta.device).repeat(n, 1, 1)
    m[:, :3, :3] = r
    return m


class AdaController:
    """Adjusts ``p`` from the sign of D's outputs on reals: up when ``E[sign(D(real))]`` exceeds the target.

    ``p`` moves by at most ``batch * interval / (speed_kimg * 1000)`` per adjustment, so it can go
    from 0 to 1 in ``speed_kimg`` thousand images.
    """

    def __init__(self, target: float = 0.6, interval: int = 4, speed_kimg: float = 100.0, p: float = 0.0):
        self.target, self.interval, self.speed_kimg = float(target), int(interval), float(speed_kimg)
        self.p = float(p)
        self.sign_sum = 0.0
        self.count = 0
        self.steps = 0
        self.last_rt: float | None = None

    def accumulate(self, real_logits: torch.Tensor) -> None:
        self.add(float(torch.sign(real_logits.detach()).sum()), int(real_logits.numel()))

    def add(self, sign_sum: float, count: int) -> None:
        """Add the sum of ``sign(D(real))`` over ``count`` images (already summed over processes)."""
        self.sign_sum += float(sign_sum)
        self.count += int(count)

    def step(self, batch_size: int) -> None:
        """Call once per training iteration; adjusts ``p`` every ``interval`` iterations."""
        self.steps += 1
        if self.steps % self.interval or self.count == 0:
            return
        rt = self.sign_sum / self.count
        adjust = ((rt > self.target) - (rt < self.target)) * batch_size * self.interval / (self.speed_kimg * 1000)
        self.p = min(max(self.p + adjust, 0.0), 1.0)
        self.last_rt = rt
        self.sign_sum, self.count = 0.0, 0

    def state(self) -> dict[str, float | int | None]:
        return {"p": self.p, "sign_sum": self.sign_sum, "count": self.count, "steps": self.steps, "last_rt": self.last_rt,
                "target": self.target, "interval": self.interval, "speed_kimg": self.speed_kimg}

    def load_state(self, state: dict) -> None:
        self.p, self.sign_sum, self.count, self.steps = float(state["p"]), float(state["sign_sum"]), int(state["count"]), int(state["steps"])
        self.last_rt = state.get("last_rt")
