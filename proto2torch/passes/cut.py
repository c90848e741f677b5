"""``cut``: keep only what is needed to compute some blobs (drop heads that no longer fit).

``cut:after=res5c`` keeps every layer on which the final value of blob ``res5c`` depends
(including in-place layers that rewrite it) and drops the rest; several blobs are joined
with ``+``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PassError
from ..ir.edit import ancestors
from ..ir.graph import Net
from ..ir.shapes import infer_shapes
from . import Pass, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class Cut(Pass):
    name = "cut"
    summary = "keep only the layers needed for the given blobs"
    after: str = ""

    def apply(self, net: Net) -> PassResult:
        blobs = [b for b in self.after.split("+") if b]
        if not blobs:
            raise PassError("cut needs after=BLOB (several joined with +)")
        latest = net.latest()
        missing = [b for b in blobs if b not in latest]
        if missing:
            raise PassError(f"no blob named {', '.join(map(repr, missing))} in the net")
        needed = ancestors(net, [latest[b] for b in blobs])
        kept = [n for n in net.nodes if any(v in needed for v in n.outputs)]
        dropped = [n.name for n in net.nodes if n not in kept]
        result = infer_shapes(net.with_nodes(kept))
        log = [f"kept {len(kept)} layers up to {', '.join(blobs)}; dropped {len(dropped)}" + (f": {', '.join(dropped[:12])}" + (" ..." if len(dropped) > 12 else "") if dropped else "")]
        return PassResult(result, log)
