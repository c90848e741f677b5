"""Softmax, Reduction and ArgMax: layers that work along (or from) one axis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp
from ..errors import ShapeError
from ..lazy import caffe_ops, nn
from .common import enum_value, plain
from .registry import LayerSpec, ParseContext, Shape, canonical_axis, count, register


@dataclass(frozen=True)
class SoftmaxParams:
    axis: int = 1


@register
class Softmax(LayerSpec):
    type = "Softmax"
    description = "softmax along `axis` (default 1, the channels — not the last axis)"

    def parse(self, ctx: ParseContext) -> SoftmaxParams:
        return SoftmaxParams(int(ctx.param("softmax_param").get("axis")))

    def infer(self, p: SoftmaxParams, shapes: list[Shape]) -> list[Shape]:
        canonical_axis(p.axis, len(shapes[0]))
        return [shapes[0]]

    def lower(self, p: SoftmaxParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        return ModuleOp(nn.Softmax, (), {"dim": canonical_axis(p.axis, len(shapes[0]))})


@dataclass(frozen=True)
class ReductionParams:
    operation: str = "SUM"
    axis: int = 0
    coeff: float = 1.0


@register
class Reduction(LayerSpec):
    type = "Reduction"
    description = "SUM/ASUM/SUMSQ/MEAN over every axis from `axis` on, times coeff"

    def parse(self, ctx: ParseContext) -> ReductionParams:
        rp = ctx.param("reduction_param")
        return ReductionParams(enum_value(ctx, rp, "operation"), int(rp.get("axis")), float(plain(ctx, rp, "coeff")))

    def infer(self, p: ReductionParams, shapes: list[Shape]) -> list[Shape]:
        axis = canonical_axis(p.axis, len(shapes[0]))
        return [tuple(shapes[0][:axis])]

    def lower(self, p: ReductionParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        axis = canonical_axis(p.axis, len(shapes[0]))
        return CallOp(caffe_ops.reduction, (In(0), p.operation, axis, p.coeff))


@dataclass(frozen=True)
class ArgMaxParams:
    axis: int | None = None
    top_k: int = 1
    out_max_val: bool = False


@register
class ArgMax(LayerSpec):
    type = "ArgMax"
    description = "indices (or values) of the top_k largest entries along `axis`, or over each flattened sample"

    def parse(self, ctx: ParseContext) -> ArgMaxParams:
        ap = ctx.param("argmax_param")
        top_k = int(plain(ctx, ap, "top_k"))
        if top_k < 1:
            raise ctx.error(f"top_k must be at least 1, got {top_k}", "top_k", ap)
        axis = int(ap.get("axis")) if ap.has("axis") else None
        return ArgMaxParams(axis, top_k, bool(ap.get("out_max_val")))

    def infer(self, p: ArgMaxParams, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        if p.axis is not None:
            axis = canonical_axis(p.axis, len(shape))
            if p.top_k > shape[axis]:
                raise ShapeError(f"top_k {p.top_k} exceeds the size {shape[axis]} of axis {axis}")
            out = list(shape)
            out[axis] = p.top_k
            return [tuple(out)]
        if p.top_k > count(shape, 1):
            raise ShapeError(f"top_k {p.top_k} exceeds the {count(shape, 1)} values per sample")
        out = [1] * max(len(shape), 3)
        out[0], out[1], out[2] = shape[0], 2 if p.out_max_val else 1, p.top_k
        return [tuple(out)]

    def lower(self, p: ArgMaxParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        axis = -1 if p.axis is None else canonical_axis(p.axis, len(shapes[0]))
        return CallOp(caffe_ops.argmax, (In(0), axis, p.top_k, p.out_max_val))
