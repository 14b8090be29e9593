"""Direction finders (SeFa, GANSpace, Householder), realistic ranges, class-independence scoring, files."""
from __future__ import annotations

import json

import pytest
import torch

from robust.errors import InputError
from robust.gan.directions import (
    DIRECTION_FINDERS,
    Directions,
    HouseholderProjector,
    class_safe_ranges,
    find_directions,
    householder_directions,
    load_directions,
    resolve_layers,
    score_directions,
    sefa_from_weights,
    select_directions,
    train_judge,
    traversal,
)
from robust.gan.latent import latent_stats, sample_ws

from gan_helpers import tiny_generator


@pytest.fixture(scope="module")
def G():
    return tiny_generator()


@pytest.fixture(scope="module")
def stats(G):
    return latent_stats(G, n=512)


def random_orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.float()


def test_finders_are_registered_by_name():
    assert {"sefa", "ganspace", "householder", "tokens"} <= set(DIRECTION_FINDERS.names())
    with pytest.raises(InputError, match="direction finder"):
        DIRECTION_FINDERS.get("nope")


def test_sefa_recovers_the_right_singular_vectors_of_a_known_weight():
    V = random_orthonormal(12, 12, 0)
    U = random_orthonormal(30, 12, 1)
    S = torch.tensor([10.0, 8, 6, 5, 4, 3, 2, 1.5, 1, 0.5, 0.3, 0.1])
    A = U @ torch.diag(S) @ V.T
    vectors, values = sefa_from_weights([A[:10], A[10:]], 5, normalize=False)
    assert torch.allclose(values, S[:5].square(), rtol=1e-4)
    assert torch.allclose((vectors @ V[:, :5]).abs(), torch.eye(5), atol=1e-4)
    # Normalising each output unit's weight makes the result blind to the units' scales.
    scaled = A * torch.linspace(0.5, 3.0, 30)[:, None]
    assert torch.allclose(sefa_from_weights([scaled], 4)[0], sefa_from_weights([A], 4)[0], atol=1e-5)


def test_householder_parametrisation_is_orthogonal_and_matches_its_weight():
    W = torch.randn(40, 12, generator=torch.Generator().manual_seed(0))
    full = HouseholderProjector(W, 12)
    U, s, V = full.factors()
    assert torch.allclose(U.T @ U, torch.eye(12), atol=1e-5)
    assert torch.allclose(V.T @ V, torch.eye(12), atol=1e-5)
    assert torch.allclose(full(), W, atol=1e-5)
    # Any gradient step on the reflections keeps the factors orthonormal.
    opt = torch.optim.SGD(full.parameters(), lr=0.5)
    full().square().sum().backward()
    opt.step()
    U, _, V = full.factors()
    assert torch.allclose(U.T @ U, torch.eye(12), atol=1e-5) and torch.allclose(V.T @ V, torch.eye(12), atol=1e-5)
    # Low rank: the best rank-r approximation (truncated SVD).
    low = HouseholderProjector(W, 4)
    u, sv, vh = torch.linalg.svd(W, full_matrices=False)
    assert torch.allclose(low(), (u[:, :4] * sv[:4]) @ vh[:4], atol=1e-4)


def test_householder_directions_start_from_the_affine_singular_vectors(G, stats):
    plain = householder_directions(G, 4, None, 0, steps=0, stats=stats)
    weights = torch.cat([a.weight * a.weight_gain for _, a in G.style_affines()])
    _, _, vh = torch.linalg.svd(weights, full_matrices=False)
    assert torch.allclose((plain.vectors @ vh[:4].T).abs(), torch.eye(4), atol=1e-4)
    tuned = householder_directions(G, 4, None, 0, steps=5, lr=1e-2, stats=stats, rank=4)
    assert 0 < tuned.meta["final_error"] < tuned.meta["initial_error"]
    assert torch.allclose(tuned.vectors @ tuned.vectors.T, torch.eye(4), atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), tiny_generator().state_dict().values()))


def test_ganspace_orders_axes_by_the_variance_of_w(G, stats):
    found = find_directions(G, "ganspace", k=3, seed=0, calibrate=False, n=2000, stats=stats)
    spread = stats.spread(found.vectors)
    assert bool((spread[:-1] >= spread[1:] - 1e-4).all())
    others = stats.spread(random_orthonormal(G.w_dim, 4, 3).T)
    assert float(spread[0]) >= float(others.max())
    feature_axes = find_directions(G, "ganspace", k=2, seed=0, calibrate=False, n=300, activations=8, stats=stats)
    assert feature_axes.vectors.shape == (2, G.w_dim)


def test_calibrated_ranges_stop_where_images_stop_looking_real(G, stats):
    found = find_directions(G, "sefa", k=3, seed=0, stats=stats, calibrate_kwargs={"n": 16, "grid": 4, "max_sigma": 4.0})
    spread = stats.spread(found.vectors)
    assert bool((found.ranges[:, 0] <= 0).all() & (found.ranges[:, 1] >= 0).all())
    assert bool((found.ranges.abs().amax(1) <= 4.0 * spread + 1e-5).all())
    check = stats.with_images(G, n=64)
    ws, _ = sample_ws(G, 16, seed=4)
    usual = check.realistic(G, ws)
    far = check.realistic(G, found.apply(ws, found.along(0, torch.full((16,), 50.0 * float(spread[0])))))
    assert float(usual.float().mean()) > 0.8 and not bool(far.any())


def test_class_scoring_ranks_a_planted_class_direction_last():
    G = tiny_generator(seed=2, classes=3)
    stats = latent_stats(G, n=600)
    found = find_directions(G, "sefa", k=3, seed=0, calibrate=False, stats=stats)
    planted = stats.class_means[0] - stats.class_means[1]
    vectors = torch.cat([found.vectors, planted[None] / planted.norm()])
    spread = stats.spread(vectors)
    dirs = Directions(vectors, None, torch.stack([-2 * spread, 2 * spread], 1), ["a", "b", "c", "class"], "test")
    judge = train_judge(G, n=300, epochs=2, width=4, seed=0)
    scored = score_directions(G, dirs, judge=judge, n=32, seed=0)
    assert int(scored.scores["score"].argmin()) == 3
    assert float(scored.scores["class_alignment"][3]) > 0.9
    kept = select_directions(scored, min_preservation=0.0)
    assert not bool(kept.kept[3])
    forced = select_directions(scored, min_preservation=1.1, include=[3], exclude=[])
    assert forced.kept.tolist() == [False, False, False, True]
    assert forced.kept_directions().names == ["class"]
    with pytest.raises(InputError, match="include"):
        select_directions(scored, include=[9])


class _BrightnessJudge(torch.nn.Module):
    """Class 1 when an image is brighter than a threshold: a judge whose decision edits can flip."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3)) - self.threshold
        return torch.stack([-m, m], 1) * 100


def test_class_safe_ranges_shrink_only_the_directions_that_change_the_class(G, stats):
    from robust.models import Classifier

    found = find_directions(G, "sefa", k=3, seed=0, calibrate=False, stats=stats)
    spread = stats.spread(found.vectors)
    ranges = torch.stack([-spread, spread], 1) * torch.tensor([0.001, 20.0, 40.0])[:, None]
    dirs = Directions(found.vectors, None, ranges, ["tiny", "big", "huge"], "test")
    ws, _ = sample_ws(G, 64, seed=1)
    threshold = float(G.to_unit(G.synthesis(ws, noise_mode="const")).mean(dim=(1, 2, 3)).median())
    judge = Classifier(_BrightnessJudge(threshold), input_size=(G.img_channels, G.img_resolution, G.img_resolution), num_classes=2)
    full = score_directions(G, dirs, judge=judge, n=32, seed=0)
    safe = class_safe_ranges(G, dirs, judge=judge, min_preservation=0.9, n=32, seed=0, scales=(1.0, 0.5, 0.1, 0.01))
    scale = safe.scores["range_scale"]
    # A negligible range keeps every class: untouched.
    assert float(scale[0]) == 1.0 and torch.equal(safe.ranges[0], dirs.ranges[0])
    assert float(full.scores["class_preservation"][0]) == 1.0
    for i in (1, 2):
        if float(full.scores["class_preservation"][i]) < 0.9:
            assert float(scale[i]) < 1.0 and torch.allclose(safe.ranges[i], dirs.ranges[i] * scale[i])
            assert float(safe.scores["class_preservation"][i]) > float(full.scores["class_preservation"][i])
    assert float(full.scores["class_preservation"].min()) < 0.9, "the test needs a direction that flips the judge"
    kept = select_directions(safe, min_preservation=0.9, max_alignment=1.0)
    assert kept.kept.tolist() == (safe.scores["class_preservation"] >= 0.9).tolist()
    with pytest.raises(InputError, match="scales"):
        class_safe_ranges(G, dirs, judge=judge, scales=(0.0,), n=8)


def test_directions_edit_only_their_layers_and_survive_a_file(G, stats, tmp_path):
    found = find_directions(G, "sefa", k=2, layers="0-1", seed=0, calibrate=False, stats=stats)
    assert found.layers == [0, 1]
    ws, _ = sample_ws(G, 3, seed=0)
    moved = found.apply(ws, torch.ones(3, 2))
    assert torch.equal(moved[:, 2:], ws[:, 2:]) and not torch.equal(moved[:, :2], ws[:, :2])
    found = select_directions(found, include=[1], exclude=[0])
    found.save(tmp_path / "dirs", G)
    loaded = load_directions(tmp_path / "dirs", G)
    assert torch.equal(loaded.vectors, found.vectors) and torch.equal(loaded.ranges, found.ranges)
    assert loaded.kept.tolist() == [False, True] and loaded.layers == [0, 1] and loaded.names == found.names
    with pytest.raises(InputError, match="directions"):
        load_directions(tmp_path / "dirs", tiny_generator(seed=5))
    strip = traversal(G, found, 1, n=2, steps=3)
    assert strip.shape == (6, 3, 16, 16) and float(strip.min()) >= 0 and float(strip.max()) <= 1


def test_layer_specs_resolve_to_w_plus_indices(G):
    assert resolve_layers(G, None) is None and resolve_layers(G, "all") is None
    assert resolve_layers(G, "coarse") == [0, 1]
    assert resolve_layers(G, "fine") == [4, 5]
    assert resolve_layers(G, "1-2,4") == [1, 2, 4]
    with pytest.raises(InputError, match="layers"):
        resolve_layers(G, "9")


def test_class_free_directions_have_no_part_in_the_class_subspace():
    from robust.gan.directions import class_subspace

    G = tiny_generator(seed=2, classes=3)
    found = find_directions(G, "sefa", k=4, seed=0, calibrate=False, class_free=True)
    basis = class_subspace(G, seed=0)
    assert torch.allclose(found.vectors @ basis, torch.zeros(len(found), basis.shape[1]), atol=1e-5)
    assert torch.allclose(found.vectors.norm(dim=1), torch.ones(len(found)), atol=1e-5)
    with pytest.raises(InputError, match="class_free"):
        find_directions(tiny_generator(), "sefa", k=2, calibrate=False, class_free=True)


def test_directions_command_writes_directions_table_and_strips(G, tmp_path):
    from click.testing import CliRunner

    from robust.cli import cli
    from robust.gan import save_generator

    save_generator(G, tmp_path / "gen")
    args = ["directions", "--generator", str(tmp_path / "gen.safetensors"), "--method", "sefa", "-k", "3", "--judge", "none",
            "--device", "cpu"]
    run = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "dirs"), "--json", str(tmp_path / "dirs_table.json"),
                                   "--strips", str(tmp_path / "strips")])
    assert run.exit_code == 0, run.output
    loaded = load_directions(tmp_path / "dirs", G)
    assert len(loaded) == 3 and loaded.meta["command"] and loaded.meta["hardware"]
    table = json.loads((tmp_path / "dirs_table.json").read_text())
    assert [row["index"] for row in table["rows"]] == [0, 1, 2]
    assert len(list((tmp_path / "strips").glob("*.png"))) == 3
    clash = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "d2"), "--json", str(tmp_path / "d2.json")])
    assert clash.exit_code != 0 and "sidecar" in clash.output and not (tmp_path / "d2.safetensors").exists()
    refused = CliRunner().invoke(cli, [*args, "--safe-ranges"])
    assert refused.exit_code != 0 and "--safe-ranges" in refused.output


class _FixedJudge(torch.nn.Module):
    def __init__(self, k: int, classes: int):
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(k), classes).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * x.mean((1, 2, 3))[:, None]


def test_scoring_counts_only_samples_the_judge_recognises():
    from robust.gan.directions import _scoring_codes
    from robust.models import Classifier

    G = tiny_generator(seed=2, classes=3)
    always0 = Classifier(_FixedJudge(0, 3), input_size=(3, 16, 16), num_classes=3)
    ws, base, info = _scoring_codes(G, always0, 24, 0, 64)
    # Only samples conditioned on class 0 are "recognised" by a judge that always says 0.
    assert info["samples"] == "recognised" and 8 <= info["n"] <= 24 and ws.shape[0] == info["n"]
    assert bool((base == 0).all()) and 0.2 < info["recognised_rate"] < 0.5
    unconditional = tiny_generator(seed=2)
    ws, base, info = _scoring_codes(unconditional, always0, 24, 0, 64)
    assert info == {"samples": "all", "n": 24} and ws.shape[0] == 24


def test_token_directions_point_toward_each_attribute_tokens_codes():
    from robust.gan import Conditioning, Generator
    from robust.gan.directions import token_directions

    cond = Conditioning([("class", ["a", "b"]), ("texture", ["plain", "stripes", "dots"])])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        G = Generator(z_dim=8, c_dim=cond.c_dim, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                      synthesis_kwargs={"channel_base": 128, "channel_max": 8}, conditioning=cond).eval().requires_grad_(False)
    found = token_directions(G, k=8, seed=0, n=512)
    assert sorted(found.names) == ["texture=dots", "texture=plain", "texture=stripes"]  # never the class group
    assert found.method == "tokens" and bool((found.values[:-1] >= found.values[1:]).all())
    # Switching a sample's texture token from u to v moves its code along the direction of v more than along the others.
    z = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))
    classes = torch.randint(0, 2, (256,), generator=torch.Generator().manual_seed(2))
    codes = {t: G.mapping(z, cond.encode({"class": classes, "texture": torch.full((256,), t)}))[:, 0] for t in range(3)}
    for v, token in enumerate(["plain", "stripes", "dots"]):
        shift = torch.cat([codes[v] - codes[u] for u in range(3) if u != v])
        along = shift @ found.vectors.T  # [M, K]
        mine = found.names.index(f"texture={token}")
        assert float(along[:, mine].mean()) > 0
        assert int(along.mean(0).argmax()) == mine
    assert len(token_directions(G, k=2, seed=0, n=512)) == 2
    with pytest.raises(InputError, match="attribute tokens"):
        token_directions(tiny_generator(seed=2, classes=3), k=2)
