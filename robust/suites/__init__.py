"""Built-in audit suites, registered in :data:`robust.audit.SUITES` when this package is imported.

Every module in this package is imported, so adding a suite is adding one module with one function::

    @SUITES.register("mysuite", description="one line for `robust audit --list-suites`")
    def mysuite(ctx: AuditContext, spec: Spec) -> SuiteResult:
        data = ctx.subset(ctx.sample_count(spec, 500))          # honours n= and --max-samples
        case = ctx.evaluate("all", data.images, data.labels)    # acc, per-class, failure gallery
        return SuiteResult("mysuite", metrics={"acc": case.metrics["acc"]}, cases=[case])

What the reports draw without suite-specific code: ``curves`` (one plot per x/y label pair;
``details["curve_layout"] = "grid"`` for one panel per curve), ``strips`` (image rows with a value
and caption under each frame: severity or direction sweeps), each case's ``failures`` (a gallery
with the clean original beside the failing input), ``per_class`` of up to six cases, and
``details``: ``tables`` (``[{title, columns, rows}]``, e.g. failure modes), ``notes``,
``confusion`` (``{labels, matrix}``), ``plot_cases`` (a case metric drawn as bars). Failure modes
(SAGE) fit as one case per mode (metrics such as ``count``, examples as failures) plus a table.
Raise :class:`robust.audit.SuiteSkipped` when a suite does not apply; any other exception marks
the suite errored while the audit goes on. Use ``ctx.seed_for(...)`` for every random choice.
"""
from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
