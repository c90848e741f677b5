"""The source back end: a net becomes a standalone PyTorch file, like a careful hand-written port.

The file imports only torch (and the standard library): one ``nn.Module`` class named
after the net, submodules named after the Caffe layers in ``__init__``, a straight-line
``forward`` whose variables are the Caffe blobs, the few Caffe helpers the net needs
(copied verbatim from :mod:`proto2torch.backend.caffe_ops` and its sibling helper modules,
or from a plugin's own module), and a ``build()`` that loads
the state dict.  The state dict comes from the live module built from the same
lowering and name table, so both back ends carry identical names and numbers.
"""

from __future__ import annotations

import importlib.util
import inspect
import operator
import re
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..caffemodel.writer import atomic_open
from ..ir.graph import Net
from . import caffe_ops, ops_detection, ops_loss, ops_recurrent, ops_spatial, sizes
from .live import build_graph_module, check_convertible, lower_node
from .lowering import AliasOp, CallOp, In, InList, ModuleOp, stopped_inputs
from .names import NameTable, identifier

_INFIX = {operator.add: "+", operator.mul: "*", operator.sub: "-"}
_BUILTIN_HELPER_MODULES = (sizes, caffe_ops, ops_detection, ops_recurrent, ops_loss, ops_spatial)
_NOT_HELPERS = ("torch", "typing", "builtins", "math", "collections", "abc", "numbers", "functools", "operator")


def _is_helper(obj: Any) -> bool:
    """A class or function to copy into generated files: defined in Python outside torch and the standard library."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return False
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] not in _NOT_HELPERS and module in sys.modules


def _module_helpers(module: types.ModuleType) -> list[Any]:
    return [obj for obj in vars(module).values() if _is_helper(obj) and obj.__module__ == module.__name__]


_BUILTIN_HELPERS = [h for m in _BUILTIN_HELPER_MODULES for h in _module_helpers(m)]


def _helper_key(obj: Any) -> tuple[int, str, int]:
    """Order of helpers in a generated file: built-in modules first, each in source order."""
    module = sys.modules[obj.__module__]
    rank = _BUILTIN_HELPER_MODULES.index(module) if module in _BUILTIN_HELPER_MODULES else len(_BUILTIN_HELPER_MODULES)
    return rank, obj.__module__, inspect.getsourcelines(obj)[1]


def _dependencies(obj: Any) -> list[Any]:
    """Helpers that ``obj``'s source mentions by name, among those visible in its module."""
    source = inspect.getsource(obj)
    visible = [v for v in vars(sys.modules[obj.__module__]).values() if _is_helper(v)]
    return [v for v in visible if v is not obj and re.search(rf"\b{v.__name__}\b", source)]


@dataclass
class EmittedSource:
    class_name: str
    code: str
    state_dict: dict[str, torch.Tensor]
    names: NameTable


def _literal(value: Any) -> str:
    if isinstance(value, float):
        text = repr(value)
        return text if text not in ("inf", "-inf", "nan") else f"float({text!r})"
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, (bool, int, str)) or value is None:
        return repr(value)
    raise TypeError(f"cannot write {type(value).__name__} into generated source")


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "__name__", "")
    if getattr(F, name, None) is fn:
        return f"F.{name}"
    if getattr(torch, name, None) is fn:
        return f"torch.{name}"
    if _is_helper(fn):
        return name
    raise TypeError(f"no source name for {fn!r}")


def _class_name(cls: type) -> str:
    if getattr(nn, cls.__name__, None) is cls:
        return f"nn.{cls.__name__}"
    if _is_helper(cls):
        return cls.__name__
    raise TypeError(f"no source name for {cls!r}")


def _op_helpers(op: Any) -> list[Any]:
    if isinstance(op, ModuleOp):
        return [op.cls] if _is_helper(op.cls) else []
    if isinstance(op, CallOp):
        return [op.fn] if _is_helper(op.fn) else []
    return []


class _Emitter:
    def __init__(self, net: Net, class_name: str, preprocess: Any = None):
        check_convertible(net)
        self.net = net
        self.preprocess = preprocess
        self.input_mean: Any = None
        self.ops = {index: lower_node(net, node) for index, node in enumerate(net.nodes) if not node.is_input}
        self.helpers: set[Any] = set()
        for op in self.ops.values():
            for helper in _op_helpers(op):
                self._use(helper)
        by_name: dict[str, Any] = {}
        for helper in self.helpers:
            other = by_name.setdefault(helper.__name__, helper)
            if other is not helper:
                raise TypeError(f"two helpers are both named {helper.__name__!r} ({other.__module__} and {helper.__module__})")
        reserved = {identifier(class_name), "build", "weights_path", "_"} | {h.__name__ for h in _BUILTIN_HELPERS} | set(by_name)
        self.names = NameTable.for_net(net, reserved=reserved)
        self.class_name = class_name
        self.init: list[str] = []
        self.body: list[str] = []
        self.uses: list[tuple[list[str], list[str]]] = []
        """Per body line: the variables it reads and those it assigns."""

    def var(self, value_id: str) -> str:
        return self.names.variables[value_id]

    def args(self, items: tuple[Any, ...], inputs: list[str]) -> list[str]:
        out = []
        for item in items:
            if isinstance(item, In):
                out.append(inputs[item.index])
            elif isinstance(item, InList):
                out.append("[" + ", ".join(inputs) + "]")
            else:
                out.append(_literal(item))
        return out

    def line(self, text: str, reads: list[str], writes: list[str]) -> None:
        self.body.append(text)
        self.uses.append((reads, [w for w in writes if w != "_"]))

    def emit(self) -> str:
        shared: dict[tuple[str, int], str] = {}
        for index, node in enumerate(self.net.nodes):
            if node.is_input:
                continue
            op = self.ops[index]
            reads = [self.var(v) for v in node.inputs]
            stopped = stopped_inputs(node)
            inputs = [f"{name}.detach()" if i in stopped else name for i, name in enumerate(reads)]
            outputs = [self.var(v) for v in node.outputs]
            n_out = 1 if isinstance(op, AliasOp) else op.n_out
            targets = outputs + ["_"] * (n_out - len(outputs)) if n_out > 1 else outputs
            target = targets[0] if len(targets) == 1 else ", ".join(targets)
            if isinstance(op, AliasOp):
                for out, src in zip(outputs, op.sources):
                    if out != inputs[src]:
                        self.line(f"{out} = {inputs[src]}", [reads[src]], [out])
                if not outputs:
                    self.line(f"# {node.name} ({node.type}): consumes {', '.join(reads)}", reads, [])
                continue
            if isinstance(op, ModuleOp):
                attr = self.names.modules[index]
                args = ", ".join([_literal(a) for a in op.args] + [f"{k}={_literal(v)}" for k, v in op.kwargs.items()])
                comment = f"  # Caffe layer '{node.name}' ({node.type})" if attr != node.name else ""
                self.init.append(f"self.{attr} = {_class_name(op.cls)}({args}){comment}")
                for i, param in enumerate(op.blob_params):
                    name = node.param_names[i] if i < len(node.param_names) else None
                    if not name or param is None:
                        continue
                    if (name, i) in shared:
                        self.init.append(f"self.{attr}.{param} = {shared[(name, i)]}  # shared weights (param '{name}')")
                    else:
                        shared[(name, i)] = f"self.{attr}.{param}"
                call_args = inputs if op.call is None else self.args(op.call, inputs)
                self.line(f"{target} = self.{attr}({', '.join(call_args)})", reads, targets)
                continue
            assert isinstance(op, CallOp)
            if op.fn in _INFIX:
                a, b = self.args(op.args, inputs)
                self.line(f"{target} = {a} {_INFIX[op.fn]} {b}", reads, targets)
                continue
            args = self.args(op.args, inputs) + [f"{k}={_literal(v)}" for k, v in op.kwargs.items()]
            self.line(f"{target} = {_callable_name(op.fn)}({', '.join(args)})", reads, targets)
        return self._file()

    def _with_deletes(self, returned: list[str]) -> list[str]:
        """The body with ``del`` after the last use of each intermediate, so that (as in a
        hand-written forward or torch.fx's code) memory is reused instead of every blob
        staying alive until the return; a net's tensors would otherwise all be live at once."""
        end = len(self.body)
        next_use: dict[str, int] = {name: end for name in returned}  # returned values live to the end
        dead_after: list[list[str]] = [[] for _ in self.body]
        for k in range(len(self.body) - 1, -1, -1):
            reads, writes = self.uses[k]
            for name in writes:
                if name not in next_use or next_use[name] == -1:
                    dead_after[k].append(name)  # assigned, never read afterwards
                next_use[name] = -1  # before this line the name holds an older value
            for name in reads:
                if next_use.get(name, -1) == -1 and name not in writes:  # (a name read and reassigned here is replaced, not dead)
                    dead_after[k].append(name)
                next_use[name] = k
        arguments = {self.var(v) for v in self.net.inputs}
        lines = []
        for text, dead in zip(self.body, dead_after):
            lines.append(text)
            dead = sorted(set(dead) - set(returned) - arguments)  # the caller holds the arguments anyway
            if dead:
                lines.append(f"del {', '.join(dead)}")
        return lines

    def _use(self, obj: Any) -> None:
        if obj in self.helpers:
            return
        self.helpers.add(obj)
        for other in _dependencies(obj):
            self._use(other)

    def _objective(self) -> list[str]:
        """For a TRAIN-phase net whose forward returns its loss tops: ``total_loss(outputs)``, the sum of
        loss_weight x top that Caffe's solver minimises."""
        if self.net.phase != "TRAIN" or len(self.net.outputs) < 2:
            return []
        from ..train.net import loss_weights

        weights = loss_weights(self.net)
        returned = {self.net.values[v].blob for v in self.net.outputs}
        if not weights or not set(weights) <= returned:
            return []
        terms = " + ".join(f"outputs[{blob!r}].sum()" + ("" if w == 1.0 else f" * {w!r}") for blob, w in weights.items())
        return [
            f"LOSS_WEIGHTS: Dict[str, float] = {weights!r}",
            "",
            "",
            "def total_loss(outputs: Dict[str, Tensor]) -> Tensor:",
            '    """The objective Caffe\'s solver minimises: the sum of loss_weight x top (LOSS_WEIGHTS) over the loss tops."""',
            f"    return {terms}",
            "",
            "",
        ]

    def _returned(self) -> list[str]:
        return [self.var(v) for v in self.net.outputs]

    def _signature(self) -> tuple[str, str, str]:
        net = self.net
        params = ", ".join(f"{self.var(v)}: Tensor" for v in net.inputs)
        outputs = list(net.outputs)
        if len(outputs) == 1:
            return params, "Tensor", f"return {self.var(outputs[0])}"
        items = ", ".join(f"{net.values[v].blob!r}: {self.var(v)}" for v in outputs)
        return params, "Dict[str, Tensor]", f"return {{{items}}}"

    def _file(self) -> str:
        net = self.net
        params, returns, ret = self._signature()
        helpers = sorted(self.helpers, key=_helper_key)
        helper_src = "\n\n\n".join(inspect.getsource(h).rstrip() for h in helpers)
        typing_names = sorted({n for n in ("Dict", "List", "Optional", "Tuple") if re.search(rf"\b{n}\[", helper_src + "\n" + returns)} | {"Optional"})
        shape = lambda v: "x".join(map(str, net.values[v].shape or ()))  # noqa: E731
        ins = ", ".join(f"{net.values[v].blob} {shape(v)}" for v in net.inputs)
        outs = ", ".join(f"{net.values[v].blob} {shape(v)}" for v in net.outputs)
        lines = [
            f'"""{self.class_name}: a PyTorch port of the {_origin(net)} \'{net.name}\', generated by proto2torch.',
            "",
            f"Inputs: {ins}.",
            f"Outputs: {outs}.",
            f"Usage: model = build(\"{identifier(net.name)}.safetensors\"); out = model({', '.join(self.var(v) for v in net.inputs)})",
            '"""',
            "",
        ]
        if "math." in helper_src:
            lines.append("import math")
        lines.append(f"from typing import {', '.join(typing_names)}")
        code = "\n".join([helper_src, *self.init, *self.body])
        lines += ["", "import torch"] + (["import torch.nn.functional as F"] if re.search(r"\bF\.", code) else [])
        lines += ["from torch import Tensor, nn", ""]
        if helper_src:
            lines += ["", "# Caffe's arithmetic where torch.nn has no exact equivalent.", "", helper_src, ""]
        lines += ["", f"class {self.class_name}(nn.Module):", "    def __init__(self) -> None:", "        super().__init__()"]
        lines += [f"        {line}" for line in self.init]
        if self.preprocess is not None:
            from ..data.preprocess import preprocess_source

            method, self.input_mean = preprocess_source(self.preprocess)
            if self.input_mean is not None:
                shape = ", ".join(map(str, self.input_mean.shape))
                lines.append(f'        self.register_buffer("input_mean", torch.zeros({shape}))  # the mean the inputs lose in preprocess()')
            lines += [""] + [f"    {line}" for line in method]
        lines += ["", f"    def forward(self, {params}) -> {returns}:"]
        lines += [f"        {line}" for line in self._with_deletes(self._returned())]
        lines += [f"        {ret}", "", ""]
        lines += self._objective()
        lines += [
            f"def build(weights_path: Optional[str] = None) -> {self.class_name}:",
            '    """The model in eval mode, with the converted weights when a .safetensors or .pth path is given."""',
            f"    model = {self.class_name}()",
            "    if weights_path is not None and weights_path.endswith(\".safetensors\"):",
            "        from safetensors.torch import load_file",
            "",
            "        model.load_state_dict(load_file(weights_path))",
            "    elif weights_path is not None:",
            "        model.load_state_dict(torch.load(weights_path, weights_only=True))",
            "    return model.eval()",
            "",
        ]
        text = "\n".join(lines)
        text = re.sub(r"\n{4,}", "\n\n\n", text)
        return text


def emit_source(net: Net, class_name: str | None = None, preprocess: Any = None) -> EmittedSource:
    """Source text and state dict for ``net`` (which must have shapes and weights); with a
    :class:`~proto2torch.data.preprocess.Preprocess`, the class also gets ``preprocess(image)``."""
    from ..passes.fold_bn import merge_scale_into_batchnorm

    class_name = class_name or _camel(net.name)
    net = merge_scale_into_batchnorm(net)  # BatchNorm + Scale as one affine nn.BatchNorm2d, as a hand port has it
    emitter = _Emitter(net, class_name, preprocess)
    code = emitter.emit()
    live = build_graph_module(net, emitter.names)
    state = {k: v.detach() for k, v in live.state_dict(keep_vars=False).items()}
    if emitter.input_mean is not None:
        state["input_mean"] = torch.from_numpy(emitter.input_mean.copy())
    return EmittedSource(class_name, code, state, emitter.names)


def emit_code(net: Net, class_name: str | None = None, preprocess: Any = None) -> tuple[str, str]:
    """The source text alone, for a net with or without weights (no module is built and no
    weights are filled): ``(class name, code)``, the code :func:`emit_source` writes."""
    from ..ir.weights import with_placeholders
    from ..passes.fold_bn import merge_scale_into_batchnorm

    class_name = class_name or _camel(net.name)
    return class_name, _Emitter(merge_scale_into_batchnorm(with_placeholders(net)), class_name, preprocess).emit()


def _origin(net: Net) -> str:
    """What the net was read from, for the emitted docstring."""
    if net.meta.get("format") == "dsl":
        return f"caffe-tensorflow ({net.meta.get('dialect', 'ethereon')} dialect) net"
    return "Caffe net"


def _camel(name: str) -> str:
    base = identifier(name)
    parts = [p for p in re.split(r"_+", base) if p]
    text = "".join(p[:1].upper() + p[1:] for p in parts) or "Net"
    return text if text[0].isalpha() else "Net" + text


WEIGHT_FORMATS = ("safetensors", "pth")


def write_source(net: Net, out_dir: str | Path, stem: str | None = None, preprocess: Any = None, weights_format: str = "safetensors") -> tuple[Path, Path, EmittedSource]:
    """Write ``<stem>.py`` and the weights, ``<stem>.safetensors`` (the default: no pickle,
    memory-mapped) or ``<stem>.pth`` (a ``torch.save``d state_dict); the file's ``build()`` loads either."""
    if weights_format not in WEIGHT_FORMATS:
        raise ValueError(f"weights_format must be one of {', '.join(WEIGHT_FORMATS)}, not {weights_format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    emitted = emit_source(net, preprocess=preprocess)
    stem = stem or identifier(net.name)
    py = out / f"{stem}.py"
    weights = out / f"{stem}.{weights_format}"
    with atomic_open(py) as f:
        f.write(emitted.code.encode())
    save_state_dict(emitted.state_dict, weights)
    return py, weights, emitted


def write_code(net: Net, out_dir: str | Path, stem: str | None = None, preprocess: Any = None) -> tuple[Path, str]:
    """Write ``<stem>.py`` alone, for a net without weights (:func:`emit_code`): the file and its class name."""
    class_name, code = emit_code(net, preprocess=preprocess)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    py = out / f"{stem or identifier(net.name)}.py"
    with atomic_open(py) as f:
        f.write(code.encode())
    return py, class_name


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """A state_dict as ``.safetensors`` or ``.pth`` (by suffix), complete or not at all."""
    path = Path(path)
    with atomic_open(path) as f:
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            # one copy per name: safetensors refuses tensors that share storage (tied weights are tied by the module)
            f.write(save({k: v.detach().contiguous().clone() for k, v in state.items()}))
        else:
            torch.save(dict(state), f)


def import_source(path: str | Path, name: str | None = None) -> types.ModuleType:
    """Import a generated file as a module (it is our own output: no user code runs)."""
    path = Path(path)
    name = name or f"proto2torch_generated_{identifier(path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_emitted(net: Net, workdir: str | Path | None = None) -> nn.Module:
    """Emit ``net``, import the file and load its state dict: the source back end as a module."""
    import tempfile

    directory = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="proto2torch-"))
    py, pth, emitted = write_source(net, directory)
    module = import_source(py)
    model = module.build(str(pth))
    model._p2t_names = emitted.names
    return model


def run_source_blobs(model: nn.Module, net: Net, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every blob of the emitted forward: the last value each blob variable held, read from its
    frame line by line (the forward deletes intermediates after their last use)."""
    names: NameTable = model._p2t_names  # type: ignore[assignment]
    by_var = {names.variables[v]: net.values[v].blob for v in net.values if v in names.variables}
    args = [inputs[net.values[v].blob] for v in net.inputs]
    code = type(model).forward.__code__
    captured: dict[str, Any] = {}

    def tracer(frame, event, arg):  # noqa: ANN001, ANN202
        if frame.f_code is code:
            if event in ("line", "return"):
                captured.update(frame.f_locals)
            return tracer
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        with torch.no_grad():
            model(*args)
    finally:
        sys.settrace(previous)
    return {by_var[k]: v for k, v in captured.items() if k in by_var and isinstance(v, torch.Tensor)}
