"""A generic protobuf message tree with source positions.

The text parser produces :class:`Msg` objects whose entries are ``(name, value,
line, column)`` in file order.  Values are Python scalars, :class:`Ident` (a bare
identifier such as an enum name or ``true``) or nested :class:`Msg`.  Once a
schema is bound (``schema.bind``) scalars are typed and ``Msg.type`` names the
message type, which lets :meth:`Msg.get` answer with the schema default for an
absent field.  Fields the schema does not know stay in the tree untouched, so
fork-specific parameters survive a read/write round trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import SourceSpan


class Ident(str):
    """An unquoted identifier in text format: an enum value, ``true``, ``inf``…"""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Ident({str(self)!r})"


class Template(str):
    """An unresolved ``${NAME}`` placeholder of a templated prototxt (DeepLab's config files)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Template({str(self)!r})"


@dataclass(frozen=True, slots=True)
class Source:
    """The file a message came from; its text is kept for caret rendering."""

    name: str
    text: str | None = None


_MISSING = object()


class Msg:
    """One protobuf message: ordered entries plus, once bound, its schema type."""

    __slots__ = ("type", "entries", "source", "line", "column")

    def __init__(
        self,
        entries: list[tuple[str, Any, int, int]] | None = None,
        type: str | None = None,
        source: Source | None = None,
        line: int = 0,
        column: int = 0,
    ):
        self.entries = entries if entries is not None else []
        self.type = type
        self.source = source
        self.line = line
        self.column = column

    # --- reading -----------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for name, value, _, _ in self.entries:
            yield name, value

    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for name, _, _, _ in self.entries:
            seen.setdefault(name)
        return list(seen)

    def has(self, name: str) -> bool:
        return any(entry[0] == name for entry in self.entries)

    def all(self, name: str) -> list[Any]:
        """Every value of a (repeated) field, in file order."""
        return [value for n, value, _, _ in self.entries if n == name]

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The value of a singular field; the last one wins, as in protobuf.

        Absent fields answer ``default`` if given, else the schema default of a
        bound message, else ``None``.
        """
        for n, value, _, _ in reversed(self.entries):
            if n == name:
                return value
        if default is not _MISSING:
            return default
        from .schema import default_of  # local import: schema builds on this module

        return default_of(self.type, name)

    def sub(self, name: str) -> Msg:
        """A nested message; an empty (but typed) one when absent, so defaults still work."""
        value = self.get(name, None)
        if isinstance(value, Msg):
            return value
        from .schema import field_type

        return Msg(type=field_type(self.type, name), source=self.source, line=self.line, column=self.column)

    def span(self, name: str | None = None) -> SourceSpan | None:
        """Where a field (or, with no name, this message) was written."""
        if self.source is None:
            return None
        if name is not None:
            for n, _, line, column in self.entries:
                if n == name:
                    return SourceSpan(self.source.name, line, column, self.source.text)
        if self.line == 0:
            return None
        return SourceSpan(self.source.name, self.line, self.column, self.source.text)

    def entry_span(self, index: int) -> SourceSpan | None:
        if self.source is None:
            return None
        _, _, line, column = self.entries[index]
        return SourceSpan(self.source.name, line, column, self.source.text)

    # --- editing (front ends and passes work on copies) -------------------------
    def copy(self) -> Msg:
        """A deep copy: nested messages are copied, scalars shared."""
        entries = [(n, v.copy() if isinstance(v, Msg) else v, line, col) for n, v, line, col in self.entries]
        return Msg(entries, self.type, self.source, self.line, self.column)

    def set(self, name: str, value: Any) -> Msg:
        """Replace every value of ``name`` by one value, keeping the first position."""
        for i, (n, _, line, col) in enumerate(self.entries):
            if n == name:
                self.entries[i] = (name, value, line, col)
                self.entries[i + 1 :] = [e for e in self.entries[i + 1 :] if e[0] != name]
                return self
        self.entries.append((name, value, 0, 0))
        return self

    def set_all(self, name: str, values: list[Any]) -> Msg:
        """Replace a repeated field by ``values``."""
        position = next((i for i, e in enumerate(self.entries) if e[0] == name), len(self.entries))
        rest = [e for e in self.entries if e[0] != name]
        head = [e for e in rest[:position]]
        self.entries = head + [(name, v, 0, 0) for v in values] + rest[position:]
        return self

    def add(self, name: str, value: Any) -> Msg:
        self.entries.append((name, value, 0, 0))
        return self

    def remove(self, name: str) -> Msg:
        self.entries = [e for e in self.entries if e[0] != name]
        return self

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v!r}" for n, v in self)
        return f"Msg<{self.type or '?'}>({inner})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Msg):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]
