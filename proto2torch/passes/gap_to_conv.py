"""``gap-to-conv``: move a classifier behind its global average pooling (class activation maps).

A classifier ``InnerProduct`` that reads a global average pooling (``global_pooling``, or an AVE
window as large as its input, unpadded), possibly through a ``Flatten`` or ``Dropout``, becomes a
1×1 ``Convolution`` with the same weights on the feature map the pooling read.  Its output is then
a map of class scores, one per feature-map pixel; by linearity the map's spatial mean is exactly
the classifier's output.  This is how Dilated Residual Networks localise objects without
fine-tuning (Yu, Koltun, Funkhouser, CVPR 2017, §4.2): ``dilate:output_stride=8`` then
``gap-to-conv`` turns a ResNet at 224×224 into a 28×28 class map (``localize`` turns it into boxes).

Options: ``layers`` (InnerProduct names joined by ``+``; default every one that reads a global
average pooling), ``keep_logits`` (keep the pooling and the classifier, and add the map as a second
output named ``<layer>_map``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PassError
from ..ir.edit import downstream_blobs, drop_nodes
from ..ir.graph import Net, Node
from ..ir.shapes import infer_shapes
from ..layers.conv import ConvParams
from ..layers.pooling import covers_whole_input
from ..layers.registry import canonical_axis
from ..prototxt.lower import append_layers
from ..prototxt.textformat import format_scalar as quote
from . import Pass, PassResult, register_pass
from .fc_to_conv import conv_blobs

_PASS_THROUGH = ("Flatten", "Dropout")
"""Layers between the pooling and the classifier that change nothing a 1×1 convolution needs (Dropout: the TEST phase)."""


@register_pass
@dataclass(frozen=True)
class GapToConv(Pass):
    name = "gap-to-conv"
    summary = "classifier after global average pooling -> 1x1 convolution on the feature map (class maps, DRN localisation)"
    keeps = "outputs"
    layers: str = ""
    keep_logits: bool = False

    def apply(self, net: Net) -> PassResult:
        wanted = [n for n in self.layers.split("+") if n]
        found = {ip.name: chain for ip, chain in _candidates(net)}
        if wanted:
            for name in wanted:
                node = net.find(name)
                if node is None or node.type != "InnerProduct":
                    raise PassError(f"there is no InnerProduct layer named '{name}'")
                if name not in found:
                    raise PassError(f"layer '{name}' does not read a global average pooling (through Flatten/Dropout at most)")
        elif not found:
            raise PassError("no InnerProduct reads a global average pooling: nothing to move (name one with layers=)")
        result = PassResult(net)
        for name in wanted or list(found):
            result = self._move(result, name, found[name])
        result.net = infer_shapes(result.net)
        return result

    def _move(self, done: PassResult, name: str, chain: list[Node]) -> PassResult:
        net = done.net
        ip = net.node(name)
        pool = chain[0]
        features = pool.inputs[0]
        n, c, h, w = net.values[features].shape  # type: ignore[misc]
        p = ip.params
        blobs = conv_blobs(ip, c, 1, 1)
        params = ConvParams(num_output=p.num_output, kernel=(1,), bias_term=p.bias_term)
        top = net.values[ip.outputs[0]].blob
        feature_blob = net.values[features].blob
        if self.keep_logits:
            text = (
                f"layer {{ name: {quote(name + '_map')} type: \"Convolution\" bottom: {quote(feature_blob)} top: {quote(top + '_map')}"
                f" convolution_param {{ num_output: {p.num_output} kernel_size: 1 bias_term: {'true' if p.bias_term else 'false'} }} }}"
            )
            grown = append_layers(net, text, f"<gap-to-conv {name}>")
            grown = grown.replace(nodes=tuple(node.replace(blobs=blobs) if node.name == name + "_map" else node for node in grown.nodes))
            done.net = grown
            done.means[top + "_map"] = top
            done.log.append(f"{name}: kept; added '{name}_map', a 1x1 Convolution on '{feature_blob}' ({c}x{h}x{w}) whose mean over the map is '{top}'")
            return done
        msg = ip.msg.copy().remove("inner_product_param") if ip.msg is not None else None
        conv = ip.replace(type="Convolution", params=params, blobs=blobs, msg=msg, inputs=(features,))
        net = net.replace(nodes=tuple(conv if node.name == name else node for node in net.nodes))
        consumers = net.consumers()
        dropped = [node.name for node in chain if all(reader.name in {m.name for m in chain} for v in node.outputs for reader in consumers.get(v, []))]
        net = drop_nodes(net, dropped)
        done.net = net
        done.means[top] = top
        done.redefined |= downstream_blobs(net, conv.outputs)
        dropped_text = f"; dropped {', '.join(dropped)}" if dropped else ""
        done.log.append(f"{name}: InnerProduct after global average pooling '{pool.name}' -> 1x1 Convolution on '{feature_blob}' ({c}x{h}x{w}: a {h}x{w} class map){dropped_text}")
        return done


def _candidates(net: Net) -> list[tuple[Node, list[Node]]]:
    """InnerProducts over axis 1 that read a global average pooling of a 4-d map, with the chain from the pooling."""
    producer = net.producer()
    out = []
    for node in net.nodes:
        if node.type != "InnerProduct" or node.params is None or node.params.normalize:
            continue
        chain: list[Node] = []
        source = producer.get(node.inputs[0])
        while source is not None and source.type in _PASS_THROUGH:
            chain.insert(0, source)
            source = producer.get(source.inputs[0])
        if source is None or not _is_global_average(net, source):
            continue
        shape = net.values[node.inputs[0]].shape
        if shape is None or canonical_axis(node.params.axis, len(shape)) != 1:
            continue
        out.append((node, [source, *chain]))
    return out


def _is_global_average(net: Net, node: Node) -> bool:
    if node.type != "Pooling" or node.params is None or node.params.method != "AVE" or len(node.outputs) != 1:
        return False
    shape = net.values[node.inputs[0]].shape
    return shape is not None and len(shape) == 4 and (node.params.is_global or covers_whole_input(node.params, shape))
