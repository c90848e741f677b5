"""The intermediate representation: a net is a small DAG of layer nodes over SSA values.

* A :class:`Value` is one version of a Caffe blob.  A blob written in place (``bottom:
  "x" top: "x"``) gets a fresh value each time; the blob name keeps meaning "the latest
  value", exactly as in Caffe.
* A :class:`Node` is one layer: its Caffe type, a frozen parameter record produced by
  the layer's spec, its input and output value ids, and its learned blobs (numpy, in
  Caffe's own layout).  ``msg`` keeps the layer's original text-format message so that
  fork-specific fields survive when a net is written back.
* A :class:`Net` holds the nodes in execution order.  Nets are never mutated: passes
  build new ones with :meth:`Net.replace` / :func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SourceSpan, UnsupportedLayer
from ..layers.registry import is_source_type

if TYPE_CHECKING:
    from ..prototxt.message import Msg
    from ..prototxt.schema import Diagnostic

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Value:
    """One SSA value: a version of a Caffe blob, with its shape when known."""

    id: str
    blob: str
    shape: Shape | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One layer."""

    name: str
    type: str
    params: Any
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    blobs: tuple[np.ndarray, ...] = ()
    """Learned blobs in Caffe's layout (attached from a caffemodel or set by a pass)."""
    msg: Msg | None = None
    span: SourceSpan | None = None
    param_names: tuple[str | None, ...] = ()
    """``param { name: ... }`` per blob: equal names share one set of weights."""
    unsupported: str | None = None
    """Why this layer cannot be converted (None when it can)."""

    def replace(self, **changes: Any) -> Node:
        return dataclasses.replace(self, **changes)

    @property
    def is_input(self) -> bool:
        return is_source_type(self.type)


@dataclass(frozen=True, eq=False)
class Net:
    """A whole network: nodes in execution order over SSA values."""

    name: str
    nodes: tuple[Node, ...]
    values: Mapping[str, Value]
    outputs: tuple[str, ...]
    """Value ids of the net's outputs: the blobs no later layer reads, as Caffe decides them."""
    source: str | None = None
    phase: str = "TEST"
    diagnostics: tuple[Diagnostic, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    """Semantic choices where Caffe forks disagree, e.g. ``{"Upsample": "segnet"}``."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Front-end extras, e.g. how a caffe-tensorflow net's weight file maps onto its layers."""

    def replace(self, **changes: Any) -> Net:
        return dataclasses.replace(self, **changes)

    # --- lookups -------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[str, ...]:
        """Value ids fed from outside: the tops of Input and data layers, in order."""
        return tuple(v for node in self.nodes if node.is_input for v in node.outputs)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def find(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def producer(self) -> dict[str, Node]:
        """Value id → the node that writes it."""
        return {v: node for node in self.nodes for v in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        """Value id → the nodes that read it, in order."""
        out: dict[str, list[Node]] = {}
        for node in self.nodes:
            for v in node.inputs:
                out.setdefault(v, []).append(node)
        return out

    def shape(self, value_id: str) -> Shape | None:
        return self.values[value_id].shape

    def latest(self) -> dict[str, str]:
        """Blob name → id of its last value (what the blob holds after a forward pass)."""
        out: dict[str, str] = {}
        for node in self.nodes:
            for v in node.outputs:
                out[self.values[v].blob] = v
        return out

    def unsupported(self) -> list[UnsupportedLayer]:
        return [UnsupportedLayer(n.name, n.type, n.span, n.unsupported) for n in self.nodes if n.unsupported is not None]

    def param_count(self) -> int:
        return sum(int(b.size) for n in self.nodes for b in n.blobs)

    def with_nodes(self, nodes: Iterable[Node]) -> Net:
        """A net over ``nodes``; values no node mentions are dropped, outputs recomputed."""
        nodes = tuple(nodes)
        used = {v for n in nodes for v in (*n.inputs, *n.outputs)}
        values = {k: v for k, v in self.values.items() if k in used}
        return self.replace(nodes=nodes, values=values, outputs=compute_outputs(nodes))


def compute_outputs(nodes: Iterable[Node]) -> tuple[str, ...]:
    """Caffe's rule: a top that no later layer reads is a net output (inputs excepted)."""
    nodes = tuple(nodes)
    read: set[str] = set()
    outputs: list[str] = []
    for node in reversed(nodes):
        if not node.is_input:
            for v in node.outputs:
                if v not in read:
                    outputs.append(v)
        read.update(node.inputs)
    outputs.reverse()
    return tuple(outputs)
