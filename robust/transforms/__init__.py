"""Transforms: parametrised, batched, seeded image transformations, one object to sample, search,
sweep and shrink. :mod:`.base`: the interface and the registry; :mod:`.search`: the worst-case
search; :mod:`.functional`: the maths of :mod:`.photometric` and :mod:`.geometric`, the core
transforms (registered when this package is imported)."""
from __future__ import annotations

from robust.transforms.base import (
    MAX_SEVERITY,
    SIDES,
    TRANSFORMS,
    Param,
    Params,
    Transform,
    check_severity,
    get_transform,
    register_transform,
    severity_from_spec,
)
from robust.transforms import geometric, photometric  # noqa: E402,F401  (registers the core transforms)


def load_builtin_transforms():
    """The transform registry with the core transforms in it (importing this package registers them).

    Transforms of sibling packages (``augment`` corruptions) register when those are imported
    (``robust.plugins.load_all`` does it for conductors).
    """
    return TRANSFORMS


__all__ = ["MAX_SEVERITY", "SIDES", "TRANSFORMS", "Param", "Params", "Transform", "check_severity", "get_transform",
           "load_builtin_transforms", "register_transform", "severity_from_spec"]
