"""proto2torch: Caffe and caffe-tensorflow networks to PyTorch, verified blob by blob.

The main entry points::

    net = proto2torch.load_prototxt("deploy.prototxt")          # IR with shapes
    weights = proto2torch.load_caffemodel("net.caffemodel")     # {layer: [ndarray]}
    module = proto2torch.to_torch(net, weights)                 # torch.nn.Module (fx)
    blobs = proto2torch.blobs(module, data=x)                   # every blob by name
    fast = proto2torch.optimize(module, x)                      # the fastest path, outputs kept within 1e-4
"""

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
