"""Counter-based random numbers: noise that depends only on (seed, position), never on batch layout.

Each sample carries its own integer seed, so a failing sample can be reproduced alone from its
printed parameters, and the same seed gives the same pixels on CPU and GPU (integer arithmetic).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from robust.errors import InputError

_MASK = 0xFFFFFFFF
_MUL = 0x45D9F3B  # < 2**31, so products of 32-bit values fit in int64 without overflow


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = x & _MASK
    x = ((x >> 16) ^ x) * _MUL & _MASK
    x = ((x >> 16) ^ x) * _MUL & _MASK
    return (x >> 16) ^ x


def hash_uint32(seeds: torch.Tensor, shape: tuple[int, ...], stream: int = 0) -> torch.Tensor:
    """Integers in ``[0, 2**32)`` of shape ``[N, *shape]`` determined by ``seeds[N]`` and ``stream``."""
    seeds = seeds.to(torch.int64).reshape(-1)
    count = math.prod(shape)
    index = torch.arange(count, device=seeds.device, dtype=torch.int64)
    key = _mix(_mix(seeds & _MASK) ^ _mix((seeds >> 32) ^ (stream * 0x9E3779B1 & _MASK)))
    return _mix(key[:, None] ^ _mix(index[None, :] + 0x27D4EB2F)).reshape(seeds.shape[0], *shape)


def subseeds(seeds: torch.Tensor, stream: int, count: int | None = None) -> torch.Tensor:
    """Independent 62-bit seeds derived from ``seeds[N]``: ``[N]``, or ``[N, count]`` (one stream of seeds per use)."""
    bits = hash_uint32(seeds, (2 * (count or 1),), stream)
    out = (bits[:, 0::2] << 30) ^ bits[:, 1::2]
    return out[:, 0] if count is None else out


def check_seeds(seeds: Any, n: int | None = None, name: str = "seeds") -> torch.Tensor:
    """Per-image integer seeds as an int64 tensor ``[N]`` (``n`` of them when given), else :class:`InputError`."""
    t = torch.as_tensor(seeds) if not isinstance(seeds, torch.Tensor) else seeds
    if t.dim() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool or (n is not None and t.shape[0] != n):
        count = "one integer per image" if n is None else f"{n} integers (one per image)"
        raise InputError(name, f"a tensor of {count}", f"{t.dtype} of shape {tuple(t.shape)}")
    return t.to(torch.int64)


def uniform(seeds: torch.Tensor, shape: tuple[int, ...], stream: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Uniform samples in ``(0, 1)``, shape ``[N, *shape]``, one independent stream per seed."""
    bits = hash_uint32(seeds, shape, stream) >> 8  # 24 bits: exact in float32
    return ((bits.to(dtype) + 0.5) / float(1 << 24)).to(dtype)


def normal(seeds: torch.Tensor, shape: tuple[int, ...], stream: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Standard normal samples (Box-Muller), shape ``[N, *shape]``, one independent stream per seed."""
    u1 = uniform(seeds, shape, 2 * stream + 1, torch.float32)
    u2 = uniform(seeds, shape, 2 * stream + 2, torch.float32)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)


def poisson(lam: torch.Tensor, seeds: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Poisson samples with rate ``lam[N, ...]``: exact inversion for small rates, normal approximation above 30."""
    shape = tuple(lam.shape[1:])
    u = uniform(seeds, shape, 2 * stream + 101, torch.float64).to(lam.device)
    lam64 = lam.to(torch.float64)
    small = lam64 < 30
    # Inversion by sequential search, vectorised over elements; 80 terms cover rates below 30.
    lam_s = torch.where(small, lam64, torch.zeros_like(lam64))
    p = torch.exp(-lam_s)
    cdf = p.clone()
    k = torch.zeros_like(lam64)
    for i in range(1, 80):
        below = u > cdf
        if not bool(below.any()):
            break
        k = k + below.to(k.dtype)
        p = p * lam_s / i
        cdf = cdf + p
    z = normal(seeds, shape, stream + 211, torch.float64).to(lam.device)
    approx = torch.clamp(torch.round(lam64 + torch.sqrt(lam64) * z), min=0)
    return torch.where(small, k, approx).to(lam.dtype)
