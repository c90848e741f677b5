"""``transplant``: copy weights from another caffemodel by layer name (net_surgery's transplant).

Blobs are copied where the source layer's blobs have the target's shapes, and reshaped
flat where only the element counts agree (fc6's 4096x9216 into fc6-conv's
4096x256x6x6); everything else is left as it is and reported.  ``map`` renames layers
on the way (``fc6>fc6-conv+fc7>fc7-conv``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..caffemodel.reader import load_caffemodel
from ..errors import PassError
from ..ir.graph import Net
from ..ir.weights import expected_blob_shapes
from . import Pass, PassResult, register_pass


def transplant(net: Net, source: dict[str, list[np.ndarray]], renames: dict[str, str] | None = None) -> tuple[Net, list[str]]:
    """``net`` with blobs copied from ``source`` (layer name → blobs); a report line per layer."""
    renames = renames or {}
    back = {dst: src for src, dst in renames.items()}
    log = []
    nodes = []
    for node in net.nodes:
        want = expected_blob_shapes(net, node)
        src_name = back.get(node.name, node.name)
        got = source.get(src_name)
        if not want or got is None:
            if want and got is None:
                log.append(f"{node.name}: left as it is (no layer '{src_name}' in the source)")
            nodes.append(node)
            continue
        if len(got) != len(want):
            log.append(f"{node.name}: left as it is ('{src_name}' has {len(got)} blobs, {len(want)} needed)")
            nodes.append(node)
            continue
        blobs, how = [], "copied"
        for blob, shape in zip(got, want):
            if tuple(blob.shape) == tuple(shape):
                blobs.append(blob.astype(np.float32, copy=False))
            elif blob.size == int(np.prod(shape)):
                blobs.append(np.ascontiguousarray(blob, dtype=np.float32).reshape(shape))
                how = "reshaped"
            else:
                break
        if len(blobs) != len(want):
            log.append(f"{node.name}: left as it is (shapes {[list(b.shape) for b in got]} do not fit {[list(s) for s in want]})")
            nodes.append(node)
            continue
        origin = f" from '{src_name}'" if src_name != node.name else ""
        log.append(f"{node.name}: {how}{origin} {[list(s) for s in want]}")
        nodes.append(node.replace(blobs=tuple(blobs)))
    return net.replace(nodes=tuple(nodes)), log


@register_pass
@dataclass(frozen=True)
class Transplant(Pass):
    name = "transplant"
    summary = "copy weights from another caffemodel by layer name (map=src>dst+...)"
    source: str = ""
    map: str = ""

    def apply(self, net: Net) -> PassResult:
        if not self.source:
            raise PassError("transplant needs source=FILE.caffemodel")
        renames = {}
        for item in filter(None, self.map.split("+")):
            src, sep, dst = item.partition(">")
            if not sep or not src or not dst:
                raise PassError(f"map entries look like src>dst, not {item!r}")
            renames[src] = dst
        net, log = transplant(net, load_caffemodel(self.source), renames)
        return PassResult(net, log)
