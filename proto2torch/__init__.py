"""proto2torch: Caffe and caffe-tensorflow networks to PyTorch, verified blob by blob.

The main entry points::

    net = proto2torch.load_prototxt("deploy.prototxt")          # IR with shapes
    weights = proto2torch.load_caffemodel("net.caffemodel")     # {layer: [ndarray]}
    module = proto2torch.to_torch(net, weights)                 # torch.nn.Module (fx)
    blobs = proto2torch.blobs(module, data=x)                   # every blob by name
    fast = proto2torch.optimize(module, x)                      # the fastest path, outputs kept within 1e-4
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names are imported on first use (PEP 562), so that reading a prototxt, as ``inspect`` does,
# never imports torch: only the parts that build or run a module do.
_EXPORTS = {
    "blobs": "api",
    "load_net": "api",
    "to_torch": "api",
    "with_weights": "api",
    "load_caffemodel": "caffemodel.reader",
    "read_caffemodel": "caffemodel.reader",
    **dict.fromkeys(
        ("DSLError", "GraphError", "LayerParamError", "LimitError", "ParseError", "PassError", "Proto2TorchError",
         "SchemaError", "ShapeError", "UnsupportedLayerError", "WeightError"),
        "errors",
    ),  # fmt: skip
    "Net": "ir.graph",
    "Node": "ir.graph",
    "Value": "ir.graph",
    "LayerSpec": "layers.registry",
    "ParseContext": "layers.registry",
    "register_layer": "layers.registry",
    "optimize": "optimization",
    "load_prototxt": "prototxt.lower",
    "net_from_text": "prototxt.lower",
    "solver": "train",
    "trainable": "train",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'proto2torch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .api import blobs, load_net, to_torch, with_weights
    from .caffemodel.reader import load_caffemodel, read_caffemodel
    from .errors import (
        DSLError,
        GraphError,
        LayerParamError,
        LimitError,
        ParseError,
        PassError,
        Proto2TorchError,
        SchemaError,
        ShapeError,
        UnsupportedLayerError,
        WeightError,
    )
    from .ir.graph import Net, Node, Value
    from .layers.registry import LayerSpec, ParseContext, register_layer
    from .optimization import optimize
    from .prototxt.lower import load_prototxt, net_from_text
    from .train import solver, trainable

__all__ = [
    "DSLError",
    "GraphError",
    "LayerParamError",
    "LayerSpec",
    "LimitError",
    "Net",
    "Node",
    "ParseContext",
    "ParseError",
    "PassError",
    "Proto2TorchError",
    "SchemaError",
    "ShapeError",
    "UnsupportedLayerError",
    "Value",
    "WeightError",
    "blobs",
    "load_caffemodel",
    "load_net",
    "load_prototxt",
    "net_from_text",
    "optimize",
    "read_caffemodel",
    "register_layer",
    "solver",
    "to_torch",
    "trainable",
    "with_weights",
]

__version__ = "0.1.0"
