"""``BN``: the batch-normalisation layer of Caffe forks, which comes in three incompatible kinds.

All three normalise per channel of an (N, C, H, W) blob and apply a learned per-channel
scale and shift in the same layer (BVLC's BatchNorm needs a separate Scale layer).

* ``pspnet`` — PSPNet/ICNet/PSANet (hszhao's caffe, after lxx1991's): four blobs
  slope, bias, mean, variance.  In the TEST phase, or when ``bn_param.frozen``:
  ``slope * (x - mean) / sqrt(variance + eps) + bias``.  Otherwise the batch's own
  mean and (biased) variance are used.
* ``tsn`` — temporal-segment-networks (yjxiong's caffe; brocolli-caffe carries the same
  source, but does not build it): the same four blobs and fields, but the fourth blob holds the
  *inverse standard deviation* (its running average is taken after eps and the
  inverse square root), so TEST computes ``slope * (x - mean) * blob3 + bias`` with no eps.
* ``segnet`` — caffe-segnet and ENet: two blobs, scale and shift.  ``bn_mode:
  INFERENCE`` is ``scale * x + shift`` (the statistics were folded into the blobs by
  SegNet's compute_bn_statistics script); ``LEARN`` (the default) normalises by the
  batch's mean and ``E[x^2] - E[x]^2`` (eps 1e-9) in every phase, and can output those
  statistics as second and third tops.

The kind follows the layer's fields: SegNet's ``bn_mode``/``scale_filler``/``shift_filler``
mean ``segnet``, anything else ``pspnet``.  The option ``BN=pspnet|tsn|segnet``
(``--semantics BN=tsn``) overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import ModuleOp
from ..errors import ShapeError
from ..lazy import caffe_ops
from ..prototxt.schema import define, extend
from .common import enum_value, plain
from .registry import LayerSpec, ParseContext, Shape, register, same_values

define("""
enum BNMode LEARN=0 INFERENCE=1
message BNParameter
  slope_filler        1  FillerParameter
  bias_filler         2  FillerParameter
  momentum            3  float   = 0.9
  eps                 4  float   = 1e-5
  frozen              5  bool    = false
  engine              6  Engine  = DEFAULT
  scale_filler        -  FillerParameter
  shift_filler        -  FillerParameter
  bn_mode             -  BNMode  = LEARN
""")
extend("LayerParameter", """
  bn_param            -  BNParameter
""")

KINDS = ("pspnet", "tsn", "segnet")
_SEGNET_FIELDS = ("bn_mode", "scale_filler", "shift_filler")
SEGNET_EPS = 1e-9


@dataclass(frozen=True)
class BNParams:
    kind: str = "pspnet"
    batch_stats: bool = False
    """Normalise by the batch's own statistics (not stored ones)."""
    eps: float = 1e-5


@register
class BN(LayerSpec):
    type = "BN"
    tops = (1, 3)
    semantics = "PSPNet's BN by default; TSN (inverse-std blob) and SegNet (bn_mode) with the option BN=tsn|segnet"

    def parse(self, ctx: ParseContext) -> BNParams:
        bp = ctx.param("bn_param")
        kind = ctx.options.get("BN") or ("segnet" if any(bp.has(f) for f in _SEGNET_FIELDS) else "pspnet")
        if kind not in KINDS:
            raise ctx.error(f"unknown BN semantics {kind!r}; choose {', '.join(KINDS)}")
        if kind == "segnet":
            learn = enum_value(ctx, bp, "bn_mode") == "LEARN"
            if ctx.n_tops > 1 and not learn:
                raise ctx.error("only bn_mode LEARN has the batch mean and variance tops", "bn_mode", bp)
            return BNParams("segnet", learn, SEGNET_EPS)
        if ctx.n_tops > 1:
            raise ctx.error(f"the {kind} BN layer has one top, got {ctx.n_tops}")
        eps = float(plain(ctx, bp, "eps"))
        if eps < 0:
            raise ctx.error(f"eps must not be negative, got {eps}", "eps", bp)
        train = ctx.options.get("phase", "TEST") == "TRAIN" and not bp.get("frozen")
        return BNParams(kind, train, eps)

    def infer(self, p: BNParams, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        if len(shape) != 4:
            raise ShapeError(f"BN works on 4-d blobs (N, C, H, W), got shape {list(shape)}")
        stats = (1, shape[1], 1, 1)
        return [shape, stats, stats]

    def weight_shapes(self, p: BNParams, shapes: list[Shape]) -> list[Shape]:
        channels = shapes[0][1]
        n = 2 if p.kind == "segnet" else 4
        return [(1, channels, 1, 1) if p.kind != "tsn" else (1, channels)] * n

    def blob_fits(self, p: BNParams, index: int, got: Shape, want: Shape) -> bool:
        return same_values(got, want)

    def initial_blobs(self, p: BNParams, shapes: list[Shape]) -> list[np.ndarray]:
        if p.kind == "segnet":
            return [np.ones(shapes[0], np.float32), np.zeros(shapes[1], np.float32)]
        slope, bias, mean, var = shapes
        # identity statistics: variance 1 (pspnet) or inverse std 1 (tsn)
        return [np.ones(slope, np.float32), np.zeros(bias, np.float32), np.zeros(mean, np.float32), np.ones(var, np.float32)]

    def lower(self, p: BNParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        channels = shapes[0][1]
        vec = [np.ascontiguousarray(b, np.float32).reshape(channels) for b in blobs]
        if p.kind == "segnet":
            if not p.batch_stats:
                return ModuleOp(caffe_ops.Scale, ([channels], 1, True), {}, {"weight": vec[0], "bias": vec[1]})
            return ModuleOp(
                caffe_ops.BatchStatsBN, (channels,), {"eps": p.eps, "second_moment": True}, {"weight": vec[0], "bias": vec[1]}, n_out=3
            )
        if p.batch_stats:
            return ModuleOp(caffe_ops.BatchStatsBN, (channels,), {"eps": p.eps}, {"weight": vec[0], "bias": vec[1]}, n_out=3)
        slope, bias, mean, stat = vec
        inv_std = stat if p.kind == "tsn" else np.power(stat + np.float32(p.eps), np.float32(-0.5), dtype=np.float32)
        return ModuleOp(caffe_ops.StoredStatsBN, (channels,), {}, {"weight": slope, "bias": bias, "mean": mean, "inv_std": inv_std})
