"""Training the structure/appearance model (robust.gan.swapping) on unlabelled images.

Losses (Swapping Autoencoder, Park et al. 2020): L1 reconstruction; non-saturating adversarial
losses on reconstructions and on swapped hybrids ``G(s1, a2)`` against an image discriminator with
lazy R1; a patch co-occurrence discriminator that tells a crop of ``x2`` from a crop of the hybrid,
given reference crops of ``x2``. Every random choice comes from one seeded CPU generator stored in
the snapshots, so a resumed run continues bit for bit like one that never stopped (on a CPU).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robust.data import ImageSet
from robust.errors import InputError
from robust.gan.networks import Conv2dLayer, Discriminator, DiscriminatorBlock, FullyConnectedLayer, Generator
from robust.gan.swapping import (
    SWAP_SNAPSHOT_FORMAT,
    SwapAutoencoder,
    SwapNetConfig,
    build_swap_model,
    load_swap_model,
    save_swap_model,
)
from robust.gan.training import TrainingDiverged, Trainer, _load_optimizer, latest_snapshot, update_ema, write_png
from robust.io import fingerprint_tensors, load_checkpoint, save_checkpoint
from robust.provenance import command_line, hardware
from robust.seeding import derive_seed, make_generator
from robust.transforms import get_transform
from robust.validation import check_images, check_number


@dataclass(frozen=True)
class SwapTrainConfig:
    """Hyper-parameters of one run: batch, learning rates (Adam, betas 0 / 0.99), loss weights, the
    co-occurrence crops (``patch_size`` px, ``patch_refs`` reference crops, ``patch_queries`` crops
    judged per image), the widths of the image and co-occurrence discriminators, lazy R1 (every ``r1_interval`` steps) and the EMA."""

    network: SwapNetConfig = field(default_factory=SwapNetConfig)
    steps: int = 10_000
    batch: int = 16
    lr: float = 0.002
    d_lr: float = 0.002
    rec_weight: float = 1.0
    gan_rec_weight: float = 0.5
    gan_swap_weight: float = 0.5
    cooc_weight: float = 1.0
    patch_size: int = 16
    patch_refs: int = 4
    patch_queries: int = 2
    d_width: int = 16
    d_channel_max: int = 128
    patch_width: int = 16
    r1_gamma: float = 0.1
    patch_r1_gamma: float = 1.0
    r1_interval: int = 16
    ema_kimg: float = 5.0
    ema_rampup: float | None = 0.05
    snapshot_every: int = 1000
    # Not in the paper: the structure code is taken from a copy of each image with its hue rotated at
    # random (the appearance code from the image itself), so the structure code cannot tell the
    # generator the image's colours and they must come from the appearance code.
    structure_hue_jitter: bool = False
    # Latent reconstruction of the hybrids (MUNIT's, not the Swapping Autoencoder's): the encoder, its
    # weights held fixed for these terms, must read the source's structure code and the donor's
    # appearance code back from G(s1, a2) (mean absolute error), so a hybrid cannot become the donor.
    cycle_structure_weight: float = 0.0
    cycle_appearance_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "patch_refs", "patch_queries", "d_width", "d_channel_max", "patch_width", "r1_interval",
                     "snapshot_every"):
            check_number(getattr(self, name), name, low=1, integer=True)
        if self.batch < 2:
            raise InputError("batch", "at least 2 images (swaps pair images of a batch)", self.batch)
        p = self.patch_size
        if not isinstance(p, int) or p < 8 or p & (p - 1) or p > self.network.resolution:
            raise InputError("patch_size", f"a power of two in [8, {self.network.resolution}]", p)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SwapTrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError("swap training config", "fields of SwapTrainConfig (" + ", ".join(sorted(names)) + ")", unknown)
        values = dict(data)
        if isinstance(values.get("network"), Mapping):
            values["network"] = SwapNetConfig.from_dict(values["network"])
        return cls(**values)


@dataclass
class SwapData:
    """Training images as uint8 ``[N, C, R, R]`` (CPU), their fingerprint and a description."""

    images: torch.Tensor
    name: str
    fingerprint: str

    def __len__(self) -> int:
        return self.images.shape[0]


def swap_data(images: ImageSet | torch.Tensor, name: str | None = None) -> SwapData:
    """An :class:`ImageSet` (only its images are used: no labels, no factors) or an image tensor
    (float in ``[0, 1]`` or uint8) -> :class:`SwapData`."""
    if isinstance(images, ImageSet):
        name, images = name or images.name, images.images
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        u8 = images.cpu()
        if u8.dim() != 4:
            raise InputError("images", "a [N, C, H, W] tensor", tuple(u8.shape))
    else:
        u8 = (check_images(images, "images") * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    if u8.shape[-1] != u8.shape[-2]:
        raise InputError("images", "square images", tuple(u8.shape))
    return SwapData(u8.contiguous(), name or "images", fingerprint_tensors(u8))


# -- crops and the co-occurrence discriminator ----------------------------------------------------

def crop_offsets(n: int, count: int, size: int, patch: int, generator: torch.Generator) -> torch.Tensor:
    """Top-left corners ``[n, count, 2]`` of random ``patch``-pixel crops of ``size``-pixel images."""
    return torch.randint(0, size - patch + 1, (n, count, 2), generator=generator)


def random_crops(images: torch.Tensor, offsets: torch.Tensor, patch: int) -> torch.Tensor:
    """Crops ``[N, K, C, patch, patch]`` of ``images [N, C, H, W]`` at ``offsets [N, K, 2]`` (row, column)."""
    n, k = offsets.shape[:2]
    span = torch.arange(patch, device=images.device)
    offsets = offsets.to(images.device)
    rows = (offsets[..., 0, None] + span)[:, :, :, None]
    cols = (offsets[..., 1, None] + span)[:, :, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 1, 4, 2, 3)


class CooccurrenceDiscriminator(nn.Module):
    """Is a query crop from the same image as the reference crops? ``(queries [N, Q, C, P, P], refs
    [N, K, C, P, P]) -> logits [N * Q, 1]``; the references' features are averaged per image."""

    def __init__(self, patch: int, img_channels: int = 3, width: int = 16, channel_max: int = 128, features: int = 128):
        super().__init__()
        res = [patch >> i for i in range((patch // 4).bit_length() - 1)]

        def ch(r: int) -> int:
            return min(width * patch // r, channel_max)

        self.blocks = nn.ModuleList(DiscriminatorBlock(0 if r == patch else ch(r), ch(r), ch(r // 2), img_channels, first=r == patch)
                                    for r in res)
        self.conv = Conv2dLayer(ch(4), ch(4), 3, activation="lrelu")
        self.embed = FullyConnectedLayer(ch(4) * 16, features, activation="lrelu")
        self.head = nn.Sequential(FullyConnectedLayer(2 * features, features, activation="lrelu"),
                                  FullyConnectedLayer(features, features, activation="lrelu"), FullyConnectedLayer(features, 1))

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        x = None
        for block in self.blocks:
            x = block(x, crops)
        return self.embed(self.conv(x).flatten(1))

    def forward(self, queries: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
        n, q = queries.shape[:2]
        fq = self.features(queries.flatten(0, 1))
        fr = self.features(refs.flatten(0, 1)).view(n, refs.shape[1], -1).mean(1)
        return self.head(torch.cat([fq, fr.repeat_interleave(q, 0)], dim=1))


# -- the trainer ----------------------------------------------------------------------------------

def _adam(params: Any, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(0.0, 0.99), eps=1e-8)


class SwapTrainer:
    """One run: ``step()`` does one encoder/generator update and one update of both discriminators."""

    def __init__(self, config: SwapTrainConfig, data: SwapData, *, seed: int = 0, device: torch.device | str = "cpu"):
        net = config.network
        if tuple(data.images.shape[1:]) != (net.img_channels, net.resolution, net.resolution):
            raise InputError("data", f"{net.img_channels}x{net.resolution}x{net.resolution} images", tuple(data.images.shape[1:]))
        if len(data) < config.batch:
            raise InputError("data", f"at least batch = {config.batch} images", len(data))
        self.config, self.data, self.seed = config, data, int(seed)
        self.device = torch.device(device)
        self.model = build_swap_model(net, self.seed).to(self.device).train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "swap-discriminators"))
            self.D = Discriminator(0, net.resolution, net.img_channels, channel_base=config.d_width * net.resolution,
                                   channel_max=config.d_channel_max)
            self.P = CooccurrenceDiscriminator(config.patch_size, net.img_channels, config.patch_width, config.d_channel_max)
        self.D.to(self.device).train().requires_grad_(False)
        self.P.to(self.device).train().requires_grad_(False)
        self.model_ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt_G = _adam(self.model.parameters(), config.lr)
        self.opt_D = _adam([*self.D.parameters(), *self.P.parameters()], config.d_lr)
        self.gen = make_generator(derive_seed(self.seed, "swap-train"))
        self.step_count = 0
        self.wall_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self._sums: dict[str, list[float]] = {}

    @property
    def cur_nimg(self) -> int:
        return self.step_count * self.config.batch

    # -- one iteration --------------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        cfg, n = self.config, self.config.batch
        size = self.config.network.resolution
        # Every random number of the step is drawn up front, so the stream never depends on results.
        idx = torch.randint(len(self.data), (n,), generator=self.gen)
        crops = {name: crop_offsets(n, k, size, cfg.patch_size, self.gen)
                 for name, k in (("refs", cfg.patch_refs), ("fake", cfg.patch_queries), ("real", cfg.patch_queries))}
        hue_shift = (torch.rand(n, generator=self.gen) * 2 - 1) * math.pi
        x = self.data.images[idx].to(self.device).float() / 127.5 - 1
        # Each image's donor is its neighbour in a randomly drawn batch.
        donor = x.roll(1, 0)
        refs = random_crops(donor, crops["refs"], cfg.patch_size)
        stats, rec, swapped = self._generator_step(x, refs, crops["fake"], hue_shift if cfg.structure_hue_jitter else None)
        if max(cfg.gan_rec_weight, cfg.gan_swap_weight, cfg.cooc_weight) > 0:
            stats.update(self._discriminator_step(x, donor, rec, swapped, refs, crops))
        self.step_count += 1
        self._update_ema()
        return stats

    def _generator_step(self, x: torch.Tensor, refs: torch.Tensor, fake_crops: torch.Tensor, hue_shift: torch.Tensor | None
                        ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        cfg = self.config
        self.model.requires_grad_(True)
        if hue_shift is None:
            structure, appearance = self.model.encode_raw(x)
        else:
            rotated = get_transform("hue").apply(Generator.to_unit(x), {"shift": hue_shift.to(x.device)})
            structure = self.model.encoder.structure_code(Generator.from_unit(rotated))
            appearance = self.model.encoder.appearance_code(x)
        rec = self.model.decode_raw(structure, appearance)
        swapped = self.model.decode_raw(structure, appearance.roll(1, 0))
        l_rec = (rec - x).abs().mean()
        l_gan_rec = l_gan_swap = l_cooc = torch.zeros((), device=x.device)
        # (Zero weights skip their networks: reconstruction-only runs are ablations of the losses.)
        if cfg.gan_rec_weight > 0 or cfg.gan_swap_weight > 0:
            l_gan_rec, l_gan_swap = F.softplus(-self.D(torch.cat([rec, swapped]))).view(2, -1).mean(1)
        if cfg.cooc_weight > 0:
            l_cooc = F.softplus(-self.P(random_crops(swapped, fake_crops, cfg.patch_size), refs)).mean()
        loss = cfg.rec_weight * l_rec + cfg.gan_rec_weight * l_gan_rec + cfg.gan_swap_weight * l_gan_swap + cfg.cooc_weight * l_cooc
        stats = {"rec_l1": float(l_rec.detach()), "G_rec": float(l_gan_rec.detach()), "G_swap": float(l_gan_swap.detach()),
                 "G_cooc": float(l_cooc.detach())}
        if cfg.cycle_structure_weight > 0 or cfg.cycle_appearance_weight > 0:
            fixed = {k: v.detach() for k, v in self.model.encoder.named_parameters()}
            s_back, a_back = torch.func.functional_call(self.model.encoder, fixed, (swapped,))
            l_cyc_s = (s_back - structure.detach()).abs().mean()
            l_cyc_a = (a_back - appearance.roll(1, 0).detach()).abs().mean()
            loss = loss + cfg.cycle_structure_weight * l_cyc_s + cfg.cycle_appearance_weight * l_cyc_a
            stats.update({"cyc_s": float(l_cyc_s.detach()), "cyc_a": float(l_cyc_a.detach())})
        self._update(self.model, self.opt_G, loss, "encoder/generator")
        self.model.requires_grad_(False)
        return stats, rec.detach(), swapped.detach()

    def _discriminator_step(self, x: torch.Tensor, donor: torch.Tensor, rec: torch.Tensor, swapped: torch.Tensor,
                            refs: torch.Tensor, crops: Mapping[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        self.D.requires_grad_(True)
        self.P.requires_grad_(True)
        do_r1 = (self.step_count % cfg.r1_interval) == 0
        real = x.detach().requires_grad_(do_r1 and cfg.r1_gamma > 0)
        real_logits = self.D(real)
        # Reals and fakes go through D separately: its minibatch-std layer mixes the images of a call.
        l_d = F.softplus(self.D(torch.cat([rec, swapped]))).mean() + F.softplus(-real_logits).mean()
        real_q = random_crops(donor, crops["real"], cfg.patch_size).detach().requires_grad_(do_r1 and cfg.patch_r1_gamma > 0)
        fake_q = random_crops(swapped, crops["fake"], cfg.patch_size)
        # One call judges both kinds of queries against the same references (their features computed once).
        real_p, fake_p = self.P(torch.cat([real_q, fake_q], dim=1), refs).view(x.shape[0], 2, -1).unbind(1)
        l_p = F.softplus(fake_p).mean() + F.softplus(-real_p).mean()
        loss = l_d + l_p
        stats = {"D": float(l_d.detach()), "P": float(l_p.detach())}
        for name, logits, inputs, gamma in (("r1", real_logits, real, cfg.r1_gamma), ("r1_patch", real_p, real_q, cfg.patch_r1_gamma)):
            if do_r1 and gamma > 0:
                (grads,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
                penalty = grads.square().flatten(1).sum(1).mean()
                stats[name] = float(penalty.detach())
                loss = loss + penalty * (gamma / 2) * cfg.r1_interval
        self._update(nn.ModuleList([self.D, self.P]), self.opt_D, loss, "discriminator")
        self.D.requires_grad_(False)
        self.P.requires_grad_(False)
        return stats

    def _update(self, module: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, name: str) -> None:
        if not bool(torch.isfinite(loss.detach())):
            raise TrainingDiverged(f"the {name} loss became {float(loss.detach())} at step {self.step_count}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def _update_ema(self) -> None:
        update_ema(self.model_ema, self.model, self.config, self.cur_nimg)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, out_dir: str | Path | None = None, *, max_seconds: float | None = None,
            on_step: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, Any]]:
        """Train until ``config.steps`` steps (or ``max_seconds`` of wall time in this call), snapshotting
        every ``config.snapshot_every`` steps and at the end when ``out_dir`` is given."""
        began = time.perf_counter()
        while self.step_count < self.config.steps:
            if max_seconds is not None and time.perf_counter() - began >= max_seconds:
                break
            start = time.perf_counter()
            stats = self.step()
            self.wall_seconds += time.perf_counter() - start
            for key, value in stats.items():
                total = self._sums.setdefault(key, [0.0, 0.0])
                total[0] += value
                total[1] += 1
            if on_step is not None:
                on_step(self.step_count, stats)
            if out_dir is not None and self.step_count % self.config.snapshot_every == 0:
                self.snapshot(out_dir)
        if out_dir is not None and (not self.history or self.history[-1]["step"] != self.step_count):
            self.snapshot(out_dir)
        return self.history

    def snapshot(self, out_dir: str | Path) -> Path:
        """Write ``snapshot-<step>`` (the full state), ``swaps-<step>.png`` and a line of ``log.jsonl``."""
        entry: dict[str, Any] = {"step": self.step_count, "kimg": self.cur_nimg / 1000, "seconds": round(self.wall_seconds, 1)}
        entry.update({f"mean.{k}": round(v[0] / v[1], 4) for k, v in self._sums.items()})
        self._sums = {}
        if self.runs:
            self.runs[-1]["to_step"] = self.step_count
        self.history.append(entry)
        out = Path(out_dir)
        tag = f"{self.step_count:08d}"
        write_png(out / f"swaps-{tag}.png", self.swap_grid(), columns=9)
        weights, _ = save_checkpoint(out / f"snapshot-{tag}", self.state_tensors(), self.state_config())
        with open(out / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
        return weights

    @torch.no_grad()
    def swap_grid(self, count: int = 8) -> torch.Tensor:
        """A grid of the EMA model's swaps: top row donors, left column the images whose structure is kept."""
        gen = make_generator(derive_seed(self.seed, "swap-grid"))
        idx = torch.randperm(len(self.data), generator=gen)[:count]
        x = self.data.images[idx].to(self.device).float() / 255
        structure, appearance = self.model_ema.encode(x)
        cells = [torch.ones_like(x[:1]), x]
        for i in range(count):
            cells += [x[i: i + 1], self.model_ema.decode(structure[i: i + 1].expand(count, -1, -1, -1), appearance)]
        return torch.cat(cells).cpu()

    # -- snapshots ------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in (("model.", self.model), ("model_ema.", self.model_ema), ("D.", self.D), ("P.", self.P)):
            tensors.update({prefix + k: v for k, v in module.state_dict().items()})
        for prefix, opt in (("opt_G.", self.opt_G), ("opt_D.", self.opt_D)):
            for idx, state in opt.state_dict()["state"].items():
                tensors.update({f"{prefix}{idx}.{key}": torch.as_tensor(value) for key, value in state.items()})
        tensors["rng.data"] = self.gen.get_state()
        return tensors

    def state_config(self) -> dict[str, Any]:
        return {
            "format": SWAP_SNAPSHOT_FORMAT, "version": 1, "network": self.config.network.to_dict(), "config": self.config.to_dict(),
            "seed": self.seed, "step": self.step_count, "wall_seconds": self.wall_seconds,
            "data": {"name": self.data.name, "n": len(self.data), "fingerprint": self.data.fingerprint},
            "opt_G_groups": Trainer._groups(self.opt_G), "opt_D_groups": Trainer._groups(self.opt_D),
            "history": self.history, "runs": self.runs, "device_type": self.device.type,
        }

    @classmethod
    def resume(cls, path: str | Path, data: SwapData, *, device: torch.device | str = "cpu",
               config: SwapTrainConfig | None = None) -> SwapTrainer:
        """Rebuild a trainer from a snapshot of a run on ``data`` (checked by fingerprint). ``config``
        may change only ``steps`` and ``snapshot_every``."""
        tensors, state = load_checkpoint(path, SWAP_SNAPSHOT_FORMAT)
        stored = SwapTrainConfig.from_dict(state["config"])
        if config is not None:
            if replace(config, steps=stored.steps, snapshot_every=stored.snapshot_every) != stored:
                raise InputError("config", f"the snapshot's configuration (only steps and snapshot_every may change) {stored}", config)
            stored = replace(stored, steps=config.steps, snapshot_every=config.snapshot_every)
        if state["data"]["fingerprint"] != data.fingerprint:
            raise InputError("data", f"the images the snapshot was trained on (fingerprint {state['data']['fingerprint']})",
                             f"{data.name} (fingerprint {data.fingerprint})")
        trainer = cls(stored, data, seed=int(state["seed"]), device=device)
        for prefix, module in (("model.", trainer.model), ("model_ema.", trainer.model_ema), ("D.", trainer.D), ("P.", trainer.P)):
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        _load_optimizer(trainer.opt_G, tensors, "opt_G.", state["opt_G_groups"])
        _load_optimizer(trainer.opt_D, tensors, "opt_D.", state["opt_D_groups"])
        trainer.step_count, trainer.wall_seconds = int(state["step"]), float(state["wall_seconds"])
        trainer.history, trainer.runs = list(state["history"]), list(state["runs"])
        trainer.gen.set_state(tensors["rng.data"])  # a CPU generator on every device
        return trainer

    def export(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
        """Save the EMA model (float16) with its provenance: config, seed, steps, time, data, runs (+ ``extra``)."""
        info = {"config": self.config.to_dict(), "seed": self.seed, "steps": self.step_count, "kimg": self.cur_nimg / 1000,
                "train_seconds": round(self.wall_seconds, 1), "data": {"name": self.data.name, "n": len(self.data),
                                                                       "fingerprint": self.data.fingerprint},
                "runs": self.runs, "torch": torch.__version__, **dict(extra or {})}
        return save_swap_model(self.model_ema, path, info)


def train_swap(images: ImageSet | torch.Tensor | SwapData, config: SwapTrainConfig, out_dir: str | Path, *, seed: int = 0,
               device: torch.device | str = "cpu", max_seconds: float | None = None,
               on_step: Callable[[int, dict[str, float]], None] | None = None) -> SwapTrainer:
    """Train (or continue, from the newest snapshot in ``out_dir``) a swapping autoencoder on ``images``.

    Only the images are used (no labels, no factors). Each call is recorded in the run's ``runs``
    (command, hardware, steps); returns the trainer (``trainer.export(path)`` writes the model).
    """
    data = images if isinstance(images, SwapData) else swap_data(images)
    latest = latest_snapshot(out_dir)
    trainer = (SwapTrainer.resume(latest, data, device=device, config=config) if latest is not None
               else SwapTrainer(config, data, seed=seed, device=device))
    trainer.runs.append({"command": command_line(), "hardware": hardware(trainer.device), "from_step": trainer.step_count,
                         "date": time.strftime("%Y-%m-%d %H:%M %Z")})
    trainer.run(out_dir, max_seconds=max_seconds, on_step=on_step)
    return trainer


# -- command line (until `robust gan train --model swap` takes it over) ---------------------------

def measure_reach(model: SwapAutoencoder, donors: torch.Tensor, strengths: tuple[float, ...] = (1.0, 0.5),
                  seed: int = 0) -> dict[str, Any]:
    """Edit reach (robust.gan.reach) of appearance swaps with donors from ``donors``, per strength."""
    from robust.gan.reach import edit_reach, reach_setup
    from robust.gan.swapping import DonorSwap

    setup = reach_setup()
    out = {}
    for t in strengths:
        r = edit_reach(DonorSwap(model, donors, strength=t, seed=seed), setup, name=f"swap@{t:g}")
        out[f"strength {t:g}"] = {"fraction": {k: round(v, 4) for k, v in r.fraction.items()}, "class_kept": round(r.class_kept, 4),
                                  "oracle_accuracy": round(r.accuracy, 4), "fd_oracle": round(r.fd, 3), "fd_real": round(r.fd_real, 3),
                                  "target_met": r.meets_target(), "held_out": f"synthetic:train seed 1, {r.n} images"}
    return out


def main(argv: list[str] | None = None) -> SwapTrainer:
    p = argparse.ArgumentParser(description="Train a swapping autoencoder on the synthetic benchmark's train split (images only).")
    p.add_argument("--out", required=True, help="run folder (snapshots; an existing run continues)")
    p.add_argument("--data", default="synthetic:train", help="a data spec of robust.data.load_dataset")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--max-minutes", type=float, default=None, help="stop this call after so many minutes (resume later)")
    p.add_argument("--config", default="{}", help="JSON of SwapTrainConfig fields, 'network' a dict of SwapNetConfig fields")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--export", default=None, help="write the EMA model here (safetensors + JSON) with its measured reach")
    p.add_argument("--export-only", action="store_true", help="export the newest snapshot of --out without training")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from robust.data import load_dataset

    data = load_dataset(args.data, n=args.n)
    config = SwapTrainConfig.from_dict({**json.loads(args.config), "steps": args.steps})
    began = time.perf_counter()

    def log(step: int, stats: dict[str, float]) -> None:
        if step % args.log_every == 0:
            print(f"step {step} {time.perf_counter() - began:.0f}s " + " ".join(f"{k}={v:.4f}" for k, v in stats.items()), flush=True)

    images = swap_data(data, f"{args.data} n={args.n}")
    if args.export_only:
        latest = latest_snapshot(args.out)
        if latest is None:
            raise InputError("--out", "a run folder with a snapshot (--export-only)", args.out)
        trainer = SwapTrainer.resume(latest, images, device=args.device)
    else:
        trainer = train_swap(images, config, args.out, seed=args.seed, device=args.device,
                             max_seconds=args.max_minutes * 60 if args.max_minutes else None, on_step=log)
    if args.export:
        extra = {"command": command_line(), "hardware": hardware(trainer.device),
                 "protocol": "images of the train split only: no labels, factors, tokens, oracle or regressor"}
        trainer.export(args.export, extra)
        # The reach recorded is that of the file as shipped (half-precision weights).
        reach = measure_reach(load_swap_model(args.export), data.images, seed=args.seed)
        trainer.export(args.export, {**extra, "reach": reach})
        print(json.dumps(reach, indent=1))
    return trainer


if __name__ == "__main__":
    main()
