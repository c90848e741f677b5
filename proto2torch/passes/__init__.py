"""Surgery passes: named, composable functions IR → IR.

Each pass is a small frozen dataclass whose fields are its options and whose
``apply(net)`` returns a :class:`PassResult` (the new net and a log of what changed,
layer by layer).  Weights live in the IR, so every back end — the live module, the
emitted source, the written prototxt + caffemodel — sees the same numbers.

Spec strings name a pass and its options: ``dilate:output_stride=8,policy=deeplab``,
``cut:after=res5c``, ``fc-to-conv``.  :func:`run_passes` applies them in order and
checks the learned blobs still fit the net at the end.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import PassError, Proto2TorchError
from ..ir.graph import Net


@dataclass
class PassResult:
    net: Net
    log: list[str] = field(default_factory=list)
    redefined: set[str] = field(default_factory=set)
    """Blobs whose values the pass changes on purpose (``surgery --check`` does not compare them)."""
    renamed: dict[str, str] = field(default_factory=dict)
    """New blob name → the name it had before the pass."""
    means: dict[str, str] = field(default_factory=dict)
    """New blob → blob of the net before the pass that its spatial mean equals (gap-to-conv's maps)."""


class Pass:
    """Base class: subclasses are frozen dataclasses with a ``name`` and an ``apply``."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    keeps: ClassVar[str | None] = None
    """What ``surgery --check`` checks after this pass: ``outputs`` (every blob the pass does not
    redefine is unchanged), ``shift`` (blobs sampled every few pixels equal the net before it),
    ``receptive-field`` (no layer's receptive field shrinks); None: nothing is kept by design."""

    def property_kind(self) -> str | None:
        return self.keeps

    def apply(self, net: Net) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError


PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    if cls.name in PASSES:
        raise ValueError(f"pass {cls.name!r} is registered twice")
    PASSES[cls.name] = cls
    return cls


def _convert(value: str, annotation: Any, what: str) -> Any:
    target = annotation if isinstance(annotation, type) else typing.get_origin(annotation) or annotation
    try:
        if annotation in (int, "int"):
            return int(value)
        if annotation in (float, "float"):
            return float(value)
        if annotation in (bool, "bool"):
            if value.lower() in ("1", "true", "yes"):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
            raise ValueError
    except ValueError:
        raise PassError(f"{what}: expected {getattr(target, '__name__', target)}, got {value!r}") from None
    return value


def parse_spec(spec: str) -> Pass:
    """``name[:key=value,key=value]`` → a configured pass."""
    _ensure_loaded()
    name, _, rest = spec.partition(":")
    name = name.strip()
    cls = PASSES.get(name)
    if cls is None:
        raise PassError(f"unknown pass {name!r}; available: {', '.join(sorted(PASSES))}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            options = ", ".join(fields) or "none"
            raise PassError(f"pass {name!r}: cannot read option {item!r} (options: {options})")
        kwargs[key] = _convert(value.strip(), hints.get(key, str), f"pass {name!r} option {key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise PassError(f"pass {name!r}: {exc}") from None


def run_passes(
    net: Net,
    passes: Sequence[Pass | str],
    *,
    check_weights: bool = True,
    on_step: Callable[[Pass, Net, PassResult], None] | None = None,
) -> PassResult:
    """Apply passes in order; errors name the failing pass and the ones already run.
    ``on_step(pass, net before it, its result)`` sees each step (``surgery --check`` uses it)."""
    done: list[str] = []
    log: list[str] = []
    for item in passes:
        p = parse_spec(item) if isinstance(item, str) else item
        try:
            result = p.apply(net)
        except Proto2TorchError as exc:
            after = f" (after {', '.join(done)})" if done else ""
            raise PassError(f"pass {p.name}{after}: {exc}") from exc
        if on_step is not None:
            on_step(p, net, result)
        net = result.net
        done.append(p.name)
        log += [f"{p.name}: {line}" for line in result.log] or [f"{p.name}: nothing to change"]
    if check_weights:
        check_blobs(net)
    return PassResult(net, log)


def check_blobs(net: Net) -> None:
    """Every layer with blobs still has blobs of the shapes the (changed) net needs."""
    from ..ir.weights import expected_blob_shapes

    problems = []
    for node in net.nodes:
        want = expected_blob_shapes(net, node)
        if want is None or not node.blobs:
            continue
        got = [tuple(b.shape) for b in node.blobs]
        if got != [tuple(w) for w in want]:
            problems.append(f"layer '{node.name}' ({node.type}) has blobs {got} but now needs {want}")
    if problems:
        raise PassError("after surgery the weights no longer fit (cut the layers that no longer apply?):\n  " + "\n  ".join(problems))


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import bilinear, cut, deploy, dilate, edit, fc_to_conv, fold_bn, gap_to_conv, transplant  # noqa: F401
