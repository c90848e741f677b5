"""What ``proto2torch inspect`` shows: one row per layer with shapes, parameter counts,
receptive field and cumulative stride."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction

from .ir.graph import Net
from .ir.weights import expected_blob_shapes
from .layers.registry import lookup


@dataclass
class LayerRow:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    shapes: list[list[int] | None]
    params: int | None
    receptive_field: list[int] | str | None
    """[h, w] in input pixels, 'global' when every input pixel contributes, None if unknown."""
    stride: list[str] | None
    """cumulative stride [h, w] as text ('8', '1/2')."""
    supported: bool
    reason: str | None
    where: str | None


def _fmt(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def layer_rows(net: Net) -> list[LayerRow]:
    rf: dict[str, tuple[int, int] | None] = {}
    jump: dict[str, tuple[Fraction, Fraction]] = {}
    rows = []
    for node in net.nodes:
        in_rf = [rf.get(v, (1, 1)) for v in node.inputs]
        in_jump = [jump.get(v, (Fraction(1), Fraction(1))) for v in node.inputs]
        if node.is_input or not node.inputs:
            out_rf: tuple[int, int] | None = (1, 1)
            out_jump = (Fraction(1), Fraction(1))
        else:
            out_rf = None if any(r is None for r in in_rf) else max(in_rf, key=lambda r: r[0] * r[1])  # type: ignore[arg-type]
            out_jump = max(in_jump)
            spec = lookup(node.type)
            window = spec.window(node.params) if spec is not None and node.params is not None else None
            if node.type == "InnerProduct" or (node.type == "Pooling" and node.params is not None and node.params.is_global):
                out_rf = None
            elif window is not None and out_rf is not None:
                sizes, jumps = list(out_rf), list(out_jump)
                for axis, (k, s, up) in enumerate(window[:2]):
                    if up > 1:
                        sizes[axis] += int(max(0, math.ceil(k / up) - 1) * jumps[axis])
                        jumps[axis] = jumps[axis] / up
                    else:
                        sizes[axis] += int((k - 1) * jumps[axis])
                        jumps[axis] = jumps[axis] * s
                out_rf, out_jump = (sizes[0], sizes[1]), (jumps[0], jumps[1])
        for v in node.outputs:
            rf[v], jump[v] = out_rf, out_jump
        want = expected_blob_shapes(net, node)
        params = sum(math.prod(s) for s in want) if want is not None else (sum(b.size for b in node.blobs) if node.blobs else None)
        shapes = [list(net.values[v].shape) if net.values[v].shape is not None else None for v in node.outputs]
        unknown = any(s is None for s in shapes)
        rows.append(
            LayerRow(
                name=node.name,
                type=node.type,
                bottoms=[net.values[v].blob for v in node.inputs],
                tops=[net.values[v].blob for v in node.outputs],
                shapes=shapes,
                params=params,
                receptive_field=None if unknown else (list(out_rf) if out_rf is not None else "global"),
                stride=None if unknown else [_fmt(out_jump[0]), _fmt(out_jump[1])],
                supported=node.unsupported is None,
                reason=node.unsupported,
                where=str(node.span) if node.span else None,
            )
        )
    return rows


def summary_dict(net: Net) -> dict:
    rows = layer_rows(net)
    return {
        "net": net.name,
        "source": net.source,
        "phase": net.phase,
        "inputs": {net.values[v].blob: (list(net.values[v].shape) if net.values[v].shape else None) for v in net.inputs},
        "outputs": {net.values[v].blob: (list(net.values[v].shape) if net.values[v].shape else None) for v in net.outputs},
        "layers": [asdict(r) for r in rows],
        "params": sum(r.params or 0 for r in rows),
        "unsupported": [asdict(r) for r in rows if not r.supported],
        "diagnostics": [str(d) for d in net.diagnostics],
    }


def summary_table(net: Net) -> str:
    rows = layer_rows(net)
    header = ("layer", "type", "bottoms -> tops", "output shape", "params", "RF", "stride")
    body = []
    for r in rows:
        shape = ", ".join("x".join(map(str, s)) if s is not None else "?" for s in r.shapes) or "-"
        if r.receptive_field is None:
            rf = "?"
        elif r.receptive_field == "global":
            rf = "global"
        else:
            h, w = r.receptive_field  # type: ignore[misc]
            rf = str(h) if h == w else f"{h}x{w}"
        stride = "?" if r.stride is None else (r.stride[0] if r.stride[0] == r.stride[1] else "x".join(r.stride))
        flow = f"{', '.join(r.bottoms) or '-'} -> {', '.join(r.tops) or '-'}"
        params = "" if r.params in (None, 0) else f"{r.params:,}"
        type_name = r.type if r.supported else f"{r.type} (!)"
        body.append((r.name, type_name, flow, shape, params, rf, stride))
    widths = [min(max(len(row[i]) for row in [header, *body]), 48) for i in range(len(header))]
    lines = ["  ".join(c[: widths[i]].ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in [header, *body]]
    total = sum(r.params or 0 for r in rows)
    inputs = ", ".join(f"{net.values[v].blob} {'x'.join(map(str, net.values[v].shape)) if net.values[v].shape else '?'}" for v in net.inputs)
    lines.append("")
    lines.append(f"net '{net.name}' ({net.phase}): {len(rows)} layers, {total:,} parameters; inputs: {inputs or 'none'}")
    unsupported = [r for r in rows if not r.supported]
    if unsupported:
        lines.append(f"{len(unsupported)} unsupported layer(s):")
        for r in unsupported:
            lines.append(f"  {r.where + ': ' if r.where else ''}layer '{r.name}' (type {r.type}): {r.reason}")
    for d in net.diagnostics:
        lines.append(f"note: {d}")
    return "\n".join(lines)
