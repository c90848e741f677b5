"""Archives other runtimes load: ONNX, frozen TorchScript, ``torch.export`` programs.

Every format starts from the emitted standalone module (what ``convert`` writes), so the archive
computes what the ``.py`` file computes.  Axes are made dynamic where the net allows: the batch
axis of every input, and height and width too when the net is fully convolutional (an
InnerProduct or a fixed Reshape pins them); :class:`ExportReport` says which axes stayed dynamic.

* ``onnx``: ``torch.onnx.export`` (the ``torch.export``-based exporter, ``opset`` 18 unless
  asked), checked with ``onnx.checker``.
* ``torchscript``: ``torch.jit.trace`` of the module, frozen (weights folded into the graph) and
  saved as ``.pt``: ``torch.jit.load`` runs it without proto2torch.
* ``exported``: a ``torch.export`` program saved as ``.pt2`` (``torch.export.load(path).module()``).

Layers whose output count depends on the data (DetectionOutput's non-maximum suppression,
Proposal, ...) cannot be traced into a fixed graph: the error names them; cut the net before them
(``surgery cut:LAYER``) and export the heads.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .caffemodel.writer import atomic_open
from .errors import Proto2TorchError
from .ir.graph import Net

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "exported": ".pt2"}
DEFAULT_OPSET = 18

DATA_DEPENDENT = {
    "DetectionOutput": "non-maximum suppression keeps a data-dependent number of boxes",
    "Proposal": "non-maximum suppression keeps a data-dependent number of proposals",
    "Python": "Python layers run user code",
}


class ExportError(Proto2TorchError, RuntimeError):
    """The net cannot be written in the asked format (a layer with data-dependent output, a failed trace)."""


@dataclass
class ExportReport:
    path: Path
    format: str
    dynamic: list[str] = field(default_factory=list)
    """The axes left dynamic, as ``input:axis`` names (``data:batch``, ``data:height``, ...)."""
    opset: int | None = None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' own chatter (registration warnings, progress lines) kept off the user's terminal."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _module_and_inputs(net: Net) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], list[str]]:
    from .backend.source import load_emitted

    for node in net.nodes:
        if node.type in DATA_DEPENDENT:
            raise ExportError(f"layer '{node.name}' ({node.type}) cannot be exported to a fixed graph: {DATA_DEPENDENT[node.type]}; cut the net before it (surgery cut:{node.name}) and export the rest")
    names = [net.values[v].blob for v in net.inputs]
    shapes = [net.values[v].shape for v in net.inputs]
    if any(s is None for s in shapes):
        missing = [n for n, s in zip(names, shapes) if s is None]
        raise ExportError(f"the input shapes of {', '.join(missing)} are not known: give them with --input NAME=d0,d1,...")
    torch.manual_seed(0)
    args = tuple(torch.rand(*s) for s in shapes)  # type: ignore[misc]
    with tempfile.TemporaryDirectory(prefix="proto2torch-export-") as d:
        model = load_emitted(net, d)
    return model.eval(), args, names


def _export_program(model: torch.nn.Module, args: tuple[torch.Tensor, ...], names: list[str], net: Net):  # noqa: ANN202
    """A ``torch.export`` program whose batch (and, for 4-d inputs, height and width) axes stay
    symbolic wherever the net's arithmetic allows (``Dim.AUTO``: torch specialises an axis the net
    pins, and keeps what it needs of the rest, such as the parity Caffe's ceil-mode pooling tests,
    as runtime checks); a static program when even that fails.  Returns it and its dynamic axes."""
    from torch.export import Dim

    example, axes = _movable_axes(model, args)
    auto = tuple({axis: Dim.AUTO for axis in ax} for ax in axes)
    failure: Exception | None = None
    for inputs, shapes in ((example, auto), (args, None)):
        try:
            with _quiet():
                program = torch.export.export(model, inputs, dynamic_shapes=shapes, strict=False)
        except Exception as exc:  # every torch.export failure is a reason to try the static program
            failure = exc
            continue
        placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.meta.get("val") is not None][-len(names):]
        symbolic = [tuple(a for a, size in enumerate(node.meta["val"].shape) if not isinstance(size, int)) for node in placeholders]
        return program, _axis_names(names, symbolic)
    raise ExportError(f"torch.export could not trace net '{net.name}': {_first_line(failure)}")


def _movable_axes(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], list[tuple[int, ...]]]:
    """Per input, the axes along which ``model`` really runs at another size (batch; height and
    width of 4-d inputs, tried 32 larger), and example inputs for tracing them.  The probes run at
    batch 2, whatever the declared batch (a net declared at batch 10,000 is not run at 20,000 to
    learn that its batch can change), and a movable batch is traced at 2 too (a dynamic axis cannot
    be traced at size 1: torch.export specialises it)."""
    small = tuple(torch.cat([a[:1], a[:1]]) if a.dim() else a for a in args)
    batch = all(a.dim() for a in args) and _runs(model, small)
    example = small if batch else args
    grown = tuple(torch.rand(*a.shape[:2], a.shape[2] + 32, a.shape[3] + 32) if a.dim() == 4 else a for a in example)
    spatial = any(a.dim() == 4 for a in args) and _runs(model, grown)
    return example, [(0,) * batch + ((2, 3) if spatial and a.dim() == 4 else ()) for a in args]


def _axis_names(names: list[str], axes: list[tuple[int, ...]]) -> list[str]:
    words = {0: "batch", 2: "height", 3: "width"}
    return [f"{name}:{words[axis]}" for name, ax in zip(names, axes) for axis in ax]


def _runs(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> bool:
    try:
        with torch.no_grad(), _quiet():
            model(*inputs)
    except Exception:  # any failure means: not at this size
        return False
    return True


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip().splitlines() if exc is not None else []
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


def export(net: Net, path: str | Path, to: str, *, opset: int = DEFAULT_OPSET) -> ExportReport:
    """Write ``net`` (with shapes and weights) to ``path`` as ``to`` (``onnx``, ``torchscript`` or ``exported``)."""
    if to not in FORMATS:
        raise ExportError(f"unknown export format {to!r}: choose one of {', '.join(FORMATS)}")
    path = Path(path)
    model, args, names = _module_and_inputs(net)
    if to == "torchscript":
        try:
            with _quiet(), torch.no_grad():
                traced = torch.jit.freeze(torch.jit.trace(model, args if len(args) != 1 else args[0], check_trace=False, strict=False))
        except Exception as exc:
            raise ExportError(f"TorchScript could not trace net '{net.name}': {_first_line(exc)}") from None
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        with atomic_open(path) as f:
            f.write(buffer.getvalue())
        return ExportReport(path, to, _axis_names(names, _movable_axes(traced, args)[1]))
    program, dynamic = _export_program(model, args, names, net)
    if to == "exported":
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        with atomic_open(path) as f:
            f.write(buffer.getvalue())
        return ExportReport(path, to, dynamic)
    try:
        import onnx
    except ImportError:
        raise ExportError("exporting ONNX needs onnx and onnxscript: pip install 'proto2torch[export]'") from None
    try:
        with _quiet():
            onnx_program = torch.onnx.export(program, args, None, dynamo=True, opset_version=opset, input_names=names, verbose=False)
            proto = onnx_program.model_proto
        onnx.checker.check_model(proto, full_check=True)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX export of net '{net.name}' failed: {_first_line(exc)}") from None
    with atomic_open(path) as f:
        f.write(proto.SerializeToString())
    return ExportReport(path, to, dynamic, opset)
