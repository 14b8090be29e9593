"""A regression test exported from a SAGE failure mode, kept as a known weakness.

SAGE (``attacks.sage``) searches the demo generator's prompts and latents for images that the
shipped oracle still sees as their prompt's class but the model gets wrong; ``failure_modes``
groups them and ``export_regression`` pins the largest mode's prompts and latents in a JSON case
(the fixture ``sage_case`` in ``conftest.py`` runs the search once and caches the case). The test
replays the case: it re-renders every image and asserts the model classifies all of them as their
prompt's class. On the model the failures were found on it fails, so it is a strict xfail; a
hardened model (``--robust-model``, 32x32 RGB) that gets them right shows up as an XPASS, which
fails the run until the mark is removed and the case becomes a guard against regressions::

    pytest examples/test_sage_regression.py --robust-profile=ci --runxfail   # the failing images
"""
from __future__ import annotations

import pytest

sage_regression = pytest.importorskip("attacks.sage_regression", reason="SAGE comes with robust's attacks package")

pytestmark = pytest.mark.robust


@pytest.mark.xfail(strict=True, raises=sage_regression.RegressionFailure,
                   reason="known weakness: the largest SAGE failure mode of the bundled 32x32 CNN (natural images it misclassifies)")
def test_regression_largest_sage_failure_mode(sage_model, sage_case, robust_generator):
    sage_case.assert_fixed(sage_model, robust_generator)
