"""CPU kernels of proto2torch's own, compiled on this machine the first time one is needed.

* ``winograd.cpp``: a Winograd F(4×4, 3×3) convolution (3×3 kernels, stride 1, no dilation, one
  group): 36 multiply-adds per 16 outputs and input channel where a direct convolution does 144, which
  is how OpenCV's dnn runs VGG's convolutions faster than oneDNN's direct ones;
* ``gemv.cpp``: a fully connected layer at batch 1 to 4, a matrix-vector product that streams the
  weights once at the memory's speed (MKL's ``sgemv`` takes about 1.6× as long on this AMD CPU).

:func:`with_kernels` puts them in place of a module's eligible ``nn.Conv2d``\\ s and ``nn.Linear``\\ s;
``proto2torch.optimize`` measures that as its ``kernels`` candidate and keeps it only where it is
faster and its outputs stay within tolerance.

The source is built with the C++ compiler PyTorch's own extensions use (``$CXX``, else ``c++``), for
this CPU (``-march=native``), against the installed torch, into ``$XDG_CACHE_HOME/proto2torch/kernels``
(a name derived from the source, the flags, torch's version and the CPU's features, so a change of any
of them builds afresh); the library is renamed into place only once complete.  No compiler, or a
failed build, is a :class:`KernelUnavailable` naming the cause.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path

import torch
from torch import nn

_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
"""F(4, 3)'s kernel transform (Lavin & Gray): U = G g Gᵀ for each 3×3 kernel g."""

_FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=c++20", "-shared", "-fPIC")
_ABI = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
"""The C++ library ABI the installed torch was built with; the kernels must match it."""
_SOURCES = ("winograd", "gemv")
_loaded: list[str] = []


class KernelUnavailable(RuntimeError):
    """A kernel could not be built or loaded here (no compiler, a failed build): the caller keeps PyTorch's own."""


def load_kernels() -> list[str]:
    """Build (once per machine) and load every kernel; the paths of the libraries loaded."""
    if not _loaded:
        libraries = [_build(name) for name in _SOURCES]
        for library in libraries:
            try:
                torch.ops.load_library(str(library))
            except OSError as exc:
                raise KernelUnavailable(f"could not load {library}: {exc}") from exc
        _register_shapes()
        _loaded.extend(map(str, libraries))
    return _loaded


def _register_shapes() -> None:
    """What each kernel returns, for tracing without running it (``torch.compile``, ``torch.export``)."""

    @torch.library.register_fake("proto2torch::winograd_conv")
    def _(x, u, bias, K, pad_h, pad_w, relu):  # noqa: ANN001, ANN202, N803
        n, _, h, w = x.shape
        return x.new_empty((n, K, h + 2 * pad_h - 2, w + 2 * pad_w - 2)).contiguous(memory_format=torch.channels_last)

    @torch.library.register_fake("proto2torch::small_batch_linear")
    def _(x, w, bias):  # noqa: ANN001, ANN202
        return x.new_empty((x.shape[0], w.shape[0]))


def _build(name: str) -> Path:
    """The compiled library of kernel ``name``, built now unless this machine has it already."""
    source = resources.files(__package__).joinpath(f"{name}.cpp").read_text()
    compiler = _compiler()
    key = hashlib.sha256("\0".join([source, compiler, *_FLAGS, _ABI, torch.__version__, _cpu_features()]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "proto2torch" / "kernels"
    library = cache / f"{name}-{key}.so"
    if library.exists():
        return library
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        print(f"proto2torch: compiling the {name} kernel for this machine (once; cached in {cache})", file=sys.stderr, flush=True)
        out = Path(work) / library.name
        _compile(f"{name}.cpp", source, out, _FLAGS)
        os.replace(out, library)  # whole or not at all; a concurrent build writes the same bytes
    return library


def _compiler() -> str:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        raise KernelUnavailable("no C++ compiler found (set CXX, or install g++)")
    return compiler


def _compile(name: str, source: str, out: Path, flags: tuple[str, ...]) -> None:
    """``source`` compiled with ``flags`` against the installed torch into the library ``out``."""
    from torch.utils.cpp_extension import include_paths

    compiler = _compiler()
    torch_lib = Path(torch.__file__).parent / "lib"
    src = out.with_suffix(".cpp")
    src.write_text(source)
    command = [compiler, *flags, _ABI, *(f"-I{p}" for p in include_paths()),
               str(src), "-o", str(out), f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-lc10", "-ltorch_cpu", "-ltorch"]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelUnavailable(f"compiling {name} with {compiler} failed: {exc}") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()[-1:]
        raise KernelUnavailable(f"compiling {name} with {compiler} failed: {lines[0] if lines else f'exit {done.returncode}'}")


def _cpu_features() -> str:
    """The CPU's model and feature flags (``-march=native`` builds for them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    wanted = ("model name", "flags", "Features")
    return "\n".join(sorted({line for line in text.splitlines() if line.split(":")[0].strip() in wanted}))


def winograd_weights(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` [K, C, 3, 3] transformed (in float64) and packed as the kernel reads it: [36, ⌈K/16⌉, C·16]
    (three dimensions, so that ``module.to(memory_format=...)`` leaves it alone)."""
    out_channels, in_channels = weight.shape[:2]
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ai,kcij,bj->abck", g, weight.detach().double(), g).reshape(36, in_channels, out_channels)
    padded = -(-out_channels // 16) * 16
    u = nn.functional.pad(u, (0, padded - out_channels)).float()
    return u.reshape(36, in_channels, padded // 16, 16).permute(0, 2, 1, 3).reshape(36, padded // 16, in_channels * 16).contiguous()


def eligible(module: nn.Module) -> bool:
    """Whether ``module`` is a convolution the Winograd kernel computes: 3×3, stride 1, no dilation,
    one group, zero padding, float32.  Any number of input channels: VGG's first layer (3 → 64 at 224²)
    takes 1.6 ms with it against oneDNN's 2.4 here."""
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (3, 3)
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
        and module.weight.dtype == torch.float32
    )


class WinogradConv2d(nn.Module):
    """A 3×3 convolution (optionally followed by a ReLU) run by the Winograd kernel, in channels_last."""

    def __init__(self, conv: nn.Conv2d, relu: bool = False):
        super().__init__()
        load_kernels()
        self.out_channels = conv.out_channels
        self.padding = tuple(conv.padding)
        self.relu = relu
        self.training = conv.training  # an eval-mode net stays one
        self.register_buffer("transformed", winograd_weights(conv.weight))
        self.register_buffer("bias", conv.bias.detach().contiguous() if conv.bias is not None else torch.empty(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.training):  # its weights are a transformed copy: no gradient reaches the layer's
            raise RuntimeError("WinogradConv2d is for inference: it has no backward (optimize() returns it for inference only; call it in eval mode or under torch.no_grad())")
        return torch.ops.proto2torch.winograd_conv(x, self.transformed, self.bias, self.out_channels, self.padding[0], self.padding[1], self.relu)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, padding={self.padding}, relu={self.relu}"


class FastLinear(nn.Module):
    """``nn.Linear`` (or Caffe's InnerProduct: flattened from ``axis`` first) whose batches of one to four
    float32 rows go to the streaming matrix-vector kernel; anything else to ``F.linear``.  Shares the
    layer's weights."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        load_kernels()
        self.weight, self.bias = linear.weight, linear.bias
        self.axis: int | None = getattr(linear, "axis", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is not None:
            x = torch.flatten(x, self.axis)
        small = x.dim() == 2 and x.shape[0] <= 4 and x.dtype == torch.float32 and x.device.type == "cpu"
        if not small or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return nn.functional.linear(x, self.weight, self.bias)
        bias = self.bias.detach() if self.bias is not None else torch.empty(0)
        return torch.ops.proto2torch.small_batch_linear(x, self.weight.detach(), bias)


def linear_eligible(module: nn.Module) -> bool:
    """An ``nn.Linear`` or Caffe's InnerProduct with float32 weights (others compute something else)."""
    from ..backend.caffe_ops import InnerProduct

    return type(module) in (nn.Linear, InnerProduct) and module.weight.dtype == torch.float32 and module.weight.is_contiguous()


def with_kernels(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``module`` with each eligible ``nn.Conv2d`` run by :class:`WinogradConv2d` and each fully
    connected layer by :class:`FastLinear`, and how many layers were swapped.

    In a ``torch.fx.GraphModule`` a ReLU module that is a convolution's only reader is folded into it.
    Weights not transformed are shared with ``module``, never copied.
    """
    from torch import fx

    from ..backend.swap import copy_sharing_weights, replace, swap_each

    clone = copy_sharing_weights(module)
    swapped = swap_each(clone, linear_eligible, FastLinear)
    if not isinstance(clone, fx.GraphModule):
        return clone, swapped + swap_each(clone, eligible, WinogradConv2d)
    calls = Counter(node.target for node in clone.graph.nodes if node.op == "call_module")
    for node in list(clone.graph.nodes):
        if node.op != "call_module" or not eligible(clone.get_submodule(node.target)):
            continue
        users = list(node.users)
        relu = calls[node.target] == 1 and len(users) == 1 and users[0].op == "call_module" and type(clone.get_submodule(users[0].target)) is nn.ReLU
        replace(clone, node.target, WinogradConv2d(clone.get_submodule(node.target), relu))
        if relu:
            users[0].replace_all_uses_with(node)
            clone.graph.erase_node(users[0])
        swapped += 1
    clone.graph.lint()
    clone.recompile()
    clone.delete_all_unused_submodules()
    return clone, swapped
