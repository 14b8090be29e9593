"""Classifier adapters: one interface over nn.Modules, timm models, robust checkpoints and ONNX files.

A :class:`Classifier` takes float images ``[N, C, H, W]`` in ``[0, 1]``, applies the model's own
normalisation, runs the wrapped network in eval mode (restoring every sub-module's mode after),
moves inputs to the model's device, and knows its class names, input size and whether gradients
exist. Nobody normalises by hand.
"""
from __future__ import annotations

import importlib
import json
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robust.errors import FileFormatError, GradientUnavailableError, InputError
from robust.io import checkpoint_paths, fingerprint_tensors, load_checkpoint, load_state, save_checkpoint
from robust.registry import Registry
from robust.validation import check_images, check_labels

CHECKPOINT_FORMAT = "robust-classifier"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHITECTURES: Registry[Any] = Registry("architecture")


# -- small networks for 16-64 px images ---------------------------------------------------------

def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@ARCHITECTURES.register("smallcnn")
class SmallCNN(nn.Module):
    """A fast VGG-style CNN for 16-64 px images: 3 stages of two 3x3 convs, global pooling, linear head."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(in_chans, w), _conv_bn(w, w),
            _conv_bn(w, 2 * w, 2), _conv_bn(2 * w, 2 * w),
            _conv_bn(2 * w, 4 * w, 2), _conv_bn(4 * w, 4 * w),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


@ARCHITECTURES.register("preact_resnet")
class PreActResNet(nn.Module):
    """A pre-activation ResNet for small images (depth 6n+2: 8, 14, 20, ...), the CIFAR-style layout."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, depth: int = 8, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise InputError("depth", "6n+2 (8, 14, 20, ...)", depth)
        blocks = (depth - 2) // 6
        widths = [width, 2 * width, 4 * width]
        self.stem = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        layers, cin = [], width
        for stage, cout in enumerate(widths):
            for b in range(blocks):
                layers.append(_Block(cin, cout, 2 if (b == 0 and stage > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.layers(self.stem(x)))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def create_network(arch: str, num_classes: int, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """``"smallcnn"``, ``"preact_resnet"`` or ``"timm:<name>"`` -> a freshly initialised network.

    timm models are always created with ``pretrained=False``: robust never downloads weights.
    """
    if arch.startswith("timm:"):
        import timm

        name = arch[len("timm:"):]
        if name not in timm.list_models():
            raise InputError("timm architecture", "a name from timm.list_models()", name)
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    return ARCHITECTURES.get(arch)(num_classes=num_classes, in_chans=in_chans, **kwargs)


# -- the adapter ------------------------------------------------------------------------------

class Normalized(nn.Module):
    """``model((x - mean) / std)``: the network as it sees ``[0, 1]`` images (what training and export use)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32)[None, :, None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode and put every sub-module back in the mode it had."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def frozen(*modules: Any) -> Iterator[None]:
    """Parameters of ``modules`` stop requiring gradients inside the block and get their flags back after it.

    Input gradients do not need them, and autograd then neither records nor saves anything for the
    weights (about a quarter less work per attack step on a CPU) and never touches ``.grad``, which
    DistributedDataParallel's reducer watches. ``None`` entries and classifiers without gradients
    (ONNX) are skipped; a :class:`Classifier` stands for its network.
    """
    flags = []
    for m in modules:
        if isinstance(m, Classifier):
            m = m.network if m.has_gradients else None
        if isinstance(m, nn.Module):
            for p in m.parameters():
                flags.append((p, p.requires_grad))
                p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _stats(values: Sequence[float] | None, channels: int, default: float, name: str) -> tuple[float, ...]:
    if values is None:
        return (default,) * channels
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise InputError(name, f"{channels} values (one per channel)", list(values))
    return values


class Classifier:
    """The adapter every part of robust takes.

    Parameters: ``model`` expects normalised input; ``input_size`` is ``(C, H, W)``; ``mean``/``std``
    are per-channel (identity when omitted); ``num_classes`` is found by a dry run when omitted;
    ``arch``/``arch_kwargs`` let :func:`save_classifier` rebuild the network from a checkpoint.
    """

    has_gradients = True

    def __init__(
        self,
        model: nn.Module,
        *,
        input_size: Sequence[int],
        num_classes: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        batch_size: int = 256,
        name: str | None = None,
        arch: str | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise InputError("model", "a torch.nn.Module", type(model).__name__)
        if len(tuple(input_size)) != 3:
            raise InputError("input_size", "(channels, height, width)", input_size)
        self.input_size = tuple(int(s) for s in input_size)
        channels = self.input_size[0]
        self.mean = _stats(mean, channels, 0.0, "mean")
        self.std = _stats(std, channels, 1.0, "std")
        if any(s <= 0 for s in self.std):
            raise InputError("std", "positive values", list(self.std))
        self.network = Normalized(model, self.mean, self.std)
        if device is not None:
            self.network.to(device)
        self.batch_size = int(batch_size)
        self.name = name or type(model).__name__
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs or {})
        if num_classes is None:
            num_classes = self._dry_run()
        self.num_classes = int(num_classes)
        if class_names is not None and len(class_names) != self.num_classes:
            raise InputError("class_names", f"{self.num_classes} names (one per output)", len(class_names))
        self.class_names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(self.num_classes)]

    @property
    def model(self) -> nn.Module:
        """The wrapped network (expects normalised input)."""
        return self.network.model

    @property
    def device(self) -> torch.device:
        for p in self.network.parameters():
            return p.device
        for b in self.network.buffers():
            return b.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> Classifier:
        self.network.to(device)
        return self

    def _dry_run(self) -> int:
        with torch.no_grad(), eval_mode(self.network):
            out = self.network(torch.zeros(1, *self.input_size, device=self.device))
        if out.dim() != 2:
            raise InputError("model output", "logits of shape [N, num_classes]", f"shape {tuple(out.shape)}")
        return int(out.shape[1])

    def check_input(self, images: torch.Tensor, name: str = "images") -> torch.Tensor:
        return check_images(images, name, channels=self.input_size[0])

    @contextmanager
    def eval_mode(self) -> Iterator[nn.Module]:
        with eval_mode(self.network) as net:
            yield net

    def forward(self, images: torch.Tensor, *, check: bool = True) -> torch.Tensor:
        """Logits for one batch, differentiable in ``images`` (eval mode; no chunking)."""
        if check:
            self.check_input(images)
        device = self.device
        with self.eval_mode() as net:
            out = net(images.to(device))
        return out.to(images.device) if out.device != images.device else out

    __call__ = forward

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Logits for any number of images, computed in batches without gradients."""
        self.check_input(images)
        size = batch_size or self.batch_size
        with self.eval_mode() as net:
            outs = [net(images[i : i + size].to(self.device)).float().to(images.device) for i in range(0, images.shape[0], size)]
        return torch.cat(outs)

    def predict(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return self.logits(images, batch_size).argmax(1)

    def probabilities(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return self.logits(images, batch_size).softmax(1)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None) -> float:
        labels = check_labels(labels, images.shape[0], self.num_classes)
        return float((self.predict(images, batch_size).cpu() == labels.cpu()).float().mean())

    def check_compatible(self, data: Any, name: str = "data") -> None:
        """Raise :class:`InputError` if a dataset's classes or image shape do not fit this model.

        Images of another size are refused even when the network would run on them (global
        pooling): a model is measured at the size it was made for. The message says how to resize.
        """
        if data.num_classes != self.num_classes:
            raise InputError(f"{name} classes", f"{self.num_classes} classes (the model's outputs)", f"{data.num_classes} classes")
        shape = (data.channels, *data.size)
        if shape != self.input_size:
            _, height, width = self.input_size
            hint = f"; add ,size={height if height == width else f'{height}x{width}'} to the data spec to resize" if shape[1:] != self.input_size[1:] else ""
            raise InputError(f"{name} images", "shape {}x{}x{} (the model's input{})".format(*self.input_size, hint), "{}x{}x{}".format(*shape))

    @property
    def fixed_size(self) -> bool:
        """Whether the model accepts only its ``input_size`` (ONNX files with static shapes)."""
        return False

    def fingerprint(self) -> str:
        return fingerprint_tensors(*[t for _, t in sorted(self.network.state_dict().items())])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": type(self).__name__,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "has_gradients": self.has_gradients,
            "fingerprint": self.fingerprint(),
        }

    def config(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "name": self.name,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, classes={self.num_classes}, input={self.input_size})"


# -- ONNX -------------------------------------------------------------------------------------

class OnnxClassifier(Classifier):
    """An ONNX file run by onnxruntime (CPU), audited as deployed. No gradients: use score-based attacks.

    Normalisation: robust's own exports embed it (metadata ``robust.mean``/``robust.std`` of 0/1);
    for other files pass ``mean``/``std`` as the model expects.
    """

    has_gradients = False

    def __init__(self, path: str | Path, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 class_names: Sequence[str] | None = None, input_size: Sequence[int] | None = None, batch_size: int = 256):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileFormatError(self.path, "an existing .onnx file", "no such file")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # torch's thread count (--threads) bounds onnxruntime too; idle threads sleep instead of spinning,
        # which costs little on large batches and much on a shared machine.
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise FileFormatError(self.path, "a valid ONNX model", f"unreadable ({type(exc).__name__}: {exc})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise FileFormatError(self.path, "one image input and a logits output", f"{len(inputs)} inputs, {len(outputs)} outputs")
        self.input_name = inputs[0].name
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise FileFormatError(self.path, "an input of shape [N, C, H, W]", shape)
        if inputs[0].type not in ("tensor(float)",):
            raise FileFormatError(self.path, "a float32 input", inputs[0].type)
        meta = self.session.get_modelmeta().custom_metadata_map
        declared = [d if isinstance(d, int) else None for d in shape[1:]]
        if input_size is None:
            if "robust.input_size" in meta:
                input_size = json.loads(meta["robust.input_size"])
            elif all(d is not None for d in declared):
                input_size = declared
            else:
                raise InputError("input_size", "(C, H, W) for an ONNX model with dynamic spatial dimensions", shape)
        self._static = [d for d in declared]
        self._batch = shape[0] if isinstance(shape[0], int) else None
        self.input_size = tuple(int(s) for s in input_size)
        for want, got in zip(declared, self.input_size):
            if want is not None and want != got:
                raise InputError("input_size", f"the ONNX input's {shape}", list(self.input_size))
        channels = self.input_size[0]
        if mean is None and "robust.mean" in meta:
            mean = json.loads(meta["robust.mean"])
        if std is None and "robust.std" in meta:
            std = json.loads(meta["robust.std"])
        self.mean = _stats(mean, channels, 0.0, "mean")
        self.std = _stats(std, channels, 1.0, "std")
        self._mean = np.asarray(self.mean, dtype=np.float32)[None, :, None, None]
        self._std = np.asarray(self.std, dtype=np.float32)[None, :, None, None]
        self.batch_size = int(batch_size)
        self.name = self.path.name
        self.arch = None
        self.arch_kwargs = {}
        if class_names is None and "robust.class_names" in meta:
            class_names = json.loads(meta["robust.class_names"])
        dims = outputs[0].shape
        num_classes = dims[1] if len(dims) == 2 and isinstance(dims[1], int) else None
        if num_classes is None:
            num_classes = self._run(np.zeros((1, *self.input_size), dtype=np.float32)).shape[1]
        self.num_classes = int(num_classes)
        if class_names is not None and len(class_names) != self.num_classes:
            raise InputError("class_names", f"{self.num_classes} names (one per output)", len(class_names))
        self.class_names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(self.num_classes)]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def fixed_size(self) -> bool:
        return any(d is not None for d in self._static[1:])

    def to(self, device: torch.device | str) -> OnnxClassifier:
        return self

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        yield None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._batch is not None and batch.shape[0] != self._batch:
            outs = []
            for i in range(0, batch.shape[0], self._batch):
                part = batch[i : i + self._batch]
                pad = self._batch - part.shape[0]
                if pad:
                    part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), dtype=part.dtype)])
                outs.append(self.session.run(None, {self.input_name: part})[0][: self._batch - pad])
            return np.concatenate(outs)
        return self.session.run(None, {self.input_name: batch})[0]

    def check_input(self, images: torch.Tensor, name: str = "images") -> torch.Tensor:
        check_images(images, name, channels=self.input_size[0], size=self.input_size[1:] if self.fixed_size else None)
        return images

    def forward(self, images: torch.Tensor, *, check: bool = True) -> torch.Tensor:
        if images.requires_grad and torch.is_grad_enabled():
            raise GradientUnavailableError(f"{self.name} is an ONNX model without gradients: use a score-based attack such as square")
        if check:
            self.check_input(images)
        batch = (images.detach().cpu().numpy().astype(np.float32) - self._mean) / self._std
        logits = np.concatenate([self._run(batch[i : i + self.batch_size]) for i in range(0, batch.shape[0], self.batch_size)])
        return torch.from_numpy(logits).to(images.device)

    __call__ = forward

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return self.forward(images)

    def fingerprint(self) -> str:
        from robust.io import fingerprint_file

        return fingerprint_file(self.path)


# -- construction, checkpoints, export ------------------------------------------------------------

def build_classifier(
    arch: str,
    num_classes: int,
    input_size: Sequence[int] = (3, 32, 32),
    *,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
    **arch_kwargs: Any,
) -> Classifier:
    """A freshly initialised classifier of a registered or timm architecture.

    ``seed`` makes the initial weights a function of the seed alone (drawn from a private random
    stream, leaving torch's global one untouched); without it they come from torch's global stream.
    """
    if seed is not None:
        from robust.seeding import derive_seed

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(int(seed), "classifier-init", arch) % (1 << 63))
            network = create_network(arch, num_classes, int(input_size[0]), **arch_kwargs)
    else:
        network = create_network(arch, num_classes, int(input_size[0]), **arch_kwargs)
    if mean is None and std is None and arch.startswith("timm:") and input_size[0] == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return Classifier(network, input_size=input_size, num_classes=num_classes, mean=mean, std=std,
                      class_names=class_names, name=arch, arch=arch, arch_kwargs=arch_kwargs, device=device)


def save_classifier(classifier: Classifier, path: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``path.safetensors`` (weights of the wrapped network) and ``path.json`` (config), atomically."""
    if classifier.arch is None:
        raise InputError("classifier", "a classifier with a known arch (built with build_classifier or loaded)",
                         f"{classifier.name} built from an arbitrary nn.Module: export it to ONNX instead")
    config = classifier.config()
    if extra:
        config["extra"] = extra
    return save_checkpoint(path, classifier.model.state_dict(), config)


def load_checkpoint_classifier(path: str | Path, device: torch.device | str | None = None) -> Classifier:
    tensors, config = load_checkpoint(path, CHECKPOINT_FORMAT)
    try:
        network = create_network(config["arch"], int(config["num_classes"]), int(config["input_size"][0]), **config.get("arch_kwargs", {}))
    except KeyError as exc:
        raise FileFormatError(path, "a classifier config with arch, num_classes and input_size", f"missing {exc}") from None
    _check_shapes(network, tensors, config, path)
    load_state(network, tensors, path, f"weights for {config['arch']}")
    return Classifier(network, input_size=config["input_size"], num_classes=config["num_classes"], mean=config["mean"],
                      std=config["std"], class_names=config.get("class_names"), name=config.get("name") or Path(path).stem,
                      arch=config["arch"], arch_kwargs=config.get("arch_kwargs", {}), device=device)


def _check_shapes(network: nn.Module, tensors: dict[str, torch.Tensor], config: dict[str, Any], path: str | Path) -> None:
    """A checkpoint's config (``num_classes``, ``input_size``) must build the network its weights belong to.

    The error names the config's value and the one the weights imply: the output layer is the last
    mismatching tensor whose first dimension is ``num_classes``, the input layer the first whose
    second dimension is the channel count.
    """
    expected = network.state_dict()
    wrong = [(key, tuple(tensors[key].shape), tuple(expected[key].shape)) for key in expected
             if key in tensors and tensors[key].shape != expected[key].shape]
    if not wrong:
        return
    classes, channels = int(config["num_classes"]), int(config["input_size"][0])
    found = []
    inputs = next(((k, got) for k, got, want in wrong if len(want) > 1 and want[1] == channels and got[1] != channels), None)
    if inputs is not None:
        found.append(f"input_size {list(config['input_size'])} has {channels} channels, the weights take {inputs[1][1]} "
                     f"({inputs[0]} is {'x'.join(map(str, inputs[1]))})")
    heads = [(k, got) for k, got, want in reversed(wrong) if want[0] == classes and got[0] != classes]
    outputs = next((h for h in heads if len(h[1]) > 1), heads[0] if heads else None)  # a weight names the layer better than a bias
    if outputs is not None:
        found.append(f"num_classes is {classes}, the weights have {outputs[1][0]} ({outputs[0]} is {'x'.join(map(str, outputs[1]))})")
    if not found:
        key, got, want = wrong[0]
        found.append(f"{key} is {'x'.join(map(str, got))} in the weights, {'x'.join(map(str, want))} for the config")
    _, config_path = checkpoint_paths(path)
    raise FileFormatError(config_path, "num_classes and input_size that match the weights", "; ".join(found))


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from robust.io import torch_load_tensors

    state = torch_load_tensors(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FileFormatError(path, "a state dict of tensors", type(state).__name__)
    return state


_ATTRIBUTE_RE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def _import_attribute(text: str, argument: str) -> nn.Module | Classifier:
    """``package.module:attribute`` -> the nn.Module or Classifier it names (a function or class is called first)."""
    module_name, attr = text.split(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(argument, "an importable package.module:attribute", f"{text} ({exc})") from None
    if callable(obj) and not isinstance(obj, (nn.Module, Classifier)):
        obj = obj()
    if not isinstance(obj, (nn.Module, Classifier)):
        raise InputError(argument, f"{text} to be an nn.Module, a Classifier or a function returning one", type(obj).__name__)
    return obj


def _load_weights(clf: Classifier, weights: str | Path, arch: str) -> None:
    load_state(clf.model, _load_state(Path(weights)), weights, f"weights for {arch}")


def load_classifier(
    spec: Any,
    *,
    data: Any = None,
    num_classes: int | None = None,
    input_size: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    weights: str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
    argument: str = "model",
) -> Classifier:
    """Any model spec -> :class:`Classifier`; the one place a spec becomes a classifier.

    ``spec`` is one of:

    - a :class:`Classifier` (moved to ``device``);
    - an ``nn.Module`` expecting normalised input (give ``input_size``; ``num_classes`` is found by a
      dry run when omitted);
    - a robust checkpoint: ``model``, ``model.safetensors`` or ``model.json``;
    - an ``.onnx`` file (``input_size``, ``mean``/``std`` and ``class_names`` override its metadata);
    - ``"timm:<name>"`` or a registered architecture name (give ``num_classes``), built fresh: its
      initial weights follow ``seed`` (torch's global stream without one), or ``weights`` names a
      local state dict (``.safetensors`` or ``.pt``; never a download) to load;
    - ``"package.module:attribute"``: an nn.Module, a Classifier, or a function (or class) that
      returns one when called without arguments.

    ``data`` (the :class:`~robust.data.ImageSet` the model will see) supplies the defaults: its
    class count, image shape and, when the class counts agree, class names. Whether the model fits
    the data is :meth:`Classifier.check_compatible`'s job. ``argument`` names the spec in errors.
    """
    if data is not None:
        num_classes = data.num_classes if num_classes is None else num_classes
        input_size = (data.channels, *data.size) if input_size is None else input_size
        if class_names is None and num_classes == data.num_classes:
            class_names = data.class_names
    if isinstance(spec, str) and _ATTRIBUTE_RE.match(spec) and not spec.startswith("timm:") and not Path(spec).exists():
        spec = _import_attribute(spec, argument)
    text = str(spec) if isinstance(spec, (str, Path)) else None
    path = Path(text or ".")
    onnx = text is not None and path.suffix.lower() == ".onnx"
    checkpoint = text is not None and not onnx and (path.suffix in (".safetensors", ".json") or Path(text + ".json").is_file())
    building = text is not None and not (onnx or checkpoint) and (text.startswith("timm:") or text in ARCHITECTURES)
    if weights is not None and not building:
        raise InputError("weights", f"a timm:<name> or architecture-name {argument} to load them into", text or type(spec).__name__)
    if isinstance(spec, Classifier):
        return spec.to(device) if device is not None else spec
    if isinstance(spec, nn.Module):
        if input_size is None:
            raise InputError("input_size", f"(C, H, W) for the {argument}, an nn.Module", None)
        return Classifier(spec, input_size=input_size, num_classes=num_classes, mean=mean, std=std, class_names=class_names, device=device)
    if text is None:
        raise InputError(argument, "a Classifier, nn.Module, checkpoint path, .onnx file, timm:<name> or package.module:attribute",
                         type(spec).__name__)
    if onnx:
        return OnnxClassifier(path, mean=mean, std=std, class_names=class_names, input_size=input_size)
    if checkpoint:
        return load_checkpoint_classifier(path, device)
    if building:
        if num_classes is None:
            raise InputError("num_classes", f"the number of classes for {text}", None)
        clf = build_classifier(text, num_classes, input_size or (3, 32, 32), class_names=class_names, mean=mean, std=std,
                               device=device, seed=seed)
        if weights is not None:
            _load_weights(clf, weights, text)
        return clf
    if path.exists():
        raise FileFormatError(path, "a .onnx file or a robust checkpoint (.safetensors + .json)", f"a {path.suffix or 'suffix-less'} file")
    raise InputError(argument, "an existing checkpoint/.onnx path, timm:<name>, package.module:attribute or one of "
                     + ", ".join(ARCHITECTURES.names()), text)


def export_onnx(classifier: Classifier, path: str | Path, *, opset: int = 17, check: bool = True, tolerance: float = 1e-4,
                sample: torch.Tensor | None = None) -> dict[str, Any]:
    """Export with normalisation embedded and a dynamic batch, then check parity with onnxruntime.

    Returns ``{"path", "max_abs_diff"}``; raises :class:`InputError` if the logits differ by more
    than ``tolerance`` (the file is then not left behind).
    """
    import onnx

    from robust.io import atomic_path

    if not classifier.has_gradients:
        raise InputError("classifier", "a torch classifier", "an ONNX model (already exported)")
    path = Path(path)
    device = classifier.device
    example = torch.rand(2, *classifier.input_size, device=device)
    with atomic_path(path) as tmp:
        # The TorchScript exporter is deprecated in favour of torch.export, but it handles every
        # model we export, needs no extra packages and is far faster; silence its notice.
        with classifier.eval_mode() as net, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(net, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset, dynamo=False)
        model = onnx.load(str(tmp))
        meta = {
            "robust.class_names": json.dumps(classifier.class_names),
            "robust.input_size": json.dumps(list(classifier.input_size)),
            "robust.mean": json.dumps([0.0] * classifier.input_size[0]),
            "robust.std": json.dumps([1.0] * classifier.input_size[0]),
            "robust.source_fingerprint": classifier.fingerprint(),
        }
        for key, value in meta.items():
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.save(model, str(tmp))
        result: dict[str, Any] = {"path": str(path), "max_abs_diff": None}
        if check:
            probe = sample if sample is not None else torch.rand(8, *classifier.input_size, generator=torch.Generator().manual_seed(0))
            reference = classifier.logits(probe.cpu().float()).cpu()
            exported = OnnxClassifier(tmp).logits(probe.cpu().float())
            diff = float((reference - exported).abs().max())
            result["max_abs_diff"] = diff
            if not diff <= tolerance:
                raise InputError("ONNX export parity", f"max abs logit difference <= {tolerance:g}", f"{diff:.3g}")
    return result
