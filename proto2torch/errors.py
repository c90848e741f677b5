"""One error hierarchy for everything proto2torch reports to a user.

Every error carries enough context to act on: a :class:`SourceSpan` for text
input (rendered as ``file:line:col`` plus the offending line and a caret), a byte
offset for binary input, and the layer involved where there is one.  Each class
also derives from the builtin exception that fits it, so ``except ValueError``
keeps working for callers that do not know this package.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceSpan:
    """A position in a text file: 1-based line and column, plus the text for carets."""

    file: str
    line: int
    column: int
    text: str | None = None
    """The whole source text, kept so that the offending line can be shown."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def source_line(self) -> str | None:
        if self.text is None:
            return None
        lines = self.text.splitlines()
        if 1 <= self.line <= len(lines):
            return lines[self.line - 1]
        return None

    def render(self) -> str:
        """``file:line:col`` followed by the source line and a caret under the column."""
        line = self.source_line()
        if line is None:
            return str(self)
        shown = line.expandtabs(1)
        caret = " " * max(self.column - 1, 0) + "^"
        return f"{self}\n    {shown}\n    {caret}"


@dataclass(frozen=True, slots=True)
class ByteOffset:
    """A position in a binary file."""

    file: str
    offset: int

    def __str__(self) -> str:
        return f"{self.file}@{self.offset}"

    def render(self) -> str:
        return f"{self.file}: at byte {self.offset}"


class Proto2TorchError(Exception):
    """Root of every error proto2torch raises on purpose."""

    def __init__(self, message: str, where: SourceSpan | ByteOffset | None = None, layer: str | None = None):
        self.message = message
        self.where = where
        self.layer = layer
        super().__init__(self.__str__())

    def __str__(self) -> str:
        head = self.message
        if self.layer is not None and f"'{self.layer}'" not in head:
            head = f"layer '{self.layer}': {head}"
        if self.where is None:
            return head
        rendered = self.where.render()
        first, _, rest = rendered.partition("\n")
        return f"{first}: {head}" + (f"\n{rest}" if rest else "")


class ParseError(Proto2TorchError, ValueError):
    """The text is not valid protobuf text format (or not valid DSL syntax)."""


class SchemaError(Proto2TorchError, ValueError):
    """The text parses but does not fit Caffe's messages: wrong type, bad enum, repeated twice…"""


class GraphError(Proto2TorchError, ValueError):
    """The net is not a valid graph: missing bottoms, duplicate producers, cycles."""


class UnsupportedLayerError(Proto2TorchError, NotImplementedError):
    """One or more layers have no converter.  ``layers`` lists each with its position and reason."""

    def __init__(self, problems: list[UnsupportedLayer]):
        self.problems = problems
        lines = [f"{len(problems)} unsupported layer(s):"]
        lines += [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class UnsupportedLayer:
    """One layer that cannot be converted, and why."""

    name: str
    type: str
    where: SourceSpan | None
    reason: str

    def __str__(self) -> str:
        at = f"{self.where}: " if self.where is not None else ""
        return f"{at}layer '{self.name}' (type {self.type}): {self.reason}"


class LayerParamError(Proto2TorchError, ValueError):
    """A layer's parameters are invalid or use a feature that cannot be honoured."""


class UnsupportedFeature(LayerParamError):
    """A layer uses something that cannot be converted (a template placeholder, a fork's enum value…).

    The net still loads: the layer is marked unsupported with this message, so that
    ``inspect`` lists it and conversion refuses it with :class:`UnsupportedLayerError`.
    """


class ShapeError(Proto2TorchError, ValueError):
    """Shape inference failed: shapes that do not fit together, absurd sizes."""


class MissingShapeError(ShapeError):
    """A net input has no shape: the file gives none and the caller did not (``--input``, ``inputs=``)."""


class WeightError(Proto2TorchError, ValueError):
    """A caffemodel (or weight file) is broken, or does not fit the net."""


class DSLError(Proto2TorchError, ValueError):
    """A caffe-tensorflow DSL file uses something outside the supported subset."""


class DSLMissingShapeError(DSLError, MissingShapeError):
    """A DSL chain feeds an input whose shape was not given."""


class PassError(Proto2TorchError, ValueError):
    """A surgery pass could not be applied."""


class PluginError(Proto2TorchError, ImportError):
    """A plugin module (user layer specs) could not be loaded."""


class SolverError(Proto2TorchError, ValueError):
    """A solver file, a solver state or a training setup that Caffe's solver would refuse."""


class DataError(Proto2TorchError, ValueError):
    """A data source (database, image list, image, HDF5 file, mean file) is missing, unreadable, or does not fit."""


class LimitError(Proto2TorchError, ValueError):
    """Input exceeds one of the safety limits (size, nesting depth, element count)."""



def guarded(what: str):  # noqa: ANN201
    """Decorator for front-end entry points: Python's own RecursionError, MemoryError and OverflowError
    become a :class:`LimitError` naming the input (the first argument, a path or a file name keyword)."""
    import functools

    def wrap(fn):  # noqa: ANN001, ANN202
        @functools.wraps(fn)
        def inner(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            try:
                return fn(*args, **kwargs)
            except (RecursionError, MemoryError, OverflowError) as exc:
                name = kwargs.get("filename") or (args[1] if len(args) > 1 and isinstance(args[1], str) else None)
                if name is None and args and not isinstance(args[0], (bytes, bytearray)) and len(str(args[0])) < 4096:
                    name = str(args[0])
                kind = {RecursionError: "nested too deeply", MemoryError: "too large for memory"}.get(type(exc), "a number out of range")
                raise LimitError(f"{name or 'the input'}: {what} failed: the input is {kind} ({type(exc).__name__})") from None

        return inner

    return wrap
