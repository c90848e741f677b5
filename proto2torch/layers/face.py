"""Margin layers of face-recognition forks: SphereFace's MarginInnerProduct (A-Softmax)
and AM-Softmax's LabelSpecificAdd.

Both change the logit of each sample's labelled class, so they take the label as a
second bottom.  Their margins anneal with a training iteration counter that Caffe
keeps in the layer; a converted net evaluates them as Caffe's first forward pass does
(counter = ``iteration`` + 1 for SphereFace, ``iteration`` for AM-Softmax).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp, Op
from ..errors import ShapeError
from ..lazy import ops_loss
from ..prototxt.schema import define, extend
from .common import enum_value, plain
from .registry import LayerSpec, ParseContext, Shape, canonical_axis, count, register

define("""
enum MarginType SINGLE=0 DOUBLE=1 TRIPLE=2 QUADRUPLE=3
message MarginInnerProductParameter
  num_output          1  uint32
  type                2  MarginType = SINGLE
  weight_filler       3  FillerParameter
  axis                4  int32   = 1
  base                5  float   = 1
  gamma               6  float   = 0
  power               7  float   = 1
  iteration           8  int32   = 0
  lambda_min          9  float   = 0
message LabelSpecificAddParameter
  bias                1  float   = 0
  transform_test      2  bool    = false
  bias_base           3  float   = 0
  bias_gamma          4  float   = 0
  bias_power          5  float   = 0
  bias_min            6  float   = 0
  bias_max            7  float   = 3.4028234663852886e38
  iteration           8  int32   = 0
""")
extend("LayerParameter", """
  margin_inner_product_param - MarginInnerProductParameter
  label_specific_add_param - LabelSpecificAddParameter
""")

_MARGINS = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3, "QUADRUPLE": 4}


@dataclass(frozen=True)
class MarginInnerProductParams:
    num_output: int
    margin: int
    axis: int
    lambda_: float


@register
class MarginInnerProduct(LayerSpec):
    type = "MarginInnerProduct"
    bottoms = (2, 2)
    tops = (2, 2)
    semantics = "SphereFace (wy1iu/sphereface): A-Softmax logits with normalised class weights; second top: lambda"
    fillers = ("margin_inner_product_param", ("weight_filler",))

    def parse(self, ctx: ParseContext) -> MarginInnerProductParams:
        mp = ctx.param("margin_inner_product_param")
        n = int(plain(ctx, mp, "num_output") or 0)
        if n < 1:
            raise ctx.error("num_output must be positive", "num_output", mp)
        iteration = int(plain(ctx, mp, "iteration")) + 1  # Caffe counts the forward pass before using it
        base, gamma, power = (float(plain(ctx, mp, k)) for k in ("base", "gamma", "power"))
        lam = max(float(np.float32(base) * np.float32(1.0 + gamma * iteration) ** np.float32(-power)), float(plain(ctx, mp, "lambda_min")))
        if gamma:
            ctx.note(f"lambda anneals with Caffe's iteration counter; the value of the first forward pass ({lam:g}) is used")
        return MarginInnerProductParams(n, _MARGINS[enum_value(ctx, mp, "type")], int(plain(ctx, mp, "axis")), lam)

    def infer(self, p: MarginInnerProductParams, shapes: list[Shape]) -> list[Shape]:
        x, label = shapes
        axis = canonical_axis(p.axis, len(x))
        if count(label) != count(x, 0, axis):
            raise ShapeError(f"{count(label)} labels for {count(x, 0, axis)} samples")
        return [(*x[:axis], p.num_output), (1,)]

    def weight_shapes(self, p: MarginInnerProductParams, shapes: list[Shape]) -> list[Shape]:
        return [(p.num_output, count(shapes[0], canonical_axis(p.axis, len(shapes[0]))))]

    def lower(self, p: MarginInnerProductParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        # Caffe rescales its weight blob to unit rows in every forward pass; do it once here
        weight = np.asarray(blobs[0], np.float32)
        scale = np.float32(1.0) / np.sqrt(np.einsum("ij,ij->i", weight, weight, dtype=np.float32), dtype=np.float32)
        normalised = (weight * scale[:, None]).astype(np.float32)
        return ModuleOp(ops_loss.MarginInnerProduct, (list(weight.shape), p.margin, p.lambda_), {}, {"weight": normalised}, n_out=2)


@dataclass(frozen=True)
class LabelSpecificAddParams:
    bias: float
    active: bool


@register
class LabelSpecificAdd(LayerSpec):
    type = "LabelSpecificAdd"
    bottoms = (2, 2)
    tops = (1, 2)
    semantics = (
        "AM-Softmax (happynear/AMSoftmax): adds a (negative) margin to the labelled logit in training "
        "(and at test time with transform_test); otherwise the identity"
    )

    def parse(self, ctx: ParseContext) -> LabelSpecificAddParams:
        lp = ctx.param("label_specific_add_param")
        train = ctx.options.get("phase", "TEST") == "TRAIN"
        bias = float(plain(ctx, lp, "bias"))
        if lp.has("bias_base"):
            it = int(plain(ctx, lp, "iteration"))
            base, gamma, power = (float(plain(ctx, lp, k)) for k in ("bias_base", "bias_gamma", "bias_power"))
            bias = base + (1.0 + gamma * it) ** power - 1.0
            bias = min(max(bias, float(plain(ctx, lp, "bias_min"))), float(plain(ctx, lp, "bias_max")))
            if train and gamma:
                ctx.note(f"the margin anneals with Caffe's iteration counter; the first forward pass's value ({bias:g}) is used")
        return LabelSpecificAddParams(bias, train or bool(lp.get("transform_test")))

    def infer(self, p: LabelSpecificAddParams, shapes: list[Shape]) -> list[Shape]:
        x, label = shapes
        if count(label) != x[0]:
            raise ShapeError(f"{count(label)} labels for {x[0]} samples")
        return [x, (1,)]

    def lower(self, p: LabelSpecificAddParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_loss.label_specific_add, (In(0), In(1), p.bias, p.active), n_out=2)
