"""SSD's detection layers (weiliu89/caffe): PriorBox and DetectionOutput.

PriorBox depends only on shapes: for every cell of the feature map (input 0) it lays
out boxes of each min size (its square, the geometric mean with max size, then one per
aspect ratio), in image coordinates normalised by the image (input 1) size, optionally
clipped to [0, 1]; the second channel holds the variances.  As in SSD's code, min and
max sizes are truncated to integers.

DetectionOutput decodes the location predictions against the priors, keeps per class
the boxes above the confidence threshold, runs greedy NMS (top_k, adaptive eta), keeps
the best ``keep_top_k`` over all classes, and writes rows
``[image, label, score, xmin, ymin, xmax, ymax]`` grouped by label.  The number of rows
depends on the data; shape inference reports the largest possible count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp, Op
from ..errors import ShapeError
from ..lazy import caffe_ops, ops_detection
from ..prototxt.schema import define, extend
from .common import enum_value, plain, plain_all
from .registry import LayerSpec, ParseContext, Shape, register

define("""
enum CodeType CORNER=1 CENTER_SIZE=2 CORNER_SIZE=3

message PriorBoxParameter
  min_size            1  float*
  max_size            2  float*
  aspect_ratio        3  float*
  flip                4  bool    = true
  clip                5  bool    = true
  variance            6  float*
  img_size            7  uint32
  img_h               8  uint32
  img_w               9  uint32
  step               10  float
  step_h             11  float
  step_w             12  float
  offset             13  float   = 0.5

message NonMaximumSuppressionParameter
  nms_threshold       1  float   = 0.3
  top_k               2  int32
  eta                 3  float   = 1.0

message SaveOutputParameter
  output_directory    1  string
  output_name_prefix  2  string
  output_format       3  string
  label_map_file      4  string
  name_size_file      5  string
  num_test_image      6  uint32

message DetectionOutputParameter
  num_classes         1  uint32
  share_location      2  bool    = true
  background_label_id 3  int32   = 0
  nms_param           4  NonMaximumSuppressionParameter
  save_output_param   5  SaveOutputParameter
  code_type           6  CodeType = CORNER
  variance_encoded_in_target 8 bool = false
  keep_top_k          7  int32   = -1
  confidence_threshold 9 float
  visualize          10  bool    = false
  visualize_threshold 11 float
  thresholds         12  float*
  save_file          13  string

message DetectionEvaluateParameter
  num_classes         1  uint32
  background_label_id 2  uint32  = 0
  overlap_threshold   3  float   = 0.5
  evaluate_difficult_gt 4 bool   = true
  name_size_file      5  string
""")
extend("LayerParameter", """
  prior_box_param   203  PriorBoxParameter
  detection_output_param 204 DetectionOutputParameter
  detection_evaluate_param 205 DetectionEvaluateParameter
""")


@dataclass(frozen=True)
class PriorBoxParams:
    min_sizes: tuple[int, ...]
    max_sizes: tuple[int, ...] = ()
    aspect_ratios: tuple[float, ...] = (1.0,)
    clip: bool = True
    variances: tuple[float, ...] = (0.1,)
    image: tuple[int, int] = (0, 0)
    step: tuple[float, float] = (0.0, 0.0)
    offset: float = 0.5

    @property
    def num_priors(self) -> int:
        return len(self.aspect_ratios) * len(self.min_sizes) + len(self.max_sizes)


@register
class PriorBox(LayerSpec):
    type = "PriorBox"
    bottoms = (2, 2)
    semantics = "SSD (weiliu89/caffe)"

    def parse(self, ctx: ParseContext) -> PriorBoxParams:
        pp = ctx.param("prior_box_param")
        min_sizes = tuple(int(v) for v in plain_all(ctx, pp, "min_size"))
        max_sizes = tuple(int(v) for v in plain_all(ctx, pp, "max_size"))
        if not min_sizes or any(m <= 0 for m in min_sizes):
            raise ctx.error("prior_box_param needs positive min_size values", "prior_box_param")
        if max_sizes and len(max_sizes) != len(min_sizes):
            raise ctx.error(f"{len(max_sizes)} max_size values for {len(min_sizes)} min_size values", "max_size", pp)
        if any(mx <= mn for mn, mx in zip(min_sizes, max_sizes)):
            raise ctx.error("each max_size must be greater than its min_size", "max_size", pp)
        ratios = [1.0]
        for ar in plain_all(ctx, pp, "aspect_ratio"):
            if any(abs(ar - r) < 1e-6 for r in ratios):
                continue
            ratios.append(float(ar))
            if pp.get("flip"):
                ratios.append(1.0 / float(ar))
        variances = tuple(float(v) for v in plain_all(ctx, pp, "variance")) or (0.1,)
        if len(variances) not in (1, 4):
            raise ctx.error(f"give 1 or 4 variance values, not {len(variances)}", "variance", pp)
        if (pp.has("img_h") or pp.has("img_w")) and pp.has("img_size"):
            raise ctx.error("give either img_size or img_h/img_w, not both", "img_size", pp)
        if pp.has("img_h") or pp.has("img_w"):
            image = (int(pp.get("img_h") or 0), int(pp.get("img_w") or 0))
        else:
            image = (int(pp.get("img_size") or 0),) * 2
        if (pp.has("step_h") or pp.has("step_w")) and pp.has("step"):
            raise ctx.error("give either step or step_h/step_w, not both", "step", pp)
        if pp.has("step_h") or pp.has("step_w"):
            step = (float(pp.get("step_h") or 0.0), float(pp.get("step_w") or 0.0))
        else:
            step = (float(pp.get("step") or 0.0),) * 2
        return PriorBoxParams(min_sizes, max_sizes, tuple(ratios), bool(pp.get("clip")), variances, image, step, float(plain(ctx, pp, "offset")))  # type: ignore[arg-type]

    def infer(self, p: PriorBoxParams, shapes: list[Shape]) -> list[Shape]:
        feature = shapes[0]
        if len(feature) != 4 or len(shapes[1]) != 4:
            raise ShapeError("PriorBox needs 4-d inputs (feature map and image)")
        return [(1, 2, feature[2] * feature[3] * p.num_priors * 4)]

    def lower(self, p: PriorBoxParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        kwargs = {
            "min_sizes": [float(m) for m in p.min_sizes],
            "max_sizes": [float(m) for m in p.max_sizes],
            "aspect_ratios": list(p.aspect_ratios),
            "variances": list(p.variances),
        }
        if not p.clip:
            kwargs["clip"] = False
        if p.image != (0, 0):
            kwargs["image_size"] = p.image
        if p.step != (0.0, 0.0):
            kwargs["step"] = p.step
        if p.offset != 0.5:
            kwargs["offset"] = p.offset
        return ModuleOp(caffe_ops.PriorBox, (), kwargs)


@dataclass(frozen=True)
class DetectionOutputParams:
    num_classes: int
    share_location: bool = True
    background_label_id: int = 0
    nms_threshold: float = 0.3
    top_k: int = -1
    eta: float = 1.0
    keep_top_k: int = -1
    confidence_threshold: float | None = None
    code_type: str = "CORNER"
    variance_encoded_in_target: bool = False
    nms: bool = True


@register
class DetectionOutput(LayerSpec):
    type = "DetectionOutput"
    bottoms = (3, 3)
    semantics = "SSD (weiliu89/caffe)"

    def parse(self, ctx: ParseContext) -> DetectionOutputParams:
        dp = ctx.param("detection_output_param")
        if not dp.has("num_classes"):
            raise ctx.error("detection_output_param.num_classes is required", "detection_output_param")
        nms = dp.sub("nms_param")
        eta = float(plain(ctx, nms, "eta"))
        if not 0 < eta <= 1:
            raise ctx.error(f"nms_param.eta must be in (0, 1], got {eta}", "eta", nms)
        if float(nms.get("nms_threshold")) < 0:
            raise ctx.error("nms_threshold must not be negative", "nms_threshold", nms)
        return DetectionOutputParams(
            num_classes=int(plain(ctx, dp, "num_classes")),
            share_location=bool(dp.get("share_location")),
            background_label_id=int(dp.get("background_label_id")),
            nms_threshold=float(nms.get("nms_threshold")),
            top_k=int(nms.get("top_k")) if nms.has("top_k") else -1,
            eta=eta,
            keep_top_k=int(dp.get("keep_top_k")),
            confidence_threshold=float(dp.get("confidence_threshold")) if dp.has("confidence_threshold") else None,
            code_type=enum_value(ctx, dp, "code_type"),
            variance_encoded_in_target=bool(dp.get("variance_encoded_in_target")),
            nms=dp.has("nms_param"),
        )

    def infer(self, p: DetectionOutputParams, shapes: list[Shape]) -> list[Shape]:
        loc, conf, priors = shapes
        num_priors = priors[-1] // 4 if len(priors) == 3 else 0
        loc_classes = 1 if p.share_location else p.num_classes
        if len(priors) != 3 or num_priors * loc_classes * 4 != int(np.prod(loc[1:])):
            raise ShapeError(f"location predictions {list(loc)} do not match {num_priors} priors")
        if num_priors * p.num_classes != int(np.prod(conf[1:])):
            raise ShapeError(f"confidence predictions {list(conf)} do not match {num_priors} priors x {p.num_classes} classes")
        most = num_priors * (p.num_classes - (0 <= p.background_label_id < p.num_classes)) * loc[0]
        if p.keep_top_k > -1:
            most = min(most, p.keep_top_k * loc[0])
        return [(1, 1, max(most, loc[0]), 7)]

    def lower(self, p: DetectionOutputParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        kwargs = {k: v for k, v in vars(p).items() if k != "num_classes" and v != getattr(DetectionOutputParams(0), k)}
        return ModuleOp(caffe_ops.DetectionOutput, (p.num_classes,), kwargs)


@dataclass(frozen=True)
class DetectionEvaluateParams:
    num_classes: int
    background_label_id: int = 0
    overlap_threshold: float = 0.5
    evaluate_difficult_gt: bool = True
    sized: bool = False
    """name_size_file: boxes are scaled to pixels by image sizes, given as an extra input."""


@register
class DetectionEvaluate(LayerSpec):
    type = "DetectionEvaluate"
    bottoms = (2, 2)
    semantics = (
        "SSD (weiliu89/caffe): per-detection true/false positives against ground truth, for mAP; with name_size_file "
        "the image sizes Caffe reads from it become an input (one row per image that has detections, in image order)"
    )

    def parse(self, ctx: ParseContext) -> DetectionEvaluateParams:
        dp = ctx.param("detection_evaluate_param")
        if not dp.has("num_classes"):
            raise ctx.error("detection_evaluate_param.num_classes is required", "detection_evaluate_param")
        sized = dp.has("name_size_file")
        if sized:
            # Caffe reads one (height, width) line per evaluated image from this file; the net gets them as input
            ctx.runtime_input("image_sizes")
        threshold = float(plain(ctx, dp, "overlap_threshold"))
        if threshold <= 0:
            raise ctx.error(f"overlap_threshold must be positive, got {threshold}", "overlap_threshold", dp)
        classes, background = int(plain(ctx, dp, "num_classes")), int(plain(ctx, dp, "background_label_id"))
        return DetectionEvaluateParams(classes, background, threshold, bool(dp.get("evaluate_difficult_gt")), sized)

    def infer(self, p: DetectionEvaluateParams, shapes: list[Shape]) -> list[Shape]:
        det, gt = shapes[:2]
        if p.sized and (len(shapes[2]) != 2 or shapes[2][1] != 2):
            raise ShapeError(f"the image sizes input must be (images, 2) rows of (height, width), got {list(shapes[2])}")
        if len(det) != 4 or det[:2] != (1, 1) or det[3] != 7 or len(gt) != 4 or gt[:2] != (1, 1) or gt[3] != 8:
            raise ShapeError(f"DetectionEvaluate needs detections (1, 1, D, 7) and ground truth (1, 1, G, 8); got {list(det)} and {list(gt)}")
        classes = p.num_classes - (1 if 0 <= p.background_label_id < p.num_classes else 0)
        return [(1, 1, classes + det[2], 5)]

    def lower(self, p: DetectionEvaluateParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        sizes = In(2) if p.sized else None
        args = (In(0), In(1), p.num_classes, p.background_label_id, p.overlap_threshold, p.evaluate_difficult_gt, sizes)
        return CallOp(ops_detection.detection_evaluate, args)
