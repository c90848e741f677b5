"""Graph edits as passes: ``append`` layers written as prototxt, ``set`` one parameter field.

``append:file=head.prototxt`` adds the layers of a prototxt snippet after the net's
layers (their bottoms may name any blob of the net); new layers with learned blobs
are initialised from their fillers.  ``set:layer=conv1_1,field=convolution_param.pad,value=100``
rewrites one field of a layer's parameters and re-reads the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import PassError
from ..ir.graph import Net
from ..ir.shapes import infer_shapes
from ..ir.weights import initialise
from ..layers.registry import ParseContext, lookup
from ..prototxt.lower import append_layers
from ..prototxt.schema import bind
from ..prototxt.textformat import parse_text
from . import Pass, PassResult, register_pass


@register_pass
@dataclass(frozen=True)
class Append(Pass):
    name = "append"
    summary = "append the layers of a prototxt snippet (new weights from their fillers)"
    file: str = ""
    text: str = ""

    def apply(self, net: Net) -> PassResult:
        if bool(self.file) == bool(self.text):
            raise PassError("append needs file=PATH (or text= from Python)")
        text = Path(self.file).read_bytes() if self.file else self.text
        before = {n.name for n in net.nodes}
        grown = initialise(append_layers(net, text, self.file or "<append>"))
        added = [f"{n.name} ({n.type})" for n in grown.nodes if n.name not in before]
        return PassResult(grown, [f"added {', '.join(added)}"])


@register_pass
@dataclass(frozen=True)
class Set(Pass):
    name = "set"
    summary = "set one parameter field of a layer, e.g. field=convolution_param.pad,value=100"
    layer: str = ""
    field: str = ""
    value: str = ""

    def apply(self, net: Net) -> PassResult:
        node = net.find(self.layer)
        if node is None or node.msg is None:
            raise PassError(f"there is no layer named '{self.layer}'")
        path = self.field.split(".")
        if len(path) < 1 or not all(path):
            raise PassError(f"field must be a dotted path such as convolution_param.pad, not {self.field!r}")
        msg = node.msg.copy()
        holder = msg
        for part in path[:-1]:
            child = holder.sub(part).copy()
            holder.set(part, child)
            holder = child
        holder.remove(path[-1]).add(path[-1], parse_text(f"v: {self.value}").get("v"))
        bind(msg, "LayerParameter")
        spec = lookup(node.type)
        assert spec is not None
        ctx = ParseContext(msg, node.name, dict(net.options), len(node.inputs), len(node.outputs))
        params = spec.parse(ctx)
        nodes = tuple(node.replace(params=params, msg=msg) if n is node else n for n in net.nodes)
        return PassResult(infer_shapes(net.replace(nodes=nodes)), [f"{self.layer}: {self.field} = {self.value}"])
