"""Loss and metric layers: what train_val nets compute in their TEST phase.

Each top is the value Caffe writes into it — the loss before ``loss_weight``, the
accuracy as a fraction — so a converted train_val net reproduces Caffe's test-phase
numbers given data and labels.  BVLC's SoftmaxWithLoss, Accuracy, EuclideanLoss,
SigmoidCrossEntropyLoss, ContrastiveLoss, HingeLoss and MultinomialLogisticLoss, Fast
R-CNN's SmoothL1Loss (SSD's two- and three-input form is the same formula with
sigma 1), caffe-face's CenterLoss, DeepLab's SegAccuracy, caffe-heatmap's
EuclideanLossHeatmap and BVLC's Python example ``pyloss.EuclideanLossLayer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp, Op
from ..errors import ShapeError
from ..lazy import ops_loss
from ..prototxt.schema import define, extend
from .common import enum_value, plain, plain_all
from .registry import LayerSpec, ParseContext, Shape, canonical_axis, count, register

define("""
message SmoothL1LossParameter
  sigma               1  float   = 1.0
message CenterLossParameter
  num_output          1  uint32
  center_filler       2  FillerParameter
  axis                3  int32   = 1
message SegAccuracyParameter
  ignore_label        -  int32*
  output_label        -  int32*
""")
extend("LayerParameter", """
  smooth_l1_loss_param - SmoothL1LossParameter
  center_loss_param   - CenterLossParameter
  seg_accuracy_param  - SegAccuracyParameter
""")

SCALAR: Shape = ()


@dataclass(frozen=True)
class LossParams:
    normalization: str = "VALID"
    ignore_label: int | None = None
    axis: int = 1
    pre_fixed: float = 1.0
    class_weights: tuple[float, ...] = ()
    """SegNet's class_weighting (with weight_by_label_freqs), one weight per class."""


def _loss_params(ctx: ParseContext, default: str, axis: int = 1) -> LossParams:
    """loss_param: ``normalization``, or the legacy ``normalize`` (true = VALID, false = BATCH_SIZE)."""
    lp = ctx.param("loss_param")
    if lp.has("normalization"):
        mode = enum_value(ctx, lp, "normalization")
    elif lp.has("normalize"):
        mode = "VALID" if lp.get("normalize") else "BATCH_SIZE"
    else:
        mode = default
    ignore = int(plain(ctx, lp, "ignore_label")) if lp.has("ignore_label") else None
    weights: tuple[float, ...] = ()
    if lp.get("weight_by_label_freqs"):
        weights = tuple(float(w) for w in plain_all(ctx, lp, "class_weighting"))
        if not weights:
            raise ctx.error("weight_by_label_freqs needs the per-class weights in class_weighting", "weight_by_label_freqs", lp)
    return LossParams(mode, ignore, axis, float(plain(ctx, lp, "pre_fixed_normalizer")), weights)


def _label_count(scores: Shape, labels: Shape, axis: int, what: str = "labels") -> None:
    axis = canonical_axis(axis, len(scores))
    want = count(scores, 0, axis) * count(scores, axis + 1)
    if count(labels) != want:
        raise ShapeError(f"{count(labels)} {what} for predictions of shape {list(scores)}: expected one per position on axis {axis} ({want})")


def _same_count(a: Shape, b: Shape, what: str) -> None:
    if count(a) != count(b):
        raise ShapeError(f"{what} has {count(b)} values but the first input has {count(a)} ({list(b)} vs {list(a)})")


class _Loss(LayerSpec):
    bottoms = (2, 2)
    in_place_ok = False
    auto_tops = True
    loss = True


@register
class SoftmaxWithLoss(_Loss):
    type = "SoftmaxWithLoss"
    tops = (1, 2)
    description = "softmax along softmax_param.axis, then -log p(label) normalised per loss_param; second top: the probabilities"

    def parse(self, ctx: ParseContext) -> LossParams:
        return _loss_params(ctx, "VALID", int(ctx.param("softmax_param").get("axis")))

    def infer(self, p: LossParams, shapes: list[Shape]) -> list[Shape]:
        _label_count(shapes[0], shapes[1], p.axis)
        classes = shapes[0][canonical_axis(p.axis, len(shapes[0]))]
        if p.class_weights and len(p.class_weights) != classes:
            raise ShapeError(f"{len(p.class_weights)} class_weighting values for {classes} classes")
        return [SCALAR, shapes[0]]

    def lower(self, p: LossParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        axis = canonical_axis(p.axis, len(shapes[0]))
        ignore = 0 if p.ignore_label is None else p.ignore_label
        args = (In(0), In(1), axis, ignore, p.ignore_label is not None, p.normalization, p.pre_fixed, list(p.class_weights))
        return CallOp(ops_loss.softmax_with_loss, args, n_out=2)


@dataclass(frozen=True)
class InfogainParams:
    loss: LossParams
    softmax: bool = True
    """BVLC since 2016 (so Caffe 1.0): softmax along ``axis`` first; False: the input is
    probabilities, one label per sample (``--semantics InfogainLoss=probabilities``)."""
    runtime_matrix: bool = False


@register
class InfogainLoss(_Loss):
    type = "InfogainLoss"
    bottoms = (2, 3)
    tops = (1, 2)
    description = (
        "-sum_j H[label, j] log p_j with p the softmax along infogain_loss_param.axis, normalised per loss_param; "
        "H is the third input (or, read by Caffe from infogain_loss_param.source, an extra net input "
        "'<layer>.infogain'); InfogainLoss=probabilities: the older form on given probabilities, / N"
    )

    def parse(self, ctx: ParseContext) -> InfogainParams:
        ip = ctx.param("infogain_loss_param")
        form = ctx.options.get("InfogainLoss", "softmax")
        if form not in ("softmax", "probabilities"):
            raise ctx.error(f"InfogainLoss semantics must be softmax or probabilities, got {form!r}")
        runtime = ctx.n_bottoms == 2
        if runtime:
            if not ip.has("source"):
                raise ctx.error("with two bottoms the matrix H comes from infogain_loss_param.source, which is missing")
            ctx.runtime_input("infogain")
        if form == "probabilities":
            if ctx.n_tops > 1:
                raise ctx.error("the probabilities form of InfogainLoss has one top")
            return InfogainParams(LossParams("BATCH_SIZE"), False, runtime)
        lp = ctx.param("loss_param")
        if lp.has("normalize"):
            raise ctx.error('InfogainLoss refuses the deprecated loss_param.normalize; use "normalization"', "normalize", lp)
        return InfogainParams(_loss_params(ctx, "VALID", int(ip.get("axis"))), True, runtime)

    def infer(self, p: InfogainParams, shapes: list[Shape]) -> list[Shape]:
        x, label, h = shapes[0], shapes[1], shapes[2] if len(shapes) > 2 else None
        if p.softmax:
            _label_count(x, label, p.loss.axis)
            classes = x[canonical_axis(p.loss.axis, len(x))]
        else:
            if count(label) != x[0]:
                raise ShapeError(f"{count(label)} labels for {x[0]} samples: one label per sample")
            classes = count(x, 1)
        if h is not None and count(h) != classes * classes:
            raise ShapeError(f"H must be {classes} x {classes}, got shape {list(h)}")
        return [SCALAR, x]

    def lower(self, p: InfogainParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        axis = canonical_axis(p.loss.axis, len(shapes[0])) if p.softmax else 1
        ignore = 0 if p.loss.ignore_label is None else p.loss.ignore_label
        args = (In(0), In(1), In(2), axis, ignore, p.loss.ignore_label is not None, p.loss.normalization, p.softmax)
        return CallOp(ops_loss.infogain_loss, args, n_out=2)


@dataclass(frozen=True)
class AccuracyParams:
    top_k: int = 1
    axis: int = 1
    ignore_label: int | None = None


@register
class Accuracy(_Loss):
    type = "Accuracy"
    loss = False
    tops = (1, 2)
    auto_tops = False
    description = "fraction of positions whose label is among the top_k scores (ties count against); second top: per class"

    def parse(self, ctx: ParseContext) -> AccuracyParams:
        ap = ctx.param("accuracy_param")
        top_k = int(plain(ctx, ap, "top_k"))
        if top_k < 1:
            raise ctx.error(f"top_k must be at least 1, got {top_k}", "top_k", ap)
        ignore = int(plain(ctx, ap, "ignore_label")) if ap.has("ignore_label") else None
        return AccuracyParams(top_k, int(plain(ctx, ap, "axis")), ignore)

    def infer(self, p: AccuracyParams, shapes: list[Shape]) -> list[Shape]:
        _label_count(shapes[0], shapes[1], p.axis)
        axis = canonical_axis(p.axis, len(shapes[0]))
        if p.top_k > shapes[0][axis]:
            raise ShapeError(f"top_k {p.top_k} exceeds the {shapes[0][axis]} classes")
        return [SCALAR, (shapes[0][axis],)]

    def lower(self, p: AccuracyParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        axis = canonical_axis(p.axis, len(shapes[0]))
        ignore = 0 if p.ignore_label is None else p.ignore_label
        return CallOp(ops_loss.accuracy, (In(0), In(1), axis, p.top_k, ignore, p.ignore_label is not None), n_out=2)


@register
class EuclideanLoss(_Loss):
    type = "EuclideanLoss"
    description = "sum of squared differences / (2 N)"

    def infer(self, p: object, shapes: list[Shape]) -> list[Shape]:
        _same_count(shapes[0], shapes[1], "the second input")
        return [SCALAR]

    def lower(self, p: object, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_loss.euclidean_loss, (In(0), In(1)))


@register
class SigmoidCrossEntropyLoss(_Loss):
    type = "SigmoidCrossEntropyLoss"
    description = "cross-entropy of sigmoid(x) against targets; normalised per loss_param (default BATCH_SIZE)"

    def parse(self, ctx: ParseContext) -> LossParams:
        p = _loss_params(ctx, "BATCH_SIZE")
        if p.class_weights:
            raise ctx.unsupported("class_weighting is SegNet's SoftmaxWithLoss extension", "class_weighting", ctx.param("loss_param"))
        return p

    def infer(self, p: LossParams, shapes: list[Shape]) -> list[Shape]:
        _same_count(shapes[0], shapes[1], "the target")
        return [SCALAR]

    def lower(self, p: LossParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        ignore = 0 if p.ignore_label is None else p.ignore_label
        return CallOp(ops_loss.sigmoid_cross_entropy_loss, (In(0), In(1), ignore, p.ignore_label is not None, p.normalization, p.pre_fixed))


@dataclass(frozen=True)
class SmoothL1Params:
    sigma: float = 1.0


@register
class SmoothL1Loss(_Loss):
    type = "SmoothL1Loss"
    bottoms = (2, 4)
    semantics = "Fast R-CNN (rbgirshick/caffe-fast-rcnn): sigma, inside and outside weights; SSD's form is sigma 1"

    def parse(self, ctx: ParseContext) -> SmoothL1Params:
        sp = ctx.param("smooth_l1_loss_param")
        sigma = float(plain(ctx, sp, "sigma"))
        if sigma <= 0:
            raise ctx.error(f"sigma must be positive, got {sigma}", "sigma", sp)
        return SmoothL1Params(sigma)

    def infer(self, p: SmoothL1Params, shapes: list[Shape]) -> list[Shape]:
        for i, shape in enumerate(shapes[1:], 1):
            _same_count(shapes[0], shape, f"input {i}")
        return [SCALAR]

    def lower(self, p: SmoothL1Params, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        inside = In(2) if len(shapes) > 2 else None
        outside = In(3) if len(shapes) > 3 else None
        return CallOp(ops_loss.smooth_l1_loss, (In(0), In(1), inside, outside, p.sigma))


@dataclass(frozen=True)
class ContrastiveParams:
    margin: float = 1.0
    legacy: bool = False


@register
class ContrastiveLoss(_Loss):
    type = "ContrastiveLoss"
    bottoms = (3, 3)
    description = "pairs (a, b) with a similarity label: d^2 for similar pairs, max(margin - d, 0)^2 otherwise; / (2 N)"

    def parse(self, ctx: ParseContext) -> ContrastiveParams:
        cp = ctx.param("contrastive_loss_param")
        return ContrastiveParams(float(plain(ctx, cp, "margin")), bool(cp.get("legacy_version")))

    def infer(self, p: ContrastiveParams, shapes: list[Shape]) -> list[Shape]:
        a, b, y = shapes
        if a != b:
            raise ShapeError(f"the pair inputs have shapes {list(a)} and {list(b)}")
        if count(y) != a[0]:
            raise ShapeError(f"{count(y)} similarity labels for {a[0]} pairs")
        return [SCALAR]

    def lower(self, p: ContrastiveParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_loss.contrastive_loss, (In(0), In(1), In(2), p.margin, p.legacy))


@dataclass(frozen=True)
class HingeParams:
    l2: bool = False


@register
class HingeLoss(_Loss):
    type = "HingeLoss"
    description = "one-vs-all hinge loss, L1 or L2, / N"

    def parse(self, ctx: ParseContext) -> HingeParams:
        return HingeParams(enum_value(ctx, ctx.param("hinge_loss_param"), "norm") == "L2")

    def infer(self, p: HingeParams, shapes: list[Shape]) -> list[Shape]:
        if count(shapes[1]) != shapes[0][0]:
            raise ShapeError(f"{count(shapes[1])} labels for {shapes[0][0]} samples")
        return [SCALAR]

    def lower(self, p: HingeParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_loss.hinge_loss, (In(0), In(1), p.l2))


@register
class MultinomialLogisticLoss(_Loss):
    type = "MultinomialLogisticLoss"
    description = "-log p(label) of given probabilities (floored at 1e-20), / N"

    def infer(self, p: object, shapes: list[Shape]) -> list[Shape]:
        if count(shapes[1]) != shapes[0][0]:
            raise ShapeError(f"{count(shapes[1])} labels for {shapes[0][0]} samples")
        return [SCALAR]

    def lower(self, p: object, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_loss.multinomial_logistic_loss, (In(0), In(1)))


@dataclass(frozen=True)
class CenterLossParams:
    num_output: int
    axis: int = 1


@register
class CenterLoss(_Loss):
    type = "CenterLoss"
    semantics = "caffe-face (ydwen/caffe-face): squared distance of each feature to its class centre, / (2 N)"

    def parse(self, ctx: ParseContext) -> CenterLossParams:
        cp = ctx.param("center_loss_param")
        n = int(plain(ctx, cp, "num_output") or 0)
        if n < 1:
            raise ctx.error("num_output (the number of classes) must be given and positive", "num_output", cp)
        return CenterLossParams(n, int(plain(ctx, cp, "axis")))

    def infer(self, p: CenterLossParams, shapes: list[Shape]) -> list[Shape]:
        axis = canonical_axis(p.axis, len(shapes[0]))
        if count(shapes[1]) != count(shapes[0], 0, axis):
            raise ShapeError(f"{count(shapes[1])} labels for {count(shapes[0], 0, axis)} samples")
        return [SCALAR]

    def weight_shapes(self, p: CenterLossParams, shapes: list[Shape]) -> list[Shape]:
        return [(p.num_output, count(shapes[0], canonical_axis(p.axis, len(shapes[0]))))]

    def lower(self, p: CenterLossParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        centers = blobs[0].astype(np.float32, copy=False)
        return ModuleOp(ops_loss.CenterLoss, (list(centers.shape),), {}, {"centers": centers}, ("centers",))


@register
class PyEuclideanLoss(EuclideanLoss):
    type = "EuclideanLossLayer"
    loss = False  # a Python layer: Caffe gives it a loss weight only when the prototxt does
    python_layer = "pyloss.EuclideanLossLayer"
    semantics = "BVLC's Python example layer (examples/pycaffe/layers/pyloss.py): the same formula as EuclideanLoss"


@dataclass(frozen=True)
class SegAccuracyParams:
    ignore: tuple[int, ...] = ()


@register
class SegAccuracy(_Loss):
    type = "SegAccuracy"
    loss = False
    auto_tops = False
    semantics = "DeepLab (deeplab-public): (1, 1, 1, 3) = pixel accuracy, mean class recall, mean IoU of the batch"

    def parse(self, ctx: ParseContext) -> SegAccuracyParams:
        sp = ctx.param("seg_accuracy_param")
        if sp.all("output_label"):
            raise ctx.unsupported("per-class tops (output_label) are not converted", "output_label", sp)
        return SegAccuracyParams(tuple(int(v) for v in plain_all(ctx, sp, "ignore_label")))

    def infer(self, p: SegAccuracyParams, shapes: list[Shape]) -> list[Shape]:
        x, label = shapes
        if len(x) != 4 or len(label) != 4 or label[1] != 1 or label[0] != x[0] or label[2:] != x[2:]:
            raise ShapeError(f"SegAccuracy needs scores (N, C, H, W) and labels (N, 1, H, W); got {list(x)} and {list(label)}")
        return [(1, 1, 1, 3)]

    def lower(self, p: SegAccuracyParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_loss.seg_accuracy, (In(0), In(1), list(p.ignore)))


@register
class EuclideanLossHeatmap(_Loss):
    type = "EuclideanLossHeatmap"
    bottoms = (2, 3)
    semantics = (
        "caffe-heatmap (tpfister): mean squared difference of heatmaps, missing joints (-999) excluded; "
        "a third input (the image) only feeds the fork's visualisation"
    )

    def infer(self, p: object, shapes: list[Shape]) -> list[Shape]:
        pred, target = shapes[:2]
        if len(pred) != 4 or pred != target:
            raise ShapeError(f"prediction and target heatmaps must both be (N, C, H, W) of one shape; got {list(pred)} and {list(target)}")
        h, w = target[2], target[3]
        if h > w:
            # the fork reads pixel (i, j) at i * height + j: past each map when height > width
            raise ShapeError(f"heatmaps of height {h} > width {w} make the fork read past each map; only height <= width is defined")
        return [SCALAR]

    def lower(self, p: object, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_loss.euclidean_loss_heatmap, (In(0), In(1)))


@register
class SoftmaxWithLossOHEM(_Loss):
    type = "SoftmaxWithLossOHEM"
    tops = (1, 3)
    semantics = "R-FCN (daijifeng001/caffe-rfcn): SoftmaxWithLoss over axis 1, plus each instance's loss as a third top"

    def parse(self, ctx: ParseContext) -> LossParams:
        p = _loss_params(ctx, "VALID")
        if p.class_weights:
            raise ctx.unsupported("class_weighting is SegNet's SoftmaxWithLoss extension", "class_weighting", ctx.param("loss_param"))
        return p

    def infer(self, p: LossParams, shapes: list[Shape]) -> list[Shape]:
        _label_count(shapes[0], shapes[1], 1)
        return [SCALAR, shapes[0], shapes[1]]

    def lower(self, p: LossParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        ignore = 0 if p.ignore_label is None else p.ignore_label
        args = (In(0), In(1), ignore, p.ignore_label is not None, p.normalization, p.pre_fixed)
        return CallOp(ops_loss.softmax_with_loss_ohem, args, n_out=3)


@register
class SmoothL1LossOHEM(_Loss):
    type = "SmoothL1LossOHEM"
    bottoms = (2, 3)
    tops = (1, 2)
    semantics = "R-FCN (daijifeng001/caffe-rfcn): smooth L1 (sigma 1) normalised per loss_param, plus each instance's loss"

    def parse(self, ctx: ParseContext) -> LossParams:
        return _loss_params(ctx, "VALID")

    def infer(self, p: LossParams, shapes: list[Shape]) -> list[Shape]:
        for i, shape in enumerate(shapes[1:], 1):
            _same_count(shapes[0], shape, f"input {i}")
        pred = shapes[0]
        return [SCALAR, (pred[0], 1, *pred[2:])]

    def lower(self, p: LossParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        weights = In(2) if len(shapes) > 2 else None
        return CallOp(ops_loss.smooth_l1_loss_ohem, (In(0), In(1), weights, p.normalization, p.pre_fixed), n_out=2)
