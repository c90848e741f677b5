"""Small PyTorch building blocks for the parts of Caffe that plain torch.nn lacks.

Every class and function here imports nothing but torch, math and typing and is
TorchScript-compatible: the source back end copies the ones a net needs, verbatim,
into the generated file, so converted models never depend on proto2torch.  Keep each
one short and self-explanatory — users read them.
"""

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sizes import c3d_pool_sizes, caffe_pool_out


class CaffePool2d(nn.Module):
    """Caffe pooling where torch.nn pooling cannot express it (padding over half the kernel).

    MAX never sees padding.  AVE divides each window by its size clipped to the padded
    input (padding counts, the ceil-mode overhang beyond it does not).
    """

    def __init__(self, method: str, kernel: Tuple[int, int], stride: Tuple[int, int], pad: Tuple[int, int], ceil: bool = True):
        super().__init__()
        self.method = method
        self.kernel = kernel
        self.stride = stride
        self.pad = pad
        self.ceil = ceil

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2], x.shape[-1]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.pad
        oh = caffe_pool_out(h, kh, sh, ph, self.ceil)
        ow = caffe_pool_out(w, kw, sw, pw, self.ceil)
        # explicit padding: `pad` before, and after whatever the last window needs
        bottom = (oh - 1) * sh + kh - h - ph
        right = (ow - 1) * sw + kw - w - pw
        if self.method == "max":
            padded = F.pad(x, [pw, right, ph, bottom], value=-math.inf)
            return F.max_pool2d(padded, self.kernel, self.stride)
        padded = F.pad(x, [pw, right, ph, bottom])
        total = F.avg_pool2d(padded, self.kernel, self.stride, divisor_override=1)
        # window sizes: 1 inside the input and its symmetric padding, 0 in the overhang
        ones = torch.ones([1, 1, h + 2 * ph, w + 2 * pw], dtype=x.dtype, device=x.device)
        ones = F.pad(ones, [0, right - pw, 0, bottom - ph])
        divisor = F.avg_pool2d(ones, self.kernel, self.stride, divisor_override=1)
        return total / divisor


def batch_reindex(x: Tensor, index: Tensor) -> Tensor:
    """Caffe's BatchReindex: the rows of ``x`` named by ``index``."""
    return x.index_select(0, index.to(torch.int64))


def im2col(x: Tensor, kernel: List[int], dilation: List[int], pad: List[int], stride: List[int], out: List[int]) -> Tensor:
    """Caffe's Im2col: every kernel window as a column, (N, C * kh * kw, out_h, out_w)."""
    columns = F.unfold(x, kernel, dilation, pad, stride)
    return columns.reshape(x.shape[0], columns.shape[1], out[0], out[1])


class SpatialPyramidPool(nn.Module):
    """Caffe's SPP: one Caffe pooling per pyramid level (windows sized for the input it was
    built for), each flattened, concatenated along channels."""

    def __init__(self, method: str, levels: List[Tuple[Tuple[int, int], Tuple[int, int]]]):
        super().__init__()
        self.pools = nn.ModuleList([CaffePool2d(method, kernel, kernel, pad) for kernel, pad in levels])

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([pool(x).flatten(1) for pool in self.pools], 1)


class C3DPool(nn.Module):
    """C3D's Pooling3D over (N, C, L, H, W): MAX over windows clipped to the input, or AVE
    dividing by the window clipped to the spatially padded input."""

    def __init__(self, method: str, kernel: Tuple[int, int, int], stride: Tuple[int, int, int], pad: int = 0):
        super().__init__()
        self.method = method
        self.kernel = kernel
        self.stride = stride
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        size = [x.shape[2], x.shape[3], x.shape[4]]
        kernel = [self.kernel[0], self.kernel[1], self.kernel[2]]
        stride = [self.stride[0], self.stride[1], self.stride[2]]
        out = c3d_pool_sizes(size, kernel, stride, self.pad)
        need = [(out[i] - 1) * stride[i] + kernel[i] for i in range(3)]
        p = self.pad
        if self.method == "max":
            padded = F.pad(x, [0, need[2] - size[2], 0, need[1] - size[1], 0, need[0] - size[0]], value=-math.inf)
            return F.max_pool3d(padded, kernel, stride)
        total = F.avg_pool3d(F.pad(x, [p, need[2] - size[2] - p, p, need[1] - size[1] - p, 0, need[0] - size[0]]), kernel, stride, divisor_override=1)
        ones = torch.ones([1, 1, size[0], size[1] + 2 * p, size[2] + 2 * p], dtype=x.dtype, device=x.device)
        ones = F.pad(ones, [0, need[2] - size[2] - 2 * p, 0, need[1] - size[1] - 2 * p, 0, need[0] - size[0]])
        return total / F.avg_pool3d(ones, kernel, stride, divisor_override=1)


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int]:
    """TensorFlow's SAME padding of one axis: ceil(size / stride) outputs, the odd pixel after."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A Conv2d with TensorFlow's SAME padding (which depends on the input size)."""

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = tf_same_padding(x.shape[2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_padding(x.shape[3], self.kernel_size[1], self.stride[1], self.dilation[1])
        return F.conv2d(F.pad(x, [left, right, top, bottom]), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class TFSamePool2d(nn.Module):
    """TensorFlow SAME pooling: MAX ignores the padding, AVE averages only the real pixels of a window."""

    def __init__(self, method: str, kernel: Tuple[int, int], stride: Tuple[int, int]):
        super().__init__()
        self.method = method
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = tf_same_padding(x.shape[2], self.kernel[0], self.stride[0])
        left, right = tf_same_padding(x.shape[3], self.kernel[1], self.stride[1])
        if self.method == "max":
            return F.max_pool2d(F.pad(x, [left, right, top, bottom], value=-math.inf), self.kernel, self.stride)
        total = F.avg_pool2d(F.pad(x, [left, right, top, bottom]), self.kernel, self.stride, divisor_override=1)
        ones = F.pad(torch.ones([1, 1, x.shape[2], x.shape[3]], dtype=x.dtype, device=x.device), [left, right, top, bottom])
        return total / F.avg_pool2d(ones, self.kernel, self.stride, divisor_override=1)


class MaxPoolWithMask(nn.MaxPool2d):
    """MAX pooling with Caffe's second top: the argmax index (h * width + w) as float."""

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        out, index = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode, return_indices=True)
        return out, index.to(x.dtype)


class LRNWithinChannel(nn.Module):
    """Caffe LRN over a spatial window: x / (1 + alpha * mean(x^2 over size x size))^beta.

    Unlike ACROSS_CHANNELS, Caffe ignores ``k`` here.
    """

    def __init__(self, size: int, alpha: float, beta: float):
        super().__init__()
        self.size = size
        self.alpha = alpha
        self.beta = beta

    def forward(self, x: Tensor) -> Tensor:
        pad = (self.size - 1) // 2
        mean_sq = F.avg_pool2d(x * x, self.size, stride=1, padding=pad, count_include_pad=True)
        return x * torch.pow(1.0 + self.alpha * mean_sq, -self.beta)


def _broadcast_shape(ndim: int, axis: int, shape: List[int]) -> List[int]:
    """Shape that lines a parameter up with ``axis``.. of an ``ndim``-d input."""
    return [1] * axis + shape + [1] * (ndim - axis - len(shape))


class Scale(nn.Module):
    """Caffe Scale: y = x * weight (+ bias), weight spanning axes axis..axis+num_axes of x."""

    def __init__(self, shape: List[int], axis: int = 1, bias: bool = False):
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        shape = _broadcast_shape(x.dim(), self.axis, list(self.weight.shape))
        y = x * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y


class Bias(nn.Module):
    """Caffe Bias: y = x + bias, bias spanning axes axis..axis+num_axes of x."""

    def __init__(self, shape: List[int], axis: int = 1):
        super().__init__()
        self.axis = axis
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.view(_broadcast_shape(x.dim(), self.axis, list(self.bias.shape)))


def scale_by(x: Tensor, factor: Tensor, axis: int) -> Tensor:
    """Two-input Caffe Scale: multiply x by a second blob lined up at ``axis``."""
    return x * factor.view(_broadcast_shape(x.dim(), axis, list(factor.shape)))


def bias_by(x: Tensor, offset: Tensor, axis: int) -> Tensor:
    """Two-input Caffe Bias: add a second blob lined up at ``axis``."""
    return x + offset.view(_broadcast_shape(x.dim(), axis, list(offset.shape)))


class ScaleByAndBias(Bias):
    """Two-input Caffe Scale with a bias term: x * factor (lined up at ``axis``) + bias."""

    def forward(self, x: Tensor, factor: Tensor) -> Tensor:
        y = scale_by(x, factor, self.axis)
        return y + self.bias.view(_broadcast_shape(y.dim(), self.axis, list(self.bias.shape)))


def axpy(a: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """SENet's Axpy: a (N, C, 1, 1) scales each channel of x, then y is added."""
    return a.reshape([a.shape[0], a.shape[1]] + [1] * (x.dim() - 2)) * x + y


def shuffle_channels(x: Tensor, group: int) -> Tensor:
    """ShuffleNet's channel shuffle: view channels as (group, C / group) and transpose."""
    n, c = x.shape[0], x.shape[1]
    return x.reshape(n, group, c // group, -1).transpose(1, 2).reshape(x.shape)


def eltwise_sum(xs: List[Tensor], coeffs: List[float]) -> Tensor:
    """Caffe Eltwise SUM with one coefficient per input."""
    y = xs[0] * coeffs[0]
    for x, c in zip(xs[1:], coeffs[1:]):
        y = y + x * c
    return y


def eltwise_add(xs: List[Tensor]) -> Tensor:
    y = xs[0]
    for x in xs[1:]:
        y = y + x
    return y


def eltwise_prod(xs: List[Tensor]) -> Tensor:
    y = xs[0]
    for x in xs[1:]:
        y = y * x
    return y


def eltwise_max(xs: List[Tensor]) -> Tensor:
    y = xs[0]
    for x in xs[1:]:
        y = torch.maximum(y, x)
    return y


class Power(nn.Module):
    """Caffe Power: (shift + scale * x) ** power."""

    def __init__(self, power: float = 1.0, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.power = power
        self.scale = scale
        self.shift = shift

    def forward(self, x: Tensor) -> Tensor:
        y = x * self.scale + self.shift
        if self.power == 1.0:
            return y
        return torch.pow(y, self.power)


class Exp(nn.Module):
    """Caffe Exp: base ** (shift + scale * x); base -1 means e."""

    def __init__(self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        log_base = 1.0 if base == -1.0 else math.log(base)
        self.inner = log_base * scale
        self.outer = math.exp(log_base * shift)

    def forward(self, x: Tensor) -> Tensor:
        return self.outer * torch.exp(self.inner * x)


class Log(nn.Module):
    """Caffe Log: log_base(shift + scale * x); base -1 means e."""

    def __init__(self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.scale = scale
        self.shift = shift
        self.inv_log_base = 1.0 if base == -1.0 else 1.0 / math.log(base)

    def forward(self, x: Tensor) -> Tensor:
        return torch.log(x * self.scale + self.shift) * self.inv_log_base


class Step(nn.Module):
    """Caffe Threshold: 1 where x > threshold, else 0 (not torch.nn.Threshold)."""

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.threshold = threshold

    def forward(self, x: Tensor) -> Tensor:
        return (x > self.threshold).to(x.dtype)


class ClippedReLU(nn.Module):
    """ReLU6 of Caffe forks with a leaky slope or another ceiling: min(max(x, 0) + slope * min(x, 0), ceiling)."""

    def __init__(self, negative_slope: float = 0.0, ceiling: float = 6.0):
        super().__init__()
        self.negative_slope = negative_slope
        self.ceiling = ceiling

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(x) + self.negative_slope * torch.clamp(x, max=0.0)
        return torch.clamp(y, max=self.ceiling)


def mc_dropout(x: Tensor, p: float) -> Tensor:
    """Dropout that stays active in eval mode (Bayesian SegNet's sample_weights_test)."""
    return F.dropout(x, p, True)


class ScaledELU(nn.Module):
    """scale * (x if x > 0 else alpha * (exp(x) - 1)): SELU with its constants given."""

    def __init__(self, alpha: float, scale: float):
        super().__init__()
        self.alpha = alpha
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * torch.where(x > 0, x, self.alpha * (torch.exp(x) - 1.0))


class ParameterBlob(nn.Module):
    """Caffe's Parameter layer: no input, its learned blob as output."""

    def __init__(self, shape: List[int]):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(shape))

    def forward(self) -> Tensor:
        return self.weight


class HardSigmoid(nn.Module):
    """Caffe HardSigmoid: clamp(alpha * x + beta, 0, 1) (torch's Hardsigmoid fixes alpha = 1/6)."""

    def __init__(self, alpha: float = 0.2, beta: float = 0.5):
        super().__init__()
        self.alpha = alpha
        self.beta = beta

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(x * self.alpha + self.beta, 0.0, 1.0)


class InnerProduct(nn.Linear):
    """Caffe InnerProduct: flatten axes axis.. of x, then a linear map."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, axis: int = 1):
        super().__init__(in_features, out_features, bias)
        self.axis = axis

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(torch.flatten(x, self.axis), self.weight, self.bias)


class Embed(nn.Embedding):
    """Caffe Embed: look up rows of weight by (float-stored) ids, plus an optional bias."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bias: bool = True):
        super().__init__(num_embeddings, embedding_dim)
        self.bias = nn.Parameter(torch.zeros(embedding_dim)) if bias else None

    def forward(self, ids: Tensor) -> Tensor:
        y = F.embedding(ids.long(), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y


def caffe_reshape(x: Tensor, dims: List[int], axis: int, num_axes: int) -> Tensor:
    """Caffe Reshape: 0 copies the input dimension, -1 is inferred; only axes axis..axis+num_axes change."""
    shape = list(x.shape)
    end = len(shape) if num_axes == -1 else axis + num_axes
    middle: List[int] = []
    for i, d in enumerate(dims):
        middle.append(shape[axis + i] if d == 0 else d)
    return x.reshape(shape[:axis] + middle + shape[end:])


def crop_like(x: Tensor, ref: Tensor, axis: int, offsets: List[int]) -> Tensor:
    """Caffe Crop: cut x to ref's size on axes axis.., starting at ``offsets``."""
    for i, d in enumerate(range(axis, x.dim())):
        x = x.narrow(d, offsets[i], ref.shape[d])
    return x


def reduction(x: Tensor, op: str, axis: int, coeff: float) -> Tensor:
    """Caffe Reduction over every axis from ``axis`` on: SUM, ASUM, SUMSQ or MEAN, times coeff."""
    flat = torch.flatten(x, axis) if axis < x.dim() else x.unsqueeze(-1)
    if op == "ASUM":
        flat = flat.abs()
    elif op == "SUMSQ":
        flat = flat * flat
    y = flat.mean(-1) if op == "MEAN" else flat.sum(-1)
    return y * coeff


class StoredStatsBN(nn.Module):
    """A fork BN layer with stored statistics: (x - mean) * inv_std * weight + bias, per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("inv_std", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = [1, -1] + [1] * (x.dim() - 2)
        return (x - self.mean.view(shape)) * self.inv_std.view(shape) * self.weight.view(shape) + self.bias.view(shape)


class CaffeBatchNorm(nn.Module):
    """BVLC's BatchNorm with its three blobs as buffers, for training as Caffe trains.

    ``mean`` and ``variance`` are sums weighted by ``factor`` (Caffe's third blob).  With
    batch statistics each forward normalises by the batch's mean and biased variance and
    folds them into the blobs: ``factor = maf * factor + 1``, ``mean = maf * mean + m``,
    ``variance = maf * variance + v * n / (n - 1)`` (n values per channel).  With global
    statistics it normalises by ``mean / factor`` and ``variance / factor``.
    ``use_global_stats`` None follows the module's mode (eval: global), as Caffe follows
    the phase.  ``scale_bias`` (NVIDIA Caffe) adds a learned per-channel scale and bias.
    """

    def __init__(self, channels: int, eps: float = 1e-5, moving_average_fraction: float = 0.999, use_global_stats: Optional[bool] = None, scale_bias: bool = False):
        super().__init__()
        self.eps = eps
        self.moving_average_fraction = moving_average_fraction
        self.use_global_stats = use_global_stats
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("variance", torch.zeros(channels))
        self.register_buffer("factor", torch.zeros(1))
        self.scale_bias = scale_bias
        self.weight = nn.Parameter(torch.ones(channels)) if scale_bias else None
        self.bias = nn.Parameter(torch.zeros(channels)) if scale_bias else None

    def forward(self, x: Tensor) -> Tensor:
        use_global = self.use_global_stats if self.use_global_stats is not None else not self.training
        if use_global:
            shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
            scale = torch.where(self.factor == 0, torch.zeros_like(self.factor), 1.0 / self.factor)
            mean = (self.mean * scale).view(shape)
            var = (self.variance * scale).view(shape)
            y = (x - mean) / torch.sqrt(var + self.eps)
            weight, bias = self.weight, self.bias
            if weight is not None and bias is not None:
                y = y * weight.view(shape) + bias.view(shape)
            return y
        # batch statistics: torch's fused kernel, which with momentum 1 hands back the batch mean and
        # the unbiased variance (Caffe's n / (n - 1) correction) in the two scratch vectors
        batch_mean = torch.zeros_like(self.mean)
        batch_var = torch.zeros_like(self.variance)
        if x.numel() == x.shape[1]:  # one value per channel: it is the mean, the variance is 0 (and not corrected)
            batch_mean = x.detach().reshape(-1).clone()
            y = x - x  # x minus its own mean, which the mean follows: no gradient either
            if self.weight is not None and self.bias is not None:
                y = y * self.weight.view(x.shape) + self.bias.view(x.shape)
        else:
            y = F.batch_norm(x, batch_mean, batch_var, self.weight, self.bias, True, 1.0, self.eps)
        with torch.no_grad():
            maf = self.moving_average_fraction
            self.factor.mul_(maf).add_(1.0)
            self.mean.mul_(maf).add_(batch_mean)
            self.variance.mul_(maf).add_(batch_var)
        return y


class BatchStatsBN(nn.Module):
    """A fork BN layer normalising by the batch's own per-channel mean and variance.

    The variance is the mean squared deviation, or ``E[x^2] - E[x]^2`` with
    ``second_moment`` (SegNet).  Returns the output, the mean and the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-5, second_moment: bool = False):
        super().__init__()
        self.eps = eps
        self.second_moment = second_moment
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims, keepdim=True)
        if self.second_moment:
            var = (x * x).mean(dims, keepdim=True) - mean * mean
        else:
            var = ((x - mean) ** 2).mean(dims, keepdim=True)
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)
        return y, mean, var


class MVN(nn.Module):
    """Caffe MVN: subtract the mean (and divide by std + eps) per sample and channel, or per sample."""

    def __init__(self, normalize_variance: bool = True, across_channels: bool = False, eps: float = 1e-9):
        super().__init__()
        self.normalize_variance = normalize_variance
        self.across_channels = across_channels
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        start = 1 if self.across_channels else 2
        dims = list(range(start, x.dim()))
        y = x - x.mean(dims, keepdim=True)
        if self.normalize_variance:
            std = torch.sqrt((y * y).mean(dims, keepdim=True))
            y = y / (std + self.eps)
        return y


class Normalize(nn.Module):
    """SSD's Normalize: x / sqrt(sum x^2 + eps) over channels (or the whole sample), times a learned scale."""

    def __init__(self, channels: int, across_spatial: bool = True, channel_shared: bool = True, eps: float = 1e-10):
        super().__init__()
        self.across_spatial = across_spatial
        self.eps = eps
        self.weight = nn.Parameter(torch.ones([] if channel_shared else [channels]))

    def forward(self, x: Tensor) -> Tensor:
        dims = list(range(1, x.dim())) if self.across_spatial else [1]
        norm = torch.sqrt((x * x).sum(dims, keepdim=True) + self.eps)
        scale = self.weight.view(_broadcast_shape(x.dim(), 1, list(self.weight.shape)))
        return x / norm * scale


def feature_normalize(x: Tensor, l2: bool) -> Tuple[Tensor, Tensor]:
    """happynear's Normalize: each position's channel vector divided by its L2 norm
    (sqrt(sum x^2 + 1e-6)) or L1 norm (sum |x| + 1e-6); returns (N, C, H, W) and the norms (N, 1, H, W)."""
    x4 = x.reshape([x.shape[0], x.shape[1]] + [x.shape[i] if i < x.dim() else 1 for i in [2, 3]])
    if l2:
        norm = torch.sqrt((x4 * x4).sum(1, keepdim=True) + 1e-6)
    else:
        norm = torch.abs(x4).sum(1, keepdim=True) + 1e-6
    return x4 / norm, norm


def channel_scale(x: Tensor, scale: Tensor) -> Tensor:
    """happynear's ChannelScale: every channel of x times the scale of its sample and position."""
    spatial = [x.shape[i] for i in range(2, x.dim())]
    return x * scale.reshape([x.shape[0], 1] + spatial)


def global_scale(x: Tensor, value: float) -> Tuple[Tensor, Tensor]:
    """happynear's ChannelScale with global_scale: x times one (clamped) learned value, and that value."""
    return x * value, torch.full([1], value, dtype=x.dtype, device=x.device)


def argmax(x: Tensor, axis: int, top_k: int, out_max_val: bool) -> Tensor:
    """Caffe ArgMax along ``axis`` (-1: over each flattened sample), as float indices or values."""
    if axis >= 0:
        values, index = torch.topk(x, top_k, dim=axis)
        return values if out_max_val else index.to(x.dtype)
    flat = torch.flatten(x, 1)
    values, index = torch.topk(flat, top_k, dim=1)
    parts = [index.to(x.dtype)]
    if out_max_val:
        parts.append(values)
    y = torch.stack(parts, 1)
    while y.dim() < max(x.dim(), 3):
        y = y.unsqueeze(-1)
    return y


class MaxUnpool(nn.Module):
    """SegNet's Upsample: put each value back where the mask (h * width + w of the output) says; zeros elsewhere."""

    def __init__(self, size: Tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        n, c = x.shape[0], x.shape[1]
        out = torch.zeros([n, c, self.size[0] * self.size[1]], dtype=x.dtype, device=x.device)
        out.scatter_(2, mask.long().flatten(2), x.flatten(2))
        return out.view(n, c, self.size[0], self.size[1])


class PriorBox(nn.Module):
    """SSD prior boxes for a feature map (input 0) over an image (input 1); channel 1 holds the variances."""

    def __init__(
        self,
        min_sizes: List[float],
        max_sizes: List[float],
        aspect_ratios: List[float],
        variances: List[float],
        clip: bool = True,
        image_size: Tuple[int, int] = (0, 0),
        step: Tuple[float, float] = (0.0, 0.0),
        offset: float = 0.5,
    ):
        super().__init__()
        sizes: List[Tuple[float, float]] = []  # (width, height) of each prior, in SSD's order
        for i, size in enumerate(min_sizes):
            sizes.append((size, size))
            if len(max_sizes) > 0:
                side = math.sqrt(size * max_sizes[i])
                sizes.append((side, side))
            for ratio in aspect_ratios[1:]:
                sizes.append((size * math.sqrt(ratio), size / math.sqrt(ratio)))
        self.sizes = sizes
        self.variances = variances
        self.clip = clip
        self.image_size = image_size
        self.step = step
        self.offset = offset

    def forward(self, x: Tensor, image: Tensor) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        img_h, img_w = self.image_size
        if img_h == 0 or img_w == 0:
            img_h, img_w = image.shape[2], image.shape[3]
        step_h, step_w = self.step
        if step_h == 0.0 or step_w == 0.0:
            step_h = float(torch.tensor(float(img_h), dtype=torch.float32) / h)
            step_w = float(torch.tensor(float(img_w), dtype=torch.float32) / w)
        cx = ((torch.arange(w, dtype=torch.float32) + self.offset) * step_w).double().view(1, w, 1)
        cy = ((torch.arange(h, dtype=torch.float32) + self.offset) * step_h).double().view(h, 1, 1)
        bw = torch.tensor([s[0] for s in self.sizes], dtype=torch.float32).double().view(1, 1, -1) / 2.0
        bh = torch.tensor([s[1] for s in self.sizes], dtype=torch.float32).double().view(1, 1, -1) / 2.0
        n = len(self.sizes)
        boxes = torch.stack(
            [
                ((cx - bw) / img_w).expand(h, w, n),
                ((cy - bh) / img_h).expand(h, w, n),
                ((cx + bw) / img_w).expand(h, w, n),
                ((cy + bh) / img_h).expand(h, w, n),
            ],
            -1,
        ).float()
        if self.clip:
            boxes = boxes.clamp(0.0, 1.0)
        variances = torch.tensor(self.variances, dtype=torch.float32).expand(h * w * n, 4) if len(self.variances) == 4 else torch.full([h * w * n, 4], self.variances[0])
        return torch.stack([boxes.reshape(-1), variances.reshape(-1)]).unsqueeze(0).to(x.device)


def _box_area(b: Tensor) -> Tensor:
    """Areas of [xmin, ymin, xmax, ymax] rows; 0 for inverted boxes (SSD's BBoxSize)."""
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    return torch.where((w < 0) | (h < 0), torch.zeros_like(w), w * h)


def _overlaps(boxes: Tensor) -> Tensor:
    """Jaccard overlap of every pair of rows, as SSD computes it."""
    area = _box_area(boxes)
    x1 = torch.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = torch.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x2 = torch.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y2 = torch.minimum(boxes[:, None, 3], boxes[None, :, 3])
    iw = x2 - x1
    ih = y2 - y1
    inter = iw * ih
    union = area[:, None] + area[None, :] - inter
    return torch.where((iw > 0) & (ih > 0), inter / union, torch.zeros_like(inter))


class DetectionOutput(nn.Module):
    """SSD's DetectionOutput: decode boxes, per-class NMS, keep the best; rows [image, label, score, xmin, ymin, xmax, ymax]."""

    def __init__(
        self,
        num_classes: int,
        share_location: bool = True,
        background_label_id: int = 0,
        nms_threshold: float = 0.3,
        top_k: int = -1,
        eta: float = 1.0,
        keep_top_k: int = -1,
        confidence_threshold: Optional[float] = None,
        code_type: str = "CORNER",
        variance_encoded_in_target: bool = False,
        nms: bool = True,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.share_location = share_location
        self.background_label_id = background_label_id
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.eta = eta
        self.keep_top_k = keep_top_k
        self.confidence_threshold = -3.4028234663852886e38 if confidence_threshold is None else confidence_threshold
        self.code_type = code_type
        self.variance_encoded_in_target = variance_encoded_in_target
        self.nms = nms

    def decode(self, loc: Tensor, prior: Tensor, variance: Tensor) -> Tensor:
        """loc (P, C, 4) against priors (P, 4) → boxes (P, C, 4)."""
        prior = prior.unsqueeze(1)
        variance = variance.unsqueeze(1)
        if self.variance_encoded_in_target:
            variance = torch.ones_like(variance)
        if self.code_type == "CORNER":
            return prior + variance * loc
        pw = prior[..., 2] - prior[..., 0]
        ph = prior[..., 3] - prior[..., 1]
        if self.code_type == "CORNER_SIZE":
            size = torch.stack([pw, ph, pw, ph], -1)
            return prior + variance * loc * size
        pcx = (prior[..., 0] + prior[..., 2]) / 2.0
        pcy = (prior[..., 1] + prior[..., 3]) / 2.0
        cx = variance[..., 0] * loc[..., 0] * pw + pcx
        cy = variance[..., 1] * loc[..., 1] * ph + pcy
        w = torch.exp(variance[..., 2] * loc[..., 2]) * pw
        h = torch.exp(variance[..., 3] * loc[..., 3]) * ph
        return torch.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], -1)

    def suppress(self, boxes: Tensor, scores: Tensor) -> List[int]:
        """Greedy NMS over boxes above the threshold, best first (SSD's ApplyNMSFast)."""
        candidates = torch.nonzero(scores > self.confidence_threshold).flatten()
        order = torch.sort(scores[candidates], descending=True, stable=True)[1]
        candidates = candidates[order]
        if self.top_k > -1:
            candidates = candidates[: self.top_k]
        ids: List[int] = candidates.tolist()
        if not self.nms:
            return ids
        overlap: List[List[float]] = _overlaps(boxes[candidates]).tolist()
        kept: List[int] = []
        threshold = self.nms_threshold
        for i in range(len(ids)):
            keep = True
            for k in kept:
                if overlap[i][k] > threshold:
                    keep = False
                    break
            if keep:
                kept.append(i)
                if self.eta < 1.0 and threshold > 0.5:
                    threshold *= self.eta
        return [ids[k] for k in kept]

    def forward(self, loc: Tensor, conf: Tensor, priors: Tensor) -> Tensor:
        num = loc.shape[0]
        num_priors = priors.shape[2] // 4
        loc_classes = 1 if self.share_location else self.num_classes
        locs = loc.reshape(num, num_priors, loc_classes, 4)
        confs = conf.reshape(num, num_priors, self.num_classes)
        prior_boxes = priors[0, 0].reshape(num_priors, 4)
        prior_vars = priors[0, 1].reshape(num_priors, 4)
        rows: List[Tensor] = []
        for i in range(num):
            boxes = self.decode(locs[i], prior_boxes, prior_vars)
            picked: Dict[int, List[int]] = {}
            total = 0
            for c in range(self.num_classes):
                if c == self.background_label_id:
                    continue
                class_boxes = boxes[:, 0 if self.share_location else c]
                picked[c] = self.suppress(class_boxes, confs[i, :, c])
                total += len(picked[c])
            if self.keep_top_k > -1 and total > self.keep_top_k:
                labels: List[int] = []
                index: List[int] = []
                for c, ids in picked.items():
                    labels += [c] * len(ids)
                    index += ids
                label_t = torch.tensor(labels, dtype=torch.long)
                index_t = torch.tensor(index, dtype=torch.long)
                order: List[int] = torch.sort(confs[i][index_t, label_t], descending=True, stable=True)[1][: self.keep_top_k].tolist()
                regrouped: Dict[int, List[int]] = {}
                for j in order:
                    if labels[j] in regrouped:
                        regrouped[labels[j]].append(index[j])
                    else:
                        regrouped[labels[j]] = [index[j]]
                picked = regrouped
            for c in sorted(picked.keys()):
                ids = torch.tensor(picked[c], dtype=torch.long)
                if ids.numel() == 0:
                    continue
                class_boxes = boxes[ids, 0 if self.share_location else c]
                head = torch.tensor([float(i), float(c)], dtype=loc.dtype).expand(ids.numel(), 2)
                rows.append(torch.cat([head, confs[i, ids, c].unsqueeze(1), class_boxes], 1))
        if len(rows) == 0:
            empty = torch.full([num, 7], -1.0, dtype=loc.dtype)
            empty[:, 0] = torch.arange(num, dtype=loc.dtype)
            return empty.view(1, 1, num, 7)
        return torch.cat(rows).view(1, 1, -1, 7)


class Interp(nn.Module):
    """Caffe Interp (DeepLab): crop (begin, end) pixels, then a bilinear resize with aligned corners.

    The size is ``(height, width)`` when given, else the cropped size shrunk by ``shrink``
    ((n - 1) // shrink + 1) and then zoomed by ``zoom`` (n + (n - 1)(zoom - 1)).
    """

    def __init__(self, height: int = 0, width: int = 0, zoom: int = 1, shrink: int = 1, crop: Tuple[int, int] = (0, 0), align_corners: bool = True, tf1: bool = False):
        super().__init__()
        self.height = height
        self.width = width
        self.zoom = zoom
        self.shrink = shrink
        self.crop = crop
        self.align_corners = align_corners
        self.tf1 = tf1

    def forward(self, x: Tensor) -> Tensor:
        begin, end = self.crop
        if begin or end:
            x = x[:, :, begin : x.shape[2] - end, begin : x.shape[3] - end]
        h, w = x.shape[2], x.shape[3]
        if self.height > 0 and self.width > 0:
            h, w = self.height, self.width
        else:
            h, w = (h - 1) // self.shrink + 1, (w - 1) // self.shrink + 1
            h, w = h + (h - 1) * (self.zoom - 1), w + (w - 1) * (self.zoom - 1)
        if self.tf1:
            return resize_bilinear_tf1(x, h, w)
        return F.interpolate(x, size=[h, w], mode="bilinear", align_corners=self.align_corners)


class ResizeLike(nn.Module):
    """Caffe Interp with two bottoms: bilinear resize of x to the height and width of ``like``
    (``tf1``: as TensorFlow 1's resize_bilinear without align_corners)."""

    def __init__(self, align_corners: bool = True, tf1: bool = False):
        super().__init__()
        self.align_corners = align_corners
        self.tf1 = tf1

    def forward(self, x: Tensor, like: Tensor) -> Tensor:
        if self.tf1:
            return resize_bilinear_tf1(x, like.shape[2], like.shape[3])
        return F.interpolate(x, size=[like.shape[2], like.shape[3]], mode="bilinear", align_corners=self.align_corners)


def resize_bilinear_tf1(x: Tensor, height: int, width: int) -> Tensor:
    """TensorFlow 1's ``tf.image.resize_bilinear(align_corners=False)`` (half_pixel_centers=False):
    output pixel i reads input position i * (in / out), in float32, its upper neighbour clamped to
    the last pixel; blended horizontally, then vertically, as TensorFlow's kernel does.  Neither
    Caffe's Interp (corners aligned) nor PyTorch's align_corners=False (half pixels) samples so."""
    in_h, in_w = x.shape[2], x.shape[3]
    ys = torch.arange(height, dtype=torch.float32, device=x.device) * torch.tensor(float(in_h) / float(height), dtype=torch.float32)
    xs = torch.arange(width, dtype=torch.float32, device=x.device) * torch.tensor(float(in_w) / float(width), dtype=torch.float32)
    y0 = torch.clamp(torch.floor(ys).long(), max=in_h - 1)
    x0 = torch.clamp(torch.floor(xs).long(), max=in_w - 1)
    y1 = torch.clamp(y0 + 1, max=in_h - 1)
    x1 = torch.clamp(x0 + 1, max=in_w - 1)
    wy = (ys - y0.to(torch.float32)).view(1, 1, -1, 1).to(x.dtype)
    wx = (xs - x0.to(torch.float32)).view(1, 1, 1, -1).to(x.dtype)
    top, bottom = x.index_select(2, y0), x.index_select(2, y1)
    top = top.index_select(3, x0) + (top.index_select(3, x1) - top.index_select(3, x0)) * wx
    bottom = bottom.index_select(3, x0) + (bottom.index_select(3, x1) - bottom.index_select(3, x0)) * wx
    return top + (bottom - top) * wy
