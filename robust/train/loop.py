"""The hardening loop: recipes mixed per batch, AMP and channels_last, EMA, DDP, evaluation, exact resume.

:func:`harden` trains a classifier with a :class:`~robust.train.recipes.RecipeMix`, evaluates it
after every epoch on chosen suites, logs one JSON line per epoch, writes the best and the last
weights as robust classifier checkpoints (safetensors + JSON, atomic) and keeps a resumable state
(:mod:`robust.train.state`). :func:`fit` is the plain cross-entropy loop on top of it.

Determinism: the data order depends on ``(seed, epoch)``, each step's random draws on
``(seed, step, recipe, rank)``, per-image noise seeds on ``(seed, epoch, index)``; the global torch
RNG state (dropout, stochastic depth) is saved with the state. On a CPU a run killed at any point
and resumed ends with weights equal to an uninterrupted run's.
"""
from __future__ import annotations

import copy
import json
import math
import sys
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
from robust.models import Classifier, build_classifier, frozen, load_classifier
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


def _as_classifier(model: Any, data: ImageSet, device: torch.device, seed: int | None = None) -> Classifier:
    if isinstance(model, str) and not (model.endswith((".json", ".safetensors", ".onnx")) or Path(model + ".json").is_file()):
        # A model built here by name starts from weights that follow the run's seed.
        return build_classifier(model, data.num_classes, (data.channels, *data.size), class_names=data.class_names, device=device,
                                seed=seed)
    if isinstance(model, nn.Module):
        return load_classifier(model, input_size=(data.channels, *data.size), num_classes=data.num_classes,
                               class_names=data.class_names, device=device)
    return load_classifier(model, device=device)


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


# -- the loop ------------------------------------------------------------------------------------

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
    ``generator`` is the image generator recipes such as ``natra`` need. ``on_step(step, loss)`` is
    called after every optimiser step with the shard's mean loss as a 0-d tensor (on the device:
    reading it synchronises).

    Under ``torchrun`` (an initialised process group) the model is wrapped in
    DistributedDataParallel; every rank must call this with the same arguments.
    """
    started = time.time()
    unknown = sorted(set(overrides) - TrainConfig.field_names())
    if unknown:
        raise InputError("harden options", "fields of TrainConfig: " + ", ".join(sorted(TrainConfig.field_names())), unknown)
    cfg = TrainConfig(**{**(config.to_dict() if config is not None else {}), **overrides})
    if not isinstance(data, ImageSet):
        raise InputError("data", "a robust.data.ImageSet (load one with robust.data.load_dataset)", type(data).__name__)
    world = current_world()
    dev = resolve_device(device if device is not None else "auto")
    mix = parse_recipes(recipe)
    classifier = _as_classifier(model, data, dev, cfg.seed)
    if not classifier.has_gradients:
        raise InputError("model", "a torch classifier with gradients (not an ONNX file)", classifier.name)
    classifier.to(dev)
    classifier.check_compatible(data, "training data")
    sets = _eval_sets(eval_sets, classifier, cfg.eval_samples, cfg.seed)
    if sets:
        for text in cfg.eval_suites:
            resolve_suite(text)  # unknown suite names fail here, before any training
    if cfg.select is not None and sets and cfg.select.split("/", 1)[0] not in sets:
        raise InputError("select", "a metric path <evaluation set>/<metric> with a set among " + ", ".join(sets), cfg.select)
    select = cfg.select or (f"{next(iter(sets))}/acc" if sets else None)
    out_path = Path(out) if out is not None else None
    if resume and out_path is None:
        raise InputError("resume", "an output folder (out=) holding the run to continue", None)

    amp = cfg.amp if cfg.amp is not None else dev.type == "cuda"
    ctx = RecipeContext(classifier, data, dev, cfg.seed, generator, amp)
    for r in mix.recipes:
        r.bind(ctx)

    channels_last = cfg.channels_last if cfg.channels_last is not None else dev.type == "cuda"
    net = classifier.network
    if cfg.sync_bn and world.distributed:
        if dev.type != "cuda":
            raise InputError("sync_bn", "CUDA devices (torch's SyncBatchNorm is GPU-only); use a BN-free model on CPU", dev.type)
        classifier.network.model = nn.SyncBatchNorm.convert_sync_batchnorm(classifier.network.model)
        net = classifier.network
    if channels_last:
        net.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(list(net.named_parameters()), cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    ema = EMA(net, cfg.ema_decay) if cfg.ema_decay is not None else None
    train_net: nn.Module = net
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_net = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)

    sampler = ShardedBatches(len(data), cfg.batch_size, world, cfg.seed, cfg.drop_last)
    steps_per_epoch = sampler.steps_per_epoch()
    if steps_per_epoch < 1:
        raise InputError("batch_size", f"at most the number of training images ({len(data)}) with drop_last", cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else total // 20
    run_info = {"recipe": str(mix), "config": cfg.to_dict(), "data": data.describe(), "model": classifier.config(),
                "world_size": world.size, "eval_sets": {k: len(v) for k, v in sets.items()}}

    state = TrainState()
    if out_path is not None and resume and has_state(out_path):
        loaded = load_state(out_path)
        _check_same_run(loaded.run, run_info, out_path)
        loaded.restore(net, optimizer, ema.module if ema is not None else None)
        state = loaded.state
        if ema is not None:
            ema.updates = state.ema_updates
    elif out_path is not None and world.is_main:
        out_path.mkdir(parents=True, exist_ok=True)
        write_json(out_path / "config.json", run_info)

    images_src = data.images
    labels_src = data.labels
    if dev.type == "cuda" and data.images.numel() * 4 < 4 * 2**30:
        # Small datasets live on the GPU: indexing there costs nothing next to a host copy per step.
        images_src, labels_src = data.images.to(dev), data.labels.to(dev)

    def save_run_state() -> None:
        if out_path is not None and world.is_main:
            save_state(out_path, state, model=net, optimizer=optimizer, ema=ema.module if ema is not None else None, run=run_info)

    eval_memo: dict[str, Any] = {}

    def evaluate_now() -> dict[str, float]:
        if not sets:
            return {}
        eval_clf = _eval_classifier(classifier, ema.module) if ema is not None else classifier
        return evaluate(eval_clf, sets, cfg.eval_suites, world=world, seed=derive_seed(cfg.seed, "eval"), amp=amp,
                        batch_size=cfg.eval_batch_size, generator=generator, memo=eval_memo)

    disable = (not world.is_main) or (progress is False) or (progress is None and not sys.stderr.isatty())
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=state.step, desc=f"train {mix}", unit="step", disable=disable, leave=False, dynamic_ncols=True)
    was_training = net.training
    try:
        while state.epoch < cfg.epochs:
            epoch = state.epoch
            epoch_start = time.time() - state.epoch_seconds
            sums = torch.tensor([state.sums["loss"], state.sums["correct"], state.sums["seen"]], dtype=torch.float64, device=dev)
            for global_idx, local in sampler.batches(epoch, state.batch):
                lr = cfg.lr * lr_factor(state.step, total, warmup, cfg.schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_value = _train_step(
                    train_net, net, classifier, optimizer, ema, mix, cfg, world, state, epoch, global_idx, local,
                    images_src, labels_src, dev, amp, channels_last, sums,
                )
                state.step += 1
                state.batch += 1
                bar.update(1)
                if on_step is not None:
                    on_step(state.step, loss_value)
                if state.step % 25 == 0 or state.batch == steps_per_epoch:
                    s = sums.tolist()
                    bar.set_postfix(epoch=epoch + 1, loss=f"{s[0] / max(s[2], 1):.3f}", acc=f"{s[1] / max(s[2], 1):.3f}")
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.batch < steps_per_epoch:
                    state.sums = dict(zip(("loss", "correct", "seen"), sums.tolist()))
                    state.epoch_seconds = time.time() - epoch_start
                    state.ema_updates = ema.updates if ema is not None else 0
                    save_run_state()
            totals = all_reduce_sum(sums, world).tolist()
            record: dict[str, Any] = {"epoch": epoch + 1, "step": state.step, "lr": optimizer.param_groups[0]["lr"],
                                      "train_loss": totals[0] / max(totals[2], 1), "train_acc": totals[1] / max(totals[2], 1)}
            last_epoch = epoch + 1 == cfg.epochs
            metrics = evaluate_now() if ((epoch + 1) % cfg.eval_every == 0 or last_epoch) else {}
            record.update(metrics)
            record["seconds"] = time.time() - epoch_start
            improved = False
            if select is not None and select in metrics:
                value = metrics[select]
                if not state.best or value > state.best["value"]:
                    state.best = {"metric": select, "value": value, "epoch": epoch + 1}
                    improved = True
            elif select is not None and metrics:
                raise InputError("select", "one of the evaluated metrics " + ", ".join(sorted(metrics)), select)
            state.history.append(record)
            state.epoch, state.batch = epoch + 1, 0
            state.sums = {"loss": 0.0, "correct": 0.0, "seen": 0.0}
            state.epoch_seconds = 0.0
            state.ema_updates = ema.updates if ema is not None else 0
            if metrics and select in metrics:
                bar.set_postfix(epoch=epoch + 1, loss=f"{record['train_loss']:.3f}", **{select: f"{metrics[select]:.3f}"})
            if out_path is not None and world.is_main:
                final_clf = _eval_classifier(classifier, ema.module) if ema is not None else classifier
                extra = {"epoch": epoch + 1, "step": state.step, "recipe": str(mix), "metrics": metrics}
                if improved:
                    _model_checkpoint(final_clf, out_path / "best", extra)
                _model_checkpoint(final_clf, out_path / "last", extra)
                write_text(out_path / "log.jsonl", _jsonl(state.history))
                save_run_state()
            barrier(world)
    finally:
        bar.close()
        net.train(was_training)
    if ema is not None:
        net.load_state_dict(ema.module.state_dict())
    if channels_last:
        net.to(memory_format=torch.contiguous_format)
    metrics = {k: v for k, v in state.history[-1].items() if "/" in k} if state.history else {}
    return TrainResult(classifier, state.history, metrics, dict(state.best), state.step, time.time() - started, out_path, str(mix),
                       cfg.to_dict())


def _check_same_run(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    diffs = [k for k in ("recipe", "config", "world_size") if saved.get(k) != now.get(k)]
    if saved.get("data", {}).get("fingerprint") != now["data"]["fingerprint"]:
        diffs.append("data")
    if saved.get("model", {}).get("arch") != now["model"].get("arch") or saved.get("model", {}).get("num_classes") != now["model"].get("num_classes"):
        diffs.append("model")
    if diffs:
        raise InputError(f"resume from {out}", "the same recipe, configuration, data, model and process count as the saved run",
                         "different " + ", ".join(diffs))


def _train_step(
    train_net: nn.Module,
    net: nn.Module,
    classifier: Classifier,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    mix: RecipeMix,
    cfg: TrainConfig,
    world: World,
    state: TrainState,
    epoch: int,
    global_idx: torch.Tensor,
    local: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    dev: torch.device,
    amp: bool,
    channels_last: bool,
    sums: torch.Tensor,
) -> torch.Tensor:
    """One optimiser step on this rank's shard of a global batch; returns the shard's mean loss (0-d, detached)."""
    step = state.step
    assignment = mix.assign(global_idx.numel(), make_generator(derive_seed(cfg.seed, "mix", step)))[local]
    idx = global_idx[local]
    x_all = images[idx.to(images.device)].to(dev, non_blocking=True)
    y_all = labels[idx.to(labels.device)].to(dev, non_blocking=True)
    seeds_all = (idx.to(dev) + derive_seed(cfg.seed, "sample", epoch)) & SEED_MASK
    parts: list[tuple[Recipe, torch.Tensor, list[torch.Tensor]]] = []
    with frozen(net):
        for k, recipe in enumerate(mix.recipes):
            gen = make_generator(derive_seed(cfg.seed, "recipe", k, str(recipe), step, world.rank), dev)
            if len(mix.recipes) == 1:
                batch = Batch(x_all, y_all, idx, seeds_all, gen, step, epoch)
            else:
                sel = (assignment == k).nonzero().squeeze(1)
                if sel.numel() == 0:
                    continue
                sel_dev = sel.to(dev)
                batch = Batch(x_all[sel_dev], y_all[sel_dev], idx[sel], seeds_all[sel_dev], gen, step, epoch)
            views = [v.detach() for v in recipe.views(batch, classifier)]
            parts.append((recipe, batch.labels, views))
    inputs = torch.cat([v for _, _, views in parts for v in views])
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    train_net.train()
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else nullcontext()
    with autocast:
        logits = train_net(inputs)
    losses, correct, offset = [], torch.zeros((), device=dev), 0
    for recipe, y, views in parts:
        n = y.shape[0]
        chunks = [logits[offset + i * n : offset + (i + 1) * n] for i in range(len(views))]
        offset += n * len(views)
        losses.append(recipe.loss(chunks, y, cfg.label_smoothing))
        correct = correct + (chunks[0].argmax(1) == y).sum()
    per_image = torch.cat(losses)
    # Sum over this shard, scaled so DDP's average over ranks is the mean over the global batch.
    loss = per_image.sum() * (world.size / global_idx.numel())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    optimizer.step()
    if ema is not None:
        ema.update(net)
    detached = per_image.detach()
    sums += torch.stack([detached.sum().double(), correct.double(), torch.tensor(float(y_all.shape[0]), device=dev, dtype=torch.float64)])
    return detached.mean()


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
) -> list[dict[str, float]]:
    """Train ``classifier`` in place on ``data`` with cross-entropy; returns per-epoch loss/accuracy.

    ``augment(x, y, generator) -> x'`` transforms each batch (images in ``[0, 1]``). Deterministic
    by ``seed`` on a CPU. The plain case of :func:`harden` (no evaluation, no files).
    """
    if not isinstance(classifier, Classifier):
        raise InputError("classifier", "a robust.models.Classifier", type(classifier).__name__)
    steps = math.ceil(len(data) / max(1, batch_size)) * max(1, epochs)
    recipe: Recipe | str = CallableRecipe(augment) if augment is not None else "erm"
    result = harden(classifier, data, recipe, device=classifier.device, progress=progress, epochs=epochs, batch_size=batch_size,
                    lr=lr, optimizer=optimizer, weight_decay=weight_decay, label_smoothing=label_smoothing,
                    warmup_steps=min(warmup_steps, steps // 5), seed=seed, amp=False, channels_last=False)
    return [{"epoch": r["epoch"], "loss": r["train_loss"], "acc": r["train_acc"], "seconds": r["seconds"]} for r in result.history]
