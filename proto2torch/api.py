"""The Python API: nets from files, weights onto nets, nets into PyTorch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from .caffemodel.reader import CaffeModel, read_caffemodel
from .ir.graph import Net
from .ir.shapes import infer_shapes
from .ir.weights import attach_weights, initialise
from .prototxt.lower import load_prototxt

if TYPE_CHECKING:  # torch is imported by the functions that build or run a module, not by reading nets
    import torch
    from torch import fx

Weights = Union[str, Path, CaffeModel, Mapping[str, Sequence[np.ndarray]], None]
InputShapes = Mapping[str, Sequence[int]]


_DSL_OPTIONS = ("dialect", "defines", "class_name", "unknown_inputs", "base")
_PROTOTXT_OPTIONS = ("phase", "stages", "level", "defines", "options")


def load_net(net: Net | str | Path, inputs: InputShapes | None = None, *, format: str | None = None, **kwargs: object) -> Net:  # noqa: A002
    """A net from a Net or a path (prototxt, or caffe-tensorflow DSL for ``.py`` or ``format="dsl"``),
    reshaped to ``inputs``.  Options that apply to the other format are passed over, and options
    given as None take their defaults, so a caller may pass every option it has (the CLI and
    ``zoo`` do); a name neither format knows is a TypeError."""
    unknown = set(kwargs) - set(_DSL_OPTIONS) - set(_PROTOTXT_OPTIONS)
    if unknown:
        raise TypeError(f"load_net() got unknown options {sorted(unknown)}")
    if isinstance(net, Net):
        return infer_shapes(net, inputs) if inputs else net
    path = Path(net)
    is_dsl = format == "dsl" or (format is None and path.suffix == ".py")
    wanted = _DSL_OPTIONS if is_dsl else _PROTOTXT_OPTIONS
    given = {k: v for k, v in kwargs.items() if k in wanted and v is not None}
    if is_dsl:
        from .dsl import load_dsl

        return load_dsl(path, inputs=inputs, **given)  # type: ignore[arg-type]
    return load_prototxt(path, inputs=inputs, **given)  # type: ignore[arg-type]


def with_weights(net: Net, weights: Weights = None, *, allow_missing: bool = False) -> Net:
    """``net`` with learned blobs: from a caffemodel path, a :class:`CaffeModel`, a dict, or
    (``weights=None``) the ones already attached, completed from the layers' fillers."""
    if weights is None:
        return initialise(net)
    legacy = None
    if isinstance(weights, (str, Path)) and Path(weights).suffix == ".npy":
        from .dsl.weights import dsl_blobs, load_npy_weights

        return attach_weights(net, dsl_blobs(net, load_npy_weights(weights)), allow_missing=allow_missing)
    if isinstance(weights, (str, Path)):
        weights = read_caffemodel(weights)
    if isinstance(weights, CaffeModel):
        legacy = {layer.name: layer.legacy for layer in weights.layers}
        weights = weights.as_dict()
    return attach_weights(net, weights, legacy=legacy, allow_missing=allow_missing)


def to_torch(net: Net | str | Path, weights: Weights = None, inputs: InputShapes | None = None) -> fx.GraphModule:
    """A ``torch.nn.Module`` (an fx GraphModule, in eval mode) computing ``net``.

    ``forward`` takes the net inputs positionally in prototxt order or by name and
    returns the output blob (one output) or a dict of them.  :func:`run_blobs` gives
    every intermediate blob.
    """
    from .backend.live import build_graph_module

    net = load_net(net, inputs)
    return build_graph_module(with_weights(net, weights))


def blobs(module: fx.GraphModule, *args: torch.Tensor | np.ndarray, **kwargs: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
    """Every blob of a forward pass by Caffe blob name (see :func:`run_blobs`)."""
    from .backend.live import run_blobs

    return run_blobs(module, *(_t(a) for a in args), **{k: _t(v) for k, v in kwargs.items()})


def _t(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    import torch

    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
