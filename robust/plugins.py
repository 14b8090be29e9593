"""Loading robust's extensions: the registrations of sibling packages and the hypothesis profiles.

Transforms, corruptions and attacks register themselves by name when their modules are imported.
:func:`load_all` imports every such module that is installed, so a name such as
``"corruptions:fog"`` resolves wherever it is written (pytest plugin, strategies, assertions).
:func:`register_profiles` adds the ``robust-ci`` and ``robust-nightly`` hypothesis settings
profiles. Importing this module is cheap: it imports neither torch nor hypothesis.
"""
from __future__ import annotations

import importlib
import importlib.util

#: Core modules whose import registers transforms in :data:`robust.transforms.TRANSFORMS`.
CORE_MODULES: tuple[str, ...] = ("robust.transforms",)
#: Sibling packages that register corruptions (``corruptions:<name>``) and attacks when present.
SIBLING_PACKAGES: tuple[str, ...] = ("augment", "attacks")

#: Hypothesis settings per profile name (keyword arguments of ``hypothesis.settings``).
#: ``robust-ci`` is deterministic and quick (derandomized, so hypothesis keeps no example database);
#: ``robust-nightly`` searches much longer and stores failures in the example database.
PROFILES: dict[str, dict[str, object]] = {
    "robust-ci": {"max_examples": 25, "derandomize": True, "deadline": None, "print_blob": True},
    "robust-nightly": {"max_examples": 500, "derandomize": False, "deadline": None, "print_blob": True},
}


def _installed(name: str) -> bool:
    """Whether ``name`` is a regular package here (a bare namespace of that name registers nothing)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


def load_all() -> list[str]:
    """Import the core transform modules and every sibling package that is installed.

    Returns the names of the modules imported (in order). A package that is absent is skipped;
    one that is present but fails to import raises, since that is a bug to see, not to hide.
    """
    names = list(CORE_MODULES) + [p for p in SIBLING_PACKAGES if _installed(p)]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"robust could not load its {name!r} package: {exc}") from exc
    return names


def register_profiles() -> list[str]:
    """Register the :data:`PROFILES` with hypothesis (idempotent); returns their names."""
    from hypothesis import HealthCheck, settings

    # Model forward passes on big images are legitimately slow; data are large by nature.
    suppressed = [HealthCheck.too_slow, HealthCheck.data_too_large]
    for name, values in PROFILES.items():
        extra: dict[str, object] = {}
        if not values.get("derandomize"):
            # Explicit, because hypothesis's own default database is None on CI machines, where a
            # nightly run most needs to remember its failures.
            from hypothesis.database import DirectoryBasedExampleDatabase

            extra["database"] = DirectoryBasedExampleDatabase(".hypothesis/examples")
        settings.register_profile(name, suppress_health_check=suppressed, **values, **extra)
    return list(PROFILES)
