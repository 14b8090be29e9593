"""StyleGAN2 losses: non-saturating logistic, lazy R1 on reals, path-length regularisation, style mixing.

The regularisers are "lazy" (StyleGAN2, section 3.1): computed every ``interval`` iterations and
weighted by ``interval`` so their average pull matches an every-step penalty.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robust.gan.augment_ada import AugmentPipe
from robust.gan.networks import Discriminator, Generator


@dataclass
class LossConfig:
    r1_gamma: float = 1.0
    r1_interval: int = 16
    pl_weight: float = 0.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9


class StyleGAN2Loss:
    """Computes the generator and discriminator objectives; the caller owns backward and optimiser steps."""

    def __init__(self, G: Generator, D: Discriminator, augment: AugmentPipe | None, config: LossConfig):
        self.G, self.D, self.augment, self.config = G, D, augment, config
        self.pl_mean = torch.zeros([], device=G.device)

    def run_G(self, z: torch.Tensor, c: torch.Tensor | None, generator: torch.Generator, update_emas: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and the ws that made them; with probability ``style_mixing`` the layers from a random cutoff take a second z."""
        G = self.G
        ws = G.mapping(z, c, update_emas=update_emas)
        # Random numbers are drawn every call so the stream does not depend on the outcome.
        cutoff = int(torch.randint(1, G.num_ws, (), generator=generator, device=generator.device))
        mix = float(torch.rand((), generator=generator, device=generator.device)) < self.config.style_mixing
        z2 = torch.randn(z.shape, generator=generator, device=generator.device).to(z.device)
        if mix and G.num_ws > 1:
            ws2 = G.mapping(z2, c, update_emas=False)
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        img = G.synthesis(ws, noise_mode="random", fused=False, generator=generator)
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor | None, p: float, generator: torch.Generator) -> torch.Tensor:
        if self.augment is not None:
            img = self.augment(img, p, generator)
        return self.D(img, c)

    def generator_loss(self, z: torch.Tensor, c: torch.Tensor | None, p: float, generator: torch.Generator,
                       regularize: bool, guidance: Callable[[torch.Tensor], torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, dict[str, float]]:
        """``softplus(-D(G(z)))`` (+ the path-length penalty on regularisation steps, + ``guidance(images)``,
        an extra weighted term on the un-augmented fakes, when given)."""
        img, _ = self.run_G(z, c, generator, update_emas=True)
        logits = self.run_D(img, c, p, generator)
        loss = F.softplus(-logits).mean()
        stats = {"loss_G": float(loss.detach())}
        if guidance is not None:
            extra = guidance(img)
            stats["guidance"] = float(extra.detach())
            loss = loss + extra
        if regularize and self.config.pl_weight > 0:
            penalty = self.path_length_penalty(z, c, generator)
            stats["pl"] = float(penalty.detach())
            loss = loss + penalty * self.config.pl_weight * self.config.pl_interval
        return loss, stats

    def path_length_penalty(self, z: torch.Tensor, c: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """Squared deviation of ``|J_w^T y|`` (y: random image-space noise) from its running mean."""
        n = max(1, z.shape[0] // self.config.pl_batch_shrink)
        img, ws = self.run_G(z[:n], c[:n] if c is not None else None, generator)
        h, w = img.shape[-2:]
        noise = torch.randn(img.shape, generator=generator, device=generator.device).to(img.device) / math.sqrt(h * w)
        (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(dim=2).mean(dim=1).sqrt()
        self.pl_mean = self.pl_mean.lerp(lengths.mean().detach(), self.config.pl_decay)
        return (lengths - self.pl_mean).square().mean()

    def discriminator_loss(self, z: torch.Tensor, c_gen: torch.Tensor | None, real: torch.Tensor, c_real: torch.Tensor | None,
                           p: float, generator: torch.Generator, regularize: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """``softplus(D(G(z))) + softplus(-D(x))`` (+ lazy R1 on reals); also returns D's logits on reals (for ADA)."""
        with torch.no_grad():
            fake, _ = self.run_G(z, c_gen, generator)
        loss_fake = F.softplus(self.run_D(fake, c_gen, p, generator)).mean()
        do_r1 = regularize and self.config.r1_gamma > 0
        real = real.detach().requires_grad_(do_r1)
        real_logits = self.run_D(real, c_real, p, generator)
        loss_real = F.softplus(-real_logits).mean()
        loss = loss_fake + loss_real
        stats = {"loss_D": float((loss_fake + loss_real).detach()), "D_real": float(real_logits.detach().mean()),
                 "D_fake_loss": float(loss_fake.detach())}
        if do_r1:
            (grads,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            r1 = grads.square().sum(dim=[1, 2, 3]).mean()
            stats["r1"] = float(r1.detach())
            loss = loss + r1 * (self.config.r1_gamma / 2) * self.config.r1_interval
        return loss, real_logits.detach(), stats
