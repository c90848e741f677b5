"""Padding and resizing layers of Caffe forks: Pad (brocolli) and Interp (DeepLab / PSPNet).

* **Pad**: constant padding of H and W by ``pad_u``/``pad_d``/``pad_l``/``pad_r`` (negative
  values crop), with ``pad_value`` (REPLICATE and REFLECT modes too).  The DSL's
  ``zero_padding`` lowers to it.
* **Interp**: bilinear resize with corners aligned (DeepLab's ``caffe_cpu_interp2``).
  The size comes from ``height``/``width``, from ``zoom_factor`` (out = in + (in−1)(z−1)),
  ``shrink_factor`` (out = (in−1)/s + 1), both (shrink, then zoom), or a second bottom
  whose H×W it takes (PSPNet).  ``pad_beg``/``pad_end`` (≤ 0) crop the input first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import In, ModuleOp
from ..errors import ShapeError
from ..lazy import caffe_ops, nn
from ..prototxt.schema import define, extend
from .common import enum_value, plain
from .registry import LayerSpec, ParseContext, Shape, register

define("""
enum PadType CONSTANT=0 REPLICATE=1 REFLECT=2
message PadParameter
  pad_type            1  PadType = CONSTANT
  pad_u               2  int32   = 0
  pad_d               3  int32   = 0
  pad_l               4  int32   = 0
  pad_r               5  int32   = 0
  pad_value           6  float   = 0
message InterpParameter
  height              -  int32   = 0
  width               -  int32   = 0
  zoom_factor         -  int32   = 1
  shrink_factor       -  int32   = 1
  pad_beg             -  int32   = 0
  pad_end             -  int32   = 0
""")
extend("LayerParameter", """
  pad_param         504  PadParameter
  interp_param        -  InterpParameter
""")


@dataclass(frozen=True)
class PadParams:
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    """top, bottom, left, right (negative crops)"""
    value: float = 0.0
    mode: str = "CONSTANT"


@register
class Pad(LayerSpec):
    type = "Pad"
    semantics = "brocolli-caffe: pad H and W by pad_u/pad_d/pad_l/pad_r with pad_value (or replicate/reflect)"

    def parse(self, ctx: ParseContext) -> PadParams:
        pp = ctx.param("pad_param")
        pads = tuple(int(plain(ctx, pp, k)) for k in ("pad_u", "pad_d", "pad_l", "pad_r"))
        return PadParams(pads, float(plain(ctx, pp, "pad_value")), enum_value(ctx, pp, "pad_type"))  # type: ignore[arg-type]

    def infer(self, p: PadParams, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        if len(shape) != 4:
            raise ShapeError(f"Pad needs a 4-d input (N, C, H, W), got shape {list(shape)}")
        t, b, left, right = p.pads
        h, w = shape[2] + t + b, shape[3] + left + right
        if h <= 0 or w <= 0:
            raise ShapeError(f"cropping by {list(p.pads)} leaves nothing of a {shape[2]}x{shape[3]} input")
        return [(shape[0], shape[1], h, w)]

    def lower(self, p: PadParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        t, b, left, right = p.pads
        sides = (left, right, t, b)
        if p.mode == "REPLICATE":
            return ModuleOp(nn.ReplicationPad2d, (sides,))
        if p.mode == "REFLECT":
            return ModuleOp(nn.ReflectionPad2d, (sides,))
        if p.value == 0.0:
            return ModuleOp(nn.ZeroPad2d, (sides,))
        return ModuleOp(nn.ConstantPad2d, (sides, p.value))


@dataclass(frozen=True)
class InterpParams:
    height: int = 0
    width: int = 0
    zoom: int = 1
    shrink: int = 1
    pad_beg: int = 0
    pad_end: int = 0
    align_corners: bool = True
    tf1: bool = False
    """TensorFlow 1's resize_bilinear without align_corners (caffe-tensorflow nets): source = destination * in / out."""


def interp_size(p: InterpParams, shapes: list[Shape]) -> tuple[int, int]:
    shape = shapes[0]
    if len(shape) != 4:
        raise ShapeError(f"Interp needs a 4-d input (N, C, H, W), got shape {list(shape)}")
    h, w = shape[2] + p.pad_beg + p.pad_end, shape[3] + p.pad_beg + p.pad_end
    if h <= 0 or w <= 0:
        raise ShapeError(f"pad_beg/pad_end crop away the whole {shape[2]}x{shape[3]} input")
    if len(shapes) > 1:
        return shapes[1][2], shapes[1][3]
    if p.height and p.width:
        return p.height, p.width
    if p.shrink > 1:
        h, w = (h - 1) // p.shrink + 1, (w - 1) // p.shrink + 1
    if p.zoom > 1:
        h, w = h + (h - 1) * (p.zoom - 1), w + (w - 1) * (p.zoom - 1)
    return h, w


@register
class Interp(LayerSpec):
    type = "Interp"
    bottoms = (1, 2)
    semantics = "DeepLab / PSPNet: bilinear with aligned corners; zoom, shrink, explicit size or a second bottom's size"

    def parse(self, ctx: ParseContext) -> InterpParams:
        ip = ctx.param("interp_param")
        values = {k: int(plain(ctx, ip, k)) for k in ("height", "width", "zoom_factor", "shrink_factor", "pad_beg", "pad_end")}
        if values["pad_beg"] > 0 or values["pad_end"] > 0:
            raise ctx.error("pad_beg and pad_end must not be positive (they crop)", "pad_beg", ip)
        if values["zoom_factor"] < 1 or values["shrink_factor"] < 1:
            raise ctx.error("zoom_factor and shrink_factor must be at least 1", "interp_param")
        given = (ip.has("height") and ip.has("width")) or ip.has("zoom_factor") or ip.has("shrink_factor") or ctx.n_bottoms == 2
        if not given:
            raise ctx.error("give height and width, zoom_factor, shrink_factor, or a second bottom", "interp_param")
        return InterpParams(values["height"], values["width"], values["zoom_factor"], values["shrink_factor"], values["pad_beg"], values["pad_end"])

    def infer(self, p: InterpParams, shapes: list[Shape]) -> list[Shape]:
        h, w = interp_size(p, shapes)
        return [(shapes[0][0], shapes[0][1], h, w)]

    def window(self, p: InterpParams) -> tuple[tuple[int, int, int, int | None], ...] | None:
        # corners aligned: output pixel 0 is input pixel 0 (a crop by pad_beg moves it; not followed here)
        return ((1, 1, p.zoom, 0 if p.pad_beg == 0 else None),) * 2 if p.zoom > 1 else None

    def lower(self, p: InterpParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        crop = (-p.pad_beg, -p.pad_end)
        if len(shapes) == 2 and crop == (0, 0):
            return ModuleOp(caffe_ops.ResizeLike, (), {"tf1": True} if p.tf1 else {} if p.align_corners else {"align_corners": False})
        kwargs: dict[str, object] = {}
        if len(shapes) == 2:  # cropped, then resized to the second bottom's size
            kwargs["height"], kwargs["width"] = shapes[1][2], shapes[1][3]
        elif p.height and p.width:
            kwargs["height"], kwargs["width"] = p.height, p.width
        else:
            kwargs.update({k: v for k, v in (("zoom", p.zoom), ("shrink", p.shrink)) if v != 1})
        if crop != (0, 0):
            kwargs["crop"] = crop
        if not p.align_corners:
            kwargs["align_corners"] = False
        if p.tf1:
            kwargs["tf1"] = True
        return ModuleOp(caffe_ops.Interp, (), kwargs, call=(In(0),))
