"""Normalisation layers: LRN, BatchNorm, MVN and SSD's Normalize."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from ..backend import caffe_ops
from ..backend.lowering import ModuleOp
from ..errors import ShapeError
from ..prototxt.schema import define, extend
from .common import enum_value, plain
from .registry import LayerSpec, ParseContext, Shape, register

define("""
message NormalizeParameter
  across_spatial      1  bool    = true
  scale_filler        2  FillerParameter
  channel_shared      3  bool    = true
  eps                 4  float   = 1e-10
""")
extend("LayerParameter", """
  norm_param        206  NormalizeParameter
""")


@dataclass(frozen=True)
class LRNParams:
    size: int = 5
    alpha: float = 1.0
    beta: float = 0.75
    k: float = 1.0
    within_channel: bool = False


@register
class LRN(LayerSpec):
    type = "LRN"
    description = "local response normalisation across channels (with k) or within a channel (k ignored, as in Caffe)"

    def parse(self, ctx: ParseContext) -> LRNParams:
        lp = ctx.param("lrn_param")
        size = int(plain(ctx, lp, "local_size"))
        if size <= 0 or size % 2 == 0:
            raise ctx.error(f"local_size must be a positive odd number, got {size}", "local_size", lp)
        return LRNParams(
            size,
            float(plain(ctx, lp, "alpha")),
            float(plain(ctx, lp, "beta")),
            float(plain(ctx, lp, "k")),
            enum_value(ctx, lp, "norm_region") == "WITHIN_CHANNEL",
        )

    def infer(self, p: LRNParams, shapes: list[Shape]) -> list[Shape]:
        if len(shapes[0]) != 4:
            raise ShapeError(f"LRN needs a 4-d input (N, C, H, W), got shape {list(shapes[0])}")
        return [shapes[0]]

    def lower(self, p: LRNParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        if p.within_channel:
            return ModuleOp(caffe_ops.LRNWithinChannel, (p.size, p.alpha, p.beta))
        # torch's LocalResponseNorm uses Caffe's convention: alpha is divided by the window size
        kwargs = {"alpha": p.alpha, "beta": p.beta}
        if p.k != 1.0:
            kwargs["k"] = p.k
        return ModuleOp(nn.LocalResponseNorm, (p.size,), kwargs)


@dataclass(frozen=True)
class BatchNormParams:
    eps: float = 1e-5
    use_global_stats: bool = True
    moving_average_fraction: float = 0.999


_BATCH_NORM = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


@register
class BatchNorm(LayerSpec):
    type = "BatchNorm"
    description = "normalise by stored mean/variance divided by the scale-factor blob (0 → 0); no affine part"

    def parse(self, ctx: ParseContext) -> BatchNormParams:
        bp = ctx.param("batch_norm_param")
        global_stats = bp.get("use_global_stats")
        if global_stats is None:  # Caffe: defaults to true in the TEST phase
            global_stats = ctx.options.get("phase", "TEST") == "TEST"
        eps = float(plain(ctx, bp, "eps"))
        if eps < 0:
            raise ctx.error(f"eps must not be negative, got {eps}", "eps", bp)
        return BatchNormParams(eps, bool(global_stats), float(plain(ctx, bp, "moving_average_fraction")))

    def weight_shapes(self, p: BatchNormParams, shapes: list[Shape]) -> list[Shape]:
        channels = shapes[0][1] if len(shapes[0]) > 1 else 1
        return [(channels,), (channels,), (1,)]

    def lower(self, p: BatchNormParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        ndim = len(shapes[0])
        cls = _BATCH_NORM.get(ndim)
        if cls is None:
            raise ShapeError(f"BatchNorm on a {ndim}-d blob has no torch.nn equivalent")
        channels = shapes[0][1]
        kwargs: dict[str, object] = {"affine": False}
        if p.eps != 1e-5:
            kwargs = {"eps": p.eps, **kwargs}
        momentum = round(1.0 - p.moving_average_fraction, 8)
        if momentum != 0.1:
            kwargs["momentum"] = momentum
        if not p.use_global_stats:
            return ModuleOp(cls, (channels,), {**kwargs, "track_running_stats": False})
        mean, var = batch_norm_stats(blobs)
        state = {"running_mean": mean, "running_var": var, "num_batches_tracked": np.zeros((), np.int64)}
        return ModuleOp(cls, (channels,), kwargs, state)


def batch_norm_stats(blobs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Caffe's stored (sum-weighted) mean and variance divided by the factor blob; factor 0 gives 0."""
    factor = np.float32(blobs[2].reshape(-1)[0])
    scale = np.float32(0.0) if factor == 0 else np.float32(1.0) / factor
    mean = (blobs[0].reshape(-1).astype(np.float32) * scale).astype(np.float32)
    var = (blobs[1].reshape(-1).astype(np.float32) * scale).astype(np.float32)
    return mean, var


@dataclass(frozen=True)
class MVNParams:
    normalize_variance: bool = True
    across_channels: bool = False
    eps: float = 1e-9


@register
class MVN(LayerSpec):
    type = "MVN"
    description = "subtract the mean and divide by (std + eps), per channel or across channels"

    def parse(self, ctx: ParseContext) -> MVNParams:
        mp = ctx.param("mvn_param")
        return MVNParams(bool(mp.get("normalize_variance")), bool(mp.get("across_channels")), float(plain(ctx, mp, "eps")))

    def infer(self, p: MVNParams, shapes: list[Shape]) -> list[Shape]:
        if len(shapes[0]) != 4:
            raise ShapeError(f"MVN works on 4-d blobs (N, C, H, W), got shape {list(shapes[0])}")
        return [shapes[0]]

    def lower(self, p: MVNParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        kwargs = {k: v for k, v in vars(p).items() if v != getattr(MVNParams(), k)}
        return ModuleOp(caffe_ops.MVN, (), kwargs)


@dataclass(frozen=True)
class NormalizeParams:
    across_spatial: bool = True
    channel_shared: bool = True
    eps: float = 1e-10


@register
class Normalize(LayerSpec):
    type = "Normalize"
    semantics = "SSD (weiliu89/caffe): x / sqrt(sum x^2 + eps) times a learned scale"

    def parse(self, ctx: ParseContext) -> NormalizeParams:
        np_ = ctx.param("norm_param")
        return NormalizeParams(bool(np_.get("across_spatial")), bool(np_.get("channel_shared")), float(plain(ctx, np_, "eps")))

    def infer(self, p: NormalizeParams, shapes: list[Shape]) -> list[Shape]:
        if len(shapes[0]) < 2:
            raise ShapeError(f"Normalize needs at least 2 axes, got shape {list(shapes[0])}")
        return [shapes[0]]

    def weight_shapes(self, p: NormalizeParams, shapes: list[Shape]) -> list[Shape]:
        return [()] if p.channel_shared else [(shapes[0][1],)]

    def lower(self, p: NormalizeParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        kwargs = {k: v for k, v in vars(p).items() if v != getattr(NormalizeParams(), k)}
        weight = blobs[0].reshape(()) if p.channel_shared else blobs[0]
        return ModuleOp(caffe_ops.Normalize, (shapes[0][1],), kwargs, {"weight": weight}, ("weight",) if not p.channel_shared else (None,))
