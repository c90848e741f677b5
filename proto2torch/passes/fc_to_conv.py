"""``fc-to-conv``: InnerProduct layers become Convolutions (Caffe's net_surgery notebook).

A fully connected layer that reads a C×H×W blob becomes an H×W convolution with the
same weights reshaped to (num_output, C, H, W) — the flatten order is C·H·W, so no
data moves — and later ones (reading 1×1 maps) become 1×1 convolutions.  ``transpose:
true`` weights are transposed first.  The net then accepts larger inputs and produces
maps of scores: CaffeNet at 451×451 gives an 8×8 map.

Options: ``layers`` (names joined by ``+``; default every InnerProduct), ``suffix``
(rename each converted layer and its top blob, e.g. ``-conv`` as the notebook does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PassError
from ..ir.edit import rename_blob, replace_node
from ..ir.graph import Net, Node
from ..layers.conv import ConvParams
from ..layers.registry import canonical_axis
from . import Pass, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class FcToConv(Pass):
    name = "fc-to-conv"
    summary = "InnerProduct → Convolution whose kernel covers the input (fully convolutional nets)"
    keeps = "outputs"
    layers: str = ""
    suffix: str = ""

    def apply(self, net: Net) -> PassResult:
        wanted = [n for n in self.layers.split("+") if n]
        names = wanted or [n.name for n in net.nodes if n.type == "InnerProduct"]
        log = []
        renamed: dict[str, str] = {}
        for name in names:
            node = net.find(name)
            if node is None or node.type != "InnerProduct":
                raise PassError(f"there is no InnerProduct layer named '{name}'")
            shape = net.values[node.inputs[0]].shape
            if shape is None:
                raise PassError(f"layer '{name}': its input shape is unknown; give the net's input shapes")
            p = node.params
            axis = canonical_axis(p.axis, len(shape))
            if axis != 1:
                raise PassError(
                    f"layer '{name}' flattens from axis {axis}: the axes before it would have to become batch axes, "
                    "which a 2-d Convolution over the channel axis 1 cannot express"
                )
            if len(shape) != 4:
                log.append(f"{name}: left as InnerProduct (its input is {len(shape)}-d, not N x C x H x W)")
                continue
            if p.normalize:
                log.append(f"{name}: left as InnerProduct (its weights are normalised per forward pass)")
                continue
            channels, height, width = shape[1], shape[2], shape[3]
            blobs = conv_blobs(node, channels, height, width)
            kernel = (height,) if height == width else (height, width)
            params = ConvParams(num_output=p.num_output, kernel=kernel, bias_term=p.bias_term)
            msg = node.msg.copy().remove("inner_product_param") if node.msg is not None else None
            new_name = name + self.suffix
            net = replace_node(net, name, node.replace(name=new_name, type="Convolution", params=params, blobs=blobs, msg=msg))
            if self.suffix:
                top = net.values[node.outputs[0]].blob
                net = rename_blob(net, top, top + self.suffix)
                renamed[top + self.suffix] = top
            log.append(
                f"{name}: InnerProduct on {channels}x{height}x{width} -> Convolution '{new_name}' {p.num_output}x{channels}x{height}x{width}"
                + (" (weights transposed)" if p.transpose else "")
            )
        return PassResult(net, log, renamed=renamed)


def conv_blobs(node: Node, channels: int, height: int, width: int) -> tuple[np.ndarray, ...]:
    """An InnerProduct's blobs as a Convolution's: the weight (transposed first for ``transpose``)
    as (num_output, C, H, W), which keeps every number in place (Caffe flattens C·H·W)."""
    if not node.blobs:
        return node.blobs
    p = node.params
    weight = node.blobs[0].T if p.transpose else node.blobs[0]
    return (np.ascontiguousarray(weight).reshape(p.num_output, channels, height, width), *node.blobs[1:])
