"""The tiny generator the NaTra, inversion, direction and latent-strategy tests share (16x16, 8 channels)."""
from __future__ import annotations

import torch

from robust.gan import Conditioning, Generator


def tiny_generator(seed: int = 0, classes: int = 0) -> Generator:
    """A randomly initialised generator, the same for the same ``seed`` (global RNG untouched);
    ``classes`` > 0 conditions it on that many classes."""
    cond = Conditioning.classes([f"c{i}" for i in range(classes)]) if classes else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(z_dim=8, c_dim=classes, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                      synthesis_kwargs={"channel_base": 128, "channel_max": 8}, conditioning=cond)
    return G.eval().requires_grad_(False)
