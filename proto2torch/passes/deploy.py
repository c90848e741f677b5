"""``deploy``: a train/val net becomes a deploy net.

Data layers become one Input layer per data layer (only the tops that are still read;
labels usually are not), loss and metric layers go (a SoftmaxWithLoss leaves a
Softmax ``prob`` in its place, a SigmoidCrossEntropyLoss a Sigmoid), and so does
anything that only fed them.  Input shapes come from the data layers' parameters
where they tell them, or from ``--input``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.graph import Net, Node, Value
from ..ir.shapes import infer_shapes
from ..layers.data import InputParams
from ..layers.reduce import SoftmaxParams
from ..layers.registry import NoParams
from . import Pass, PassResult, register_pass

_METRICS = ("Accuracy", "SegAccuracy", "DetectionEvaluate", "Silence")
_REPLACE = {"SoftmaxWithLoss": "Softmax", "SigmoidCrossEntropyLoss": "Sigmoid"}


def _is_loss(node: Node) -> bool:
    return node.type.endswith("Loss") or node.type in _METRICS or "Loss" in node.type


@register_pass
@dataclass(frozen=True)
class Deploy(Pass):
    name = "deploy"
    summary = "train/val net -> deploy net: data layers become Input, losses and metrics go"

    def apply(self, net: Net) -> PassResult:
        log = []
        nodes: list[Node] = []
        values = dict(net.values)
        blobs = {v.blob for v in values.values()}
        replaced = [n for n in net.nodes if n.type in _REPLACE and n.inputs]
        for node in net.nodes:
            if not _is_loss(node):
                nodes.append(node)
                continue
            replacement = _REPLACE.get(node.type)
            if replacement is None or not node.inputs:
                log.append(f"{node.name} ({node.type}) removed")
                continue
            short = "prob" if replacement == "Softmax" else "sigmoid"
            alone = sum(1 for n in replaced if n.type == node.type) == 1 and short not in blobs
            top = short if alone else f"{node.name}_{short}"
            value_id = f"{top}@deploy"
            values[value_id] = Value(value_id, top)
            axis = int(node.msg.sub("softmax_param").get("axis")) if node.msg is not None else 1
            params = SoftmaxParams(axis) if replacement == "Softmax" else NoParams()
            nodes.append(Node(top, replacement, params, node.inputs[:1], (value_id,)))
            log.append(f"{node.name} ({node.type}) -> {replacement} '{top}'")
        # data layers -> Input, keeping only the tops something still reads
        read = {v for n in nodes for v in n.inputs}
        result = []
        for node in nodes:
            if node.is_input and node.type != "Input":
                keep = [i for i, v in enumerate(node.outputs) if v in read]
                if not keep:
                    log.append(f"{node.name} ({node.type}) removed (nothing reads its tops)")
                    continue
                shapes = tuple(node.params.shapes[i] if node.params is not None else None for i in keep)
                dropped = [values[v].blob for i, v in enumerate(node.outputs) if i not in keep]
                result.append(Node(node.name, "Input", InputParams(shapes), (), tuple(node.outputs[i] for i in keep), span=node.span))
                log.append(f"{node.name} ({node.type}) -> Input {', '.join(values[node.outputs[i]].blob for i in keep)}" + (f" (dropped {', '.join(dropped)})" if dropped else ""))
            else:
                result.append(node)
        return PassResult(infer_shapes(net.replace(values=values).with_nodes(result)), log)
