"""Edit reach: the identity moves nothing, a fresh re-render moves its factor by a whole fresh draw."""
from __future__ import annotations

import pytest
import torch

from robust.errors import InputError
from robust.gan.reach import ReachConfig, edit_reach, factor_distance, reach_setup, reach_table
from robust.seeding import make_generator
from robust.synthetic import factor, render, sample_independent


@pytest.fixture(scope="module")
def setup():
    return reach_setup(ReachConfig(n=128))


def redraw(setup, name: str, seed: int):
    """A transform that re-renders the held-out images with ``name`` drawn afresh (another seed than the setup's)."""
    data = setup.data

    def apply(images: torch.Tensor) -> torch.Tensor:
        fresh = sample_independent(len(data), make_generator(seed))[name]
        return render(data.labels, {**data.factors, name: fresh}, data.size[0])

    return apply


def test_identity_moves_nothing_and_keeps_the_class(setup):
    result = edit_reach(lambda x: x, setup, name="identity")
    assert all(v == 0.0 for v in result.moved.values())
    assert result.class_kept == 1.0
    assert result.fd == pytest.approx(result.fd_real)
    assert not result.meets_target()


@pytest.mark.parametrize("name", ["obj_hue", "texture"])
def test_a_fresh_redraw_moves_its_factor_by_one_fresh_draw(setup, name):
    result = edit_reach(redraw(setup, name, 12345), setup, name=f"redraw {name}")
    assert 0.75 <= result.fraction[name] <= 1.3
    assert result.fraction["scale"] < 0.3 and result.fraction["fill"] < 0.2
    assert result.class_kept >= 0.9


def test_both_shortcut_factors_redrawn_meet_the_target(setup):
    data = setup.data

    def both(images: torch.Tensor) -> torch.Tensor:
        factors = {**data.factors, "obj_hue": sample_independent(len(data), make_generator(1))["obj_hue"],
                   "texture": sample_independent(len(data), make_generator(2))["texture"]}
        return render(data.labels, factors, data.size[0])

    result = edit_reach(both, setup, name="both")
    assert result.meets_target()
    table = reach_table([result])
    assert table.count("\n") == 2 and table.splitlines()[2].startswith("| both |") and table.endswith("| met |")


def test_circular_factors_wrap_and_rotation_respects_symmetry():
    hue = factor("obj_hue")
    d = factor_distance(hue, torch.tensor([0.95]), torch.tensor([0.05]), torch.tensor([0]))
    assert float(d) == pytest.approx(0.1)
    rotation = factor("rotation")
    square, disk = 3, 0
    d = factor_distance(rotation, torch.tensor([0.1, 0.1]), torch.tensor([0.1 + 3.14159265 / 2, 1.0]), torch.tensor([square, disk]))
    assert float(d[0]) == pytest.approx(0.0, abs=1e-5) and torch.isnan(d[1])


def test_bad_transforms_and_data_raise_clear_errors(setup):
    with pytest.raises(InputError, match="transform"):
        edit_reach("hue", setup)
    with pytest.raises(InputError, match="transformed images"):
        edit_reach(lambda x: x[:, :, :16, :16], setup)
    with pytest.raises(InputError, match="transformed images"):
        edit_reach(lambda x: x[:5], setup)
    with pytest.raises(InputError, match="transformed images"):
        edit_reach(lambda x: x * 255, setup)
    no_factors = setup.data.take(4, 0)
    no_factors.factors = {}
    with pytest.raises(InputError, match="factors"):
        reach_setup(data=no_factors)
