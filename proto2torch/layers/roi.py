"""Region layers of Faster R-CNN and R-FCN: ROIPooling, PSROIPooling, Proposal, and
py-faster-rcnn's Python ``rpn.proposal_layer.ProposalLayer``.

Proposals have a data-dependent count: shapes give the most rows (``post_nms_topn`` per
image), the converted module returns the rows it actually keeps.

Proposal semantics (both read the foreground half of the score channels, shift the
anchors by ``feat_stride`` over the map, apply (dx, dy, dw, dh) deltas with the "+ 1"
pixel convention, clip to the image, sort by score, NMS at IoU > ``nms_thresh``):

* ``Proposal`` (C++, PVANet's sanghoon/pva-faster-rcnn): anchors of
  ``base_size * sqrt(1/ratio) * scale`` pixels; boxes under ``min_size`` (times
  im_info[2], im_info[3]) keep a score of 0 instead of being dropped.  The option
  ``Proposal=brocolli`` selects the variant of brocolli-caffe (the conformance
  oracle), whose scales are in pixels (divided by base_size) and which ignores the
  im_info scales.
* ``ProposalLayer`` (py-faster-rcnn / py-R-FCN): anchors from ratios 0.5, 1, 2 and the
  ``scales`` of param_str (8, 16, 32) rounded as numpy rounds; small boxes are dropped;
  pre/post-NMS counts, threshold and minimum size are py-faster-rcnn's TEST (or TRAIN)
  configuration defaults unless param_str names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp, Op
from ..errors import ShapeError
from ..lazy import ops_detection, ops_loss
from ..prototxt.schema import define, extend
from .common import plain, plain_all
from .python import number, python_params
from .registry import LayerSpec, ParseContext, Shape, count, register

define("""
message ROIPoolingParameter
  pooled_h            1  uint32  = 0
  pooled_w            2  uint32  = 0
  spatial_scale       3  float   = 1.0
message PSROIPoolingParameter
  spatial_scale       1  float
  output_dim          2  int32
  group_size          3  int32
message BoxAnnotatorOHEMParameter
  roi_per_img         1  uint32
  ignore_label        2  int32   = -1
message ProposalParameter
  feat_stride         1  uint32  = 16
  base_size           2  uint32  = 16
  min_size            3  uint32  = 16
  ratio               4  float*
  scale               5  float*
  pre_nms_topn        6  uint32  = 6000
  post_nms_topn       7  uint32  = 300
  nms_thresh          8  float   = 0.7
""")
extend("LayerParameter", """
  roi_pooling_param 8266711 ROIPoolingParameter
  psroi_pooling_param 10002 PSROIPoolingParameter
  proposal_param      -  ProposalParameter
  box_annotator_ohem_param - BoxAnnotatorOHEMParameter
""")


def _rois(shape: Shape) -> int:
    if count(shape) % 5 or shape[0] * 5 != count(shape):
        raise ShapeError(f"ROIs must be rows of (batch index, x1, y1, x2, y2), got shape {list(shape)}")
    return shape[0]


@dataclass(frozen=True)
class ROIPoolingParams:
    pooled: tuple[int, int]
    spatial_scale: float


@register
class ROIPooling(LayerSpec):
    type = "ROIPooling"
    bottoms = (2, 2)
    semantics = "Fast R-CNN (rbgirshick/caffe-fast-rcnn): max over floor/ceil bins of each rounded ROI; empty bins 0"

    def parse(self, ctx: ParseContext) -> ROIPoolingParams:
        rp = ctx.param("roi_pooling_param")
        pooled = (int(plain(ctx, rp, "pooled_h")), int(plain(ctx, rp, "pooled_w")))
        if min(pooled) < 1:
            raise ctx.error(f"pooled_h and pooled_w must be positive, got {list(pooled)}", "pooled_h", rp)
        return ROIPoolingParams(pooled, float(plain(ctx, rp, "spatial_scale")))

    def infer(self, p: ROIPoolingParams, shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) != 4:
            raise ShapeError(f"ROIPooling needs a 4-d feature map, got {list(x)}")
        return [(_rois(shapes[1]), x[1], *p.pooled)]

    def lower(self, p: ROIPoolingParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_detection.roi_pool, (In(0), In(1), p.pooled[0], p.pooled[1], p.spatial_scale))


@dataclass(frozen=True)
class PSROIPoolingParams:
    output_dim: int
    group_size: int
    spatial_scale: float


@register
class PSROIPooling(LayerSpec):
    type = "PSROIPooling"
    bottoms = (2, 2)
    semantics = "R-FCN (daijifeng001/caffe-rfcn): position-sensitive average over group_size x group_size bins"

    def parse(self, ctx: ParseContext) -> PSROIPoolingParams:
        pp = ctx.param("psroi_pooling_param")
        for name in ("spatial_scale", "output_dim", "group_size"):
            if not pp.has(name):
                raise ctx.error(f"psroi_pooling_param.{name} is required", "psroi_pooling_param")
        dim, group = int(plain(ctx, pp, "output_dim")), int(plain(ctx, pp, "group_size"))
        if dim < 1 or group < 1:
            raise ctx.error(f"output_dim and group_size must be positive, got {dim} and {group}", "output_dim", pp)
        return PSROIPoolingParams(dim, group, float(plain(ctx, pp, "spatial_scale")))

    def infer(self, p: PSROIPoolingParams, shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        want = p.output_dim * p.group_size**2
        if len(x) != 4 or x[1] != want:
            raise ShapeError(f"PSROIPooling needs (N, output_dim x group_size^2 = {want}, H, W), got {list(x)}")
        return [(_rois(shapes[1]), p.output_dim, p.group_size, p.group_size)]

    def lower(self, p: PSROIPoolingParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_detection.psroi_pool, (In(0), In(1), p.output_dim, p.group_size, p.spatial_scale))


@dataclass(frozen=True)
class ProposalParams:
    anchors: tuple[tuple[float, float, float, float], ...]
    feat_stride: int
    pre_nms_topn: int
    post_nms_topn: int
    nms_thresh: float
    min_size: float
    zero_small: bool = True
    min_scale: bool = True
    score_column: bool = False
    """Scores as (R, 1) (py-faster-rcnn) rather than (R,)."""
    max_aspect: float = 0.0
    """Drop boxes whose width / height is over this or under its inverse (TFFRCNN: 5); 0 keeps them."""


def pvanet_anchors(base_size: int, ratios: Sequence[float], scales: Sequence[float], pixel_scales: bool = False) -> np.ndarray:
    """Anchors of the C++ Proposal layer, centred on the base box, in its float arithmetic.

    ``pixel_scales`` (brocolli-caffe) divides each scale by base_size first.
    """
    f32 = np.float32
    area = f32(base_size * base_size)
    center = f32(0.5) * (f32(base_size) - f32(1))
    out = []
    for ratio in ratios:
        rw = np.sqrt(f32(area / f32(ratio)), dtype=f32)
        rh = f32(rw * f32(ratio))
        for scale in scales:
            if pixel_scales:
                half_w = f32(0.5) * int(float(rw) * float(f32(scale)) / base_size - 1.0 + 0.5)
                half_h = f32(0.5) * int(float(rh) * float(f32(scale)) / base_size - 1.0 + 0.5)
            else:
                half_w = f32(0.5) * int(f32(f32(rw * f32(scale)) - f32(1)) + f32(0.5))
                half_h = f32(0.5) * int(f32(f32(rh * f32(scale)) - f32(1)) + f32(0.5))
            out.append([center - half_w, center - half_h, center + half_w, center + half_h])
    return np.asarray(out, np.float32)


def py_faster_rcnn_anchors(base_size: int = 16, ratios: Sequence[float] = (0.5, 1.0, 2.0), scales: Sequence[float] = (8, 16, 32)) -> np.ndarray:
    """py-faster-rcnn's generate_anchors: ratio boxes of the base box rounded (numpy, half to even), then scaled."""

    def box(ws: np.ndarray, hs: np.ndarray, cx: float, cy: float) -> np.ndarray:
        return np.stack([cx - 0.5 * (ws - 1), cy - 0.5 * (hs - 1), cx + 0.5 * (ws - 1), cy + 0.5 * (hs - 1)], 1)

    size = float(base_size * base_size)
    center = 0.5 * (base_size - 1)
    ratios_a = np.asarray(ratios, np.float64)
    ws = np.round(np.sqrt(size / ratios_a))
    hs = np.round(ws * ratios_a)
    out = []
    for w, h in zip(ws, hs):
        scales_a = np.asarray(scales, np.float64)
        out.append(box(w * scales_a, h * scales_a, center, center))
    return np.concatenate(out, 0).astype(np.float32)


class _ProposalBase(LayerSpec):
    bottoms = (3, 3)
    tops = (1, 2)

    def infer(self, p: ProposalParams, shapes: list[Shape]) -> list[Shape]:
        scores, deltas, info = shapes
        a = len(p.anchors)
        if len(scores) != 4 or scores[1] != 2 * a:
            raise ShapeError(f"scores must be (N, 2 x {a} anchors, H, W), got {list(scores)}")
        if deltas != (scores[0], 4 * a, scores[2], scores[3]):
            raise ShapeError(f"deltas must be (N, 4 x {a} anchors, H, W) = {[scores[0], 4 * a, *scores[2:]]}, got {list(deltas)}")
        if count(info) < 3 * scores[0]:
            raise ShapeError(f"im_info must give (height, width, scale) per image, got shape {list(info)}")
        most = scores[0] * min(p.post_nms_topn or 1 << 30, a * scores[2] * scores[3])
        return [(most, 5), (most, 1) if p.score_column else (most,)]

    def lower(self, p: ProposalParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        kwargs = {"zero_small": p.zero_small, "min_scale": p.min_scale, "score_column": p.score_column}
        if p.max_aspect:
            kwargs["max_aspect"] = p.max_aspect
        return ModuleOp(
            ops_detection.Proposal,
            (len(p.anchors), p.feat_stride, p.pre_nms_topn, p.post_nms_topn, p.nms_thresh, p.min_size),
            kwargs,
            {"anchors": np.asarray(p.anchors, np.float32)},
            n_out=2,
        )


@register
class Proposal(_ProposalBase):
    type = "Proposal"
    semantics = "PVANet (sanghoon/pva-faster-rcnn); Proposal=brocolli for brocolli-caffe's pixel-unit scales"

    def parse(self, ctx: ParseContext) -> ProposalParams:
        pp = ctx.param("proposal_param")
        variant = ctx.options.get("Proposal", "pvanet")
        if variant not in ("pvanet", "brocolli"):
            raise ctx.error(f"unknown Proposal semantics {variant!r}; choose pvanet or brocolli")
        ratios = [float(r) for r in plain_all(ctx, pp, "ratio")]
        scales = [float(s) for s in plain_all(ctx, pp, "scale")]
        if not ratios or not scales:
            raise ctx.error("proposal_param needs at least one ratio and one scale", "proposal_param")
        base = int(plain(ctx, pp, "base_size"))
        anchors = pvanet_anchors(base, ratios, scales, pixel_scales=variant == "brocolli")
        return ProposalParams(
            tuple(tuple(float(v) for v in row) for row in anchors),
            int(plain(ctx, pp, "feat_stride")),
            int(plain(ctx, pp, "pre_nms_topn")),
            int(plain(ctx, pp, "post_nms_topn")),
            float(plain(ctx, pp, "nms_thresh")),
            float(plain(ctx, pp, "min_size")),
            zero_small=True,
            min_scale=variant == "pvanet",
        )


# py-faster-rcnn's lib/fast_rcnn/config.py defaults: (pre-NMS top N, post-NMS top N, NMS threshold, min size)
PY_FASTER_RCNN_CFG = {"TEST": (6000, 300, 0.7, 16), "TRAIN": (12000, 2000, 0.7, 16)}


@register
class PyProposal(_ProposalBase):
    type = "ProposalLayer"
    python_layer = "rpn.proposal_layer.ProposalLayer"
    semantics = "py-faster-rcnn / py-R-FCN (lib/rpn/proposal_layer.py) with its config defaults"

    def parse(self, ctx: ParseContext) -> ProposalParams:
        params = python_params(ctx)
        phase = ctx.options.get("phase", "TEST")
        pre, post, thresh, min_size = PY_FASTER_RCNN_CFG["TRAIN" if phase == "TRAIN" else "TEST"]
        stride = int(number(ctx, params, "feat_stride"))
        scales = params.get("scales", (8, 16, 32))
        ratios = params.get("ratios", (0.5, 1.0, 2.0))
        counts = [number(ctx, params, key, default) for key, default in zip(("pre_nms_topN", "post_nms_topN", "nms_thresh", "min_size"), (pre, post, thresh, min_size))]
        try:
            proposal = py_faster_rcnn_proposal(stride, scales, ratios, *counts, score_column=True)
        except (TypeError, ValueError):
            raise ctx.error(f"param_str scales {scales!r} / ratios {ratios!r} must be lists of numbers", "param_str", ctx.param("python_param")) from None
        ctx.note(f"py-faster-rcnn {phase} configuration assumed: {pre} boxes before NMS, {post} after, IoU {thresh}, min size {min_size}")
        return proposal


def py_faster_rcnn_proposal(
    stride: int, scales: Sequence[float], ratios: Sequence[float], pre: float, post: float, thresh: float, min_size: float,
    *, score_column: bool = False, max_aspect: float = 0.0,
) -> ProposalParams:  # fmt: skip
    """py-faster-rcnn's proposal layer (and TFFRCNN's copy of it): anchors of base size 16, boxes under
    ``min_size`` × im_info[2] dropped, the counts and NMS threshold given."""
    anchors = py_faster_rcnn_anchors(16, [float(r) for r in ratios], [float(s) for s in scales])
    return ProposalParams(
        tuple(tuple(float(v) for v in row) for row in anchors), stride, int(pre), int(post), float(thresh), float(min_size),
        zero_small=False, min_scale=True, score_column=score_column, max_aspect=max_aspect,
    )  # fmt: skip



@dataclass(frozen=True)
class BoxAnnotatorOHEMParams:
    roi_per_img: int
    ignore_label: int = -1


@register
class BoxAnnotatorOHEM(LayerSpec):
    type = "BoxAnnotatorOHEM"
    bottoms = (4, 4)
    tops = (2, 2)
    semantics = "R-FCN (daijifeng001/caffe-rfcn): keep the labels and box weights of each image's roi_per_img hardest ROIs"

    def parse(self, ctx: ParseContext) -> BoxAnnotatorOHEMParams:
        bp = ctx.param("box_annotator_ohem_param")
        n = int(plain(ctx, bp, "roi_per_img") or 0)
        if n < 1:
            raise ctx.error("roi_per_img must be positive", "roi_per_img", bp)
        return BoxAnnotatorOHEMParams(n, int(plain(ctx, bp, "ignore_label")))

    def infer(self, p: BoxAnnotatorOHEMParams, shapes: list[Shape]) -> list[Shape]:
        rois, loss, labels, weights = shapes
        n = _rois(rois)
        if count(loss) != n or count(labels) != n or weights[0] != n or count(weights) % n:
            raise ShapeError(f"per-ROI loss {list(loss)}, labels {list(labels)} and box weights {list(weights)} must have one entry per ROI ({n})")
        return [labels, weights]

    def lower(self, p: BoxAnnotatorOHEMParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return CallOp(ops_loss.box_annotator_ohem, (In(0), In(1), In(2), In(3), p.roi_per_img, float(p.ignore_label)), n_out=2)
