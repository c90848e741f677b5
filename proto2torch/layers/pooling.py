"""Pooling: MAX and AVE, Caffe's ceil-mode output size and padding rules.

Output size: ceil((in + 2p - k) / s) + 1, minus one when padding makes the last window
start inside the right padding — the same rule as PyTorch's ``ceil_mode=True``.  MAX
ignores padding; AVE divides by the window clipped to the padded input, which is
PyTorch's ``count_include_pad=True``.  So plain ``nn.MaxPool2d``/``nn.AvgPool2d`` are
exact except where PyTorch refuses the padding (more than half the kernel) or its
size rule differs (kernel smaller than stride without padding): there the
:class:`~proto2torch.backend.caffe_ops.CaffePool2d` helper pads explicitly.

Rounding: BVLC's ``round_mode: FLOOR`` and the forks' ``ceil_mode: false`` (the same
field number 13 with another meaning) both select floor; the text form tells them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import ModuleOp
from ..backend.sizes import caffe_pool_out
from ..errors import LayerParamError, ShapeError
from ..lazy import caffe_ops, nn
from ..prototxt.message import Msg
from .common import enum_value, hw_or_repeated
from .registry import LayerSpec, ParseContext, Shape, register


@dataclass(frozen=True)
class PoolParams:
    method: str = "MAX"
    kernel: tuple[int, int] | None = None
    """None for global pooling."""
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    ceil: bool = True
    mask: bool = False
    """A second top receives the argmax positions (MAX only)."""
    tf_same: bool = False
    """TensorFlow 'SAME' pooling (caffe-tensorflow nets): ceil(in / stride) outputs; MAX ignores the
    padding, AVE divides by the number of real pixels in each window."""

    @property
    def is_global(self) -> bool:
        return self.kernel is None


def covers_whole_input(p: PoolParams, shape: Shape | None) -> bool:
    """An unpadded window as large as its (4-d) input: global pooling in all but name."""
    return (
        shape is not None and len(shape) == 4 and p.kernel is not None
        and tuple(p.kernel) == tuple(shape[2:]) and tuple(p.pad) == (0, 0) and not p.tf_same
    )  # fmt: skip


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


@register
class Pooling(LayerSpec):
    type = "Pooling"
    tops = (1, 2)
    param_field = "pooling_param"
    description = "MAX/AVE pooling with Caffe's ceil-mode sizes; global pooling; optional argmax mask top"

    def parse(self, ctx: ParseContext) -> PoolParams:
        pp = ctx.param("pooling_param")
        method = enum_value(ctx, pp, "pool")
        is_global = bool(pp.get("global_pooling"))
        has_kernel = pp.has("kernel_size") or pp.has("kernel_h") or pp.has("kernel_w")
        if is_global and has_kernel:
            raise ctx.error("global_pooling takes no kernel size", "global_pooling", pp)
        kernel = None
        if not is_global:
            k = hw_or_repeated(ctx, pp, "kernel", None, repeated=False) if (pp.has("kernel_h") or pp.has("kernel_w")) else None
            if k is None:
                if not pp.has("kernel_size"):
                    raise ctx.error("the kernel size is missing (kernel_size or kernel_h/kernel_w)", "pooling_param")
                k = (int(pp.get("kernel_size")),)
            kernel = _pair(k)
            if min(kernel) <= 0:
                raise ctx.error(f"kernel size must be positive, got {list(kernel)}", "kernel_size", pp)
        stride = _pair(hw_or_repeated(ctx, pp, "stride", 1, repeated=False) or (1,))
        pad = _pair(hw_or_repeated(ctx, pp, "pad", 0, repeated=False) or (0,))
        if min(stride) <= 0:
            raise ctx.error(f"stride must be positive, got {list(stride)}", "stride", pp)
        if is_global and (stride != (1, 1) or pad != (0, 0)):
            raise ctx.error("global_pooling allows only pad 0 and stride 1", "global_pooling", pp)
        if kernel is not None and (pad[0] >= kernel[0] or pad[1] >= kernel[1]) and max(pad) > 0:
            raise ctx.error(f"padding {list(pad)} must be smaller than the kernel {list(kernel)}", "pooling_param")
        if pp.has("ceil_mode") and pp.has("round_mode"):
            raise ctx.error("give either round_mode (BVLC) or ceil_mode (forks), not both", "ceil_mode", pp)
        if pp.has("ceil_mode"):
            ceil = bool(pp.get("ceil_mode"))
        else:
            ceil = enum_value(ctx, pp, "round_mode") == "CEIL"
        if method == "STOCHASTIC":
            raise ctx.error("STOCHASTIC pooling has no deterministic test-time forward in Caffe's CPU code", "pool", pp)
        if ctx.n_tops == 2 and method != "MAX":
            raise ctx.error("only MAX pooling has a second (mask) top", "pool", pp)
        return PoolParams(method, kernel, stride, pad, ceil, mask=ctx.n_tops == 2)

    def unparse(self, p: PoolParams, layer: Msg) -> Msg:
        if p.tf_same:
            raise LayerParamError("TensorFlow SAME pooling depends on the input size and has no Caffe equivalent")
        layer = layer.copy()
        pp = layer.sub("pooling_param").copy()
        pp.type = "PoolingParameter"
        for name in ("kernel_size", "kernel_h", "kernel_w", "stride", "stride_h", "stride_w", "pad", "pad_h", "pad_w", "global_pooling", "pool"):
            pp.remove(name)
        pp.entries.insert(0, ("pool", _ident(p.method), 0, 0))
        if p.is_global:
            pp.add("global_pooling", True)
        else:
            assert p.kernel is not None
            _write_hw(pp, "kernel", p.kernel, None)
            _write_hw(pp, "stride", p.stride, 1)
            _write_hw(pp, "pad", p.pad, 0)
        return layer.set("pooling_param", pp)

    def _sizes(self, p: PoolParams, shape: Shape) -> tuple[tuple[int, int], tuple[int, int]]:
        if len(shape) != 4:
            raise ShapeError(f"Pooling needs a 4-d input (N, C, H, W), got shape {list(shape)}")
        kernel = (shape[2], shape[3]) if p.kernel is None else p.kernel
        if p.tf_same:
            return kernel, tuple(-(-size // s) for size, s in zip(shape[2:], p.stride))  # type: ignore[return-value]
        out = tuple(
            caffe_pool_out(size, k, s, pd, p.ceil) for size, k, s, pd in zip(shape[2:], kernel, p.stride, p.pad)
        )
        if min(out) <= 0:
            raise ShapeError(f"kernel {list(kernel)} is larger than the padded input {[s + 2 * q for s, q in zip(shape[2:], p.pad)]}")
        return kernel, out  # type: ignore[return-value]

    def infer(self, p: PoolParams, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        _, out = self._sizes(p, shape)
        return [(shape[0], shape[1], *out)] * (2 if p.mask else 1)

    def window(self, p: PoolParams) -> tuple[tuple[int, int, int, int | None], ...] | None:
        if p.kernel is None:
            return None
        return tuple((k, s, 1, None if p.tf_same else q) for k, s, q in zip(p.kernel, p.stride, p.pad))

    def lower(self, p: PoolParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        return lower_pooling(p, shapes[0])


def lower_pooling(p: PoolParams, shape: Shape) -> ModuleOp:
    kernel, _ = Pooling()._sizes(p, shape)
    with_mask = p.mask
    if p.tf_same:
        return ModuleOp(caffe_ops.TFSamePool2d, ("max" if p.method == "MAX" else "ave", kernel, p.stride))
    if p.is_global and not with_mask:
        cls = nn.AdaptiveMaxPool2d if p.method == "MAX" else nn.AdaptiveAvgPool2d
        return ModuleOp(cls, (1,))
    torch_can_pad = all(q <= k // 2 for q, k in zip(p.pad, kernel))
    # PyTorch also drops a last window that starts beyond the input when there is no padding;
    # Caffe keeps it then, which only happens when the kernel is smaller than the stride.
    same_size_rule = not p.ceil or max(p.pad) > 0 or all(k >= s for k, s in zip(kernel, p.stride))
    kwargs: dict[str, object] = {"kernel_size": _int_or_pair(kernel)}
    if p.stride != kernel:
        kwargs["stride"] = _int_or_pair(p.stride)
    if p.pad != (0, 0):
        kwargs["padding"] = _int_or_pair(p.pad)
    if p.ceil:
        kwargs["ceil_mode"] = True
    if with_mask:
        if not torch_can_pad or not same_size_rule:
            raise LayerParamError("a mask top with this padding has no PyTorch equivalent")
        return ModuleOp(caffe_ops.MaxPoolWithMask, (), kwargs, n_out=2)
    if torch_can_pad and same_size_rule:
        return ModuleOp(nn.MaxPool2d if p.method == "MAX" else nn.AvgPool2d, (), kwargs)
    method = "max" if p.method == "MAX" else "ave"
    return ModuleOp(caffe_ops.CaffePool2d, (method, kernel, p.stride, p.pad, p.ceil))


@dataclass(frozen=True)
class SPPParams:
    levels: int
    method: str = "MAX"


@register
class SPP(LayerSpec):
    type = "SPP"
    description = (
        "spatial pyramid pooling: level i pools the input into 2^i x 2^i bins (kernel ceil(size / bins), "
        "stride = kernel, padding half the remainder), flattened and concatenated; one level keeps (N, C, 1, 1)"
    )

    def parse(self, ctx: ParseContext) -> SPPParams:
        sp = ctx.param("spp_param")
        levels = int(sp.get("pyramid_height") or 0)
        if levels < 1:
            raise ctx.error("pyramid_height must be at least 1", "pyramid_height", sp)
        method = enum_value(ctx, sp, "pool")
        if method == "STOCHASTIC":
            raise ctx.error("STOCHASTIC pooling has no deterministic test-time forward in Caffe's CPU code", "pool", sp)
        return SPPParams(levels, method)

    def _levels(self, p: SPPParams, shape: Shape) -> list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
        """(kernel, pad, pooled size) per level, as Caffe computes them for this input."""
        if len(shape) != 4 or min(shape[2:]) < 1:
            raise ShapeError(f"SPP needs a 4-d input (N, C, H, W) with H, W > 0, got {list(shape)}")
        levels = []
        for i in range(p.levels):
            bins = 2**i
            kernel = tuple(-(-size // bins) for size in shape[2:])
            pad = tuple((k * bins - size + 1) // 2 for k, size in zip(kernel, shape[2:]))
            if any(q >= k for q, k in zip(pad, kernel)):
                raise ShapeError(f"pyramid level {i} ({bins} x {bins} bins) needs padding {list(pad)} >= its kernel {list(kernel)}: the input {list(shape[2:])} is too small")
            out = tuple(caffe_pool_out(size, k, k, q, True) for size, k, q in zip(shape[2:], kernel, pad))
            levels.append((kernel, pad, out))
        return levels  # type: ignore[return-value]

    def infer(self, p: SPPParams, shapes: list[Shape]) -> list[Shape]:
        n, c = shapes[0][:2]
        levels = self._levels(p, shapes[0])
        if p.levels == 1:
            return [(n, c, *levels[0][2])]
        return [(n, c * sum(out[0] * out[1] for _, _, out in levels))]

    def lower(self, p: SPPParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        method = "max" if p.method == "MAX" else "ave"
        levels = self._levels(p, shapes[0])
        if p.levels == 1:
            kernel, pad, _ = levels[0]
            return ModuleOp(caffe_ops.CaffePool2d, (method, kernel, kernel, pad))
        return ModuleOp(caffe_ops.SpatialPyramidPool, (method, [(kernel, pad) for kernel, pad, _ in levels]))


def _int_or_pair(values: tuple[int, int]) -> int | tuple[int, int]:
    return values[0] if values[0] == values[1] else values


def _ident(text: str) -> object:
    from ..prototxt.message import Ident

    return Ident(text)


def _write_hw(msg: Msg, base: str, values: tuple[int, int], default: int | None) -> None:
    if values[0] == values[1]:
        if values[0] != default:
            msg.add(f"{base}_size" if base == "kernel" else base, values[0])
    else:
        msg.add(f"{base}_h", values[0]).add(f"{base}_w", values[1])
