"""Upsample, a fork layer with two incompatible meanings.

* ``nearest`` (default; brocolli-caffe, the build the conformance cases come from, and
  YOLO ports): repeat each pixel ``scale`` times along H and W.  A second (mask) bottom
  is accepted and ignored — that is what this Caffe does, and what the conformance case
  ``layer_embed_upsample`` confirms.
* ``segnet`` (alexgkendall/caffe-segnet): max-unpooling — each value goes back to the
  position recorded in the mask bottom, zeros elsewhere.  Select it with the option
  ``Upsample=segnet`` (CLI: ``--semantics Upsample=segnet``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import In, ModuleOp
from ..errors import ShapeError
from ..lazy import caffe_ops, nn
from ..prototxt.schema import define, extend
from .common import plain
from .registry import LayerSpec, ParseContext, Shape, register

# union of the fork's fields: brocolli (scale, dims_num) and SegNet (scale_h/w, pad_out_h/w, upsample_h/w)
define("""
message UpsampleParameter
  scale               1  int32
  dims_num            2  int32   = 4
  scale_h             -  uint32
  scale_w             -  uint32
  pad_out_h           -  bool    = false
  pad_out_w           -  bool    = false
  upsample_h          -  uint32
  upsample_w          -  uint32
""")
extend("LayerParameter", """
  upsample_param    500  UpsampleParameter
""")


@dataclass(frozen=True)
class UpsampleParams:
    mode: str = "nearest"
    scale: tuple[int, int] = (2, 2)
    size: tuple[int, int] | None = None
    """SegNet: explicit output size (upsample_h/upsample_w)."""
    pad_out: tuple[bool, bool] = (False, False)


@register
class Upsample(LayerSpec):
    type = "Upsample"
    bottoms = (1, 2)
    semantics = "brocolli-caffe nearest-neighbour (mask ignored); SegNet max-unpooling with option Upsample=segnet"

    def parse(self, ctx: ParseContext) -> UpsampleParams:
        up = ctx.param("upsample_param")
        mode = ctx.options.get("Upsample", "nearest")
        if mode not in ("nearest", "segnet"):
            raise ctx.error(f"unknown Upsample semantics {mode!r}; choose nearest or segnet")
        default = 1 if mode == "nearest" else 2
        scale = int(plain(ctx, up, "scale") or default)
        sh = int(up.get("scale_h") or scale)
        sw = int(up.get("scale_w") or scale)
        if min(sh, sw) <= 0:
            raise ctx.error(f"scale must be positive, got {[sh, sw]}", "scale", up)
        if mode == "nearest":
            if int(up.get("dims_num")) != 4:
                raise ctx.error("only dims_num 4 (N, C, H, W) is supported", "dims_num", up)
            return UpsampleParams("nearest", (sh, sw))
        if ctx.n_bottoms != 2:
            raise ctx.error("SegNet Upsample needs the pooling mask as a second bottom")
        size = (int(up.get("upsample_h")), int(up.get("upsample_w"))) if up.has("upsample_h") and up.has("upsample_w") else None
        return UpsampleParams("segnet", (sh, sw), size, (bool(up.get("pad_out_h")), bool(up.get("pad_out_w"))))

    def infer(self, p: UpsampleParams, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        if len(shape) != 4:
            raise ShapeError(f"Upsample needs a 4-d input (N, C, H, W), got shape {list(shape)}")
        if len(shapes) == 2 and p.mode == "segnet" and shapes[1] != shape:
            raise ShapeError(f"mask shape {list(shapes[1])} differs from input shape {list(shape)}")
        if p.size is not None:
            return [(shape[0], shape[1], *p.size)]
        h = shape[2] * p.scale[0] - int(p.pad_out[0])
        w = shape[3] * p.scale[1] - int(p.pad_out[1])
        return [(shape[0], shape[1], h, w)]

    def window(self, p: UpsampleParams) -> tuple[tuple[int, int, int, int | None], ...]:
        # nearest: output pixel j repeats input pixel j // s (a deconvolution with an s-wide kernel);
        # max-unpooling puts each value where its mask says: no fixed placement
        pad = 0 if p.mode == "nearest" else None
        return ((p.scale[0], 1, p.scale[0], pad), (p.scale[1], 1, p.scale[1], pad))

    def lower(self, p: UpsampleParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        if p.mode == "nearest":
            factor = float(p.scale[0]) if p.scale[0] == p.scale[1] else (float(p.scale[0]), float(p.scale[1]))
            return ModuleOp(nn.Upsample, (), {"scale_factor": factor, "mode": "nearest"}, call=(In(0),))
        (out,) = self.infer(p, shapes)
        return ModuleOp(caffe_ops.MaxUnpool, ((out[2], out[3]),))
