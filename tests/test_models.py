"""Classifier adapters: nn.Module, timm, robust checkpoints, ONNX; modes, batching, validation."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from robust.errors import FileFormatError, GradientUnavailableError, InputError
from robust.models import (
    Classifier,
    build_classifier,
    eval_mode,
    export_onnx,
    load_classifier,
    save_classifier,
)


def tiny_net(classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))


def test_module_adapter_infers_classes_and_applies_normalisation():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2, bias=False))
    clf = Classifier(net, input_size=(3, 4, 4), mean=(0.5,), std=(0.25,))
    assert clf.num_classes == 2 and clf.class_names == ["0", "1"]
    x = torch.rand(5, 3, 4, 4)
    expected = net((x - 0.5) / 0.25)
    assert torch.allclose(clf(x), expected, atol=1e-6)


def test_adapter_runs_in_eval_mode_and_restores_every_submodule_mode():
    net = tiny_net()
    net.train()
    net[1].eval()  # a user who froze BatchNorm keeps it frozen
    clf = Classifier(net, input_size=(3, 8, 8))
    x = torch.rand(4, 3, 8, 8)
    a, b = clf(x), clf(x)  # dropout would make these differ in train mode
    assert torch.equal(a, b)
    assert net.training and net[3].training and not net[1].training
    with eval_mode(net):
        assert not net.training
    assert net.training


def test_logits_batches_large_inputs_identically():
    clf = Classifier(tiny_net(), input_size=(3, 8, 8), batch_size=3)
    x = torch.rand(10, 3, 8, 8)
    assert torch.allclose(clf.logits(x), clf.logits(x, batch_size=100), atol=1e-6)
    assert clf.predict(x).shape == (10,)
    assert torch.allclose(clf.probabilities(x).sum(1), torch.ones(10))


def test_gradients_flow_to_inputs_only_through_forward():
    clf = Classifier(tiny_net(), input_size=(3, 8, 8))
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    clf(x).sum().backward()
    assert x.grad is not None and clf.has_gradients


def test_timm_model_by_name_without_download():
    clf = load_classifier("timm:resnet18", num_classes=7, input_size=(3, 32, 32))
    assert clf.num_classes == 7 and clf.mean == (0.485, 0.456, 0.406)
    assert clf.logits(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    gray = load_classifier("timm:resnet18", num_classes=4, input_size=(1, 32, 32))
    assert gray.logits(torch.rand(1, 1, 32, 32)).shape == (1, 4)


def test_checkpoint_round_trip_keeps_weights_config_and_names(tmp_path):
    clf = build_classifier("smallcnn", 3, (3, 16, 16), class_names=["cat", "dog", "<b>eel</b>"], width=8)
    weights, config = save_classifier(clf, tmp_path / "model")
    assert weights.name == "model.safetensors" and config.name == "model.json"
    back = load_classifier(tmp_path / "model.safetensors")
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(clf.logits(x), back.logits(x))
    assert back.class_names == clf.class_names and back.fingerprint() == clf.fingerprint()
    assert back.arch == "smallcnn" and back.arch_kwargs == {"width": 8}


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileFormatError, match="no such file"):
        load_classifier(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "bad.json").write_text('{"format": "robust-classifier", "arch": "smallcnn", "num_classes": 2, "input_size": [3, 8, 8], "mean": [0], "std": [1]}')
    with pytest.raises(FileFormatError, match="bad.safetensors"):
        load_classifier(tmp_path / "bad.safetensors")
    (tmp_path / "odd.txt").write_text("x")
    with pytest.raises(FileFormatError, match="odd.txt"):
        load_classifier(tmp_path / "odd.txt")
    with pytest.raises(InputError, match="smallcnn"):
        load_classifier("no-such-model")


def test_timm_weights_load_from_a_local_file_only(tmp_path):
    clf = build_classifier("timm:resnet18", 3, (3, 32, 32))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    back = load_classifier("timm:resnet18", num_classes=3, weights=tmp_path / "w.safetensors")
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(clf.logits(x), back.logits(x))


def test_onnx_export_parity_and_no_gradients(tmp_path):
    clf = build_classifier("smallcnn", 4, (3, 16, 16), class_names=list("abcd"), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), width=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_onnx(clf, tmp_path / "m.onnx")
    assert result["max_abs_diff"] <= 1e-4
    onnx_clf = load_classifier(tmp_path / "m.onnx")
    assert onnx_clf.class_names == list("abcd") and onnx_clf.num_classes == 4 and not onnx_clf.has_gradients
    x = torch.rand(9, 3, 16, 16)
    assert float((onnx_clf.logits(x) - clf.logits(x)).abs().max()) <= 1e-4
    with pytest.raises(GradientUnavailableError, match="square"):
        onnx_clf(x.clone().requires_grad_(True))


def test_onnx_input_mismatch_is_a_clear_error(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    torch.onnx.export(net, (torch.rand(1, 3, 8, 8),), str(tmp_path / "fixed.onnx"), dynamo=False)
    clf = load_classifier(tmp_path / "fixed.onnx")
    assert clf.fixed_size and clf.input_size == (3, 8, 8)
    assert clf.logits(torch.rand(5, 3, 8, 8)).shape == (5, 2)  # fixed batch of 1, run in chunks
    with pytest.raises(InputError, match="8x8"):
        clf.logits(torch.rand(2, 3, 16, 16))
    with pytest.raises(InputError, match="3 channels"):
        clf.logits(torch.rand(2, 1, 8, 8))
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(FileFormatError, match="valid ONNX"):
        load_classifier(tmp_path / "junk.onnx")


def test_class_count_mismatch_between_model_and_data_is_caught():
    from robust.data import ImageSet

    clf = Classifier(tiny_net(3), input_size=(3, 8, 8))
    data = ImageSet(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]), list("abcd"))
    with pytest.raises(InputError, match="3 classes"):
        clf.check_compatible(data)
    with pytest.raises(InputError, match="class_names"):
        Classifier(tiny_net(3), input_size=(3, 8, 8), class_names=["a"])
    with pytest.raises(InputError, match=r"class indices in \[0, 2\]"):
        clf.accuracy(torch.rand(2, 3, 8, 8), torch.tensor([0, 5]))


_CLF = Classifier(tiny_net(), input_size=(3, 8, 8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 3),
    c=st.sampled_from([1, 3, 4]),
    hw=st.sampled_from([4, 8]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.uint8, torch.int64]),
    scale=st.sampled_from([1.0, 255.0, -1.0]),
    poison=st.sampled_from([None, float("nan"), float("inf")]),
)
def test_adapter_input_validation_fuzz(n, c, hw, dtype, scale, poison):
    """Any batch is either accepted (and then gives finite logits) or rejected with one InputError."""
    x = torch.rand(n, c, hw, hw) * scale
    if poison is not None and n:
        x[0, 0, 0, 0] = poison
    x = x.to(dtype) if dtype.is_floating_point else x.clamp(0, 255).to(dtype)
    valid = n > 0 and c == 3 and dtype.is_floating_point and scale == 1.0 and poison is None
    if valid:
        out = _CLF.logits(x.float())
        assert out.shape == (n, 3) and bool(torch.isfinite(out).all())
    else:
        with pytest.raises(InputError) as info:
            _CLF.logits(x)
        assert str(info.value).startswith("images: expected")


def test_numpy_input_is_rejected_with_conversion_hint():
    with pytest.raises(InputError, match="torch.Tensor"):
        _CLF.logits(np.zeros((1, 3, 8, 8), dtype=np.float32))


def test_seeded_build_gives_the_same_weights_whatever_the_global_random_state():
    def weights(clf):
        return torch.cat([v.flatten().float() for v in clf.model.state_dict().values()])

    torch.manual_seed(1)
    a = build_classifier("smallcnn", 4, (3, 16, 16), width=8, seed=3)
    torch.rand(100)  # other code drawing from the global stream in between
    b = build_classifier("smallcnn", 4, (3, 16, 16), width=8, seed=3)
    c = build_classifier("smallcnn", 4, (3, 16, 16), width=8, seed=4)
    assert torch.equal(weights(a), weights(b)) and not torch.equal(weights(a), weights(c))
    state = torch.random.get_rng_state()
    build_classifier("smallcnn", 4, (3, 16, 16), width=8, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the global stream is left alone


# -- load_classifier: every spec form -------------------------------------------------------------

def _data(classes: int = 3, channels: int = 3, size: int = 8):
    from robust.data import ImageSet

    return ImageSet(torch.rand(classes, channels, size, size), torch.arange(classes), [f"c{i}" for i in range(classes)])


def _weights(clf: Classifier) -> torch.Tensor:
    return torch.cat([v.flatten().float() for v in clf.model.state_dict().values()])


def test_load_classifier_takes_classes_shape_and_names_from_the_data():
    data = _data(classes=3, channels=1, size=16)
    built = load_classifier("smallcnn", data=data, seed=0)
    assert built.num_classes == 3 and built.input_size == (1, 16, 16) and built.class_names == ["c0", "c1", "c2"]
    wrapped = load_classifier(tiny_net(3)[1:], data=_data(classes=3, channels=4), class_names=["x", "y", "z"])
    assert wrapped.input_size == (4, 8, 8) and wrapped.class_names == ["x", "y", "z"]  # explicit values win
    other = load_classifier("smallcnn", data=data, num_classes=5)
    assert other.num_classes == 5 and other.class_names == ["0", "1", "2", "3", "4"]  # the data's names do not fit


def test_load_classifier_builds_an_architecture_from_a_seed():
    first = load_classifier("smallcnn", num_classes=4, input_size=(3, 16, 16), seed=3)
    torch.rand(10)
    again = load_classifier("smallcnn", num_classes=4, input_size=(3, 16, 16), seed=3)
    assert torch.equal(_weights(first), _weights(again))
    assert torch.equal(_weights(first), _weights(build_classifier("smallcnn", 4, (3, 16, 16), seed=3)))
    assert not torch.equal(_weights(first), _weights(load_classifier("smallcnn", num_classes=4, input_size=(3, 16, 16), seed=4)))
    with pytest.raises(InputError, match="num_classes"):
        load_classifier("smallcnn")


def test_load_classifier_reads_checkpoints_by_prefix_or_either_file(tmp_path):
    clf = build_classifier("smallcnn", 3, (3, 16, 16), width=8, seed=0)
    save_classifier(clf, tmp_path / "model")
    for spec in (tmp_path / "model", str(tmp_path / "model"), tmp_path / "model.json", str(tmp_path / "model.safetensors")):
        assert load_classifier(spec).fingerprint() == clf.fingerprint()
    with pytest.raises(InputError, match="weights"):
        load_classifier(tmp_path / "model", weights=tmp_path / "model.safetensors")


def test_load_classifier_passes_classifiers_through_and_wraps_modules():
    clf = Classifier(tiny_net(), input_size=(3, 8, 8))
    assert load_classifier(clf) is clf and load_classifier(clf, device="cpu") is clf
    wrapped = load_classifier(tiny_net(2), input_size=(3, 8, 8), mean=(0.5,), std=(0.5,))
    assert wrapped.num_classes == 2 and wrapped.mean == (0.5, 0.5, 0.5)
    with pytest.raises(InputError, match="input_size"):
        load_classifier(tiny_net())
    with pytest.raises(InputError, match="weights"):
        load_classifier(tiny_net(), input_size=(3, 8, 8), weights="w.safetensors")
    with pytest.raises(InputError, match="judge"):
        load_classifier(42, argument="judge")


def test_load_classifier_imports_package_module_attribute(tmp_path, monkeypatch):
    (tmp_path / "robust_spec_models.py").write_text(
        "import torch\n"
        "from robust.models import Classifier\n"
        "def net():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))\n"
        "ready = Classifier(net(), input_size=(3, 8, 8), class_names=list('abcd'))\n"
        "text = 'not a model'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    made = load_classifier("robust_spec_models:net", data=_data(classes=4))
    assert made.num_classes == 4 and made.class_names == ["c0", "c1", "c2", "c3"]
    assert load_classifier("robust_spec_models:ready").class_names == list("abcd")
    with pytest.raises(InputError, match="oracle.*nn.Module"):
        load_classifier("robust_spec_models:text", argument="oracle")
    with pytest.raises(InputError, match="importable"):
        load_classifier("robust_spec_models:missing")
    with pytest.raises(InputError, match="importable"):
        load_classifier("no_such_package_here.models:net")
