"""Per-image classification losses that attacks, worst-case searches and NaTra's modes maximise."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robust.errors import InputError

LOSSES = ("ce", "margin", "dlr")


def other_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Largest logit among the classes other than ``cls``."""
    return logits.scatter(1, cls[:, None], float("-inf")).amax(1)


def per_image_loss(name: str, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """``ce``, ``margin`` (CW) or ``dlr`` (Croce & Hein 2020), one value per image.

    Untargeted losses grow as the true class loses; targeted ones grow as ``targets`` wins.
    ``margin`` is positive exactly when the image is misclassified (up to ties).
    """
    if name == "ce":
        if targets is None:
            return F.cross_entropy(logits, labels, reduction="none")
        return -F.cross_entropy(logits, targets, reduction="none")
    if name == "margin":
        if targets is None:
            return other_max(logits, labels) - logits.gather(1, labels[:, None]).squeeze(1)
        return logits.gather(1, targets[:, None]).squeeze(1) - other_max(logits, targets)
    if name == "dlr":
        ranked = logits.sort(dim=1, descending=True).values
        true = logits.gather(1, labels[:, None]).squeeze(1)
        if targets is None:
            return (other_max(logits, labels) - true) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
        target = logits.gather(1, targets[:, None]).squeeze(1)
        return (target - true) / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12)
    raise InputError("loss", "one of " + ", ".join(LOSSES), name)
