"""The hardening loop: recipes mixed per batch, AMP and channels_last, EMA, DDP, per-epoch evaluation, exact resume.

:func:`harden` (and :func:`fit`, the plain cross-entropy case) runs a :class:`Trainer`: setup resolves a :class:`Run`
and its :class:`Optimisation`, then each epoch trains its steps, evaluates, and writes checkpoints and the resumable
state (:mod:`robust.train.state`).
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robust.data import ImageSet
from robust.errors import InputError
from robust.io import save_checkpoint, write_json, write_text
from robust.models import Classifier, frozen, load_classifier
from robust.progress import progress
from robust.seeding import derive_seed, make_generator, resolve_device
from robust.train.distributed import ShardedBatches, World, all_reduce_sum, barrier, current_world
from robust.train.evaluation import evaluate, resolve_suite
from robust.train.recipes import Augment, Batch, CallableRecipe, Recipe, RecipeContext, RecipeMix, parse_recipes
from robust.train.state import TrainState, has_state, load_state, save_state

# Hyper-parameters of the optimiser presets when the caller gives none.
OPTIMIZER_PRESETS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.1, "weight_decay": 5e-4},
    "adamw": {"lr": 2e-3, "weight_decay": 0.05},
}
SCHEDULES = ("cosine", "constant", "step")
SEED_MASK = 0x3FFF_FFFF_FFFF_FFFF


@dataclass
class TrainConfig:
    """Everything that decides a training run's result (saved with it; a resume must match it).

    ``batch_size`` is the global batch (split over processes under torchrun). ``warmup_steps``
    defaults to 5% of the steps. ``amp`` (bf16 autocast) and ``channels_last`` default to on for CUDA
    and off on a CPU. ``select`` is the metric the best checkpoint maximises (default: the first
    evaluation set's accuracy). ``checkpoint_every`` also saves the state every that many steps.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int | None = None
    label_smoothing: float = 0.0
    ema_decay: float | None = None
    grad_clip: float | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    sync_bn: bool = False
    drop_last: bool = False
    eval_suites: tuple[str, ...] = ("clean",)
    eval_every: int = 1
    eval_samples: int | None = None
    eval_batch_size: int = 512
    select: str | None = None
    checkpoint_every: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.eval_suites = tuple(self.eval_suites)
        self.optimizer = self.optimizer.lower()
        if self.optimizer not in OPTIMIZER_PRESETS:
            raise InputError("optimizer", "one of " + ", ".join(OPTIMIZER_PRESETS), self.optimizer)
        if self.schedule not in SCHEDULES:
            raise InputError("schedule", "one of " + ", ".join(SCHEDULES), self.schedule)
        if self.lr is None:
            self.lr = OPTIMIZER_PRESETS[self.optimizer]["lr"]
        if self.weight_decay is None:
            self.weight_decay = OPTIMIZER_PRESETS[self.optimizer]["weight_decay"]
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(name, "a positive integer", getattr(self, name))
        if not self.lr > 0 or self.weight_decay < 0:
            raise InputError("lr/weight_decay", "lr > 0 and weight_decay >= 0", (self.lr, self.weight_decay))
        if not 0 <= self.label_smoothing < 1:
            raise InputError("label_smoothing", "a value in [0, 1)", self.label_smoothing)
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise InputError("ema_decay", "a value in (0, 1) or None", self.ema_decay)
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise InputError("warmup_steps", "a non-negative integer or None", self.warmup_steps)
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise InputError("checkpoint_every", "a positive number of steps or None", self.checkpoint_every)
        if self.eval_samples is not None and self.eval_samples < 1:
            raise InputError("eval_samples", "a positive number of images or None", self.eval_samples)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eval_suites"] = list(self.eval_suites)
        return d

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


@dataclass
class TrainResult:
    """What :func:`harden` returns: the trained classifier (final weights; EMA weights when EMA is on)."""

    classifier: Classifier
    history: list[dict[str, Any]]
    metrics: dict[str, float]
    best: dict[str, Any]
    steps: int
    seconds: float
    out: Path | None = None
    recipe: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "metrics": self.metrics, "best": self.best, "steps": self.steps, "seconds": self.seconds,
                "history": self.history, "out": str(self.out) if self.out else None, "config": self.config}


# -- pieces --------------------------------------------------------------------------------------

def make_optimizer(params: Any, name: str, lr: float, weight_decay: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW; weight decay is not applied to biases and normalisation weights."""
    params = list(params)
    if params and isinstance(params[0], tuple):
        decay = [p for n, p in params if p.requires_grad and p.ndim > 1]
        rest = [p for n, p in params if p.requires_grad and p.ndim <= 1]
        groups: Any = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    else:
        groups = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise InputError("optimizer", "sgd or adamw", name)


def lr_factor(step: int, total: int, warmup: int, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine / constant / step (x0.1 at 50%, 75%)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.01 if progress >= 0.75 else 0.1 if progress >= 0.5 else 1.0
    return 1.0


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero (the default schedule)."""
    return lr_factor(step, total, warmup, "cosine")


class EMA:
    """An exponential moving average of a network's weights (buffers copied), with the usual warm-up.

    The decay at update ``t`` is ``min(decay, (1 + t) / (10 + t))`` so early averages are not
    dominated by the random initialisation.
    """

    def __init__(self, network: nn.Module, decay: float):
        self.module = copy.deepcopy(network)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.module.parameters(), network.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.module.buffers(), network.buffers()):
            e.copy_(b)


def eval_set_name(name: str) -> str:
    """The short name of an evaluation set in metric paths: ``synthetic:test_shift`` -> ``test_shift``."""
    return name.split(":", 1)[1] if name.startswith(("synthetic:", "digits:")) else name


def _eval_sets(eval_sets: Any, classifier: Classifier, n: int | None, seed: int) -> dict[str, ImageSet]:
    if eval_sets is None:
        return {}
    if isinstance(eval_sets, ImageSet):
        eval_sets = {eval_set_name(eval_sets.name): eval_sets}
    elif not isinstance(eval_sets, Mapping):
        eval_sets = {eval_set_name(d.name): d for d in eval_sets}
    out: dict[str, ImageSet] = {}
    for name, data in eval_sets.items():
        if "/" in name:
            raise InputError("evaluation set name", "a name without '/'", name)
        classifier.check_compatible(data, f"evaluation set {name}")
        out[str(name)] = data.take(n, seed) if n is not None else data
    return out


def _model_checkpoint(classifier: Classifier, path: Path, extra: dict[str, Any]) -> None:
    """A robust classifier checkpoint (loadable with robust.models.load_classifier when the arch is known)."""
    config = classifier.config()
    config["extra"] = extra
    save_checkpoint(path, classifier.model.state_dict(), config)


def _eval_classifier(classifier: Classifier, module: nn.Module) -> Classifier:
    """A classifier over another copy of the same network (the EMA), sharing every description."""
    wrapped = Classifier(module.model, input_size=classifier.input_size, num_classes=classifier.num_classes, mean=classifier.mean,
                         std=classifier.std, class_names=classifier.class_names, batch_size=classifier.batch_size,
                         name=classifier.name, arch=classifier.arch, arch_kwargs=classifier.arch_kwargs)
    wrapped.network = module
    return wrapped


def _jsonl(history: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=False) + "\n" for r in history)


# -- a run's parts ---------------------------------------------------------------------------------

@dataclass
class RunOptions:
    """How a run is carried out besides its :class:`TrainConfig`: its folder, resume, device, generator, progress."""

    out: Path | None = None
    resume: bool = False
    generator: Any = None
    device: str | torch.device | None = None
    progress: bool | None = None
    on_step: Callable[[int, torch.Tensor], None] | None = None


@dataclass
class Run:
    """What a run trains and evaluates, resolved and checked once before the first step."""

    cfg: TrainConfig
    world: World
    device: torch.device
    classifier: Classifier
    data: ImageSet
    mix: RecipeMix
    sets: dict[str, ImageSet]
    select: str | None  # the metric the best checkpoint maximises
    amp: bool
    channels_last: bool
    options: RunOptions

    @property
    def folder(self) -> Path | None:
        """The run folder when this process writes it (the main process of a run that has one), else None."""
        return self.options.out if self.world.is_main else None

    def describe(self) -> dict[str, Any]:
        """The run's identity, written to ``config.json`` and checked on resume."""
        return {"recipe": str(self.mix), "config": self.cfg.to_dict(), "data": self.data.describe(), "model": self.classifier.config(),
                "world_size": self.world.size, "eval_sets": {k: len(v) for k, v in self.sets.items()}}


@dataclass
class Optimisation:
    """The moving parts: the network (and its DDP wrapper), optimiser, EMA, batch order and schedule."""

    net: nn.Module
    train_net: nn.Module  # ``net``, or its DistributedDataParallel wrapper under torchrun
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    sampler: ShardedBatches
    total: int
    warmup: int

    @property
    def ema_module(self) -> nn.Module | None:
        return self.ema.module if self.ema is not None else None

    def ema_updates(self) -> int:
        return self.ema.updates if self.ema is not None else 0

    def set_lr(self, cfg: TrainConfig, step: int) -> None:
        lr = cfg.lr * lr_factor(step, self.total, self.warmup, cfg.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


@dataclass
class Shard:
    """This rank's part of one global batch, on the device: images, labels, noise seeds, recipe per image."""

    indices: torch.Tensor  # positions in the training set (CPU)
    images: torch.Tensor
    labels: torch.Tensor
    seeds: torch.Tensor
    recipe_of: torch.Tensor  # index into the mix's recipes, per image (CPU)
    global_size: int  # images in the whole global batch


@dataclass
class Tally:
    """The epoch in progress: its index, when it started (less time spent before a resume), running sums."""

    epoch: int
    start: float
    sums: torch.Tensor  # float64 [loss, correct, seen] over this rank's shards


class Progress:
    """Every report of how a run goes, in one place: progress over the run's steps (:func:`robust.progress.progress`:
    a bar on a terminal, lines with done/total and the time left in logs, nothing with ``progress=False``)
    and the caller's ``on_step``."""

    def __init__(self, run: Run, total: int, initial: int):
        enabled = False if not run.world.is_main or run.options.progress is False else None
        self.bar = progress(total=total, initial=initial, desc=f"train {run.mix}", unit="steps", enabled=enabled)
        self.on_step = run.options.on_step
        self.epochs = run.cfg.epochs
        self.evaluated: dict[str, str] = {}

    def step(self, state: TrainState, loss: torch.Tensor, tally: Tally, end_of_epoch: bool) -> None:
        if self.on_step is not None:
            self.on_step(state.step, loss)
        if state.step % 25 == 0 or end_of_epoch:  # reading the sums waits for the device: not every step
            s = tally.sums.tolist()
            self.bar.set_postfix(epoch=f"{tally.epoch + 1}/{self.epochs}", loss=f"{s[0] / max(s[2], 1):.3f}",
                                 acc=f"{s[1] / max(s[2], 1):.3f}", **self.evaluated)
        self.bar.update(1)

    def epoch(self, record: dict[str, Any], metrics: dict[str, float], select: str | None) -> None:
        if metrics and select in metrics:
            self.evaluated = {select: f"{metrics[select]:.3f}"}
            self.bar.set_postfix(epoch=f"{record['epoch']}/{self.epochs}", loss=f"{record['train_loss']:.3f}", **self.evaluated)

    def close(self) -> None:
        self.bar.close()


# -- setup -----------------------------------------------------------------------------------------

def _config(config: TrainConfig | None, overrides: Mapping[str, Any]) -> TrainConfig:
    """``config`` (default: the defaults) with keyword overrides of its fields; unknown names fail."""
    unknown = sorted(set(overrides) - TrainConfig.field_names())
    if unknown:
        raise InputError("harden options", "fields of TrainConfig: " + ", ".join(sorted(TrainConfig.field_names())), unknown)
    return TrainConfig(**{**(config.to_dict() if config is not None else {}), **overrides})


def _resolve(model: Any, data: ImageSet, recipe: Any, eval_sets: Any, cfg: TrainConfig, options: RunOptions) -> Run:
    """Check every input and bind the recipes, so that bad configurations fail before any step."""
    if not isinstance(data, ImageSet):
        raise InputError("data", "a robust.data.ImageSet (load one with robust.data.load_dataset)", type(data).__name__)
    present = sorted({data.class_names[int(c)] for c in data.labels.unique()})
    if len(present) < 2:
        raise InputError("training data", "images of at least 2 classes (one sub-folder of images per class)",
                         f"{len(data)} images of {len(present)} class ({', '.join(present)}) in {data.name}")
    world = current_world()
    dev = resolve_device(options.device if options.device is not None else "auto")
    mix = parse_recipes(recipe)
    classifier = load_classifier(model, data=data, device=dev, seed=cfg.seed)
    if not classifier.has_gradients:
        raise InputError("model", "a torch classifier with gradients (not an ONNX file)", classifier.name)
    classifier.to(dev)
    classifier.check_compatible(data, "training data")
    sets = _eval_sets(eval_sets, classifier, cfg.eval_samples, cfg.seed)
    select = _selected_metric(cfg, sets)
    if options.resume and options.out is None:
        raise InputError("resume", "an output folder (out=) holding the run to continue", None)
    amp = cfg.amp if cfg.amp is not None else dev.type == "cuda"
    ctx = RecipeContext(classifier, data, dev, cfg.seed, options.generator, amp)
    for r in mix.recipes:
        r.bind(ctx)
    channels_last = cfg.channels_last if cfg.channels_last is not None else dev.type == "cuda"
    return Run(cfg, world, dev, classifier, data, mix, sets, select, amp, channels_last, options)


def _selected_metric(cfg: TrainConfig, sets: Mapping[str, ImageSet]) -> str | None:
    """The metric the best checkpoint maximises (the suites are checked here too, before any training)."""
    if sets:
        for text in cfg.eval_suites:
            resolve_suite(text)
    if cfg.select is not None and sets and cfg.select.split("/", 1)[0] not in sets:
        raise InputError("select", "a metric path <evaluation set>/<metric> with a set among " + ", ".join(sets), cfg.select)
    return cfg.select or (f"{next(iter(sets))}/acc" if sets else None)


def _optimisation(run: Run) -> Optimisation:
    """The network prepared for training (SyncBatchNorm, channels_last, DDP), its optimiser, EMA and schedule."""
    cfg, dev, classifier = run.cfg, run.device, run.classifier
    if cfg.sync_bn and run.world.distributed:
        if dev.type != "cuda":
            raise InputError("sync_bn", "CUDA devices (torch's SyncBatchNorm is GPU-only); use a BN-free model on CPU", dev.type)
        classifier.network.model = nn.SyncBatchNorm.convert_sync_batchnorm(classifier.network.model)
    net = classifier.network
    if run.channels_last:
        net.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(list(net.named_parameters()), cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    ema = EMA(net, cfg.ema_decay) if cfg.ema_decay is not None else None
    train_net: nn.Module = net
    if run.world.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_net = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    sampler = ShardedBatches(len(run.data), cfg.batch_size, run.world, cfg.seed, cfg.drop_last)
    if sampler.steps_per_epoch() < 1:
        raise InputError("batch_size", f"at most the number of training images ({len(run.data)}) with drop_last", cfg.batch_size)
    total = sampler.total_steps(cfg.epochs)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else total // 20
    return Optimisation(net, train_net, optimizer, ema, sampler, total, warmup)


def _start_or_resume(run: Run, opt: Optimisation, info: dict[str, Any]) -> TrainState:
    """The saved state of the run in ``out`` put back (``resume``), or a fresh one (its ``config.json`` written)."""
    out = run.options.out
    if out is not None and run.options.resume and has_state(out):
        loaded = load_state(out)
        _check_same_run(loaded.run, info, out)
        loaded.restore(opt.net, opt.optimizer, opt.ema_module)
        if opt.ema is not None:
            opt.ema.updates = loaded.state.ema_updates
        return loaded.state
    if run.folder is not None:
        run.folder.mkdir(parents=True, exist_ok=True)
        write_json(run.folder / "config.json", info)
    return TrainState()


def _check_same_run(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    diffs = [k for k in ("recipe", "config", "world_size") if saved.get(k) != now.get(k)]
    if saved.get("data", {}).get("fingerprint") != now["data"]["fingerprint"]:
        diffs.append("data")
    if saved.get("model", {}).get("arch") != now["model"].get("arch") or saved.get("model", {}).get("num_classes") != now["model"].get("num_classes"):
        diffs.append("model")
    if diffs:
        raise InputError(f"resume from {out}", "the same recipe, configuration, data, model and process count as the saved run",
                         "different " + ", ".join(diffs))


def _training_tensors(data: ImageSet, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if dev.type == "cuda" and data.images.numel() * 4 < 4 * 2**30:
        # Small datasets live on the GPU: indexing there costs nothing next to a host copy per step.
        return data.images.to(dev), data.labels.to(dev)
    return data.images, data.labels


# -- the trainer -----------------------------------------------------------------------------------

class Trainer:
    """One :func:`harden` run: :meth:`setup` builds it, :meth:`train` runs the epochs (steps, evaluation, checkpoints).

    Determinism: the data order depends on ``(seed, epoch)``, each step's random draws on
    ``(seed, step, recipe, rank)``, per-image noise seeds on ``(seed, epoch, index)``; the global torch
    RNG state (dropout, stochastic depth) is saved with the state. On a CPU a run killed at any point
    and resumed ends with weights equal to an uninterrupted run's.
    """

    def __init__(self, run: Run, opt: Optimisation, info: dict[str, Any], state: TrainState):
        self.run, self.opt, self.info, self.state = run, opt, info, state
        self.images, self.labels = _training_tensors(run.data, run.device)
        self.memo: dict[str, Any] = {}  # evaluation preparations kept across epochs
        self.progress = Progress(run, opt.total, state.step)

    @classmethod
    def setup(cls, model: Any, data: ImageSet, recipe: Any, eval_sets: Any, cfg: TrainConfig, options: RunOptions) -> Trainer:
        run = _resolve(model, data, recipe, eval_sets, cfg, options)
        opt = _optimisation(run)
        info = run.describe()
        return cls(run, opt, info, _start_or_resume(run, opt, info))

    def train(self, started: float) -> TrainResult:
        """Run the remaining epochs; returns the result (the network holds the EMA weights when EMA is on)."""
        net = self.opt.net
        was_training = net.training
        try:
            while self.state.epoch < self.run.cfg.epochs:
                self.train_epoch()
        finally:
            self.progress.close()
            net.train(was_training)
        if self.opt.ema is not None:
            net.load_state_dict(self.opt.ema.module.state_dict())
        if self.run.channels_last:
            net.to(memory_format=torch.contiguous_format)
        state, run = self.state, self.run
        metrics = {k: v for k, v in state.history[-1].items() if "/" in k} if state.history else {}
        return TrainResult(run.classifier, state.history, metrics, dict(state.best), state.step, time.time() - started, run.options.out,
                           str(run.mix), run.cfg.to_dict())

    # -- epoch ---------------------------------------------------------------------------------------

    def train_epoch(self) -> None:
        state, cfg = self.state, self.run.cfg
        sums = torch.tensor(state.sum_values(), dtype=torch.float64, device=self.run.device)
        tally = Tally(state.epoch, time.time() - state.epoch_seconds, sums)
        steps_per_epoch = self.opt.sampler.steps_per_epoch()
        for global_idx, local in self.opt.sampler.batches(tally.epoch, state.batch):
            self.opt.set_lr(cfg, state.step)
            loss = self.step(self._shard(global_idx, local), tally)
            state.step += 1
            state.batch += 1
            self.progress.step(state, loss, tally, state.batch == steps_per_epoch)
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.batch < steps_per_epoch:
                state.pause(tally.sums.tolist(), time.time() - tally.start, self.opt.ema_updates())
                self._save_state()
        self.end_epoch(tally)

    def end_epoch(self, tally: Tally) -> None:
        """Log the epoch, evaluate when due, keep the best, write the checkpoints and the state."""
        cfg, state = self.run.cfg, self.state
        totals = all_reduce_sum(tally.sums, self.run.world).tolist()
        record: dict[str, Any] = {"epoch": tally.epoch + 1, "step": state.step, "lr": self.opt.optimizer.param_groups[0]["lr"],
                                  "train_loss": totals[0] / max(totals[2], 1), "train_acc": totals[1] / max(totals[2], 1)}
        due = (tally.epoch + 1) % cfg.eval_every == 0 or tally.epoch + 1 == cfg.epochs
        metrics = self.evaluate_now() if due else {}
        record.update(metrics)
        record["seconds"] = time.time() - tally.start
        improved = self._keep_best(metrics, tally.epoch)
        state.close_epoch(record, self.opt.ema_updates())
        self.progress.epoch(record, metrics, self.run.select)
        self.checkpoint(record, metrics, improved)
        barrier(self.run.world)

    def _keep_best(self, metrics: dict[str, float], epoch: int) -> bool:
        select, state = self.run.select, self.state
        if select is not None and select in metrics:
            value = metrics[select]
            if not state.best or value > state.best["value"]:
                state.best = {"metric": select, "value": value, "epoch": epoch + 1}
                return True
        elif select is not None and metrics:
            raise InputError("select", "one of the evaluated metrics " + ", ".join(sorted(metrics)), select)
        return False

    # -- evaluation and checkpoints ------------------------------------------------------------------

    def evaluated_classifier(self) -> Classifier:
        """What the run evaluates and saves: the EMA weights when EMA is on, else the trained network."""
        ema = self.opt.ema
        return _eval_classifier(self.run.classifier, ema.module) if ema is not None else self.run.classifier

    def evaluate_now(self) -> dict[str, float]:
        run = self.run
        if not run.sets:
            return {}
        return evaluate(self.evaluated_classifier(), run.sets, run.cfg.eval_suites, world=run.world, seed=derive_seed(run.cfg.seed, "eval"),
                        amp=run.amp, batch_size=run.cfg.eval_batch_size, generator=run.options.generator, memo=self.memo)

    def checkpoint(self, record: dict[str, Any], metrics: dict[str, float], improved: bool) -> None:
        """After an epoch: ``best`` (when improved) and ``last`` weights, ``log.jsonl`` and the state."""
        out = self.run.folder
        if out is None:
            return
        final = self.evaluated_classifier()
        extra = {"epoch": record["epoch"], "step": self.state.step, "recipe": str(self.run.mix), "metrics": metrics}
        if improved:
            _model_checkpoint(final, out / "best", extra)
        _model_checkpoint(final, out / "last", extra)
        write_text(out / "log.jsonl", _jsonl(self.state.history))
        self._save_state()

    def _save_state(self) -> None:
        if self.run.folder is not None:
            save_state(self.run.folder, self.state, model=self.opt.net, optimizer=self.opt.optimizer, ema=self.opt.ema_module,
                       run=self.info)

    # -- step ----------------------------------------------------------------------------------------

    def _shard(self, global_idx: torch.Tensor, local: torch.Tensor) -> Shard:
        cfg, dev, step = self.run.cfg, self.run.device, self.state.step
        recipe_of = self.run.mix.assign(global_idx.numel(), make_generator(derive_seed(cfg.seed, "mix", step)))[local]
        idx = global_idx[local]
        images = self.images[idx.to(self.images.device)].to(dev, non_blocking=True)
        labels = self.labels[idx.to(self.labels.device)].to(dev, non_blocking=True)
        seeds = (idx.to(dev) + derive_seed(cfg.seed, "sample", self.state.epoch)) & SEED_MASK
        return Shard(idx, images, labels, seeds, recipe_of, global_idx.numel())

    def _views(self, shard: Shard) -> list[tuple[Recipe, torch.Tensor, list[torch.Tensor]]]:
        """Each recipe's views of its images (made with the network frozen): ``(recipe, labels, views)``."""
        run, step, epoch = self.run, self.state.step, self.state.epoch
        recipes = run.mix.recipes
        parts: list[tuple[Recipe, torch.Tensor, list[torch.Tensor]]] = []
        with frozen(self.opt.net):
            for k, recipe in enumerate(recipes):
                gen = make_generator(derive_seed(run.cfg.seed, "recipe", k, str(recipe), step, run.world.rank), run.device)
                if len(recipes) == 1:
                    batch = Batch(shard.images, shard.labels, shard.indices, shard.seeds, gen, step, epoch)
                else:
                    sel = (shard.recipe_of == k).nonzero().squeeze(1)
                    if sel.numel() == 0:
                        continue
                    on = sel.to(run.device)
                    batch = Batch(shard.images[on], shard.labels[on], shard.indices[sel], shard.seeds[on], gen, step, epoch)
                views = [v.detach() for v in recipe.views(batch, run.classifier)]
                parts.append((recipe, batch.labels, views))
        return parts

    def step(self, shard: Shard, tally: Tally) -> torch.Tensor:
        """One optimiser step on this rank's shard of a global batch; returns the shard's mean loss (0-d, detached)."""
        run, opt, dev = self.run, self.opt, self.run.device
        parts = self._views(shard)
        inputs = torch.cat([v for _, _, views in parts for v in views])
        if run.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        opt.train_net.train()
        with torch.autocast(dev.type, dtype=torch.bfloat16) if run.amp else nullcontext():
            logits = opt.train_net(inputs)
        losses, correct, offset = [], torch.zeros((), device=dev), 0
        for recipe, y, views in parts:
            n = y.shape[0]
            chunks = [logits[offset + i * n : offset + (i + 1) * n] for i in range(len(views))]
            offset += n * len(views)
            losses.append(recipe.loss(chunks, y, run.cfg.label_smoothing))
            correct = correct + (chunks[0].argmax(1) == y).sum()
        per_image = torch.cat(losses)
        # Sum over this shard, scaled so DDP's average over ranks is the mean over the global batch.
        loss = per_image.sum() * (run.world.size / shard.global_size)
        opt.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(opt.net.parameters(), run.cfg.grad_clip)
        opt.optimizer.step()
        if opt.ema is not None:
            opt.ema.update(opt.net)
        detached = per_image.detach()
        seen = torch.tensor(float(shard.labels.shape[0]), device=dev, dtype=torch.float64)
        tally.sums += torch.stack([detached.sum().double(), correct.double(), seen])
        return detached.mean()


def harden(
    model: Any,
    data: ImageSet,
    recipe: str | Recipe | RecipeMix | Sequence[str | Recipe] = "erm",
    *,
    eval_sets: Mapping[str, ImageSet] | Sequence[ImageSet] | ImageSet | None = None,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    generator: Any = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train or fine-tune ``model`` on ``data`` with ``recipe`` so it stays right under shift.

    ``model`` is a :class:`Classifier`, an ``nn.Module``, an architecture name (``"smallcnn"``,
    ``"timm:resnet18"``) or a checkpoint path. ``recipe`` is a spec such as ``"erm"``,
    ``"pgd:linf@8/255,steps=7"``, ``"natra:gradient+classic"`` or ``"0.5*augmix+0.5*erm"``
    (see :mod:`robust.train.recipes`). ``config`` (or keyword ``overrides`` of its fields) sets the
    budget and optimiser. ``out`` receives ``log.jsonl``, ``best``/``last`` checkpoints,
    ``config.json`` and the resumable state; ``resume=True`` continues the run saved there.
    ``generator`` is the image generator recipes such as ``natra`` need. ``progress=False`` hides the
    progress report (:mod:`robust.progress`: a bar on a terminal, lines in logs). ``on_step(step, loss)`` is
    called after every optimiser step with the shard's mean loss as a 0-d tensor (on the device:
    reading it synchronises).

    Under ``torchrun`` (an initialised process group) the model is wrapped in
    DistributedDataParallel; every rank must call this with the same arguments.
    """
    started = time.time()
    cfg = _config(config, overrides)
    options = RunOptions(Path(out) if out is not None else None, resume, generator, device, progress, on_step)
    return Trainer.setup(model, data, recipe, eval_sets, cfg, options).train(started)


def fit(
    classifier: Classifier,
    data: ImageSet,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float | None = None,
    optimizer: str = "adamw",
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.0,
    warmup_steps: int = 50,
    augment: Augment | None = None,
    seed: int = 0,
    progress: bool | None = None,
    recipe: str | Recipe = "erm",
) -> list[dict[str, float]]:
    """Train ``classifier`` in place on ``data`` with cross-entropy; returns per-epoch loss/accuracy.

    ``augment(x, y, generator) -> x'`` transforms each batch (images in ``[0, 1]``); or ``recipe``
    (a spec of :mod:`robust.train.recipes`) trains with that recipe. Deterministic by ``seed`` on a
    CPU. The plain case of :func:`harden` (no evaluation, no files).
    """
    if not isinstance(classifier, Classifier):
        raise InputError("classifier", "a robust.models.Classifier", type(classifier).__name__)
    if augment is not None and recipe != "erm":
        raise InputError("augment", "either augment or a recipe other than erm, not both", recipe)
    steps = math.ceil(len(data) / max(1, batch_size)) * max(1, epochs)
    if augment is not None:
        recipe = CallableRecipe(augment)
    result = harden(classifier, data, recipe, device=classifier.device, progress=progress, epochs=epochs, batch_size=batch_size,
                    lr=lr, optimizer=optimizer, weight_decay=weight_decay, label_smoothing=label_smoothing,
                    warmup_steps=min(warmup_steps, steps // 5), seed=seed, amp=False, channels_last=False)
    return [{"epoch": r["epoch"], "loss": r["train_loss"], "acc": r["train_acc"], "seconds": r["seconds"]} for r in result.history]
