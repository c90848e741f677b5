"""Helpers shared by several layer specs: Caffe's kernel/pad/stride spelling rules."""

from __future__ import annotations

from ..errors import ShapeError
from ..prototxt.message import Msg, Template
from ..prototxt.schema import ENUMS, field_def
from .registry import ParseContext


def plain(ctx: ParseContext, param: Msg, name: str) -> object:
    """A field's value, refusing unresolved ``${NAME}`` template placeholders."""
    value = param.get(name)
    _no_template(ctx, param, name, value)
    return value


def plain_all(ctx: ParseContext, param: Msg, name: str) -> list:
    values = param.all(name)
    for v in values:
        _no_template(ctx, param, name, v)
    return values


def _no_template(ctx: ParseContext, param: Msg, name: str, value: object) -> None:
    if isinstance(value, Template):
        raise ctx.unsupported(f"{name} is the template placeholder '{value}'; give its value with --define {value}=VALUE", name, param)


def enum_value(ctx: ParseContext, param: Msg, name: str) -> str:
    """An enum field's value name, refusing names the schema does not know (fork extensions)."""
    value = str(param.get(name))
    enum = ENUMS.get(field_def(param.type, name).type) if field_def(param.type, name) is not None else None  # type: ignore[union-attr]
    if enum is not None and value not in enum.values:
        raise ctx.unsupported(f"{name}: {value} is not one of {', '.join(enum.values)} (a Caffe fork's extension?)", name, param)
    return value


def hw_or_repeated(
    ctx: ParseContext, param: Msg, base: str, default: int | None, *, repeated: bool = True
) -> tuple[int, ...] | None:
    """Caffe's two spellings of a per-axis value: ``base_h``/``base_w`` or ``base`` (repeated or not).

    Returns a tuple of 1 value (applies to every spatial axis) or one per axis, or
    ``(default,)``; None if absent with no default.
    """
    has_h, has_w = param.has(f"{base}_h"), param.has(f"{base}_w")
    if has_h or has_w:
        if param.all(base) if repeated else param.has(base):
            raise ctx.error(f"give either {base} or {base}_h/{base}_w, not both", f"{base}_h", param)
        if base != "pad" and not (has_h and has_w):
            raise ctx.error(f"{base}_h and {base}_w must be given together", f"{base}_h" if has_h else f"{base}_w", param)
        return (int(plain(ctx, param, f"{base}_h") or 0), int(plain(ctx, param, f"{base}_w") or 0))
    values = plain_all(ctx, param, base) if repeated else ([plain(ctx, param, base)] if param.has(base) else [])
    if values:
        return tuple(int(v) for v in values)
    return None if default is None else (default,)


def per_axis(values: tuple[int, ...], n: int, what: str) -> tuple[int, ...]:
    """Expand a one-value-for-all tuple to ``n`` spatial axes, or check it has ``n`` values."""
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ShapeError(f"{what} has {len(values)} values but the input has {n} spatial axes")
    return values


def conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Caffe/PyTorch convolution output size."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1
