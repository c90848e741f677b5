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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DSLError, DSLMissingShapeError, Proto2TorchError, guarded
from ..ir.graph import Net, Node, Value, compute_outputs
from ..ir.shapes import check_shape_of, infer_shapes
from ..layers.activations import DropoutParams, PReLUParams, SlopeParams
from ..layers.conv import ConvParams
from ..layers.data import InputParams
from ..layers.eltwise import EltwiseParams
from ..layers.inner_product import InnerProductParams
from ..layers.normalization import BatchNormParams, LRNParams
from ..layers.pooling import PoolParams
from ..layers.reduce import SoftmaxParams
from ..layers.registry import NoParams, lookup
from ..layers.resize import InterpParams, PadParams
from ..layers.scale import ScaleParams
from ..layers.shape_ops import AxisParams, FlattenParams
from ..prototxt.schema import Diagnostic
from .syntax import (
    Assign,
    Attr,
    BinOp,
    Block,
    Call,
    ClassDef,
    Const,
    ExprStmt,
    FuncDef,
    Import,
    Module,
    Name,
    Pos,
    Seq,
    Simple,
    Slice,
    Subscript,
    UnaryOp,
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


DIALECTS = {
    "ethereon": Dialect("ethereon", "SAME", 1e-5, "reference"),
    "drsleep": Dialect("drsleep", "SAME", 1e-3, "slim"),
    "pspnet": Dialect("pspnet", "VALID", 1e-5, "reference", group=False),
    "icnet": Dialect("icnet", "VALID", 1e-5, "reference", group=False, add_resizes=True),
    "facenet": Dialect("facenet", "SAME", 1e-5, "reference", softmax_axis=True),
}

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
}
_SLIM_BN = ((), {"is_training": False, "activation_fn": None, "scale": True})
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
                (shape,) = spec.infer(params, shapes)  # type: ignore[arg-type]
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


class _Evaluator:
    """Literal values only: constants, arithmetic on numbers, names bound to such values."""

    def __init__(self, module: Module, env: Mapping[str, Any]):
        self.module = module
        self.env = env

    def fail(self, message: str, pos: Pos) -> DSLError:
        return DSLError(message, self.module.span(pos))

    def __call__(self, expr: Any) -> Any:
        if isinstance(expr, Const):
            if isinstance(expr.value, bytes):
                raise self.fail("byte strings are not used in layer arguments", expr.pos)
            return expr.value
        if isinstance(expr, Seq):
            if expr.kind == "dict":
                raise self.fail("dict literals are not layer arguments", expr.pos)
            return tuple(self(item) for item in expr.items)
        if isinstance(expr, Name):
            if expr.id.startswith("__"):
                raise self.fail(f"'{expr.id}' is not allowed in a model file", expr.pos)
            if expr.id not in self.env:
                raise self.fail(f"'{expr.id}' is not a constant of this file or a setup parameter with a value (--define {expr.id}=VALUE)", expr.pos)
            value = self.env[expr.id]
            if isinstance(value, Opaque):
                raise self.fail(f"'{expr.id}' is computed by Python code at line {value.pos.line} ({value.what}), which is not run", expr.pos)
            return value
        if isinstance(expr, Attr):
            if expr.attr.startswith("__"):
                raise self.fail(f"attribute '{expr.attr}' is not allowed in a model file", expr.pos)
            path = _dotted(expr)
            if path in ("tf.nn.relu", "tensorflow.nn.relu"):
                return Activation("relu")
            raise self.fail(f"'{path or expr.attr}' is not a literal value", expr.pos)
        if isinstance(expr, UnaryOp):
            value = self(expr.operand)
            if not _is_number(value):
                raise self.fail(f"unary {expr.op} needs a number", expr.pos)
            return -value if expr.op == "-" else (+value if expr.op == "+" else self._refuse(expr))
        if isinstance(expr, BinOp):
            return self._binary(expr)
        if isinstance(expr, Call):
            what = _dotted(expr.func) or "an expression"
            if any(part.startswith("__") for part in what.split(".")):
                raise self.fail(f"'{what}' is not allowed in a model file", expr.pos)
            raise self.fail(f"the call {what}(...) is not evaluated: layer arguments must be literal values", expr.pos)
        return self._refuse(expr)

    def _refuse(self, expr: Any) -> Any:
        pos = getattr(expr, "pos", Pos(0, 0))
        inner = expr
        while isinstance(inner, (Subscript, Attr)):
            inner = inner.obj
        if isinstance(inner, Call):  # e.g. tf.shape(x)[0]
            self(inner)
        raise self.fail(f"this expression ({type(expr).__name__.lower()}) is not a literal value", pos)

    def _binary(self, expr: BinOp) -> Any:
        left, right = self(expr.left), self(expr.right)
        if not (_is_number(left) and _is_number(right)):
            raise self.fail(f"'{expr.op}' is only evaluated on numbers", expr.pos)
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
    classes = [s for s in module.body if isinstance(s, ClassDef) and any(isinstance(m, FuncDef) and m.name == "setup" for m in s.body)]
    names = [c.name for c in classes]
    if not classes:
        raise DSLError(f"{module.filename}: no class with a setup() method (a caffe-tensorflow Network subclass) was found")
    if class_name is not None:
        for c in classes:
            if c.name == class_name:
                return c, names
        raise DSLError(f"{module.filename}: no model class '{class_name}'; the file defines {', '.join(names)}")
    return classes[0], names


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
        elif isinstance(stmt, Block):
            names += _chains_in(stmt.body)
    return names


def detect_dialect(module: Module, setup: FuncDef) -> tuple[str, str]:
    """The dialect this file is written in, and why."""
    methods: set[str] = set()
    bn_keywords: set[str] = set()
    positional_softmax = False

    def walk(statements: Sequence[Any]) -> None:
        nonlocal positional_softmax
        for stmt in statements:
            if isinstance(stmt, Block):
                walk(stmt.body)
            elif isinstance(stmt, ExprStmt):
                chain = _chain(stmt)
                for method, args, kwargs, _ in chain.calls if chain else []:
                    methods.add(method)
                    if method == "batch_normalization":
                        bn_keywords.update(k for k, _ in kwargs)
                    if method == "softmax" and args:
                        positional_softmax = True

    walk(setup.body)
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
) -> Net:
    """Read a caffe-tensorflow model file into a :class:`Net` (input shapes in NCHW)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DSLError(f"cannot read {path}: {exc.strerror}") from None
    return net_from_dsl(data, str(path), inputs=inputs, dialect=dialect, defines=defines, class_name=class_name)


@guarded("reading the caffe-tensorflow model")
def net_from_dsl(
    text: str | bytes,
    filename: str = "<dsl>",
    *,
    inputs: Mapping[str, Sequence[int]] | None = None,
    dialect: str | None = None,
    defines: Mapping[str, str] | None = None,
    class_name: str | None = None,
) -> Net:
    module = parse_dsl_source(text, filename)
    cls, all_classes = _find_class(module, class_name)
    setup = next(m for m in cls.body if isinstance(m, FuncDef) and m.name == "setup")
    diagnostics: list[Diagnostic] = []
    if len(all_classes) > 1:
        diagnostics.append(Diagnostic(module.span(cls.pos), f"the file defines {', '.join(all_classes)}; reading {cls.name} (choose with --class)"))
    env = _environment(module, cls, setup, defines or {})
    detected, why = detect_dialect(module, setup)
    declared = env.get("DSL_DIALECT")
    if isinstance(declared, str) and not dialect:
        detected, why = declared, "declared by DSL_DIALECT in the file"
    name = dialect or detected
    if name not in DIALECTS:
        raise DSLError(f"unknown dialect {name!r}; choose one of {', '.join(DIALECTS)}")
    diagnostics.append(Diagnostic(None, f"dialect: {name} ({'forced' if dialect else 'detected: ' + why})"))
    reader = _Reader(module, DIALECTS[name], env, _Builder(module, dict(inputs or {})), diagnostics)
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


def _environment(module: Module, cls: ClassDef, setup: FuncDef, defines: Mapping[str, str]) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for scope in (module.body, cls.body):
        for stmt in scope:
            if isinstance(stmt, Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], Name):
                value = stmt.value
                if isinstance(value, Seq) and value.kind == "dict":  # the emitter's CAFFE_BLOBS table
                    pairs = {}
                    for key, item in value.items:
                        if isinstance(key, Const) and isinstance(item, Const) and isinstance(key.value, str) and isinstance(item.value, str):
                            pairs[key.value] = item.value
                    env[stmt.targets[0].id] = pairs
                    continue
                env[stmt.targets[0].id] = _constant(module, value, env)
    for name, default in setup.params:
        if name in ("self", "*"):
            continue
        if name in defines:
            env[name] = _define(defines[name])
        elif name == "is_training" or name.startswith("is_training"):
            env[name] = IS_TRAINING
        elif default is not None:
            env[name] = _constant(module, default, env)
        else:
            env[name] = Opaque(f"setup parameter '{name}' without a value (give --define {name}=VALUE)", setup.pos)
    for name, text in defines.items():
        env.setdefault(name, _define(text))
    return env


def _define(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text


class _Reader:
    def __init__(self, module: Module, dialect: Dialect, env: dict[str, Any], builder: _Builder, diagnostics: list[Diagnostic]):
        self.module = module
        self.dialect = dialect
        self.env = env
        self.builder = builder
        self.diagnostics = diagnostics
        self.evaluate = _Evaluator(module, env)

    def fail(self, message: str, pos: Pos) -> DSLError:
        return DSLError(message, self.module.span(pos))

    # statements
    def statements(self, body: Sequence[Any]) -> None:
        for stmt in body:
            if isinstance(stmt, ExprStmt):
                if isinstance(stmt.value, Const) and isinstance(stmt.value.value, str):
                    continue  # a docstring
                chain = _chain(stmt)
                if chain is None:
                    raise self.fail("this statement is not a layer chain (self.feed(...).op(...)); the DSL reader does not run Python", stmt.pos)
                self.chain(chain)
            elif isinstance(stmt, Assign):
                self.assign(stmt)
            elif isinstance(stmt, Block):
                inside = _chains_in(stmt.body)
                which = f"; it holds {len(inside)} chain(s), starting with {inside[0]}" if inside else ""
                raise self.fail(f"a '{stmt.keyword}' statement is Python control flow, which the DSL reader does not run{which}", stmt.pos)
            elif isinstance(stmt, Simple) and stmt.keyword == "pass":
                continue
            elif isinstance(stmt, (Import, FuncDef, ClassDef, Simple)):
                raise self.fail(f"this statement ({_describe(stmt)}) is not part of a layer definition", stmt.pos)
            else:
                raise self.fail("this statement is outside the DSL", getattr(stmt, "pos", Pos(0, 0)))

    def assign(self, stmt: Assign) -> None:
        value = stmt.value
        if len(stmt.targets) != 1 or not isinstance(stmt.targets[0], Name):
            for target in stmt.targets:
                for name in _names(target):
                    self.env[name] = Opaque("an unpacking assignment", stmt.pos)
            return
        target = stmt.targets[0].id
        if target.startswith("__"):
            raise self.fail(f"'{target}' is not allowed in a model file", stmt.pos)
        ref = self.layer_ref(value)
        if ref is not None:
            self.env[target] = ref
            return
        shape = self.shape_ref(value)
        if shape is not None:
            self.env[target] = shape
            return
        try:
            self.env[target] = self.evaluate(value)
        except DSLError:
            self.env[target] = Opaque(f"'{target} = ...'", stmt.pos)

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
        elif method == "softmax" and self.dialect.softmax_axis:
            positional, defaults = ("axis",), {}
        elif method in _SIGNATURES:
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
        single = method not in ("concat", "add")
        if single and len(current) != 1:
            raise self.fail(f"{method}() works on one input but the chain feeds {len(current)} ({', '.join(current)})", pos)
        if not single and len(current) < 2 and method == "add":
            raise self.fail(f"add() needs several inputs fed together, got {len(current)}", pos)
        handler = getattr(self, f"op_{method}")
        handler(name, a, current, pos)
        return name

    # the operations -----------------------------------------------------------------------
    def _int(self, a: Mapping[str, Any], key: str, pos: Pos, minimum: int = 1) -> int:
        value = a[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
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
        if self.dialect.add_resizes:  # ICNet: input 0 is first resized to input 1's size
            resized = f"{name}:resize"
            self.builder.add(resized, "Interp", InterpParams(align_corners=False), [inputs[0], inputs[1]], resized, pos)
            inputs[0] = resized
        self.builder.add(name, "Eltwise", EltwiseParams("SUM"), inputs, name, pos)

    def op_fc(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        self.builder.add(name, "InnerProduct", InnerProductParams(self._int(a, "num_out", pos)), current, name, pos)
        self.builder.weights[name] = ("fc", (name,))
        self._relu(name, a["relu"], pos)

    def op_softmax(self, name: str, a: dict[str, Any], current: list[str], pos: Pos) -> None:
        shape = self.builder.shape(current[0])
        x = current[0]
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


def _names(target: Any) -> list[str]:
    if isinstance(target, Name):
        return [target.id]
    if isinstance(target, Seq):
        return [n for item in target.items for n in _names(item)]
    return []


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
