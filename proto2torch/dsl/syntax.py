"""Parsing caffe-tensorflow model files into small frozen records — never importing or running them.

The file is parsed by Python's own parser (``ast.parse`` builds a syntax tree and executes
nothing), so any Python 3 the file contains reads, also outside the model classes: facenet's
``layer_decorated(self, *args, **kwargs)``, lambdas, comprehensions, ``assert x in (...)``.  The
tree becomes the records below, with 1-based line/column positions; the reader
(:mod:`.lower`) then looks only at what matters (module and class constants, each model class's
``setup`` and ``__init__``) and evaluates it with its own small evaluator, never Python's.

CPython builds syntax trees recursively: a chain of thousands of calls would exceed the default
recursion limit, so parsing runs in a thread with a large stack and a raised limit; what is
still too deep or too large is a :class:`LimitError`.
"""

from __future__ import annotations

import ast
import sys
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..errors import DSLError, LimitError, SourceSpan

MAX_DSL_BYTES = 16 * 1024 * 1024
MAX_NESTING = 200
_STACK_BYTES = 512 * 1024 * 1024
_DEEP_RECURSION = 250_000


@dataclass(frozen=True)
class Pos:
    line: int
    column: int


# --- expressions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Const:
    value: Any
    pos: Pos


@dataclass(frozen=True)
class Name:
    id: str
    pos: Pos


@dataclass(frozen=True)
class Attr:
    obj: Any
    attr: str
    pos: Pos


@dataclass(frozen=True)
class Call:
    func: Any
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]
    pos: Pos
    starred: bool = False
    """``*args`` or ``**kwargs`` in the call: its arguments are not known without running it."""


@dataclass(frozen=True)
class Subscript:
    obj: Any
    index: Any
    pos: Pos


@dataclass(frozen=True)
class Slice:
    lower: Any
    upper: Any
    step: Any
    pos: Pos


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Any
    right: Any
    pos: Pos


@dataclass(frozen=True)
class UnaryOp:
    op: str
    operand: Any
    pos: Pos


@dataclass(frozen=True)
class Compare:
    left: Any
    ops: tuple[str, ...]
    comparators: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class BoolOp:
    op: str
    """and, or"""
    values: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class IfExp:
    test: Any
    body: Any
    orelse: Any
    pos: Pos


@dataclass(frozen=True)
class FString:
    """An f-string: literal text and ``(expression, conversion, format spec)`` parts."""

    parts: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class Lambda:
    params: tuple[tuple[str, Any], ...]
    body: Any
    pos: Pos


@dataclass(frozen=True)
class Seq:
    kind: str
    """tuple, list or dict (dict items are 2-tuples)"""
    items: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class Other:
    """Any other expression (comprehension, generator, await, walrus…): kept to be reported."""

    what: str
    pos: Pos


# --- statements ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExprStmt:
    value: Any
    pos: Pos


@dataclass(frozen=True)
class Assign:
    targets: tuple[Any, ...]
    value: Any
    pos: Pos


@dataclass(frozen=True)
class Import:
    pos: Pos


@dataclass(frozen=True)
class Simple:
    """pass, return, del, raise, assert, global, break, continue: never executed."""

    keyword: str
    pos: Pos
    value: Any = None


@dataclass(frozen=True)
class If:
    test: Any
    body: tuple[Any, ...]
    orelse: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class For:
    target: Any
    iter: Any
    body: tuple[Any, ...]
    orelse: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class With:
    body: tuple[Any, ...]
    names: tuple[Any, ...]
    """The ``as`` targets."""
    pos: Pos


@dataclass(frozen=True)
class Block:
    """Another compound statement (while, try, match): its body is reported, never run."""

    keyword: str
    body: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class FuncDef:
    name: str
    params: tuple[tuple[str, Any], ...]
    """(name, default expression or None); ``*args`` and ``**kwargs`` as ``*`` and ``**``."""
    body: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class ClassDef:
    name: str
    bases: tuple[Any, ...]
    body: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class Module:
    body: tuple[Any, ...]
    source: str = field(repr=False, default="")
    filename: str = "<dsl>"

    def span(self, pos: Pos) -> SourceSpan:
        return SourceSpan(self.filename, pos.line, pos.column, self.source)


# --- ast → records ---------------------------------------------------------------------------------

_BINOPS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
    ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^", ast.MatMult: "@",
}
_UNARY = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not", ast.Invert: "~"}
_COMPARE = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}


def _pos(node: ast.AST) -> Pos:
    return Pos(getattr(node, "lineno", 0), getattr(node, "col_offset", -1) + 1)


def _attr_pos(node: ast.Attribute) -> Pos:
    """Where the attribute's name starts (``.conv`` in a chain points at ``conv``)."""
    end_line, end_col = getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)
    if end_line is None or end_col is None:
        return _pos(node)
    return Pos(end_line, end_col - len(node.attr) + 1)


def _expr(node: Any) -> Any:
    if node is None:
        return None
    pos = _pos(node)
    if isinstance(node, ast.Constant):
        return Const(node.value, pos)
    if isinstance(node, ast.Name):
        return Name(node.id, pos)
    if isinstance(node, ast.Attribute):
        return Attr(_expr(node.value), node.attr, _attr_pos(node))
    if isinstance(node, ast.Call):
        args, starred = [], False
        for a in node.args:
            if isinstance(a, ast.Starred):
                starred = True
            else:
                args.append(_expr(a))
        kwargs = []
        for k in node.keywords:
            if k.arg is None:
                starred = True
            else:
                kwargs.append((k.arg, _expr(k.value)))
        func = _expr(node.func)
        return Call(func, tuple(args), tuple(kwargs), func.pos if isinstance(func, Attr) else pos, starred)
    if isinstance(node, ast.Subscript):
        return Subscript(_expr(node.value), _expr(node.slice), pos)
    if isinstance(node, ast.Slice):
        return Slice(_expr(node.lower), _expr(node.upper), _expr(node.step), pos)
    if isinstance(node, ast.BinOp):
        return BinOp(_BINOPS.get(type(node.op), "?"), _expr(node.left), _expr(node.right), pos)
    if isinstance(node, ast.UnaryOp):
        return UnaryOp(_UNARY.get(type(node.op), "?"), _expr(node.operand), pos)
    if isinstance(node, ast.Compare):
        return Compare(_expr(node.left), tuple(_COMPARE.get(type(o), "?") for o in node.ops), tuple(_expr(c) for c in node.comparators), pos)
    if isinstance(node, ast.BoolOp):
        return BoolOp("and" if isinstance(node.op, ast.And) else "or", tuple(_expr(v) for v in node.values), pos)
    if isinstance(node, ast.IfExp):
        return IfExp(_expr(node.test), _expr(node.body), _expr(node.orelse), pos)
    if isinstance(node, ast.JoinedStr):
        parts: list[Any] = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                spec = _expr(value.format_spec) if value.format_spec is not None else None
                parts.append((_expr(value.value), chr(value.conversion) if value.conversion > 0 else "", spec))
            else:
                parts.append(_expr(value))
        return FString(tuple(parts), pos)
    if isinstance(node, ast.Lambda):
        return Lambda(_params(node.args), _expr(node.body), pos)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        kind = {ast.Tuple: "tuple", ast.List: "list", ast.Set: "set"}[type(node)]
        if any(isinstance(e, ast.Starred) for e in node.elts):
            return Other(f"a {kind} with *unpacking", pos)
        return Seq(kind, tuple(_expr(e) for e in node.elts), pos)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            return Other("a dict with **unpacking", pos)
        return Seq("dict", tuple((_expr(k), _expr(v)) for k, v in zip(node.keys, node.values)), pos)
    what = {
        ast.ListComp: "a list comprehension", ast.SetComp: "a set comprehension", ast.DictComp: "a dict comprehension",
        ast.GeneratorExp: "a generator expression", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield from",
        ast.NamedExpr: "an assignment expression (:=)", ast.Starred: "*unpacking",
    }.get(type(node), type(node).__name__)
    return Other(what, pos)


def _params(args: ast.arguments) -> tuple[tuple[str, Any], ...]:
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + [_expr(d) for d in args.defaults]
    params: list[tuple[str, Any]] = [(a.arg, d) for a, d in zip(positional, defaults)]
    if args.vararg is not None:
        params.append(("*", None))
    params += [(a.arg, _expr(d) if d is not None else None) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg is not None:
        params.append(("**", None))
    return tuple(params)


def _body(statements: list[ast.stmt]) -> tuple[Any, ...]:
    return tuple(s for s in (_stmt(s) for s in statements) if s is not None)


def _stmt(node: ast.stmt) -> Any:
    pos = _pos(node)
    if isinstance(node, ast.Expr):
        return ExprStmt(_expr(node.value), pos)
    if isinstance(node, ast.Assign):
        return Assign(tuple(_expr(t) for t in node.targets), _expr(node.value), pos)
    if isinstance(node, ast.AnnAssign):
        return Assign((_expr(node.target),), _expr(node.value), pos) if node.value is not None else None
    if isinstance(node, ast.AugAssign):  # x *= d is x = x * d for the evaluator
        target = _expr(node.target)
        return Assign((target,), BinOp(_BINOPS.get(type(node.op), "?"), target, _expr(node.value), pos), pos)
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return Import(pos)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return FuncDef(node.name, _params(node.args), _body(node.body), pos)
    if isinstance(node, ast.ClassDef):
        return ClassDef(node.name, tuple(_expr(b) for b in node.bases), _body(node.body), pos)
    if isinstance(node, ast.If):
        return If(_expr(node.test), _body(node.body), _body(node.orelse), pos)
    if isinstance(node, ast.For | ast.AsyncFor):
        return For(_expr(node.target), _expr(node.iter), _body(node.body), _body(node.orelse), pos)
    if isinstance(node, ast.With | ast.AsyncWith):
        return With(_body(node.body), tuple(_expr(i.optional_vars) for i in node.items if i.optional_vars is not None), pos)
    if isinstance(node, ast.Return):
        return Simple("return", pos, _expr(node.value))
    if isinstance(node, ast.While):
        return Block("while", _body(node.body) + _body(node.orelse), pos)
    if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
        inner = list(node.body) + [s for h in node.handlers for s in h.body] + list(node.orelse) + list(node.finalbody)  # type: ignore[attr-defined]
        return Block("try", _body(inner), pos)
    if type(node).__name__ == "Match":
        return Block("match", _body([s for case in node.cases for s in case.body]), pos)  # type: ignore[attr-defined]
    keyword = {ast.Pass: "pass", ast.Delete: "del", ast.Raise: "raise", ast.Assert: "assert", ast.Global: "global",
               ast.Nonlocal: "nonlocal", ast.Break: "break", ast.Continue: "continue"}.get(type(node), type(node).__name__)
    return Simple(keyword, pos)


# --- parsing ---------------------------------------------------------------------------------------


def parse_dsl_source(text: str | bytes, filename: str = "<dsl>") -> Module:
    """Parse a model file into a :class:`Module` (nothing is imported or evaluated)."""
    if isinstance(text, bytes):
        if len(text) > MAX_DSL_BYTES:
            raise LimitError(f"{filename}: {len(text)} bytes is over the {MAX_DSL_BYTES}-byte limit for a model file")
        if b"\x00" in text[:4096]:
            raise DSLError(f"{filename}: this is a binary file, not Python source")
        text = text.decode("utf-8", errors="replace")
    if len(text) > MAX_DSL_BYTES:
        raise LimitError(f"{filename}: over the {MAX_DSL_BYTES}-byte limit for a model file")
    if "\x00" in text:
        raise DSLError(f"{filename}: the file holds NUL characters: it is not Python source")
    _check_nesting(text, filename)
    outcome: dict[str, Any] = {}

    def work() -> None:
        old = sys.getrecursionlimit()
        try:
            sys.setrecursionlimit(max(old, _DEEP_RECURSION))
            with warnings.catch_warnings():  # Python's own warnings about the text ("invalid escape sequence") are not the reader's
                warnings.simplefilter("ignore")
                tree = ast.parse(text, filename=filename)
            outcome["body"] = _body(tree.body)
        except BaseException as exc:  # handed to the caller's thread, typed there
            outcome["error"] = exc
        finally:
            sys.setrecursionlimit(old)

    _in_deep_thread(work)
    error = outcome.get("error")
    if isinstance(error, SyntaxError):
        raise _syntax_error(error, text, filename) from None
    if isinstance(error, (RecursionError, MemoryError)):
        raise LimitError(f"{filename}: the file nests expressions or statements too deeply to be read") from None
    if isinstance(error, (ValueError, OverflowError)):
        raise DSLError(f"{filename}: cannot read this file: {error}") from None
    if error is not None:
        raise error
    return Module(outcome["body"], text, filename)


_LOCK = threading.Lock()


def _in_deep_thread(work: Any) -> None:
    """Run ``work`` in a thread whose stack holds CPython's recursive syntax-tree builder on deep input."""
    with _LOCK:  # stack_size is process-wide: set it only around this thread's start
        previous = threading.stack_size(_STACK_BYTES)
        try:
            thread = threading.Thread(target=work, name="proto2torch-dsl-parse", daemon=True)
            thread.start()
        finally:
            threading.stack_size(previous)
    thread.join()


_PYTHON2 = ("Missing parentheses in call to 'print'", "Missing parentheses in call to 'exec'", "multiple exception types must be parenthesized")


def _syntax_error(exc: SyntaxError, text: str, filename: str) -> DSLError:
    line = exc.lineno or 1
    column = exc.offset or 1
    where = SourceSpan(filename, line, column, text)
    message = exc.msg or "invalid syntax"
    source_line = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
    if any(m in message for m in _PYTHON2) or source_line.lstrip().startswith(("print ", "exec ")) or " ur'" in source_line:
        return DSLError(f"this file is Python 2 ({message}); model files are read as Python 3, and a Python 2 file must be ported first (2to3)", where)
    return DSLError(f"this is not valid Python: {message}", where)


def _check_nesting(text: str, filename: str) -> None:
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    if deepest > MAX_NESTING:
        raise LimitError(f"{filename}: brackets nested more than {MAX_NESTING} deep")
