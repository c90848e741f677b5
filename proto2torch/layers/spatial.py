"""Fork layers that move information across positions: PSANet's PointwiseSpatialAttention,
FlowNet2's FlowWarp and the ColorConv colour-space conversion."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp, Op
from ..errors import ShapeError
from ..lazy import ops_spatial
from ..prototxt.schema import define, extend
from .common import enum_value, plain
from .registry import LayerSpec, ParseContext, Shape, register

define("""
enum PSAType COLLECT=0 DISTRIBUTE=1
message PointwiseSpatialAttentionParameter
  attention_mask_height 1 uint32
  attention_mask_width 2 uint32
  normalization_factor 3 float   = 1.0
  is_softmax          4  bool    = false
  psa_type            5  PSAType = COLLECT
enum FillParameter ZERO=1 NOT_A_NUMBER=2
message FlowWarpParameter
  fill_value          1  FillParameter = ZERO
message ColorConvParameter
  input               1  int32
  output              2  int32
""")
extend("LayerParameter", """
  pointwise_spatial_attention_param 1001 PointwiseSpatialAttentionParameter
  flow_warp_param     -  FlowWarpParameter
  color_conv_param    -  ColorConvParameter
""")


@dataclass(frozen=True)
class PSAParams:
    collect: bool
    softmax: bool
    norm: float | None
    """None: the mask size (height x width)."""
    mask: tuple[int, int] | None
    """None: (2H - 1, 2W - 1), covering the whole map from every position."""


@register
class PointwiseSpatialAttention(LayerSpec):
    type = "PointwiseSpatialAttention"
    bottoms = (2, 2)
    semantics = "PSANet (hszhao/PSANet): features (N, C, H, W) aggregated with attention maps (N, mask_h x mask_w, H, W)"

    def parse(self, ctx: ParseContext) -> PSAParams:
        pp = ctx.param("pointwise_spatial_attention_param")
        has_h, has_w = pp.has("attention_mask_height"), pp.has("attention_mask_width")
        if has_h != has_w:
            raise ctx.error("give both attention_mask_height and attention_mask_width, or neither", "attention_mask_height", pp)
        mask = None
        if has_h:
            mask = (int(plain(ctx, pp, "attention_mask_height")), int(plain(ctx, pp, "attention_mask_width")))
            if min(mask) <= 1 or mask[0] % 2 == 0 or mask[1] % 2 == 0:
                raise ctx.error(f"the attention mask must be odd and larger than 1, got {list(mask)}", "attention_mask_height", pp)
        norm = float(plain(ctx, pp, "normalization_factor")) if pp.has("normalization_factor") else None
        return PSAParams(enum_value(ctx, pp, "psa_type") == "COLLECT", bool(pp.get("is_softmax")), norm, mask)

    def _mask(self, p: PSAParams, x: Shape) -> tuple[int, int]:
        return p.mask or (2 * x[2] - 1, 2 * x[3] - 1)

    def infer(self, p: PSAParams, shapes: list[Shape]) -> list[Shape]:
        x, attention = shapes
        if len(x) != 4:
            raise ShapeError(f"PointwiseSpatialAttention needs (N, C, H, W) features, got {list(x)}")
        mh, mw = self._mask(p, x)
        if attention != (x[0], mh * mw, x[2], x[3]):
            raise ShapeError(f"the attention input must be (N, {mh} x {mw}, H, W) = {[x[0], mh * mw, x[2], x[3]]}, got {list(attention)}")
        return [x]

    def lower(self, p: PSAParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        mh, mw = self._mask(p, shapes[0])
        norm = p.norm if p.norm is not None else float(mh * mw)
        return ModuleOp(ops_spatial.PointwiseSpatialAttention, (p.collect, p.softmax, norm, mh, mw))


@dataclass(frozen=True)
class FlowWarpParams:
    fill: float = 0.0


@register
class FlowWarp(LayerSpec):
    type = "FlowWarp"
    bottoms = (2, 2)
    semantics = "FlowNet2 (lmb-freiburg/flownet2): bilinear backward warp of an image by a (u, v) flow; outside samples 0 or NaN"

    def parse(self, ctx: ParseContext) -> FlowWarpParams:
        fill = enum_value(ctx, ctx.param("flow_warp_param"), "fill_value")
        return FlowWarpParams(0.0 if fill == "ZERO" else math.nan)

    def infer(self, p: FlowWarpParams, shapes: list[Shape]) -> list[Shape]:
        image, flow = shapes
        if len(image) != 4 or flow != (image[0], 2, image[2], image[3]):
            raise ShapeError(f"FlowWarp needs an image (N, C, H, W) and a flow (N, 2, H, W); got {list(image)} and {list(flow)}")
        return [image]

    def lower(self, p: FlowWarpParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_spatial.flow_warp, (In(0), In(1), p.fill))


# the fork's ColorSpace enum; the numbers are those its prototxts document (0 = BGR, 3 = Lab)
_SPACES = {0: "BGR", 3: "Lab"}
_NAMES = ("BGR", "RGB", "XYZ", "Lab", "Gray")
_PAIRS = {
    ("Gray", "RGB"), ("Lab", "RGB"), ("Lab", "XYZ"), ("RGB", "Gray"), ("RGB", "Lab"),
    ("RGB", "RGB"), ("RGB", "XYZ"), ("XYZ", "Lab"), ("XYZ", "RGB"),
}


@dataclass(frozen=True)
class ColorConvParams:
    src: str
    dst: str


@register
class ColorConv(LayerSpec):
    type = "ColorConv"
    semantics = "colorization nets' ColorConv: sRGB/BGR (0-255) ↔ XYZ ↔ Lab (D65) or Gray; converts only the first image of a batch"

    def _space(self, ctx: ParseContext, name: str) -> str:
        cp = ctx.param("color_conv_param")
        if not cp.has(name):
            raise ctx.error(f"color_conv_param.{name} is required", "color_conv_param")
        value = cp.get(name)
        if isinstance(value, str) and str(value) in _NAMES:  # a bare name (an Ident, or a Template in this int field)
            return str(value)
        if isinstance(value, int) and value in _SPACES:
            return _SPACES[value]
        raise ctx.unsupported(f"{name}: colour space {value} is not one this converter can name (BGR, RGB, XYZ, Lab, Gray, or 0/3)", name, cp)

    def parse(self, ctx: ParseContext) -> ColorConvParams:
        src, dst = self._space(ctx, "input"), self._space(ctx, "output")
        pair = ("RGB" if src == "BGR" else src, "RGB" if dst == "BGR" else dst)
        if pair not in _PAIRS:
            raise ctx.error(f"ColorConv does not convert {src} to {dst} (Caffe leaves the output untouched)")
        if ctx.options.get("phase", "TEST") == "TEST":
            ctx.note("ColorConv converts only the first image of a batch (as the fork does); the others come out as zeros")
        return ColorConvParams(src, dst)

    def infer(self, p: ColorConvParams, shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        want = 1 if p.src == "Gray" else 3
        if len(x) != 4 or x[1] != want:
            raise ShapeError(f"ColorConv from {p.src} needs (N, {want}, H, W) images, got {list(x)}")
        return [(x[0], 1 if p.dst == "Gray" else 3, x[2], x[3])]

    def lower(self, p: ColorConvParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_spatial.color_convert, (In(0), p.src, p.dst, 1 if p.dst == "Gray" else 3))
