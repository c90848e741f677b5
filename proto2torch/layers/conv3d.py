"""C3D's spatio-temporal layers (facebook/C3D): Convolution3D, Deconvolution3D and
Pooling3D on (N, C, L, H, W) blobs, L being the frames.

The kernel is ``kernel_depth`` frames by ``kernel_size`` squared pixels, with separate
temporal stride and padding.  C3D v1.0 writes these fields into ``convolution_param``/
``pooling_param`` (with V1 types CONVOLUTION3D/POOLING3D), v1.1 into
``convolution3d_param``/``pooling3d_param``; both are read.

Pooling3D rounds spatial output sizes up (like Caffe's 2-d pooling, but without the
rule that drops a window starting in the padding) and temporal ones up too, never
pads in time, pads in space only for AVE, and divides AVE windows by their extent
clipped to the padded input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..backend.lowering import ModuleOp
from ..backend.sizes import c3d_pool_sizes
from ..errors import ShapeError
from ..lazy import caffe_ops, nn
from ..prototxt.message import Msg
from ..prototxt.schema import define, extend
from .common import enum_value, plain, plain_all
from .registry import LayerSpec, ParseContext, Shape, register, same_values

define("""
message Convolution3DParameter
  num_output          1  uint32
  bias_term           2  bool    = true
  pad                 3  uint32  = 0
  kernel_size         4  uint32
  group               5  uint32  = 1
  stride              6  uint32  = 1
  weight_filler       7  FillerParameter
  bias_filler         8  FillerParameter
  kernel_depth        9  uint32
  temporal_stride    10  uint32  = 1
  temporal_pad       11  uint32  = 0
message Pooling3DParameter
  pool                1  PoolMethod = MAX
  kernel_size         2  uint32
  stride              3  uint32  = 1
  pad                 4  uint32  = 0
  kernel_depth        5  uint32
  temporal_stride     6  uint32  = 1
""")
extend("LayerParameter", """
  convolution3d_param - Convolution3DParameter
  pooling3d_param     - Pooling3DParameter
""")
extend("ConvolutionParameter", """
  kernel_depth        -  uint32
  temporal_stride     -  uint32  = 1
  temporal_pad        -  uint32  = 0
""")
extend("PoolingParameter", """
  kernel_depth        -  uint32
  temporal_stride     -  uint32  = 1
""")


def _param(ctx: ParseContext, v11: str, v10: str) -> Msg:
    layer = ctx.layer
    return layer.sub(v11) if layer.has(v11) or not layer.has(v10) else layer.sub(v10)


def _one(ctx: ParseContext, param: Msg, name: str, default: int | None) -> int:
    """One integer field (``kernel_size`` may arrive as BVLC's repeated field: one value only)."""
    values = plain_all(ctx, param, name)
    if len(values) > 1:
        raise ctx.error(f"{name} takes a single value here, got {len(values)}", name, param)
    if values:
        return int(values[0])
    if default is None:
        raise ctx.error(f"{name} must be given", name, param)
    return default


@dataclass(frozen=True)
class Conv3DParams:
    num_output: int
    kernel: tuple[int, int]
    """(depth, size)."""
    stride: tuple[int, int]
    pad: tuple[int, int]
    bias: bool = True


def _out(size: int, kernel: int, stride: int, pad: int, what: str) -> int:
    out = (size + 2 * pad - kernel) // stride + 1
    if out < 1:
        raise ShapeError(f"{what} of size {size} is smaller than the kernel {kernel} (with padding {pad})")
    return out


@register
class Convolution3D(LayerSpec):
    type = "Convolution3D"
    semantics = "C3D (facebook/C3D): kernel_depth x kernel_size^2 kernels over (N, C, L, H, W)"
    fillers = ("convolution3d_param", ("weight_filler", "bias_filler"))

    def parse(self, ctx: ParseContext) -> Conv3DParams:
        cp = _param(ctx, "convolution3d_param", "convolution_param")
        n = int(plain(ctx, cp, "num_output") or 0)
        if n < 1:
            raise ctx.error("num_output must be positive", "num_output", cp)
        if int(plain(ctx, cp, "group") or 1) != 1:
            raise ctx.unsupported("grouped Convolution3D is not supported", "group", cp)
        kernel = (_one(ctx, cp, "kernel_depth", None), _one(ctx, cp, "kernel_size", None))
        stride = (_one(ctx, cp, "temporal_stride", 1), _one(ctx, cp, "stride", 1))
        pad = (_one(ctx, cp, "temporal_pad", 0), _one(ctx, cp, "pad", 0))
        if min(kernel) < 1 or min(stride) < 1:
            raise ctx.error(f"kernel {kernel} and stride {stride} must be positive")
        return Conv3DParams(n, kernel, stride, pad, bool(cp.get("bias_term")))

    def infer(self, p: Conv3DParams, shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) != 5:
            raise ShapeError(f"Convolution3D needs a 5-d input (N, C, L, H, W), got {list(x)}")
        length = _out(x[2], p.kernel[0], p.stride[0], p.pad[0], "the clip length")
        h = _out(x[3], p.kernel[1], p.stride[1], p.pad[1], "the height")
        w = _out(x[4], p.kernel[1], p.stride[1], p.pad[1], "the width")
        return [(x[0], p.num_output, length, h, w)]

    def weight_shapes(self, p: Conv3DParams, shapes: list[Shape]) -> list[Shape]:
        kd, k = p.kernel
        weight = (p.num_output, shapes[0][1], kd, k, k)
        return [weight, (p.num_output,)] if p.bias else [weight]

    def blob_fits(self, p: Conv3DParams, index: int, got: Shape, want: Shape) -> bool:
        return index == 1 and same_values(got, want)  # C3D v1.0 stores the bias as (1, 1, 1, 1, n)

    def window(self, p: Conv3DParams) -> tuple[tuple[int, int, int, int | None], ...]:
        return ((p.kernel[1], p.stride[1], 1, p.pad[1]),) * 2

    module: ClassVar[str] = "Conv3d"  # in torch.nn

    def lower(self, p: Conv3DParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        kd, k = p.kernel
        kwargs = {"stride": (p.stride[0], p.stride[1], p.stride[1]), "padding": (p.pad[0], p.pad[1], p.pad[1]), "bias": p.bias}
        state = {"weight": blobs[0]}
        if p.bias:
            state["bias"] = blobs[1].reshape(-1)
        return ModuleOp(getattr(nn, self.module), (shapes[0][1], p.num_output, (kd, k, k)), kwargs, state, ("weight", "bias")[: len(blobs)])


@register
class Deconvolution3D(Convolution3D):
    type = "Deconvolution3D"
    semantics = "C3D (facebook/C3D, v2v): transposed 3-d convolution; weights (in, out, depth, k, k)"
    module = "ConvTranspose3d"

    def infer(self, p: Conv3DParams, shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) != 5:
            raise ShapeError(f"Deconvolution3D needs a 5-d input (N, C, L, H, W), got {list(x)}")
        sizes = [(n - 1) * s - 2 * pd + k for n, k, s, pd in zip(x[2:], (p.kernel[0], p.kernel[1], p.kernel[1]), (p.stride[0], p.stride[1], p.stride[1]), (p.pad[0], p.pad[1], p.pad[1]))]
        if min(sizes) < 1:
            raise ShapeError(f"Deconvolution3D output size {sizes} is not positive")
        return [(x[0], p.num_output, *sizes)]

    def weight_shapes(self, p: Conv3DParams, shapes: list[Shape]) -> list[Shape]:
        kd, k = p.kernel
        weight = (shapes[0][1], p.num_output, kd, k, k)
        return [weight, (p.num_output,)] if p.bias else [weight]

    def blob_fits(self, p: Conv3DParams, index: int, got: Shape, want: Shape) -> bool:
        return index == 1 and same_values(got, want)

    def window(self, p: Conv3DParams) -> None:
        return None


@dataclass(frozen=True)
class Pool3DParams:
    method: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: int = 0


@register
class Pooling3D(LayerSpec):
    type = "Pooling3D"
    semantics = "C3D (facebook/C3D): MAX or AVE over kernel_depth frames x kernel_size^2 pixels, sizes rounded up"

    def parse(self, ctx: ParseContext) -> Pool3DParams:
        pp = _param(ctx, "pooling3d_param", "pooling_param")
        method = enum_value(ctx, pp, "pool")
        if method not in ("MAX", "AVE"):
            raise ctx.unsupported(f"{method} pooling is not supported by Pooling3D (C3D implements MAX and AVE)", "pool", pp)
        kernel = (_one(ctx, pp, "kernel_depth", None), _one(ctx, pp, "kernel_size", None))
        stride = (_one(ctx, pp, "temporal_stride", 1), _one(ctx, pp, "stride", 1))
        pad = _one(ctx, pp, "pad", 0)
        if pad and method != "AVE":
            raise ctx.error("C3D pads only AVE pooling", "pad", pp)
        if min(kernel) < 1 or min(stride) < 1:
            raise ctx.error(f"kernel {kernel} and stride {stride} must be positive")
        return Pool3DParams(method, kernel, stride, pad)

    def infer(self, p: Pool3DParams, shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) != 5:
            raise ShapeError(f"Pooling3D needs a 5-d input (N, C, L, H, W), got {list(x)}")
        sizes = c3d_pool_sizes(list(x[2:]), [p.kernel[0], p.kernel[1], p.kernel[1]], [p.stride[0], p.stride[1], p.stride[1]], p.pad)
        if min(sizes) < 1 or x[2] < p.kernel[0]:
            raise ShapeError(f"the pooling window {p.kernel} does not fit the input {list(x)}")
        return [(x[0], x[1], *sizes)]

    def window(self, p: Pool3DParams) -> tuple[tuple[int, int, int, int | None], ...]:
        return ((p.kernel[1], p.stride[1], 1, p.pad),) * 2

    def lower(self, p: Pool3DParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        kd, k = p.kernel
        return ModuleOp(caffe_ops.C3DPool, (p.method.lower(), (kd, k, k), (p.stride[0], p.stride[1], p.stride[1]), p.pad))
