"""Scale and Bias: multiply or add a learned (or second-input) blob lined up at ``axis``.

The learned blob spans ``num_axes`` axes of the input starting at ``axis`` (``-1``: to
the end, ``0``: a scalar).  With two bottoms the second bottom plays the blob's part;
Scale's optional bias is then its only learned blob.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp
from ..errors import ShapeError
from ..lazy import caffe_ops
from .registry import LayerSpec, ParseContext, Shape, canonical_axis, register


@dataclass(frozen=True)
class ScaleParams:
    axis: int = 1
    num_axes: int = 1
    bias_term: bool = False


def _span(p: ScaleParams, shapes: list[Shape]) -> tuple[int, Shape]:
    """Canonical axis and the shape of the scale (or bias) blob."""
    shape = shapes[0]
    if len(shapes) == 2:
        other = shapes[1]
        axis = canonical_axis(p.axis, len(shape)) if shape else 0
        if tuple(shape[axis : axis + len(other)]) != tuple(other):
            raise ShapeError(f"second input shape {list(other)} does not match input shape {list(shape)} from axis {axis}")
        return axis, other
    if p.num_axes < -1:
        raise ShapeError(f"num_axes must be -1 or more, got {p.num_axes}")
    axis = canonical_axis(p.axis, len(shape)) if p.num_axes != 0 or shape else 0
    end = len(shape) if p.num_axes == -1 else axis + p.num_axes
    if end > len(shape):
        raise ShapeError(f"axis {axis} with num_axes {p.num_axes} runs past the {len(shape)}-d input")
    return axis, tuple(shape[axis:end])


class _ScaleLike(LayerSpec):
    bottoms = (1, 2)
    field = ""

    def parse(self, ctx: ParseContext) -> ScaleParams:
        param = ctx.param(self.field)
        bias = bool(param.get("bias_term")) if self.type == "Scale" else False
        return ScaleParams(int(param.get("axis")), int(param.get("num_axes")), bias)

    def infer(self, p: ScaleParams, shapes: list[Shape]) -> list[Shape]:
        _span(p, shapes)
        return [shapes[0]]


@register
class Scale(_ScaleLike):
    type = "Scale"
    fillers = ("scale_param", ("filler", "bias_filler"))
    fill_values = (1.0,)
    field = "scale_param"
    description = "x * scale (+ bias), scale learned or given as a second input"

    def weight_shapes(self, p: ScaleParams, shapes: list[Shape]) -> list[Shape]:
        _, blob = _span(p, shapes)
        if len(shapes) == 2:
            return [blob] if p.bias_term else []
        return [blob, blob] if p.bias_term else [blob]

    def lower(self, p: ScaleParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp | CallOp:
        axis, blob = _span(p, shapes)
        if len(shapes) == 2:
            if p.bias_term:
                return ModuleOp(caffe_ops.ScaleByAndBias, (list(blob), axis), state={"bias": blobs[0]}, blob_params=("bias",))
            return CallOp(caffe_ops.scale_by, (In(0), In(1), axis))
        kwargs: dict[str, object] = {}
        if axis != 1:
            kwargs["axis"] = axis
        state = {"weight": blobs[0]}
        if p.bias_term:
            kwargs["bias"] = True
            state["bias"] = blobs[1]
        return ModuleOp(caffe_ops.Scale, (list(blob),), kwargs, state, ("weight", "bias")[: len(blobs)])


@register
class Bias(_ScaleLike):
    type = "Bias"
    fillers = ("bias_param", ("filler",))
    field = "bias_param"
    description = "x + bias, bias learned or given as a second input"

    def weight_shapes(self, p: ScaleParams, shapes: list[Shape]) -> list[Shape]:
        _, blob = _span(p, shapes)
        return [] if len(shapes) == 2 else [blob]

    def lower(self, p: ScaleParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp | CallOp:
        axis, blob = _span(p, shapes)
        if len(shapes) == 2:
            return CallOp(caffe_ops.bias_by, (In(0), In(1), axis))
        kwargs = {"axis": axis} if axis != 1 else {}
        return ModuleOp(caffe_ops.Bias, (list(blob),), kwargs, {"bias": blobs[0]}, ("bias",))

