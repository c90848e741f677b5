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
    """cumulative stride (jump) [h, w] as text ('8', '1/2')."""
    offset: list[str] | None
    """[h, w]: where the centre of the first output pixel falls on the input, in input pixels ('-19', '3.5')."""
    supported: bool
    reason: str | None
    where: str | None


def _fmt(f: Fraction) -> str:
    if f.denominator == 1:
        return str(f.numerator)
    if f.denominator & (f.denominator - 1) == 0 and f.denominator <= 1024:  # halves, quarters...: exact as decimals
        return f"{float(f):g}" if len(f"{float(f):g}") < 12 else f"{f.numerator}/{f.denominator}"
    return f"{f.numerator}/{f.denominator}"


def _cropped(spec, node, net: Net, start: tuple[Fraction, Fraction], jump: tuple[Fraction, Fraction]) -> tuple[Fraction, Fraction] | None:  # noqa: ANN001
    """Crop: output pixel 0 is input pixel ``offset`` on each cropped spatial axis."""
    shapes = [net.values[v].shape for v in node.inputs]
    if any(s is None for s in shapes) or len(shapes[0]) != 4:
        return None
    axis, offsets = spec.offsets(node.params, shapes)
    per_axis = {axis + i: off for i, off in enumerate(offsets)}
    return (start[0] + jump[0] * per_axis.get(2, 0), start[1] + jump[1] * per_axis.get(3, 0))


def layer_rows(net: Net) -> list[LayerRow]:
    """One row per layer.  Receptive field, jump (cumulative stride) and offset follow the
    usual arithmetic per spatial axis, in input pixels: a window of effective size
    ``k = d·(k−1)+1`` with stride ``s`` and padding ``p`` gives ``rf += (k−1)·jump``,
    ``offset += ((k−1)/2 − p)·jump``, ``jump *= s``; an upsampling by ``s`` (Deconvolution)
    gives ``offset += (p − (k−1)/2)·jump/s`` and ``jump /= s``; a Crop at ``c`` gives
    ``offset += c·jump``.  The offset is where the centre of the first output pixel falls on
    the input (FCN's crop of 19 undoes upscore's offset of −19)."""
    one = (Fraction(1), Fraction(1))
    rf: dict[str, tuple[int, int] | None] = {}
    jump: dict[str, tuple[Fraction, Fraction]] = {}
    offset: dict[str, tuple[Fraction, Fraction] | None] = {}
    rows = []
    for node in net.nodes:
        in_rf = [rf.get(v, (1, 1)) for v in node.inputs]
        in_jump = [jump.get(v, one) for v in node.inputs]
        in_offset = [offset.get(v, (Fraction(0), Fraction(0))) for v in node.inputs]
        if node.is_input or not node.inputs:
            out_rf: tuple[int, int] | None = (1, 1)
            out_jump = one
            out_offset: tuple[Fraction, Fraction] | None = (Fraction(0), Fraction(0))
        else:
            out_rf = None if any(r is None for r in in_rf) else max(in_rf, key=lambda r: r[0] * r[1])  # type: ignore[arg-type]
            out_jump = max(in_jump)
            first = in_jump.index(out_jump)
            out_offset = in_offset[first]
            spec = lookup(node.type)
            window = spec.window(node.params) if spec is not None and node.params is not None else None
            if node.type == "InnerProduct" or (node.type == "Pooling" and node.params is not None and node.params.is_global):
                out_rf, out_offset = None, None
            elif node.type == "Crop" and spec is not None and out_offset is not None:
                out_offset = _cropped(spec, node, net, out_offset, in_jump[0])
            elif window is not None and out_rf is not None:
                sizes, jumps = list(out_rf), list(out_jump)
                starts: list[Fraction] | None = list(out_offset) if out_offset is not None else None
                for axis, (k, s, up, pad) in enumerate(window[:2]):
                    if starts is not None:
                        starts[axis] = None if pad is None else starts[axis] + jumps[axis] * (
                            Fraction(pad) - Fraction(k - 1, 2) if up > 1 else Fraction(k - 1, 2) - pad
                        ) / up
                    if up > 1:
                        sizes[axis] += int(max(0, math.ceil(k / up) - 1) * jumps[axis])
                        jumps[axis] = jumps[axis] / up
                    else:
                        sizes[axis] += int((k - 1) * jumps[axis])
                        jumps[axis] = jumps[axis] * s
                out_rf, out_jump = (sizes[0], sizes[1]), (jumps[0], jumps[1])
                out_offset = None if starts is None or None in starts else (starts[0], starts[1])
        for v in node.outputs:
            rf[v], jump[v], offset[v] = out_rf, out_jump, out_offset
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
                offset=None if unknown or out_offset is None or out_rf is None else [_fmt(out_offset[0]), _fmt(out_offset[1])],
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


def rf_table(net: Net) -> str:
    """``inspect --rf``: per layer the output size, receptive field, jump and offset, in input pixels."""
    header = ("layer", "type", "output", "RF", "jump", "offset")
    body = []
    for r in layer_rows(net):
        shape = ", ".join("x".join(map(str, s[2:] if len(s) > 2 else s)) if s is not None else "?" for s in r.shapes) or "-"
        rf = "?" if r.receptive_field is None else r.receptive_field if isinstance(r.receptive_field, str) else _pair(r.receptive_field)
        body.append((r.name, r.type, shape, rf, "?" if r.stride is None else _pair(r.stride), "?" if r.offset is None else _pair(r.offset)))
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *body]]
    lines += [
        "",
        "output: spatial size; RF: receptive field; jump: input pixels between neighbouring output pixels;",
        "offset: where the centre of output pixel (0, 0) falls on the input (negative: outside it, in the padding)",
    ]
    return "\n".join(lines)


def _pair(values) -> str:  # noqa: ANN001
    return str(values[0]) if values[0] == values[1] else f"{values[0]}x{values[1]}"
