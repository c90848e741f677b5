"""``dilate``: trade strides for dilation up to a target output stride (DeepLab, DRN, PSPNet).

Walking the net in order, strides are kept while the cumulative stride stays within
``output_stride``.  A later layer with stride s > 1 gets stride 1, and s joins the
dilation multiplier that flows downstream with the data: every later layer whose
kernel is larger than 1 (main path and shortcut alike) has its dilation and padding
multiplied by it, which keeps its receptive field in input pixels.

Policies for the layer that loses its stride:

* ``exact`` (default; torchvision's ``replace_stride_with_dilation``): it keeps its own
  dilation.  The result is shift-exact — the dilated output sampled every
  (stride/output_stride)-th pixel equals the original net's output.
* ``deeplab`` (DeepLab v2, PSPNet, DRN): it takes the new dilation itself.

Caffe's Pooling has no dilation: a pooling layer that loses its stride is set to
stride 1, and a later pooling window that would need dilation is kept as it is and
reported as not shift-exact.  Deconvolutions and fully connected layers downstream
are reported too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import PassError
from ..ir.edit import downstream_blobs
from ..ir.graph import Net
from ..ir.shapes import infer_shapes
from ..layers.pooling import covers_whole_input
from . import Pass, PassResult, register_pass


def _same(values: tuple[int, ...], what: str, layer: str) -> int:
    if len(set(values)) != 1:
        raise PassError(f"layer '{layer}' has different {what} per axis {list(values)}; dilate handles square strides only")
    return values[0]


@register_pass
@dataclass(frozen=True)
class Dilate(Pass):
    name = "dilate"
    summary = "remove strides beyond an output stride; dilate every later kernel to keep receptive fields"
    output_stride: int = 8
    policy: str = "exact"

    def property_kind(self) -> str | None:
        return "shift" if self.policy == "exact" else "receptive-field"

    def apply(self, net: Net) -> PassResult:
        if self.output_stride < 1:
            raise PassError(f"output_stride must be positive, got {self.output_stride}")
        if self.policy not in ("exact", "deeplab"):
            raise PassError(f"policy must be exact or deeplab, not {self.policy!r}")
        stride: dict[str, int] = {}
        mult: dict[str, int] = {}
        nodes: list = []
        log = []
        producer = net.producer()
        consumers = net.consumers()
        position: dict[str, int] = {}  # node name → index in `nodes`
        redefined: set[str] = set()
        converted: set[str] = set()  # full-window poolings made global
        for node in net.nodes:
            s_in = max((stride.get(v, 1) for v in node.inputs), default=1)
            m_in = max((mult.get(v, 1) for v in node.inputs), default=1)
            s_out, m_out = s_in, m_in
            params = node.params
            if node.type in ("Convolution", "Pooling") and params is not None and not getattr(params, "is_global", False):
                is_conv = node.type == "Convolution"
                layer_stride = _same(params.stride, "strides", node.name) if is_conv else _same(params.stride, "strides", node.name)
                kernel = params.spatial(2)[0] if is_conv else params.kernel
                changes = {}
                if layer_stride > 1 and s_in * layer_stride > self.output_stride:
                    changes["stride"] = (1,) if is_conv else (1, 1)
                    m_out = m_in * layer_stride
                    log.append(f"{node.name}: stride {layer_stride} -> 1 (output stride stays {s_in}); later kernels dilated x{m_out}")
                else:
                    s_out = s_in * layer_stride
                grow = m_in * (layer_stride if "stride" in changes and self.policy == "deeplab" else 1)
                if not is_conv and grow > 1 and covers_whole_input(params, net.values[node.inputs[0]].shape):
                    changes.update(kernel=None, stride=(1, 1))
                    log.append(f"{node.name}: its {list(kernel)} window covered its whole input: now global pooling over the dilated map (as DRN classifies; not shift-exact by design)")
                    redefined |= set(node.outputs)
                    converted.add(node.name)
                elif grow > 1 and max(kernel) > 1:
                    if is_conv:
                        dilation, pad = params.spatial(2)[3], params.spatial(2)[2]
                        changes["dilation"] = _compact(tuple(d * grow if k > 1 else d for d, k in zip(dilation, kernel)))
                        changes["pad"] = _compact(tuple(q * grow if k > 1 else q for q, k in zip(pad, kernel)))
                        log.append(f"{node.name}: dilation {list(_compact(dilation))} -> {list(changes['dilation'])}, pad {list(_compact(pad))} -> {list(changes['pad'])}")
                        self._grow_explicit_pad(node, grow, producer, consumers, nodes, position, log)
                    else:
                        log.append(
                            f"{node.name}: WARNING kernel {list(kernel)} would need dilation x{grow}, which Caffe's Pooling lacks; "
                            "kept as is (the result is not shift-exact here)"
                        )
                if changes:
                    node = node.replace(params=dataclasses.replace(params, **changes))
            if node.type == "Pooling" and node.params is not None and node.params.is_global:
                if m_in > 1 and node.name not in converted:
                    log.append(f"{node.name}: global pooling now averages the dilated map (as DRN classifies; not shift-exact by design)")
                    redefined |= set(node.outputs)
                m_out = 1  # one value per channel: nothing downstream sees the dilated grid
            elif m_in > 1 and node.type in ("Deconvolution", "InnerProduct", "Crop", "Upsample", "Interp"):
                log.append(f"{node.name}: WARNING {node.type} after the removed strides is left as it is; check it (or cut before it)")
            for v in node.outputs:
                stride[v], mult[v] = s_out, m_out
            position[node.name] = len(nodes)
            nodes.append(node)
        result = infer_shapes(net.replace(nodes=tuple(nodes)))
        return PassResult(result, log, redefined=downstream_blobs(result, redefined))

    @staticmethod
    def _grow_explicit_pad(node, grow, producer, consumers, nodes, position, log) -> None:  # noqa: ANN001
        """A zero Pad that only feeds this convolution is part of its padding: it grows too (DSL zero_padding)."""
        source = producer.get(node.inputs[0])
        if source is None or source.type != "Pad" or source.params.value != 0.0 or source.params.mode != "CONSTANT":
            return
        if len(consumers.get(source.outputs[0], [])) != 1 or source.name not in position:
            return
        pads = tuple(q * grow for q in source.params.pads)
        nodes[position[source.name]] = source.replace(params=dataclasses.replace(source.params, pads=pads))
        log.append(f"{source.name}: padding {list(source.params.pads)} -> {list(pads)} (feeds {node.name})")


def _compact(values: tuple[int, ...]) -> tuple[int, ...]:
    return values[:1] if len(set(values)) == 1 else values
