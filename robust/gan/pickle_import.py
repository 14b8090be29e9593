"""Safe import of NVIDIA's StyleGAN2-ADA / StyleGAN3-era network pickles onto our networks.

Those ``.pkl`` files are a dict (``G``, ``D``, ``G_ema``, ``augment_pipe``, ``training_set_kwargs``)
whose networks are "persistent objects": each is reduced to a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` where ``meta`` carries the *source
code* of the module that defined the class, the class name, and the instance state (parameters,
buffers, child modules and the constructor's ``_init_args``/``_init_kwargs``). Loading them with
``pickle`` would execute that source. Here a restricted unpickler resolves only an allow-list of
callables needed for tensors and containers; the persistent-object reconstructor is mapped to
:class:`PersistentStub`, which keeps the class name and state and never looks at the source beyond
a fingerprint; every other global is rejected with :class:`UnsafePickleError` before anything is
called. The stubs' parameters are then copied by name into our :class:`~robust.gan.Generator` /
:class:`~robust.gan.Discriminator`, built from the stored constructor arguments.
"""
from __future__ import annotations

import _compat_pickle
import hashlib
import io
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robust.errors import FileFormatError, InputError
from robust.gan.networks import Discriminator, Generator, make_filter


class UnsafePickleError(FileFormatError):
    """A pickle asked for something outside the allow-list (it was not called)."""


class PersistentStub:
    """What ``_reconstruct_persistent_obj(meta)`` leaves behind here: class name and state, never the code."""

    def __init__(self, meta: Any):
        if not isinstance(meta, Mapping):
            raise UnsafePickleError("<pickle>", "persistent-object metadata (a dict)", type(meta).__name__)
        if meta.get("type") != "class":
            raise UnsafePickleError("<pickle>", "persistent objects of type 'class'", meta.get("type"))
        self.class_name = str(meta.get("class_name"))
        self.version = meta.get("version")
        source = meta.get("module_src")
        source_bytes = source.encode("utf-8", "replace") if isinstance(source, str) else b""
        self.source_sha256 = hashlib.sha256(source_bytes).hexdigest()
        self.source_chars = len(source) if isinstance(source, str) else 0
        state = meta.get("state")
        self.state: dict[str, Any] = dict(state) if isinstance(state, Mapping) else {}

    @property
    def init_args(self) -> tuple[Any, ...]:
        return tuple(self.state.get("_init_args", ()))

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return _plain(self.state.get("_init_kwargs", {}))

    def children(self) -> dict[str, Any]:
        return dict(self.state.get("_modules", {}) or {})

    def __repr__(self) -> str:
        return f"PersistentStub({self.class_name}, source sha256 {self.source_sha256[:12]})"


class ForeignModuleStub:
    """A plain ``torch.nn`` module inside a pickle: only its state is kept (the class is never imported)."""

    class_name = "Module"

    def __setstate__(self, state: Any) -> None:
        self.state = dict(state) if isinstance(state, Mapping) else {}

    def children(self) -> dict[str, Any]:
        return dict(self.state.get("_modules", {}) or {})


class EasyDictStub(dict):
    """``dnnlib.util.EasyDict`` (a dict with attribute access) read as a plain dict."""


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any, requires_grad: bool = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError("<pickle>", "a tensor storage", type(storage).__name__)
    t = torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))
    return t


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool = True, backward_hooks: Any = None, *state: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError("<pickle>", "parameter data (a tensor)", type(data).__name__)
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _load_storage_bytes(data: bytes) -> Any:
    """Storages pickled with plain ``pickle`` are nested ``torch.save`` files: read them weights-only."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("<pickle>", "serialized storage bytes", type(data).__name__)
    try:
        return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False, which must never be followed for a downloaded file.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"a reference to {found.group(1)}" if found else "objects other than tensors"
        raise UnsafePickleError("<pickle>", "tensor storages only (read weights-only)", f"a storage holding {what}, refused") from None


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as latin-1 text.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError("<pickle>", "_codecs.encode(str, 'latin1') for bytes", f"encoding {encoding!r}")
    return text.encode("latin-1")


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("<pickle>", "a numeric NumPy scalar", repr(dtype))
    return np.frombuffer(bytes(data), dtype=dtype)[0] if data is not None else dtype.type()


def _numpy_dtype(name: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(name)
    if dtype.hasobject:
        raise UnsafePickleError("<pickle>", "a numeric NumPy dtype", repr(dtype))
    return dtype


ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch", "Size"): torch.Size,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentStub,
    ("dnnlib.util", "EasyDict"): EasyDictStub,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED` names (plus torch dtypes and plain torch.nn module stubs)."""

    def __init__(self, file: Any, source: str = "<pickle>"):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 0-2 pickles name Python 2 modules (__builtin__, copy_reg): translate as pickle itself does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key in ALLOWED:
            return ALLOWED[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.nn.modules.") and name.isidentifier() and name[:1].isupper():
            return type(name, (ForeignModuleStub,), {"class_name": name, "__module__": __name__})
        raise UnsafePickleError(self.source, "only tensors, containers and StyleGAN persistent objects (allow-list)",
                                f"a reference to {module}.{name}, refused without calling it")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self.source, "a plain pickle (no persistent ids)", f"persistent id {str(pid)[:60]}")


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (raises :class:`UnsafePickleError` on anything else)."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(path, "an existing .pkl file", "no such file")
    with open(path, "rb") as fh:
        if fh.read(4) == b"PK\x03\x04":
            raise FileFormatError(path, "a StyleGAN2-ADA network pickle (.pkl)",
                                  "a zip archive (a torch.save file?): export its weights to .safetensors instead")
        fh.seek(0)
        try:
            return RestrictedUnpickler(fh, str(path)).load()
        except UnsafePickleError as exc:
            # Rebuild helpers do not know the file; name it here.
            raise UnsafePickleError(path, exc.expected, exc.got) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
            raise FileFormatError(path, "a StyleGAN2-ADA network pickle", f"unreadable ({type(exc).__name__}: {exc})") from None


# -- mapping stubs onto our networks --------------------------------------------------------------

def _plain(value: Any) -> Any:
    """EasyDicts, OrderedDicts and NumPy scalars -> plain Python values (for constructor arguments and JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def stub_tensors(stub: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every parameter and buffer of a stub tree, by dotted name (as ``state_dict`` would name them)."""
    out: dict[str, torch.Tensor] = {}
    state = getattr(stub, "state", None)
    if not isinstance(state, Mapping):
        raise FileFormatError("<pickle>", "network modules with state", type(stub).__name__)
    for kind in ("_parameters", "_buffers"):
        for name, value in (state.get(kind) or {}).items():
            if value is not None:
                out[prefix + name] = value.detach() if isinstance(value, torch.Tensor) else value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(stub_tensors(child, f"{prefix}{name}."))
    return out


_G_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_D_POSITIONAL = ("c_dim", "img_resolution", "img_channels")
_IGNORED_SYNTHESIS = {"channels_last", "fp16_channels_last", "fused_modconv_default"}
_IGNORED_D = {"channels_last", "fp16_channels_last"}


def _kwargs(stub: PersistentStub, positional: tuple[str, ...]) -> dict[str, Any]:
    kwargs = dict(zip(positional, _plain(list(stub.init_args))))
    kwargs.update(stub.init_kwargs)
    return kwargs


def _check_filter(kwargs: dict[str, Any], where: str) -> None:
    taps = kwargs.pop("resample_filter", None)
    if taps is not None and [float(t) for t in taps] != [1.0, 3.0, 3.0, 1.0]:
        raise InputError(where, "the [1, 3, 3, 1] resampling filter", taps)


def generator_from_stub(stub: Any, source: Any = "<pickle>") -> Generator:
    """Build our :class:`Generator` from a ``Generator`` stub and copy its weights by name."""
    if not isinstance(stub, PersistentStub) or stub.class_name != "Generator":
        raise FileFormatError(source, "a StyleGAN2 Generator", repr(stub))
    synthesis = stub.children().get("synthesis")
    if not isinstance(synthesis, PersistentStub) or "b4" not in synthesis.children():
        kind = getattr(synthesis, "class_name", type(synthesis).__name__)
        raise FileFormatError(source, "a StyleGAN2 synthesis network (blocks b4, b8, ...)",
                              f"{kind} without b4 (StyleGAN3 'alias-free' generators are not supported)")
    kwargs = _kwargs(stub, _G_POSITIONAL)
    mapping_kwargs = dict(kwargs.pop("mapping_kwargs", {}) or {})
    synthesis_kwargs = dict(kwargs.pop("synthesis_kwargs", {}) or {})
    # Older pickles pass synthesis options flat (Generator(**synthesis_kwargs)).
    for key in ("channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture", "resample_filter", "use_noise",
                *_IGNORED_SYNTHESIS):
        if key in kwargs:
            synthesis_kwargs[key] = kwargs.pop(key)
    architecture = synthesis_kwargs.pop("architecture", "skip")
    if architecture != "skip":
        raise FileFormatError(source, "a generator with the skip architecture", f"architecture {architecture!r}")
    if synthesis_kwargs.pop("use_noise", True) is not True:
        raise FileFormatError(source, "a generator with noise inputs", "use_noise=False")
    _check_filter(synthesis_kwargs, "synthesis resample_filter")
    for key in _IGNORED_SYNTHESIS:
        synthesis_kwargs.pop(key, None)
    unknown = set(kwargs) - set(_G_POSITIONAL)
    if unknown:
        raise FileFormatError(source, "Generator arguments " + ", ".join(_G_POSITIONAL), f"also {sorted(unknown)}")
    try:
        G = Generator(**{k: int(kwargs[k]) for k in _G_POSITIONAL}, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)
    except (KeyError, TypeError) as exc:
        raise FileFormatError(source, "Generator constructor arguments we support", f"{type(exc).__name__}: {exc}") from None
    _copy_by_name(G, stub_tensors(stub), source)
    return G.eval().requires_grad_(False)


def discriminator_from_stub(stub: Any, source: Any = "<pickle>") -> Discriminator:
    """Build our :class:`Discriminator` from a ``Discriminator`` stub and copy its weights by name."""
    if not isinstance(stub, PersistentStub) or stub.class_name != "Discriminator":
        raise FileFormatError(source, "a StyleGAN2 Discriminator", repr(stub))
    kwargs = _kwargs(stub, _D_POSITIONAL)
    for key in _IGNORED_D:
        kwargs.pop(key, None)
    block_kwargs = dict(kwargs.pop("block_kwargs", {}) or {})
    for key in _IGNORED_D:
        block_kwargs.pop(key, None)
    _check_filter(block_kwargs, "discriminator resample_filter")
    kwargs["block_kwargs"] = block_kwargs
    try:
        D = Discriminator(**kwargs)
    except (TypeError, InputError) as exc:
        raise FileFormatError(source, "Discriminator constructor arguments we support", f"{type(exc).__name__}: {exc}") from None
    _copy_by_name(D, stub_tensors(stub), source)
    return D.eval().requires_grad_(False)


def _copy_by_name(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Any) -> None:
    own = module.state_dict()
    # Resampling filters are fixed buffers (always [1, 3, 3, 1]); they are checked, not copied.
    filt = make_filter()
    for name in [n for n in tensors if n.endswith("resample_filter")]:
        value = tensors.pop(name)
        if tuple(value.shape) != tuple(filt.shape) or not torch.allclose(value.float(), filt, atol=1e-6):
            raise FileFormatError(source, "[1, 3, 3, 1] resampling filters", f"{name} = {value.flatten()[:4].tolist()}...")
    wanted = {n for n in own if not n.endswith("resample_filter")}
    missing, unexpected = sorted(wanted - set(tensors)), sorted(set(tensors) - wanted)
    if missing or unexpected:
        raise FileFormatError(source, f"parameters matching our {type(module).__name__}", f"missing {missing[:6]}, unexpected {unexpected[:6]}")
    with torch.no_grad():
        for name in wanted:
            value = tensors[name]
            if tuple(value.shape) != tuple(own[name].shape):
                raise FileFormatError(source, f"{name} of shape {tuple(own[name].shape)}", tuple(value.shape))
            own[name].copy_(value.to(own[name].dtype))


@dataclass
class OfficialCheckpoint:
    """An imported official pickle: networks rebuilt as ours, plus the plain metadata."""

    G_ema: Generator
    G: Generator | None = None
    D: Discriminator | None = None
    training_set_kwargs: dict[str, Any] = field(default_factory=dict)
    source_fingerprints: dict[str, str] = field(default_factory=dict)


def load_official(path: str | Path, *, networks: tuple[str, ...] = ("G_ema", "G", "D")) -> OfficialCheckpoint:
    """Read an official StyleGAN2-ADA pickle without executing its code; rebuild ``G_ema`` (and ``G``, ``D``)."""
    data = safe_load_pickle(path)
    if not isinstance(data, Mapping) or "G_ema" not in data:
        raise FileFormatError(path, "a dict with G_ema (an official StyleGAN2-ADA network pickle)",
                              sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__)
    G_ema = generator_from_stub(data["G_ema"], path)
    G = generator_from_stub(data["G"], path) if "G" in networks and data.get("G") is not None else None
    D = discriminator_from_stub(data["D"], path) if "D" in networks and data.get("D") is not None else None
    fingerprints = {k: v.source_sha256 for k, v in data.items() if isinstance(v, PersistentStub)}
    extra = {"source": str(path), "imported_from": "official StyleGAN2-ADA pickle", "source_sha256": fingerprints}
    for net in (G_ema, G):
        if net is not None:
            net.extra = dict(extra)
    return OfficialCheckpoint(G_ema, G, D, _plain(data.get("training_set_kwargs") or {}), fingerprints)
