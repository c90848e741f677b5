"""Protobuf text format: Lark grammar → generic :class:`Msg` tree, and back to text.

Parsing never executes anything and is bounded: files over :data:`MAX_TEXT_BYTES`
and nesting deeper than :data:`MAX_DEPTH` are refused with a :class:`LimitError`.
Syntax errors become :class:`ParseError` with ``file:line:col`` and a caret.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

import lark
from lark import Token, Transformer, v_args

from ..errors import LimitError, ParseError, SourceSpan
from ..resources import grammar_text
from .message import Ident, Msg, Source, Template

MAX_TEXT_BYTES = 64 * 1024 * 1024
"""Largest prototxt accepted; the biggest real ones are around 2 MB."""

MAX_DEPTH = 64
"""Deepest message nesting accepted; Caffe nets nest about 4 levels."""

_LIST = object()  # marks the entries of a `key: [a, b]` field


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.S)


def _unescape(body: str) -> str:
    if "\\" not in body:
        return body
    raw = bytearray()
    pos = 0
    for m in _ESCAPE_RE.finditer(body):
        raw += body[pos : m.start()].encode("utf-8")
        code = m.group(1)
        if code[0] == "x" and len(code) > 1:
            raw.append(int(code[1:], 16))
        elif code[0] in "01234567":
            raw.append(int(code, 8) & 0xFF)
        elif code[0] in "uU" and len(code) > 1:
            point = int(code[1:], 16)
            valid = point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF
            raw += (chr(point) if valid else "\ufffd").encode("utf-8")
        else:  # a simple escape; an unknown or incomplete one (\x, \u12) stays as written
            raw += _ESCAPES.get(code, "\\" + code).encode("utf-8")
        pos = m.end()
    raw += body[pos:].encode("utf-8")
    return raw.decode("utf-8", errors="replace")


def _define_value(text: str) -> Any:
    """The value a ``--define NAME=TEXT`` stands for: a number, a quoted string or an identifier."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return _unescape(text[1:-1])
    body = text[1:] if text.startswith("-") else text
    try:
        number = _number(body)
    except ValueError:
        return Ident(text)
    return -number if text.startswith("-") else number


def _number(text: str) -> int | float:
    if text[:2] in ("0x", "0X"):
        return int(text, 16)
    if text[-1] in "fF":
        return float(text[:-1])
    if text.isdigit():
        return int(text, 8) if len(text) > 1 and text[0] == "0" else int(text)
    return float(text)


@v_args(inline=True)
class _ToMsg(Transformer):
    """Builds :class:`Msg` objects while LALR parses (no parse tree is kept)."""

    def __init__(self, source: Source, defines: dict[str, str] | None = None):
        super().__init__()
        self.source = source
        self.defines = defines or {}

    def string(self, *parts: Token) -> str:
        text = "".join(_unescape(p[1:-1]) for p in parts)
        if self.defines and "${" in text:  # a placeholder inside a string, e.g. source: "${DATA}/train_lmdb"
            text = _PLACEHOLDER.sub(lambda m: self.defines.get(m.group(1), m.group(0)), text)
        return text

    def number(self, tok: Token) -> int | float:
        return self._checked(tok)

    def neg_number(self, tok: Token) -> int | float:
        return -self._checked(tok)

    def _checked(self, tok: Token) -> int | float:
        try:
            return _number(tok)
        except ValueError:
            where = SourceSpan(self.source.name, tok.line, tok.column, self.source.text)
            raise ParseError(f"{tok!s} is not a number (a leading 0 means octal, whose digits are 0-7)", where) from None

    def ident(self, tok: Token) -> Ident:
        return Ident(tok)

    def neg_ident(self, tok: Token) -> Ident:
        return Ident("-" + tok)

    def template(self, tok: Token) -> Template:
        name = str(tok)[2:-1]
        if name in self.defines:
            return _define_value(self.defines[name])
        return Template(name)

    def value(self, v: Any) -> Any:
        return v

    def scalar_field(self, name: Token, value: Any) -> tuple:
        return (str(name), value, name.line, name.column)

    def list_field(self, name: Token, *values: Any) -> tuple:
        items = [(str(name), v, name.line, name.column) for v in values if v is not None]
        return (_LIST, items)

    message_list_field = list_field

    def message_field(self, name: Token, nested: tuple[Msg, int]) -> tuple:
        msg, depth = nested
        msg.line, msg.column = name.line, name.column
        return (str(name), msg, name.line, name.column, depth)

    def _collect(self, fields: tuple) -> tuple[Msg, int]:
        """Entries of one message and its nesting depth (entries may carry a 5th item: depth)."""
        entries: list[tuple] = []
        depth = 0
        for f in fields:
            for entry in f[1] if f[0] is _LIST else (f,):
                if isinstance(entry[1], tuple):  # a message inside `key: [{...}]`
                    entry = (entry[0], entry[1][0], entry[2], entry[3], entry[1][1])
                if len(entry) == 5:
                    depth = max(depth, entry[4])
                    entry = entry[:4]
                entries.append(entry)
        if depth >= MAX_DEPTH:
            raise LimitError(f"messages nested deeper than {MAX_DEPTH} levels")
        return Msg(entries, source=self.source), depth + 1

    def message(self, *fields: tuple) -> tuple[Msg, int]:
        return self._collect(fields)

    def start(self, *fields: tuple) -> Msg:
        msg, _ = self._collect(fields)
        msg.line, msg.column = 1, 1
        return msg


@functools.cache
def _parser() -> lark.Lark:
    return lark.Lark(grammar_text("prototxt.lark"), parser="lalr", lexer="contextual", maybe_placeholders=True)


_TOKEN_NAMES = {
    "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['", "RSQB": "']'", "COLON": "':'", "COMMA": "','",
    "LESSTHAN": "'<'", "MORETHAN": "'>'", "MINUS": "'-'", "NAME": "a field name", "NUMBER": "a number",
    "STRING": "a string", "_SEP": "';'", "$END": "end of file",
}


def _describe_expected(expected: set[str]) -> str:
    names = sorted({_TOKEN_NAMES.get(e, e) for e in expected})
    return ", ".join(names)


def _unclosed_brace(text: str) -> tuple[int, int] | None:
    """Line and column of the last '{' or '<' that is never closed (strings and comments skipped)."""
    stack: list[tuple[int, int]] = []
    line, col = 1, 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        col += 1
        if c == "\n":
            line, col = line + 1, 0
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            col += j - i
            i = j + 1
            continue
        elif c in "{<":
            stack.append((line, col))
        elif c in "}>" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack else None


# --- fast path ---------------------------------------------------------------------------
#
# Real prototxt files use a small part of the text format: `name: scalar`, `name {`, `}` and
# comments.  This scanner handles exactly that part with one regular expression, about ten
# times faster than the LALR parser.  On anything else (lists, `<...>`, adjacent strings,
# syntax errors…) it gives up and the Lark parser above parses the file, so the grammar stays
# the one definition of the language and the only source of error messages.
# tests/test_textformat.py checks that both produce the same tree on the whole corpus.

_FAST_TOKEN = re.compile(
    r"""(?:[ \t\r\n\f\v]++|\#[^\n]*+)*+   # whitespace and comments (possessive: no backtracking)
    (?:
        (?P<name>[A-Za-z_]\w*)[ \t]*
        (?: :[ \t]*(?P<value>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|-?[A-Za-z0-9_.]+(?:[+-][0-9]+)?)
          | :?[ \t]*(?P<open>\{) )
      | (?P<close>\})
      | (?P<sep>[;,])
    )""",
    re.VERBOSE,
)
_FAST_NUMBER = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[fF]?)\Z")
_FAST_IDENT = re.compile(r"-?[A-Za-z_]\w*\Z")
_TRAILING = re.compile(r"(?:[ \t\r\n\f\v]++|\#[^\n]*+)*+\Z")


def _fast_parse(text: str, source: Source) -> Msg | None:
    """Parse the common subset of text format, or return None to let the grammar decide."""
    root = Msg(source=source, line=1, column=1)
    stack = [root]
    entries = root.entries
    pos, n = 0, len(text)
    line, line_start, counted = 1, 0, 0
    match = _FAST_TOKEN.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            if _TRAILING.match(text, pos):
                break
            return None
        pos = m.end()
        if m.group("sep") is not None:
            continue
        if m.group("close") is not None:
            if len(stack) == 1:
                return None
            stack.pop()
            entries = stack[-1].entries
            continue
        start = m.start("name")
        line += text.count("\n", counted, start)
        counted = start
        nl = text.rfind("\n", line_start, start)
        if nl >= 0:
            line_start = nl + 1
        column = start - line_start + 1
        name = m.group("name")
        raw = m.group("value")
        if raw is None:  # `name {`
            if len(stack) >= MAX_DEPTH:
                return None
            child = Msg(source=source, line=line, column=column)
            entries.append((name, child, line, column))
            stack.append(child)
            entries = child.entries
            continue
        first = raw[0]
        if first in "\"'":
            value: Any = _unescape(raw[1:-1])
        elif _FAST_NUMBER.match(raw):
            try:
                value = -_number(raw[1:]) if first == "-" else _number(raw)
            except ValueError:  # e.g. "08", a bad octal number: the grammar's path reports it with its position
                return None
        elif _FAST_IDENT.match(raw):
            value = Ident(raw)
        else:
            return None
        entries.append((name, value, line, column))
    if len(stack) != 1:
        return None
    return root


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def parse_text(text: str | bytes, filename: str = "<text>", defines: dict[str, str] | None = None) -> Msg:
    """Parse protobuf text format into an untyped :class:`Msg` tree.

    ``defines`` substitutes ``${NAME}`` placeholders of templated files; placeholders
    without a definition stay in the tree as :class:`Template` values.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_TEXT_BYTES:
            raise LimitError(f"{filename}: {len(text)} bytes is over the {MAX_TEXT_BYTES}-byte limit for a prototxt")
        if b"\x00" in text[:4096]:
            raise ParseError(f"{filename}: this is a binary file, not protobuf text format (is it a .caffemodel?)")
        text = text.decode("utf-8", errors="replace")
    if len(text) > MAX_TEXT_BYTES:
        raise LimitError(f"{filename}: {len(text)} characters is over the {MAX_TEXT_BYTES}-byte limit for a prototxt")
    source = Source(filename, text)
    fast = None if defines and "${" in text else _fast_parse(text, source)
    if fast is not None:
        return fast
    return parse_text_grammar(text, filename, source, defines)


_NESTING_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|\'(?:[^\'\\\n]|\\.)*\'?|#[^\n]*|[{<\[]|[}>\]]')


def _check_nesting(text: str, filename: str) -> None:
    """Refuse nesting beyond :data:`MAX_DEPTH` before the grammar sees it (its tree is
    transformed recursively), naming where the limit is crossed."""
    depth = 0
    for m in _NESTING_TOKEN.finditer(text):
        char = m.group()[0]
        if char in "{<[":
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, m.start()) + 1
                column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
                raise LimitError(f"messages nested deeper than {MAX_DEPTH} levels", SourceSpan(filename, line, column, text))
        elif char in "}>]":
            depth = max(depth - 1, 0)


def parse_text_grammar(
    text: str, filename: str = "<text>", source: Source | None = None, defines: dict[str, str] | None = None
) -> Msg:
    """Parse with the Lark grammar alone (the reference parser; slower, precise errors)."""
    source = source or Source(filename, text)
    _check_nesting(text, filename)
    try:
        tree = _parser().parse(text)
        return _ToMsg(source, defines).transform(tree)
    except lark.exceptions.VisitError as exc:
        orig = exc.orig_exc
        if isinstance(orig, LimitError):
            raise LimitError(f"{filename}: {orig.message}") from None
        if isinstance(orig, ParseError):
            raise orig from None
        raise ParseError(f"{filename}: {orig}") from None
    except lark.exceptions.UnexpectedCharacters as exc:
        where = SourceSpan(filename, exc.line, exc.column, text)
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        if char in "\"'":
            msg = "unterminated string literal (strings end on the same line)"
        else:
            msg = f"unexpected character {char!r}"
        raise ParseError(msg, where) from None
    except lark.exceptions.UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":
            opened = _unclosed_brace(text)
            if opened is not None:
                where = SourceSpan(filename, opened[0], opened[1], text)
                raise ParseError("unexpected end of file: this '{' is never closed", where) from None
            lines = text.rstrip().splitlines() or [""]
            where = SourceSpan(filename, len(lines), len(lines[-1]) + 1, text)
            raise ParseError(f"unexpected end of file; expected {_describe_expected(exc.expected)}", where) from None
        where = SourceSpan(filename, tok.line, tok.column, text)
        if tok.type in ("RBRACE", "MORETHAN") and "NAME" in exc.expected and "$END" in exc.expected:
            raise ParseError(f"unbalanced '{tok!s}': no message is open here", where) from None
        raise ParseError(f"unexpected {tok!s}; expected {_describe_expected(exc.expected)}", where) from None
    except lark.exceptions.UnexpectedEOF as exc:  # pragma: no cover - LALR reports EOF as UnexpectedToken
        raise ParseError(f"{filename}: unexpected end of file; expected {_describe_expected(set(exc.expected))}") from None


# --- writing --------------------------------------------------------------------------------

_SAFE_STRING = re.compile(r'[^"\\\n\r\t\x00-\x1f]')


def format_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Ident):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text
    if isinstance(value, str):
        out = []
        for ch in value:
            if _SAFE_STRING.match(ch):
                out.append(ch)
            else:
                out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}.get(ch, f"\\{ord(ch):03o}"))
        return '"' + "".join(out) + '"'
    raise TypeError(f"cannot write {type(value).__name__} as a text-format scalar")


def format_text(msg: Msg, indent: int = 0) -> str:
    """Protobuf text format for ``msg``, two-space indented, one field per line."""
    lines: list[str] = []
    _write(msg, indent, lines)
    return "\n".join(lines) + ("\n" if lines else "")


def _write(msg: Msg, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, value in msg:
        if isinstance(value, Msg):
            lines.append(f"{pad}{name} {{")
            _write(value, indent + 1, lines)
            lines.append(f"{pad}}}")
        else:
            lines.append(f"{pad}{name}: {format_scalar(value)}")
