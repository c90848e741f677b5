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

@dataclass
class SizeLimits:
    """What a net may claim, checked at shape inference before anything is allocated.

    ``max_blob``: elements of one blob, a value or a learned blob (Caffe's own limit, INT_MAX);
    ``max_params``: learned elements of the whole net (16 GiB of float32); ``max_activations``:
    elements of all values of one forward pass together (64 GiB).  Real nets stay far below;
    raise them with :func:`set_limits` (``--max-blob``, ``--max-params``, ``--max-activations``)
    for a real giant.
    """

    max_blob: int = 2**31 - 1
    max_params: int = 2**32
    max_activations: int = 2**34


LIMITS = SizeLimits()


def set_limits(max_blob: int | None = None, max_params: int | None = None, max_activations: int | None = None) -> SizeLimits:
    """Change the size limits (None keeps one); returns the limits in force."""
    for name, value in (("max_blob", max_blob), ("max_params", max_params), ("max_activations", max_activations)):
        if value is not None:
            if value <= 0:
                raise ValueError(f"{name} must be positive")
            setattr(LIMITS, name, int(value))
    return LIMITS


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
    runtime_inputs: list[str] = field(default_factory=list)
    """Extra inputs the layer needs that Caffe reads from files at run time (see :meth:`runtime_input`)."""

    def note(self, message: str) -> None:
        self.notes.append(message)

    def runtime_input(self, name: str) -> None:
        """Ask for an extra net input ``<layer>.<name>``, appended to the layer's inputs: for data
        Caffe reads from a file while running (which a converted net receives instead)."""
        self.runtime_inputs.append(name)

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
    python_layer: ClassVar[str | None] = None
    """For a converter of a ``type: "Python"`` layer: ``"module.Class"`` as written in its
    ``python_param`` (``type`` is then just a display name)."""
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    """Allowed number of bottoms: (min, max), max None for unbounded."""
    tops: ClassVar[tuple[int, int | None]] = (1, 1)
    source: ClassVar[bool] = False
    """True for layers that bring data into the net (Input, Data, …): their tops are net inputs."""
    in_place_ok: ClassVar[bool] = True
    auto_tops: ClassVar[bool] = False
    """Missing tops are created anonymously, as Caffe does for loss layers."""
    loss: ClassVar[bool] = False
    """A Caffe LossLayer: its first top weighs 1 in the training objective unless ``loss_weight``
    says otherwise (every other top, and every other layer's, weighs 0)."""
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

    def blob_fits(self, p: Any, index: int, got: Shape, want: Shape) -> bool:
        """Accept learned blob ``index`` of shape ``got`` where ``want`` is expected (beyond an exact
        or legacy 4-d match), e.g. forks that saved the same vector as (C,) or (1, C, 1, 1)."""
        return False

    fillers: ClassVar[tuple[str, tuple[str, ...]]] = ("", ())
    """Where the prototxt names each learned blob's filler: (parameter field, filler field per blob)."""
    fill_values: ClassVar[tuple[float, ...]] = ()
    """The constant for blob i when no filler is named (0 when not listed)."""

    def initial_blobs(self, p: Any, shapes: list[Shape]) -> list[np.ndarray] | None:
        """Blobs of the given shapes for a net converted without weights, when fillers cannot
        describe them (None: use the fillers)."""
        return None

    def window(self, p: Any) -> tuple[tuple[int, int, int, int | None], ...] | None:
        """Per spatial axis (effective kernel, stride, upsampling factor, padding) for receptive
        fields and the placement of output pixels (padding None: it depends on the input size)."""
        return None

    # --- back end ------------------------------------------------------------------
    def lower(self, p: Any, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> Op:
        raise NotImplementedError(f"layer type {self.type} has no PyTorch lowering")

    # --- write-back --------------------------------------------------------------------
    def unparse(self, p: Any, layer: Msg) -> Msg:
        """The layer message for ``p`` (default: the original message, unchanged)."""
        return layer


_REGISTRY: dict[str, LayerSpec] = {}
_PYTHON: dict[str, LayerSpec] = {}
"""Converters of Python layers, by ``module.Class``."""


def _keys(cls: type[LayerSpec]) -> tuple[dict[str, LayerSpec], tuple[str, ...]]:
    if cls.python_layer is not None:
        return _PYTHON, (cls.python_layer,)
    return _REGISTRY, (cls.type, *cls.aliases)


def register(cls: type[LayerSpec]) -> type[LayerSpec]:
    """Class decorator: make ``cls`` the spec for its type and aliases (or its Python layer)."""
    table, names = _keys(cls)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{cls.__name__} needs a type name (or python_layer = 'module.Class')")
    spec = cls()
    for name in names:
        if name in table and type(table[name]) is not cls:
            raise ValueError(f"layer type {name!r} is registered twice ({type(table[name]).__name__} and {cls.__name__})")
        table[name] = spec
    return cls


def register_layer(cls: type[LayerSpec], *, replace: bool = False) -> type[LayerSpec]:
    """Public entry point for plugins: register a spec, optionally replacing a built-in one.

    A spec with ``python_layer = "module.Class"`` converts the Python layers that name
    that class in their ``python_param``.
    """
    _ensure_loaded()
    if replace:
        table, names = _keys(cls)
        for name in names:
            table.pop(name, None)
    return register(cls)


def load_plugin(spec: str) -> object:
    """Import user code that registers layer specs: a ``.py`` file path or an importable module
    name.  (This runs that code, deliberately; nets and weights are never executed.)"""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    from ..errors import PluginError

    _ensure_loaded()
    try:
        if spec.endswith(".py"):
            path = Path(spec).resolve()
            if not path.is_file():
                raise PluginError(f"plugin file {spec} does not exist")
            name = f"proto2torch_plugin_{path.stem}"
            loaded = sys.modules.get(name)
            if loaded is not None and getattr(loaded, "__file__", None) == str(path):
                return loaded  # loading a plugin twice registers its layers once
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise PluginError(f"cannot load plugin file {spec}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # the source back end copies helpers from registered modules
            module_spec.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except PluginError:
        raise
    except Exception as exc:  # the plugin's own error, reported as ours with its cause
        raise PluginError(f"plugin {spec} failed to load: {type(exc).__name__}: {exc}") from exc


def lookup(type_name: str) -> LayerSpec | None:
    _ensure_loaded()
    return _REGISTRY.get(type_name)


def lookup_python(module_class: str) -> LayerSpec | None:
    """The converter registered for the Python layer ``module.Class``, if any."""
    _ensure_loaded()
    return _PYTHON.get(module_class)


def registered() -> dict[str, LayerSpec]:
    _ensure_loaded()
    return dict(_REGISTRY)


def registered_python() -> dict[str, LayerSpec]:
    _ensure_loaded()
    return dict(_PYTHON)


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

def count_problem(spec: LayerSpec, n_bottoms: int, n_tops: int) -> str | None:
    """Why ``spec`` cannot take this many bottoms and tops (None when it can)."""
    for what, n, (lo, hi) in (("bottoms", n_bottoms, spec.bottoms), ("tops", n_tops, spec.tops)):
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            return f"{spec.type} takes {want} {what}, got {n}"
    return None


def python_class(layer: Msg) -> str:
    """``module.Class`` of a Python layer, as its ``python_param`` names it."""
    python = layer.sub("python_param")
    return f"{python.get('module')}.{python.get('layer')}"


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


def same_values(got: Sequence[int], want: Sequence[int]) -> bool:
    """Two shapes that differ only by axes of size 1 (forks save a vector as (C,), (1, C) or (1, C, 1, 1))."""
    return count(got) == count(want) and [d for d in got if d != 1] == [d for d in want if d != 1]


def check_shape(shape: Sequence[int]) -> Shape:
    """Refuse zero, negative and absurdly large shapes."""
    shape = tuple(int(d) for d in shape)
    if any(d <= 0 for d in shape):
        raise ShapeError(f"shape {list(shape)} has a dimension that is zero or negative")
    if count(shape) > LIMITS.max_blob:
        from ..errors import LimitError

        raise LimitError(f"shape {list(shape)} has {count(shape):,} elements, over the limit of {LIMITS.max_blob:,} for one blob (--max-blob)")
    return shape

