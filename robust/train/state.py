"""The training state on disk: everything a killed run needs to continue exactly where it stopped.

A state is one safetensors file of tensors (model, EMA, optimizer moments, RNG states) and one JSON
file (step, epoch position, running sums, history, optimizer hyper-parameters, the run's
configuration). The tensors go to a fresh file named by the step; ``state.json`` is replaced last
and names that file, so it is the single commit point: a crash at any moment leaves either the old
state or the new one, never a mixture. Older tensor files are removed after the commit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from robust.errors import FileFormatError
from robust.io import atomic_path, read_json, write_json

STATE_FORMAT = "robust-train-state"
STATE_FILE = "state.json"
SUMS = ("loss", "correct", "seen")  # the running sums of an epoch


@dataclass
class TrainState:
    """Position and bookkeeping of a run (the tensors travel separately in :func:`save_state`)."""

    step: int = 0
    epoch: int = 0  # the epoch in progress (or the next one, when ``batch == 0``)
    batch: int = 0  # batches of ``epoch`` already trained
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUMS, 0.0))
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)  # {"metric", "value", "epoch"}
    ema_updates: int = 0
    epoch_seconds: float = 0.0

    def sum_values(self) -> list[float]:
        """The running sums of the epoch in progress, in the order ``loss, correct, seen``."""
        return [self.sums[k] for k in SUMS]

    def pause(self, sums: list[float], seconds: float, ema_updates: int) -> None:
        """Note the position inside an epoch (running sums, time spent, EMA updates) before a mid-epoch save."""
        self.sums = dict(zip(SUMS, sums))
        self.epoch_seconds = seconds
        self.ema_updates = ema_updates

    def close_epoch(self, record: dict[str, Any], ema_updates: int) -> None:
        """Log the finished epoch and move to the start of the next one."""
        self.history.append(record)
        self.epoch, self.batch = self.epoch + 1, 0
        self.sums = dict.fromkeys(SUMS, 0.0)
        self.epoch_seconds = 0.0
        self.ema_updates = ema_updates

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch, "sums": dict(self.sums), "history": list(self.history),
                "best": dict(self.best), "ema_updates": self.ema_updates, "epoch_seconds": self.epoch_seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(int(d["step"]), int(d["epoch"]), int(d["batch"]), {k: float(v) for k, v in d["sums"].items()},
                   list(d["history"]), dict(d["best"]), int(d.get("ema_updates", 0)), float(d.get("epoch_seconds", 0.0)))


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict as (tensors by flat name, JSON-ready rest)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def save_state(
    out: Path,
    state: TrainState,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None,
    run: dict[str, Any],
) -> Path:
    """Write the state of a run into folder ``out`` (atomically; see the module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt_tensors, opt_meta = _optimizer_split(optimizer)
    tensors.update(opt_tensors)
    tensors.update(_rng_tensors())
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    weights_name = f"state-{state.step:09d}.safetensors"
    with atomic_path(out / weights_name) as tmp:
        save_file(plain, str(tmp))
    write_json(out / STATE_FILE, {"format": STATE_FORMAT, "version": 1, "weights": weights_name, "state": state.to_dict(),
                                  "optimizer": opt_meta, "run": run})
    for old in out.glob("state-*.safetensors"):
        if old.name != weights_name:
            old.unlink(missing_ok=True)
    return out / STATE_FILE


def has_state(out: Path | None) -> bool:
    return out is not None and (Path(out) / STATE_FILE).is_file()


@dataclass
class LoadedState:
    state: TrainState
    tensors: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    run: dict[str, Any]

    def module_state(self, prefix: str) -> dict[str, torch.Tensor]:
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: torch.nn.Module | None) -> None:
        """Put weights, optimizer moments, EMA and the global RNG back as they were when saved."""
        model.load_state_dict(self.module_state("model"))
        if ema is not None:
            ema_state = self.module_state("ema")
            if not ema_state:
                raise FileFormatError("state", "an EMA in the saved state (the run was started without EMA)", "none")
            ema.load_state_dict(ema_state)
        optimizer.load_state_dict(_optimizer_join(self.tensors, self.optimizer))
        _restore_rng(self.tensors)


def load_state(out: Path) -> LoadedState:
    """Read the committed state of folder ``out``."""
    meta = read_json(Path(out) / STATE_FILE)
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise FileFormatError(Path(out) / STATE_FILE, f"a {STATE_FORMAT} file", meta.get("format") if isinstance(meta, dict) else type(meta).__name__)
    weights = Path(out) / str(meta["weights"])
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(weights, "the safetensors file state.json names", f"unreadable ({exc})") from None
    return LoadedState(TrainState.from_dict(meta["state"]), tensors, meta["optimizer"], meta["run"])
