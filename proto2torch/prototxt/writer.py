"""IR → prototxt: write a net back as a V2 NetParameter that Caffe reads.

Each layer keeps the message it was read from (so fields of Caffe forks survive);
its name, type, bottoms and tops come from the IR, and its ``*_param`` block is
rewritten by the layer's spec only when a pass changed the parameters.  Phase rules
are dropped: the written net is the one that was selected (by default TEST).
"""

from __future__ import annotations

from pathlib import Path

from ..ir.graph import Net, Node
from ..layers.registry import ParseContext, lookup
from .message import Msg
from .textformat import format_text


def _params_changed(node: Node) -> bool:
    spec = lookup(node.type)
    if spec is None or node.params is None:
        return False
    if node.msg is None or node.msg.get("type") != node.type:
        return True
    n_bottoms = len(node.msg.all("bottom"))
    n_tops = len(node.msg.all("top"))
    try:
        original = spec.parse(ParseContext(node.msg, node.name, {}, n_bottoms, n_tops))
    except Exception:  # noqa: BLE001  (the original message no longer parses as this type)
        return True
    return original != node.params


def _runtime_values(net: Net) -> set[str]:
    """Inputs that stand for files Caffe reads at run time: not layers of the written net."""
    return {v for n in net.nodes if n.type == "Input" and getattr(n.params, "runtime", False) for v in n.outputs}


def layer_message(net: Net, node: Node) -> Msg:
    layer = node.msg.copy() if node.msg is not None else Msg(type="LayerParameter")
    spec = lookup(node.type)
    if spec is not None and _params_changed(node):
        layer = spec.unparse(node.params, layer)
    for field in ("include", "exclude", "blobs", "phase", "bottom", "top", "name", "type"):
        layer.remove(field)
    head = [("name", node.name, 0, 0), ("type", node.type, 0, 0)]
    runtime = _runtime_values(net)
    head += [("bottom", net.values[v].blob, 0, 0) for v in node.inputs if v not in runtime]
    head += [("top", net.values[v].blob, 0, 0) for v in node.outputs]
    layer.entries = head + layer.entries
    layer.type = "LayerParameter"
    return layer


def net_message(net: Net) -> Msg:
    root = Msg(type="NetParameter")
    root.add("name", net.name)
    runtime = _runtime_values(net)
    for node in net.nodes:
        if not set(node.outputs) & runtime:
            root.add("layer", layer_message(net, node))
    return root


def write_prototxt(net: Net, path: str | Path) -> Path:
    path = Path(path)
    header = f"# {net.name}: written by proto2torch" + (f" from {Path(net.source).name}" if net.source else "") + "\n"
    path.write_text(header + format_text(net_message(net)))
    return path
