"""InnerProduct: flatten from ``axis`` to the end (C·H·W order), then a linear map.

Weights are (num_output, K), or (K, num_output) with ``transpose: true``; leading axes
before ``axis`` are kept.  happynear's fork adds ``normalize: true``: each class's
weight row is scaled to unit length (sqrt(sum w^2 + 1e-6)) before use, as its first
forward pass does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import ModuleOp
from ..lazy import caffe_ops, nn
from ..prototxt.message import Msg
from .common import plain
from .registry import LayerSpec, ParseContext, Shape, canonical_axis, count, register


@dataclass(frozen=True)
class InnerProductParams:
    num_output: int
    bias_term: bool = True
    axis: int = 1
    transpose: bool = False
    normalize: bool = False
    """happynear's fork: unit-length weight rows."""


@register
class InnerProduct(LayerSpec):
    type = "InnerProduct"
    fillers = ("inner_product_param", ("weight_filler", "bias_filler"))
    param_field = "inner_product_param"
    description = "fully connected layer over the axes from `axis` on; `transpose` weights"

    def parse(self, ctx: ParseContext) -> InnerProductParams:
        ip = ctx.param("inner_product_param")
        if not ip.has("num_output"):
            raise ctx.error("inner_product_param.num_output is required", "inner_product_param")
        num_output = int(plain(ctx, ip, "num_output"))
        if num_output <= 0:
            raise ctx.error(f"num_output must be positive, got {num_output}", "num_output", ip)
        normalize = bool(ip.get("normalize"))
        if normalize and ip.get("transpose"):
            raise ctx.unsupported("normalize with transpose (the fork then scales the wrong rows)", "normalize", ip)
        return InnerProductParams(num_output, bool(ip.get("bias_term")), int(ip.get("axis")), bool(ip.get("transpose")), normalize)

    def unparse(self, p: InnerProductParams, layer: Msg) -> Msg:
        layer = layer.copy()
        ip = layer.sub("inner_product_param").copy()
        for name in ("num_output", "bias_term", "axis", "transpose", "normalize"):
            ip.remove(name)
        ip.entries.insert(0, ("num_output", p.num_output, 0, 0))
        if not p.bias_term:
            ip.add("bias_term", False)
        if p.axis != 1:
            ip.add("axis", p.axis)
        if p.transpose:
            ip.add("transpose", True)
        if p.normalize:
            ip.add("normalize", True)
        return layer.set("inner_product_param", ip)

    def _axis_k(self, p: InnerProductParams, shape: Shape) -> tuple[int, int]:
        axis = canonical_axis(p.axis, len(shape))
        return axis, count(shape, axis)

    def infer(self, p: InnerProductParams, shapes: list[Shape]) -> list[Shape]:
        axis, _ = self._axis_k(p, shapes[0])
        return [(*shapes[0][:axis], p.num_output)]

    def weight_shapes(self, p: InnerProductParams, shapes: list[Shape]) -> list[Shape]:
        _, k = self._axis_k(p, shapes[0])
        weight = (k, p.num_output) if p.transpose else (p.num_output, k)
        return [weight, (p.num_output,)] if p.bias_term else [weight]

    def lower(self, p: InnerProductParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        axis, k = self._axis_k(p, shapes[0])
        weight = blobs[0].T if p.transpose else blobs[0]
        if p.normalize:
            weight = unit_rows(weight)
        state = {"weight": weight}
        if p.bias_term:
            state["bias"] = blobs[1]
        kwargs = {} if p.bias_term else {"bias": False}
        owned = ((None if p.transpose or p.normalize else "weight"), "bias")[: len(blobs)]
        if axis == len(shapes[0]) - 1:
            return ModuleOp(nn.Linear, (k, p.num_output), kwargs, state, owned)
        if axis != 1:
            kwargs["axis"] = axis
        return ModuleOp(caffe_ops.InnerProduct, (k, p.num_output), kwargs, state, owned)


def unit_rows(weight: np.ndarray) -> np.ndarray:
    """happynear's weight normalisation: each row times 1 / sqrt(sum w^2 + 1e-6), in float32."""
    w = np.asarray(weight, np.float32)
    sum_sq = np.einsum("ij,ij->i", w, w, dtype=np.float32) + np.float32(1e-6)
    return (w * (np.float32(1.0) / np.sqrt(sum_sq, dtype=np.float32))[:, None]).astype(np.float32)
