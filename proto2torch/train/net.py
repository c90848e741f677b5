"""A Caffe train net as a trainable PyTorch module.

:func:`trainable` builds the TRAIN-phase net with either back end and wraps it in a
:class:`TrainableNet`, whose ``forward`` returns the objective Caffe's solver minimises
(the sum over tops of ``loss_weight × top``; loss layers weigh their first top 1 unless
told otherwise) together with every named output top.  It also knows, for each learned
Caffe blob, the tensor that holds it (in Caffe's layout up to a reshape), its ``lr_mult``
and ``decay_mult`` (a shared blob takes the owner's, or the first sharer's that sets
them, as Caffe's ``Net::AppendParam`` does), and which blobs are shared or frozen: what
the solver, snapshots and solver states need.

Layers keep their train-time behaviour in their own lowering: BatchNorm normalises by
batch statistics and updates Caffe's three blobs (``CaffeBatchNorm``), Dropout scales by
``1 / (1 - ratio)`` (its random mask cannot be Caffe's), ContrastiveLoss back-propagates
Caffe's gradient, ``propagate_down: false`` stops the gradient at that bottom, and a blob
with ``lr_mult: 0`` gets no gradient at all (it still passes gradients through).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..backend.live import build_graph_module, lower_node
from ..backend.lowering import ModuleOp
from ..backend.names import NameTable
from ..errors import LayerParamError, SolverError
from ..ir.graph import Net, Node
from ..layers.registry import lookup


@dataclass(frozen=True)
class LearnedBlob:
    """One learned Caffe blob of a train net."""

    layer: str
    index: int
    key: str
    """The state_dict key of the tensor holding it."""
    shape: tuple[int, ...]
    """Its shape in Caffe's layout."""
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    owner: tuple[str, int] | None = None
    """(layer, index) of the blob it shares (``param { name }``); None for an owner."""
    buffer: bool = False
    """Held in a buffer (BatchNorm's statistics): changed by the forward pass, never by the solver."""

    @property
    def frozen(self) -> bool:
        return self.buffer or self.lr_mult == 0


class TrainOutput(NamedTuple):
    loss: torch.Tensor
    """The objective: sum of loss_weight x top over the weighted tops."""
    tops: dict[str, torch.Tensor]
    """Every output top by blob name (loss tops unweighted, as Caffe writes them)."""


class TrainableNet(nn.Module):
    """A train net: ``forward(*inputs)`` → :class:`TrainOutput`; the layers are ``self.net``."""

    def __init__(self, net: Net, module: nn.Module, loss_weights: Mapping[str, float], learned: list[LearnedBlob], backend: str):
        super().__init__()
        self.net = module
        self.ir = net
        self.loss_weights = dict(loss_weights)
        self.learned = learned
        self.backend = backend
        self.input_names = [net.values[v].blob for v in net.inputs]
        self.output_names = [net.values[v].blob for v in net.outputs]

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> TrainOutput:
        return self.objective(self._outputs(self.net(*self._ordered(args, kwargs))))

    def _ordered(self, args: tuple[torch.Tensor, ...], kwargs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        ordered = list(args)
        for name in self.input_names[len(args) :]:
            if name not in kwargs:
                raise SolverError(f"missing net input '{name}' (the net's inputs: {', '.join(self.input_names)})")
            ordered.append(kwargs[name])
        return ordered

    def _outputs(self, result: Any) -> dict[str, torch.Tensor]:
        return result if isinstance(result, dict) else {self.output_names[0]: result}

    def objective(self, tops: dict[str, torch.Tensor]) -> TrainOutput:
        total: torch.Tensor | None = None
        for blob, weight in self.loss_weights.items():
            term = tops[blob].sum() * weight if weight != 1.0 else tops[blob].sum()
            total = term if total is None else total + term
        assert total is not None
        return TrainOutput(total, tops)

    # --- the learned blobs ----------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """state_dict key → the live tensor (parameters and buffers; shared ones once)."""
        out = dict(self.net.named_parameters(remove_duplicate=False))
        out.update(dict(self.net.named_buffers(remove_duplicate=False)))
        return out

    def owners(self) -> list[LearnedBlob]:
        """Caffe's ``learnable_params``: every learned blob that is not a sharer, in net order."""
        return [b for b in self.learned if b.owner is None]

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: one per (lr_mult, decay_mult), parameters in Caffe's order; frozen blobs left out."""
        tensors = self.tensors()
        groups: dict[tuple[float, float], list[torch.Tensor]] = {}
        for blob in self.owners():
            if not blob.frozen:
                groups.setdefault((blob.lr_mult, blob.decay_mult), []).append(tensors[blob.key])
        return [{"params": params, "lr_mult": lr, "decay_mult": decay} for (lr, decay), params in groups.items()]

    def caffe_blobs(self) -> dict[str, list[np.ndarray]]:
        """Layer name → its blobs now, in Caffe's layout (sharers repeat their owner's values)."""
        tensors = self.tensors()
        out: dict[str, list[np.ndarray]] = {}
        for blob in self.learned:
            value = tensors[blob.key].detach().cpu().numpy().reshape(blob.shape).astype(np.float32, copy=True)
            out.setdefault(blob.layer, []).append(value)
        return out

    def load_caffe_blobs(self, blobs: Mapping[str, list[np.ndarray]]) -> None:
        """Set the learned blobs from Caffe arrays (e.g. a caffemodel of this net)."""
        tensors = self.tensors()
        with torch.no_grad():
            for blob in self.owners():
                arrays = blobs.get(blob.layer)
                if arrays is None or blob.index >= len(arrays):
                    raise SolverError(f"no values for blob {blob.index} of layer '{blob.layer}'")
                target = tensors[blob.key]
                array = np.asarray(arrays[blob.index], np.float32)
                if array.size != target.numel():
                    raise SolverError(f"layer '{blob.layer}' blob {blob.index}: {array.size} values for a blob of shape {list(blob.shape)}")
                target.copy_(torch.from_numpy(array.reshape(target.shape)))


def loss_weights(net: Net) -> dict[str, float]:
    """Blob name → its weight in the objective, for every top whose weight is not zero."""
    out: dict[str, float] = {}
    for node in net.nodes:
        spec = lookup(node.type)
        given = node.msg.all("loss_weight") if node.msg is not None else []
        if given:
            if len(given) != len(node.outputs):
                raise LayerParamError(
                    f"loss_weight is given {len(given)} times for {len(node.outputs)} tops; give it once per top or not at all",
                    node.msg.span("loss_weight") if node.msg is not None else node.span,
                    node.name,
                )
            weights = [float(w) for w in given]
        else:
            weights = [1.0] if spec is not None and spec.loss and node.outputs else []
        for value, weight in zip(node.outputs, weights):
            if weight != 0:
                blob = net.values[value].blob
                out[blob] = out.get(blob, 0.0) + weight
    return out


def _param_specs(node: Node) -> list[Any]:
    return node.msg.all("param") if node.msg is not None else []


def learned_blobs(net: Net, names: NameTable, ops: Mapping[int, ModuleOp], module: nn.Module) -> list[LearnedBlob]:
    """Every learned blob of ``net`` with where it lives in ``module`` and how the solver treats it."""
    buffers = {k for k, _ in module.named_buffers(remove_duplicate=False)}
    owners: dict[str, tuple[str, int]] = {}
    owner_mults: dict[tuple[str, int], list[float | None]] = {}
    pending: list[tuple[Node, int, str, tuple[int, ...], tuple[str, int] | None]] = []
    for index, node in enumerate(net.nodes):
        if not node.blobs:
            continue
        op = ops.get(index)
        attrs = op.blob_params if isinstance(op, ModuleOp) else ()
        specs = _param_specs(node)
        for i, array in enumerate(node.blobs):
            attr = attrs[i] if i < len(attrs) else None
            if attr is None:
                raise LayerParamError(
                    f"{node.type} blob {i} has no tensor of its own in the PyTorch module (it is transformed for inference), "
                    "so this layer cannot be trained here",
                    node.span,
                    node.name,
                )
            spec = specs[i] if i < len(specs) else None
            name = spec.get("name") if spec is not None and spec.has("name") else None
            owner = None
            if name:
                if name in owners:
                    owner = owners[name]
                else:
                    owners[name] = (node.name, i)
            pending.append((node, i, f"{names.modules[index]}.{attr}", tuple(array.shape), owner))
            key = owner or (node.name, i)
            mults = owner_mults.setdefault(key, [None, None])
            for slot, field in enumerate(("lr_mult", "decay_mult")):
                if spec is not None and spec.has(field):
                    value = float(spec.get(field))
                    if mults[slot] is None:
                        mults[slot] = value
                    elif owner is not None and mults[slot] != value:
                        raise LayerParamError(
                            f"param '{name}' is shared with layer '{owner[0]}' but sets {field} {value}, where it is {mults[slot]}",
                            spec.span(field),
                            node.name,
                        )
    out = []
    for node, i, key, shape, owner in pending:
        lr, decay = owner_mults[owner or (node.name, i)]
        # a buffer (BatchNorm's statistics) is never the solver's, whatever the param specs say: BVLC master masks them too
        out.append(LearnedBlob(node.name, i, key, shape, 1.0 if lr is None else lr, 1.0 if decay is None else decay, owner, key in buffers))
    return out


def _train_ready(net: Net) -> tuple[Net, dict[str, float]]:
    """The net with its weighted loss tops among its outputs, and their weights."""
    if net.phase != "TRAIN":
        raise SolverError("the net was read in the TEST phase; training needs the TRAIN phase (load it with phase='TRAIN')")
    weights = loss_weights(net)
    if not weights:
        raise SolverError("the net has no loss: no top has a loss_weight (loss layers weigh their first top 1)")
    latest = net.latest()
    extra = tuple(latest[b] for b in weights if latest[b] not in net.outputs)
    return net.replace(outputs=net.outputs + extra), weights


def trainable(net: Net, backend: str = "live", workdir: str | Path | None = None) -> TrainableNet:
    """A :class:`TrainableNet` for a TRAIN-phase ``net`` with weights, built by the ``live``
    (torch.fx) or ``source`` (emitted file) back end; in train mode, frozen blobs without gradients."""
    net, weights = _train_ready(net)
    names = NameTable.for_net(net)
    ops = {i: lower_node(net, node) for i, node in enumerate(net.nodes) if node.blobs}
    if backend == "live":
        module: nn.Module = build_graph_module(net, names)
    elif backend == "source":
        from ..backend.source import load_emitted

        module = load_emitted(net, workdir)
    else:
        raise SolverError(f"unknown back end {backend!r}: choose live or source")
    learned = learned_blobs(net, names, ops, module)
    tensors = dict(module.named_parameters(remove_duplicate=False))
    for blob in learned:
        if blob.key in tensors:
            tensors[blob.key].requires_grad_(not blob.frozen)
    wrapper = TrainableNet(net, module, weights, learned, backend)
    return wrapper.train()
