"""StyleGAN2 networks written from the StyleGAN2 and StyleGAN2-ADA papers: mapping, synthesis, discriminator.

Layer and parameter names follow the published checkpoints (``mapping.fc{i}``, ``synthesis.b{res}
.conv{0,1}.affine``, ``torgb``, ``noise_const``, ``w_avg``, ...) so official weights map onto these
modules by name (:mod:`robust.gan.pickle_import`). Every weight is stored with unit variance and
scaled at run time ("equalised learning rate"); convolutions of the synthesis network are modulated
by a per-sample style and demodulated; resampling uses the separable FIR filter ``[1, 3, 3, 1]``.

Images come out in ``[-1, 1]`` (the network's native range); :meth:`Generator.to_unit` maps them to
the project's ``[0, 1]``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robust.errors import InputError
from robust.gan.conditioning import Conditioning

SQRT2 = math.sqrt(2.0)
FIR = (1.0, 3.0, 3.0, 1.0)


# -- functional core ------------------------------------------------------------------------------

def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def make_filter(taps: Sequence[float] = FIR) -> torch.Tensor:
    """The separable 2-D filter (outer product of ``taps``), normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def _depthwise(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int, int, int], stride: int = 1) -> torch.Tensor:
    c = x.shape[1]
    x = F.pad(x, pad)
    weight = f.to(x.dtype)[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, weight, stride=stride, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """Upsample by 2: zero insertion, then the FIR filter with gain 4 (pixel centres stay aligned).

    ``margin`` extends the output by that many pixels on every side (what a following unpadded
    convolution needs to equal filtering after a transposed convolution exactly, borders included).
    """
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, h, 2, w, 2)
    up[:, :, :, 0, :, 0] = x
    up = up.reshape(n, c, 2 * h, 2 * w)
    # The filter is symmetric, so correlation equals convolution; padding (2, 1) centres 4 taps.
    fw = f.shape[-1]
    p0, p1 = (fw + 1) // 2 + margin, (fw - 2) // 2 + margin
    return _depthwise(up, f * 4.0, (p0, p1, p0, p1))


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Downsample by 2: the FIR filter, then every second pixel."""
    p = (f.shape[-1] - 2) // 2
    return _depthwise(x, f, (p, p, p, p), stride=2)


def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", clamp: float | None = None) -> torch.Tensor:
    """Add a per-channel bias, apply ``lrelu`` (slope 0.2, gain sqrt 2) or ``linear``, clamp if asked."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2) * SQRT2
    elif act != "linear":
        raise InputError("activation", "lrelu or linear", act)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    up: bool = False,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """Convolve ``x [N, I, H, W]`` with ``weight [O, I, k, k]`` scaled per sample by ``styles [N, I]``.

    With ``demodulate`` each output channel of each sample's scaled weight is renormalised to unit
    L2 norm (StyleGAN2's replacement for instance normalisation). ``fused`` runs one grouped
    convolution with per-sample weights; otherwise inputs are scaled, convolved with the shared
    weight and outputs rescaled (the same maths, usually faster for training).
    """
    n = x.shape[0]
    out_c, in_c, kh, kw = weight.shape
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    if demodulate and x.dtype == torch.float16:
        # Keep fp16 sums in range; demodulation cancels these scales exactly.
        weight = weight * (1.0 / math.sqrt(in_c * kh * kw) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.abs().amax(dim=1, keepdim=True)
    dcoefs = None
    if demodulate:
        # sum_{i,k} (w_oik s_i)^2 = sum_i s_i^2 sum_k w_oik^2
        dcoefs = (styles.float().square() @ weight.float().square().sum(dim=[2, 3]).t() + 1e-8).rsqrt().to(x.dtype)  # [N, O]
    if up:
        # The up-sampling layer is a transposed convolution followed by the FIR filter (StyleGAN2): the
        # same as a true convolution (flipped kernel) of the up-sampled input with a wide margin.
        x = upsample2d(x, resample_filter, margin=padding)
        weight = weight.flip([2, 3])
        padding = 0
    if fused:
        w = weight[None] * styles[:, None, :, None, None]
        if dcoefs is not None:
            w = w * dcoefs[:, :, None, None, None]
        h, wd = x.shape[-2:]
        x = F.conv2d(x.reshape(1, n * in_c, h, wd), w.reshape(n * out_c, in_c, kh, kw), padding=padding, groups=n)
        x = x.reshape(n, out_c, *x.shape[-2:])
    else:
        x = F.conv2d(x * styles[:, :, None, None], weight, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs[:, :, None, None]
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


# -- layers ---------------------------------------------------------------------------------------

class FullyConnectedLayer(nn.Module):
    """A linear layer with equalised learning rate: weights ~ N(0, 1/lr_mul^2), scaled by lr_mul / sqrt(fan_in)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return torch.addmm(b[None], x, w.t())
        return bias_act(x @ w.t(), b, self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class Conv2dLayer(nn.Module):
    """A convolution with equalised learning rate, optional FIR down-sampling by 2, bias, activation, clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True, activation: str = "linear",
                 down: bool = False, conv_clamp: float | None = None, gain: float = 1.0):
        super().__init__()
        self.activation, self.down, self.conv_clamp, self.gain = activation, down, conv_clamp, gain
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        if down:
            self.register_buffer("resample_filter", make_filter())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * (self.weight_gain * self.gain)
        if self.down:
            k = w.shape[-1]
            if k == 1:
                x = F.conv2d(downsample2d(x, self.resample_filter), w)
            else:
                # Blur with (taps + k - 3) padding, then a strided valid convolution: centres land on 2i + 1/2.
                p = (self.resample_filter.shape[-1] - 2 + k - 1) // 2
                x = F.conv2d(_depthwise(x, self.resample_filter, (p, p, p, p)), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        b = self.bias * self.gain if self.bias is not None else None
        clamp = self.conv_clamp * self.gain if self.conv_clamp is not None else None
        return bias_act(x, b, self.activation, clamp)


TRUNCATION_CENTERS = ("mean", "condition")
CENTER_SAMPLES = 64  # z per conditioning row for the "condition" truncation centre
CENTER_SEED = 20_211_129


class MappingNetwork(nn.Module):
    """z (and c) -> w: normalised inputs, ``num_layers`` lrelu FC layers at a reduced learning rate, ``w_avg`` tracked."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None, lr_multiplier: float = 0.01,
                 w_avg_beta: float | None = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        self.conditioning: Conditioning | None = None  # set by the Generator so token dicts are accepted
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor | None, c: Any = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False, truncation_center: str = "mean") -> torch.Tensor:
        """``z [N, z_dim]`` and ``c`` (a ``[N, c_dim]`` tensor or, with ``conditioning``, a token dict) -> ws.

        Truncation pulls the first ``truncation_cutoff`` layers toward a centre by ``truncation_psi``:
        ``truncation_center="mean"`` is the tracked ``w_avg``; ``"condition"`` is the mean w of each
        sample's own conditioning (estimated from ``CENTER_SAMPLES`` fixed z), so a class-conditional
        sample is pulled toward its class rather than toward the average of all classes.
        """
        if truncation_center not in TRUNCATION_CENTERS:
            raise InputError("truncation_center", " or ".join(map(repr, TRUNCATION_CENTERS)), truncation_center)
        if truncation_center == "condition" and truncation_psi != 1 and self.c_dim == 0:
            raise InputError("truncation_center", "'mean' for an unconditional generator", "'condition'")
        x = self._map(z, c)
        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            center = self.w_avg if truncation_center == "mean" else self.condition_centers(self._check_c(c, x.shape[0]))[:, None]
            x = torch.cat([center.lerp(x[:, :cutoff], truncation_psi), x[:, cutoff:]], dim=1)
        return x

    @torch.no_grad()
    def condition_centers(self, c: torch.Tensor) -> torch.Tensor:
        """The mean w ``[N, w_dim]`` of each row's conditioning ``c [N, c_dim]``, over ``CENTER_SAMPLES`` fixed z.

        The z are drawn from a fixed seed, so the centres are a deterministic function of the
        weights; each distinct conditioning row of the batch is mapped once.
        """
        rows, inverse = torch.unique(c, dim=0, return_inverse=True)
        z = torch.randn(CENTER_SAMPLES, self.z_dim, generator=torch.Generator().manual_seed(CENTER_SEED)).to(c.device)
        centers = []
        for i in range(0, rows.shape[0], 64):
            part = rows[i: i + 64]
            w = self._map(z.repeat(part.shape[0], 1), part.repeat_interleave(CENTER_SAMPLES, 0))
            centers.append(w.view(part.shape[0], CENTER_SAMPLES, -1).mean(1))
        return torch.cat(centers)[inverse]

    def _map(self, z: torch.Tensor | None, c: Any) -> torch.Tensor:
        """The mapping itself: normalised z (and embedded c) through the FC layers -> w ``[N, w_dim]``."""
        parts = []
        n = None
        if self.z_dim > 0:
            if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.z_dim:
                got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
                raise InputError("z", f"a tensor of shape [N, {self.z_dim}]", got)
            n = z.shape[0]
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim > 0:
            c = self._check_c(c, n)
            parts.append(normalize_2nd_moment(self.embed(c)))
        elif c is not None and not (isinstance(c, torch.Tensor) and c.numel() == 0):
            raise InputError("c", "None (this network is unconditional)", type(c).__name__)
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x

    def _check_c(self, c: Any, n: int | None) -> torch.Tensor:
        conditioning = getattr(self, "conditioning", None)
        if isinstance(c, Mapping) and conditioning is not None:
            c = conditioning.encode(c)
        if not isinstance(c, torch.Tensor) or c.dim() != 2 or c.shape[1] != self.c_dim or (n is not None and c.shape[0] != n):
            got = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
            rows = "N" if n is None else str(n)
            raise InputError("c", f"a tensor of shape [{rows}, {self.c_dim}] (or a token dict of the generator's conditioning)", got)
        return c.to(self.fc0.weight.device, torch.float32)


class SynthesisLayer(nn.Module):
    """A modulated 3x3 convolution (optionally up-sampling by 2), per-pixel noise, bias, lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: bool = False, use_noise: bool = True, activation: str = "lrelu", conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up, self.use_noise, self.activation, self.conv_clamp = resolution, up, use_noise, activation, conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if up:
            self.register_buffer("resample_filter", make_filter())
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            shape = (x.shape[0], 1, self.resolution, self.resolution)
            noise = torch.randn(shape, device=x.device, generator=generator) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter if self.up else None, noise=noise, fused=fused)
        return bias_act(x, self.bias, self.activation, self.conv_clamp)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, res={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """A modulated 1x1 convolution to image channels (no demodulation)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = False) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, "linear", self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (constant input at 4x4 |) up-sampling conv0, conv1, ToRGB added to the up-sampled image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, use_fp16: bool = False, conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.resolution, self.is_last, self.use_fp16 = in_channels, resolution, is_last, use_fp16
        self.num_conv, self.num_torgb = 0, 1
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", make_filter())

    def dtype_for(self, device: torch.device) -> torch.dtype:
        return torch.float16 if self.use_fp16 and device.type == "cuda" else torch.float32

    def forward_features(self, x: torch.Tensor | None, ws: torch.Tensor, noise_mode: str, fused: bool,
                         generator: torch.Generator | None) -> torch.Tensor:
        """The block's feature map (the input of its ToRGB and of the next block)."""
        dtype = self.dtype_for(ws.device)
        if self.in_channels == 0:
            x = self.const.to(dtype)[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, fused, generator)
        else:
            x = self.conv0(x.to(dtype), ws[:, 0], noise_mode, fused, generator)
            x = self.conv1(x, ws[:, 1], noise_mode, fused, generator)
        return x

    def forward_rgb(self, x: torch.Tensor, img: torch.Tensor | None, w: torch.Tensor, fused: bool) -> torch.Tensor:
        y = self.torgb(x, w, fused).float()
        return y if img is None else upsample2d(img, self.resample_filter) + y


def block_resolutions(img_resolution: int) -> list[int]:
    log2 = int(round(math.log2(img_resolution)))
    if img_resolution < 4 or 2 ** log2 != img_resolution:
        raise InputError("img_resolution", "a power of two >= 4", img_resolution)
    return [2 ** i for i in range(2, log2 + 1)]


def channels_per_resolution(resolutions: Iterable[int], channel_base: int, channel_max: int) -> dict[int, int]:
    """``min(channel_base // res, channel_max)`` channels at each resolution."""
    return {res: min(channel_base // res, channel_max) for res in resolutions}


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, C, R, R] in about [-1, 1], skip architecture.

    Block ``b{res}`` reads ``num_conv`` ws for its convolutions and shares its ToRGB w with the
    next block's first convolution, so ``num_ws = 2 log2(R) - 2``.
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768, channel_max: int = 512,
                 num_fp16_res: int = 0, conv_clamp: float | None = None):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = block_resolutions(img_resolution)
        self.channels = channels_per_resolution(self.block_resolutions, channel_base, channel_max)
        fp16_resolution = max(2 ** (int(math.log2(img_resolution)) + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = self.channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, self.channels[res], w_dim, res, img_channels, is_last=res == img_resolution,
                                   use_fp16=num_fp16_res > 0 and res >= fp16_resolution, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            if block.is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def blocks(self) -> list[tuple[int, SynthesisBlock]]:
        return [(res, getattr(self, f"b{res}")) for res in self.block_resolutions]

    def ws_index(self) -> dict[int, int]:
        """The index into ws of each block's first w."""
        out, idx = {}, 0
        for res, block in self.blocks():
            out[res] = idx
            idx += block.num_conv
        return out

    def feature_shape(self, res: int) -> tuple[int, int, int]:
        """``(channels, res, res)`` of the feature map that ``features``/``return_features`` refer to."""
        if res not in self.channels:
            raise InputError("feature resolution", "one of " + ", ".join(map(str, self.block_resolutions)), res)
        return (self.channels[res], res, res)

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        features: Mapping[int, torch.Tensor] | None = None,
        return_features: Sequence[int] | None = None,
        *,
        fused: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Images from ws; ``features={res: map}`` replaces a block's feature map (the "expanded" code).

        ``return_features=[res, ...]`` also returns ``{res: feature map}``. ``noise_mode`` is
        ``const`` (the stored noise: deterministic), ``random`` (fresh noise from ``generator``) or
        ``none``. ``fused`` picks the grouped-convolution form (default: inference on a GPU).
        """
        if noise_mode not in ("const", "random", "none"):
            raise InputError("noise_mode", "const, random or none", noise_mode)
        if not isinstance(ws, torch.Tensor) or ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            got = tuple(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
            raise InputError("ws", f"a tensor of shape [N, {self.num_ws}, {self.w_dim}]", got)
        features = dict(features or {})
        for res, feat in features.items():
            want = self.feature_shape(int(res))
            if not isinstance(feat, torch.Tensor) or feat.dim() != 4 or tuple(feat.shape[1:]) != want or feat.shape[0] != ws.shape[0]:
                got = tuple(feat.shape) if isinstance(feat, torch.Tensor) else type(feat).__name__
                raise InputError(f"features[{res}]", f"a tensor of shape [{ws.shape[0]}, {want[0]}, {want[1]}, {want[2]}]", got)
        wanted = [int(r) for r in (return_features or [])]
        for res in wanted:
            self.feature_shape(res)
        if fused is None:
            # Measured (benchmarks/bench_gan.py): the grouped form only pays off for inference on a GPU.
            fused = not self.training and not torch.is_grad_enabled() and ws.device.type == "cuda"
        ws = ws.float()
        index = self.ws_index()
        x = img = None
        collected: dict[int, torch.Tensor] = {}
        # Blocks wholly below a replaced feature map still run: their ToRGB outputs form the coarse image.
        for res, block in self.blocks():
            i = index[res]
            if res in features:
                x = features[res].to(block.dtype_for(ws.device))
            else:
                x = block.forward_features(x, ws[:, i : i + block.num_conv], noise_mode, fused, generator)
            if res in wanted:
                collected[res] = x
            img = block.forward_rgb(x, img, ws[:, i + block.num_conv], fused)
        return (img, collected) if return_features is not None else img


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping(z, c) -> ws``, ``synthesis(ws) -> images in [-1, 1]``.

    ``conditioning`` describes ``c`` (token groups); ``c_dim == conditioning.c_dim`` (0 when unconditional).
    """

    def __init__(self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 32, img_channels: int = 3,
                 mapping_kwargs: Mapping[str, Any] | None = None, synthesis_kwargs: Mapping[str, Any] | None = None,
                 conditioning: Conditioning | None = None):
        super().__init__()
        if conditioning is not None and conditioning.c_dim != c_dim:
            raise InputError("conditioning", f"token groups with c_dim {c_dim}", conditioning.c_dim)
        if conditioning is None and c_dim > 0:
            conditioning = Conditioning.classes([str(i) for i in range(c_dim)])
        self.z_dim, self.c_dim, self.w_dim = int(z_dim), int(c_dim), int(w_dim)
        self.img_resolution, self.img_channels = int(img_resolution), int(img_channels)
        self.conditioning = conditioning
        self.mapping_kwargs = dict(mapping_kwargs or {})
        self.synthesis_kwargs = dict(synthesis_kwargs or {})
        self.synthesis = SynthesisNetwork(self.w_dim, self.img_resolution, self.img_channels, **self.synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(self.z_dim, self.c_dim, self.w_dim, self.num_ws, **self.mapping_kwargs)
        self.mapping.conditioning = conditioning

    def init_kwargs(self) -> dict[str, Any]:
        """Constructor arguments (JSON-ready) that rebuild this network."""
        return {
            "z_dim": self.z_dim, "c_dim": self.c_dim, "w_dim": self.w_dim, "img_resolution": self.img_resolution,
            "img_channels": self.img_channels, "mapping_kwargs": dict(self.mapping_kwargs),
            "synthesis_kwargs": dict(self.synthesis_kwargs),
            "conditioning": self.conditioning.to_dict() if self.conditioning is not None else None,
        }

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> Generator:
        kwargs = dict(kwargs)
        cond = kwargs.pop("conditioning", None)
        return cls(**kwargs, conditioning=Conditioning.from_dict(cond) if cond else None)

    @property
    def device(self) -> torch.device:
        return self.mapping.w_avg.device

    def forward(self, z: torch.Tensor, c: Any = None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "const", update_emas: bool = False, truncation_center: str = "mean",
                **synthesis_kwargs: Any) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas, truncation_center)
        return self.synthesis(ws, noise_mode=noise_mode, **synthesis_kwargs)

    @staticmethod
    def to_unit(x: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` network output -> the project's ``[0, 1]`` images."""
        return ((x + 1) / 2).clamp(0, 1)

    @staticmethod
    def from_unit(x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1

    def style_affines(self) -> list[tuple[int, nn.Module]]:
        """``(index into ws, affine layer with weight [out_channels, w_dim])`` for every layer that reads a w."""
        out: list[tuple[int, nn.Module]] = []
        index = self.synthesis.ws_index()
        for res, block in self.synthesis.blocks():
            i = index[res]
            if hasattr(block, "conv0"):
                out.append((i, block.conv0.affine))
                i += 1
            out.append((i, block.conv1.affine))
            out.append((i + 1, block.torgb.affine))
        return out

    def sample_z(self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        device = torch.device(device) if device is not None else self.device
        return torch.randn(n, self.z_dim, generator=generator, device=device if generator is None else generator.device).to(device)


class DiscriminatorBlock(nn.Module):
    """One resolution of the discriminator: (fromRGB |) conv0, down-sampling conv1, residual 1x1 skip."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int, first: bool,
                 architecture: str = "resnet", use_fp16: bool = False, conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.first, self.architecture, self.use_fp16 = in_channels, first, architecture, use_fp16
        if first:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=True, conv_clamp=conv_clamp, gain=math.sqrt(0.5))
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=True, gain=math.sqrt(0.5))
        else:
            self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=True, conv_clamp=conv_clamp)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        dtype = torch.float16 if self.use_fp16 and img.device.type == "cuda" else torch.float32
        if self.first:
            y = self.fromrgb(img.to(dtype))
            x = y if x is None else x.to(dtype) + y
        x = x.to(dtype)
        if self.architecture == "resnet":
            y = self.skip(x)
            x = self.conv1(self.conv0(x))
            return y + x
        return self.conv1(self.conv0(x))


class MinibatchStdLayer(nn.Module):
    """Appends the standard deviation of features across groups of samples (lets D see diversity)."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size else n
        if n % g:
            g = math.gcd(n, g)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w).float()
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, conv, FC, output (projected onto the class embedding when conditional)."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, mbstd_group_size: int = 4, mbstd_num_channels: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution * resolution, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        x = x.float()
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1.0 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator with projection conditioning: ``D(img in [-1, 1], c) -> logits [N, 1]``."""

    def __init__(self, c_dim: int = 0, img_resolution: int = 32, img_channels: int = 3, architecture: str = "resnet",
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 0, conv_clamp: float | None = None,
                 cmap_dim: int | None = None, block_kwargs: Mapping[str, Any] | None = None,
                 mapping_kwargs: Mapping[str, Any] | None = None, epilogue_kwargs: Mapping[str, Any] | None = None):
        super().__init__()
        if architecture not in ("resnet", "orig"):
            raise InputError("architecture", "resnet or orig", architecture)
        self.c_dim, self.img_resolution, self.img_channels = int(c_dim), int(img_resolution), int(img_channels)
        self.init_args = {
            "c_dim": self.c_dim, "img_resolution": self.img_resolution, "img_channels": self.img_channels,
            "architecture": architecture, "channel_base": channel_base, "channel_max": channel_max,
            "num_fp16_res": num_fp16_res, "conv_clamp": conv_clamp, "cmap_dim": cmap_dim,
            "block_kwargs": dict(block_kwargs or {}), "mapping_kwargs": dict(mapping_kwargs or {}),
            "epilogue_kwargs": dict(epilogue_kwargs or {}),
        }
        resolutions = block_resolutions(img_resolution)
        self.block_resolutions = resolutions[::-1][:-1]  # top resolution down to 8
        channels = channels_per_resolution(resolutions, channel_base, channel_max)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        fp16_resolution = max(2 ** (int(math.log2(img_resolution)) + 1 - num_fp16_res), 8)
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels[res], channels[res // 2], img_channels, first=res == img_resolution,
                                       architecture=architecture, use_fp16=num_fp16_res > 0 and res >= fp16_resolution,
                                       conv_clamp=conv_clamp, **dict(block_kwargs or {}))
            setattr(self, f"b{res}", block)
        if c_dim > 0:
            self.mapping = MappingNetwork(0, c_dim, cmap_dim, None, w_avg_beta=None, **dict(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim, 4, conv_clamp=conv_clamp, **dict(epilogue_kwargs or {}))

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, cmap)

