"""Convolution and Deconvolution (and the depthwise spellings of Caffe forks).

Caffe: output = floor((in + 2p - (d(k-1)+1)) / s) + 1; weights (out, in/group, k...).
Deconvolution: output = s(in-1) + d(k-1)+1 - 2p; weights (in, out/group, k...), which is
exactly PyTorch's ConvTranspose layout, so both map onto torch.nn without copying.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp
from ..errors import LayerParamError, ShapeError
from ..lazy import caffe_ops, nn
from ..prototxt.message import Msg
from .common import conv_out, hw_or_repeated, per_axis, plain
from .registry import LayerSpec, ParseContext, Shape, canonical_axis, register


@dataclass(frozen=True)
class ConvParams:
    num_output: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...] = (1,)
    pad: tuple[int, ...] = (0,)
    dilation: tuple[int, ...] = (1,)
    group: int = 1
    bias_term: bool = True
    axis: int = 1
    tf_same: bool = False
    """TensorFlow 'SAME' padding (caffe-tensorflow nets): ceil(in / stride) outputs, the odd
    padding pixel at the bottom/right; ``pad`` is then unused."""

    def spatial(self, n: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Kernel, stride, pad and dilation for ``n`` spatial axes."""
        return (
            per_axis(self.kernel, n, "kernel_size"),
            per_axis(self.stride, n, "stride"),
            per_axis(self.pad, n, "pad"),
            per_axis(self.dilation, n, "dilation"),
        )


def parse_conv(ctx: ParseContext) -> ConvParams:
    cp = ctx.param("convolution_param")
    if not cp.has("num_output"):
        raise ctx.error("convolution_param.num_output is required", "convolution_param")
    num_output = int(plain(ctx, cp, "num_output"))
    if num_output <= 0:
        raise ctx.error(f"num_output must be positive, got {num_output}", "num_output", cp)
    kernel = hw_or_repeated(ctx, cp, "kernel", None) if (cp.has("kernel_h") or cp.has("kernel_w")) else None
    if kernel is None:
        values = tuple(int(v) for v in cp.all("kernel_size"))
        if not values:
            raise ctx.error("the kernel size is missing (kernel_size or kernel_h/kernel_w)", "convolution_param")
        kernel = values
    stride = hw_or_repeated(ctx, cp, "stride", 1)
    pad = hw_or_repeated(ctx, cp, "pad", 0)
    dilation = tuple(int(v) for v in cp.all("dilation")) or (1,)
    if any(cp.has(h) for h in ("hole", "hole_h", "hole_w")):  # DeepLab v1's name for dilation
        if cp.all("dilation"):
            raise ctx.error("give either hole (DeepLab v1) or dilation, not both", "hole", cp)
        dilation = hw_or_repeated(ctx, cp, "hole", 1, repeated=False)  # type: ignore[assignment]
    for what, values in (("kernel size", kernel), ("stride", stride), ("dilation", dilation)):
        if any(v <= 0 for v in values):
            raise ctx.error(f"{what} must be positive, got {list(values)}", "convolution_param")
    group = int(plain(ctx, cp, "group"))
    if group <= 0:
        raise ctx.error(f"group must be positive, got {group}", "group", cp)
    return ConvParams(
        num_output=num_output,
        kernel=kernel,
        stride=stride,  # type: ignore[arg-type]
        pad=pad,  # type: ignore[arg-type]
        dilation=dilation,
        group=group,
        bias_term=bool(cp.get("bias_term")),
        axis=int(cp.get("axis")),
    )


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) of one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def unparse_conv(p: ConvParams, layer: Msg) -> Msg:
    """Write ``p`` back into a copy of ``layer``'s convolution_param (fillers and engine kept)."""
    if p.tf_same:
        raise LayerParamError("TensorFlow SAME padding depends on the input size and has no Caffe equivalent")
    layer = layer.copy()
    cp = layer.sub("convolution_param").copy()
    cp.type = "ConvolutionParameter"
    for name in ("kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w", "pad", "pad_h", "pad_w", "dilation", "group", "bias_term", "num_output", "axis"):
        cp.remove(name)
    cp.entries.insert(0, ("num_output", p.num_output, 0, 0))
    if not p.bias_term:
        cp.add("bias_term", False)
    for name, values, default in (("pad", p.pad, 0), ("kernel_size", p.kernel, None), ("stride", p.stride, 1), ("dilation", p.dilation, 1)):
        values = _compact(values)
        if values != (default,):
            for v in values:
                cp.add(name, v)
    if p.group != 1:
        cp.add("group", p.group)
    if p.axis != 1:
        cp.add("axis", p.axis)
    return layer.set("convolution_param", cp)


def _compact(values: tuple[int, ...]) -> tuple[int, ...]:
    return values[:1] if len(set(values)) == 1 else values


def _int_or_tuple(values: tuple[int, ...]) -> int | tuple[int, ...]:
    return values[0] if len(set(values)) == 1 else values


_CONV = {1: "Conv1d", 2: "Conv2d", 3: "Conv3d"}  # torch.nn names, looked up when lowering
_DECONV = {1: "ConvTranspose1d", 2: "ConvTranspose2d", 3: "ConvTranspose3d"}


class _ConvBase(LayerSpec):
    transposed = False
    param_field = "convolution_param"

    def parse(self, ctx: ParseContext) -> ConvParams:
        return parse_conv(ctx)

    def unparse(self, p: ConvParams, layer: Msg) -> Msg:
        return unparse_conv(p, layer)

    def _split(self, p: ConvParams, shape: Shape) -> tuple[int, int, tuple[int, ...]]:
        axis = canonical_axis(p.axis, len(shape))
        channels, spatial = shape[axis], shape[axis + 1 :]
        if not spatial:
            raise ShapeError(f"a {self.type} needs at least one spatial axis after the channel axis; input shape {list(shape)}")
        if channels % p.group:
            raise ShapeError(f"input channels {channels} are not divisible by group {p.group}")
        if p.num_output % p.group:
            raise ShapeError(f"num_output {p.num_output} is not divisible by group {p.group}")
        return axis, channels, spatial

    def weight_shapes(self, p: ConvParams, shapes: list[Shape]) -> list[Shape]:
        _, channels, spatial = self._split(p, shapes[0])
        kernel = per_axis(p.kernel, len(spatial), "kernel_size")
        if self.transposed:
            weight = (channels, p.num_output // p.group, *kernel)
        else:
            weight = (p.num_output, channels // p.group, *kernel)
        return [weight, (p.num_output,)] if p.bias_term else [weight]

    def lower(self, p: ConvParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        axis, channels, spatial = self._split(p, shapes[0])
        n = len(spatial)
        if axis != 1 or n not in _CONV:
            raise LayerParamError(f"{self.type} over axis {axis} with {n} spatial axes has no PyTorch equivalent here")
        kernel, stride, pad, dilation = p.spatial(n)
        cls = getattr(nn, (_DECONV if self.transposed else _CONV)[n])
        if p.tf_same:
            effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
            if set(stride) == {1} and all(e % 2 for e in effective):  # symmetric for every input size
                pad = tuple((e - 1) // 2 for e in effective)
            elif n == 2:
                cls = caffe_ops.Conv2dSame
                pad = (0,) * n
            else:
                raise LayerParamError(f"TensorFlow SAME padding with stride {list(stride)} is supported for 2-d convolutions only")
        kwargs: dict[str, object] = {"kernel_size": _int_or_tuple(kernel)}
        if set(stride) != {1}:
            kwargs["stride"] = _int_or_tuple(stride)
        if set(pad) != {0}:
            kwargs["padding"] = _int_or_tuple(pad)
        if set(dilation) != {1}:
            kwargs["dilation"] = _int_or_tuple(dilation)
        if p.group != 1:
            kwargs["groups"] = p.group
        if not p.bias_term:
            kwargs["bias"] = False
        state = {"weight": blobs[0]}
        if p.bias_term:
            state["bias"] = blobs[1]
        return ModuleOp(cls, (channels, p.num_output), kwargs, state, blob_params=("weight", "bias")[: len(blobs)])


@register
class Convolution(_ConvBase):
    type = "Convolution"
    aliases = ("ConvolutionDepthwise", "DepthwiseConvolution")
    fillers = ("convolution_param", ("weight_filler", "bias_filler"))
    description = "N-d convolution with group, dilation and per-axis kernel/pad/stride"

    def infer(self, p: ConvParams, shapes: list[Shape]) -> list[Shape]:
        axis, _, spatial = self._split(p, shapes[0])
        kernel, stride, pad, dilation = p.spatial(len(spatial))
        out = []
        for size, k, s, pd, d in zip(spatial, kernel, stride, pad, dilation):
            if p.tf_same:
                out.append(-(-size // s))
                continue
            o = conv_out(size, k, s, pd, d)
            if o <= 0:
                raise ShapeError(
                    f"kernel {d * (k - 1) + 1} (dilated) is larger than the padded input {size + 2 * pd}; input shape {list(shapes[0])}"
                )
            out.append(o)
        return [(*shapes[0][:axis], p.num_output, *out)]

    def window(self, p: ConvParams) -> tuple[tuple[int, int, int, int | None], ...]:
        kernel, stride, pad, dilation = p.spatial(2)
        return tuple((d * (k - 1) + 1, s, 1, None if p.tf_same else q) for k, s, q, d in zip(kernel, stride, pad, dilation))


@register
class Deconvolution(_ConvBase):
    type = "Deconvolution"
    fillers = ("convolution_param", ("weight_filler", "bias_filler"))
    transposed = True
    description = "transposed convolution (Caffe's weights are (in, out/group, k...), as PyTorch's)"

    def infer(self, p: ConvParams, shapes: list[Shape]) -> list[Shape]:
        axis, _, spatial = self._split(p, shapes[0])
        kernel, stride, pad, dilation = p.spatial(len(spatial))
        out = []
        for size, k, s, pd, d in zip(spatial, kernel, stride, pad, dilation):
            o = s * (size - 1) + d * (k - 1) + 1 - 2 * pd
            if o <= 0:
                raise ShapeError(f"padding {pd} leaves no output for input size {size}")
            out.append(o)
        return [(*shapes[0][:axis], p.num_output, *out)]

    def window(self, p: ConvParams) -> tuple[tuple[int, int, int, int | None], ...]:
        kernel, stride, pad, dilation = p.spatial(2)
        return tuple((d * (k - 1) + 1, 1, s, q) for k, s, q, d in zip(kernel, stride, pad, dilation))


@dataclass(frozen=True)
class Im2colParams:
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)


@register
class Im2col(LayerSpec):
    type = "Im2col"
    description = "every kernel window as a column (convolution_param's kernel, stride, pad, dilation): (N, C*kh*kw, H', W')"

    def parse(self, ctx: ParseContext) -> Im2colParams:
        cp = ctx.param("convolution_param")
        if int(cp.get("axis")) != 1:
            raise ctx.unsupported("Im2col is converted for channel axis 1 only", "axis", cp)
        if cp.has("kernel_h") or cp.has("kernel_w"):
            kernel = hw_or_repeated(ctx, cp, "kernel", None)
        else:
            kernel = tuple(int(v) for v in cp.all("kernel_size"))
            if not kernel:
                raise ctx.error("the kernel size is missing (kernel_size or kernel_h/kernel_w)", "convolution_param")
        stride, pad = hw_or_repeated(ctx, cp, "stride", 1), hw_or_repeated(ctx, cp, "pad", 0)
        dilation = tuple(int(v) for v in cp.all("dilation")) or (1,)
        two = [per_axis(v, 2, what) for v, what in ((kernel, "kernel_size"), (stride, "stride"), (pad, "pad"), (dilation, "dilation"))]
        for what, values in zip(("kernel size", "stride", "pad", "dilation"), two):
            if min(values) < (0 if what == "pad" else 1):
                raise ctx.error(f"{what} must be positive, got {list(values)}", "convolution_param")
        return Im2colParams(*two)  # type: ignore[arg-type]

    def infer(self, p: Im2colParams, shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) != 4:
            raise ShapeError(f"Im2col is converted for 4-d inputs (N, C, H, W), got {list(x)}")
        out = [conv_out(size, k, s, q, d) for size, k, s, q, d in zip(x[2:], p.kernel, p.stride, p.pad, p.dilation)]
        if min(out) <= 0:
            raise ShapeError(f"the kernel {list(p.kernel)} (dilation {list(p.dilation)}) does not fit the padded input {list(x)}")
        return [(x[0], x[1] * p.kernel[0] * p.kernel[1], *out)]

    def window(self, p: Im2colParams) -> tuple[tuple[int, int, int, int | None], ...]:
        return tuple((d * (k - 1) + 1, s, 1, q) for k, s, q, d in zip(p.kernel, p.stride, p.pad, p.dilation))

    def lower(self, p: Im2colParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        out = list(self.infer(p, shapes)[0][2:])
        return CallOp(caffe_ops.im2col, (In(0), list(p.kernel), list(p.dilation), list(p.pad), list(p.stride), out))
