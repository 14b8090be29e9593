"""The coded world of the SAGE tests: a tiny generator whose images encode their code, a decoder that reads it back, rule models.

The generator is the ``tiny`` preset with hand-set weights so its images *encode* their code: the
mapping copies eight coordinates of the normalised z and the one-hot prompt into w, and only the
last ToRGB layer reads w, so every image is an affine function of w. A least-squares decoder reads
w back exactly, which lets small hand-built models fail exactly where a test wants them to.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from robust.gan import Conditioning, Generator, preset
from robust.models import Classifier

CLASSES = ["c0", "c1", "c2", "c3"]
TEXTURES = ["t0", "t1", "t2", "t3"]
HALF_SPACE = 4.0  # the half-space model fails where w[0] > 4 (w[0] = 2 z0 / rms(z) for z0 > 0: about 2% of samples)


def coded_generator() -> Generator:
    cond = Conditioning([("class", CLASSES), ("texture", TEXTURES)])
    torch.manual_seed(0)
    G = Generator(**preset("tiny").generator_kwargs(c_dim=cond.c_dim), conditioning=cond)
    m = G.mapping
    with torch.no_grad():
        embed = torch.zeros(16, 8)
        embed[torch.arange(8), torch.arange(8)] = 1.0
        m.embed.weight.copy_(embed / m.embed.weight_gain)
        m.embed.bias.zero_()
        first = torch.zeros(16, 32)
        first[torch.arange(8), torch.arange(8)] = 1.0  # w[0:8] <- normalised z[0:8]
        first[8 + torch.arange(8), 16 + torch.arange(8)] = 1.0 / math.sqrt(8.0)  # w[8:16] <- the one-hot prompt
        m.fc0.weight.copy_(first / m.fc0.weight_gain)
        m.fc0.bias.zero_()
        m.fc1.weight.copy_(torch.eye(16) / m.fc1.weight_gain)
        m.fc1.bias.zero_()
        blocks = dict(G.synthesis.blocks())
        last = max(blocks)
        for res, block in blocks.items():
            for layer in (getattr(block, "conv0", None), block.conv1):
                if layer is not None:
                    layer.affine.weight.zero_()  # constant styles: the features ignore w
            if res != last:
                block.torgb.weight.zero_()
                block.torgb.bias.zero_()
        torgb = blocks[last].torgb
        torgb.affine.weight.copy_(0.5 * torch.eye(16) / torgb.affine.weight_gain)
        torgb.bias.zero_()
        z = torch.randn(256, 16)
        c = cond.encode({"class": torch.randint(0, 4, (256,)), "texture": torch.randint(0, 4, (256,))})
        torgb.weight.mul_(0.6 / G(z, c).abs().max())  # stay inside [-1, 1]: no clamping, so images stay affine in w
    return G.eval().requires_grad_(False)


class Decoder(nn.Module):
    """``[0, 1]`` image -> the w that made it (least squares over generated pairs; exact because the image is affine in w)."""

    def __init__(self, G: Generator, n: int = 96):
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        z = torch.randn(n, G.z_dim, generator=gen)
        tokens = {"class": torch.randint(0, 4, (n,), generator=gen), "texture": torch.randint(0, 4, (n,), generator=gen)}
        with torch.no_grad():
            ws = G.mapping(z, G.conditioning.encode(tokens))
            x = G.to_unit(G.synthesis(ws)).flatten(1)
        solution = torch.linalg.lstsq(torch.cat([x, torch.ones(n, 1)], 1).double(), ws[:, -1].double()).solution
        self.register_buffer("weight", solution[:-1].float())
        self.register_buffer("bias", solution[-1].float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight + self.bias


class Rule(nn.Module):
    """Classifies by the class read from w, except where ``fail(w)`` (in [0, 1]) moves it ``shift`` classes on."""

    def __init__(self, decoder: Decoder, fail=None, shift: int = 1):
        super().__init__()
        self.decoder, self.fail, self.shift = decoder, fail, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.decoder(x)
        cls = w[:, 8:12] / 2.0
        if self.fail is None:
            return 4.0 * cls
        f = self.fail(w)[:, None]
        return 4.0 * (cls * (1 - f) + f * torch.roll(cls, self.shift, dims=1))


class HalfSpace(nn.Module):
    """Right exactly where ``w[0] < limit``: the true class's logit is ``2 (limit - w[0])``, the others 0."""

    def __init__(self, decoder: Decoder, limit: float = HALF_SPACE):
        super().__init__()
        self.decoder, self.limit = decoder, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.decoder(x)
        return (w[:, 8:12] / 2.0) * (2.0 * (self.limit - w[:, :1]))


def classifier(module: nn.Module, name: str) -> Classifier:
    return Classifier(module, input_size=(3, 16, 16), num_classes=4, class_names=CLASSES, name=name)
