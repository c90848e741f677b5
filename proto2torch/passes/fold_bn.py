"""``fold-bn``: fold BatchNorm (and the Scale that follows it) into the preceding layer.

For a Convolution, Deconvolution or InnerProduct whose output feeds only a BatchNorm
with global statistics (optionally followed by a per-channel Scale), the normalisation
becomes part of the weights: w' = w · γ/σ per output channel and b' = (b − μ)·γ/σ + β,
with μ, σ² from the BatchNorm's blobs divided by its scale factor and σ = √(σ² + eps).
The BatchNorm and Scale layers disappear; readers of their output read the folded
layer's.  Arithmetic runs in float64 and is rounded to float32 once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..ir.edit import drop_nodes
from ..ir.graph import Net, Node
from ..layers.normalization import batch_norm_stats
from . import Pass, PassResult, register_pass

_FOLDABLE = ("Convolution", "Deconvolution", "InnerProduct")


@register_pass
@dataclass(frozen=True)
class FoldBN(Pass):
    name = "fold-bn"
    summary = "fold BatchNorm (+ Scale) into the preceding Convolution/InnerProduct"
    keeps = "outputs"

    def apply(self, net: Net) -> PassResult:
        producer = net.producer()
        consumers = net.consumers()
        replaced: dict[str, Node] = {}
        drop: set[str] = set()
        rewire: dict[str, str] = {}
        redefined: set[str] = set()
        log = []
        for bn in net.nodes:
            if bn.type != "BatchNorm" or bn.params is None or not bn.params.use_global_stats or not bn.blobs:
                continue
            src = bn.inputs[0]
            layer = replaced.get(producer[src].name, producer[src]) if src in producer else None
            if layer is None or layer.type not in _FOLDABLE or len(consumers.get(src, [])) != 1 or not layer.blobs:
                continue
            if layer.type != "InnerProduct" and layer.params.axis != 1:
                continue
            if layer.type == "InnerProduct" and (layer.params.transpose or layer.params.normalize or net.values[src].shape is None or layer.params.axis != len(net.values[src].shape) - 1 and len(net.values[src].shape) != 2):
                continue
            scale = None if bn.params.scale_bias else _following_scale(net, bn, consumers)
            mean, var = batch_norm_stats(bn.blobs)
            inv_std = 1.0 / np.sqrt(var.astype(np.float64) + bn.params.eps)
            if bn.params.scale_bias:  # NVIDIA Caffe's own affine blobs
                gamma, beta = (bn.blobs[k].astype(np.float64).reshape(-1) for k in (3, 4))
            else:
                gamma = np.ones_like(inv_std) if scale is None else scale.blobs[0].astype(np.float64).reshape(-1)
                beta = np.zeros_like(inv_std) if scale is None or not scale.params.bias_term else scale.blobs[1].astype(np.float64).reshape(-1)
            factor = gamma * inv_std
            weight = layer.blobs[0].astype(np.float64)
            if layer.type == "Deconvolution":
                groups = layer.params.group
                w = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], *weight.shape[2:])
                w = w * factor.reshape(groups, 1, weight.shape[1], *([1] * (weight.ndim - 2)))
                weight = w.reshape(weight.shape)
            else:
                weight = weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))
            bias = layer.blobs[1].astype(np.float64) if layer.params.bias_term else np.zeros_like(factor)
            bias = (bias - mean) * factor + beta
            params = replace(layer.params, bias_term=True)
            replaced[layer.name] = layer.replace(params=params, blobs=(weight.astype(np.float32), bias.astype(np.float32)))
            drop.add(bn.name)
            rewire[bn.outputs[0]] = src
            if net.values[bn.outputs[0]].blob != net.values[src].blob:  # the layer's own top now holds the normalised values
                redefined.add(net.values[src].blob)
            folded = f"{bn.name}"
            if scale is not None:
                drop.add(scale.name)
                rewire[scale.outputs[0]] = bn.outputs[0]
                folded += f" + {scale.name}"
            log.append(f"{folded} folded into {layer.name}")
        nodes = [replaced.get(n.name, n) for n in net.nodes]
        result = drop_nodes(net.replace(nodes=tuple(nodes)), drop, rewire)
        return PassResult(result, log, redefined=redefined)


def _following_scale(net: Net, bn: Node, consumers: dict[str, list[Node]]) -> Node | None:
    readers = consumers.get(bn.outputs[0], [])
    if len(readers) != 1:
        return None
    scale = readers[0]
    if scale.type != "Scale" or len(scale.inputs) != 1 or not scale.blobs or scale.params is None:
        return None
    shape = net.values[bn.outputs[0]].shape
    if shape is None or scale.params.axis not in (1, 1 - len(shape)) or scale.params.num_axes != 1:
        return None
    return scale


def merge_scale_into_batchnorm(net: Net) -> Net:
    """For emitted source: each inference BatchNorm whose only reader is a per-channel Scale writing
    the same blob in place becomes one affine BatchNorm (Caffe's scale and bias as its weight and
    bias, NVIDIA Caffe's five-blob form), as a hand port writes ``nn.BatchNorm2d``.  No blob of the
    net is lost (the value between the two was never any blob's final value); training-mode
    BatchNorms and pairs whose middle blob is read or named apart stay two layers.  Not a surgery
    pass: BVLC Caffe does not load the five-blob form."""
    consumers = net.consumers()
    merged: dict[str, Node] = {}
    drop: set[str] = set()
    rewire: dict[str, str] = {}
    for bn in net.nodes:
        p = bn.params
        if bn.type != "BatchNorm" or p is None or p.trainable or p.scale_bias or not p.use_global_stats or len(bn.blobs) != 3:
            continue
        scale = _following_scale(net, bn, consumers)
        if scale is None or net.values[scale.outputs[0]].blob != net.values[bn.outputs[0]].blob:
            continue
        channels = bn.blobs[0].size
        gamma = scale.blobs[0].reshape(-1)
        beta = scale.blobs[1].reshape(-1) if scale.params.bias_term and len(scale.blobs) > 1 else np.zeros(channels, np.float32)
        if gamma.size != channels:
            continue
        merged[bn.name] = bn.replace(params=replace(p, scale_bias=True), blobs=(*bn.blobs, gamma, beta))
        drop.add(scale.name)
        rewire[scale.outputs[0]] = bn.outputs[0]
    if not merged:
        return net
    nodes = [merged.get(n.name, n) for n in net.nodes]
    return drop_nodes(net.replace(nodes=tuple(nodes)), drop, rewire)
