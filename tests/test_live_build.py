"""The live back end clones modules it has built before with the same arguments (issue 14: the
fixed cost of building hundreds of modules).  A clone must be indistinguishable from a module
built by its own ``__init__``: same class, arguments and tensors, and nothing shared with the
module it was cloned from — no tensor, no hook, no container."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proto2torch.api import load_net, with_weights
from proto2torch.backend.live import build_graph_module, lower_node, make_module
from proto2torch.backend.lowering import ModuleOp
from proto2torch.conformance import Case, recipe_layers

from .conftest import CASES_DIR


@pytest.fixture(scope="module")
def resnet():
    case = Case.load(CASES_DIR / "net_resnet50")
    net = with_weights(load_net(case.prototxt), {layer: blobs for layer, _, blobs in recipe_layers(case.recipe)})
    return net, build_graph_module(net)


def test_a_clone_equals_a_module_built_by_its_init(resnet) -> None:
    net, module = resnet
    seen = 0
    for node in net.nodes:
        if node.is_input:
            continue
        op = lower_node(net, node)
        if not isinstance(op, ModuleOp):
            continue
        built = module.get_submodule(_target(module, node.name))
        fresh = make_module(op)  # no prototypes: the module's own __init__
        assert type(built) is type(fresh) and built.extra_repr() == fresh.extra_repr() and not built.training
        assert built.state_dict().keys() == fresh.state_dict().keys()
        for key, value in fresh.state_dict().items():
            assert torch.equal(built.state_dict()[key], value), (node.name, key)
        seen += 1
    assert seen > 150


def _target(module: torch.nn.Module, layer: str) -> str:
    return next(n.target for n in module.graph.nodes if n.op == "call_module" and n.meta.get("layer") == layer)


def test_clones_share_no_tensor_hook_or_container(resnet) -> None:
    _, module = resnet
    convs = [m for m in module.modules() if type(m) is torch.nn.Conv2d]
    same = [m for m in convs if m.weight.shape == convs[-1].weight.shape]
    assert len(same) >= 3  # res5b/res5c's 3x3 convolutions: built once, then cloned
    tensors = [t for m in module.modules() for t in [*m._parameters.values(), *m._buffers.values()] if t is not None]
    assert len({id(t) for t in tensors}) == len(tensors)
    assert len({t.data_ptr() for t in tensors if t.numel()}) == len([t for t in tensors if t.numel()])
    a, b = same[-2], same[-1]
    for name, value in vars(a).items():
        if isinstance(value, (dict, set, list)):
            assert value is not vars(b)[name], name
    calls = []
    a.register_forward_hook(lambda *args: calls.append(1))
    b(torch.zeros(1, *b.weight.shape[1:2], 7, 7))
    assert calls == []
    a(torch.zeros(1, *a.weight.shape[1:2], 7, 7))
    assert calls == [1]
    with torch.no_grad():
        b.weight.zero_()
    assert a.weight.abs().sum() > 0


def test_a_module_with_tensors_of_its_own_making_is_never_cloned() -> None:
    """PReLU without weights in the state keeps the ones its __init__ made: two such layers must
    not end up with one Parameter."""
    prototypes: dict = {}
    op = ModuleOp(torch.nn.PReLU, (4,))
    first, second = make_module(op, prototypes), make_module(op, prototypes)
    assert first.weight is not second.weight and not prototypes
    state = ModuleOp(torch.nn.PReLU, (4,), state={"weight": np.full(4, 0.5, np.float32)})
    third, fourth = make_module(state, prototypes), make_module(state, prototypes)
    assert len(prototypes) == 1 and third.weight is not fourth.weight and torch.equal(third.weight, fourth.weight)
