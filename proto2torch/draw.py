"""``proto2torch draw``: the net as a Graphviz graph (DOT always; SVG/PNG through the ``dot`` program)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import Proto2TorchError
from .ir.graph import Net


def _quote(text: str) -> str:
    """A DOT string literal; real newlines become DOT line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(net: Net) -> str:
    """Layers as boxes (inputs as ellipses) labelled name / type / output shape; edges carry blob names."""
    producer: dict[str, str] = {}
    lines = [f"digraph {_quote(net.name)} {{", '  rankdir=TB;', '  node [shape=box, style=rounded, fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=8];']
    for i, node in enumerate(net.nodes):
        shapes = ", ".join("x".join(map(str, net.values[v].shape)) if net.values[v].shape else "?" for v in node.outputs)
        label = f"{node.name}\n{node.type}" + (f"\n{shapes}" if shapes else "")
        attrs = [f"label={_quote(label)}"]
        if node.is_input:
            attrs.append("shape=ellipse")
        if node.unsupported is not None:
            attrs.append('color=red, fontcolor=red')
        lines.append(f"  n{i} [{', '.join(attrs)}];")
        for v in node.inputs:
            if v in producer:
                lines.append(f"  {producer[v]} -> n{i} [label={_quote(net.values[v].blob)}];")
        for v in node.outputs:
            producer[v] = f"n{i}"
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw(net: Net, output: str | Path) -> Path:
    """Write ``output``: ``.dot`` as text; ``.svg``/``.png``/``.pdf`` rendered by Graphviz's ``dot``."""
    output = Path(output)
    dot = to_dot(net)
    fmt = output.suffix.lstrip(".").lower()
    if fmt in ("dot", "gv"):
        output.write_text(dot)
        return output
    if fmt not in ("svg", "png", "pdf"):
        raise Proto2TorchError(f"cannot draw to '{output.suffix}'; use .dot, .svg, .png or .pdf")
    program = shutil.which("dot")
    if program is None:
        raise Proto2TorchError(f"rendering {fmt.upper()} needs Graphviz's 'dot' program, which is not installed; write a .dot file instead")
    proc = subprocess.run([program, f"-T{fmt}", "-o", str(output)], input=dot.encode(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise Proto2TorchError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    return output
