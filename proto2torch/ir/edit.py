"""Small graph edits shared by the passes: drop layers (rewiring their readers), rename blobs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from .graph import Net, Node
from .shapes import infer_shapes


def drop_nodes(net: Net, drop: Iterable[str], rewire: Mapping[str, str] | None = None) -> Net:
    """Remove the named layers; readers of ``rewire``'s keys (value ids) read its values instead."""
    drop = set(drop)
    rewire = dict(rewire or {})

    def resolve(v: str) -> str:
        while v in rewire:
            v = rewire[v]
        return v

    nodes = [n.replace(inputs=tuple(resolve(v) for v in n.inputs)) for n in net.nodes if n.name not in drop]
    return infer_shapes(net.with_nodes(nodes))


def replace_node(net: Net, name: str, new: Node) -> Net:
    nodes = [new if n.name == name else n for n in net.nodes]
    return infer_shapes(net.replace(nodes=tuple(nodes)))


def rename_blob(net: Net, old: str, new: str) -> Net:
    """Every value of blob ``old`` becomes blob ``new`` (value ids are kept)."""
    if any(v.blob == new for v in net.values.values()):
        raise ValueError(f"blob '{new}' already exists")
    values = {k: (dataclasses.replace(v, blob=new) if v.blob == old else v) for k, v in net.values.items()}
    return net.replace(values=values)


def ancestors(net: Net, targets: Iterable[str]) -> set[str]:
    """Value ids needed to compute ``targets`` (value ids), including the targets."""
    producer = net.producer()
    needed: set[str] = set()
    stack = list(targets)
    while stack:
        v = stack.pop()
        if v in needed:
            continue
        needed.add(v)
        node = producer.get(v)
        if node is not None:
            stack.extend(node.inputs)
    return needed


def downstream_blobs(net: Net, values: Iterable[str]) -> set[str]:
    """Names of the blobs of ``values`` (value ids) and of every value computed from them."""
    reached = set(values)
    for node in net.nodes:
        if any(v in reached for v in node.inputs):
            reached.update(node.outputs)
    return {net.values[v].blob for v in reached}
