"""What a layer becomes in PyTorch, as plain data both back ends read.

A layer spec's ``lower`` returns one :data:`Op`:

* :class:`ModuleOp` — a submodule (``nn.Conv2d`` or one of the small Caffe helpers in
  :mod:`proto2torch.backend.caffe_ops`), its constructor arguments, and the arrays to
  load into its state (already in PyTorch layout).  Called as ``self.<layer>(x)``.
* :class:`CallOp` — a function call (``torch.cat``, ``operator.add``, a helper
  function) with :class:`In` placeholders for the layer's inputs.
* :class:`AliasOp` — outputs that are simply inputs (Split, Silence).

The live back end turns ops into ``torch.fx`` nodes; the source back end prints them.
Both read the same ops, so their numbers and names cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np


@dataclass(frozen=True, slots=True)
class In:
    """Placeholder for the layer's i-th input."""

    index: int


@dataclass(frozen=True, slots=True)
class InList:
    """Placeholder for the list of all the layer's inputs, e.g. ``torch.cat([a, b])``."""


@dataclass(frozen=True, eq=False)
class ModuleOp:
    cls: type
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Parameter/buffer name → array (PyTorch layout), loaded into the module."""
    blob_params: tuple[str | None, ...] = ()
    """For each Caffe blob, the module parameter it becomes unchanged (for weight sharing)."""
    call: tuple[Any, ...] | None = None
    """How the module is called: None means with every input in order; else In/InList items."""
    n_out: int = 1


@dataclass(frozen=True, eq=False)
class CallOp:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    n_out: int = 1


@dataclass(frozen=True, eq=False)
class AliasOp:
    sources: tuple[int, ...]
    """Output k is input ``sources[k]``."""


Op = Union[ModuleOp, CallOp, AliasOp]


def stopped_inputs(node: Any) -> frozenset[int]:
    """Inputs the layer must not back-propagate into: Caffe's ``propagate_down: false``."""
    if node.msg is None or not node.msg.has("propagate_down"):
        return frozenset()
    flags = node.msg.all("propagate_down")
    if len(flags) != len(node.inputs):
        from ..errors import LayerParamError

        raise LayerParamError(
            f"propagate_down is given {len(flags)} times for {len(node.inputs)} bottoms; give it once per bottom or not at all",
            node.msg.span("propagate_down"),
            node.name,
        )
    return frozenset(i for i, flag in enumerate(flags) if not flag)
