"""The live back end: a net becomes a ``torch.fx.GraphModule``.

One ``call_module`` per layer (submodules named after the Caffe layers) or a
``call_function`` for plain tensor functions, in the net's order.  The result is an
ordinary ``nn.Module`` with readable generated code (``module.code``) that works with
``torch.jit.script``, ``torch.export`` and ONNX export, and has no interpreter
overhead per forward.  :func:`run_blobs` replays it node by node to return every
intermediate blob for verification.

Weights are not copied: each module's parameters are made from the IR's numpy blobs
with ``torch.from_numpy`` (the module is built on the meta device first, so nothing is
initialised just to be overwritten).
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from ..errors import LayerParamError, MissingShapeError, Proto2TorchError, ShapeError, UnsupportedLayerError
from ..ir.graph import Net, Node
from ..layers.registry import lookup
from .lowering import AliasOp, In, InList, ModuleOp, Op, stopped_inputs
from .names import NameTable, identifier


def lower_node(net: Net, node: Node) -> Op:
    """The node's lowering, with errors located at the layer."""
    spec = lookup(node.type)
    assert spec is not None
    shapes = [net.values[v].shape for v in node.inputs]
    try:
        return spec.lower(node.params, shapes, node.blobs)  # type: ignore[arg-type]
    except (LayerParamError, ShapeError) as exc:
        if exc.where is not None:
            raise
        raise type(exc)(exc.message, node.span, node.name) from None


def check_convertible(net: Net) -> None:
    """Raise if the net has unsupported layers (all listed) or values of unknown shape."""
    problems = net.unsupported()
    if problems:
        raise UnsupportedLayerError(problems)
    for v in net.inputs:
        if net.values[v].shape is None:
            blob = net.values[v].blob
            raise MissingShapeError(f"net input '{blob}' has no shape; give one, e.g. inputs={{'{blob}': (1, 3, 224, 224)}} or --input {blob}=1,3,224,224")


def make_module(op: ModuleOp, prototypes: dict[Any, nn.Module] | None = None) -> nn.Module:
    """Instantiate a ModuleOp's module (in eval mode) with its state, sharing the numpy memory where possible.

    The module is built on the meta device (nothing initialised only to be overwritten),
    then each parameter and buffer is replaced by a tensor over the blob's memory; this is
    ``load_state_dict(assign=True)`` without its per-module overhead, which matters for
    nets of hundreds of layers.  With ``prototypes`` (one dict per net being built), a module
    of torch.nn or of the backend's ops that has been built before with the same arguments
    is cloned instead: its attributes copied and its tensors replaced, with no ``__init__``.
    """
    key = _prototype_key(op) if prototypes is not None else None
    if key is not None and key in prototypes:  # type: ignore[operator]
        return _clone(prototypes[key], op)  # type: ignore[index]
    module = _construct(op)
    if key is not None and not module._modules:
        own = [name for name, t in [*module._parameters.items(), *module._buffers.items()] if t is not None]
        if set(own) <= op.state.keys():  # every tensor of a clone will be its own
            prototypes[key] = module  # type: ignore[index]
    return module


def _construct(op: ModuleOp) -> nn.Module:
    if not op.state:
        return op.cls(*op.args, **op.kwargs).eval()
    if _takes_device(op.cls):
        module = op.cls(*op.args, **op.kwargs, device="meta")
    else:
        with torch.device("meta"):
            module = op.cls(*op.args, **op.kwargs)
    for name, array in op.state.items():
        _assign(module, name, _tensor(array))
    leftovers = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftovers:
        raise Proto2TorchError(f"{op.cls.__name__}: no values for {', '.join(leftovers)}")
    module.training = False
    for child in module.modules():
        child.training = False
    return module


def _prototype_key(op: ModuleOp) -> tuple[Any, ...] | None:
    """What makes two ModuleOps' modules alike but for their tensors; None where cloning is not
    known to be safe (a class from elsewhere, whose ``__init__`` may do more than set attributes)."""
    if not op.cls.__module__.startswith(("torch.nn.", "proto2torch.backend.")):
        return None
    try:
        return (op.cls, _frozen(op.args), _frozen(sorted(op.kwargs.items())), tuple(op.state))
    except TypeError:
        return None


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return (type(value), *(_frozen(v) for v in value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value), value)  # 1 and 1.0 and True make different modules
    raise TypeError(type(value).__name__)


def _clone(prototype: nn.Module, op: ModuleOp) -> nn.Module:
    """A module like ``prototype`` (same class, same arguments) over ``op.state``'s tensors: its
    attribute dict copied, each container in it (parameters, buffers, hooks…) copied, so the two
    share no mutable state, and every parameter and buffer replaced."""
    module = type(prototype).__new__(type(prototype))
    attributes = {k: v.copy() if isinstance(v, (dict, set, list)) else v for k, v in prototype.__dict__.items()}
    object.__setattr__(module, "__dict__", attributes)
    for name, array in op.state.items():
        _assign(module, name, _tensor(array))
    return module


@functools.cache
def _takes_device(cls: type) -> bool:
    """Whether ``cls(..., device=...)`` is accepted (torch.nn's layers take factory kwargs)."""
    try:
        return "device" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _assign(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put ``tensor`` in place of the parameter or buffer ``name`` (dotted for submodules)."""
    *path, leaf = name.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    current = owner._parameters.get(leaf) if leaf in owner._parameters else owner._buffers.get(leaf)
    if current is None and leaf not in owner._buffers:
        raise Proto2TorchError(f"{type(module).__name__} has no parameter or buffer '{name}'")
    if current is not None and tuple(current.shape) != tuple(tensor.shape):
        raise Proto2TorchError(f"{type(module).__name__}.{name}: expected shape {list(current.shape)}, got {list(tensor.shape)}")
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=current.requires_grad if current is not None else True)
    else:
        owner._buffers[leaf] = tensor


def _tensor(array: np.ndarray) -> torch.Tensor:
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def build_graph_module(net: Net, names: NameTable | None = None) -> fx.GraphModule:
    """The GraphModule for ``net`` (which must have shapes and, for layers with weights, blobs)."""
    check_convertible(net)
    names = names or NameTable.for_net(net)
    root = nn.Module()
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    owners: dict[tuple[str, int], tuple[nn.Module, str]] = {}
    aliases: dict[str, str] = {}  # blob name → fx node whose value it shares (Split, Concat of one input…)
    prototypes: dict[Any, nn.Module] = {}
    for v in net.inputs:
        placeholder = graph.placeholder(names.variables[v])
        placeholder.meta["blob"] = net.values[v].blob
        env[v] = placeholder
    for index, node in enumerate(net.nodes):
        if node.is_input:
            continue
        op = lower_node(net, node)
        inputs = [env[v] for v in node.inputs]
        for i in stopped_inputs(node):
            inputs[i] = graph.call_method("detach", (inputs[i],))
        if isinstance(op, AliasOp):
            for out, src in zip(node.outputs, op.sources):
                env[out] = inputs[src]
                aliases[net.values[out].blob] = inputs[src].name
            continue
        if isinstance(op, ModuleOp):
            module = make_module(op, prototypes)
            _share(node, op, module, owners)
            target = names.modules[index]
            root.add_module(target, module)
            args = tuple(inputs) if op.call is None else _bind(op.call, inputs)
            result = graph.create_node("call_module", target, args, {}, name=names.variables[node.outputs[0]] if node.outputs else target)
        else:
            args = _bind(op.args, inputs)
            kwargs = {k: _bind((v,), inputs)[0] for k, v in op.kwargs.items()}
            result = graph.create_node("call_function", op.fn, args, kwargs, name=names.variables[node.outputs[0]] if node.outputs else identifier(node.name))
        result.meta["layer"] = node.name
        n_out = op.n_out
        if n_out == 1:
            if node.outputs:
                result.meta["blob"] = net.values[node.outputs[0]].blob
                env[node.outputs[0]] = result
            continue
        for i, out in enumerate(node.outputs):
            item = graph.create_node("call_function", operator.getitem, (result, i), {}, name=names.variables[out])
            item.meta["blob"] = net.values[out].blob
            item.meta["layer"] = node.name
            env[out] = item
    outputs = [v for v in net.outputs]
    if len(outputs) == 1:
        graph.output(env[outputs[0]])
    else:
        graph.output({net.values[v].blob: env[v] for v in outputs})
    graph.lint()
    module = fx.GraphModule(root, graph, class_name=identifier(net.name) or "Net")
    module.input_names = [net.values[v].blob for v in net.inputs]  # type: ignore[assignment]
    module.output_names = [net.values[v].blob for v in outputs]  # type: ignore[assignment]
    module.meta["blob_aliases"] = aliases
    return module.eval()


def _bind(items: Sequence[Any], inputs: list[fx.Node]) -> tuple[Any, ...]:
    out = []
    for item in items:
        if isinstance(item, In):
            out.append(inputs[item.index])
        elif isinstance(item, InList):
            out.append(list(inputs))
        else:
            out.append(item)
    return tuple(out)


def _share(node: Node, op: ModuleOp, module: nn.Module, owners: dict[tuple[str, int], tuple[nn.Module, str]]) -> None:
    """``param { name: ... }``: later layers reuse the first owner's Parameter objects."""
    for i, attr in enumerate(op.blob_params):
        shared = node.param_names[i] if i < len(node.param_names) else None
        if not shared or attr is None:
            continue
        key = (shared, i)
        if key in owners:
            owner, owner_attr = owners[key]
            setattr(module, attr, getattr(owner, owner_attr))
        else:
            owners[key] = (module, attr)


class _Recorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.blobs: dict[str, torch.Tensor] = {}
        self.by_node: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            self.by_node[n.name] = result
            blob = n.meta.get("blob")
            if blob is not None:
                self.blobs[blob] = result
        return result


def run_blobs(module: fx.GraphModule, *args: torch.Tensor, **kwargs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``module`` and return every blob's final value by Caffe blob name (inputs included)."""
    recorder = _Recorder(module)
    with torch.no_grad():
        ordered = _order_inputs(module, args, kwargs)
        recorder.run(*ordered)
    for blob, node_name in module.meta.get("blob_aliases", {}).items():
        if node_name in recorder.by_node:
            recorder.blobs[blob] = recorder.by_node[node_name]
    return recorder.blobs


def _order_inputs(module: fx.GraphModule, args: Sequence[torch.Tensor], kwargs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    ordered = list(args)
    for p in placeholders[len(args) :]:
        blob = p.meta.get("blob")
        if p.target in kwargs:
            ordered.append(kwargs[p.target])
        elif blob in kwargs:
            ordered.append(kwargs[blob])
        else:
            raise Proto2TorchError(f"missing net input '{blob}'")
    return ordered
