"""augment: transformation makers - the ImageNet-C corruption suite and classic augmentations.

Importing the package registers every corruption in :data:`augment.corruptions.CORRUPTIONS` and,
as ``corruptions:<name>``, in :data:`robust.transforms.TRANSFORMS`; the classic augmentations are
registered as ``augmix``, ``randaugment`` and ``trivialaugment``.
"""
from __future__ import annotations

from augment.classic import AugMix, RandAugment, TrivialAugment, augmix_consistency_loss
from augment.corruptions import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    ALL_CORRUPTIONS,
    BENCHMARK_CORRUPTIONS,
    CORRUPTIONS,
    HELDOUT_CORRUPTIONS,
    Corruption,
    CorruptionErrors,
    average_error,
    corrupt,
    corruption_error,
    corruption_errors,
    get_corruption,
    image_seeds,
    mce,
    relative_corruption_error,
    relative_mce,
)
from augment.natra import NaturalTransform, NaturalTransformResult

__all__ = [
    "ALEXNET_CLEAN_ERROR", "ALEXNET_ERRORS", "ALL_CORRUPTIONS", "AugMix", "BENCHMARK_CORRUPTIONS", "CORRUPTIONS",
    "Corruption", "CorruptionErrors", "HELDOUT_CORRUPTIONS", "RandAugment", "TrivialAugment", "augmix_consistency_loss",
    "average_error", "corrupt", "corruption_error", "corruption_errors", "get_corruption", "image_seeds", "mce",
    "relative_corruption_error", "relative_mce",
    "NaturalTransform", "NaturalTransformResult",
]
