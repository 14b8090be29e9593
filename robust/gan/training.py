"""StyleGAN2-ADA training: alternating G/D steps, lazy regularisation, EMA generator, ADA, snapshots and resume.

Everything random comes from two seeded generators (data order on the CPU; latents, noise and
augmentations on the training device) whose states are part of every snapshot, so on a CPU a run
resumed from a snapshot continues bit for bit like one that never stopped. With more than one
process (``torchrun``) gradients and ADA statistics are averaged across processes by all-reduce
(no module wrapper: the R1 and path-length penalties need double back-propagation through D and G).
"""
from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robust.data import ImageSet
from robust.errors import FileFormatError, InputError, RobustError
from robust.gan.augment_ada import AdaController, AugmentConfig, AugmentPipe
from robust.gan.checkpoint import SNAPSHOT_FORMAT, save_generator
from robust.gan.conditioning import Conditioning
from robust.gan.loss import LossConfig, StyleGAN2Loss
from robust.gan.networks import Discriminator, Generator
from robust.gan.presets import GANConfig
from robust.io import (
    atomic_path,
    fingerprint_tensors,
    load_checkpoint,
    load_state,
    png_bytes,
    save_checkpoint,
    write_bytes,
)
from robust.perturbation import ascent_direction, project_delta
from robust.seeding import derive_seed, make_generator
from robust.validation import check_number

Metric = Callable[[Generator], dict[str, float]]


class TrainingDiverged(RobustError):
    """A loss became NaN or infinite (lower the learning rate or raise R1 gamma)."""


# -- data -----------------------------------------------------------------------------------------

@dataclass
class TrainingData:
    """Real images as uint8 ``[N, C, R, R]`` (CPU) with their conditioning ``c [N, c_dim]`` (or None)."""

    images: torch.Tensor
    c: torch.Tensor | None
    conditioning: Conditioning | None
    name: str = "data"
    fingerprint: str = ""

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])


def condition_tokens(data: ImageSet, groups: Sequence[str]) -> tuple[Conditioning | None, dict[str, torch.Tensor]]:
    """Token groups from a dataset: ``class`` is the label; other names are categorical factors the data carries."""
    if not groups:
        return None, {}
    spec: list[tuple[str, list[str]]] = []
    tokens: dict[str, torch.Tensor] = {}
    for name in groups:
        if name == "class":
            spec.append(("class", list(data.class_names)))
            tokens["class"] = data.labels
            continue
        if name not in data.factors:
            raise InputError("condition", f"'class' or a categorical factor of {data.name} ({', '.join(sorted(data.factors)) or 'none'})", name)
        from robust.synthetic import FACTOR_NAMES, factor

        values = data.factors[name]
        if name in FACTOR_NAMES and factor(name).is_categorical:
            names = list(factor(name).categories)
        elif not values.is_floating_point():
            names = [str(i) for i in range(int(values.max()) + 1)]
        else:
            raise InputError("condition", "a categorical (integer) factor", f"{name} (continuous)")
        spec.append((name, names))
        tokens[name] = values.long()
    return Conditioning(spec), tokens


def prepare_data(data: ImageSet, condition: Sequence[str] = ("class",), resolution: int | None = None) -> TrainingData:
    """An :class:`ImageSet` -> :class:`TrainingData` (resized to ``resolution`` when given)."""
    if resolution is not None and data.size != (resolution, resolution):
        data = data.resized(resolution)
    if data.size[0] != data.size[1]:
        raise InputError("data", "square images", f"{data.size[0]}x{data.size[1]}")
    conditioning, tokens = condition_tokens(data, list(condition))
    c = conditioning.encode(tokens) if conditioning is not None else None
    images = (data.images * 255).round().clamp(0, 255).to(torch.uint8)
    # Fingerprint what training sees (uint8 pixels and conditioning), not the float renders.
    return TrainingData(images, c, conditioning, data.name, fingerprint_tensors(images, *([c] if c is not None else [])))


# -- image grids without image libraries ----------------------------------------------------------

def image_grid(images01: torch.Tensor, columns: int, pad: int = 1) -> torch.Tensor:
    """``[N, C, H, W]`` in ``[0, 1]`` -> one uint8 ``[H', W', C]`` grid (row-major)."""
    n, c, h, w = images01.shape
    rows = math.ceil(n / columns)
    grid = torch.ones(c, rows * (h + pad) + pad, columns * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = images01[i].float().cpu()
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


# -- distributed helpers --------------------------------------------------------------------------

def distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` when not distributed)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _allreduce_mean(tensors: list[torch.Tensor], world: int) -> None:
    if world <= 1 or not tensors:
        return
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset: offset + t.numel()].view_as(t))
        offset += t.numel()


# -- the trainer ----------------------------------------------------------------------------------

@dataclass
class TrainingStats:
    kimg: float
    step: int
    p: float
    seconds: float
    losses: dict[str, float] = field(default_factory=dict)


def _adam(params: Any, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(0.0, 0.99), eps=1e-8)


class AuxClassifier(nn.Module):
    """A small CNN classifying images in ``[-1, 1]`` into the tokens of one conditioning group.

    The auxiliary classifier of class guidance (AC-GAN, Odena et al. 2017): trained on real images
    only, its cross-entropy on the generator's fakes for the conditioned token is added to G's loss.
    """

    def __init__(self, channels: int, classes: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        cin = channels
        for cout, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (4 * width, 2)):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


def l2_pgd(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, steps: int = 3) -> torch.Tensor:
    """L2 projected-gradient ascent on ``model``'s cross-entropy within radius ``eps`` (the images' units).

    Madry et al. (2018): normalised-gradient steps of ``2.5 eps / steps`` projected back on the
    ball, starting at the clean images; the parameters' gradients are left untouched.
    """
    step = 2.5 * eps / steps
    delta = torch.zeros_like(images)
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(images + delta), labels)
            (g,) = torch.autograd.grad(loss, [delta])
        delta = project_delta(delta.detach() + step * ascent_direction(g, "l2"), "l2", eps)
    return (images + delta).detach()


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, cfg: Any, cur_nimg: int) -> None:
    """Move ``ema``'s weights toward ``model``'s: half-life ``cfg.ema_kimg`` thousand images (at most
    ``cfg.ema_rampup`` of the images seen so far, when set) at ``cfg.batch`` images a step; buffers copied."""
    ema_nimg = cfg.ema_kimg * 1000
    if cfg.ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * cfg.ema_rampup)
    beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


class Trainer:
    """One StyleGAN2-ADA training run: ``step()`` does one G and one D update on one minibatch.

    ``metrics`` are functions of the EMA generator evaluated at each snapshot.
    """

    def __init__(self, config: GANConfig, data: TrainingData, *, seed: int = 0, device: torch.device | str = "cpu",
                 metrics: Mapping[str, Metric] | None = None, rank: int = 0, world_size: int = 1):
        if data.resolution != config.resolution:
            raise InputError("data", f"{config.resolution}x{config.resolution} images (preset {config.name})", f"{data.resolution}x{data.resolution}")
        if config.batch % world_size:
            raise InputError("batch", f"a multiple of the number of processes ({world_size})", config.batch)
        self.config, self.data, self.seed = config, data, int(seed)
        self.device = torch.device(device)
        self.metrics = dict(metrics or {})
        self.rank, self.world = rank, world_size
        c_dim = data.conditioning.c_dim if data.conditioning is not None else 0
        # Initial weights depend only on the seed (identical on every process).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "gan-init"))
            self.G = Generator(**config.generator_kwargs(c_dim, data.channels), conditioning=data.conditioning)
            self.D = Discriminator(**config.discriminator_kwargs(c_dim, data.channels))
        self.G.to(self.device).train()
        self.D.to(self.device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = _adam(self.G.parameters(), config.lr_g)
        self.opt_D = _adam(self.D.parameters(), config.lr_d)
        self.aux: AuxClassifier | None = None
        self.opt_aux: torch.optim.Optimizer | None = None
        self._guide_span: tuple[int, int] | None = None
        guidance_weight = check_number(config.class_guidance, "class_guidance", low=0)
        self._aux_eps = check_number(config.class_guidance_eps, "class_guidance_eps", low=0)
        pretrain = check_number(config.class_guidance_pretrain, "class_guidance_pretrain", low=0, integer=True)
        self._d_warmup_nimg = round(check_number(config.d_warmup_kimg, "d_warmup_kimg", low=0) * 1000)
        # Batches the auxiliary classifier still trains alone before guiding (only a fresh one does).
        self._aux_pretrain = 0
        if guidance_weight > 0:
            group = config.class_guidance_group
            if data.conditioning is None or group not in data.conditioning.names:
                names = data.conditioning.names if data.conditioning is not None else []
                raise InputError("class_guidance_group", f"a conditioning group of the data ({', '.join(names) or 'none: unconditional'})", group)
            self._guide_span = data.conditioning.span(group)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.seed, "gan-aux"))
                self.aux = AuxClassifier(data.channels, self._guide_span[1] - self._guide_span[0])
            self.aux.to(self.device).train().requires_grad_(False)
            self.opt_aux = torch.optim.Adam(self.aux.parameters(), lr=1e-3, betas=(0.9, 0.99))
            self._aux_pretrain = pretrain
        self.augment = AugmentPipe(AugmentConfig(config.augment)) if config.augment else None
        self.ada = AdaController(config.ada_target, config.ada_interval, config.ada_kimg)
        self.loss = StyleGAN2Loss(self.G, self.D, self.augment, LossConfig(
            r1_gamma=config.r1_gamma, r1_interval=config.r1_interval, pl_weight=config.pl_weight,
            pl_interval=config.pl_interval, style_mixing=config.style_mixing))
        self.gen_data = make_generator(derive_seed(self.seed, "gan-data", rank))
        self.gen_device = make_generator(derive_seed(self.seed, "gan-noise", rank), self.device)
        self.cur_nimg = 0
        self.step_count = 0
        self.wall_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        # One entry per invocation that trained this run (command, hardware, kimg range): provenance.
        self.runs: list[dict[str, Any]] = []
        self._stat_sums: dict[str, list[float]] = {}
        self._data_c = data.c

    # -- one iteration --------------------------------------------------------------------------

    def _batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(len(self.data), (n,), generator=self.gen_data)
        real = self.data.images[idx].to(self.device).to(torch.float32) / 127.5 - 1
        c = self._data_c[idx].to(self.device) if self._data_c is not None else None
        return real, c

    def _c_for_fakes(self, n: int) -> torch.Tensor | None:
        # Conditions for generated images follow the data's label distribution.
        if self._data_c is None:
            return None
        idx = torch.randint(len(self.data), (n,), generator=self.gen_data)
        return self._data_c[idx].to(self.device)

    def step(self) -> dict[str, float]:
        cfg = self.config
        n = cfg.batch // self.world
        gen = self.gen_device
        if self._aux_pretrain:
            self._pretrain_aux()
        real, c_real = self._batch(n)
        c_fake = self._c_for_fakes(n)
        z = torch.randn((n, cfg.z_dim), generator=gen, device=gen.device).to(self.device)
        p = self.ada.p if self.augment is not None else 0.0
        stats: dict[str, float] = {}

        if self.cur_nimg >= self._d_warmup_nimg:  # (during a warm-up only D learns)
            stats.update(self._generator_step(z, c_fake, p))

        c_fake = self._c_for_fakes(n)
        z = torch.randn((n, cfg.z_dim), generator=gen, device=gen.device).to(self.device)
        self.D.requires_grad_(True)
        do_r1 = self.step_count % cfg.r1_interval == 0
        loss_d, real_logits, s = self.loss.discriminator_loss(z, c_fake, real, c_real, p, gen, do_r1)
        stats.update(s)
        self._update(self.D, self.opt_D, loss_d, "discriminator")
        self.D.requires_grad_(False)

        if self.aux is not None and c_real is not None:
            stats.update(self._aux_step(real, c_real))

        self._update_ema()
        signs = torch.stack([torch.sign(real_logits).sum(), torch.tensor(float(real_logits.numel()), device=real_logits.device)])
        _allreduce_mean([signs], self.world)
        self.ada.add(float(signs[0]) * self.world, int(round(float(signs[1]) * self.world)))
        self.ada.step(cfg.batch)
        self.cur_nimg += cfg.batch
        self.step_count += 1
        stats["p"] = self.ada.p
        return stats

    def _generator_step(self, z: torch.Tensor, c_fake: torch.Tensor | None, p: float) -> dict[str, float]:
        cfg = self.config
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        do_pl = cfg.pl_weight > 0 and self.step_count % cfg.pl_interval == 0
        guidance = None
        if self.aux is not None and c_fake is not None:
            a, b = self._guide_span
            wanted = c_fake[:, a:b].argmax(1)
            aux = self.aux

            def guidance(images: torch.Tensor) -> torch.Tensor:
                return cfg.class_guidance * F.cross_entropy(aux(images), wanted)
        loss_g, stats = self.loss.generator_loss(z, c_fake, p, self.gen_device, do_pl, guidance)
        self._update(self.G, self.opt_G, loss_g, "generator")
        self.G.requires_grad_(False)
        return stats

    def _aux_step(self, real: torch.Tensor, c_real: torch.Tensor) -> dict[str, float]:
        """One update of the auxiliary classifier on a real batch (adversarial when ``class_guidance_eps`` > 0)."""
        assert self.aux is not None and self.opt_aux is not None and self._guide_span is not None
        a, b = self._guide_span
        labels = c_real[:, a:b].argmax(1)
        out: dict[str, float] = {}
        inputs = real.detach()
        if self._aux_eps > 0:
            with torch.no_grad():
                out["aux_acc_clean"] = float((self.aux(inputs).argmax(1) == labels).float().mean())
            inputs = l2_pgd(self.aux, inputs, labels, 2.0 * self._aux_eps)  # images are in [-1, 1]: twice the [0, 1] radius
        self.aux.requires_grad_(True)
        logits = self.aux(inputs)
        loss_aux = F.cross_entropy(logits, labels)
        self._update(self.aux, self.opt_aux, loss_aux, "auxiliary classifier")
        self.aux.requires_grad_(False)
        out["aux_loss"] = float(loss_aux.detach())
        out["aux_acc"] = float((logits.detach().argmax(1) == labels).float().mean())
        return out

    def _pretrain_aux(self) -> None:
        """Train a fresh auxiliary classifier alone on real batches before it guides the generator."""
        n = self.config.batch // self.world
        stats: dict[str, float] = {}
        for _ in range(self._aux_pretrain):
            real, c_real = self._batch(n)
            assert c_real is not None
            stats = self._aux_step(real, c_real)
        self.history.append({"kimg": self.cur_nimg / 1000, "aux_pretrain_batches": self._aux_pretrain, **stats})
        self._aux_pretrain = 0

    def _update(self, module: nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor, name: str) -> None:
        """One optimiser step on ``loss`` (checked finite), gradients averaged over the processes."""
        self._check(loss, name)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _allreduce_mean([q.grad for q in module.parameters() if q.grad is not None], self.world)
        opt.step()

    def _check(self, loss: torch.Tensor, name: str) -> None:
        if not bool(torch.isfinite(loss.detach())):
            raise TrainingDiverged(f"the {name} loss became {float(loss.detach())} at kimg {self.cur_nimg / 1000:.1f}")

    def _update_ema(self) -> None:
        update_ema(self.G_ema, self.G, self.config, self.cur_nimg)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, kimg: float, *, out_dir: str | Path | None = None, snapshot_kimg: float | None = None,
            on_step: Callable[[TrainingStats], None] | None = None, max_steps: int | None = None,
            max_seconds: float | None = None) -> list[dict[str, Any]]:
        """Train until ``kimg`` thousand real images have been shown (or ``max_steps`` more steps, or ``max_seconds``
        of wall time in this call); snapshot on the way.

        Snapshots (and a sample grid, and the metrics) are written every ``snapshot_kimg`` and at
        the end when ``out_dir`` is given. Returns the snapshot history.
        """
        target = int(round(kimg * 1000))
        every = int(round((snapshot_kimg if snapshot_kimg is not None else self.config.snapshot_kimg) * 1000))
        next_snapshot = (self.cur_nimg // every + 1) * every if every > 0 else None
        steps = 0
        began = time.perf_counter()
        while self.cur_nimg < target and (max_steps is None or steps < max_steps):
            if max_seconds is not None and self._agree(time.perf_counter() - began >= max_seconds):
                break
            start = time.perf_counter()
            stats = self.step()
            self.wall_seconds += time.perf_counter() - start
            steps += 1
            for key, value in stats.items():
                total = self._stat_sums.setdefault(key, [0.0, 0.0])
                total[0] += value
                total[1] += 1
            if on_step is not None:
                on_step(TrainingStats(self.cur_nimg / 1000, self.step_count, self.ada.p, self.wall_seconds, stats))
            if out_dir is not None and next_snapshot is not None and self.cur_nimg >= next_snapshot:
                self.snapshot(out_dir)
                next_snapshot += every
        if out_dir is not None and (not self.history or self.history[-1]["nimg"] != self.cur_nimg):
            self.snapshot(out_dir)
        return self.history

    def snapshot(self, out_dir: str | Path) -> Path | None:
        """Write ``snapshot-<kimg>`` (full state), ``samples-<kimg>.png`` and the metrics (rank 0 only)."""
        entry: dict[str, Any] = {"kimg": round(self.cur_nimg / 1000, 3), "nimg": self.cur_nimg, "step": self.step_count,
                                 "p": self.ada.p, "seconds": round(self.wall_seconds, 1)}
        if self.runs:
            self.runs[-1]["to_kimg"] = entry["kimg"]
        # Losses averaged over the steps since the previous snapshot.
        entry.update({f"mean.{k}": round(v[0] / v[1], 4) for k, v in self._stat_sums.items() if k != "p"})
        self._stat_sums = {}
        if self.rank != 0:
            self.history.append(entry)
            self._barrier()
            return None
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tag = f"{self.cur_nimg:09d}"  # images shown: sortable, unique even for sub-kimg test runs
        start = time.perf_counter()
        for name, metric in self.metrics.items():
            entry.update({f"{name}.{k}": v for k, v in metric(self.G_ema).items()})
        entry["metric_seconds"] = round(time.perf_counter() - start, 1)
        self.history.append(entry)
        write_bytes(out / f"samples-{tag}.png", png_bytes(image_grid(self.sample_grid(), self.grid_columns()).permute(2, 0, 1)))
        path = self.save_snapshot(out / f"snapshot-{tag}")
        with open(out / "log.jsonl", "a", encoding="utf-8") as fh:
            import json

            fh.write(json.dumps(entry) + "\n")
        self._barrier()
        return path

    def _agree(self, flag: bool) -> bool:
        """True on every process when it is true on any (so all processes stop at the same step)."""
        if self.world <= 1:
            return flag
        import torch.distributed as dist

        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def grid_columns(self) -> int:
        return 8

    @torch.no_grad()
    def sample_grid(self) -> torch.Tensor:
        """EMA samples for a fixed set of latents: one row per token of the first conditioning group."""
        gen = make_generator(derive_seed(self.seed, "gan-grid"))
        cols = self.grid_columns()
        cond = self.data.conditioning
        if cond is None:
            n = cols * cols
            c = None
        else:
            first, names = cond.groups[0]
            rows = min(len(names), 16)
            n = rows * cols
            # The bulk draw of Conditioning.sample (one generator for tokens and z): grids of earlier runs stay comparable.
            tokens = cond.sample(n, gen)
            tokens[first] = torch.arange(rows).repeat_interleave(cols)
            c = cond.encode(tokens).to(self.device)
        z = torch.randn((n, self.config.z_dim), generator=gen).to(self.device)
        images = torch.cat([self.G_ema(z[i: i + 64], c[i: i + 64] if c is not None else None, noise_mode="const")
                            for i in range(0, n, 64)])
        return Generator.to_unit(images)

    # -- snapshots ------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in (("G.", self.G), ("D.", self.D), ("G_ema.", self.G_ema), ("aux.", self.aux)):
            if module is not None:
                tensors.update({prefix + k: v for k, v in module.state_dict().items()})
        for prefix, opt in (("opt_G.", self.opt_G), ("opt_D.", self.opt_D), ("opt_aux.", self.opt_aux)):
            if opt is None:
                continue
            for idx, state in opt.state_dict()["state"].items():
                for key, value in state.items():
                    tensors[f"{prefix}{idx}.{key}"] = torch.as_tensor(value)
        tensors["rng.data"] = self.gen_data.get_state()
        tensors["rng.device"] = self.gen_device.get_state()
        tensors["loss.pl_mean"] = self.loss.pl_mean.detach().reshape(1)
        return tensors

    def state_config(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT, "version": 1,
            "generator": self.G.init_kwargs(), "discriminator": self.D.init_args, "config": self.config.to_dict(),
            "seed": self.seed, "cur_nimg": self.cur_nimg, "step": self.step_count, "wall_seconds": self.wall_seconds,
            "ada": self.ada.state(), "data": {"name": self.data.name, "n": len(self.data), "fingerprint": self.data.fingerprint},
            "opt_G_groups": self._groups(self.opt_G), "opt_D_groups": self._groups(self.opt_D),
            "opt_aux_groups": self._groups(self.opt_aux) if self.opt_aux is not None else None, "history": self.history,
            "world_size": self.world, "runs": self.runs, "device_type": self.device.type,
        }

    @staticmethod
    def _groups(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
        return [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt.state_dict()["param_groups"]]

    def save_snapshot(self, path: str | Path) -> Path:
        weights, _ = save_checkpoint(path, self.state_tensors(), self.state_config())
        return weights

    def export_generator(self, path: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
        return save_generator(self.G_ema, path, extra)

    def initialise_from(self, path: str | Path, discriminator: str | Path | None = None) -> None:
        """Start this (fresh) run from a trained generator: ``G`` and ``G_ema`` take its weights.

        ``path`` is anything :func:`robust.gan.load` reads (our generator file, a snapshot, an official
        ``.pkl``); it must have this run's architecture and conditioning. ``discriminator`` is an
        optional discriminator file (``robust gan import/export --with-discriminator``) or snapshot;
        without it the discriminator starts fresh (see ``d_warmup_kimg``). The generator file's
        provenance (its ``runs``) is carried into this run's.
        """
        from robust.gan.checkpoint import load, load_discriminator

        if self.cur_nimg:
            raise RobustError("initialise_from() starts a fresh run; this one has already trained (use resume)")
        source = load(path)
        if source.init_kwargs() != self.G.init_kwargs():
            raise InputError("init", f"a generator with this run's architecture and conditioning {self.G.init_kwargs()}",
                             f"{path}: {source.init_kwargs()}")
        state = source.state_dict()
        for module in (self.G, self.G_ema):
            module.load_state_dict(state)
        if discriminator is not None:
            tensors = load_discriminator(discriminator).state_dict()
            expected = self.D.state_dict()
            wrong = [k for k in expected if k not in tensors or tensors[k].shape != expected[k].shape]
            wrong += [k for k in tensors if k not in expected]
            if wrong:
                raise FileFormatError(discriminator, f"a discriminator with this run's architecture ({self.config.name})",
                                      f"{len(wrong)} missing, extra or differently shaped weights, e.g. {wrong[:3]}")
            self.D.load_state_dict(tensors)
        extra = getattr(source, "extra", {}) or {}
        self.runs = [*extra.get("runs", []), {"initialised_from": str(path), "kimg": extra.get("kimg"),
                                               "discriminator": str(discriminator) if discriminator is not None else "fresh"}]

    @classmethod
    def resume(cls, path: str | Path, data: TrainingData, *, device: torch.device | str = "cpu",
               metrics: Mapping[str, Metric] | None = None, rank: int = 0, world_size: int = 1,
               config_overrides: Mapping[str, Any] | None = None, check_data: bool = True) -> Trainer:
        """Rebuild a trainer from a snapshot; training then continues exactly where it stopped.

        ``check_data=False`` allows different training data (fine-tuning); otherwise its fingerprint
        must match the snapshot's. Random streams continue exactly when the device type is the same;
        on another device type (a CPU run continued on a GPU) they restart from fresh seeds.
        """
        tensors, state = load_checkpoint(path, SNAPSHOT_FORMAT)
        config = GANConfig.from_dict(state["config"])
        if config_overrides:
            config = config.with_overrides(**config_overrides)
        if check_data and state["data"]["fingerprint"] and data.fingerprint and state["data"]["fingerprint"] != data.fingerprint:
            raise InputError("data", f"the data the snapshot was trained on (fingerprint {state['data']['fingerprint']})",
                             f"{data.name} (fingerprint {data.fingerprint})")
        cond = state["generator"].get("conditioning")
        if (Conditioning.from_dict(cond) if cond else None) != data.conditioning:
            raise InputError("condition", f"the snapshot's conditioning {cond}", data.conditioning)
        trainer = cls(config, data, seed=int(state["seed"]), device=device, metrics=metrics, rank=rank, world_size=world_size)
        for prefix, module in (("G.", trainer.G), ("D.", trainer.D), ("G_ema.", trainer.G_ema)):
            load_state(module, tensors, path, "a snapshot matching its config", prefix)
        _load_optimizer(trainer.opt_G, tensors, "opt_G.", state["opt_G_groups"])
        _load_optimizer(trainer.opt_D, tensors, "opt_D.", state["opt_D_groups"])
        # The learning rates come from the (possibly overridden) config, not from the stored groups.
        for opt, lr in ((trainer.opt_G, config.lr_g), (trainer.opt_D, config.lr_d)):
            for g in opt.param_groups:
                g["lr"] = lr
        stored_eps = float(state["config"].get("class_guidance_eps", 0.0))
        if trainer.aux is not None and any(k.startswith("aux.") for k in tensors) and stored_eps == trainer._aux_eps:
            trainer.aux.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("aux.")})
            _load_optimizer(trainer.opt_aux, tensors, "opt_aux.", state.get("opt_aux_groups") or trainer._groups(trainer.opt_aux))
            trainer._aux_pretrain = 0
        # (A snapshot trained without guidance, or whose auxiliary classifier was trained for another
        # class_guidance_eps, starts a fresh one, pre-trained for class_guidance_pretrain batches.)
        trainer.cur_nimg, trainer.step_count = int(state["cur_nimg"]), int(state["step"])
        if rank == 0 and state.get("device_type", "cpu") == trainer.device.type:
            trainer.gen_data.set_state(tensors["rng.data"])
            trainer.gen_device.set_state(tensors["rng.device"])
        else:
            # Only rank 0's streams (of one device type) are stored; others restart on fresh seeds, never repeating.
            trainer.gen_data = make_generator(derive_seed(trainer.seed, "gan-data", rank, trainer.cur_nimg))
            trainer.gen_device = make_generator(derive_seed(trainer.seed, "gan-noise", rank, trainer.cur_nimg), trainer.device)
        trainer.loss.pl_mean = tensors["loss.pl_mean"].reshape([]).to(trainer.device)
        trainer.ada.load_state(state["ada"])
        trainer.wall_seconds = float(state.get("wall_seconds", 0.0))
        trainer.history = list(state.get("history", []))
        trainer.runs = list(state.get("runs", []))
        return trainer


def _load_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], prefix: str, groups: list[dict[str, Any]]) -> None:
    """Restore an optimiser from the snapshot tensors ``<prefix><param index>.<state name>`` and its stored groups."""
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, name = key[len(prefix):].split(".", 1)
            opt_state.setdefault(int(idx), {})[name] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": opt_state, "param_groups": groups})


def latest_snapshot(run_dir: str | Path) -> Path | None:
    """The newest ``snapshot-*.safetensors`` in a run folder (by kimg in the name)."""
    found = sorted(Path(run_dir).glob("snapshot-*.safetensors"))
    return found[-1] if found else None


def write_png(path: str | Path, images01: torch.Tensor, columns: int = 8) -> Path:
    """Save images ``[N, C, H, W]`` in ``[0, 1]`` as one PNG grid (atomic)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(png_bytes(image_grid(images01, columns).permute(2, 0, 1)))
    return Path(path)
