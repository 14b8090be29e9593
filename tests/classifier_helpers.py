"""Small classifiers the tests share: a linear model of the pixels, and a logistic regression on digits."""
from __future__ import annotations

import torch
from torch import nn

from robust.data import ImageSet, load_dataset
from robust.models import Classifier


def pixel_classifier(classes: int, seed: int = 0) -> Classifier:
    """A linear classifier of 3x16x16 pixels: every image change moves its logits (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, classes))
        net[1].weight.data.mul_(20.0)
    return Classifier(net, input_size=(3, 16, 16), num_classes=classes)


def digits_logreg(steps: int) -> tuple[Classifier, ImageSet]:
    """A logistic regression trained by ``steps`` full-batch Adam steps on scikit-learn's digits (16x16, grey),
    and 24 test images."""
    train, test = load_dataset("digits:train"), load_dataset("digits:test", n=24)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(train.images), train.labels).backward()
        opt.step()
    return Classifier(net, input_size=(1, 16, 16)), test
