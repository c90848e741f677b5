"""Element-wise layers (Caffe's "neuron" layers): one input, one output of the same shape."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp
from ..errors import ShapeError
from ..lazy import caffe_ops, nn, torch
from ..prototxt.schema import define, extend
from .common import plain
from .registry import LayerSpec, NoParams, ParseContext, Shape, register

# parameters of the ReLU6 / HardSigmoid layers that Caffe forks add (brocolli-caffe numbering)
define("""
message ReLU6Parameter
  negative_slope      1  float   = 0
  threshold           2  float   = 6
message HardSigmoidParameter
  alpha               1  float   = 0.2
  beta                2  float   = 0.5
message SeLuParameter
  alpha               1  float   = 1.6732632423543772
  lambda              2  float   = 1.0507009873554805
message SeLuDropoutParameter
  dropout_ratio       1  float   = 0.1
  alpha               2  float   = -1.7580993408473766
""")
extend("LayerParameter", """
  hardsigmoid_param 501  HardSigmoidParameter
  relu6_param       503  ReLU6Parameter
  selu_param          -  SeLuParameter
  selu_dropout_param  -  SeLuDropoutParameter
""")


@dataclass(frozen=True)
class SlopeParams:
    negative_slope: float = 0.0


@register
class ReLU(LayerSpec):
    type = "ReLU"
    description = "max(x, 0) + negative_slope * min(x, 0)"

    def parse(self, ctx: ParseContext) -> SlopeParams:
        return SlopeParams(float(plain(ctx, ctx.param("relu_param"), "negative_slope")))

    def lower(self, p: SlopeParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        if p.negative_slope == 0.0:
            return ModuleOp(nn.ReLU)
        return ModuleOp(nn.LeakyReLU, (p.negative_slope,))


@dataclass(frozen=True)
class PReLUParams:
    channel_shared: bool = False


@register
class PReLU(LayerSpec):
    type = "PReLU"
    fillers = ("prelu_param", ("filler",))
    fill_values = (0.25,)
    description = "learned negative slope per channel (axis 1) or one shared slope"

    def parse(self, ctx: ParseContext) -> PReLUParams:
        return PReLUParams(bool(ctx.param("prelu_param").get("channel_shared")))

    def weight_shapes(self, p: PReLUParams, shapes: list[Shape]) -> list[Shape]:
        if len(shapes[0]) < 2:
            raise ShapeError(f"PReLU needs at least 2 axes, got shape {list(shapes[0])}")
        return [()] if p.channel_shared else [(shapes[0][1],)]  # Caffe's shared slope is a 0-d blob

    def lower(self, p: PReLUParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        n = 1 if p.channel_shared else shapes[0][1]
        weight = blobs[0].reshape(n)
        return ModuleOp(nn.PReLU, (n,) if n != 1 else (), state={"weight": weight}, blob_params=("weight",))


@dataclass(frozen=True)
class ELUParams:
    alpha: float = 1.0


@register
class ELU(LayerSpec):
    type = "ELU"

    def parse(self, ctx: ParseContext) -> ELUParams:
        return ELUParams(float(plain(ctx, ctx.param("elu_param"), "alpha")))

    def lower(self, p: ELUParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        return ModuleOp(nn.ELU, () if p.alpha == 1.0 else (p.alpha,))


class _Fixed(LayerSpec):
    """A parameterless element-wise layer that maps onto one torch module or function, named
    (``torch.nn.<module>`` or ``torch.<function>``) so that reading a net imports no torch."""

    module: str | None = None
    function: str | None = None

    def lower(self, p: NoParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp | CallOp:
        if self.module is not None:
            return ModuleOp(getattr(nn, self.module))
        return CallOp(getattr(torch, str(self.function)), (In(0),))


@register
class Sigmoid(_Fixed):
    type = "Sigmoid"
    module = "Sigmoid"


@register
class TanH(_Fixed):
    type = "TanH"
    module = "Tanh"


@register
class AbsVal(_Fixed):
    type = "AbsVal"
    function = "abs"


@register
class BNLL(_Fixed):
    type = "BNLL"
    description = "log(1 + exp(x)), computed stably (softplus)"
    module = "Softplus"


@register
class HardSwish(_Fixed):
    type = "HardSwish"
    semantics = "Caffe forks (x * clamp(x / 6 + 0.5, 0, 1))"
    module = "Hardswish"


@dataclass(frozen=True)
class PowerParams:
    power: float = 1.0
    scale: float = 1.0
    shift: float = 0.0


@register
class Power(LayerSpec):
    type = "Power"
    description = "(shift + scale * x) ** power"

    def parse(self, ctx: ParseContext) -> PowerParams:
        pp = ctx.param("power_param")
        return PowerParams(float(plain(ctx, pp, "power")), float(plain(ctx, pp, "scale")), float(plain(ctx, pp, "shift")))

    def lower(self, p: PowerParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        return ModuleOp(caffe_ops.Power, (), _non_default(p, PowerParams()))


@dataclass(frozen=True)
class ExpLogParams:
    base: float = -1.0
    scale: float = 1.0
    shift: float = 0.0


def _parse_exp_log(ctx: ParseContext, field: str) -> ExpLogParams:
    param = ctx.param(field)
    base = float(plain(ctx, param, "base"))
    if base != -1.0 and base <= 0:
        raise ctx.error(f"base must be positive (or -1 for e), got {base}", "base", param)
    return ExpLogParams(base, float(plain(ctx, param, "scale")), float(plain(ctx, param, "shift")))


@register
class Exp(LayerSpec):
    type = "Exp"
    description = "base ** (shift + scale * x), base -1 meaning e"

    def parse(self, ctx: ParseContext) -> ExpLogParams:
        return _parse_exp_log(ctx, "exp_param")

    def lower(self, p: ExpLogParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        return ModuleOp(caffe_ops.Exp, (), _non_default(p, ExpLogParams()))


@register
class Log(LayerSpec):
    type = "Log"
    description = "log_base(shift + scale * x), base -1 meaning e"

    def parse(self, ctx: ParseContext) -> ExpLogParams:
        return _parse_exp_log(ctx, "log_param")

    def lower(self, p: ExpLogParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        return ModuleOp(caffe_ops.Log, (), _non_default(p, ExpLogParams()))


@dataclass(frozen=True)
class ThresholdParams:
    threshold: float = 0.0


@register
class Threshold(LayerSpec):
    type = "Threshold"
    description = "1 where x > threshold, else 0 (a step function, unlike torch.nn.Threshold)"

    def parse(self, ctx: ParseContext) -> ThresholdParams:
        return ThresholdParams(float(plain(ctx, ctx.param("threshold_param"), "threshold")))

    def lower(self, p: ThresholdParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        return ModuleOp(caffe_ops.Step, (p.threshold,) if p.threshold else ())


@dataclass(frozen=True)
class DropoutParams:
    ratio: float = 0.5
    scale_train: bool = True
    sample_test: bool = False


@register
class Dropout(LayerSpec):
    type = "Dropout"
    description = (
        "identity at test time (nn.Dropout in eval mode); with scale_train false (caffe-fast-rcnn) x (1 - ratio) at test time; "
        "with sample_weights_test (Bayesian SegNet) random dropping at test time too"
    )

    def parse(self, ctx: ParseContext) -> DropoutParams:
        param = ctx.param("dropout_param")
        ratio = float(plain(ctx, param, "dropout_ratio"))
        if not 0.0 <= ratio < 1.0:
            raise ctx.error(f"dropout_ratio must be in [0, 1), got {ratio}", "dropout_ratio", param)
        sample = bool(param.get("sample_weights_test"))
        if sample:
            ctx.note("sample_weights_test: the layer drops random units at test time (Monte Carlo dropout), so outputs vary per run")
        return DropoutParams(ratio, bool(param.get("scale_train")), sample)

    def lower(self, p: DropoutParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp | CallOp:
        if p.sample_test:
            return CallOp(caffe_ops.mc_dropout, (In(0), p.ratio))
        if not p.scale_train:
            # Caffe multiplies by 1 / scale with scale = 1 / (1 - ratio) stored as float
            scale = np.float32(1.0 / (1.0 - float(np.float32(p.ratio))))
            keep = float(np.float32(1.0 / float(scale)))
            return CallOp(operator.mul, (In(0), keep))
        return ModuleOp(nn.Dropout, () if p.ratio == 0.5 else (p.ratio,))


@dataclass(frozen=True)
class ReLU6Params:
    negative_slope: float = 0.0
    ceiling: float = 6.0


@register
class ReLU6(LayerSpec):
    type = "ReLU6"
    semantics = "Caffe forks: min(max(x, 0) + negative_slope * min(x, 0), threshold)"

    def parse(self, ctx: ParseContext) -> ReLU6Params:
        param = ctx.param("relu6_param")
        return ReLU6Params(float(plain(ctx, param, "negative_slope")), float(plain(ctx, param, "threshold")))

    def lower(self, p: ReLU6Params, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        if p == ReLU6Params():
            return ModuleOp(nn.ReLU6)
        return ModuleOp(caffe_ops.ClippedReLU, (p.negative_slope, p.ceiling))


@dataclass(frozen=True)
class HardSigmoidParams:
    alpha: float = 0.2
    beta: float = 0.5


@register
class HardSigmoid(LayerSpec):
    type = "HardSigmoid"
    semantics = "Caffe forks: clamp(alpha * x + beta, 0, 1), alpha 0.2 and beta 0.5 by default"

    def parse(self, ctx: ParseContext) -> HardSigmoidParams:
        param = ctx.param("hardsigmoid_param")
        return HardSigmoidParams(float(plain(ctx, param, "alpha")), float(plain(ctx, param, "beta")))

    def lower(self, p: HardSigmoidParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        return ModuleOp(caffe_ops.HardSigmoid, (), _non_default(p, HardSigmoidParams()))


def _non_default(p: object, default: object) -> dict[str, object]:
    """Keyword arguments for the fields of ``p`` that differ from ``default``."""
    return {k: v for k, v in vars(p).items() if v != getattr(default, k)}


@dataclass(frozen=True)
class SeLuParams:
    alpha: float = 1.6732632423543772
    scale: float = 1.0507009873554805


@register
class SeLu(LayerSpec):
    type = "SeLu"
    semantics = "soeaver/caffe-model's fork: lambda * (x if x > 0 else alpha * (exp(x) - 1))"

    def parse(self, ctx: ParseContext) -> SeLuParams:
        sp = ctx.param("selu_param")
        return SeLuParams(float(plain(ctx, sp, "alpha")), float(plain(ctx, sp, "lambda")))

    def lower(self, p: SeLuParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        if p == SeLuParams():
            return ModuleOp(nn.SELU)
        return ModuleOp(caffe_ops.ScaledELU, (p.alpha, p.scale))


@register
class SeLuDropout(LayerSpec):
    type = "SeLuDropout"
    semantics = "soeaver/caffe-model's fork: alpha dropout for SELU nets; identity at test time (nn.AlphaDropout in eval mode)"

    def parse(self, ctx: ParseContext) -> DropoutParams:
        param = ctx.param("selu_dropout_param")
        ratio = float(plain(ctx, param, "dropout_ratio"))
        if not 0.0 < ratio < 1.0:
            raise ctx.error(f"dropout_ratio must be in (0, 1), got {ratio}", "dropout_ratio", param)
        if abs(float(plain(ctx, param, "alpha")) + 1.7580993408473766) > 1e-6:
            ctx.note("a non-default alpha only changes training-time behaviour; test time is the identity")
        return DropoutParams(ratio)

    def lower(self, p: DropoutParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        return ModuleOp(nn.AlphaDropout, (p.ratio,))
