"""Conditioning tokens (robust.gan.conditioning): per-seed draws, the bulk draw, prompts, token rows."""
from __future__ import annotations

import pytest
import torch

from robust.errors import InputError
from robust.gan import Conditioning

from gan_helpers import tiny_generator

COND = Conditioning([("class", ["disk", "ring", "star"]), ("texture", ["plain", "stripes"]), ("fill", ["solid", "hollow", "dots", "grid"])])


def test_tokens_follow_each_seed_whatever_the_batch():
    seeds = torch.arange(50, dtype=torch.int64) * 7919 + 11
    tokens = COND.sample(seeds)
    assert set(tokens) == set(COND.names) and all(t.dtype == torch.long and t.shape == (50,) for t in tokens.values())
    alone = COND.sample(seeds[17:19])
    assert all(torch.equal(alone[g], tokens[g][17:19]) for g in COND.names)
    assert any(not torch.equal(COND.sample(seeds, stream=1)[g], tokens[g]) for g in COND.names)


def test_tokens_are_uniform_over_each_group_and_a_group_subset_keeps_its_own_draws():
    seeds = torch.arange(6000, dtype=torch.int64)
    tokens = COND.sample(seeds, stream=2)
    for name, names in COND.groups:
        counts = torch.bincount(tokens[name], minlength=len(names)).float() / len(seeds)
        assert torch.allclose(counts, torch.full((len(names),), 1 / len(names)), atol=0.03), name
    # Only the groups asked for, drawn in that order (the first one from the first uniform of each seed).
    fills = COND.sample(seeds, groups=["fill"], stream=2)
    assert set(fills) == {"fill"} and torch.equal(fills["fill"], COND.sample(seeds, groups=["fill", "class"], stream=2)["fill"])
    with pytest.raises(InputError, match="conditioning group"):
        COND.sample(seeds, groups=["shape"])


def test_the_bulk_draw_follows_a_torch_generator():
    a = COND.sample(8, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    expected = {name: torch.randint(0, len(names), (8,), generator=gen) for name, names in COND.groups}
    assert all(torch.equal(a[g], expected[g]) for g in COND.names)
    with pytest.raises(InputError, match="seeds"):
        COND.sample(torch.rand(4))
    with pytest.raises(InputError, match="seeds"):
        COND.sample(torch.arange(4), torch.Generator())


def test_prompts_parse_from_text_or_mappings_by_name_or_index():
    assert COND.parse("class=star, texture=1") == {"class": 2, "texture": 1}
    assert COND.parse({"class": "star", "fill": 3}) == COND.parse("class=2,fill=grid") == {"class": 2, "fill": 3}
    with pytest.raises(InputError, match="texture"):
        COND.parse({"texture": "zigzag"})
    with pytest.raises(InputError, match="conditioning group"):
        COND.parse({"shape": 0})
    with pytest.raises(InputError, match="prompt"):
        COND.parse("class")


def test_token_rows_encode_like_the_mapping_and_name_their_tokens():
    tokens = COND.sample(torch.arange(6, dtype=torch.int64))
    rows = COND.rows(tokens)
    assert rows.shape == (6, 3) and torch.equal(rows[:, 1], tokens["texture"])
    assert torch.equal(COND.encode(rows), COND.encode(tokens))
    assert COND.token_names([2, 0, 3]) == {"class": "star", "texture": "plain", "fill": "grid"}
    with pytest.raises(InputError, match="tokens"):
        COND.encode(rows[:, :2])


def test_the_conditioning_of_a_generator_must_have_the_group_asked_for():
    G = tiny_generator(classes=2)
    assert Conditioning.of(G) is G.conditioning
    with pytest.raises(InputError, match="conditional"):
        Conditioning.of(tiny_generator())
    with pytest.raises(InputError, match="texture"):
        Conditioning.of(G, "texture")
