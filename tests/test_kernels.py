"""proto2torch's own CPU kernels: Winograd F(4x4, 3x3) against PyTorch's convolution (in float64) and
against Caffe's outputs, the small-batch fully connected layer against ``F.linear``, both swapped into
modules (a ReLU folded in where it is the convolution's only reader), measured by ``optimize`` as its
``kernels`` candidate, and never written where no file format carries them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import proto2torch
from proto2torch import kernels
from proto2torch import optimization as optimize_module
from proto2torch.conformance import Case, recipe_layers
from proto2torch.export import ExportError

from .conftest import CASES_DIR


def _conv(c: int, k: int, padding: int, bias: bool, seed: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(c, k, 3, padding=padding, bias=bias).eval()


@pytest.mark.parametrize(
    ("n", "c", "k", "h", "w", "padding", "bias", "relu"),
    [
        (1, 16, 16, 100, 100, 1, True, True),  # many tiles, small weights: each thread runs its own blocks
        (1, 64, 512, 14, 14, 1, True, False),  # few tiles, large weights: the threads share the 36 products
        (3, 70, 33, 9, 13, 0, False, True),  # channels past one chunk of 64, outputs not a multiple of 16
        (2, 16, 20, 7, 5, 2, True, False),  # partial tiles at the edges, wide padding
        (1, 24, 8, 3, 3, 0, True, True),  # a single output pixel
        (2, 3, 64, 17, 19, 1, True, True),  # three input channels (an image): no full group of eight
    ],
)
def test_winograd_convolution_equals_torchs(n, c, k, h, w, padding, bias, relu) -> None:
    conv = _conv(c, k, padding, bias, seed=n * 1000 + c + k)
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(h * w))
    with torch.no_grad():
        want = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double(), padding=padding)
        want = want.clamp_min(0) if relu else want
        got = kernels.WinogradConv2d(conv, relu)(x)
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert float((got.double() - want).abs().max()) <= 1e-5 * float(want.abs().max())


def test_winograd_refuses_what_it_cannot_compute() -> None:
    conv = _conv(16, 16, 1, True, seed=0)
    module = kernels.WinogradConv2d(conv)
    with pytest.raises(RuntimeError, match=r"transformed weights \[36, K/16, 272\]"):
        module(torch.randn(1, 17, 8, 8))
    with pytest.raises(RuntimeError, match="would be empty"):
        kernels.WinogradConv2d(_conv(16, 16, 0, True, seed=0))(torch.randn(1, 16, 2, 2))  # _conv's are in eval mode
    with pytest.raises(RuntimeError, match="for inference"):
        module(torch.randn(1, 16, 8, 8, requires_grad=True))
    with pytest.raises(RuntimeError, match="for inference"):
        module.train()(torch.randn(1, 16, 8, 8))  # training it would leave the convolution's weights without gradients
    module.eval()(torch.randn(1, 16, 8, 8))
    assert not any(
        kernels.eligible(m)
        for m in (
            nn.Conv2d(16, 16, 3, stride=2),
            nn.Conv2d(16, 16, 3, dilation=2),
            nn.Conv2d(16, 16, 3, groups=2),
            nn.Conv2d(16, 16, 1),
            nn.Conv2d(16, 16, 3, padding_mode="reflect"),
            nn.Conv2d(16, 16, 3).double(),
        )
    )


def test_a_missing_compiler_is_a_typed_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(kernels.KernelUnavailable, match="compiling gemv.cpp with .*no-such-compiler failed"):
        kernels._build("gemv")
    assert not list((tmp_path / "proto2torch" / "kernels").glob("*.so"))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.relu_a = nn.Conv2d(3, 16, 3, padding=1, stride=2), nn.ReLU()  # stride 2: stays PyTorch's
        self.b, self.relu_b = nn.Conv2d(16, 32, 3, padding=1), nn.ReLU()  # ReLU its only reader: folded in
        self.c, self.relu_c = nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()  # also read by the sum: not folded

    def forward(self, x):  # noqa: ANN001, ANN201
        b = self.relu_b(self.b(self.relu_a(self.a(x))))
        c = self.c(b)
        return self.relu_c(c) + c


def test_with_kernels_swaps_eligible_convolutions_and_folds_a_lone_relu() -> None:
    torch.manual_seed(0)
    module = fx.symbolic_trace(_Net().eval())
    swapped, count = kernels.with_kernels(module)
    assert count == 2 and isinstance(module.get_submodule("b"), nn.Conv2d)
    assert isinstance(swapped.get_submodule("a"), nn.Conv2d) and isinstance(swapped.get_submodule("b"), kernels.WinogradConv2d) and swapped.get_submodule("b").relu
    assert not swapped.get_submodule("c").relu and not hasattr(swapped, "relu_b") and hasattr(swapped, "relu_c")
    assert swapped.get_submodule("a").weight is module.get_submodule("a").weight  # shared, not copied
    x = torch.randn(2, 3, 11, 10)
    with torch.no_grad():
        assert torch.allclose(swapped(x), module(x), rtol=1e-5, atol=1e-5)
    plain, count = kernels.with_kernels(nn.Sequential(nn.Conv2d(16, 16, 3), nn.ReLU()))
    assert count == 1 and isinstance(plain[0], kernels.WinogradConv2d) and not plain[0].relu and isinstance(plain[1], nn.ReLU)


def test_optimize_measures_the_kernels_candidate_against_caffes_outputs() -> None:
    """SqueezeNet 1.1's 3x3 expand convolutions run by the kernel stay within verify's tolerance of
    what real Caffe computed, and ``optimize`` reports the candidate like any other."""
    case = Case.load(CASES_DIR / "net_squeezenet11")
    inputs = case.inputs()
    net = proto2torch.load_net(case.prototxt, {k: v.shape for k, v in inputs.items()})
    net = proto2torch.with_weights(net, {layer: blobs for layer, _, blobs in recipe_layers(case.recipe)})
    module = proto2torch.to_torch(net)
    x = [torch.from_numpy(v) for v in inputs.values()]
    fast = proto2torch.optimize(module, *x, candidates=("eager", "kernels"))
    entry = next(c for c in fast.report if c.name == "kernels")
    assert entry.skipped is None and entry.ms is not None and entry.error is not None and entry.error <= 1, fast.table()
    swapped = optimize_module._own_kernels(module, channels_last=True)
    assert sum(isinstance(m, kernels.WinogradConv2d) for m in swapped.modules()) == 8
    with torch.no_grad():
        got = swapped(*x)
    reference = case.reference()
    from proto2torch.verify import error_ratio

    for blob, value in (got.items() if isinstance(got, dict) else [(net.outputs and net.values[net.outputs[0]].blob, got)]):
        assert error_ratio(reference[blob], value.detach().numpy(), 1e-4) <= 1, blob
    chosen = proto2torch.optimize(module, *x, candidates=("kernels",))
    assert not chosen(*x).requires_grad  # callable outside torch.no_grad(): the kernels candidates are for inference
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1))
    skipped = proto2torch.optimize(plain, torch.randn(1, 3, 8, 8), candidates=("eager", "kernels"))
    assert next(c for c in skipped.report if c.name == "kernels").skipped == (
        "could not build: LookupError: no 3x3 stride-1 convolution or fully connected layer to run with them"
    )
    assert all(p.is_contiguous() for p in module.parameters())  # the caller's weights keep their layout


def test_save_optimized_writes_the_fastest_compiled_candidate_when_the_kernels_win(tmp_path) -> None:
    case = Case.load(CASES_DIR / "layer_bn_scale")
    inputs = case.inputs()
    net = proto2torch.load_net(case.prototxt, {k: v.shape for k, v in inputs.items()})
    module = proto2torch.to_torch(proto2torch.with_weights(net, {layer: blobs for layer, _, blobs in recipe_layers(case.recipe)}))
    x = [torch.from_numpy(v) for v in inputs.values()]
    fast = proto2torch.optimize(module, *x, candidates=("torchscript",))
    fast.choice = "kernels"  # the case where the kernels were the fastest
    saved = optimize_module.save_optimized(fast, module, *x, stem=tmp_path / "net")
    assert saved.choice == "torchscript" and saved.path == tmp_path / "net.optimized.pt" and saved.error is not None and saved.error <= 1
    assert saved.passed_over == ["kernels runs proto2torch's kernels, compiled in this process: no file torch loads alone carries them"]
    alone = proto2torch.optimize(module, *x, candidates=("eager",))
    alone.choice = "kernels"
    with pytest.raises(ExportError, match="kernels, the fastest path, runs proto2torch's kernels.*; no compiled candidate"):
        optimize_module.save_optimized(alone, module, *x, stem=tmp_path / "alone")
    assert not list(tmp_path.glob("alone*"))


def test_transformed_weights_survive_a_change_of_memory_format() -> None:
    conv = _conv(16, 16, 1, True, seed=3)
    module = nn.Sequential(kernels.WinogradConv2d(conv)).to(memory_format=torch.channels_last)
    x = torch.randn(1, 16, 9, 9)
    with torch.no_grad():
        assert np.allclose(module(x).numpy(), conv(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("batch", "features", "axis"), [(1, 25, None), (3, 40, None), (4, 17, None), (5, 33, None), (2, 24, 1)])
def test_small_batch_linear_equals_torchs(batch, features, axis) -> None:
    """Batches of one to four rows go to the kernel (four rows at a time, and the rows and features left
    over), more to F.linear; Caffe's InnerProduct is flattened from its axis first; a gradient is F.linear's."""
    from proto2torch.backend.caffe_ops import InnerProduct

    torch.manual_seed(batch)
    layer = InnerProduct(features, 7, axis=axis) if axis is not None else nn.Linear(features, 7)
    fast = kernels.FastLinear(layer)
    x = torch.randn(batch, 2, 3, 4) if axis is not None else torch.randn(batch, features)
    with torch.no_grad():
        want = layer(x)
        got = fast(x)
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert fast.weight is layer.weight
    if batch <= 4:
        with torch.no_grad():
            direct = torch.ops.proto2torch.small_batch_linear(torch.flatten(x, 1), layer.weight, layer.bias)
        assert torch.allclose(direct, want, rtol=1e-5, atol=1e-5)
    fast(x).sum().backward()  # the layer's weights require gradients: F.linear's path
    assert layer.weight.grad is not None
    assert kernels.linear_eligible(layer) and not kernels.linear_eligible(nn.Linear(3, 3).double())
    with pytest.raises(RuntimeError, match=r"\[1..4, in\] float32"):
        torch.ops.proto2torch.small_batch_linear(torch.randn(5, features), layer.weight, layer.bias)


def test_inductor_compiles_around_the_kernels() -> None:
    """``kernels_inductor``: torch.compile traces through both kernels (their output shapes are
    registered) and calls them as they are; the result stays within tolerance and is reported."""
    torch.manual_seed(1)
    module = fx.symbolic_trace(nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 25, 10)).eval())
    x = torch.randn(1, 16, 10, 10)
    fast = proto2torch.optimize(module, x, candidates=("kernels", "kernels_inductor"))
    entry = next(c for c in fast.report if c.name == "kernels_inductor")
    assert entry.skipped is None and entry.error is not None and entry.error <= 1, fast.table()
    with torch.no_grad():  # inference: with gradients wanted, the fully connected layer is F.linear's
        traced = torch.export.export(optimize_module._own_kernels(module, channels_last=True), (x.contiguous(memory_format=torch.channels_last),))
    called = {str(n.target) for n in traced.graph.nodes if n.op == "call_function"}
    assert {"proto2torch.winograd_conv.default", "proto2torch.small_batch_linear.default"} <= called


def test_the_kernels_without_avx2_compute_the_same(tmp_path) -> None:
    """Built for a CPU without AVX2 (plain x86-64: the portable loops a machine without it compiles),
    under a namespace of their own, both kernels give what PyTorch gives."""
    from importlib import resources

    flags = tuple("-march=x86-64" if f == "-march=native" else f for f in kernels._FLAGS)
    for name in ("winograd", "gemv"):
        source = resources.files(kernels).joinpath(f"{name}.cpp").read_text()
        source = source.replace("TORCH_LIBRARY_FRAGMENT(proto2torch,", "TORCH_LIBRARY_FRAGMENT(proto2torch_portable,")
        source = source.replace("TORCH_LIBRARY_IMPL(proto2torch,", "TORCH_LIBRARY_IMPL(proto2torch_portable,")
        assert "(proto2torch_portable," in source
        kernels._compile(name, source, tmp_path / f"{name}.so", flags)
        torch.ops.load_library(str(tmp_path / f"{name}.so"))
    for n, c, k, h, w, padding in [(2, 16, 20, 9, 13, 1), (1, 70, 33, 7, 5, 0), (3, 3, 48, 30, 31, 2)]:
        conv = _conv(c, k, padding, True, seed=c)
        x = torch.randn(n, c, h, w)
        with torch.no_grad():
            want = conv(x).clamp_min(0)
            got = torch.ops.proto2torch_portable.winograd_conv(x, kernels.winograd_weights(conv.weight), conv.bias, k, padding, padding, True)
        assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())
    x, weight, bias = torch.randn(3, 37), torch.randn(10, 37), torch.randn(10)
    assert torch.allclose(torch.ops.proto2torch_portable.small_batch_linear(x, weight, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
