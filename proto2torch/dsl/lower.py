"""caffe-tensorflow DSL → IR, without running anything.

The model class's ``setup`` is read statement by statement.  Layer chains
``(self.feed(...).op(...)...)`` become IR nodes (NCHW inside, TensorFlow's padding and
flattening rules kept exactly); arguments may be literals, constants of the file,
``setup`` parameters given with ``defines``, simple arithmetic on those, and the
activation ``tf.nn.relu``.  Two more idioms are understood:
``x = self.layers['name']`` (a layer reference) and ``tf.shape(<layer>)[1:3]`` (its
spatial size, for ``resize_bilinear``).  Anything else — loops, conditions, calls,
tensor arithmetic, attribute access beyond ``tf.nn.relu`` — is reported with its
position and the chains that depend on it.

Dialects differ in padding defaults and in what some methods mean (see
``../shared/research/dsl_spec.md`` and :data:`DIALECTS`); the dialect is detected from
the file when that is unambiguous and can be forced.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DSLError, DSLMissingShapeError, LimitError, Proto2TorchError, guarded
from ..ir.graph import Net, Node, Value, compute_outputs
from ..ir.shapes import check_shape_of, infer_shapes
from ..layers.activations import DropoutParams, PowerParams, PReLUParams, SlopeParams
from ..layers.conv import ConvParams
from ..layers.data import InputParams
from ..layers.eltwise import EltwiseParams
from ..layers.inner_product import InnerProductParams
from ..layers.normalization import BatchNormParams, LRNParams
from ..layers.pooling import PoolParams
from ..layers.python import PythonParams
from ..layers.reduce import SoftmaxParams
from ..layers.registry import NoParams, lookup
from ..layers.resize import InterpParams, PadParams
from ..layers.roi import PyProposal, ROIPoolingParams, py_faster_rcnn_proposal
from ..layers.scale import ScaleParams
from ..layers.shape_ops import AxisParams, FlattenParams, PermuteParams, ReshapeParams
from ..prototxt.schema import Diagnostic
from .syntax import (
    Assign,
    Attr,
    BinOp,
    Block,
    BoolOp,
    Call,
    ClassDef,
    Compare,
    Const,
    ExprStmt,
    For,
    FString,
    FuncDef,
    If,
    IfExp,
    Import,
    Lambda,
    Module,
    Name,
    Other,
    Pos,
    Seq,
    Simple,
    Slice,
    Subscript,
    UnaryOp,
    With,
    parse_dsl_source,
)

_REQUIRED = object()


@dataclass(frozen=True)
class Dialect:
    name: str
    default_padding: str
    bn_eps: float
    bn_signature: str
    """'reference' (scale_offset, relu), 'slim' (is_training, activation_fn, scale)"""
    group: bool = True
    """whether conv honours group (PSPNet/ICNet ignore it)"""
    add_resizes: bool = False
    """ICNet: add() first resizes input 0 to input 1 (bilinear, corners not aligned)"""
    softmax_axis: bool = False
    """facenet: softmax(axis, name) with an NHWC axis"""
    fc_chw: bool = False
    """TFFRCNN: fc() transposes a feature map to NCHW before flattening it (Caffe's C·H·W order)"""


DIALECTS = {
    "ethereon": Dialect("ethereon", "SAME", 1e-5, "reference"),
    "drsleep": Dialect("drsleep", "SAME", 1e-3, "slim"),
    "pspnet": Dialect("pspnet", "VALID", 1e-5, "reference", group=False),
    "icnet": Dialect("icnet", "VALID", 1e-5, "reference", group=False, add_resizes=True),
    "facenet": Dialect("facenet", "SAME", 1e-5, "reference", softmax_axis=True),
    "tfpose": Dialect("tfpose", "SAME", 1e-5, "reference"),
    "tffrcnn": Dialect("tffrcnn", "SAME", 1e-3, "tffrcnn", group=False, fc_chw=True),
}
_TFPOSE = ("normalize_vgg", "normalize_mobilenet", "convb", "separable_conv")
"""tf-pose-estimation's own BaseNetwork methods (tf_pose/network_base.py): read in the tfpose dialect only."""
_SLIM_BN_EPS = 1e-3
_DRSLEEP_EXTRA = ("pyramid_pooling",)
_TFFRCNN = ("spatial_reshape_layer", "spatial_softmax", "proposal_layer", "roi_pool")
"""TFFRCNN's Network methods (lib/networks/network.py) of its test nets: read in the tffrcnn dialect only."""
_TFFRCNN_CFG: dict[str, Any] = {
    "cfg.NCLASSES": 21,
    "cfg.ANCHOR_SCALES": (8, 16, 32),
    **{f"cfg.{phase}.{key}": value for phase, values in (("TEST", (6000, 300, 0.7, 16)), ("TRAIN", (12000, 2000, 0.7, 16)))
       for key, value in zip(("RPN_PRE_NMS_TOP_N", "RPN_POST_NMS_TOP_N", "RPN_NMS_THRESH", "RPN_MIN_SIZE"), values)},
}
"""TFFRCNN's lib/fast_rcnn/config.py defaults for what its model files and proposal layer read from ``cfg``."""
"""Methods of DrSleep-derived base classes (CIHP_PGN's kaffe/tensorflow/network.py): read in the drsleep dialect."""

_DIALECT_METHODS = (("tfpose", _TFPOSE), ("drsleep", _DRSLEEP_EXTRA), ("tffrcnn", _TFFRCNN))
"""Methods that only one dialect's base class defines."""

# method → (positional parameter names, keyword parameters with defaults); "padding" defaults to the dialect's
_SIGNATURES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "conv": (("k_h", "k_w", "c_o", "s_h", "s_w"), {"relu": True, "padding": None, "group": 1, "biased": True, "trainable": True}),
    "atrous_conv": (("k_h", "k_w", "c_o", "dilation"), {"relu": True, "padding": None, "group": 1, "biased": True, "trainable": True}),
    "relu": ((), {}),
    "max_pool": (("k_h", "k_w", "s_h", "s_w"), {"padding": None}),
    "avg_pool": (("k_h", "k_w", "s_h", "s_w"), {"padding": None}),
    "lrn": (("radius", "alpha", "beta"), {"bias": 1.0}),
    "concat": (("axis",), {}),
    "add": ((), {}),
    "fc": (("num_out",), {"relu": True, "trainable": True}),
    "softmax": ((), {}),
    "batch_normalization": ((), {"scale_offset": True, "relu": False, "is_training": False}),
    "dropout": (("keep_prob",), {}),
    "zero_padding": (("paddings",), {}),
    "resize_bilinear": (("size",), {}),
    "interp": ((), {"s_factor": 1, "z_factor": 1}),
    "prelu": ((), {}),
    "sigmoid": ((), {}),
    "tanh": ((), {}),
    "normalize_vgg": ((), {}),
    "normalize_mobilenet": ((), {}),
    "convb": (("k_h", "k_w", "c_o", "stride"), {"relu": True, "set_bias": True, "set_tanh": False}),
    "separable_conv": (("k_h", "k_w", "c_o", "stride"), {"relu": True, "set_bias": True}),
    "pyramid_pooling": (("o_c", "pool_size"), {}),
    "spatial_reshape_layer": (("d",), {}),
    "spatial_softmax": ((), {}),
    "proposal_layer": (("_feat_stride", "anchor_scales", "cfg_key"), {}),
    "roi_pool": (("pooled_height", "pooled_width", "spatial_scale"), {}),
}
_SLIM_BN = ((), {"is_training": False, "activation_fn": None, "scale": True})
_TFFRCNN_BN = ((), {"relu": True, "is_training": False})
"""TFFRCNN's batch_normalization: tf.contrib's batch norm with scale and centre (eps 1e-3), then a ReLU unless relu=False."""
_NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1, -2: 3, -3: 2, -4: 0}


@dataclass(frozen=True)
class LayerRef:
    name: str
    pos: Pos


@dataclass(frozen=True)
class ShapeRef:
    """``tf.shape(layer)[1:3]``: the spatial size of a layer's output."""

    name: str
    pos: Pos


@dataclass(frozen=True)
class Activation:
    kind: str


@dataclass(frozen=True)
class Opaque:
    """A value computed by Python code the reader does not run."""

    what: str
    pos: Pos


class _IsTraining:
    def __repr__(self) -> str:
        return "is_training"


IS_TRAINING = _IsTraining()


@dataclass
class _Chain:
    feeds: list[Any]
    calls: list[tuple[str, tuple[Any, ...], tuple[tuple[str, Any], ...], Pos]]
    pos: Pos

    def label(self) -> str:
        for _, _, kwargs, _ in self.calls:
            for key, value in kwargs:
                if key == "name" and isinstance(value, Const):
                    return f"the chain with '{value.value}'"
        return "a chain"


@dataclass
class _Builder:
    """Nodes and values under construction, with shapes inferred as they are added."""

    module: Module
    input_shapes: Mapping[str, Sequence[int]]
    unknown_inputs: bool = False
    """Inputs without a given shape get an unknown one (``inspect`` lists the layers with ``?``)."""
    nodes: list[Node] = field(default_factory=list)
    values: dict[str, Value] = field(default_factory=dict)
    latest: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    weights: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    """DSL layer → (kind, IR nodes that receive its arrays)"""

    def shape(self, blob: str) -> tuple[int, ...] | None:
        return self.values[self.latest[blob]].shape

    def ensure_input(self, blob: str, pos: Pos) -> None:
        if blob in self.latest:
            return
        shape = self.input_shapes.get(blob)
        if shape is None and self.unknown_inputs:
            self.values[blob] = Value(blob, blob, None)
            self.latest[blob] = blob
            self.inputs.append(blob)
            self.nodes.append(Node(f"input_{blob}", "Input", InputParams(()), (), (blob,)))
            return
        if shape is None:
            raise DSLMissingShapeError(f"'{blob}' is fed but is neither a layer defined before nor a net input with a shape (give --input {blob}=N,C,H,W)", self.module.span(pos))
        value = Value(blob, blob, check_shape_of(blob, shape))
        self.values[blob] = value
        self.latest[blob] = blob
        self.inputs.append(blob)
        self.nodes.append(Node(f"input_{blob}", "Input", InputParams((value.shape,)), (), (blob,)))

    def add(self, name: str, type_name: str, params: Any, bottoms: Sequence[str], top: str, pos: Pos) -> str:
        spec = lookup(type_name)
        assert spec is not None
        inputs = tuple(self.latest[b] for b in bottoms)
        shapes = [self.values[v].shape for v in inputs]
        value_id = top if top not in self.values else _fresh(top, self.values)
        shape = None
        if all(s is not None for s in shapes):
            try:
                shape = spec.infer(params, shapes)[0]  # type: ignore[arg-type]  (one top: a proposal layer's rois)
            except Proto2TorchError as exc:
                raise DSLError(f"layer '{name}': {exc.message}", self.module.span(pos)) from None
        self.values[value_id] = Value(value_id, top, shape)
        self.latest[top] = value_id
        self.nodes.append(Node(name, type_name, params, inputs, (value_id,), span=self.module.span(pos)))
        return value_id


def _fresh(blob: str, values: Mapping[str, Value]) -> str:
    n = 2
    while f"{blob}@{n}" in values:
        n += 1
    return f"{blob}@{n}"


# --- the safe evaluator -----------------------------------------------------------------------------

_MAX_NUMBER = 1e15
_MAX_TEXT = 10_000
"""Longest string a model file may compute (layer names are short)."""
_MAX_ITEMS = 100_000
"""Longest tuple, list or range."""
_MAX_CALLS = 64
"""Deepest nesting of lambda calls."""
_WIDE_FORMAT = re.compile(r"\d{4,}|\*")
"""A format width or precision of four digits or more (``'%099999d'``): refused before formatting."""


@dataclass(frozen=True)
class Closure:
    """A lambda of the file, with the names it saw: applied by the evaluator, never by Python."""

    params: tuple[tuple[str, Any], ...]
    body: Any
    env: Mapping[str, Any]
    pos: Pos


class _Evaluator:
    """Values of expressions, computed from literals only: numbers (bounded), strings (bounded), tuples,
    dicts, comparisons, conditions, f-strings and %-formatting of names, ``len``/``range``/``int``/...,
    the file's constants and lambdas, ``self.X`` constants, ``setup`` parameters given by ``--define``."""

    def __init__(self, module: Module, env: Mapping[str, Any], depth: int = 0, static_shape: Any = None):
        self.module = module
        self.env = env
        self.depth = depth
        self.static_shape = static_shape
        """``layer expression -> its NHWC shape or None``: what ``x.get_shape()`` gives (the reader knows shapes)."""

    def fail(self, message: str, pos: Pos) -> DSLError:
        return DSLError(message, self.module.span(pos))

    def __call__(self, expr: Any) -> Any:
        if isinstance(expr, Const):
            if isinstance(expr.value, bytes):
                raise self.fail("byte strings are not used in layer arguments", expr.pos)
            if isinstance(expr.value, complex) or expr.value is Ellipsis:
                raise self.fail(f"{expr.value!r} is not a layer argument", expr.pos)
            if isinstance(expr.value, str) and len(expr.value) > _MAX_TEXT:
                raise self.fail(f"a string of {len(expr.value)} characters is over the {_MAX_TEXT}-character limit", expr.pos)
            return expr.value
        if isinstance(expr, Seq):
            if expr.kind == "dict":
                return {self._key(k): self(v) for k, v in expr.items}
            if expr.kind == "set":
                raise self.fail("set literals are not layer arguments", expr.pos)
            return tuple(self(item) for item in expr.items)
        if isinstance(expr, Name):
            return self._name(expr.id, expr.pos)
        if isinstance(expr, Attr):
            if expr.attr.startswith("__"):
                raise self.fail(f"attribute '{expr.attr}' is not allowed in a model file", expr.pos)
            path = _dotted(expr)
            if not path:  # an attribute of a computed value: what computes it is the problem
                self(expr.obj)
            if path in ("tf.nn.relu", "tensorflow.nn.relu"):
                return Activation("relu")
            if path and path in self.env:
                return self._name(path, expr.pos)
            if path.startswith("self."):
                raise self.fail(f"'{path}' is not set to a literal value in the class (or its __init__)", expr.pos)
            raise self.fail(f"'{path or expr.attr}' is not a literal value", expr.pos)
        if isinstance(expr, UnaryOp):
            value = self(expr.operand)
            if expr.op == "not":
                return not _truth(value)
            if not _is_number(value):
                raise self.fail(f"unary {expr.op} needs a number", expr.pos)
            return -value if expr.op == "-" else (+value if expr.op == "+" else self._refuse(expr))
        if isinstance(expr, BinOp):
            return self._binary(expr)
        if isinstance(expr, Compare):
            return self._compare(expr)
        if isinstance(expr, BoolOp):
            value: Any = None
            for item in expr.values:
                value = self(item)
                if _truth(value) == (expr.op == "or"):
                    return value
            return value
        if isinstance(expr, IfExp):
            return self(expr.body) if _truth(self(expr.test)) else self(expr.orelse)
        if isinstance(expr, FString):
            return self._text("".join(self(p) if isinstance(p, Const) else self._format_part(p) for p in expr.parts), expr.pos)
        if isinstance(expr, Subscript):
            return self._subscript(expr)
        if isinstance(expr, Lambda):  # names in its body are looked up when it is called, as Python does
            return Closure(expr.params, expr.body, self.env, expr.pos)
        if isinstance(expr, Call):
            return self._call(expr)
        if isinstance(expr, Other):
            raise self.fail(f"{expr.what} is not evaluated: layer arguments must be literal values", expr.pos)
        return self._refuse(expr)

    def _name(self, name: str, pos: Pos) -> Any:
        if name.startswith("__") or "__" in name.split(".")[-1][:2]:
            raise self.fail(f"'{name}' is not allowed in a model file", pos)
        if name not in self.env:
            raise self.fail(f"'{name}' is not a constant of this file or a setup parameter with a value (--define {name}=VALUE)", pos)
        value = self.env[name]
        if isinstance(value, Opaque):
            raise self.fail(f"'{name}' is computed by Python code at line {value.pos.line} ({value.what}), which is not run", pos)
        return value

    def _key(self, expr: Any) -> Any:
        key = self(expr)
        if not isinstance(key, (str, int, float, bool, tuple)) or key is None:
            raise self.fail("dict keys must be literal values", getattr(expr, "pos", Pos(0, 0)))
        return key

    def _text(self, text: str, pos: Pos) -> str:
        if len(text) > _MAX_TEXT:
            raise self.fail(f"a string of {len(text)} characters is over the {_MAX_TEXT}-character limit", pos)
        return text

    def _format_part(self, part: tuple[Any, str, Any]) -> str:
        expr, conversion, spec = part
        value = self(expr)
        _check_literal(self, value, getattr(expr, "pos", Pos(0, 0)))
        spec_text = self(spec) if spec is not None else ""
        if not isinstance(spec_text, str) or _WIDE_FORMAT.search(spec_text):
            raise self.fail(f"the format spec {spec_text!r} is not allowed (widths and precisions of 4 digits or more)", getattr(expr, "pos", Pos(0, 0)))
        value = repr(value) if conversion == "r" else str(value) if conversion == "s" else value
        try:
            return format(value, spec_text)
        except (ValueError, TypeError) as exc:
            raise self.fail(f"cannot format {value!r} with {spec_text!r}: {exc}", getattr(expr, "pos", Pos(0, 0))) from None

    def _refuse(self, expr: Any) -> Any:
        pos = getattr(expr, "pos", Pos(0, 0))
        inner = expr
        while isinstance(inner, (Subscript, Attr)):
            inner = inner.obj
        if isinstance(inner, Call):  # e.g. tf.shape(x)[0]
            self(inner)
        raise self.fail(f"this expression ({type(expr).__name__.lower()}) is not a literal value", pos)

    def _subscript(self, expr: Subscript) -> Any:
        obj = self(expr.obj)
        if not isinstance(obj, (tuple, str, dict)):
            raise self.fail(f"only literal tuples, lists, strings and dicts are indexed, not {type(obj).__name__}", expr.pos)
        if isinstance(expr.index, Slice):
            bounds = [self(part) if part is not None else None for part in (expr.index.lower, expr.index.upper, expr.index.step)]
            if any(b is not None and not isinstance(b, int) for b in bounds) or bounds[2] == 0:
                raise self.fail("slice bounds must be whole numbers (and the step not 0)", expr.pos)
            return obj[slice(*bounds)]  # type: ignore[index]
        key = self(expr.index)
        try:
            return obj[key]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            raise self.fail(f"{key!r} is not in {_short(obj)}", expr.pos) from None

    def _call(self, expr: Call) -> Any:
        what = _dotted(expr.func) or "an expression"
        if any(part.startswith("__") for part in what.split(".")):
            raise self.fail(f"'{what}' is not allowed in a model file", expr.pos)
        shape = self._get_shape(expr)
        if shape is not None:
            return shape
        if isinstance(expr.func, Attr) and not _dotted(expr.func):  # a method of a computed value
            self(expr.func.obj)
        if expr.starred:
            raise self.fail(f"{what}(*...) unpacks arguments at run time; it is not evaluated", expr.pos)
        if isinstance(expr.func, Attr) and expr.func.attr == "format" and isinstance(expr.func.obj, Const) and isinstance(expr.func.obj.value, str):
            template = expr.func.obj.value
            if _WIDE_FORMAT.search(template):
                raise self.fail("format widths of 4 digits or more are not allowed", expr.pos)
            args = [self(a) for a in expr.args]
            kwargs = {k: self(v) for k, v in expr.kwargs}
            for value in (*args, *kwargs.values()):
                _check_literal(self, value, expr.pos)
            try:
                return self._text(template.format(*args, **kwargs), expr.pos)
            except (IndexError, KeyError, ValueError, TypeError, AttributeError) as exc:
                raise self.fail(f"cannot format {template!r}: {exc}", expr.pos) from None
        if isinstance(expr.func, Name) and expr.func.id not in self.env and expr.func.id in _BUILTINS:
            return _BUILTINS[expr.func.id](self, [self(a) for a in expr.args], expr)
        callee = None
        if isinstance(expr.func, Name) and isinstance(self.env.get(expr.func.id), Closure):
            callee = self.env[expr.func.id]
        elif isinstance(expr.func, Attr) and isinstance(self.env.get(_dotted(expr.func)), Closure):
            callee = self.env[_dotted(expr.func)]
        elif isinstance(expr.func, Lambda):
            callee = self(expr.func)
        if callee is not None:
            return self._apply(callee, expr)
        raise self.fail(f"the call {what}(...) is not evaluated: layer arguments must be literal values", expr.pos)

    def _get_shape(self, expr: Call) -> tuple[int, ...] | None:
        """``layer.get_shape()`` and ``layer.get_shape().as_list()``: the layer's static NHWC shape."""
        if isinstance(expr.func, Attr) and expr.func.attr == "as_list" and isinstance(expr.func.obj, Call) and not expr.args:
            expr = expr.func.obj
        if not (isinstance(expr.func, Attr) and expr.func.attr == "get_shape" and not expr.args and self.static_shape is not None):
            return None
        shape = self.static_shape(expr.func.obj)
        if shape is None:
            raise self.fail("get_shape() of something that is not a layer defined before this point (self.layers['name'])", expr.pos)
        return shape

    def _apply(self, closure: Closure, expr: Call) -> Any:
        if self.depth >= _MAX_CALLS:
            raise self.fail(f"lambdas call each other more than {_MAX_CALLS} deep", expr.pos)
        names = [n for n, _ in closure.params]
        if any(n in ("*", "**") for n in names) or len(expr.args) > len(names):
            raise self.fail("this lambda's arguments cannot be matched", expr.pos)
        scope = dict(closure.env)
        for (name, default), arg in zip(closure.params, [*expr.args, *[None] * (len(names) - len(expr.args))]):
            given = dict(expr.kwargs).get(name)
            source = arg if arg is not None else given if given is not None else default
            if source is None:
                raise self.fail(f"the lambda's argument '{name}' is missing", expr.pos)
            scope[name] = self(source) if source is not default else _Evaluator(self.module, closure.env, self.depth + 1, self.static_shape)(default)
        return _Evaluator(self.module, scope, self.depth + 1, self.static_shape)(closure.body)

    def _compare(self, expr: Compare) -> bool:
        left = self(expr.left)
        for op, right_expr in zip(expr.ops, expr.comparators):
            right = self(right_expr)
            _check_literal(self, left, expr.pos)
            _check_literal(self, right, expr.pos)
            try:
                ok = {
                    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
                    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
                    "is": lambda a, b: a is b if b is None or a is None else a == b, "is not": lambda a, b: a is not b if b is None or a is None else a != b,
                }[op](left, right)
            except KeyError:
                raise self.fail(f"comparison '{op}' is not evaluated", expr.pos) from None
            except TypeError as exc:
                raise self.fail(f"cannot compare {left!r} {op} {right!r}: {exc}", expr.pos) from None
            if not ok:
                return False
            left = right
        return True

    def _binary(self, expr: BinOp) -> Any:
        left, right = self(expr.left), self(expr.right)
        if isinstance(left, (str, tuple)) or isinstance(right, (str, tuple)):
            return self._sequence_op(expr, left, right)
        if not (_is_number(left) and _is_number(right)):
            raise self.fail(f"'{expr.op}' is only evaluated on numbers and strings", expr.pos)
        try:
            if expr.op == "**":
                if abs(right) > 64 or abs(left) > 2**32:
                    raise self.fail("exponent too large", expr.pos)
                result = left**right
            else:
                result = {
                    "+": lambda: left + right,
                    "-": lambda: left - right,
                    "*": lambda: left * right,
                    "/": lambda: left / right,
                    "//": lambda: left // right,
                    "%": lambda: left % right,
                }[expr.op]()
        except ZeroDivisionError:
            raise self.fail("division by zero", expr.pos) from None
        except KeyError:
            raise self.fail(f"operator '{expr.op}' is not evaluated", expr.pos) from None
        if isinstance(result, complex) or abs(result) > _MAX_NUMBER:
            raise self.fail("number out of range", expr.pos)
        return result

    def _sequence_op(self, expr: BinOp, left: Any, right: Any) -> Any:
        if expr.op == "+" and type(left) is type(right):
            size = len(left) + len(right)
        elif expr.op == "*" and isinstance(right, int) and not isinstance(right, bool) and isinstance(left, (str, tuple)):
            size = len(left) * max(right, 0)
        elif expr.op == "*" and isinstance(left, int) and not isinstance(left, bool) and isinstance(right, (str, tuple)):
            size = len(right) * max(left, 0)
        elif expr.op == "%" and isinstance(left, str):
            if _WIDE_FORMAT.search(left):
                raise self.fail("format widths of 4 digits or more are not allowed", expr.pos)
            args = right if isinstance(right, tuple) else (right,)
            for value in args:
                _check_literal(self, value, expr.pos)
            try:
                return self._text(left % right, expr.pos)
            except (TypeError, ValueError, KeyError) as exc:
                raise self.fail(f"cannot format {left!r}: {exc}", expr.pos) from None
        else:
            raise self.fail(f"'{expr.op}' does not apply to {type(left).__name__} and {type(right).__name__}", expr.pos)
        limit = _MAX_TEXT if isinstance(left, str) or isinstance(right, str) else _MAX_ITEMS
        if size > limit:
            raise self.fail(f"the result would hold {size:,} items, over the limit of {limit:,}", expr.pos)
        return left + right if expr.op == "+" else left * right


def _check_literal(evaluate: _Evaluator, value: Any, pos: Pos) -> None:
    """Only plain data is formatted or compared (never an object whose methods could run)."""
    if isinstance(value, tuple):
        for item in value:
            _check_literal(evaluate, item, pos)
    elif not (value is None or isinstance(value, (str, int, float, bool, dict))):
        raise evaluate.fail(f"{value!r} is not a literal value", pos)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _truth(value: Any) -> bool:
    if value is IS_TRAINING:
        return False  # the net is read for inference
    if isinstance(value, (Activation, LayerRef, ShapeRef, Closure)):
        return True
    return bool(value)


def _builtin_len(evaluate: _Evaluator, args: list[Any], expr: Call) -> int:
    if len(args) != 1 or not isinstance(args[0], (tuple, str, dict)):
        raise evaluate.fail("len() takes one literal tuple, list, string or dict", expr.pos)
    return len(args[0])


def _builtin_range(evaluate: _Evaluator, args: list[Any], expr: Call) -> tuple[int, ...]:
    if not 1 <= len(args) <= 3 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise evaluate.fail("range() takes one to three whole numbers", expr.pos)
    try:
        numbers = range(*args)
    except ValueError as exc:
        raise evaluate.fail(f"range(): {exc}", expr.pos) from None
    if len(numbers) > _MAX_ITEMS:
        raise evaluate.fail(f"range() of {len(numbers):,} numbers is over the limit of {_MAX_ITEMS:,}", expr.pos)
    return tuple(numbers)


def _numeric(kind: type) -> Any:
    def convert(evaluate: _Evaluator, args: list[Any], expr: Call) -> Any:
        if len(args) != 1 or not isinstance(args[0], (int, float, str, bool)) or (isinstance(args[0], str) and len(args[0]) > 40):
            raise evaluate.fail(f"{kind.__name__}() takes one number or short numeric string", expr.pos)
        try:
            value = kind(args[0])
        except (ValueError, OverflowError) as exc:
            raise evaluate.fail(f"{kind.__name__}({args[0]!r}): {exc}", expr.pos) from None
        if _is_number(value) and abs(value) > _MAX_NUMBER:
            raise evaluate.fail("number out of range", expr.pos)
        return value

    return convert


def _extreme(pick: Any) -> Any:
    def choose(evaluate: _Evaluator, args: list[Any], expr: Call) -> Any:
        items = args[0] if len(args) == 1 and isinstance(args[0], tuple) else tuple(args)
        if not items or not all(_is_number(a) for a in items):
            raise evaluate.fail(f"{pick.__name__}() takes numbers", expr.pos)
        return pick(items)

    return choose


def _builtin_str(evaluate: _Evaluator, args: list[Any], expr: Call) -> str:
    if len(args) != 1 or not isinstance(args[0], (int, float, str, bool)) and args[0] is not None:
        raise evaluate.fail("str() takes one literal value", expr.pos)
    return evaluate._text(str(args[0]), expr.pos)


def _builtin_abs(evaluate: _Evaluator, args: list[Any], expr: Call) -> Any:
    if len(args) != 1 or not _is_number(args[0]):
        raise evaluate.fail("abs() takes one number", expr.pos)
    return abs(args[0])


def _builtin_sequence(evaluate: _Evaluator, args: list[Any], expr: Call) -> tuple[Any, ...]:
    if len(args) > 1 or (args and not isinstance(args[0], (tuple, str))):
        raise evaluate.fail("tuple()/list() take one literal sequence", expr.pos)
    return tuple(args[0]) if args else ()


_BUILTINS: dict[str, Any] = {
    "len": _builtin_len, "range": _builtin_range, "int": _numeric(int), "float": _numeric(float), "bool": lambda e, a, x: _truth(a[0]) if len(a) == 1 else False,
    "str": _builtin_str, "abs": _builtin_abs, "min": _extreme(min), "max": _extreme(max), "tuple": _builtin_sequence, "list": _builtin_sequence,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dotted(expr: Any) -> str:
    parts = []
    while isinstance(expr, Attr):
        parts.append(expr.attr)
        expr = expr.obj
    if isinstance(expr, Name):
        parts.append(expr.id)
        return ".".join(reversed(parts))
    return ""


# --- reading the file --------------------------------------------------------------------------


def _constant(module: Module, expr: Any, env: Mapping[str, Any]) -> Any:
    try:
        return _Evaluator(module, env)(expr)
    except DSLError:
        return Opaque("a non-literal expression", getattr(expr, "pos", Pos(0, 0)))


def _find_class(module: Module, class_name: str | None) -> tuple[ClassDef, list[str]]:
    """The model class to read: one whose ``setup`` builds layer chains (a base ``Network`` whose
    setup only raises is not one), the first unless ``class_name`` names another."""
    with_setup = [s for s in module.body if isinstance(s, ClassDef) and _setup_of(s) is not None]
    classes = [c for c in with_setup if _chains_in(_setup_of(c).body)] or with_setup  # type: ignore[union-attr]
    names = [c.name for c in classes]
    if not classes:
        raise DSLError(f"{module.filename}: no class with a setup() method (a caffe-tensorflow Network subclass) was found")
    if class_name is not None:
        for c in classes:
            if c.name == class_name:
                return c, names
        raise DSLError(f"{module.filename}: no model class '{class_name}'; the file defines {', '.join(names)} (choose with --class)")
    return classes[0], names


def _setup_of(cls: ClassDef) -> FuncDef | None:
    return next((m for m in cls.body if isinstance(m, FuncDef) and m.name == "setup"), None)


def _chain(stmt: ExprStmt) -> _Chain | None:
    calls = []
    value = stmt.value
    while isinstance(value, Call) and isinstance(value.func, Attr):
        calls.append((value.func.attr, value.args, value.kwargs, value.func.pos))
        if value.starred:
            return None
        inner = value.func.obj
        if value.func.attr == "feed" and isinstance(inner, Name) and inner.id == "self":
            calls.pop()
            return _Chain(list(value.args), list(reversed(calls)), value.pos)
        value = inner
    return None


def _chains_in(statements: Sequence[Any]) -> list[str]:
    names = []
    for stmt in statements:
        if isinstance(stmt, ExprStmt):
            chain = _chain(stmt)
            if chain is not None:
                names.append(chain.label())
        else:
            names += _chains_in(_inner(stmt))
    return names


def _inner(stmt: Any) -> tuple[Any, ...]:
    """The statements inside a compound statement."""
    if isinstance(stmt, If):
        return stmt.body + stmt.orelse
    if isinstance(stmt, For):
        return stmt.body + stmt.orelse
    if isinstance(stmt, (With, Block)):
        return stmt.body
    return ()


def detect_dialect(module: Module, setup: FuncDef) -> tuple[str, str]:
    """The dialect this file is written in, and why."""
    methods: set[str] = set()
    bn_keywords: set[str] = set()
    positional_softmax = False

    def walk(statements: Sequence[Any]) -> None:
        nonlocal positional_softmax
        for stmt in statements:
            if not isinstance(stmt, ExprStmt):
                walk(_inner(stmt))
            else:
                chain = _chain(stmt)
                for method, args, kwargs, _ in chain.calls if chain else []:
                    methods.add(method)
                    if method == "batch_normalization":
                        bn_keywords.update(k for k, _ in kwargs)
                    if method == "softmax" and args:
                        positional_softmax = True

    walk(setup.body)
    if set(_TFFRCNN) & methods:
        return "tffrcnn", "it calls TFFRCNN's " + "/".join(sorted(set(_TFFRCNN) & methods)) + "()"
    if set(_DRSLEEP_EXTRA) & methods:
        return "drsleep", "it calls " + "/".join(sorted(set(_DRSLEEP_EXTRA) & methods)) + "() of DrSleep-derived bases (CIHP_PGN)"
    if set(_TFPOSE) & methods:
        return "tfpose", "it calls tf-pose's " + "/".join(sorted(set(_TFPOSE) & methods)) + "()"
    if "interp" in methods:
        return "icnet", "it calls interp()"
    if {"zero_padding", "resize_bilinear"} & methods:
        return "pspnet", "it calls zero_padding()/resize_bilinear() with VALID as the default padding"
    if {"activation_fn", "is_training"} & bn_keywords and "relu" not in bn_keywords:
        return "drsleep", "batch_normalization takes is_training/activation_fn (TF-slim, eps 1e-3)"
    if "prelu" in methods or positional_softmax:
        return "facenet", "it calls prelu() or softmax(axis)"
    return "ethereon", "no dialect-specific method is used (caffe-tensorflow's reference Network)"


@guarded("reading the caffe-tensorflow model")
def load_dsl(
    path: str | Path,
    *,
    inputs: Mapping[str, Sequence[int]] | None = None,
    dialect: str | None = None,
    defines: Mapping[str, str] | None = None,
    class_name: str | None = None,
    unknown_inputs: bool = False,
    base: Sequence[str | Path] | None = None,
) -> Net:
    """Read a caffe-tensorflow model file into a :class:`Net` (input shapes in NCHW; with
    ``unknown_inputs``, inputs whose shape is not given stay unknown instead of an error; ``base``:
    the files of its base classes)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DSLError(f"cannot read {path}: {exc.strerror}") from None
    return net_from_dsl(data, str(path), inputs=inputs, dialect=dialect, defines=defines, class_name=class_name, unknown_inputs=unknown_inputs, base=base)


@guarded("reading the caffe-tensorflow model")
def net_from_dsl(
    text: str | bytes,
    filename: str = "<dsl>",
    *,
    inputs: Mapping[str, Sequence[int]] | None = None,
    dialect: str | None = None,
    defines: Mapping[str, str] | None = None,
    class_name: str | None = None,
    unknown_inputs: bool = False,
    base: Sequence[str | Path] | None = None,
) -> Net:
    """A caffe-tensorflow model file's text as a :class:`Net`; ``base`` names the files of its base
    classes (the repository's network.py), whose class constants and ``__init__`` then count."""
    module = parse_dsl_source(text, filename)
    cls, all_classes = _find_class(module, class_name)
    setup = _setup_of(cls)
    assert setup is not None
    diagnostics: list[Diagnostic] = []
    if len(all_classes) > 1:
        diagnostics.append(Diagnostic(module.span(cls.pos), f"the file defines {', '.join(all_classes)}; reading {cls.name} (choose with --class)"))
    env = _environment(module, cls, setup, defines or {}, _base_classes(base or ()))
    detected, why = detect_dialect(module, setup)
    declared = env.get("DSL_DIALECT")
    if isinstance(declared, str) and not dialect:
        detected, why = declared, "declared by DSL_DIALECT in the file"
    name = dialect or detected
    if name not in DIALECTS:
        raise DSLError(f"unknown dialect {name!r}; choose one of {', '.join(DIALECTS)}")
    diagnostics.append(Diagnostic(None, f"dialect: {name} ({'forced' if dialect else 'detected: ' + why})"))
    if name == "tffrcnn":
        assumed = sorted(key for key in _TFFRCNN_CFG if key not in env)
        env.update({key: _TFFRCNN_CFG[key] for key in assumed})
        if assumed:
            shown = ", ".join(f"{key}={list(value) if isinstance(value, tuple) else value}" for key, value in _TFFRCNN_CFG.items() if key in assumed and ".TRAIN." not in key)
            diagnostics.append(Diagnostic(None, f"TFFRCNN's lib/fast_rcnn/config.py defaults assumed: {shown} (and TRAIN's); change one with --define, e.g. --define cfg.NCLASSES=81"))
    reader = _Reader(module, DIALECTS[name], env, _Builder(module, dict(inputs or {}), unknown_inputs), diagnostics)
    reader.statements(setup.body)
    b = reader.builder
    net = Net(
        name=cls.name,
        nodes=tuple(b.nodes),
        values=b.values,
        outputs=compute_outputs(b.nodes),
        source=filename,
        diagnostics=tuple(diagnostics),
        meta={"format": "dsl", "dialect": name, "dsl_weights": b.weights, "caffe_blobs": env.get("CAFFE_BLOBS", {})},
    )
    return infer_shapes(net)


def _lineage(module: Module, cls: ClassDef, base_classes: Sequence[ClassDef] = ()) -> list[ClassDef]:
    """``cls`` and its base classes defined in the same file or in ``--base`` files, nearest first
    (``network_base.BaseNetwork`` is found by its last name)."""
    classes = {c.name: c for c in base_classes} | {c.name: c for c in module.body if isinstance(c, ClassDef)}
    out, todo = [], [cls]
    while todo:
        current = todo.pop(0)
        if current in out:
            continue
        out.append(current)
        names = [b.id if isinstance(b, Name) else b.attr for b in current.bases if isinstance(b, (Name, Attr))]
        todo += [classes[n] for n in names if n in classes]
    return out


def _base_classes(paths: Sequence[str | Path]) -> list[ClassDef]:
    """The classes of ``--base`` files (the repository's own network.py), read as data like the model file."""
    out: list[ClassDef] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DSLError(f"cannot read base file {path}: {exc.strerror}") from None
        out += [c for c in parse_dsl_source(data, str(path)).body if isinstance(c, ClassDef)]
    return out


def _environment(module: Module, cls: ClassDef, setup: FuncDef, defines: Mapping[str, str], base_classes: Sequence[ClassDef] = ()) -> dict[str, Any]:
    """The names ``setup`` may use: module constants, class constants (``self.X`` too), ``self.X``
    set from literals in ``__init__``, and ``setup``'s parameters (their defaults, the values an
    ``__init__`` of the file passes them, or ``--define``)."""
    env: dict[str, Any] = {}
    lineage = _lineage(module, cls, base_classes)
    scopes = [module.body, *(c.body for c in reversed(lineage))]
    for scope in scopes:
        for stmt in scope:
            if isinstance(stmt, Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], Name):
                value = stmt.value
                if isinstance(value, Seq) and value.kind == "dict" and scope is module.body:  # the emitter's CAFFE_BLOBS table
                    pairs = {}
                    for key, item in value.items:
                        if isinstance(key, Const) and isinstance(item, Const) and isinstance(key.value, str) and isinstance(item.value, str):
                            pairs[key.value] = item.value
                    env[stmt.targets[0].id] = pairs
                    continue
                env[stmt.targets[0].id] = _constant(module, value, env)
                if scope is not module.body:
                    env["self." + stmt.targets[0].id] = env[stmt.targets[0].id]
    passed = _init_arguments(module, lineage, env)
    for name, value in passed.items():
        if isinstance(name, str):  # self.X (the ints are positions of setup's arguments)
            env[name] = value
    for position, (name, default) in enumerate(p for p in setup.params if p[0] not in ("self", "*", "**")):
        if name in defines:
            env[name] = _define(defines[name])
        elif name == "is_training" or name.startswith("is_training"):
            env[name] = IS_TRAINING
        elif default is not None:
            env[name] = _constant(module, default, env)
        elif position in passed:
            env[name] = passed[position]
        else:
            env[name] = Opaque(f"setup parameter '{name}' without a value (give --define {name}=VALUE, or --base with the file of the base class that passes it)", setup.pos)
    for name, text in defines.items():  # given values win over the file's, self.X and cfg.X included
        env[name] = _define(text)
    return env


def _init_arguments(module: Module, lineage: Sequence[ClassDef], env: Mapping[str, Any]) -> dict[Any, Any]:
    """From the nearest ``__init__`` of the class or its bases: ``self.X`` set from literals (keys
    ``"self.X"``) and the values it passes to ``self.setup(...)`` (keys: positions), where those are
    literals or its own parameters' defaults."""
    init = next((m for c in lineage for m in c.body if isinstance(m, FuncDef) and m.name == "__init__"), None)
    if init is None:
        return {}
    scope = dict(env)
    for name, default in init.params:
        scope[name] = _constant(module, default, scope) if default is not None else Opaque(f"__init__ parameter '{name}'", init.pos)
    out: dict[Any, Any] = {}
    for stmt in init.body:
        if isinstance(stmt, Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], Attr) and _dotted(stmt.targets[0]).startswith("self."):
            value = _constant(module, stmt.value, scope)
            out[_dotted(stmt.targets[0])] = scope[_dotted(stmt.targets[0])] = value
        elif isinstance(stmt, ExprStmt) and isinstance(stmt.value, Call) and _dotted(stmt.value.func) == "self.setup":
            for position, arg in enumerate(stmt.value.args):
                value = _constant(module, arg, scope)
                if not isinstance(value, Opaque):
                    out[position] = value
    return out


def _define(text: str) -> Any:
    """A ``--define`` value: a Python literal (number, string, tuple, list, True/False/None) or else the text itself."""
    if len(text) <= _MAX_TEXT:
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return text
        if isinstance(value, list):
            value = tuple(value)
        if value is None or isinstance(value, (int, float, str, bool, tuple, dict)):
            return value
    return text


class _Reader:
    def __init__(self, module: Module, dialect: Dialect, env: dict[str, Any], builder: _Builder, diagnostics: list[Diagnostic]):
        self.module = module
        self.dialect = dialect
        self.env = env
        self.builder = builder
        self.diagnostics = diagnostics
        self.evaluate = _Evaluator(module, env, static_shape=self.static_shape)
        self.returned = False
        self.iterations = 0

    def fail(self, message: str, pos: Pos) -> DSLError:
        return DSLError(message, self.module.span(pos))

    # statements
    def statements(self, body: Sequence[Any]) -> None:
        """Read ``setup``'s statements as data: chains become layers, names get values, ``if`` takes
        the branch its (evaluated) condition picks, ``for`` repeats its body over a literal sequence,
        ``with`` is read through; statements that build nothing are passed over, never run."""
        for stmt in body:
            if self.returned:
                return
            if isinstance(stmt, ExprStmt):
                chain = _chain(stmt)
                if chain is not None:
                    self.chain(chain)
                elif not (isinstance(stmt.value, Const) and isinstance(stmt.value.value, str)):  # not a docstring
                    self.passed_over(stmt, "an expression that is not a layer chain")
            elif isinstance(stmt, Assign):
                self.assign(stmt)
            elif isinstance(stmt, If):
                self.statements(stmt.body if self.condition(stmt) else stmt.orelse)
            elif isinstance(stmt, For):
                self.loop(stmt)
            elif isinstance(stmt, With):
                for target in stmt.names:
                    for name in _names(target):
                        self.env[name] = Opaque("the value of a with-statement", stmt.pos)
                self.statements(stmt.body)
            elif isinstance(stmt, Block):
                inside = _chains_in(stmt.body)
                if inside:
                    raise self.fail(f"a '{stmt.keyword}' statement is Python control flow the DSL reader does not run; it holds {len(inside)} chain(s), starting with {inside[0]}", stmt.pos)
                self.passed_over(stmt, f"a '{stmt.keyword}' statement")
            elif isinstance(stmt, Simple):
                self.simple(stmt)
            elif isinstance(stmt, (FuncDef, ClassDef)):
                self.env[stmt.name] = Opaque(f"{_describe(stmt)} inside setup", stmt.pos)
            else:  # imports inside setup
                self.passed_over(stmt, _describe(stmt))

    def passed_over(self, stmt: Any, what: str) -> None:
        self.diagnostics.append(Diagnostic(self.module.span(stmt.pos), f"{what} in setup is not run (it builds no layer)"))

    def condition(self, stmt: If) -> bool:
        try:
            return _truth(self.evaluate(stmt.test))
        except DSLError as exc:
            inside = _chains_in(stmt.body + stmt.orelse)
            which = f"; it decides {len(inside)} chain(s), starting with {inside[0]}" if inside else ""
            raise self.fail(f"the condition of this 'if' cannot be evaluated ({exc.message}){which}", stmt.pos) from None

    def loop(self, stmt: For) -> None:
        try:
            items = self.evaluate(stmt.iter)
        except DSLError as exc:
            inside = _chains_in(stmt.body)
            which = f"; it repeats {len(inside)} chain(s), starting with {inside[0]}" if inside else ""
            raise self.fail(f"this 'for' runs over something that cannot be evaluated ({exc.message}){which}", stmt.pos) from None
        if isinstance(items, dict):
            items = tuple(items)
        if not isinstance(items, (tuple, str)):
            raise self.fail(f"this 'for' runs over {_short(items)}, not a literal sequence", stmt.pos)
        self.iterations += len(items)
        if self.iterations > _MAX_ITEMS:
            raise LimitError(f"loops in setup repeat more than {_MAX_ITEMS:,} times", self.module.span(stmt.pos))
        for item in items:
            self.bind_target(stmt.target, item, stmt.pos)
            self.statements(stmt.body)
            if self.returned:
                return
        self.statements(stmt.orelse)

    def simple(self, stmt: Simple) -> None:
        if stmt.keyword == "return":
            self.returned = True
        elif stmt.keyword == "raise":
            raise self.fail("setup raises an exception here (the file's own check failed, or this path is not meant to be taken)", stmt.pos)
        elif stmt.keyword in ("break", "continue"):
            raise self.fail(f"'{stmt.keyword}' inside setup's loops is not followed by the DSL reader", stmt.pos)
        elif stmt.keyword not in ("pass", "assert", "global", "nonlocal", "del"):
            self.passed_over(stmt, stmt.keyword)

    def bind_target(self, target: Any, value: Any, pos: Pos) -> None:
        """Assign ``value`` to a loop or unpacking target (names, ``self.X``, nested tuples)."""
        if isinstance(target, Name):
            if target.id.startswith("__"):
                raise self.fail(f"'{target.id}' is not allowed in a model file", pos)
            self.env[target.id] = value
        elif isinstance(target, Attr) and _dotted(target).startswith("self.") and _dotted(target).count(".") == 1:
            self.env[_dotted(target)] = value
        elif isinstance(target, Seq) and target.kind in ("tuple", "list"):
            if not isinstance(value, tuple) or len(value) != len(target.items):
                for name in _names(target):
                    self.env[name] = Opaque("an unpacking assignment whose value does not unpack", pos)
                return
            for item, part in zip(target.items, value):
                self.bind_target(item, part, pos)

    def assign(self, stmt: Assign) -> None:
        value = stmt.value
        target = stmt.targets[0] if len(stmt.targets) == 1 else None
        if isinstance(target, Name) and target.id.startswith("__"):
            raise self.fail(f"'{target.id}' is not allowed in a model file", stmt.pos)
        if isinstance(target, Name):
            ref = self.layer_ref(value) or self.shape_ref(value)
            if ref is not None:
                self.env[target.id] = ref
                return
        try:
            result = self.evaluate(value)
        except DSLError:
            result = Opaque(f"'{_describe_target(stmt.targets)} = ...'", stmt.pos)
        for each in stmt.targets:
            if isinstance(result, Opaque):
                for name in _names(each) + ([_dotted(each)] if isinstance(each, Attr) else []):
                    self.env[name] = result
            else:
                self.bind_target(each, result, stmt.pos)

    def static_shape(self, expr: Any) -> tuple[int, ...] | None:
        """The NHWC shape TensorFlow gives a layer of this net (known here: shapes are inferred as layers are added)."""
        ref = self.layer_ref(expr)
        if ref is None or ref.name not in self.builder.latest:
            return None
        shape = self.builder.shape(ref.name)
        if shape is None:
            raise self.fail(f"the shape of layer '{ref.name}' is not known (give the input shapes)", ref.pos)
        return (shape[0], *shape[2:], shape[1]) if len(shape) == 4 else tuple(shape)

    def layer_ref(self, expr: Any) -> LayerRef | None:
        """``self.layers['name']`` or a name bound to one."""
        if isinstance(expr, Name) and isinstance(self.env.get(expr.id), LayerRef):
            return self.env[expr.id]
        if (
            isinstance(expr, Subscript)
            and isinstance(expr.obj, Attr)
            and expr.obj.attr == "layers"
            and isinstance(expr.obj.obj, Name)
            and expr.obj.obj.id == "self"
            and isinstance(expr.index, Const)
            and isinstance(expr.index.value, str)
        ):
            return LayerRef(expr.index.value, expr.pos)
        return None

    def shape_ref(self, expr: Any) -> ShapeRef | None:
        """``tf.shape(<layer>)[1:3]``: the (height, width) of a layer's NHWC output."""
        if not (isinstance(expr, Subscript) and isinstance(expr.index, Slice) and isinstance(expr.obj, Call)):
            return None
        call = expr.obj
        if _dotted(call.func) not in ("tf.shape", "tensorflow.shape") or len(call.args) != 1 or call.kwargs:
            return None
        ref = self.layer_ref(call.args[0])
        lower, upper = expr.index.lower, expr.index.upper
        if ref is None or not (isinstance(lower, Const) and lower.value == 1 and isinstance(upper, Const) and upper.value == 3):
            return None
        return ShapeRef(ref.name, expr.pos)

    # chains
    def chain(self, chain: _Chain) -> None:
        b = self.builder
        current: list[str] = []
        for item in chain.feeds:
            ref = self.layer_ref(item)
            if ref is not None:
                blob = ref.name
            else:
                try:
                    blob = self.evaluate(item)
                except DSLError as exc:
                    raise self.fail(f"{chain.label()}: feed() takes layer names: {exc.message}", getattr(item, "pos", chain.pos)) from None
            if not isinstance(blob, str):
                raise self.fail(f"{chain.label()}: feed() takes layer names, got {blob!r}", chain.pos)
            b.ensure_input(blob, chain.pos)
            current.append(blob)
        if not current:
            raise self.fail("feed() needs at least one layer name", chain.pos)
        for method, args, kwargs, pos in chain.calls:
            current = [self.call(chain, method, args, kwargs, pos, current)]

    def bind(self, chain: _Chain, method: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...], pos: Pos) -> dict[str, Any]:
        if method == "batch_normalization" and self.dialect.bn_signature == "slim":
            positional, defaults = _SLIM_BN
        elif method == "batch_normalization" and self.dialect.bn_signature == "tffrcnn":
            positional, defaults = _TFFRCNN_BN
        elif method == "softmax" and self.dialect.softmax_axis:
            positional, defaults = ("axis",), {}
        elif method in _SIGNATURES and all(method not in only or self.dialect.name == owner for owner, only in _DIALECT_METHODS):
            positional, defaults = _SIGNATURES[method]
        else:
            raise self.fail(f"{chain.label()}: method {method}() is not part of the {self.dialect.name} DSL (or not supported)", pos)
        if len(args) > len(positional):
            raise self.fail(f"{method}() takes {len(positional)} positional arguments ({', '.join(positional) or 'none'}) but {len(args)} were given", pos)
        bound: dict[str, Any] = dict(defaults)
        evaluate = self.evaluate
        for key, expr in zip(positional, args):
            bound[key] = self.argument(method, key, expr, evaluate)
        for key, expr in kwargs:
            if key != "name" and key not in defaults and key not in positional:
                raise self.fail(f"{method}() has no argument '{key}' in the {self.dialect.name} dialect", getattr(expr, "pos", pos))
            bound[key] = self.argument(method, key, expr, evaluate)
        missing = [k for k in positional if k not in bound]
        if missing:
            raise self.fail(f"{method}() is missing {', '.join(missing)}", pos)
        if "name" not in bound or not isinstance(bound["name"], str):
            raise self.fail(f"{method}() needs name='...' (by keyword, as caffe-tensorflow requires)", pos)
        if bound.get("padding") is None and "padding" in defaults:
            bound["padding"] = self.dialect.default_padding
        return bound

    def argument(self, method: str, key: str, expr: Any, evaluate: _Evaluator) -> Any:
        if key == "size" and method == "resize_bilinear":
            ref = self.shape_ref(expr) or (self.env.get(expr.id) if isinstance(expr, Name) and isinstance(self.env.get(expr.id), ShapeRef) else None)
            if ref is not None:
                return ref
        value = evaluate(expr)
        return value

    def call(self, chain: _Chain, method: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...], pos: Pos, current: list[str]) -> str:
        a = self.bind(chain, method, args, kwargs, pos)
        name = a["name"]
        b = self.builder
        if name in b.latest:
            raise self.fail(f"layer name '{name}' is used twice", pos)
        fixed = {"proposal_layer": 3, "roi_pool": 2}.get(method, 1) if method not in ("concat", "add") else None
        if fixed is not None and len(current) != fixed:
            what = "one input" if fixed == 1 else f"{fixed} inputs fed together"
            raise self.fail(f"{method}() works on {what} but the chain feeds {len(current)} ({', '.join(current)})", pos)
        if method == "add" and len(current) < 2:
            raise self.fail(f"add() needs several inputs fed together, got {len(current)}", pos)
        handler = getattr(self, f"op_{method}")
        handler(name, a, current, pos)
        return name

    # the operations -----------------------------------------------------------------------
    def _int(self, a: Mapping[str, Any], key: str, pos: Pos, minimum: int = 1) -> int:
        value = a[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, float):
            raise self.fail(f"{key} must be an integer, got {value!r}: Python 3's '/' gives a float (TensorFlow refuses it too); a file written for Python 2's integer division needs '//'", pos)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(f"{key} must be an integer of at least {minimum}, got {value!r}", pos)
        return value

    def _padding(self, a: Mapping[str, Any], pos: Pos) -> str:
        padding = a.get("padding")
        if padding not in ("SAME", "VALID"):
            raise self.fail(f"padding must be 'SAME' or 'VALID', got {padding!r}", pos)
        return padding

    def _relu(self, name: str, enabled: Any, pos: Pos) -> None:
        if enabled is True or enabled == Activation("relu"):
            self.builder.add(f"{name}:relu", "ReLU", SlopeParams(), [name], name, pos)
        elif enabled not in (False, None):
            raise self.fail(f"relu/activation_fn must be True, False, None or tf.nn.relu, got {enabled!r}", pos)

    def _conv(self, name: str, a: Mapping[str, Any], x: str, pos: Pos, stride: tuple[int, int], dilation: int) -> None:
        k = (self._int(a, "k_h", pos), self._int(a, "k_w", pos))
        group = self._int(a, "group", pos) if self.dialect.group else 1
        padding = self._padding(a, pos)
        params = ConvParams(
            num_output=self._int(a, "c_o", pos),
            kernel=k[:1] if k[0] == k[1] else k,
            stride=stride[:1] if stride[0] == stride[1] else stride,
            dilation=(dilation,),
            group=group,
            bias_term=bool(a["biased"]),
            tf_same=padding == "SAME",
        )
        self.builder.add(name, "Convolution", params, [x], name, pos)
        self.builder.weights[name] = ("conv", (name,))
        self._relu(name, a["relu"], pos)

    def op_conv(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self._conv(name, a, current[0], pos, (self._int(a, "s_h", pos), self._int(a, "s_w", pos)), 1)

    def op_atrous_conv(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self._conv(name, a, current[0], pos, (1, 1), self._int(a, "dilation", pos))

    def op_relu(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self.builder.add(name, "ReLU", SlopeParams(), current, name, pos)

    def _pool(self, method: str, name: str, a: dict[str, Any], x: str, pos: Pos) -> None:
        kernel = (self._int(a, "k_h", pos), self._int(a, "k_w", pos))
        stride = (self._int(a, "s_h", pos), self._int(a, "s_w", pos))
        padding = self._padding(a, pos)
        params = PoolParams(method, kernel, stride, (0, 0), ceil=False, tf_same=padding == "SAME")
        self.builder.add(name, "Pooling", params, [x], name, pos)

    def op_max_pool(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self._pool("MAX", name, a, current[0], pos)

    def op_avg_pool(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self._pool("AVE", name, a, current[0], pos)

    def op_lrn(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        radius = self._int(a, "radius", pos, minimum=0)
        size = 2 * radius + 1
        alpha, beta, bias = (float(a[k]) for k in ("alpha", "beta", "bias"))
        # TF divides by (bias + alpha * sum)^beta; Caffe/torch use alpha / size
        self.builder.add(name, "LRN", LRNParams(size, alpha * size, beta, bias), current, name, pos)

    def op_concat(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        axis = a["axis"]
        if axis not in _NHWC_TO_NCHW:
            raise self.fail(f"concat axis must be an NHWC axis (0..3 or negative), got {axis!r}", pos)
        self.builder.add(name, "Concat", AxisParams(_NHWC_TO_NCHW[axis]), current, name, pos)

    def op_add(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        inputs = list(current)
        if self.dialect.add_resizes:  # ICNet: input 0 is first resized to input 1's size by TF1's resize_bilinear (no align_corners)
            resized = f"{name}:resize"
            self.builder.add(resized, "Interp", InterpParams(align_corners=False, tf1=True), [inputs[0], inputs[1]], resized, pos)
            inputs[0] = resized
        self.builder.add(name, "Eltwise", EltwiseParams("SUM"), inputs, name, pos)

    def op_fc(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self.builder.add(name, "InnerProduct", InnerProductParams(self._int(a, "num_out", pos)), current, name, pos)
        self.builder.weights[name] = ("fc_chw" if self.dialect.fc_chw else "fc", (name,))
        self._relu(name, a["relu"], pos)

    def op_softmax(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        shape = self.builder.shape(current[0])
        x = current[0]
        if self.dialect.name == "tffrcnn":  # tf.nn.softmax over the last NHWC axis: the channels
            if shape is not None and len(shape) not in (2, 4):
                raise self.fail(f"softmax() on a {list(shape)} input: TFFRCNN's softmax takes rank 2 or 4", pos)
            self.builder.add(name, "Softmax", SoftmaxParams(1), [x], name, pos)
            return
        if self.dialect.softmax_axis:
            axis = a["axis"]
            if axis not in _NHWC_TO_NCHW:
                raise self.fail(f"softmax axis must be an NHWC axis, got {axis!r}", pos)
            self.builder.add(name, "Softmax", SoftmaxParams(_NHWC_TO_NCHW[axis] if shape and len(shape) == 4 else axis), [x], name, pos)
            return
        if shape is not None and len(shape) > 2:
            if len(shape) != 4 or shape[2] != 1 or shape[3] != 1:
                raise self.fail(f"softmax() on a {list(shape)} input: caffe-tensorflow accepts only rank 2, or rank 4 with 1x1 maps", pos)
            squeezed = f"{name}:squeeze"
            self.builder.add(squeezed, "Flatten", FlattenParams(1, -1), [x], squeezed, pos)
            x = squeezed
        self.builder.add(name, "Softmax", SoftmaxParams(1), [x], name, pos)

    def op_batch_normalization(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self.builder.add(name, "BatchNorm", BatchNormParams(self.dialect.bn_eps), current, name, pos)
        if self.dialect.bn_signature == "slim":
            scale, relu = bool(a["scale"]), a["activation_fn"]
        elif self.dialect.bn_signature == "tffrcnn":
            scale, relu = True, a["relu"]
        else:
            scale, relu = bool(a["scale_offset"]) or self.dialect.name in ("pspnet", "icnet"), a["relu"]
        nodes: tuple[str, ...] = (name,)
        if scale:
            self.builder.add(f"{name}:scale", "Scale", ScaleParams(1, 1, True), [name], name, pos)
            nodes += (f"{name}:scale",)
        else:  # slim's scale=False still learns an offset (beta)
            if self.dialect.bn_signature == "slim":
                self.builder.add(f"{name}:offset", "Bias", ScaleParams(1, 1, False), [name], name, pos)
                nodes += (f"{name}:offset",)
        self.builder.weights[name] = ("bn", nodes)
        self._relu(name, relu, pos)

    def op_dropout(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        keep = a["keep_prob"]
        ratio = 1.0 - float(keep) if isinstance(keep, (int, float)) and 0 < keep <= 1 else 0.5
        self.builder.add(name, "Dropout", DropoutParams(min(ratio, 0.999)), current, name, pos)

    def op_zero_padding(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        p = self._int(a, "paddings", pos, minimum=0)
        self.builder.add(name, "Pad", PadParams((p, p, p, p)), current, name, pos)

    def op_resize_bilinear(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        size = a["size"]
        if isinstance(size, ShapeRef):
            if size.name not in self.builder.latest:
                raise self.fail(f"tf.shape() refers to layer '{size.name}', which is not defined before this point", size.pos)
            self.builder.add(name, "Interp", InterpParams(), [current[0], size.name], name, pos)
            return
        if not (isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise self.fail(f"resize_bilinear() takes [height, width] or tf.shape(layer)[1:3], got {size!r}", pos)
        self.builder.add(name, "Interp", InterpParams(height=size[0], width=size[1]), current, name, pos)

    def op_interp(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        shrink, zoom = a["s_factor"], a["z_factor"]
        if not (_is_number(shrink) and _is_number(zoom) and shrink > 0 and zoom > 0):
            raise self.fail("interp() takes positive s_factor and z_factor", pos)
        shrink_factor = 1.0 / shrink
        if not (float(shrink_factor).is_integer() and float(zoom).is_integer()):
            raise self.fail(f"interp(s_factor={shrink}, z_factor={zoom}) is not an integer shrink/zoom, which Caffe's Interp rules need", pos)
        self.builder.add(name, "Interp", InterpParams(zoom=int(zoom), shrink=int(shrink_factor)), current, name, pos)

    def op_prelu(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self.builder.add(name, "PReLU", PReLUParams(False), current, name, pos)
        self.builder.weights[name] = ("prelu", (name,))

    def op_sigmoid(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self.builder.add(name, "Sigmoid", NoParams(), current, name, pos)

    def op_tanh(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self.builder.add(name, "TanH", NoParams(), current, name, pos)

    def op_pyramid_pooling(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        """CIHP_PGN: average pooling by pool_size (SAME), a 3x3 convolution with bias and ReLU (its
        weights under the method's name), resized back to the input's size by TF1's resize_bilinear."""
        k = self._int(a, "pool_size", pos)
        pool, conv = f"{name}/pool_ly", f"{name}/conv_ly"
        self.builder.add(pool, "Pooling", PoolParams("AVE", (k, k), (k, k), (0, 0), ceil=False, tf_same=True), current, pool, pos)
        self.builder.add(conv, "Convolution", ConvParams(num_output=self._int(a, "o_c", pos), kernel=(3,), tf_same=True), [pool], conv, pos)
        self.builder.weights[name] = ("conv", (conv,))
        self.builder.add(f"{name}/relu_ly", "ReLU", SlopeParams(), [conv], conv, pos)
        self.builder.add(name, "Interp", InterpParams(align_corners=False, tf1=True), [conv, current[0]], name, pos)

    # TFFRCNN (lib/networks/network.py): the RPN's NHWC reshapes, its softmax over score pairs, the
    # proposal layer (py-faster-rcnn's, run by tf.py_func) and Fast R-CNN's ROI max pooling
    def op_spatial_reshape_layer(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        """tf.reshape(x, [N, H, -1, d]) of an NHWC map: (N, H, W, A·d) -> (N, H, W·A, d); here NCHW in and out."""
        d = self._int(a, "d", pos)
        nhwc, grouped = f"{name}:nhwc", f"{name}:reshape"
        self.builder.add(nhwc, "Permute", PermuteParams((0, 2, 3, 1)), current, nhwc, pos)
        self.builder.add(grouped, "Reshape", ReshapeParams((0, 0, -1, d)), [nhwc], grouped, pos)
        self.builder.add(name, "Permute", PermuteParams((0, 3, 1, 2)), [grouped], name, pos)

    def op_spatial_softmax(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self.builder.add(name, "Softmax", SoftmaxParams(1), current, name, pos)  # over the last NHWC axis

    def op_proposal_layer(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        """TFFRCNN's lib/rpn_msr/proposal_layer_tf.py: py-faster-rcnn's proposals (foreground scores in
        channels A..2A, small boxes dropped) that also drop boxes of aspect ratio over 5 or under 1/5;
        counts and thresholds from cfg.<cfg_key> (TFFRCNN's defaults unless --define gives them)."""
        stride, scales, key = a["_feat_stride"], a["anchor_scales"], a["cfg_key"]
        if isinstance(stride, tuple) and len(stride) == 1:
            stride = stride[0]
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
            raise self.fail(f"_feat_stride must be one positive integer (e.g. [16]), got {a['_feat_stride']!r}", pos)
        if not (isinstance(scales, tuple) and scales and all(_is_number(s) and s > 0 for s in scales)):
            raise self.fail(f"anchor_scales must be a list of positive numbers, got {scales!r}", pos)
        if key not in ("TEST", "TRAIN"):
            raise self.fail(f"cfg_key must be 'TEST' or 'TRAIN', got {key!r}", pos)
        pre, post, thresh, min_size = (self.evaluate._name(f"cfg.{key}.{item}", pos) for item in ("RPN_PRE_NMS_TOP_N", "RPN_POST_NMS_TOP_N", "RPN_NMS_THRESH", "RPN_MIN_SIZE"))
        params = py_faster_rcnn_proposal(stride, scales, (0.5, 1.0, 2.0), pre, post, thresh, min_size, max_aspect=5.0)
        self.builder.add(name, "Python", PythonParams(PyProposal.python_layer, params), current, name, pos)  # its rois; the scores are not kept

    def op_roi_pool(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        """TFFRCNN's roi_pooling_op: Caffe's ROIPooling on an NHWC map (rounded boxes, floor/ceil bins, empty bins 0)."""
        scale = a["spatial_scale"]
        if not (_is_number(scale) and scale > 0):
            raise self.fail(f"spatial_scale must be a positive number, got {scale!r}", pos)
        pooled = (self._int(a, "pooled_height", pos), self._int(a, "pooled_width", pos))
        self.builder.add(name, "ROIPooling", ROIPoolingParams(pooled, float(scale)), current, name, pos)

    # tf-pose (tf_pose/network_base.py): inputs normalised by constants; slim convolutions whose
    # batch norm (center only, eps 1e-3) replaces the bias; depthwise + pointwise separable blocks
    def op_normalize_vgg(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self.builder.add(name, "Power", PowerParams(1.0, 1.0 / 256.0, -0.5), current, name, pos)  # x * (1/256) - 0.5

    def op_normalize_mobilenet(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self.builder.add(name, "Power", PowerParams(1.0, 1.0 / 128.0, -1.0), current, name, pos)  # x / 128 - 1 (exact: 128 = 2^7)

    def _slim_conv(self, name: str, x: str, k: tuple[int, int], c_o: int, stride: int, pos: Pos, top: str | None = None) -> None:
        """A slim convolution whose normalizer is batch norm: no bias, then BN(center) under <name>/BatchNorm,
        all writing blob ``top`` (default ``name``)."""
        top = top or name
        params = ConvParams(num_output=c_o, kernel=k[:1] if k[0] == k[1] else k, stride=(stride,), bias_term=False, tf_same=True)
        self.builder.add(name, "Convolution", params, [x], top, pos)
        self.builder.weights[name] = ("conv", (name,))
        bn = f"{name}/BatchNorm"
        self.builder.add(bn, "BatchNorm", BatchNormParams(_SLIM_BN_EPS), [top], top, pos)
        self.builder.add(f"{bn}:offset", "Bias", ScaleParams(1, 1, False), [top], top, pos)
        self.builder.weights[bn] = ("bn", (bn, f"{bn}:offset"))

    def op_convb(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        k = (self._int(a, "k_h", pos), self._int(a, "k_w", pos))
        self._slim_conv(name, current[0], k, self._int(a, "c_o", pos), self._int(a, "stride", pos), pos)
        self._relu(name, a["relu"], pos)
        if a["set_tanh"]:  # despite the flag's name, tf-pose applies a sigmoid
            self.builder.add(f"{name}_extra_acv", "Sigmoid", NoParams(), [name], name, pos)

    def op_separable_conv(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        shape = self.builder.shape(current[0])
        if shape is None:
            raise self.fail("separable_conv() needs the input's channel count: give the input shapes", pos)
        channels = shape[1]
        k = (self._int(a, "k_h", pos), self._int(a, "k_w", pos))
        depthwise = f"{name}_depthwise"
        params = ConvParams(num_output=channels, kernel=k[:1] if k[0] == k[1] else k, stride=(self._int(a, "stride", pos),), group=channels, bias_term=False, tf_same=True)
        self.builder.add(depthwise, "Convolution", params, current, depthwise, pos)
        self.builder.weights[depthwise] = ("depthwise", (depthwise,))
        self._slim_conv(f"{name}_pointwise", depthwise, (1, 1), self._int(a, "c_o", pos), 1, pos, top=name)
        self._relu(name, a["relu"], pos)


def _names(target: Any) -> list[str]:
    if isinstance(target, Name):
        return [target.id]
    if isinstance(target, Seq):
        return [n for item in target.items for n in _names(item)]
    return []


def _describe_target(targets: Sequence[Any]) -> str:
    return " = ".join(_dotted(t) or ", ".join(_names(t)) or "..." for t in targets)


def _describe(stmt: Any) -> str:
    if isinstance(stmt, Import):
        return "an import"
    if isinstance(stmt, FuncDef):
        return f"def {stmt.name}"
    if isinstance(stmt, ClassDef):
        return f"class {stmt.name}"
    if isinstance(stmt, Simple):
        return stmt.keyword
    return type(stmt).__name__
