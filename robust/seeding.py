"""Seeds and devices: every random choice in robust takes a seed and goes through these helpers."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from robust.errors import InputError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` -> cuda if available else cpu; otherwise the named device, checked."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError("device", "'auto', 'cpu', 'cuda' or 'cuda:N'", device) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "a device present on this machine (no CUDA here)", str(device))
    return dev


def derive_seed(seed: int, *names: object) -> int:
    """A child seed that depends on ``seed`` and the given names (stable across runs and machines)."""
    text = ":".join([str(int(seed))] + [str(n) for n in names]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    return gen


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global generators (for code that cannot take a generator)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
