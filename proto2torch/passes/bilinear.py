"""``bilinear-upsample``: initialise Deconvolution weights with FCN's bilinear kernel.

As FCN's ``surgery.interp``: a per-channel (grouped, one input per output) or a full
square (as many inputs as outputs, the kernel on the diagonal, zeros elsewhere)
deconvolution gets the separable bilinear kernel; biases become zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PassError
from ..ir.graph import Net
from . import Pass, PassResult, register_pass


def upsample_kernel(size: int) -> np.ndarray:
    """FCN's ``upsample_filt``: a size x size bilinear interpolation kernel."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    grid = np.arange(size)
    line = 1 - np.abs(grid - center) / factor
    return (line[:, None] * line[None, :]).astype(np.float32)


@register_pass
@dataclass(frozen=True)
class BilinearUpsample(Pass):
    name = "bilinear-upsample"
    summary = "bilinear kernels for Deconvolution layers (FCN upsampling)"
    layers: str = ""

    def apply(self, net: Net) -> PassResult:
        wanted = [n for n in self.layers.split("+") if n]
        targets = wanted or [n.name for n in net.nodes if n.type == "Deconvolution"]
        log = []
        nodes = list(net.nodes)
        for name in targets:
            index = next((i for i, n in enumerate(nodes) if n.name == name), None)
            if index is None or nodes[index].type != "Deconvolution":
                raise PassError(f"there is no Deconvolution layer named '{name}'")
            node = nodes[index]
            p = node.params
            channels = net.values[node.inputs[0]].shape[1]  # type: ignore[index]
            kh, kw = p.spatial(2)[0]
            if kh != kw:
                raise PassError(f"layer '{name}': bilinear kernels are square, this one is {kh}x{kw}")
            per_group_in, per_group_out = channels // p.group, p.num_output // p.group
            if per_group_in != per_group_out and per_group_out != 1:
                raise PassError(f"layer '{name}': {channels} inputs to {p.num_output} outputs in {p.group} groups is neither per-channel nor square")
            weight = np.zeros((channels, per_group_out, kh, kw), np.float32)
            kernel = upsample_kernel(kh)
            for c in range(channels):
                weight[c, c % per_group_out if per_group_out > 1 else 0] = kernel
            blobs = (weight, np.zeros(p.num_output, np.float32)) if p.bias_term else (weight,)
            nodes[index] = node.replace(blobs=blobs)
            kind = "per-channel" if per_group_out == 1 else ("grouped" if p.group > 1 else "full (diagonal)")
            log.append(f"{name}: {kh}x{kw} bilinear kernel, {kind}, {channels} -> {p.num_output}")
        return PassResult(net.replace(nodes=tuple(nodes)), log)
