"""Compare a converted net with reference blobs (e.g. what Caffe computed), blob by blob.

Criterion per blob: ``max|ours - ref| <= rtol * max(1, max|ref|)``; ArgMax outputs must
match exactly.  The report lists every reference blob in execution order and names the
first layer whose output parts from the reference.

Deep nets with random weights can be ill-conditioned: a rounding-level change of the
input moves some blob by more than the tolerance, in Caffe as much as here (the SSD
case's last blocks move by 1.4 under a one-ulp input change).  No implementation that
does not repeat Caffe's exact float rounding order can match such blobs end to end,
so for a blob that misses the tolerance the verifier also

* measures its conditioning: the change when every input moves by one ulp; and
* checks it layer-locally: the layers that write the blob are run on the reference's
  own values of their inputs (when the reference holds them).

A blob that is ill-conditioned and passes the layer-local check is reported as such
and counts as a match; one without a layer-local check is "unverifiable" (a match
unless ``strict``).  Everything else over the tolerance is a mismatch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backend.live import lower_node, make_module
from .backend.lowering import AliasOp, CallOp, In, InList, ModuleOp
from .errors import Proto2TorchError
from .ir.graph import Net, Node

Runner = Callable[[Mapping[str, np.ndarray]], Mapping[str, torch.Tensor]]


@dataclass
class BlobResult:
    blob: str
    layer: str
    shape: list[int]
    max_abs: float
    max_ref: float
    tolerance: float
    status: str
    """ok, ill-conditioned, unverifiable, MISMATCH, SHAPE, MISSING"""
    detail: str = ""
    sensitivity: float | None = None
    local_error: float | None = None
    in_place: list[str] = field(default_factory=list)
    """Layers after ``layer`` that rewrite this blob in place (its value is theirs)."""

    def passed(self, strict: bool = False) -> bool:
        return self.status in ("ok", "ill-conditioned") or (self.status == "unverifiable" and not strict)


@dataclass
class Report:
    blobs: list[BlobResult] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    """Reference blobs the net does not produce."""
    strict: bool = False

    @property
    def passed(self) -> bool:
        return bool(self.blobs) and all(b.passed(self.strict) for b in self.blobs)

    @property
    def first_divergence(self) -> BlobResult | None:
        return next((b for b in self.blobs if not b.passed(self.strict)), None)

    def to_json(self) -> str:
        first = self.first_divergence
        return json.dumps(
            {
                "passed": self.passed,
                "first_diverging_layer": first.layer if first else None,
                "first_diverging_blob": first.blob if first else None,
                "blobs": [asdict(b) for b in self.blobs],
                "reference_blobs_not_in_net": self.unused,
            },
            indent=2,
        )

    def table(self) -> str:
        rows = [("blob", "layer", "shape", "max|diff|", "tolerance", "status")]
        for b in self.blobs:
            status = b.status + (f" ({b.detail})" if b.detail else "")
            rows.append((b.blob, b.layer, "x".join(map(str, b.shape)), f"{b.max_abs:.3g}", f"{b.tolerance:.3g}", status))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
        counts = {s: sum(1 for b in self.blobs if b.status == s) for s in ("ok", "ill-conditioned", "unverifiable")}
        bad = [b for b in self.blobs if not b.passed(self.strict)]
        first = self.first_divergence
        lines.append("")
        if not self.blobs:
            lines.append("FAIL: the reference holds no blob that the net computes")
        elif first is None:
            extra = ""
            if counts["ill-conditioned"] or counts["unverifiable"]:
                extra = f" ({counts['ill-conditioned']} ill-conditioned but correct layer by layer, {counts['unverifiable']} unverifiable)"
            lines.append(f"PASS: {len(self.blobs)} blobs match{extra}")
        else:
            lines.append(f"FAIL: {len(bad)} of {len(self.blobs)} blobs differ; first diverging layer: '{first.layer}' (blob '{first.blob}')")
        if self.unused:
            lines.append(f"note: {len(self.unused)} reference blob(s) are not produced by the net: {', '.join(self.unused[:10])}")
        return "\n".join(lines)


def load_reference(path: str | Path) -> dict[str, np.ndarray]:
    """Reference blobs from a ``.npz``, an HDF5 file (``.h5``/``.hdf5``: every dataset, a blob
    named ``conv1/7x7_s2`` sits in group ``conv1``, as h5py writes it; Caffe's HDF5Output and
    pycaffe dumps), or a folder of ``.npy`` files named after the blobs (``conv1/7x7_s2.npy`` in a
    subfolder likewise).  Net inputs are the arrays named ``input:NAME``."""
    path = Path(path)
    try:
        if path.is_dir():
            files = sorted(path.rglob("*.npy"))
            if not files:
                raise Proto2TorchError(f"reference folder {path} holds no .npy files")
            return {f.relative_to(path).with_suffix("").as_posix(): np.load(f, allow_pickle=False) for f in files}
        if path.suffix.lower() in (".h5", ".hdf5"):
            try:
                import h5py
            except ImportError:
                raise Proto2TorchError("reading an HDF5 reference needs h5py: pip install 'proto2torch[data]'") from None
            out: dict[str, np.ndarray] = {}
            with h5py.File(path, "r") as f:
                f.visititems(lambda name, item: out.__setitem__(name, np.asarray(item)) if isinstance(item, h5py.Dataset) else None)
            if not out:
                raise Proto2TorchError(f"HDF5 reference {path} holds no datasets")
            return out
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise Proto2TorchError(f"cannot read reference {path}: {exc}") from None


def prepare_for_reference(net: Net, weights: Any, reference: dict[str, np.ndarray]) -> Net:
    """``net`` ready to run on ``reference``: inputs the reference lacks are fed from the net's data
    layers (their first batch, as Caffe's run read it, added to ``reference``), the weights attached,
    and a missing input is an error before anything runs."""
    from .api import with_weights

    fed = data_layer_inputs(net, reference)
    if fed:
        from .ir.shapes import infer_shapes

        reference.update({f"input:{k}": v for k, v in fed.items()})
        net = infer_shapes(net, {k: v.shape for k, v in fed.items()})
    net = with_weights(net, weights)
    reference_inputs(net, reference)
    return net


def verify_files(net: Net, weights: Any, reference: dict[str, np.ndarray], *, backend: str = "live", rtol: float = 1e-4, strict: bool = False) -> Report:
    """What ``proto2torch verify`` does once the net is loaded: :func:`prepare_for_reference`, then
    the net run by the live module or the emitted source and every blob compared."""
    net = prepare_for_reference(net, weights, reference)
    return verify_net(net, reference, runner(net, backend), rtol=rtol, strict=strict)


def verify_optimized(net: Net, reference: Mapping[str, np.ndarray], *, rtol: float = 1e-4) -> tuple[Any, list[tuple[str, float]]]:
    """``proto2torch.optimize`` the live module of ``net`` (prepared: :func:`prepare_for_reference`) on
    the reference's inputs, then compare the net's outputs with the reference: the chosen module and
    (blob, worst difference / tolerance) per output."""
    from .backend.live import build_graph_module
    from .optimization import optimize

    inputs = reference_inputs(net, reference)
    args = [torch.from_numpy(inputs[net.values[v].blob]) for v in net.inputs]
    fast = optimize(build_graph_module(net), *args, rtol=rtol)
    with torch.no_grad():
        out = fast(*args)
    names = [net.values[v].blob for v in net.outputs]
    got = dict(out) if isinstance(out, dict) else dict(zip(names, out if isinstance(out, (tuple, list)) else [out]))
    errors = []
    for blob in names:
        if blob in reference and blob in got:
            want = np.asarray(reference[blob], np.float64)
            mine = got[blob].detach().numpy().reshape(want.shape)
            errors.append((blob, error_ratio(want, mine, rtol)))
    return fast, errors


def data_layer_inputs(net: Net, reference: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Net inputs the reference lacks that the net's data layers produce: their first batch."""
    missing = {net.values[v].blob for v in net.inputs} - {k[len("input:") :] for k in reference if k.startswith("input:")}
    if not missing:
        return {}
    from .data.layers import NetFeed

    feed = NetFeed(net)
    if not feed or not missing <= set(feed.tops()):
        return {}
    return {k: v for k, v in next(feed).items() if k in missing}


def runner(net: Net, backend: str = "live") -> Runner:
    """Inputs by blob name -> every blob, through the live module or the emitted source."""
    from .backend.live import build_graph_module, run_blobs

    if backend == "source":
        from .backend.source import load_emitted, run_source_blobs

        module = load_emitted(net)
        return lambda inputs: run_source_blobs(module, net, {k: torch.from_numpy(v) for k, v in inputs.items()})
    graph = build_graph_module(net)
    return lambda inputs: run_blobs(graph, **{k: torch.from_numpy(v) for k, v in inputs.items()})


def reference_inputs(net: Net, reference: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    inputs = {}
    for v in net.inputs:
        blob = net.values[v].blob
        key = f"input:{blob}"
        if key not in reference:
            raise Proto2TorchError(f"the reference has no '{key}' array; it must hold every net input")
        inputs[blob] = np.asarray(reference[key], dtype=np.float32)
    return inputs


def verify_net(
    net: Net,
    reference: Mapping[str, np.ndarray],
    run: Runner,
    rtol: float = 1e-4,
    *,
    strict: bool = False,
    support: Mapping[str, np.ndarray] | None = None,
) -> Report:
    """Run ``net`` (with weights) through ``run`` on the reference inputs and compare every blob.

    ``support`` holds further reference values that are not compared themselves but may
    serve as layer inputs for the layer-local check of ill-conditioned blobs.
    """
    inputs = reference_inputs(net, reference)
    ours = {k: v.detach().cpu().numpy() for k, v in run(inputs).items()}
    producer = _final_writers(net)
    alias = dict(net.meta.get("caffe_blobs", {}))  # a DSL net names Caffe's blobs after its layers
    report = Report(strict=strict)
    nudged: dict[str, np.ndarray] | None = None
    expected_names = [k for k in reference if not k.startswith("input:")]
    order = {blob: i for i, blob in enumerate(producer)}
    for blob in sorted(expected_names, key=lambda b: order.get(alias.get(b, b), len(order))):
        mine = alias.get(blob, blob)
        if mine not in producer:
            report.unused.append(blob)
            continue
        ref = np.asarray(reference[blob])
        writers = producer[mine]
        layer = writers[0].name
        if mine not in ours:
            report.blobs.append(BlobResult(blob, layer, list(ref.shape), float("nan"), 0.0, 0.0, "MISSING", "the net computed no such blob"))
            continue
        got = ours[mine]
        max_ref = float(np.abs(ref).max()) if ref.size else 0.0
        tol = rtol * max(1.0, max_ref)
        note = ""
        if got.shape != ref.shape and _squeezed(got.shape) == _squeezed(ref.shape):
            got, note = got.reshape(ref.shape), f"ours is {list(got.shape)}: differs by unit axes only"
        if got.shape != ref.shape:
            report.blobs.append(BlobResult(blob, layer, list(ref.shape), float("nan"), max_ref, tol, "SHAPE", f"ours {list(got.shape)}"))
            continue
        exact = writers[-1].type == "ArgMax"
        err = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
        result = BlobResult(blob, layer, list(ref.shape), err, max_ref, 0.0 if exact else tol, "ok", note, in_place=[w.name for w in writers[1:]])
        if (exact and err != 0.0) or (not exact and not err <= tol):
            result.status = "MISMATCH"
            if not exact:
                if nudged is None:
                    nudged = {k: v.detach().cpu().numpy() for k, v in run(_nudge(inputs)).items()}
                result.sensitivity = float(np.abs(nudged[mine].reshape(got.shape).astype(np.float64) - got).max())
                _judge(net, writers, {**(support or {}), **reference}, result, tol)
        report.blobs.append(result)
    return report


def error_ratio(want: Any, got: Any, rtol: float) -> float:
    """``max|got - want|`` as a multiple of the tolerance :func:`verify_net` allows a blob,
    ``rtol * max(1, max|want|)`` (≤ 1 passes; 0 for an empty blob)."""
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    if not want.size:
        return 0.0
    return float(np.abs(got - want).max()) / (rtol * max(1.0, float(np.abs(want).max())))


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _nudge(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every non-integer input moved up by one ulp (integer inputs are ids: left alone)."""
    out = {}
    for name, x in inputs.items():
        out[name] = x if np.array_equal(x, np.floor(x)) else np.nextafter(x, np.float32(np.inf)).astype(np.float32)
    return out


def _final_writers(net: Net) -> dict[str, list[Node]]:
    """Blob name → the layers that write it, in order (the producer, then in-place layers)."""
    out: dict[str, list[Node]] = {}
    for node in net.nodes:
        for v in node.outputs:
            out.setdefault(net.values[v].blob, []).append(node)
    return out


def _judge(net: Net, writers: list[Node], reference: Mapping[str, np.ndarray], result: BlobResult, tol: float) -> None:
    """A blob over the tolerance: rerun its layers on the reference's own inputs.  Right there means the
    difference came in with the inputs and grew (accumulated rounding: "ill-conditioned"); wrong there
    means this layer is wrong.  Both numbers are reported."""
    local = layer_local_error(net, writers, reference)
    sens = f"a one-ulp input change moves it by {result.sensitivity:.3g}"
    if local is None:
        if result.sensitivity is not None and result.sensitivity > tol:
            result.status = "unverifiable"
            result.detail = f"ill-conditioned: {sens}; the reference lacks the inputs of '{writers[0].name}' for a layer-local check"
        else:
            result.detail = f"{sens}; the reference lacks the inputs of '{writers[0].name}' for a layer-local check"
        return
    result.local_error = local
    if local <= tol:
        result.status = "ill-conditioned"
        result.detail = f"accumulated rounding: this layer is right on the reference's inputs (layer-local max|diff| {local:.3g}); {sens}"
    else:
        result.detail = f"this layer is wrong: on the reference's own inputs max|diff| is {local:.3g} (tolerance {tol:.3g}); {sens}"


def layer_local_error(net: Net, writers: list[Node], reference: Mapping[str, np.ndarray]) -> float | None:
    """Run the layers that write one blob on the reference's values of their inputs; max|diff| or None."""
    first = writers[0]
    target = net.values[first.outputs[0]].blob if first.outputs else None
    values: dict[str, torch.Tensor] = {}
    for node in writers:
        args = []
        for v in node.inputs:
            blob = net.values[v].blob
            if blob == target and blob in values:
                args.append(values[blob])
            elif blob != target and blob in reference:
                args.append(torch.from_numpy(np.asarray(reference[blob], dtype=np.float32)))
            elif blob != target and f"input:{blob}" in reference:
                args.append(torch.from_numpy(np.asarray(reference[f"input:{blob}"], dtype=np.float32)))
            else:
                return None
        out = _run_node(net, node, args)
        for v, tensor in zip(node.outputs, out):
            values[net.values[v].blob] = tensor
    if target is None or target not in values:
        return None
    return float(np.abs(values[target].numpy().astype(np.float64) - np.asarray(reference[target])).max())


def _run_node(net: Net, node: Node, args: list[torch.Tensor]) -> list[torch.Tensor]:
    op = lower_node(net, node)
    with torch.no_grad():
        if isinstance(op, AliasOp):
            return [args[i] for i in op.sources]
        if isinstance(op, ModuleOp):
            module = make_module(op)
            call = args if op.call is None else [args[x.index] if isinstance(x, In) else x for x in op.call]
            out = module(*call)
        else:
            assert isinstance(op, CallOp)
            bound = [args[x.index] if isinstance(x, In) else (list(args) if isinstance(x, InList) else x) for x in op.args]
            out = op.fn(*bound, **op.kwargs)
    return list(out) if isinstance(out, (tuple, list)) else [out]
