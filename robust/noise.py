"""Counter-based random numbers: noise that depends only on (seed, position), never on batch layout.

Each image carries its own integer seed, so a failing sample reproduces alone from its printed
parameters, on CPU and GPU alike (integer arithmetic). Two families: exact int64 streams per seed
(:func:`uniform`, :func:`normal`, :func:`subseeds`, ...) and fast int32 per-pixel fields keyed by
:func:`keys32` (``*32`` functions, the corruptions' noise).
"""
from __future__ import annotations

import math
from collections import OrderedDict
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
    """Per-image integer seeds as an int64 tensor ``[N]`` (``n`` of them when given), else :class:`InputError`.

    ``None`` with ``n`` given means the images' positions ``0..n-1``.
    """
    if seeds is None and n is not None:
        return torch.arange(n, dtype=torch.int64)
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


# -- int32 fields: per-pixel noise keyed by one 32-bit key per image ------------------------------
# Each image gets one 32-bit key per stream (keys32, from the int64 hash above); a per-pixel field is
# then a 32-bit hash of (key, pixel index) in int32 with wrap-around arithmetic, vectorised on CPUs
# and GPUs alike (the int64 hash is exact but several times slower, which matters for per-pixel
# noise on 224x224 images).

_M1 = 0x7FEB352D
_M2 = 0x846CA68B - (1 << 32)
_INDEX_SALT = 0x2545F491
_INDEX_CACHE: OrderedDict[tuple[int, str], torch.Tensor] = OrderedDict()
_INDEX_CACHE_SIZE = 16


def _mix32_(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (xorshift-multiply, logical shifts), in place on an int32 tensor."""
    t = torch.bitwise_right_shift(x, 16)
    x ^= t.bitwise_and_(0xFFFF)
    x *= _M1
    t = torch.bitwise_right_shift(x, 15, out=t)
    x ^= t.bitwise_and_(0x1FFFF)
    x *= _M2
    t = torch.bitwise_right_shift(x, 16, out=t)
    x ^= t.bitwise_and_(0xFFFF)
    return x


def _index_hash(count: int, device: torch.device) -> torch.Tensor:
    key = (count, str(device))
    cached = _INDEX_CACHE.get(key)
    if cached is None:
        cached = _mix32_(torch.arange(count, dtype=torch.int32, device=device) ^ _INDEX_SALT)
        _INDEX_CACHE[key] = cached
        if len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    else:
        _INDEX_CACHE.move_to_end(key)
    return cached


def keys32(seeds: torch.Tensor, stream: int) -> torch.Tensor:
    """One int32 key per image for ``stream``, derived from the image's seed by :mod:`robust.noise`."""
    k = hash_uint32(seeds, (1,), stream)[:, 0]
    return torch.where(k >= 2**31, k - 2**32, k).to(torch.int32)


def subkeys32(keys: torch.Tensor, index: int) -> torch.Tensor:
    """Independent keys for the ``index``-th random field of one corruption (mixed, not just offset)."""
    salt = (0x61C88647 * (index + 1)) & 0xFFFFFFFF
    salt = salt - (1 << 32) if salt >= 1 << 31 else salt
    return _mix32_(keys ^ salt)


def bits32(keys: torch.Tensor, count: int) -> torch.Tensor:
    """``[N, count]`` int32 hash values (32 random bits each) of ``(keys[n], index)``."""
    h = _index_hash(count, keys.device)[None, :] ^ keys[:, None]
    return _mix32_(h)


def bits32_at(keys: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The hash of :func:`bits32` at arbitrary indices ``[...]`` -> ``[N, ...]`` (no cache)."""
    h0 = _mix32_(index.to(torch.int32) ^ _INDEX_SALT)
    return _mix32_(h0.reshape(1, -1) ^ keys[:, None]).view(keys.shape[0], *index.shape)


def lattice_normal32(keys: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Standard normal values ``[N, 1, rows, cols]`` addressed by lattice coordinates, so a lattice
    point keeps its value whatever the lattice's extent (it may differ between batches)."""
    r = torch.arange(rows, device=keys.device, dtype=torch.int32)[:, None]
    c = torch.arange(cols, device=keys.device, dtype=torch.int32)[None, :]
    h = bits32_at(keys, r * 65536 + c)
    radius = torch.bitwise_right_shift(h, 16).bitwise_and_(0xFFFF).float().add_(0.5).mul_(1.0 / 65536)
    angle = h.bitwise_and_(0xFFFF).float().add_(0.5).mul_(2 * math.pi / 65536)
    return (radius.log_().mul_(-2.0).sqrt_() * torch.cos(angle)).unsqueeze(1)


def uniform32(keys: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform samples in ``(0, 1)`` (24 bits), shape ``[N, *shape]``."""
    h = bits32(keys, math.prod(shape))
    h = torch.bitwise_right_shift(h, 8).bitwise_and_(0xFFFFFF)
    return h.float().add_(0.5).mul_(1.0 / (1 << 24)).view(keys.shape[0], *shape)


def uniform_bytes32(keys: torch.Tensor, shape: tuple[int, ...], k: int) -> list[torch.Tensor]:
    """``k`` (at most 4) independent uniform fields in ``(0, 1)`` with 8 bits each, from one hash per element."""
    h = bits32(keys, math.prod(shape))
    out = []
    for j in range(k):
        b = torch.bitwise_right_shift(h, 8 * j).bitwise_and_(0xFF) if j else h & 0xFF
        out.append(b.float().add_(0.5).mul_(1.0 / 256).view(keys.shape[0], *shape))
    return out


def normal32(keys: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal samples, shape ``[N, *shape]`` (Box-Muller on 16-bit halves; both outputs used).

    16-bit uniforms bound the samples to about 4.85 standard deviations, which is immaterial for
    image noise that is clipped to ``[0, 1]`` anyway.
    """
    count = math.prod(shape)
    half = (count + 1) // 2
    h = bits32(keys, half)
    radius = torch.bitwise_right_shift(h, 16).bitwise_and_(0xFFFF).float().add_(0.5).mul_(1.0 / 65536)
    radius = radius.log_().mul_(-2.0).sqrt_()
    angle = h.bitwise_and_(0xFFFF).float().add_(0.5).mul_(2 * math.pi / 65536)
    z = torch.empty(keys.shape[0], 2 * half, device=keys.device)
    torch.cos(angle, out=z[:, :half]).mul_(radius)
    torch.sin(angle, out=z[:, half:]).mul_(radius)
    return (z[:, :count] if 2 * half != count else z).reshape(keys.shape[0], *shape)


def poisson32(lam: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Poisson counts with per-element rates ``lam [N, ...]``, by inversion of one random number per element.

    Rates below 1: the exact CDF, summed up to 7 (the tail beyond has probability < 1e-5). Above: the
    Cornish-Fisher corrected normal quantile ``lam + a z + (z^2 - 1) / 6`` of the same uniform,
    rounded, with ``a^2 = lam - 1/18 - 1/12`` so the skew term and the rounding do not inflate the
    variance; its total-variation distance to the Poisson law is below 0.025 at rate 1 and falls as
    the rate grows, with mean, variance and skewness (``1/sqrt(lam)``) matched.
    """
    z = normal32(keys, tuple(lam.shape[1:]))
    spread = (lam - (1 / 18 + 1 / 12)).clamp_min_(0).sqrt_()
    counts = (z * z).sub_(1).mul_(1 / 6).addcmul_(spread, z).add_(lam).round_().clamp_min_(0)
    # Only the elements with rates below 1 take the exact CDF: one index of them, gathered and
    # scattered back (boolean-mask indexing would search the mask three times).
    small = (lam < 1).reshape(-1).nonzero().squeeze(1)
    if small.numel():
        # The same draw as a uniform (its normal CDF), so each element still inverts one random number.
        rate, us = lam.reshape(-1).index_select(0, small), torch.special.ndtr(z.reshape(-1).index_select(0, small))
        p = torch.exp(-rate)
        cdf = p.clone()
        exact = (us > cdf).to(lam.dtype)
        for i in range(1, 7):
            p = p * rate * (1.0 / i)
            cdf += p
            exact += us > cdf
        counts = counts.contiguous()
        counts.view(-1).index_copy_(0, small, exact)
    return counts
