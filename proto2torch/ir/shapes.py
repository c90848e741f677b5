"""Shape inference over the IR, with the net's input shapes optionally replaced.

Every layer's output shapes come from its spec's ``infer``.  Where a shape cannot be
known (an input without a declared shape, an unsupported layer upstream) the value's
shape stays None and everything downstream is unknown too; that is not an error.
Shape errors carry the layer's name and position.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from ..errors import GraphError, LayerParamError, LimitError, Proto2TorchError, ShapeError
from ..layers.registry import LIMITS, check_shape, lookup
from .graph import Net, Node, Shape


def infer_shapes(net: Net, inputs: Mapping[str, Sequence[int]] | None = None) -> Net:
    """A copy of ``net`` with every value's shape inferred; ``inputs`` replaces input shapes by blob name."""
    overrides = {name: check_shape_of(name, shape) for name, shape in (inputs or {}).items()}
    known_inputs = {net.values[v].blob for v in net.inputs}
    unknown = sorted(set(overrides) - known_inputs)
    if unknown:
        raise GraphError(f"no net input named {', '.join(map(repr, unknown))}; the inputs are {', '.join(sorted(known_inputs)) or 'none'}")
    values = dict(net.values)
    nodes = []
    totals = _Totals()
    for node in net.nodes:
        if node.is_input:
            node = _reshape_input(node, net, overrides)
            shapes = list(node.params.shapes) if node.params is not None and hasattr(node.params, "shapes") else [None] * len(node.outputs)
            for v, shape in zip(node.outputs, shapes):
                values[v] = dataclasses.replace(values[v], shape=shape)
            nodes.append(node)
            continue
        in_shapes = [values[v].shape for v in node.inputs]
        out_shapes: list[Shape | None] = [None] * len(node.outputs)
        if node.unsupported is None and all(s is not None for s in in_shapes):
            out_shapes = list(_infer_node(node, in_shapes))  # type: ignore[arg-type]
            totals.add(node, in_shapes, out_shapes)  # type: ignore[arg-type]
        for v, shape in zip(node.outputs, out_shapes):
            values[v] = dataclasses.replace(values[v], shape=shape)
        nodes.append(node)
    return net.replace(nodes=tuple(nodes), values=values)


def _infer_node(node: Node, in_shapes: list[Shape]) -> list[Shape]:
    spec = lookup(node.type)
    assert spec is not None
    try:
        out = spec.infer(node.params, in_shapes)
        if len(out) < len(node.outputs):
            raise ShapeError(f"{node.type} produces {len(out)} outputs but the layer names {len(node.outputs)} tops")
        # a spec gives shapes for all the tops it can have; the layer may name fewer
        return [check_shape(s) for s in out[: len(node.outputs)]]
    except (ShapeError, LayerParamError, LimitError) as exc:
        if exc.where is not None:
            raise
        shapes = ", ".join(str(list(s)) for s in in_shapes)
        raise type(exc)(f"{exc.message} (input shapes: {shapes})", node.span, node.name) from None
    except Proto2TorchError:
        raise
    except (ValueError, TypeError, IndexError, ZeroDivisionError, OverflowError) as exc:  # a bug in a spec, shown with context
        raise ShapeError(f"shape inference failed for {node.type}: {exc}", node.span, node.name) from exc


class _Totals:
    """Running sums of learned and activation elements, refused past the limits (before anything is allocated)."""

    def __init__(self) -> None:
        self.params = 0
        self.activations = 0

    def add(self, node: Node, in_shapes: list[Shape], out_shapes: list[Shape]) -> None:
        spec = lookup(node.type)
        try:
            learned = spec.weight_shapes(node.params, in_shapes) if spec is not None else []
        except (ShapeError, LayerParamError, ValueError, TypeError, IndexError):
            learned = []  # reported where the weights are attached
        for i, shape in enumerate(learned):
            n = math.prod(shape)
            if n > LIMITS.max_blob:
                raise LimitError(
                    f"learned blob {i} of shape {list(shape)} has {n:,} elements, over the limit of {LIMITS.max_blob:,} for one blob (--max-blob)",
                    node.span,
                    node.name,
                )
            self.params += n
        if self.params > LIMITS.max_params:
            raise LimitError(
                f"the net's learned blobs reach {self.params:,} elements here, over the limit of {LIMITS.max_params:,} (--max-params)", node.span, node.name
            )
        self.activations += sum(math.prod(s) for s in out_shapes)
        if self.activations > LIMITS.max_activations:
            raise LimitError(
                f"the net's values reach {self.activations:,} elements here, over the limit of {LIMITS.max_activations:,} (--max-activations)",
                node.span,
                node.name,
            )


def _reshape_input(node: Node, net: Net, overrides: Mapping[str, Shape]) -> Node:
    params = node.params
    if params is None or not hasattr(params, "shapes"):
        return node
    shapes = list(params.shapes)
    changed = False
    for i, v in enumerate(node.outputs):
        blob = net.values[v].blob
        if blob in overrides:
            shapes[i] = overrides[blob]
            changed = True
    if not changed:
        return node
    return node.replace(params=dataclasses.replace(params, shapes=tuple(shapes)))


def check_shape_of(name: str, shape: Sequence[int]) -> Shape:
    try:
        return check_shape(shape)
    except (ShapeError, LimitError) as exc:
        raise type(exc)(f"input '{name}': {exc.message}") from None


