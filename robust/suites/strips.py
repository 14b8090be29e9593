"""Which image a suite's sweep strip shows: one that the sweep breaks, so the strip shows a failure.

Every sweep (corruption severities, transform parameters, synthetic factors) shows one image at each
setting; :func:`failing_image` picks it the same way for all of them.
"""
from __future__ import annotations

import torch


def failing_image(correct: torch.Tensor, clean_correct: torch.Tensor | None = None) -> int:
    """The image a sweep strip shows, from ``correct [V, N]`` (each image right or wrong at each of ``V`` settings).

    The first image the model gets right clean (``clean_correct [N]``; default: right at some setting)
    and wrong at the sweep's most harmful setting (lowest accuracy, the first of equals); else the
    first one right clean and wrong at some setting; else image 0.
    """
    correct = correct.bool().cpu()
    if correct.dim() != 2 or correct.shape[1] == 0:
        return 0
    right = correct.any(0) if clean_correct is None else clean_correct.bool().cpu()
    harmful = int(correct.float().mean(1).argmin())
    for candidates in (right & ~correct[harmful], right & ~correct.all(0)):
        hits = candidates.nonzero()
        if hits.numel():
            return int(hits[0, 0])
    return 0
