"""Named generator/discriminator/training configurations (``robust.gan.preset(name)``).

``tiny`` is for tests on a CPU (16x16, 16 channels); ``synthetic32`` is the demo generator's
config, sized to train a few hundred kimg on a CPU in hours; ``cifar`` and ``paper256`` follow the
published StyleGAN2-ADA configurations (32x32 and 256x256).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from robust.registry import Registry
from robust.validation import with_options


@dataclass(frozen=True)
class GANConfig:
    """Architecture and training hyper-parameters of one StyleGAN2-ADA setup."""

    name: str
    resolution: int
    z_dim: int = 512
    w_dim: int = 512
    map_layers: int = 8
    map_lr_mul: float = 0.01  # learning-rate multiplier of the generator's mapping network (paper: 0.01)
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: float | None = None
    d_architecture: str = "resnet"
    d_channel_base: int | None = None  # None: same as the generator
    d_channel_max: int | None = None
    mbstd_group: int = 4
    d_map_layers: int = 8
    d_map_lr_mul: float = 0.01  # the discriminator's conditioning mapping
    batch: int = 32
    lr_g: float = 0.0025
    lr_d: float = 0.0025
    r1_gamma: float = 1.0
    r1_interval: int = 16
    pl_weight: float = 0.0
    pl_interval: int = 4
    style_mixing: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: float | None = 0.05
    augment: str = "bgc"
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 100.0
    # AC-GAN-style guidance: an auxiliary classifier of the conditioning group ``class_guidance_group``,
    # trained on real images only, adds ``class_guidance`` x its cross-entropy on the fakes to G's loss.
    class_guidance: float = 0.0
    class_guidance_group: str = "class"
    # ``class_guidance_eps`` > 0 trains the auxiliary classifier adversarially (L2 PGD on the reals,
    # radius in [0, 1] pixel units) so the generator cannot satisfy it with imperceptible patterns:
    # a robust classifier's gradients point at the class's visible shape. A fresh auxiliary
    # classifier first trains alone for ``class_guidance_pretrain`` real batches.
    class_guidance_eps: float = 0.0
    class_guidance_pretrain: int = 0
    # The first ``d_warmup_kimg`` of a run train the discriminator (and ADA) only, the generator
    # frozen: for runs started from a pre-trained generator with a fresh discriminator (``--init``).
    d_warmup_kimg: float = 0.0
    kimg: float = 1000.0
    snapshot_kimg: float = 50.0
    description: str = ""

    def with_overrides(self, **overrides: Any) -> GANConfig:
        """A copy with some fields changed (unknown names raise :class:`InputError`)."""
        return with_options(self, overrides, "config overrides")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GANConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def generator_kwargs(self, c_dim: int, img_channels: int = 3) -> dict[str, Any]:
        return {
            "z_dim": self.z_dim, "c_dim": c_dim, "w_dim": self.w_dim, "img_resolution": self.resolution, "img_channels": img_channels,
            "mapping_kwargs": {"num_layers": self.map_layers, "lr_multiplier": self.map_lr_mul},
            "synthesis_kwargs": {"channel_base": self.channel_base, "channel_max": self.channel_max,
                                 "num_fp16_res": self.num_fp16_res, "conv_clamp": self.conv_clamp},
        }

    def discriminator_kwargs(self, c_dim: int, img_channels: int = 3) -> dict[str, Any]:
        return {
            "c_dim": c_dim, "img_resolution": self.resolution, "img_channels": img_channels, "architecture": self.d_architecture,
            "channel_base": self.d_channel_base or self.channel_base, "channel_max": self.d_channel_max or self.channel_max,
            "num_fp16_res": self.num_fp16_res, "conv_clamp": self.conv_clamp,
            "mapping_kwargs": {"num_layers": self.d_map_layers, "lr_multiplier": self.d_map_lr_mul}, "epilogue_kwargs": {"mbstd_group_size": self.mbstd_group},
        }


PRESETS: Registry[GANConfig] = Registry("GAN preset")

PRESETS.add("tiny", GANConfig(
    name="tiny", resolution=16, z_dim=16, w_dim=16, map_layers=2, d_map_layers=1, channel_base=256, channel_max=16, batch=8,
    r1_gamma=0.1, r1_interval=4, style_mixing=0.5, ema_kimg=0.05, ema_rampup=None, ada_interval=1, ada_kimg=1.0,
    kimg=2.0, snapshot_kimg=1.0, description="16x16, 16 channels: unit tests on a CPU"))

PRESETS.add("synthetic32", GANConfig(
    name="synthetic32", resolution=32, z_dim=128, w_dim=128, map_layers=2, d_map_layers=1, channel_base=1024, channel_max=64, batch=32,
    r1_gamma=0.1, style_mixing=0.5, ema_kimg=10.0, ema_rampup=0.05, ada_kimg=100.0, kimg=400.0, snapshot_kimg=20.0,
    description="32x32, 32-64 channels, 2-layer mapping: the demo generator, trainable on a CPU"))

PRESETS.add("cifar", GANConfig(
    name="cifar", resolution=32, z_dim=512, w_dim=512, map_layers=2, channel_base=32768, channel_max=512, num_fp16_res=4,
    conv_clamp=256, d_architecture="orig", mbstd_group=32, batch=64, r1_gamma=0.01, pl_weight=0.0, style_mixing=0.0,
    ema_kimg=500.0, ema_rampup=0.05, ada_kimg=500.0, kimg=100000.0, snapshot_kimg=200.0,
    description="the published CIFAR-10 configuration (32x32, 512 channels)"))

PRESETS.add("paper256", GANConfig(
    name="paper256", resolution=256, z_dim=512, w_dim=512, map_layers=8, channel_base=16384, channel_max=512, num_fp16_res=4,
    conv_clamp=256, mbstd_group=8, batch=64, r1_gamma=1.0, pl_weight=2.0, style_mixing=0.9, ema_kimg=20.0, ema_rampup=None,
    ada_kimg=500.0, kimg=25000.0, snapshot_kimg=200.0,
    description="the published 256x256 configuration (FFHQ/LSUN-style, path-length regularised)"))


def preset(name: str, **overrides: Any) -> GANConfig:
    """A named configuration, optionally with some fields overridden."""
    config = PRESETS.get(name)
    return config.with_overrides(**overrides) if overrides else config
