"""Eltwise: SUM (with optional per-input coefficients), PROD or MAX of same-shaped inputs,
and SENet's Axpy.

Caffe does not broadcast: every input must have exactly the first one's shape.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, InList
from ..errors import ShapeError
from ..lazy import caffe_ops, torch
from .common import enum_value
from .registry import LayerSpec, ParseContext, Shape, register


@dataclass(frozen=True)
class EltwiseParams:
    operation: str = "SUM"
    coeffs: tuple[float, ...] = ()


@register
class Eltwise(LayerSpec):
    type = "Eltwise"
    bottoms = (2, None)
    description = "SUM with coefficients, PROD, MAX over inputs of one shape"

    def parse(self, ctx: ParseContext) -> EltwiseParams:
        ep = ctx.param("eltwise_param")
        op = enum_value(ctx, ep, "operation")
        coeffs = tuple(float(c) for c in ep.all("coeff"))
        if coeffs and op != "SUM":
            raise ctx.error(f"coeff applies to SUM only, not {op}", "coeff", ep)
        if coeffs and len(coeffs) != ctx.n_bottoms:
            raise ctx.error(f"{len(coeffs)} coeff values for {ctx.n_bottoms} inputs; give one per input", "coeff", ep)
        if all(c == 1.0 for c in coeffs):
            coeffs = ()
        return EltwiseParams(op, coeffs)

    def infer(self, p: EltwiseParams, shapes: list[Shape]) -> list[Shape]:
        for i, shape in enumerate(shapes[1:], 1):
            if shape != shapes[0]:
                raise ShapeError(f"input {i} has shape {list(shape)} but input 0 has {list(shapes[0])}; Eltwise does not broadcast")
        return [shapes[0]]

    def lower(self, p: EltwiseParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        two = len(shapes) == 2
        if p.operation == "SUM":
            if p.coeffs:
                return CallOp(caffe_ops.eltwise_sum, (InList(), list(p.coeffs)))
            return CallOp(operator.add, (In(0), In(1))) if two else CallOp(caffe_ops.eltwise_add, (InList(),))
        if p.operation == "PROD":
            return CallOp(operator.mul, (In(0), In(1))) if two else CallOp(caffe_ops.eltwise_prod, (InList(),))
        return CallOp(torch.maximum, (In(0), In(1))) if two else CallOp(caffe_ops.eltwise_max, (InList(),))


@register
class Axpy(LayerSpec):
    type = "Axpy"
    bottoms = (3, 3)
    semantics = "SENet (hujie-frank/SENet): a * x + y, with a of shape (N, C, 1, 1) scaling each channel of x"

    def infer(self, p: object, shapes: list[Shape]) -> list[Shape]:
        a, x, y = shapes
        if x != y:
            raise ShapeError(f"x {list(x)} and y {list(y)} must have the same shape")
        if len(x) < 2 or a[:2] != x[:2] or any(d != 1 for d in a[2:]):
            raise ShapeError(f"the scale a {list(a)} must be (N, C, 1, 1) for x {list(x)}")
        return [x]

    def lower(self, p: object, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        return CallOp(caffe_ops.axpy, (In(0), In(1), In(2)))
