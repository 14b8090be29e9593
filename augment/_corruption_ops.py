"""Batched torch building blocks of the corruption suite (the functional core of ``corruptions``).

Per-image blur kernels and filtering, resampling, closed-form colour operations, a baseline JPEG
codec and procedural textures (fractal plasma, frost). Every function takes images ``[N, C, H, W]``
(float32, ``[0, 1]``) and per-image ``[N]`` parameters; randomness comes only from per-image keys
(:func:`robust.noise.keys32`), so an image's result never depends on the rest of its batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robust import noise

# ---------------------------------------------------------------------------------------------
# Padding and per-image filtering
# ---------------------------------------------------------------------------------------------

def pad(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    """Pad height by ``ph`` and width by ``pw`` on both sides; reflect falls back to replicate when too wide."""
    if ph == 0 and pw == 0:
        return x
    if mode == "reflect" and (ph >= x.shape[-2] or pw >= x.shape[-1]):
        mode = "replicate"
    return F.pad(x, (pw, pw, ph, ph), mode=mode)


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x * (1 / math.sqrt(2))))


def gaussian_kernels(sigma: torch.Tensor, truncate: float = 4.0) -> torch.Tensor:
    """1-D Gaussian kernels ``[N, 2R+1]`` integrated against the bilinear pixel footprint (a tent).

    ``k(i) = (G_sigma * tent)(i)``: for large sigma this is the sampled Gaussian (variance grows by
    1/6 px^2); for sub-pixel sigma the neighbours get a weight proportional to sigma instead of
    vanishing, so blur strength stays graded at any image size. ``sigma = 0`` gives a delta.
    """
    sigma = sigma.float().clamp_min(0)
    radius = max(1, int(math.ceil(truncate * float(sigma.max()) + 1)))
    i = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    s = sigma.clamp_min(1e-4)[:, None]

    def ramp_integral(a: torch.Tensor) -> torch.Tensor:  # integral of (a - u)_+ against N(0, s^2)
        t = a / s
        return a * _normal_cdf(t) + s * torch.exp(-0.5 * t * t) * (1 / math.sqrt(2 * math.pi))

    k = ramp_integral(i + 1) - 2 * ramp_integral(i) + ramp_integral(i - 1)
    k = k.clamp_min(0)
    return k / k.sum(1, keepdim=True)


def same_for_all(k: torch.Tensor) -> bool:
    return k.shape[0] == 1 or bool((k == k[:1]).all())


def _source_index(index: torch.Tensor, size: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Map possibly out-of-range sample positions to pixels under a border ``mode`` (and a validity mask)."""
    valid = torch.ones_like(index, dtype=torch.bool)
    if mode == "replicate":
        index = index.clamp(0, size - 1)
    elif mode == "reflect":  # whole-sample symmetric: ... c b | a b c ... (torch's "reflect")
        period = max(2 * (size - 1), 1)
        index = index.remainder(period)
        index = torch.where(index >= size, period - index, index)
    elif mode == "constant":
        valid = (index >= 0) & (index < size)
        index = index.clamp(0, size - 1)
    else:
        raise ValueError(f"unknown border mode {mode!r}")
    return index, valid


def band_matrices(kernels: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """``[N, size, size]`` matrices applying 1-D convolution kernels ``[N, K]`` (odd K) along an axis of
    ``size`` pixels, with the border ``mode`` folded in: ``out = M @ x``."""
    n, taps = kernels.shape
    r = taps // 2
    out_idx = torch.arange(size, device=kernels.device)[:, None]
    tap = torch.arange(taps, device=kernels.device)[None, :]
    src, valid = _source_index(out_idx + r - tap, size, mode)  # out[i] = sum_t k[t] x[i + r - t]
    weights = kernels[:, None, :] * valid[None].to(kernels.dtype)
    m = torch.zeros(n, size, size, device=kernels.device, dtype=kernels.dtype)
    m.scatter_add_(2, src[None].expand(n, size, taps), weights.expand(n, size, taps).contiguous())
    return m


def blur_separable(x: torch.Tensor, kernel_h: torch.Tensor, kernel_w: torch.Tensor | None = None, mode: str = "replicate") -> torch.Tensor:
    """Filter each image with its own separable kernel (``[N, K]`` per axis, odd K, centred).

    Each axis is one (batched) matrix product with a band matrix that includes the border handling,
    which costs the same for any kernel width and runs as a GEMM on CPUs and GPUs.
    """
    kernel_w = kernel_h if kernel_w is None else kernel_w
    _, _, h, w = x.shape
    shared = same_for_all(kernel_h) and same_for_all(kernel_w)
    kh = kernel_h[:1] if shared else kernel_h
    kw = kernel_w[:1] if shared else kernel_w
    mh = band_matrices(kh.to(x.dtype), h, mode)
    mw = band_matrices(kw.to(x.dtype), w, mode)
    if shared:
        return mh[0] @ x @ mw[0].T
    return mh[:, None] @ x @ mw.transpose(1, 2)[:, None]


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, mode: str = "replicate", truncate: float = 4.0) -> torch.Tensor:
    """Gaussian blur with per-image ``sigma`` (pixels); see :func:`gaussian_kernels`."""
    if float(sigma.max()) <= 0:
        return x
    return blur_separable(x, gaussian_kernels(sigma, truncate), mode=mode)


_FFT_MIN_KERNEL = 16


def convolve(x: torch.Tensor, kernels: torch.Tensor, mode: str = "replicate") -> torch.Tensor:
    """Convolve each image with its own 2-D kernel ``[N, K, K]`` (odd K, centre at ``K // 2``).

    Small kernels use a direct (grouped) convolution, large ones the FFT of the padded image.
    """
    n, c, h, w = x.shape
    size = kernels.shape[-1]
    r = size // 2
    xp = pad(x, r, r, mode)
    if size < _FFT_MIN_KERNEL:
        k = kernels.to(x.dtype).flip(-1, -2)
        y = F.conv2d(xp.reshape(1, n * c, h + 2 * r, w + 2 * r), k.repeat_interleave(c, 0)[:, None], groups=n * c)
        return y.view(n, c, h, w)
    hp, wp = h + 2 * r, w + 2 * r
    # Kernel at the top-left corner: the circular convolution is the wanted one shifted by r, so the
    # valid output sits at offset 2r (the padding of r on each side keeps wrap-around out of it).
    spectrum = torch.fft.rfft2(xp.float()) * torch.fft.rfft2(kernels.float(), s=(hp, wp))[:, None]
    y = torch.fft.irfft2(spectrum, s=(hp, wp))
    return y[..., 2 * r : 2 * r + h, 2 * r : 2 * r + w].to(x.dtype)


def _tent_offsets(steps: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel offsets in ``[-1, 1]`` and their tent weights (the bilinear footprint)."""
    a = (torch.arange(2 * steps, device=device, dtype=torch.float32) + 0.5) / steps - 1
    wt = 1 - a.abs()
    return a, wt / wt.sum()


def disk_kernels(radius: torch.Tensor, alias_sigma: torch.Tensor) -> torch.Tensor:
    """Defocus kernels ``[N, K, K]``: a disk of ``radius`` seen through the bilinear pixel footprint,
    softened by a Gaussian of ``alias_sigma`` (the published recipe's anti-aliasing blur)."""
    device = radius.device
    r_max = float(radius.max())
    half = int(math.ceil(r_max + 1 + 3 * float(alias_sigma.max())))
    grid = torch.arange(-half, half + 1, device=device, dtype=torch.float32)
    a, wt = _tent_offsets(4, device)
    # Sample the (anti-aliased) disk at pixel centre minus each footprint offset, weight by the tent.
    px = grid[:, None] - a[None, :]  # [K, S]
    dx2 = px[None, :, None, :, None] ** 2
    dy2 = px[None, None, :, None, :] ** 2
    dist = torch.sqrt(dx2 + dy2)  # [1, K, K, S, S]
    r = radius.float().view(-1, 1, 1, 1, 1)
    inside = ((r - dist) * 8 + 0.5).clamp(0, 1)
    kern = (inside * wt[None, None, None, :, None] * wt[None, None, None, None, :]).sum((-1, -2))
    kern = kern / kern.sum((1, 2), keepdim=True).clamp_min(1e-12)
    if float(alias_sigma.max()) > 0:
        kern = blur_separable(kern[:, None], gaussian_kernels(alias_sigma, truncate=3.0), mode="constant")[:, 0]
        kern = kern / kern.sum((1, 2), keepdim=True)
    return kern


def line_kernels(length: torch.Tensor, sigma: torch.Tensor, angle_deg: torch.Tensor, density: int = 4) -> torch.Tensor:
    """One-sided motion-blur kernels ``[N, K, K]``: a line from the centre along ``angle`` with weight
    ``exp(-t^2 / 2 sigma^2)`` at distance ``t`` up to ``length``, sampled ``density`` times per pixel
    and splatted bilinearly (the line seen through the bilinear pixel footprint)."""
    device = length.device
    n = length.shape[0]
    reach = int(math.ceil(float(length.max())))
    half = reach + 2
    size = 2 * half + 1
    t = torch.arange(reach * density + 1, device=device, dtype=torch.float32)[None, :] / density
    s = sigma.float().clamp_min(1e-4)[:, None]
    # The last samples fade in as ``length`` grows, so the kernel is continuous in it.
    weight = torch.exp(-0.5 * (t / s) ** 2) * ((length.float()[:, None] - t) * density + 1).clamp(0, 1)
    theta = torch.deg2rad(angle_deg.float())[:, None]
    # The kernel sits at -t*direction so that output(p) averages input(p + t*direction).
    px = half - t * torch.cos(theta)
    py = half + t * torch.sin(theta)
    kern = torch.zeros(n, size * size, device=device, dtype=torch.float32)
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        idx = ((y0 + dy).long().clamp(0, size - 1) * size + (x0 + dx).long().clamp(0, size - 1))
        kern.scatter_add_(1, idx, weight * wgt)
    kern = kern.view(n, size, size)
    return kern / kern.sum((1, 2), keepdim=True).clamp_min(1e-12)


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------

def zoom_center(x: torch.Tensor, factor: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Enlarge each image about its centre by ``factor [N]`` (>= 1 crops; bilinear), same size out."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    inv = 1.0 / factor.to(x.dtype)
    theta[:, 0, 0] = inv
    theta[:, 1, 1] = inv
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def warp(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, padding_mode: str = "reflection") -> torch.Tensor:
    """Sample each image at ``(col + dx, row + dy)`` (pixel displacements ``[N, H, W]``), bilinear."""
    n, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=x.dtype)
    xs = torch.arange(w, device=x.device, dtype=x.dtype)
    gx = (xs[None, None, :] + dx + 0.5) * (2.0 / w) - 1
    gy = (ys[None, :, None] + dy + 0.5) * (2.0 / h) - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _box_down_matrix(size: int, out: int, device: torch.device) -> torch.Tensor:
    """Box downsampling ``size -> out`` as a row-normalised ``[out, size]`` matrix: output pixel ``i``
    averages the input pixels whose centres fall in ``[i * size / out, (i + 1) * size / out)``."""
    scale = size / out
    centres = torch.arange(size, device=device, dtype=torch.float64) + 0.5
    i = torch.arange(out, device=device, dtype=torch.float64)[:, None]
    m = ((centres[None, :] >= i * scale) & (centres[None, :] < (i + 1) * scale)).to(torch.float32)
    return m / m.sum(1, keepdim=True).clamp_min(1)


def _box_up_index(size: int, out: int, device: torch.device) -> torch.Tensor:
    """Box upsampling ``out -> size``: each pixel takes the low-resolution pixel under its centre."""
    centre = (torch.arange(size, device=device, dtype=torch.float64) + 0.5) * (out / size)
    return (torch.ceil(centre) - 1).clamp(0, out - 1).long()


def pixelate(x: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Box-downsample each image to ``floor(size * ratio)`` pixels and box-upsample back."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    sizes = torch.stack([(h * ratio).floor().clamp(1, h), (w * ratio).floor().clamp(1, w)], 1).long().tolist()
    groups: dict[tuple[int, int], list[int]] = {}
    for i, hw in enumerate(sizes):
        groups.setdefault(tuple(hw), []).append(i)
    for (oh, ow), members in groups.items():
        whole = len(members) == n  # the usual case: one severity for the batch, no gather or scatter
        idx = torch.tensor(members, device=x.device)
        xs = x if whole else x[idx]
        if (oh, ow) == (h, w):
            if whole:
                return x.clone()
            out[idx] = xs
            continue
        dh = _box_down_matrix(h, oh, x.device).to(x.dtype)
        dw = _box_down_matrix(w, ow, x.device).to(x.dtype)
        small = (dh @ xs @ dw.T).index_select(2, _box_up_index(h, oh, x.device)).index_select(3, _box_up_index(w, ow, x.device))
        if whole:
            return small
        out[idx] = small
    return out


# ---------------------------------------------------------------------------------------------
# Colour
# ---------------------------------------------------------------------------------------------
LUMA = (0.299, 0.587, 0.114)


def luma(x: torch.Tensor) -> torch.Tensor:
    """Grey level ``[N, 1, H, W]``: ITU-R 601 luma for RGB, the channel mean otherwise."""
    if x.shape[1] == 3:
        return x[:, 0:1] * LUMA[0] + x[:, 1:2] * LUMA[1] + x[:, 2:3] * LUMA[2]
    return x.mean(1, keepdim=True)


def colour(rgb: tuple[float, float, float], channels: int, device: torch.device) -> torch.Tensor:
    """A colour as ``[1, C, 1, 1]``: RGB as given, its luma for other channel counts."""
    if channels == 3:
        return torch.tensor(rgb, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    grey = sum(a * b for a, b in zip(LUMA, rgb))
    return torch.full((1, channels, 1, 1), grey, device=device, dtype=torch.float32)


def add_hsv_value(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """HSV brightness: ``V <- clip(V + delta)`` with hue and saturation kept (closed form, no HSV round trip).

    With ``V = max_c x``, every channel is ``V * (1 - S * g_c(H))``, so changing V alone scales the
    pixel by ``V' / V``; black pixels (undefined hue, S = 0) become grey ``V'``.
    """
    v = x.amax(1, keepdim=True)
    new_v = (v + delta.view(-1, 1, 1, 1)).clamp(0, 1)
    scaled = x * (new_v / v.clamp_min(1e-12))
    return torch.where(v > 0, scaled, new_v.expand_as(x))


def scale_hsv_saturation(x: torch.Tensor, factor: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """HSV saturation: ``S <- clip(S * factor + offset)`` with hue and value kept (closed form).

    Channels are ``V - S * V * g_c(H)``; for grey pixels (S = 0) the hue is taken as 0 (red), the
    convention of the usual RGB-to-HSV conversion, so an offset tints them red. Images whose channel
    count is not 3 have no hue and are returned unchanged.
    """
    if x.shape[1] != 3:
        return x
    v = x.amax(1, keepdim=True)
    m = x.amin(1, keepdim=True)
    chroma = v - m
    s = torch.where(v > 0, chroma / v.clamp_min(1e-12), torch.zeros_like(v))
    new_s = (s * factor.view(-1, 1, 1, 1) + offset.view(-1, 1, 1, 1)).clamp(0, 1)
    g = torch.where(chroma > 0, (v - x) / chroma.clamp_min(1e-12), torch.tensor([0.0, 1.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1))
    return v - new_s * v * g


# ---------------------------------------------------------------------------------------------
# JPEG (baseline, 4:2:0 chroma subsampling for RGB, IJG quality scaling)
# ---------------------------------------------------------------------------------------------
_LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
_CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32


def quant_tables(quality: torch.Tensor, chroma: bool) -> torch.Tensor:
    """IJG-scaled quantisation tables ``[N, 8, 8]`` for per-image ``quality`` in ``[1, 100]``."""
    base = torch.tensor(_CHROMA_TABLE if chroma else _LUMA_TABLE, device=quality.device, dtype=torch.float64).view(1, 8, 8)
    q = quality.double().clamp(1, 100).view(-1, 1, 1)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    return torch.floor((base * scale + 50) / 100).clamp(1, 255).float()


def _dct_matrix(device: torch.device) -> torch.Tensor:
    """The orthonormal 2-D DCT-II of 8x8 blocks (JPEG's FDCT) as a 64x64 matrix on row-major blocks."""
    k = torch.arange(8, device=device, dtype=torch.float64)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5
    m[0] = m[0] / math.sqrt(2)
    return torch.kron(m, m).float()


def _jpeg_plane(plane: torch.Tensor, table: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """Quantise one component ``[N, H, W]`` (level-shifted, H and W multiples of 8) blockwise.

    ``dct`` is the 64x64 matrix of the 2-D DCT of a row-major 8x8 block, so every block of the
    batch is transformed by one matrix product.
    """
    n, h, w = plane.shape
    blocks = plane.reshape(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4).reshape(n, -1, 64)
    t = table.reshape(n, 1, 64)
    coef = torch.round((blocks @ dct.T) / t) * t
    blocks = (coef @ dct).reshape(n, h // 8, w // 8, 8, 8)
    return blocks.permute(0, 1, 3, 2, 4).reshape(n, h, w)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Encode and decode each image as a baseline JPEG of ``quality`` (float, IJG scale).

    RGB images go through full-range YCbCr with 2x2 chroma subsampling (box average down, the
    triangle "fancy" filter up, as libjpeg does by default); other channel counts are coded as
    independent greyscale planes. Values are quantised to 8 bits on the way in and out.
    """
    n, c, h, w = x.shape
    dct = _dct_matrix(x.device)
    x255 = torch.round(x.float().clamp(0, 1) * 255)
    ph, pw = (-h) % 16, (-w) % 16
    xp = F.pad(x255, (0, pw, 0, ph), mode="replicate") if ph or pw else x255
    luma_q = quant_tables(quality, chroma=False)
    if c == 3:
        r, g, b = xp[:, 0], xp[:, 1], xp[:, 2]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        cb = -0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 0.5 * r - 0.418688 * g - 0.081312 * b
        chroma_q = quant_tables(quality, chroma=True)
        y = _jpeg_plane(y - 128, luma_q, dct) + 128
        sub = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
        sub = torch.stack([_jpeg_plane(sub[:, j], chroma_q, dct) for j in range(2)], 1)
        up = F.interpolate(sub, scale_factor=2, mode="bilinear", align_corners=False)
        cb, cr = up[:, 0], up[:, 1]
        out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    else:
        out = torch.stack([_jpeg_plane(xp[:, j] - 128, luma_q, dct) + 128 for j in range(c)], 1)
    out = torch.round(out).clamp(0, 255)[..., :h, :w] / 255
    return out.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Procedural patterns
# ---------------------------------------------------------------------------------------------

def _interp_matrices(size: int, cell: torch.Tensor, lattice: int) -> torch.Tensor:
    """``[N, size, lattice]`` bilinear interpolation weights from a lattice of ``cell [N]`` pixels to
    pixel centres (coordinates clamped to the lattice, like ``grid_sample``'s border padding)."""
    pos = (torch.arange(size, device=cell.device, dtype=torch.float32) + 0.5)[None, :] / cell[:, None]
    pos = pos.clamp(0, lattice - 1)
    lo = pos.floor().clamp_max(lattice - 2).long() if lattice > 1 else pos.floor().long()
    frac = pos - lo
    m = torch.zeros(cell.shape[0], size, lattice, device=cell.device, dtype=torch.float32)
    m.scatter_add_(2, lo[..., None], (1 - frac)[..., None])
    if lattice > 1:
        m.scatter_add_(2, (lo + 1)[..., None], frac[..., None])
    return m


def value_noise(keys: torch.Tensor, height: int, width: int, cell: torch.Tensor,
                loc: torch.Tensor | None = None, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Normal values (mean ``loc [N]``, standard deviation ``scale [N]``; standard by default) on a
    lattice of ``cell [N]`` pixels, bilinearly interpolated to ``[N, 1, H, W]``.

    Lattice values are addressed by coordinates, so an image's field depends only on its key and
    cell size, not on the other images of the batch. The interpolation is separable: two (batched)
    matrix products with the interpolation weights of each axis.
    """
    cell = cell.float().clamp_min(1e-3)
    gh = int(math.ceil(height / float(cell.min()))) + 2
    gw = int(math.ceil(width / float(cell.min()))) + 2
    lattice = noise.lattice_normal32(keys, gh, gw)
    if scale is not None:  # on the lattice: interpolation weights sum to one
        lattice = lattice * scale.view(-1, 1, 1, 1)
    if loc is not None:
        lattice = lattice + loc.view(-1, 1, 1, 1)
    if same_for_all(cell):
        my, mx = _interp_matrices(height, cell[:1], gh)[0], _interp_matrices(width, cell[:1], gw)[0]
        return my @ lattice @ mx.T
    my, mx = _interp_matrices(height, cell, gh), _interp_matrices(width, cell, gw)
    return my[:, None] @ lattice @ mx.transpose(1, 2)[:, None]


def plasma(keys: torch.Tensor, height: int, width: int, map_size: float, decay: torch.Tensor) -> torch.Tensor:
    """Fractal "plasma" ``[N, 1, H, W]`` in ``[0, 1]``, the midpoint-displacement field of fog.

    The map is tiled from squares of ``map_size`` pixels. Octave ``k`` (lattice spacing
    ``map_size / 2^k``) adds uniform displacements of amplitude ``decay^(-2(k-1))`` to the bilinear
    midpoint interpolation of the coarser octaves, down to one pixel (the reference's diamond-square
    scales its random range by the current amplitude twice, hence the square); the result is
    cropped to the image and normalised to ``[0, 1]`` per image.
    """
    n = keys.shape[0]
    map_size = max(float(map_size), 1.0)
    levels = max(1, int(math.ceil(math.log2(max(map_size, 2.0)))))
    cells_h = int(math.ceil(height / map_size))
    cells_w = int(math.ceil(width / map_size))
    field = torch.zeros(n, 1, cells_h + 1, cells_w + 1, device=keys.device, dtype=torch.float32)
    decay = decay.float().view(-1, 1, 1, 1)
    for k in range(1, levels + 1):
        size = (cells_h * 2**k + 1, cells_w * 2**k + 1)
        field = F.interpolate(field, size=size, mode="bilinear", align_corners=True)
        displacement = noise.uniform32(noise.subkeys32(keys, 100 + k), (1, *size)) * 2 - 1
        field = field + displacement * decay.pow(-2.0 * (k - 1))
    out_size = (max(height, int(round(cells_h * map_size))), max(width, int(round(cells_w * map_size))))
    field = F.interpolate(field, size=out_size, mode="bilinear", align_corners=True)[..., :height, :width]
    lo = field.amin((2, 3), keepdim=True)
    hi = field.amax((2, 3), keepdim=True)
    return (field - lo) / (hi - lo).clamp_min(1e-12)


def frost_texture(keys: torch.Tensor, channels: int, height: int, width: int, scale: float) -> torch.Tensor:
    """Procedural frost ``[N, C, H, W]`` in ``[0, 1]``: icy veins over a cloudy layer, blue-white.

    Built to match the statistics of the photographs the published recipe crops from (mean grey
    0.45-0.8, standard deviation about 0.1-0.17, strong pixel-scale detail, blue > green > red): a
    ridged fractal (bright thin veins where a mid-scale fractal crosses its middle value) over a rough
    fractal cloud and fine grain. ``scale`` is image pixels per reference (224-pixel) pixel.
    """
    n = keys.shape[0]
    dev = keys.device
    cloud = plasma(noise.subkeys32(keys, 1), height, width, 256 * scale, torch.full((n,), 1.35, device=dev))
    veins_base = plasma(noise.subkeys32(keys, 2), height, width, 64 * scale, torch.full((n,), 1.6, device=dev))
    veins = (1 - (2 * veins_base - 1).abs()).pow(6)
    fine = plasma(noise.subkeys32(keys, 3), height, width, 16 * scale, torch.full((n,), 1.2, device=dev))
    params = noise.uniform32(noise.subkeys32(keys, 4), (2,))
    level = 0.45 + 0.3 * params[:, 0].view(-1, 1, 1, 1)
    tint_strength = params[:, 1].view(-1, 1, 1, 1)
    grey = level + 0.22 * (cloud - 0.5) + 0.35 * (veins - veins.mean((2, 3), keepdim=True)) + 0.12 * (fine - 0.5)
    if channels == 3:
        tint = torch.tensor([-0.22, -0.04, 0.08], device=dev).view(1, 3, 1, 1)
        out = grey * (1 + tint_strength * tint)
    else:
        out = grey.expand(n, channels, height, width)
    return out.clamp(0, 1)
