"""Training classifiers: a plain, seeded loop (``fit``) that the hardening recipes build on."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from robust.data import ImageSet
from robust.errors import InputError
from robust.models import Classifier
from robust.seeding import derive_seed, make_generator

Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def make_optimizer(params: Any, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise InputError("optimizer", "sgd or adamw", name)


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


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
    by ``seed`` on a CPU.
    """
    from tqdm.auto import tqdm

    if not classifier.has_gradients:
        raise InputError("classifier", "a torch classifier (with gradients)", type(classifier).__name__)
    classifier.check_compatible(data)
    if epochs < 1 or batch_size < 1:
        raise InputError("epochs/batch_size", "positive integers", (epochs, batch_size))
    device = classifier.device
    net = classifier.network
    lr = lr if lr is not None else (0.1 if optimizer == "sgd" else 2e-3)
    opt = make_optimizer(net.parameters(), optimizer, lr, weight_decay)
    steps_per_epoch = math.ceil(len(data) / batch_size)
    total = steps_per_epoch * epochs
    gen = make_generator(derive_seed(seed, "fit-shuffle"))
    aug_gen = make_generator(derive_seed(seed, "fit-augment"), device)
    history: list[dict[str, float]] = []
    was_training = net.training
    net.train()
    step = 0
    bar = tqdm(total=total, desc="train", unit="step", disable=progress is False or None, leave=False)
    try:
        for epoch in range(epochs):
            order = torch.randperm(len(data), generator=gen)
            loss_sum, correct, seen, start = 0.0, 0, 0, time.time()
            for i in range(0, len(data), batch_size):
                idx = order[i : i + batch_size]
                x = data.images[idx].to(device, non_blocking=True)
                y = data.labels[idx].to(device, non_blocking=True)
                if augment is not None:
                    x = augment(x, y, aug_gen)
                for group in opt.param_groups:
                    group["lr"] = lr * cosine_lr(step, total, min(warmup_steps, total // 5))
                logits = net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * y.shape[0]
                correct += int((logits.argmax(1) == y).sum())
                seen += y.shape[0]
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "acc": correct / seen, "seconds": time.time() - start})
    finally:
        bar.close()
        net.train(was_training)
    return history
