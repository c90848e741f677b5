"""Learned blobs in the IR: attach them from a caffemodel (checked against the net), or
initialise them with Caffe's fillers when a net is converted without weights."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import WeightError
from ..layers.registry import lookup
from ..prototxt.schema import Diagnostic
from .graph import Net, Node, Shape


def expected_blob_shapes(net: Net, node: Node) -> list[Shape] | None:
    """Shapes of the node's learned blobs, or None when its input shapes are unknown."""
    spec = lookup(node.type)
    if spec is None or node.unsupported is not None:
        return None
    shapes = [net.values[v].shape for v in node.inputs]
    if any(s is None for s in shapes):
        return None
    return [tuple(s) for s in spec.weight_shapes(node.params, shapes)]  # type: ignore[arg-type]


def _fits(got: tuple[int, ...], want: tuple[int, ...], legacy: bool) -> bool:
    if got == want:
        return True
    # legacy num/channels/height/width blobs are right-aligned 4-d shapes (Caffe's ShapeEquals)
    return legacy and len(got) == 4 and len(want) <= 4 and got == (1,) * (4 - len(want)) + want


def _strict_dims(node: Node) -> bool:
    """DeepLab's ``strict_dim: false`` lets a blob of the right element count take the net's shape."""
    return node.msg is None or node.msg.get("strict_dim", True) is not False


def attach_weights(
    net: Net,
    weights: Mapping[str, Sequence[np.ndarray]],
    *,
    legacy: Mapping[str, Sequence[bool]] | None = None,
    allow_missing: bool = False,
) -> Net:
    """Give each layer its blobs from ``weights`` (layer name → blobs), checking count and shapes.

    Layers named ``param { name: ... }`` share the first owner's blobs when they have none
    of their own.  Every problem is collected and reported together; with
    ``allow_missing`` layers without weights are initialised from their fillers instead.
    """
    problems: list[str] = []
    diagnostics = list(net.diagnostics)
    shared: dict[tuple[str, int], np.ndarray] = {}
    nodes = []
    used: set[str] = set()
    for node in net.nodes:
        want = expected_blob_shapes(net, node)
        got = weights.get(node.name)
        if got is not None:
            used.add(node.name)
        if want is None:
            nodes.append(node)
            continue
        if not want:
            if got:
                problems.append(f"layer '{node.name}' ({node.type}) has no learned blobs, but the weights give it {len(got)}")
            nodes.append(node)
            continue
        if got is None:
            got = _from_shared(node, shared, len(want))
        if got is None:
            if allow_missing:
                nodes.append(node.replace(blobs=tuple(fill(node, want))))
                continue
            problems.append(f"layer '{node.name}' ({node.type}) has no weights; it needs blobs {_shapes(want)}")
            nodes.append(node)
            continue
        if len(got) != len(want):
            problems.append(
                f"layer '{node.name}' ({node.type}) needs {len(want)} blobs {_shapes(want)}, the weights have {len(got)} {_shapes([b.shape for b in got])}"
            )
            nodes.append(node)
            continue
        flags = (legacy or {}).get(node.name) or [len(b.shape) == 4 for b in got]
        spec = lookup(node.type)
        blobs = []
        for i, (blob, shape, is_legacy) in enumerate(zip(got, want, flags)):
            if not (
                _fits(tuple(blob.shape), shape, is_legacy)
                or spec.blob_fits(node.params, i, tuple(blob.shape), shape)  # type: ignore[union-attr]
                or (not _strict_dims(node) and blob.size == math.prod(shape))
            ):
                problems.append(f"layer '{node.name}' ({node.type}) blob {i}: the weights have shape {list(blob.shape)}, the net needs {list(shape)}")
                break
            blobs.append(_as_float32(blob).reshape(shape))
        else:
            for i, blob in enumerate(blobs):
                name = node.param_names[i] if i < len(node.param_names) else None
                if name:
                    shared.setdefault((name, i), blob)
            node = node.replace(blobs=tuple(blobs))
        nodes.append(node)
    if problems:
        listing = "\n  ".join(problems)
        raise WeightError(f"the weights do not fit the net ({len(problems)} problem(s)):\n  {listing}")
    for name in weights:
        if name not in used and weights[name]:
            diagnostics.append(Diagnostic(None, f"weights for layer '{name}' are not used: the net has no such layer"))
    return net.replace(nodes=tuple(nodes), diagnostics=tuple(diagnostics))


def _from_shared(node: Node, shared: Mapping[tuple[str, int], np.ndarray], n: int) -> list[np.ndarray] | None:
    if len(node.param_names) < n or not all(node.param_names[i] for i in range(n)):
        return None
    blobs = [shared.get((node.param_names[i], i)) for i in range(n)]  # type: ignore[arg-type]
    return None if any(b is None for b in blobs) else blobs  # type: ignore[return-value]


def _as_float32(blob: np.ndarray) -> np.ndarray:
    return blob if blob.dtype == np.float32 else blob.astype(np.float32)


def _shapes(shapes: Sequence[Sequence[int]]) -> str:
    return "[" + ", ".join(str(list(s)) for s in shapes) + "]"


def initialise(net: Net, seed: int = 0) -> Net:
    """Fill every layer that has no blobs from its Caffe fillers (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    nodes = []
    for node in net.nodes:
        want = expected_blob_shapes(net, node)
        if want and not node.blobs:
            node = node.replace(blobs=tuple(fill(node, want, rng)))
        nodes.append(node)
    return net.replace(nodes=tuple(nodes))


def with_placeholders(net: Net) -> Net:
    """``net`` with every missing learned blob stood in for by zeros that take no memory (one
    float, broadcast): enough to lower and emit a net's code, never to run it."""
    zero = np.zeros((), np.float32)
    nodes = []
    for node in net.nodes:
        want = expected_blob_shapes(net, node)
        if want and not node.blobs:
            node = node.replace(blobs=tuple(np.broadcast_to(zero, tuple(s)) for s in want))
        nodes.append(node)
    return net.replace(nodes=tuple(nodes))


def parameter_count(net: Net) -> int | None:
    """Learned elements of ``net`` from its layers' blob shapes (None while an input shape is unknown)."""
    total = 0
    for node in net.nodes:
        if node.is_input:
            continue
        want = expected_blob_shapes(net, node)
        if want is None:
            if any(net.values[v].shape is None for v in node.inputs):
                return None
            continue
        total += sum(math.prod(s) for s in want)
    return total


# --- Caffe's fillers --------------------------------------------------------------------------

def fill(node: Node, shapes: Sequence[Shape], rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Blobs for ``node`` drawn from the fillers its prototxt names (Caffe's defaults otherwise)."""
    rng = rng or np.random.default_rng(0)
    spec = lookup(node.type)
    assert spec is not None
    special = spec.initial_blobs(node.params, [tuple(s) for s in shapes])
    if special is not None:
        return special
    param_field, filler_fields = spec.fillers
    out = []
    for i, shape in enumerate(shapes):
        filler = None
        if node.msg is not None and i < len(filler_fields) and param_field:
            param = node.msg.sub(param_field)
            if param.has(filler_fields[i]):
                filler = param.sub(filler_fields[i])
        default = spec.fill_values[i] if i < len(spec.fill_values) else 0.0
        out.append(_fill_one(filler, tuple(shape), rng, default, transposed=node.type == "Deconvolution"))
    return out


def _fill_one(spec: Any, shape: Shape, rng: np.random.Generator, default: float, transposed: bool) -> np.ndarray:
    kind = "constant" if spec is None else str(spec.get("type"))
    n = int(np.prod(shape)) if shape else 1
    fan_in = n // shape[0] if shape and shape[0] else 1
    fan_out = n // shape[1] if len(shape) > 1 and shape[1] else 1
    if kind == "constant":
        value = default if spec is None else float(spec.get("value"))
        return np.full(shape, value, np.float32)
    if kind == "uniform":
        return rng.uniform(float(spec.get("min")), float(spec.get("max")), shape).astype(np.float32)
    if kind == "gaussian":
        return rng.normal(float(spec.get("mean")), float(spec.get("std")), shape).astype(np.float32)
    norm = str(spec.get("variance_norm"))
    fan = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}.get(norm, fan_in)
    if kind == "xavier":
        scale = np.sqrt(3.0 / fan)
        return rng.uniform(-scale, scale, shape).astype(np.float32)
    if kind == "msra":
        return rng.normal(0.0, np.sqrt(2.0 / fan), shape).astype(np.float32)
    if kind == "bilinear":
        return bilinear_kernel(shape)
    raise WeightError(f"filler type '{kind}' is not supported; give weights for this layer")


def bilinear_kernel(shape: Shape) -> np.ndarray:
    """Caffe's bilinear filler (FCN upsampling): the same 2-d bilinear kernel in every (out, in) slot."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise WeightError(f"the bilinear filler needs a square 4-d kernel, got shape {list(shape)}")
    k = shape[3]
    f = np.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    x = np.arange(k)
    line = 1 - np.abs(x / f - c)
    kernel = (line[:, None] * line[None, :]).astype(np.float32)
    return np.broadcast_to(kernel, shape).copy()
