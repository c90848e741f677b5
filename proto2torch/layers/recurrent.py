"""Recurrent layers: BVLC's LSTM and RNN, and the ``Lstm`` of Junhyuk Oh's fork (caffe_ocr).

BVLC's layers read ``x`` (T, N, ...) and ``cont`` (T, N), optionally a static input
(N, ...) added to every step's gates, and with ``expose_hidden`` the initial states
as extra bottoms and the final states as extra tops.  Their learned blobs are those
of the unrolled net, in its order: W_xc, b_c, [W_xc_static], W_hc for the LSTM and
W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o for the RNN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp
from ..errors import ShapeError
from ..lazy import ops_recurrent
from ..prototxt.schema import define, extend
from .common import plain
from .registry import LayerSpec, ParseContext, Shape, count, register

define("""
message LstmParameter
  num_output          1  uint32
  clipping_threshold  2  float   = 0.0
  weight_filler       3  FillerParameter
  bias_filler         4  FillerParameter
  batch_size          5  uint32  = 1
""")
extend("LayerParameter", """
  lstm_param          -  LstmParameter
""")


@dataclass(frozen=True)
class RecurrentParams:
    num_output: int
    expose_hidden: bool = False
    static: bool = False


class _Recurrent(LayerSpec):
    bottoms = (2, 5)
    tops = (1, 3)
    in_place_ok = False
    n_states = 1
    fillers = ("recurrent_param", ("weight_filler", "bias_filler"))

    def parse(self, ctx: ParseContext) -> RecurrentParams:
        rp = ctx.param("recurrent_param")
        n = int(plain(ctx, rp, "num_output") or 0)
        if n < 1:
            raise ctx.error("num_output must be positive", "num_output", rp)
        expose = bool(rp.get("expose_hidden"))
        extra = ctx.n_bottoms - 2 - (self.n_states if expose else 0)
        if extra not in (0, 1):
            want = f"x, cont, [x_static]{', ' + ', '.join(self._state_names('0')) if expose else ''}"
            raise ctx.error(f"{self.type} takes bottoms {want}; got {ctx.n_bottoms}")
        if ctx.n_tops != 1 + (self.n_states if expose else 0):
            raise ctx.error(f"{self.type} has {1 + (self.n_states if expose else 0)} tops with expose_hidden {expose}, got {ctx.n_tops}")
        return RecurrentParams(n, expose, extra == 1)

    def _state_names(self, suffix: str) -> list[str]:
        return [f"h_{suffix}", f"c_{suffix}"][: self.n_states]

    def infer(self, p: RecurrentParams, shapes: list[Shape]) -> list[Shape]:
        x, cont = shapes[0], shapes[1]
        if len(x) < 2 or cont != x[:2]:
            raise ShapeError(f"x must be (T, N, ...) and cont (T, N); got {list(x)} and {list(cont)}")
        if p.static and shapes[2][0] != x[1]:
            raise ShapeError(f"the static input {list(shapes[2])} must have N = {x[1]} rows")
        state = (1, x[1], p.num_output)
        for s in shapes[2 + p.static :]:
            if s != state:
                raise ShapeError(f"initial states must be {list(state)}, got {list(s)}")
        return [(x[0], x[1], p.num_output)] + [state] * (self.n_states if p.expose_hidden else 0)

    def _call(self, p: RecurrentParams) -> tuple[object, ...]:
        static = In(2) if p.static else None
        first = 2 + p.static
        states = tuple(In(first + i) if p.expose_hidden else None for i in range(self.n_states))
        return (In(0), In(1), static, *states)


@register
class LSTM(_Recurrent):
    type = "LSTM"
    n_states = 2
    description = "BVLC LSTM over (T, N, ...) with continuation flags; gates i, f, o, g"

    def weight_shapes(self, p: RecurrentParams, shapes: list[Shape]) -> list[Shape]:
        h4, d = 4 * p.num_output, count(shapes[0], 2)
        static = [(h4, count(shapes[2], 1))] if p.static else []
        return [(h4, d), (h4,), *static, (h4, p.num_output)]

    def lower(self, p: RecurrentParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        names = ["w_xc", "b_c"] + (["w_xc_static"] if p.static else []) + ["w_hc"]
        static_size = count(shapes[2], 1) if p.static else 0
        return ModuleOp(
            ops_recurrent.CaffeLSTM,
            (count(shapes[0], 2), p.num_output, static_size),
            {},
            dict(zip(names, blobs)),
            tuple(names),
            call=self._call(p),
            n_out=3,
        )


@register
class RNN(_Recurrent):
    type = "RNN"
    n_states = 1
    description = "BVLC RNN: tanh hidden state, tanh output, over (T, N, ...) with continuation flags"

    def weight_shapes(self, p: RecurrentParams, shapes: list[Shape]) -> list[Shape]:
        h, d = p.num_output, count(shapes[0], 2)
        static = [(h, count(shapes[2], 1))] if p.static else []
        return [(h, d), (h,), *static, (h, h), (h, h), (h,)]

    def lower(self, p: RecurrentParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        names = ["w_xh", "b_h"] + (["w_xh_static"] if p.static else []) + ["w_hh", "w_ho", "b_o"]
        static_size = count(shapes[2], 1) if p.static else 0
        return ModuleOp(
            ops_recurrent.CaffeRNN,
            (count(shapes[0], 2), p.num_output, static_size),
            {},
            dict(zip(names, blobs)),
            tuple(names),
            call=self._call(p),
            n_out=2,
        )


@dataclass(frozen=True)
class LstmParams:
    num_output: int
    batch_size: int = 0
    """0: caffe_ocr's (T, N, I) input; else Junhyuk Oh's (T x batch_size, ...) input and (T x N, H) output."""


@register
class Lstm(LayerSpec):
    type = "Lstm"
    bottoms = (1, 2)
    in_place_ok = False
    semantics = (
        "Junhyuk Oh's caffe-lstm: rows (T x lstm_param.batch_size, I...) → (T x N, H); "
        "caffe_ocr's copy (3-d input, no batch_size): (T, N, I) → (T, N, H); optional clip input"
    )
    fillers = ("lstm_param", ("weight_filler", "weight_filler", "bias_filler"))

    def parse(self, ctx: ParseContext) -> LstmParams:
        lp = ctx.param("lstm_param")
        n = int(plain(ctx, lp, "num_output") or 0)
        if n < 1:
            raise ctx.error("num_output must be positive", "num_output", lp)
        batch = int(plain(ctx, lp, "batch_size")) if lp.has("batch_size") else 0
        if lp.has("batch_size") and batch < 1:
            raise ctx.error(f"batch_size must be positive, got {batch}", "batch_size", lp)
        return LstmParams(n, batch)

    def _layout(self, p: LstmParams, x: Shape) -> tuple[int, int, int]:
        """(T, N, I) of the input."""
        if p.batch_size == 0 and len(x) == 3:
            return x[0], x[1], x[2]
        batch = p.batch_size or 1
        if x[0] % batch:
            raise ShapeError(f"{x[0]} rows are not a whole number of time steps of batch_size {batch}")
        return x[0] // batch, batch, count(x, 1)

    def infer(self, p: LstmParams, shapes: list[Shape]) -> list[Shape]:
        steps, n, _ = self._layout(p, shapes[0])
        if len(shapes) > 1 and count(shapes[1]) != steps * n:
            raise ShapeError(f"the clip input {list(shapes[1])} must have T x N = {steps * n} values")
        return [(steps, n, p.num_output) if p.batch_size == 0 and len(shapes[0]) == 3 else (steps * n, p.num_output)]

    def weight_shapes(self, p: LstmParams, shapes: list[Shape]) -> list[Shape]:
        h4 = 4 * p.num_output
        return [(h4, self._layout(p, shapes[0])[2]), (h4, p.num_output), (h4,)]

    def lower(self, p: LstmParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        _, n, size = self._layout(p, shapes[0])
        names = ("weight_i", "weight_h", "bias")
        flat = not (p.batch_size == 0 and len(shapes[0]) == 3)
        return ModuleOp(ops_recurrent.JunhyukLstm, (size, p.num_output, n if flat else 0), {}, dict(zip(names, blobs)), names)


@register
class LSTMUnit(LayerSpec):
    type = "LSTMUnit"
    bottoms = (3, 3)
    tops = (2, 2)
    in_place_ok = False
    description = "one LSTM step: c_prev (1, N, H), gates x (1, N, 4H) in order i, f, o, g, cont (1, N) -> c, h"

    def infer(self, p: object, shapes: list[Shape]) -> list[Shape]:
        c_prev, x, cont = shapes
        if len(c_prev) != 3 or c_prev[0] != 1:
            raise ShapeError(f"c_prev must be (1, N, H), got {list(c_prev)}")
        n, h = c_prev[1], c_prev[2]
        if x != (1, n, 4 * h):
            raise ShapeError(f"the gate input must be (1, {n}, {4 * h}), got {list(x)}")
        if cont != (1, n):
            raise ShapeError(f"cont must be (1, {n}), got {list(cont)}")
        return [c_prev, c_prev]

    def lower(self, p: object, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        return CallOp(ops_recurrent.lstm_unit, (In(0), In(1), In(2)), n_out=2)
