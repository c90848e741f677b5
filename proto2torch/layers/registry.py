"""The layer registry: one :class:`LayerSpec` per Caffe layer type.

A spec keeps everything about one layer type side by side — how to read its
parameters from the prototxt, its shape rule, the shapes of its learned blobs, how
it becomes PyTorch (the same lowering serves the live module and the emitted
source), and where it affects the receptive field — so adding a layer touches one
module and its test.  User code registers its own specs the same way (see
``docs`` in the README: "Adding a layer").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import LayerParamError, ShapeError, UnsupportedFeature

if TYPE_CHECKING:
    from ..backend.lowering import Op
    from ..prototxt.message import Msg

Shape = tuple[int, ...]

MAX_ELEMENTS = 2**40
"""No blob may claim more elements than this (about 4 TB of float32)."""


@dataclass(frozen=True)
class NoParams:
    """The parameter record of a layer that has no parameters."""


@dataclass
class ParseContext:
    """What a spec's ``parse`` gets besides the layer message: its name and the net's options."""

    layer: Msg
    name: str
    options: dict[str, str] = field(default_factory=dict)
    n_bottoms: int = 0
    n_tops: int = 0
    notes: list[str] = field(default_factory=list)
    """Remarks about this layer for the user (shown by inspect), e.g. an assumed channel count."""

    def note(self, message: str) -> None:
        self.notes.append(message)

    def _span(self, field_name: str | None, param: Msg | None):  # noqa: ANN202
        span = None
        if param is not None and field_name is not None:
            span = param.span(field_name)
        if span is None:
            span = self.layer.span(field_name) if field_name else None
        return span if span is not None else self.layer.span()

    def error(self, message: str, field_name: str | None = None, param: Msg | None = None) -> LayerParamError:
        """An invalid parameter: loading the net fails with this error."""
        return LayerParamError(message, self._span(field_name, param), self.name)

    def unsupported(self, message: str, field_name: str | None = None, param: Msg | None = None) -> UnsupportedFeature:
        """A parameter that cannot be converted: the layer is marked unsupported with this reason."""
        return UnsupportedFeature(message, self._span(field_name, param), self.name)

    def param(self, field_name: str) -> Msg:
        return self.layer.sub(field_name)


class LayerSpec:
    """Base class of every layer spec.  Subclasses set ``type`` and override what they need."""

    type: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other type names that mean the same layer (fork spellings)."""
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    """Allowed number of bottoms: (min, max), max None for unbounded."""
    tops: ClassVar[tuple[int, int | None]] = (1, 1)
    source: ClassVar[bool] = False
    """True for layers that bring data into the net (Input, Data, …): their tops are net inputs."""
    in_place_ok: ClassVar[bool] = True
    description: ClassVar[str] = ""
    semantics: ClassVar[str] = "BVLC Caffe"
    """Whose semantics the implementation follows (BVLC, or the fork that introduced the layer)."""

    # --- front end ---------------------------------------------------------------
    def parse(self, ctx: ParseContext) -> Any:
        return NoParams()

    # --- shapes ------------------------------------------------------------------
    def infer(self, p: Any, shapes: list[Shape]) -> list[Shape]:
        """Output shapes from input shapes (default: one output shaped like the first input)."""
        return [shapes[0]]

    def weight_shapes(self, p: Any, shapes: list[Shape]) -> list[Shape]:
        """Shapes of the learned blobs, in Caffe's order and layout."""
        return []

    def window(self, p: Any) -> tuple[tuple[int, int, int], ...] | None:
        """Per spatial axis (effective kernel, stride, upsampling factor) for receptive fields."""
        return None

    # --- back end ------------------------------------------------------------------
    def lower(self, p: Any, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        raise NotImplementedError(f"layer type {self.type} has no PyTorch lowering")

    # --- write-back --------------------------------------------------------------------
    def unparse(self, p: Any, layer: Msg) -> Msg:
        """The layer message for ``p`` (default: the original message, unchanged)."""
        return layer


_REGISTRY: dict[str, LayerSpec] = {}


def register(cls: type[LayerSpec]) -> type[LayerSpec]:
    """Class decorator: make ``cls`` the spec for its type and aliases."""
    spec = cls()
    for name in (cls.type, *cls.aliases):
        if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
            raise ValueError(f"layer type {name!r} is registered twice ({type(_REGISTRY[name]).__name__} and {cls.__name__})")
        _REGISTRY[name] = spec
    return cls


def register_layer(cls: type[LayerSpec], *, replace: bool = False) -> type[LayerSpec]:
    """Public entry point for plugins: register a spec, optionally replacing a built-in one."""
    if replace:
        for name in (cls.type, *cls.aliases):
            _REGISTRY.pop(name, None)
    return register(cls)


def lookup(type_name: str) -> LayerSpec | None:
    _ensure_loaded()
    return _REGISTRY.get(type_name)


def registered() -> dict[str, LayerSpec]:
    _ensure_loaded()
    return dict(_REGISTRY)


def is_source_type(type_name: str) -> bool:
    spec = lookup(type_name)
    return spec is not None and spec.source


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import builtin  # noqa: F401  (registers every built-in layer)


# --- helpers shared by specs ---------------------------------------------------------------

def canonical_axis(axis: int, ndim: int, what: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex: negative axes count from the end."""
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{what} {axis} is out of range for a {ndim}-d blob")
    return axis % ndim


def count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    n = 1
    for d in shape[start:end]:
        n *= d
    return n


def check_shape(shape: Sequence[int]) -> Shape:
    """Refuse zero, negative and absurdly large shapes."""
    shape = tuple(int(d) for d in shape)
    if any(d <= 0 for d in shape):
        raise ShapeError(f"shape {list(shape)} has a dimension that is zero or negative")
    if count(shape) > MAX_ELEMENTS:
        raise ShapeError(f"shape {list(shape)} has more than {MAX_ELEMENTS} elements")
    return shape

