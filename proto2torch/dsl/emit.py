"""IR → caffe-tensorflow DSL: a ``Network`` subclass with ``setup`` and a weights ``.npy``.

The emitter follows caffe-tensorflow's own conventions — chains split where the graph
branches, ReLUs fused into conv/fc/batch_normalization, BatchNorm + Scale merged,
names with ``/`` written with ``_``, HWIO kernels and H·W·C-ordered fc weights — but it
only writes what is *exact*: every conv and pooling states its padding, Caffe's
symmetric padding that TF's SAME would place differently becomes ``zero_padding`` +
``VALID``, and a layer the DSL cannot express exactly is refused with its name
instead of approximated.  The file records which layer holds each Caffe blob
(``CAFFE_BLOBS``) so ``proto2torch verify`` can compare it with Caffe's blobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backend.live import check_convertible
from ..backend.names import identifier
from ..backend.sizes import caffe_pool_out
from ..errors import DSLError
from ..ir.graph import Net, Node
from ..layers.conv import tf_same_pads
from ..layers.normalization import batch_norm_stats

_NCHW_TO_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}


@dataclass
class _Op:
    method: str
    args: list[str]
    kwargs: list[tuple[str, str]]
    name: str
    inputs: list[str]
    """DSL names (or net inputs) this op reads"""
    values: list[str] = field(default_factory=list)
    """IR value ids this op's output stands for"""
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def text(self) -> str:
        parts = self.args + [f"{k}={v}" for k, v in self.kwargs] + [f"name={self.name!r}"]
        return f".{self.method}({', '.join(parts)})"


def _fail(node: Node, why: str) -> DSLError:
    return DSLError(f"layer '{node.name}' ({node.type}) cannot be written exactly in the caffe-tensorflow DSL: {why}", node.span, node.name)


class _Emitter:
    def __init__(self, net: Net):
        check_convertible(net)
        self.net = net
        self.consumers = net.consumers()
        self.ops: list[_Op] = []
        self.dsl_of: dict[str, str] = {}  # IR value id → DSL name holding it
        self.names: set[str] = set()
        self.bn_eps: set[float] = set()
        self.skip: set[str] = set()  # nodes merged into an earlier op
        self.flattened: dict[str, str] = {}  # output of a Flatten (that only fc reads) → its spatial input

    def name_for(self, layer: str) -> str:
        base = layer.replace("/", "_")
        name, n = base, 2
        while name in self.names:
            name = f"{base}_{n}"
            n += 1
        self.names.add(name)
        return name

    def shape(self, value_id: str) -> tuple[int, ...]:
        shape = self.net.values[value_id].shape
        assert shape is not None
        return shape

    def follower(self, node: Node, type_name: str) -> Node | None:
        """The single in-place layer of ``type_name`` that reads ``node``'s only output."""
        if len(node.outputs) != 1:
            return None
        readers = self.consumers.get(node.outputs[0], [])
        if len(readers) != 1 or readers[0].type != type_name or readers[0].inputs != node.outputs:
            return None
        reader = readers[0]
        if self.net.values[reader.outputs[0]].blob != self.net.values[node.outputs[0]].blob:
            return None
        return reader

    def fused_relu(self, node: Node) -> Node | None:
        relu = self.follower(node, "ReLU")
        return relu if relu is not None and relu.params.negative_slope == 0.0 else None

    def emit(self) -> list[_Op]:
        for node in self.net.nodes:
            if node.name in self.skip:
                continue
            if node.is_input:
                for v in node.outputs:
                    self.dsl_of[v] = self.net.values[v].blob
                    self.names.add(self.net.values[v].blob)
                continue
            handler = getattr(self, f"op_{node.type}", None)
            if handler is None:
                raise _fail(node, "the DSL has no such operation")
            handler(node)
        return self.ops

    def add(self, node: Node, method: str, args: Sequence[object], kwargs: Sequence[tuple[str, object]], absorbed: Sequence[Node] = (), weights: dict[str, np.ndarray] | None = None, inputs: Sequence[str] | None = None) -> _Op:
        name = self.name_for(node.name)
        op = _Op(method, [repr(a) if isinstance(a, str) else str(a) for a in args], [(k, repr(v) if isinstance(v, str) else str(v)) for k, v in kwargs], name, list(inputs) if inputs is not None else [self.dsl_of[v] for v in node.inputs], weights=weights or {})
        for member in (node, *absorbed):
            for v in member.outputs:
                self.dsl_of[v] = name
                op.values.append(v)
            self.skip.add(member.name)
        self.ops.append(op)
        return op

    # --- layers ---------------------------------------------------------------------------------
    def _padding(self, node: Node, size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], pad: tuple[int, int]) -> tuple[str, int]:
        """'SAME'/'VALID' plus an extra zero_padding that reproduce Caffe's symmetric padding."""
        same = [tf_same_pads(n, k, s, d) for n, k, s, d in zip(size, kernel, stride, dilation)]
        if all(before == after == p for (before, after), p in zip(same, pad)):
            return "SAME", 0
        if pad[0] != pad[1]:
            raise _fail(node, f"padding {list(pad)} differs between height and width, and zero_padding pads both alike")
        return "VALID", pad[0]

    def op_Convolution(self, node: Node) -> None:
        p = node.params
        shape = self.shape(node.inputs[0])
        if len(shape) != 4 or p.axis != 1:
            raise _fail(node, "only 2-d convolutions over channel axis 1")
        kernel, stride, pad, dilation = p.spatial(2)
        padding, extra = self._padding(node, shape[2:], kernel, stride, dilation, pad)
        inputs = None
        if extra:
            pad_op = _Op("zero_padding", [str(extra)], [], self.name_for(f"{node.name}_pad"), [self.dsl_of[node.inputs[0]]])
            self.ops.append(pad_op)
            inputs = [pad_op.name]
        relu = self.fused_relu(node)
        weights = {"weights": np.ascontiguousarray(node.blobs[0].transpose(2, 3, 1, 0))}
        if p.bias_term:
            weights["biases"] = node.blobs[1]
        kwargs: list[tuple[str, object]] = [("padding", padding)]
        if p.group != 1:
            kwargs.append(("group", p.group))
        if not p.bias_term:
            kwargs.append(("biased", False))
        if relu is None:
            kwargs.append(("relu", False))
        if dilation != (1, 1):
            if stride != (1, 1) or dilation[0] != dilation[1]:
                raise _fail(node, "atrous_conv has stride 1 and one dilation for both axes")
            self.add(node, "atrous_conv", [kernel[0], kernel[1], p.num_output, dilation[0]], kwargs, [relu] if relu else [], weights, inputs)
        else:
            self.add(node, "conv", [kernel[0], kernel[1], p.num_output, stride[0], stride[1]], kwargs, [relu] if relu else [], weights, inputs)

    def op_InnerProduct(self, node: Node) -> None:
        p = node.params
        shape = self.shape(self.flattened.get(node.inputs[0], node.inputs[0]))
        if p.axis != 1 or p.transpose or p.normalize:
            raise _fail(node, "fc flattens from axis 1 and has plain (in, out) weights")
        weight = node.blobs[0]
        if len(shape) == 4:  # rows in H·W·C order, as fc flattens NHWC maps
            _, c, h, w = shape
            weight = weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(c * h * w, -1)
        else:
            weight = weight.T
        biases = node.blobs[1] if p.bias_term else np.zeros(p.num_output, np.float32)
        relu = self.fused_relu(node)
        kwargs = [] if relu else [("relu", False)]
        self.add(node, "fc", [p.num_output], kwargs, [relu] if relu else [], {"weights": np.ascontiguousarray(weight), "biases": biases})

    def op_Pooling(self, node: Node) -> None:
        p = node.params
        shape = self.shape(node.inputs[0])
        method = "max_pool" if p.method == "MAX" else "avg_pool"
        if p.is_global:
            self.add(node, method, [shape[2], shape[3], 1, 1], [("padding", "VALID")])
            return
        out = tuple(caffe_pool_out(n, k, s, q, p.ceil) for n, k, s, q in zip(shape[2:], p.kernel, p.stride, p.pad))
        valid = tuple((n - k) // s + 1 for n, k, s in zip(shape[2:], p.kernel, p.stride))
        same_out = tuple(-(-n // s) for n, s in zip(shape[2:], p.stride))
        same_pad = tuple(tf_same_pads(n, k, s)[0] for n, k, s in zip(shape[2:], p.kernel, p.stride))
        padded_valid = tuple((n + 2 * q - k) // s + 1 for n, k, s, q in zip(shape[2:], p.kernel, p.stride, p.pad))
        inputs = None
        if p.pad == (0, 0) and out == valid:
            padding = "VALID"
        elif out == same_out and p.pad == same_pad and (p.method == "MAX" or p.pad == (0, 0)):
            padding = "SAME"
        elif p.method == "MAX" and p.pad[0] == p.pad[1] and out == padded_valid and self._non_negative(node.inputs[0]):
            # after a ReLU, zero padding never wins a max: zero_padding + VALID is exact
            padding = "VALID"
            pad_op = _Op("zero_padding", [str(p.pad[0])], [], self.name_for(f"{node.name}_pad"), [self.dsl_of[node.inputs[0]]])
            self.ops.append(pad_op)
            inputs = [pad_op.name]
        else:
            raise _fail(node, f"no TF padding gives Caffe's windows here (output {list(out)}, pad {list(p.pad)}, {'ceil' if p.ceil else 'floor'} mode)")
        self.add(node, method, [p.kernel[0], p.kernel[1], p.stride[0], p.stride[1]], [("padding", padding)], inputs=inputs)

    def _non_negative(self, value_id: str) -> bool:
        producer = self.net.producer().get(value_id)
        return producer is not None and (
            (producer.type == "ReLU" and producer.params.negative_slope == 0.0) or producer.type in ("ReLU6", "Sigmoid", "AbsVal")
        )

    def op_ReLU(self, node: Node) -> None:
        if node.params.negative_slope != 0.0:
            raise _fail(node, "relu() has no negative slope")
        self.add(node, "relu", [], [])

    def op_LRN(self, node: Node) -> None:
        p = node.params
        if p.within_channel:
            raise _fail(node, "lrn() normalises across channels only")
        self.add(node, "lrn", [(p.size - 1) // 2, p.alpha / p.size, p.beta], [("bias", p.k)] if p.k != 1.0 else [])

    def op_Concat(self, node: Node) -> None:
        axis = node.params.axis % len(self.shape(node.inputs[0]))
        if len(self.shape(node.inputs[0])) != 4 and axis != 1:
            raise _fail(node, "only 4-d inputs (or axis 1) map onto NHWC axes")
        self.add(node, "concat", [_NCHW_TO_NHWC[axis] if len(self.shape(node.inputs[0])) == 4 else axis], [])

    def op_Eltwise(self, node: Node) -> None:
        if node.params.operation != "SUM" or node.params.coeffs:
            raise _fail(node, "add() sums without coefficients; PROD and MAX have no DSL operation")
        self.add(node, "add", [], [])

    def op_Softmax(self, node: Node) -> None:
        shape = self.shape(node.inputs[0])
        axis = node.params.axis % len(shape)
        if axis != 1 or not (len(shape) == 2 or (len(shape) == 4 and shape[2] == shape[3] == 1)):
            raise _fail(node, "softmax() works on (N, C) or (N, C, 1, 1) inputs over the channels")
        self.add(node, "softmax", [], [])

    def op_BatchNorm(self, node: Node) -> None:
        if not node.params.use_global_stats:
            raise _fail(node, "batch_normalization() uses stored statistics")
        self.bn_eps.add(node.params.eps)
        mean, var = batch_norm_stats(node.blobs)
        weights = {"mean": mean, "variance": var}
        absorbed = []
        scale = self.follower(node, "Scale")
        if scale is not None and len(scale.inputs) == 1 and scale.params.num_axes == 1 and scale.params.axis in (1, -3):
            weights["scale"] = scale.blobs[0].reshape(-1)
            weights["offset"] = scale.blobs[1].reshape(-1) if scale.params.bias_term else np.zeros_like(mean)
            absorbed.append(scale)
        last = absorbed[-1] if absorbed else node
        relu = self.fused_relu(last)
        if relu is not None:
            absorbed.append(relu)
        self.add(node, "batch_normalization", [], [("scale_offset", bool(len(absorbed) and absorbed[0].type == "Scale")), ("relu", relu is not None)], absorbed, weights)

    def op_Dropout(self, node: Node) -> None:
        for v in node.outputs:  # identity at test time: caffe-tensorflow leaves it out too
            self.dsl_of[v] = self.dsl_of[node.inputs[0]]

    op_Split = op_Dropout

    def op_Flatten(self, node: Node) -> None:
        readers = self.consumers.get(node.outputs[0], [])
        if node.params.axis != 1 or not readers or any(r.type != "InnerProduct" for r in readers):
            raise _fail(node, "the DSL flattens only inside fc()")
        self.dsl_of[node.outputs[0]] = self.dsl_of[node.inputs[0]]
        self.flattened[node.outputs[0]] = node.inputs[0]

    def op_PReLU(self, node: Node) -> None:
        if node.params.channel_shared:
            raise _fail(node, "prelu() learns one slope per channel")
        self.add(node, "prelu", [], [], weights={"alpha": node.blobs[0].reshape(-1)})

    def op_Sigmoid(self, node: Node) -> None:
        self.add(node, "sigmoid", [], [])

    def op_TanH(self, node: Node) -> None:
        self.add(node, "tanh", [], [])


def emit_dsl(net: Net) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    """caffe-tensorflow source for ``net`` and its weights dict (for ``np.save``)."""
    emitter = _Emitter(net)
    ops = emitter.emit()
    if len(emitter.bn_eps) > 1:
        raise DSLError(f"the net's BatchNorm layers use several eps values {sorted(emitter.bn_eps)}; a DSL dialect has one")
    eps = next(iter(emitter.bn_eps), 1e-5)
    dialect = {1e-5: "ethereon"}.get(eps)
    if dialect is None:
        if abs(eps - 1e-3) > 1e-12:
            raise DSLError(f"BatchNorm eps {eps} matches no DSL dialect (ethereon: 1e-5, drsleep: 1e-3)")
        dialect = "drsleep"
        for op in ops:
            if op.method == "batch_normalization":
                kwargs = dict(op.kwargs)
                op.kwargs = [("is_training", "False"), ("activation_fn", "tf.nn.relu" if kwargs["relu"] == "True" else "None"), ("scale", kwargs["scale_offset"])]
    for op in ops:
        if op.method == "batch_normalization" and dialect == "ethereon":
            op.kwargs = [(k, v) for k, v in op.kwargs if not (k == "scale_offset" and v == "True") and not (k == "relu" and v == "False")]
    chains = _chains(ops)
    class_name = _class_name(net.name)
    blobs = {}
    latest = net.latest()
    for blob, value_id in latest.items():
        holder = emitter.dsl_of.get(value_id)
        if holder is not None and holder != blob:
            blobs[blob] = holder
    lines = [
        f'"""{class_name}: the Caffe net \'{net.name}\' as a caffe-tensorflow Network, written by proto2torch.',
        "",
        "Every conv and pooling states its padding; zero_padding + VALID stands where Caffe's padding",
        "differs from TensorFlow's SAME.  Needs a Network with the methods used here (zero_padding and",
        "atrous_conv come from the DeepLab/PSPNet ports).  Weights: the .npy beside this file.",
        '"""',
        "",
        *(["import tensorflow as tf"] if dialect == "drsleep" else []),
        "from kaffe.tensorflow import Network",
        "",
        f"DSL_DIALECT = {dialect!r}",
        "",
        "# Caffe blob -> the layer below whose output it is",
        "CAFFE_BLOBS = {",
        *(f"    {k!r}: {v!r}," for k, v in blobs.items()),
        "}",
        "",
        "",
        f"class {class_name}(Network):",
        "    def setup(self):",
    ]
    for feeds, members in chains:
        head = "        (self.feed(" + ",\n                   ".join(repr(f) for f in feeds) + ")"
        body = [f"             {op.text()}" for op in members]
        body[-1] += ")"
        lines += [head, *body, ""]
    text = "\n".join(line for line in lines).replace("\n\n\n\n", "\n\n\n").rstrip() + "\n"
    weights = {op.name: op.weights for op in ops if op.weights}
    return text, weights


def _chains(ops: list[_Op]) -> list[tuple[list[str], list[_Op]]]:
    """kaffe's rule: an op with one input continues the chain that ends with that input."""
    chains: list[tuple[list[str], list[_Op]]] = []
    open_ends: dict[str, int] = {}
    for op in ops:
        if len(op.inputs) == 1 and op.inputs[0] in open_ends:
            index = open_ends.pop(op.inputs[0])
            chains[index][1].append(op)
        else:
            chains.append((op.inputs, [op]))
            index = len(chains) - 1
        open_ends[op.name] = index
    return chains


def _class_name(name: str) -> str:
    base = identifier(name)
    return "".join(p[:1].upper() + p[1:] for p in base.split("_") if p) or "Net"


def write_dsl(net: Net, out_dir: str | Path, stem: str | None = None) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text, weights = emit_dsl(net)
    stem = stem or identifier(net.name)
    py, npy = out / f"{stem}.py", out / f"{stem}.npy"
    py.write_text(text)
    np.save(npy, np.array(weights, dtype=object), allow_pickle=True)
    return py, npy
