"""Normalisation layers: LRN, BatchNorm, MVN, Normalize (SSD's and happynear's) and ChannelScale."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import AliasOp, CallOp, In, ModuleOp
from ..errors import ShapeError
from ..lazy import caffe_ops, nn
from ..prototxt.schema import define, extend
from .common import enum_value, plain
from .registry import LayerSpec, ParseContext, Shape, count, register

define("""
message NormalizeParameter
  across_spatial      1  bool    = true
  scale_filler        2  FillerParameter
  channel_shared      3  bool    = true
  eps                 4  float   = 1e-10
message FeatureNormalizeParameter
  normalize_type      1  string  = "L2"
  fix_gradient        2  bool    = false
  bp_norm             3  bool    = false
message ChannelScaleParameter
  do_forward          1  bool    = true
  do_backward_feature 2  bool    = true
  do_backward_scale   3  bool    = true
  global_scale        4  bool    = false
  max_global_scale    5  float   = 1000.0
  min_global_scale    6  float   = 0.0
  init_global_scale   7  float   = 1.0
""")
extend("LayerParameter", """
  norm_param        206  NormalizeParameter
  normalize_param     -  FeatureNormalizeParameter
  channel_scale_param -  ChannelScaleParameter
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
    scale_bias: bool = False
    """NVIDIA's Caffe: a learned per-channel scale and bias as blobs 3 and 4."""
    trainable: bool = False
    """A TRAIN-phase net: lowered to a module that keeps Caffe's three blobs and updates them."""
    global_stats_given: bool | None = None
    """``use_global_stats`` as written (None: follow the phase, i.e. the module's train/eval mode)."""


_BATCH_NORM = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}  # in torch.nn


@register
class BatchNorm(LayerSpec):
    type = "BatchNorm"
    description = (
        "normalise by stored mean/variance divided by the scale-factor blob (0 → 0); no affine part, "
        "except NVIDIA Caffe's scale_bias (learned scale and bias blobs; eps at least 1e-5)"
    )

    def parse(self, ctx: ParseContext) -> BatchNormParams:
        bp = ctx.param("batch_norm_param")
        global_stats = bp.get("use_global_stats")
        if global_stats is None:  # Caffe: defaults to true in the TEST phase
            global_stats = ctx.options.get("phase", "TEST") == "TEST"
        eps = float(plain(ctx, bp, "eps"))
        if eps < 0:
            raise ctx.error(f"eps must not be negative, got {eps}", "eps", bp)
        # NVIDIA's Caffe: scale_bias (or either filler) adds the affine blobs, and eps is floored at 1e-5
        scale_bias = bool(bp.get("scale_bias")) or bp.has("scale_filler") or bp.has("bias_filler")
        if scale_bias:
            eps = max(eps, float(np.float32(1e-5)))
        maf = float(plain(ctx, bp, "moving_average_fraction"))
        given = bp.get("use_global_stats")
        train = ctx.options.get("phase", "TEST") == "TRAIN"
        return BatchNormParams(eps, bool(global_stats), maf, scale_bias, train, None if given is None else bool(given))

    def weight_shapes(self, p: BatchNormParams, shapes: list[Shape]) -> list[Shape]:
        channels = shapes[0][1] if len(shapes[0]) > 1 else 1
        affine = [(channels,), (channels,)] if p.scale_bias else []
        return [(channels,), (channels,), (1,), *affine]

    def initial_blobs(self, p: BatchNormParams, shapes: list[Shape]) -> list[np.ndarray]:
        """Mean 0, variance 1, factor 1 (and scale 1, bias 0): an identity normalisation."""
        mean, var, factor = shapes[:3]
        affine = [np.ones(shapes[3], np.float32), np.zeros(shapes[4], np.float32)] if p.scale_bias else []
        return [np.zeros(mean, np.float32), np.ones(var, np.float32), np.ones(factor, np.float32), *affine]

    def lower(self, p: BatchNormParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        ndim = len(shapes[0])
        if ndim not in _BATCH_NORM:
            raise ShapeError(f"BatchNorm on a {ndim}-d blob has no torch.nn equivalent")
        cls = getattr(nn, _BATCH_NORM[ndim])
        channels = shapes[0][1]
        kwargs: dict[str, object] = {} if p.scale_bias else {"affine": False}
        if p.eps != 1e-5:
            kwargs = {"eps": p.eps, **kwargs}
        momentum = round(1.0 - p.moving_average_fraction, 8)
        if momentum != 0.1:
            kwargs["momentum"] = momentum
        affine = {"weight": blobs[3].reshape(-1), "bias": blobs[4].reshape(-1)} if p.scale_bias else {}
        if p.trainable:
            stats = {"mean": blobs[0].reshape(-1), "variance": blobs[1].reshape(-1), "factor": blobs[2].reshape(1)}
            args = {"eps": p.eps, "moving_average_fraction": p.moving_average_fraction, "use_global_stats": p.global_stats_given}
            if p.scale_bias:
                args["scale_bias"] = True
            names = ("mean", "variance", "factor", "weight", "bias")[: len(blobs)]
            return ModuleOp(caffe_ops.CaffeBatchNorm, (channels,), args, {**stats, **affine}, names)
        blob_params = (None, None, None, "weight", "bias") if p.scale_bias else ()
        if not p.use_global_stats:
            return ModuleOp(cls, (channels,), {**kwargs, "track_running_stats": False}, affine, blob_params)
        mean, var = batch_norm_stats(blobs)
        state = {"running_mean": mean, "running_var": var, "num_batches_tracked": np.zeros((), np.int64), **affine}
        return ModuleOp(cls, (channels,), kwargs, state, blob_params)


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
    feature_norm: str | None = None
    """happynear's NormFace/AM-Softmax Normalize: "L2" or "L1" per position, no learned scale."""


@register
class Normalize(LayerSpec):
    type = "Normalize"
    tops = (1, 2)
    fillers = ("norm_param", ("scale_filler",))
    fill_values = (1.0,)
    semantics = (
        "SSD (weiliu89/caffe): x / sqrt(sum x^2 + eps) times a learned scale; with normalize_param or a second top, "
        "happynear's (NormFace): x / (||x|| + 1e-6 inside the root), the norm as second top"
    )

    def parse(self, ctx: ParseContext) -> NormalizeParams:
        if ctx.layer.has("normalize_param") or ctx.n_tops == 2:
            kind = str(plain(ctx, ctx.param("normalize_param"), "normalize_type"))
            if kind not in ("L2", "L1"):
                raise ctx.unsupported(f"normalize_type {kind!r} (only L2 and L1)", "normalize_type", ctx.param("normalize_param"))
            return NormalizeParams(feature_norm=kind)
        if ctx.n_tops != 1:
            raise ctx.error("SSD's Normalize has one top")
        np_ = ctx.param("norm_param")
        return NormalizeParams(bool(np_.get("across_spatial")), bool(np_.get("channel_shared")), float(plain(ctx, np_, "eps")))

    def infer(self, p: NormalizeParams, shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if len(x) < 2:
            raise ShapeError(f"Normalize needs at least 2 axes, got shape {list(x)}")
        if p.feature_norm is not None:
            if len(x) > 4:
                raise ShapeError(f"happynear's Normalize works on up to 4-d blobs, got {list(x)}")
            legacy = (*x, 1, 1)[:4]  # the fork writes (num, channels, height, width)
            return [legacy, (legacy[0], 1, legacy[2], legacy[3])]
        return [x]

    def weight_shapes(self, p: NormalizeParams, shapes: list[Shape]) -> list[Shape]:
        if p.feature_norm is not None:
            return []
        return [()] if p.channel_shared else [(shapes[0][1],)]

    def lower(self, p: NormalizeParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp | CallOp:
        if p.feature_norm is not None:
            return CallOp(caffe_ops.feature_normalize, (In(0), p.feature_norm == "L2"), n_out=2)
        kwargs = {k: v for k, v in vars(p).items() if k != "feature_norm" and v != getattr(NormalizeParams(), k)}
        weight = blobs[0].reshape(()) if p.channel_shared else blobs[0]
        return ModuleOp(caffe_ops.Normalize, (shapes[0][1],), kwargs, {"weight": weight}, ("weight",) if not p.channel_shared else (None,))


@dataclass(frozen=True)
class ChannelScaleParams:
    forward: bool = True
    global_scale: bool = False
    limits: tuple[float, float] = (0.0, 1000.0)


@register
class ChannelScale(LayerSpec):
    type = "ChannelScale"
    bottoms = (1, 2)
    tops = (1, 2)
    semantics = (
        "AM-Softmax / NormFace (happynear): every channel of x times a per-position scale from the second input; "
        "with global_scale one learned scale clamped to [min_global_scale, max_global_scale]"
    )

    def parse(self, ctx: ParseContext) -> ChannelScaleParams:
        cp = ctx.param("channel_scale_param")
        limits = (float(plain(ctx, cp, "min_global_scale")), float(plain(ctx, cp, "max_global_scale")))
        p = ChannelScaleParams(bool(cp.get("do_forward")), bool(cp.get("global_scale")), limits)
        if not p.global_scale and ctx.n_bottoms != 2:
            raise ctx.error("ChannelScale needs the scale as a second input (or global_scale)")
        return p

    def infer(self, p: ChannelScaleParams, shapes: list[Shape]) -> list[Shape]:
        x = shapes[0]
        if not p.global_scale and count(shapes[1]) != x[0] * count(x, 2):
            raise ShapeError(f"the scale input {list(shapes[1])} must give one value per sample and position of {list(x)}")
        return [x, (1,)]

    def weight_shapes(self, p: ChannelScaleParams, shapes: list[Shape]) -> list[Shape]:
        return [(1,)] if p.global_scale else []

    def initial_blobs(self, p: ChannelScaleParams, shapes: list[Shape]) -> list[np.ndarray] | None:
        return [np.full((1,), -1.0, np.float32)] if p.global_scale else None  # the fork's initial value

    def lower(self, p: ChannelScaleParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp | AliasOp:
        if not p.forward:
            return AliasOp((0,))
        if p.global_scale:
            value = float(np.clip(np.float32(blobs[0].reshape(-1)[0]), np.float32(p.limits[0]), np.float32(p.limits[1])))
            return CallOp(caffe_ops.global_scale, (In(0), value), n_out=2)
        return CallOp(caffe_ops.channel_scale, (In(0), In(1)))
