"""Safe import of official-format StyleGAN2-ADA pickles: weights load by name, code in the file never runs."""
from __future__ import annotations

import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from robust.errors import FileFormatError
from robust.gan import Discriminator, Generator, load
from robust.gan.pickle_import import UnsafePickleError, load_official, safe_load_pickle

# Source text stored in the pickle as the networks' module; importing it would create this file.
SENTINEL = "robust_gan_import_sentinel"


def _module_source(marker: Path) -> str:
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('executed')\nclass Generator: pass\n"


def _reconstruct_persistent_obj(meta):  # stands in for NVIDIA's function while the pickle is written
    raise AssertionError("never called while writing")


class _Persistent:
    """Pickles exactly like an official persistent module: reduce to the reconstructor with (meta,)."""

    def __init__(self, module: torch.nn.Module, class_name: str, source: str, init_kwargs: dict | None = None):
        children = OrderedDict((name, _Persistent(child, type(child).__name__, source)) for name, child in module._modules.items())
        state = {k: v for k, v in module.__dict__.items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))}
        state.update({
            "training": False,
            "_parameters": OrderedDict((k, v) for k, v in module._parameters.items()),
            "_buffers": OrderedDict((k, v) for k, v in module._buffers.items()),
            "_non_persistent_buffers_set": set(),
            "_modules": children,
            "_init_args": (),
            "_init_kwargs": dict(init_kwargs or {}),
        })
        self.meta = {"type": "class", "version": 6, "module_src": source, "class_name": class_name, "state": state}

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,), None)


@pytest.fixture
def official_pickle(tmp_path, monkeypatch):
    """A pickle in the official layout made from our networks (conditional, 16x16)."""
    marker = tmp_path / SENTINEL
    torch.manual_seed(0)
    mapping_kwargs = {"num_layers": 2}
    synthesis_kwargs = {"channel_base": 256, "channel_max": 16, "num_fp16_res": 0, "conv_clamp": None, "architecture": "skip"}
    G = Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=mapping_kwargs,
                  synthesis_kwargs={k: v for k, v in synthesis_kwargs.items() if k != "architecture"})
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # noise strengths and biases away from their zero init
        G.mapping.w_avg.normal_()
    D = Discriminator(c_dim=3, img_resolution=16, channel_base=256, channel_max=16, mapping_kwargs={"num_layers": 1})
    g_kwargs = {"z_dim": 8, "c_dim": 3, "w_dim": 8, "img_resolution": 16, "img_channels": 3,
                "mapping_kwargs": mapping_kwargs, "synthesis_kwargs": synthesis_kwargs}
    source = _module_source(marker)
    data = {
        "G": _Persistent(G, "Generator", source, g_kwargs),
        "D": _Persistent(D, "Discriminator", source, D.init_args),
        "G_ema": _Persistent(G, "Generator", source, g_kwargs),
        "augment_pipe": None,
        "training_set_kwargs": {"path": "dataset.zip", "use_labels": True, "max_size": 100, "resolution": 16},
    }
    fake_pkg = types.ModuleType("torch_utils")
    fake_mod = types.ModuleType("torch_utils.persistence")
    fake_mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    monkeypatch.setitem(sys.modules, "torch_utils", fake_pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", fake_mod)
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    monkeypatch.delitem(sys.modules, "torch_utils")
    return path, G, D, marker


def test_official_pickle_loads_into_our_generator_with_identical_outputs(official_pickle):
    path, G_src, D_src, marker = official_pickle
    G = load(path)
    assert isinstance(G, Generator) and (G.z_dim, G.c_dim, G.w_dim, G.img_resolution) == (8, 3, 8, 16)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    c = torch.eye(3)[torch.tensor([0, 1, 2, 1])]
    with torch.no_grad():
        G_src.eval()
        for psi in (1.0, 0.7):
            expected = G_src(z, c, truncation_psi=psi, noise_mode="const")
            assert torch.equal(G(z, c, truncation_psi=psi, noise_mode="const"), expected)
    assert not marker.exists(), "the module source stored in the pickle must never run"


def test_official_pickle_discriminator_and_metadata(official_pickle):
    path, _, D_src, marker = official_pickle
    ckpt = load_official(path)
    img = torch.rand(4, 3, 16, 16) * 2 - 1
    c = torch.eye(3)[torch.tensor([0, 1, 2, 0])]
    with torch.no_grad():
        assert torch.equal(ckpt.D(img, c), D_src.eval()(img, c))
    assert ckpt.training_set_kwargs["resolution"] == 16
    assert set(ckpt.source_fingerprints) == {"G", "D", "G_ema"}
    assert len(next(iter(ckpt.source_fingerprints.values()))) == 64
    assert not marker.exists()


class _Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_pickle_that_would_run_code_is_rejected_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(f"touch {marker}")}, protocol=4))
    with pytest.raises(UnsafePickleError, match="system"):
        load(path)
    assert not marker.exists()


def test_other_globals_and_persistent_ids_are_rejected(tmp_path):
    path = tmp_path / "eval.pkl"
    path.write_bytes(pickle.dumps({"x": eval}, protocol=2))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_load_pickle(path)

    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage-0" if isinstance(obj, str) and obj == "x" else None

    path2 = tmp_path / "pid.pkl"
    with open(path2, "wb") as fh:
        WithPid(fh, protocol=4).dump({"a": "x"})
    with pytest.raises(UnsafePickleError, match="persistent id"):
        safe_load_pickle(path2)


def test_not_a_network_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(FileFormatError, match="G_ema"):
        load(path)
    with pytest.raises(FileFormatError, match="no such file"):
        load(tmp_path / "missing.pkl")


def test_zip_torch_save_file_is_named_as_such(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"G_ema": torch.zeros(2)}, path)
    with pytest.raises(FileFormatError, match="zip archive") as info:
        safe_load_pickle(path)
    assert str(path) in str(info.value)


class _StorageWithCode:
    """A storage whose nested torch.save payload references a callable (torch.storage._load_from_bytes)."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def __reduce__(self):
        import torch.storage

        return (torch.storage._load_from_bytes, (self.payload,))


def test_refused_storage_names_the_file_and_never_advises_unsafe_loading(tmp_path):
    import io

    marker = tmp_path / "pwned"
    inner = io.BytesIO()
    torch.save({"x": _Evil(f"touch {marker}")}, inner, _use_new_zipfile_serialization=False)
    path = tmp_path / "storage.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _StorageWithCode(inner.getvalue())}, protocol=2))
    with pytest.raises(UnsafePickleError) as info:
        safe_load_pickle(path)
    message = str(info.value)
    assert str(path) in message and "<pickle>" not in message
    assert "weights_only" not in message.replace("read weights-only", "") and "add_safe_globals" not in message
    assert not marker.exists()
