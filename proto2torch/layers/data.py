"""Layers that bring data into a net: Input (and the legacy net-level inputs upgraded to it).

Their tops are the net's inputs: the live module takes them as ``forward`` arguments.
Shapes come from ``input_param`` and can be overridden when a net is loaded
(``--input data=1,3,451,451``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ShapeError
from .common import plain_all
from .registry import LayerSpec, ParseContext, Shape, check_shape, register


@dataclass(frozen=True)
class InputParams:
    shapes: tuple[Shape | None, ...] = ()
    """One shape per top; None where the file gives none."""


@register
class Input(LayerSpec):
    type = "Input"
    bottoms = (0, 0)
    tops = (1, None)
    source = True
    description = "net inputs with declared shapes"

    def parse(self, ctx: ParseContext) -> InputParams:
        ip = ctx.param("input_param")
        declared = [tuple(int(d) for d in plain_all(ctx, s, "dim")) for s in ip.all("shape")]
        if len(declared) not in (0, 1, ctx.n_tops):
            raise ctx.error(f"{len(declared)} shapes for {ctx.n_tops} tops; give one shape, or one per top", "input_param")
        if len(declared) == 1:
            declared = declared * ctx.n_tops
        for i, shape in enumerate(declared):
            try:
                check_shape(shape)
            except ShapeError as exc:
                raise ctx.error(f"input shape {i}: {exc}", "input_param") from None
        shapes: tuple[Shape | None, ...] = tuple(declared) if declared else (None,) * ctx.n_tops
        return InputParams(shapes)
