"""robust.losses: the per-image losses attacks, searches and NaTra maximise."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robust.errors import InputError
from robust.losses import other_max, per_image_loss


LOGITS = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.5, 2.0, 1.5, 0.0]])
LABELS = torch.tensor([0, 2])


def test_margin_is_positive_exactly_for_misclassified_images():
    margin = per_image_loss("margin", LOGITS, LABELS)
    assert margin.tolist() == [-2.0, 0.5]
    assert ((margin > 0) == (LOGITS.argmax(1) != LABELS)).all()
    assert other_max(LOGITS, LABELS).tolist() == [1.0, 2.0]


def test_targeted_losses_grow_as_the_target_wins():
    targets = torch.tensor([1, 1])
    assert per_image_loss("margin", LOGITS, LABELS, targets).tolist() == [-2.0, 0.5]
    assert torch.equal(per_image_loss("ce", LOGITS, LABELS, targets), -F.cross_entropy(LOGITS, targets, reduction="none"))


def test_ce_and_dlr_per_image_and_unknown_names_fail():
    assert torch.equal(per_image_loss("ce", LOGITS, LABELS), F.cross_entropy(LOGITS, LABELS, reduction="none"))
    dlr = per_image_loss("dlr", LOGITS, LABELS)
    assert dlr[0] == pytest.approx((1.0 - 3.0) / (3.0 - 0.0)) and dlr[1] == pytest.approx((2.0 - 1.5) / (2.0 - 0.5))
    with pytest.raises(InputError, match="loss"):
        per_image_loss("hinge", LOGITS, LABELS)
