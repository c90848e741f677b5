"""``proto2torch.optimize(module, *example_inputs)``: the fastest way this machine runs a module, chosen
by measuring, with its outputs kept within ``rtol`` of the module's own.

Candidates, each built, checked against the module's outputs on the example inputs and timed there:

* ``eager``: the module as it is (the baseline);
* ``channels_last``: the same with NHWC memory (oneDNN's preferred layout on CPUs);
* ``kernels``: channels_last, with proto2torch's own CPU kernels (:mod:`proto2torch.kernels`, compiled
  for this machine on first use): every 3×3 stride-1 convolution by a Winograd F(4×4, 3×3) (a quarter
  of the multiplications, which is what VGG's convolutions need to run faster than oneDNN's direct
  ones; a ReLU that only reads the convolution is folded into it), and fully connected layers at
  batch 1 to 4 by a matrix-vector product that streams the weights at the memory's speed;
* ``torchscript``: traced, frozen (weights folded into the graph) and ``optimize_for_inference``d, which
  folds BatchNorm/Scale arithmetic into convolutions;
* ``inductor``: ``torch.compile`` with inductor's ``freezing`` (constant folding, convolution+BN+ReLU
  fusion, weight prepacking), in whichever memory layout ran faster eagerly;
* ``kernels_inductor``: the ``kernels`` module compiled the same way: inductor fuses what lies between
  proto2torch's kernels and calls them as they are (GoogLeNet at batch 1: 23.5 ms against inductor's
  28.1 here).

Every candidate runs the module with torch's ``nn.LocalResponseNorm`` (Caffe's LRN) swapped for
:class:`FastLRN`, the same arithmetic without a vectorised ``pow`` or a 5-d pooling (GoogLeNet's two
LRNs: 2.4 → 1.2 ms compiled, 14 → 5 ms eager in channels_last), in a copy that shares the weights.

A candidate that fails to build (a data-dependent layer, no C++ compiler for inductor) or whose
outputs move by more than ``rtol`` (relative to each output's magnitude) is reported and skipped.
The result is the fastest candidate, wrapped: ``result.report`` lists every candidate with its time
per call, its build (compile) time and why it was skipped, and ``result.choice`` names the winner.
Compile time is reported, never hidden: inductor's first call can take seconds to minutes.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

CANDIDATES = ("eager", "channels_last", "kernels", "torchscript", "inductor", "kernels_inductor")


@dataclass
class Candidate:
    name: str
    ms: float | None = None
    """Median time of one call on the example inputs."""
    build_s: float = 0.0
    """Time to build it, the first (compiling) call included."""
    error: float | None = None
    """Largest output difference from the module, as a multiple of the tolerance."""
    skipped: str | None = None


class Optimized(nn.Module):
    """The chosen module; calls go to it unchanged (inputs converted to its memory layout)."""

    def __init__(self, inner: Callable, channels_last: bool, choice: str, report: list[Candidate]):
        super().__init__()
        self.inner = inner
        self.channels_last = channels_last
        self.choice = choice
        self.report = report

    def forward(self, *inputs: torch.Tensor):  # noqa: ANN201
        if self.choice in _OWN_KERNELS:  # inference only: proto2torch's kernels have no backward
            with torch.no_grad():
                return self.inner(*_layout(inputs, self.channels_last))
        return self.inner(*_layout(inputs, self.channels_last))

    def table(self) -> str:
        rows = [f"{'path':16s} {'ms/call':>9s} {'build s':>8s} {'max diff/tol':>13s}  note"]
        for c in self.report:
            ms = f"{c.ms:9.2f}" if c.ms is not None else f"{'-':>9s}"
            err = f"{c.error:13.3g}" if c.error is not None else f"{'-':>13s}"
            note = c.skipped or ("chosen" if c.name == self.choice else "")
            rows.append(f"{c.name:16s} {ms} {c.build_s:8.2f} {err}  {note}")
        return "\n".join(rows)


def optimize(module: nn.Module, *example_inputs: torch.Tensor, candidates: Sequence[str] = CANDIDATES, rtol: float = 1e-4, budget_s: float = 0.5) -> Optimized:
    """The fastest of ``candidates`` for ``module`` on ``example_inputs`` (see the module docstring)."""
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; choose from {', '.join(CANDIDATES)}")
    module = module.eval()
    inputs = tuple(example_inputs)
    with torch.no_grad():
        reference = _flat(module(*inputs))
    module = _with_fast_lrn(module)
    report: list[Candidate] = []
    built: dict[str, tuple[Callable, bool]] = {}
    spatial = any(x.dim() == 4 for x in inputs)

    def attempt(name: str, build: Callable[[], Callable], channels_last: bool) -> None:
        entry = Candidate(name)
        report.append(entry)
        start = time.perf_counter()
        try:
            with _quiet(), torch.no_grad():
                fn = build()
                got = _flat(fn(*_layout(inputs, channels_last)))  # inductor compiles here
        except Exception as exc:  # every failure to build is a reason to skip this candidate
            entry.build_s = time.perf_counter() - start
            entry.skipped = f"could not build: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}"
            return
        entry.build_s = time.perf_counter() - start
        entry.error = _difference(reference, got, rtol)
        if entry.error is None or entry.error > 1:
            entry.skipped = "outputs differ from the module's" if entry.error is not None else "outputs have other shapes"
            return
        entry.ms = 1000 * _median_time(fn, _layout(inputs, channels_last), budget_s)
        built[name] = (fn, channels_last)

    if "eager" in candidates:
        attempt("eager", lambda: module, False)
    if "channels_last" in candidates and spatial:
        attempt("channels_last", lambda: _channels_last_copy(module), True)
    if "kernels" in candidates:
        attempt("kernels", lambda: _own_kernels(module, spatial), spatial)
    fast_layout = _faster(report, "channels_last", "eager")
    if "torchscript" in candidates:
        attempt("torchscript", lambda: _torchscript(module, inputs, fast_layout), fast_layout)
    if "inductor" in candidates:
        attempt("inductor", lambda: _inductor(module, fast_layout), fast_layout)
    if "kernels_inductor" in candidates:
        # the kernels candidate's module when it ran (its copy and transformed weights are not made twice)
        own = lambda: built["kernels"][0] if "kernels" in built else _own_kernels(module, spatial)  # noqa: E731
        attempt("kernels_inductor", lambda: _inductor(own(), channels_last=False), spatial)
    if not built:
        raise RuntimeError("no candidate could run the module:\n" + "\n".join(f"  {c.name}: {c.skipped}" for c in report))
    choice = min(built, key=lambda name: next(c.ms for c in report if c.name == name) or float("inf"))
    fn, channels_last = built[choice]
    return Optimized(fn, channels_last, choice, report)


@dataclass
class Saved:
    """What :func:`save_optimized` wrote: the file, how it is loaded, and the file's own check."""

    path: Path | None
    load: str
    """The line that loads it (torch only: no proto2torch needed)."""
    build_s: float = 0.0
    ms: float | None = None
    """Median time of one call of the reloaded file on the example inputs."""
    error: float | None = None
    """Its largest output difference from the module, as a multiple of the tolerance."""
    choice: str | None = None
    """The candidate written: ``optimize``'s choice, or the next fastest when that could not be saved."""
    passed_over: list[str] = field(default_factory=list)
    """Faster candidates that could not be written and loaded again, each with the reason."""


_SUFFIX = {"torchscript": ".optimized.pt", "inductor": ".optimized.pt2"}
_OWN_KERNELS = ("kernels", "kernels_inductor")


def save_optimized(fast: Optimized, module: nn.Module, *example_inputs: torch.Tensor, stem: str | Path, rtol: float = 1e-4, budget_s: float = 0.5) -> Saved:
    """Write ``fast``'s choice as a file PyTorch loads alone, reload it, and check it against ``module``.

    * ``torchscript`` → ``<stem>.optimized.pt`` (``torch.jit.save`` of the frozen module);
    * ``inductor`` → ``<stem>.optimized.pt2``: the module exported and compiled ahead of time by
      AOTInductor with freezing (a compiled library inside; it runs on this kind of CPU);
    * ``eager``/``channels_last``: nothing to write, the plain module (in that layout) is the fastest;
    * ``kernels``/``kernels_inductor``: no file torch loads alone carries proto2torch's kernels, so the
      fastest compiled candidate without them is written instead, and the result says so.

    A file is written as ``.part`` and renamed only once it has loaded again.  When the choice cannot be
    written or loaded back (torch.export cannot trace the net; TorchScript cannot load its own frozen
    constants), the next fastest compiled candidate that ran is tried, and the result says what was
    passed over and why; an :class:`~proto2torch.export.ExportError` only when none can be saved.
    """
    from .export import ExportError, _first_line

    inputs = _layout(example_inputs, fast.channels_last)
    layout = ".to(memory_format=torch.channels_last)" if fast.channels_last else ""
    passed_over: list[str] = []
    if fast.choice in _OWN_KERNELS:
        passed_over.append(f"{fast.choice} runs proto2torch's kernels, compiled in this process: no file torch loads alone carries them")
    elif fast.choice not in _SUFFIX:
        return Saved(None, f"the module itself{layout}: no compiled path beat it", choice=fast.choice)
    ran = sorted((c for c in fast.report if c.ms is not None and c.name in _SUFFIX and c.name != fast.choice), key=lambda c: c.ms or 0.0)
    for choice in [*([fast.choice] if fast.choice in _SUFFIX else []), *(c.name for c in ran)]:
        start = time.perf_counter()
        path = Path(f"{stem}{_SUFFIX[choice]}")
        part = path.with_suffix(".part" + path.suffix)  # renamed once it has been reloaded: nothing is left half written
        try:
            loaded = _write_and_reload(choice, fast.inner if choice == fast.choice else None, module, inputs, fast.channels_last, part)
            os.replace(part, path)
        except Exception as exc:  # a file torch writes but cannot load again, or a net torch.export cannot trace
            part.unlink(missing_ok=True)
            passed_over.append(f"{choice} could not be written as {path.name} and loaded again ({_first_line(exc)})")
            continue
        load = f"torch.jit.load({str(path)!r})" if choice == "torchscript" else f"torch._inductor.aoti_load_package({str(path)!r})"
        if fast.channels_last:
            load += "  (inputs in channels_last: x.contiguous(memory_format=torch.channels_last))"
        saved = Saved(path, load, time.perf_counter() - start, choice=choice, passed_over=passed_over)
        with torch.no_grad():
            want = _flat(module(*example_inputs))
            got = _flat(loaded(*inputs))
        saved.error = _difference(want, got, rtol)
        saved.ms = 1000 * _median_time(loaded, inputs, budget_s)
        return saved
    if not passed_over[1:] and fast.choice in _OWN_KERNELS:
        passed_over.append("no compiled candidate (torchscript, inductor) ran to write instead")
    first = f"{fast.choice}, the fastest path, " + passed_over[0].removeprefix(f"{fast.choice} ")
    raise ExportError("; ".join([first, *passed_over[1:]]) + "; the module proto2torch.optimize returns in-process is not affected")


def _write_and_reload(choice: str, inner: Callable | None, module: nn.Module, inputs: tuple[torch.Tensor, ...], channels_last: bool, path: Path) -> Callable:
    """Candidate ``choice`` written to ``path`` (TorchScript, or AOTInductor compiled ahead of time) and loaded
    back; ``inner`` is the candidate already built, if it was (TorchScript's frozen module is saved as it is)."""
    if choice == "torchscript":
        with _quiet(), torch.no_grad():
            frozen = inner if inner is not None else _torchscript(module, inputs, channels_last)
        torch.jit.save(frozen, str(path))
        return torch.jit.load(str(path))
    import torch._inductor.config as inductor_config

    model = _channels_last_copy(module) if channels_last else module
    with _quiet(), torch.no_grad(), inductor_config.patch(freezing=True):
        exported = torch.export.export(model, tuple(inputs))
        torch._inductor.aoti_compile_and_package(exported, package_path=str(path))
    return torch._inductor.aoti_load_package(str(path))


class FastLRN(nn.Module):
    """``nn.LocalResponseNorm`` (Caffe's ACROSS_CHANNELS LRN) computed for speed, same arithmetic:
    the window's sum of squares as ``size`` shifted channel slices of the padded squares (one fused
    loop for inductor, no 5-d pooling), and the power ``(k + alpha/size * sum) ** -beta`` from
    ``rsqrt``/``sqrt`` when beta is 0.75 (AlexNet's, CaffeNet's and GoogLeNet's) or 0.5, else as
    ``exp(-beta * log)``: a vectorised ``pow`` is the slow part of torch's LRN on CPUs."""

    def __init__(self, size: int, alpha: float, beta: float, k: float):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return nn.functional.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        channels, before = x.shape[1], self.size // 2
        padded = nn.functional.pad(x * x, [0, 0, 0, 0, before, self.size - 1 - before])
        total = padded[:, 0:channels]
        for i in range(1, self.size):
            total = total + padded[:, i : i + channels]
        base = self.k + (self.alpha / self.size) * total
        if self.beta == 0.75:
            root = torch.rsqrt(base)
            return x * root * torch.sqrt(root)
        if self.beta == 0.5:
            return x * torch.rsqrt(base)
        return x * torch.exp(-self.beta * torch.log(base))


_FAST_LRN_MAX_SIZE = 15
"""Wider windows keep torch's pooling (a slice per channel of the window would not pay)."""


def _with_fast_lrn(module: nn.Module) -> nn.Module:
    """``module`` with each ``nn.LocalResponseNorm`` swapped for :class:`FastLRN`: a copy that shares the
    parameters and buffers (no weights copied), or ``module`` itself when it has none to swap."""
    from .backend.swap import copy_sharing_weights, swap_each

    wanted = lambda m: isinstance(m, nn.LocalResponseNorm) and m.size <= _FAST_LRN_MAX_SIZE  # noqa: E731
    if not any(wanted(m) for m in module.modules()):
        return module
    clone = copy_sharing_weights(module)
    swap_each(clone, wanted, lambda old: FastLRN(old.size, old.alpha, old.beta, old.k))
    return clone


def _faster(report: list[Candidate], a: str, b: str) -> bool:
    """Whether candidate ``a`` ran and beat ``b`` (the memory layout the compiled candidates use)."""
    times = {c.name: c.ms for c in report if c.ms is not None}
    return a in times and (b not in times or times[a] < times[b])


def _channels_last_copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).to(memory_format=torch.channels_last)


def _own_kernels(module: nn.Module, channels_last: bool) -> nn.Module:
    from .kernels import with_kernels

    swapped, count = with_kernels(_channels_last_copy(module) if channels_last else module)  # the caller's weights keep their layout
    if not count:
        raise LookupError("no 3x3 stride-1 convolution or fully connected layer to run with them")
    return swapped


def _torchscript(module: nn.Module, inputs: tuple[torch.Tensor, ...], channels_last: bool) -> Callable:
    model = _channels_last_copy(module) if channels_last else module
    traced = torch.jit.trace(model, _layout(inputs, channels_last), check_trace=False, strict=False)
    return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


class _Frozen:
    """A ``torch.compile``d module called with inductor's ``freezing`` on: the weights are folded as
    constants (conv+BN folding, prepacked oneDNN weights) when it compiles, and again if it recompiles.
    (``torch.compile(options={"freezing": True})`` does not reach the freezing pass: it compiled
    ResNet-50 to 64 ms here where this gives 40 ms.)  The process's own inductor settings are left alone."""

    def __init__(self, compiled: Callable):
        self.compiled = compiled

    def __call__(self, *inputs: torch.Tensor):  # noqa: ANN204
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(*inputs)


def _inductor(module: nn.Module, channels_last: bool) -> Callable:
    model = _channels_last_copy(module) if channels_last else module
    return _Frozen(torch.compile(model, backend="inductor", dynamic=False))


def _layout(inputs: Sequence[torch.Tensor], channels_last: bool) -> tuple[torch.Tensor, ...]:
    if not channels_last:
        return tuple(inputs)
    return tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)


def _flat(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [v for _, v in sorted(out.items())]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flat(item)]
    raise TypeError(f"cannot compare outputs of type {type(out).__name__}")


def _difference(want: list[torch.Tensor], got: list[torch.Tensor], rtol: float) -> float | None:
    """The worst output's difference as a multiple of verify's tolerance; None when the shapes differ."""
    from .verify import error_ratio

    if len(want) != len(got) or any(a.shape != b.shape for a, b in zip(want, got)):
        return None
    return max((error_ratio(a.detach().cpu().numpy(), b.detach().cpu().numpy(), rtol) for a, b in zip(want, got)), default=0.0)


def _median_time(fn: Callable, inputs: tuple[torch.Tensor, ...], budget_s: float) -> float:
    times: list[float] = []
    with torch.no_grad():
        fn(*inputs)  # warm
        while len(times) < 3 or (sum(times) < budget_s and len(times) < 50):
            start = time.perf_counter()
            fn(*inputs)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
