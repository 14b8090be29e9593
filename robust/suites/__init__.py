"""Built-in audit suites, registered in :data:`robust.audit.SUITES` when this package is imported.

Every module in this package is imported, so adding a suite is adding one module with one function::

    @SUITES.register("mysuite", description="one line for `robust audit --list-suites`")
    def mysuite(ctx: AuditContext, spec: Spec) -> SuiteResult:
        data = ctx.subset(ctx.sample_count(spec, 500))          # honours n= and --max-samples
        case = ctx.evaluate("all", data.images, data.labels)    # acc, per-class, failure gallery
        return SuiteResult("mysuite", metrics={"acc": case.metrics["acc"]}, cases=[case])

What the reports draw from a :class:`~robust.results.SuiteResult` is listed in ARCHITECTURE.md.
"""
from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
