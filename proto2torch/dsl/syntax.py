"""Parsing caffe-tensorflow model files into a small AST — never importing or running them.

The Lark grammar ``grammars/pydsl.lark`` covers the Python these files are written in
(plus compound statements and general expressions, so that what lies outside the DSL
can be reported precisely).  The transformer below turns the parse tree into plain
frozen records with line/column positions.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from typing import Any

import lark
from lark import Token, v_args
from lark.indenter import Indenter
from lark.visitors import Transformer_NonRecursive

from ..errors import DSLError, LimitError, SourceSpan
from ..resources import grammar_text

MAX_DSL_BYTES = 16 * 1024 * 1024
MAX_NESTING = 200


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
class Seq:
    kind: str
    """tuple, list or dict (dict items are 2-tuples)"""
    items: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class Other:
    """Any other expression (lambda, comprehension, comparison, …): kept to be reported."""

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
    """pass, return, del, raise, print…: harmless or not, never executed."""

    keyword: str
    pos: Pos


@dataclass(frozen=True)
class Block:
    """A compound statement outside the DSL: if, for, while, with, try."""

    keyword: str
    body: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class FuncDef:
    name: str
    params: tuple[tuple[str, Any], ...]
    """(name, default expression or None)"""
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


def _pos(item: Any) -> Pos:
    if isinstance(item, Token):
        return Pos(item.line, item.column)
    return getattr(item, "pos", Pos(0, 0))


class _Indenter(Indenter):
    NL_type = "_NEWLINE"
    OPEN_PAREN_types = ["LPAR", "LSQB", "LBRACE"]
    CLOSE_PAREN_types = ["RPAR", "RSQB", "RBRACE"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Parse tree → frozen records; positions come from ``meta``."""

    def __default__(self, data, children, meta):  # noqa: ANN001, ANN204
        return Other(str(data), Pos(meta.line, meta.column) if not meta.empty else Pos(0, 0))

    @staticmethod
    def _p(meta) -> Pos:  # noqa: ANN001
        return Pos(meta.line, meta.column) if not meta.empty else Pos(0, 0)

    # statements
    def start(self, meta, children):  # noqa: ANN001, ANN201
        return tuple(c for c in children if c is not None)

    def suite(self, meta, children):  # noqa: ANN001, ANN201
        return tuple(c for c in children if c is not None)

    def expr_stmt(self, meta, children):  # noqa: ANN001, ANN201
        return ExprStmt(children[0], self._p(meta))

    def assign(self, meta, children):  # noqa: ANN001, ANN201
        return Assign(tuple(children[:-1]), children[-1], self._p(meta))

    def aug_assign(self, meta, children):  # noqa: ANN001, ANN201
        return Assign((children[0],), Other("augmented assignment", self._p(meta)), self._p(meta))

    def target(self, meta, children):  # noqa: ANN001, ANN201
        return children[0] if len(children) == 1 else Seq("tuple", tuple(children), self._p(meta))

    def bare_tuple(self, meta, children):  # noqa: ANN001, ANN201
        return Seq("tuple", tuple(children), self._p(meta))

    def import_stmt(self, meta, children):  # noqa: ANN001, ANN201
        return Import(self._p(meta))

    def pass_stmt(self, meta, children):  # noqa: ANN001, ANN201
        return Simple("pass", self._p(meta))

    def return_stmt(self, meta, children):  # noqa: ANN001, ANN201
        return Simple("return", self._p(meta))

    def other_stmt(self, meta, children):  # noqa: ANN001, ANN201
        return Simple(str(children[0]), self._p(meta))

    def block_stmt(self, meta, children):  # noqa: ANN001, ANN201
        keyword = str(children[0])
        body: list[Any] = []
        for child in children[1:]:
            if isinstance(child, tuple):
                body.extend(child)
        return Block(keyword, tuple(body), self._p(meta))

    def block_tail(self, meta, children):  # noqa: ANN001, ANN201
        return next((c for c in children if isinstance(c, tuple)), ())

    def funcdef(self, meta, children):  # noqa: ANN001, ANN201
        name = str(children[0])
        params = next((c for c in children[1:] if isinstance(c, list)), [])
        return FuncDef(name, tuple(params), children[-1], self._p(meta))

    def parameters(self, meta, children):  # noqa: ANN001, ANN201
        return [c for c in children if c is not None]

    def parameter(self, meta, children):  # noqa: ANN001, ANN201
        default = next((c[1] for c in children[1:] if isinstance(c, tuple) and c and c[0] == "default"), None)
        return (str(children[0]), default)

    def annotation(self, meta, children):  # noqa: ANN001, ANN201
        return ("annotation", children[0])

    def default(self, meta, children):  # noqa: ANN001, ANN201
        return ("default", children[0])

    def star_param(self, meta, children):  # noqa: ANN001, ANN201
        return ("*", None)

    def classdef(self, meta, children):  # noqa: ANN001, ANN201
        name = str(children[0])
        bases = next((tuple(c) for c in children[1:-1] if isinstance(c, list)), ())
        return ClassDef(name, bases, children[-1], self._p(meta))

    def decorated(self, meta, children):  # noqa: ANN001, ANN201
        return children[-1]

    # expressions
    def name(self, meta, children):  # noqa: ANN001, ANN201
        token = children[0]
        word = str(token)
        if word in ("True", "False", "None"):
            return Const({"True": True, "False": False, "None": None}[word], _pos(token))
        return Name(word, _pos(token))

    def number(self, meta, children):  # noqa: ANN001, ANN201
        token = children[0]
        try:
            value = ast.literal_eval(str(token))
        except (ValueError, SyntaxError):
            value = float("nan")
        return Const(value, _pos(token))

    def string(self, meta, children):  # noqa: ANN001, ANN201
        parts = []
        for token in children:
            try:
                parts.append(ast.literal_eval(str(token)))
            except (ValueError, SyntaxError) as exc:
                raise DSLError(f"bad string literal: {exc}") from None
        value = parts[0] if len(parts) == 1 else (b"".join(parts) if isinstance(parts[0], bytes) else "".join(map(str, parts)))
        return Const(value, _pos(children[0]))

    def paren(self, meta, children):  # noqa: ANN001, ANN201
        return children[0]

    def empty_tuple(self, meta, children):  # noqa: ANN001, ANN201
        return Seq("tuple", (), self._p(meta))

    def tuple(self, meta, children):  # noqa: ANN001, ANN201
        return Seq("tuple", tuple(c for c in children if c is not None), self._p(meta))

    def list(self, meta, children):  # noqa: ANN001, ANN201
        return Seq("list", tuple(c for c in children if c is not None), self._p(meta))

    def dict(self, meta, children):  # noqa: ANN001, ANN201
        return Seq("dict", tuple(c for c in children if c is not None), self._p(meta))

    def dict_item(self, meta, children):  # noqa: ANN001, ANN201
        return (children[0], children[1])

    def attribute(self, meta, children):  # noqa: ANN001, ANN201
        return Attr(children[0], str(children[1]), _pos(children[1]))

    def call(self, meta, children):  # noqa: ANN001, ANN201
        func, arglist = children[0], (children[1] if len(children) > 1 else [])
        args, kwargs, starred = [], [], False
        for item in arglist:
            if isinstance(item, tuple) and len(item) == 3 and item[0] == "kw":
                kwargs.append((item[1], item[2]))
            elif isinstance(item, tuple) and item and item[0] == "star":
                starred = True
            else:
                args.append(item)
        return Call(func, tuple(args), tuple(kwargs), _pos(func) if not meta.empty else self._p(meta), starred)

    def arglist(self, meta, children):  # noqa: ANN001, ANN201
        return list(children)

    def keyword(self, meta, children):  # noqa: ANN001, ANN201
        return ("kw", str(children[0]), children[1])

    def star_arg(self, meta, children):  # noqa: ANN001, ANN201
        return ("star",)

    def subscript(self, meta, children):  # noqa: ANN001, ANN201
        return Subscript(children[0], children[1], self._p(meta))

    def slice(self, meta, children):  # noqa: ANN001, ANN201
        parts = {kind: value for kind, value in children}
        return Slice(parts.get("lower"), parts.get("upper"), parts.get("step"), self._p(meta))

    def lower(self, meta, children):  # noqa: ANN001, ANN201
        return ("lower", children[0])

    def upper(self, meta, children):  # noqa: ANN001, ANN201
        return ("upper", children[0])

    def step(self, meta, children):  # noqa: ANN001, ANN201
        return ("step", children[0])

    def unary(self, meta, children):  # noqa: ANN001, ANN201
        return UnaryOp(str(children[0]), children[1], self._p(meta))

    def _binary(self, meta, children):  # noqa: ANN001, ANN202
        value = children[0]
        for op, right in zip(children[1::2], children[2::2]):
            value = BinOp(str(op), value, right, self._p(meta))
        return value

    arith = _binary
    term = _binary

    def power(self, meta, children):  # noqa: ANN001, ANN201
        return BinOp("**", children[0], children[1], self._p(meta))


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(grammar_text("pydsl.lark"), parser="lalr", postlex=_Indenter(), propagate_positions=True, maybe_placeholders=False)


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
    if not text.endswith("\n"):
        text += "\n"
    _check_nesting(text, filename)
    try:
        tree = _parser().parse(text)
        body = _ToAst().transform(tree)
    except lark.exceptions.VisitError as exc:
        orig = exc.orig_exc
        if isinstance(orig, DSLError):
            raise DSLError(orig.message, orig.where) from None
        raise DSLError(f"{filename}: cannot read this file: {orig}") from None
    except lark.exceptions.UnexpectedCharacters as exc:
        where = SourceSpan(filename, exc.line, exc.column, text)
        raise DSLError(f"unexpected character {text[exc.pos_in_stream]!r}; this is outside the Python subset the DSL reader accepts", where) from None
    except lark.exceptions.UnexpectedToken as exc:
        token = exc.token
        if token.type == "$END":
            where = SourceSpan(filename, max(text.count("\n"), 1), 1, text)
            raise DSLError("unexpected end of file (an unclosed bracket or block?)", where) from None
        where = SourceSpan(filename, token.line, token.column, text)
        shown = "an indented block" if token.type == "_INDENT" else ("the end of a block" if token.type == "_DEDENT" else repr(str(token)))
        raise DSLError(f"unexpected {shown}; this is outside the Python subset the DSL reader accepts", where) from None
    except lark.exceptions.UnexpectedEOF:
        raise DSLError(f"{filename}: unexpected end of file") from None
    except lark.exceptions.LarkError as exc:  # e.g. inconsistent dedent
        raise DSLError(f"{filename}: {str(exc).splitlines()[0]}") from None
    return Module(body, text, filename)


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
