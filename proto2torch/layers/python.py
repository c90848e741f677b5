"""Python layers (``type: "Python"``): converted only by a registered converter.

Caffe runs a Python layer by importing ``python_param.module`` and instantiating
``python_param.layer``: user code that proto2torch never imports or runs.  Instead, a
converter registered for that ``module.Class`` (a :class:`LayerSpec` with
``python_layer = "module.Class"``) describes what the layer computes, and the
``Python`` spec below hands each layer to it.  Without one the layer is unsupported,
with a message that names the class.

``param_str`` is read as data: a Python dict literal (``{'p': '0.1'}``) or the YAML
mapping py-faster-rcnn writes (``'feat_stride': 16``), never evaluated.

Built-in converters: ENet's ``spatial_dropout.SpatialDropoutLayer`` (here) and
py-faster-rcnn's ``rpn.proposal_layer.ProposalLayer`` (:mod:`.roi`).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend.lowering import CallOp, In, ModuleOp, Op
from ..lazy import nn
from .registry import LayerSpec, ParseContext, Shape, count_problem, lookup_python, python_class, register

MAX_PARAM_STR = 65536
"""Longer ``param_str`` values are refused (real ones are a few hundred characters)."""


@dataclass(frozen=True)
class PythonParams:
    layer: str
    """``module.Class``."""
    params: Any
    """The registered converter's own parameter record."""


@register
class Python(LayerSpec):
    type = "Python"
    bottoms = (0, None)
    tops = (0, None)
    description = "Python layers, through the converter registered for their module.Class"

    def _inner(self, p: PythonParams) -> LayerSpec:
        spec = lookup_python(p.layer)
        assert spec is not None, p.layer
        return spec

    def parse(self, ctx: ParseContext) -> PythonParams:
        key = python_class(ctx.layer)
        spec = lookup_python(key)
        if spec is None:
            raise ctx.unsupported(
                f"Python layer {key} runs user code; register a converter for it "
                f"(a LayerSpec with python_layer = '{key}', see 'Adding a layer' in the README)"
            )
        problem = count_problem(spec, ctx.n_bottoms, ctx.n_tops)
        if problem is not None:
            raise ctx.unsupported(f"{key}: {problem}")
        return PythonParams(key, spec.parse(ctx))

    def infer(self, p: PythonParams, shapes: list[Shape]) -> list[Shape]:
        return self._inner(p).infer(p.params, shapes)

    def weight_shapes(self, p: PythonParams, shapes: list[Shape]) -> list[Shape]:
        return self._inner(p).weight_shapes(p.params, shapes)

    def window(self, p: PythonParams) -> tuple[tuple[int, int, int, int | None], ...] | None:
        return self._inner(p).window(p.params)

    def lower(self, p: PythonParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        return self._inner(p).lower(p.params, shapes, blobs)


_YAML_TAG = re.compile(r"!!python/\w+\s*")


def python_params(ctx: ParseContext) -> dict[str, Any]:
    """The layer's ``param_str`` as a dict, read as a literal (nothing is evaluated).

    Accepts a Python dict literal, or YAML-style ``key: value`` lines whose values are
    literals (py-faster-rcnn's ``!!python/tuple [4, 8]`` tag is read as a list).
    """
    pp = ctx.param("python_param")
    text = str(pp.get("param_str") or "").strip()
    if not text:
        return {}
    if len(text) > MAX_PARAM_STR:
        raise ctx.error(f"param_str is {len(text)} characters long (limit {MAX_PARAM_STR})", "param_str", pp)
    source = text if text.startswith("{") else "{" + ", ".join(line for line in text.splitlines() if line.strip()) + "}"
    try:
        value = ast.literal_eval(_YAML_TAG.sub("", source))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ctx.error(f"cannot read param_str {text!r} as a literal mapping ({type(exc).__name__})", "param_str", pp) from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ctx.error(f"param_str {text!r} is not a mapping of names to values", "param_str", pp)
    return value


def number(ctx: ParseContext, params: dict[str, Any], key: str, default: float | None = None) -> float:
    """A numeric ``param_str`` entry (numbers written as strings, as ENet does, are accepted)."""
    if key not in params:
        if default is None:
            raise ctx.error(f"param_str has no '{key}'", "param_str", ctx.param("python_param"))
        return default
    try:
        return float(params[key])
    except (TypeError, ValueError):
        raise ctx.error(f"param_str '{key}' is {params[key]!r}, not a number", "param_str", ctx.param("python_param")) from None


@dataclass(frozen=True)
class SpatialDropoutParams:
    p: float
    train: bool


@register
class SpatialDropout(LayerSpec):
    type = "SpatialDropout"
    python_layer = "spatial_dropout.SpatialDropoutLayer"
    semantics = "ENet (TimoSaemann/ENet, scripts/spatial_dropout.py)"
    description = "param phase TEST: x / (1 - p) (the layer scales at test time too); TRAIN: channel dropout"

    def parse(self, ctx: ParseContext) -> SpatialDropoutParams:
        params = python_params(ctx)
        p = number(ctx, params, "p")
        if not 0.0 < p < 1.0:
            raise ctx.error(f"p must lie strictly between 0 and 1, got {p}", "param_str", ctx.param("python_param"))
        phase = str(params.get("phase", "TEST"))
        if phase not in ("TRAIN", "TEST"):
            raise ctx.error(f"phase must be TRAIN or TEST, got {phase!r}", "param_str", ctx.param("python_param"))
        if phase == "TRAIN":
            ctx.note("ENet spatial dropout with phase TRAIN drops random channels even in Caffe's TEST phase; "
                     "the converted module does that in train() mode and is the identity in eval() mode")
        return SpatialDropoutParams(p, phase == "TRAIN")

    def lower(self, p: SpatialDropoutParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        if p.train:
            return ModuleOp(nn.Dropout2d, (p.p,))
        return CallOp(operator.mul, (In(0), 1.0 / (1.0 - p.p)))
