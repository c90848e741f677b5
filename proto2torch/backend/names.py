"""One name table for both back ends: Caffe layer and blob names → Python identifiers.

Names are sanitised (``inception_3a/1x1`` → ``inception_3a_1x1``, ``conv4-1`` → ``conv4_1``,
a leading digit gets an underscore, keywords a trailing one) and collisions are
resolved deterministically in net order with ``_2``, ``_3``… suffixes.  Blob variables
reuse one name across in-place versions, as a hand-written port would.
"""

from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass, field

from ..ir.graph import Net

_RESERVED = set(keyword.kwlist) | {"self", "torch", "nn", "F", "Tensor", "List", "Tuple", "Dict", "Optional", "math", "operator"}
_BUILTINS = set(dir(builtins))


def identifier(name: str) -> str:
    text = re.sub(r"\W", "_", name, flags=re.ASCII)
    text = re.sub(r"__+", "_", text).strip("_") or "x"
    if text[0].isdigit():
        text = "_" + text
    if text in _RESERVED or text in _BUILTINS:
        text += "_"
    return text


@dataclass
class NameTable:
    """Module names per layer and variable names per SSA value, unique and stable."""

    modules: list[str] = field(default_factory=list)
    """submodule attribute name of each node, by position in the net"""
    variables: dict[str, str] = field(default_factory=dict)
    """value id → local variable name"""
    inputs: dict[str, str] = field(default_factory=dict)
    """input blob name → forward() argument name"""

    @classmethod
    def for_net(cls, net: Net, reserved: set[str] | None = None) -> NameTable:
        table = cls()
        taken_modules: set[str] = {"forward", "training", "children", "modules", "parameters", "buffers", "state_dict", "to", "eval", "train", "cuda", "cpu", "type", "float", "double", "half", "apply", "zero_grad"}
        taken_vars: set[str] = set(reserved or ())
        blob_vars: dict[str, str] = {}
        for node in net.nodes:
            table.modules.append(_unique(identifier(node.name), taken_modules))
            for v in node.outputs:
                blob = net.values[v].blob
                if blob not in blob_vars:
                    blob_vars[blob] = _unique(identifier(blob), taken_vars)
                table.variables[v] = blob_vars[blob]
                if node.is_input:
                    table.inputs[blob] = blob_vars[blob]
        return table


def _unique(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken:
        name = f"{base}_{n}"
        n += 1
    taken.add(name)
    return name
