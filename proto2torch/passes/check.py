"""``surgery --check``: run the net before and after each pass on a seeded input and test the
property the pass must keep (:attr:`Pass.keeps`):

* ``outputs`` (``fold-bn``, ``fc-to-conv``, ``gap-to-conv``): every blob of both nets that the pass
  does not redefine on purpose holds the same values (up to unit axes: fc-to-conv's N×K×1×1 maps at
  the original input size are the classifier's N×K outputs); a blob the pass turns into a map (gap-
  to-conv) averages, over its pixels, to the blob it replaces;
* ``shift`` (``dilate``, exact policy): each blob of the dilated net, sampled every
  (old jump / new jump) pixels, equals the original blob;
* ``receptive-field`` (``dilate``, deeplab policy): no layer's receptive field shrinks; the
  before/after table is reported.

The first blob, in execution order, that breaks the property names the layer that wrote it.
Passes that change what the net computes by design (``cut``, ``append``, ``transplant``, ...) are
reported as not checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..errors import Proto2TorchError
from ..ir.graph import Net
from ..verify import error_ratio
from . import Pass, PassResult, run_passes


@dataclass
class CheckResult:
    step: str
    """The pass, as its spec (``dilate:output_stride=8,policy=exact``)."""
    kind: str | None
    passed: bool | None
    """None: the pass keeps nothing by design, or the check could not run."""
    detail: str
    layer: str | None = None
    """Where the property broke: the layer that wrote the first failing blob."""
    blob: str | None = None
    compared: int = 0
    worst: float = 0.0
    """The worst error as a multiple of its tolerance (≤ 1 passes)."""
    table: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = "not checked" if self.passed is None else "PASS" if self.passed else "FAIL"
        return f"check {self.step}: {verdict}: {self.detail}"


def check_passes(net: Net, passes: Sequence[Pass | str], *, seed: int = 0, rtol: float = 1e-4, check_weights: bool = True) -> tuple[PassResult, list[CheckResult]]:
    """Apply ``passes`` like :func:`run_passes` and check each step; returns the result and one check per pass."""
    checks: list[CheckResult] = []
    inputs = _seeded_inputs(net, seed)

    def step(p: Pass, before: Net, result: PassResult) -> None:
        checks.append(_check(p, before, result, inputs, rtol))

    return run_passes(net, passes, check_weights=check_weights, on_step=step), checks


def _spec(p: Pass) -> str:
    import dataclasses

    options = ",".join(f"{f.name}={getattr(p, f.name)}" for f in dataclasses.fields(p) if getattr(p, f.name) not in ("", False, None))  # type: ignore[arg-type]
    return p.name + (f":{options}" if options else "")


def _seeded_inputs(net: Net, seed: int) -> dict[str, np.ndarray] | None:
    rng = np.random.default_rng(seed)
    out = {}
    for v in net.inputs:
        shape = net.values[v].shape
        if shape is None:
            return None
        out[net.values[v].blob] = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    return out


def _check(p: Pass, before: Net, result: PassResult, inputs: dict[str, np.ndarray] | None, rtol: float) -> CheckResult:
    kind = p.property_kind()
    spec = _spec(p)
    if kind is None:
        return CheckResult(spec, None, None, "the pass changes what the net computes by design")
    if kind == "receptive-field":
        return _check_receptive_fields(spec, before, result.net)
    if inputs is None:
        return CheckResult(spec, kind, None, "the net's input shapes are not known: give them with --input")
    after = result.net
    try:
        a, b = _run(before, inputs), _run(after, inputs)
    except (Proto2TorchError, RuntimeError, ValueError, IndexError) as exc:  # e.g. labels a seeded input cannot stand in for
        return CheckResult(spec, kind, None, f"the net does not run on a seeded input ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")
    jumps = (_jumps(before), _jumps(after)) if kind == "shift" else None
    compared, worst = 0, 0.0
    order = _blob_order(after)
    for blob, writer in order:
        if blob in result.redefined or blob in result.means:
            continue
        old = result.renamed.get(blob, blob)
        if old not in a or blob not in b or old in inputs:
            continue
        want, got = a[old], b[blob]
        if jumps is not None:
            got = _sampled(got, want, jumps[0].get(old), jumps[1].get(blob))
            if got is None:
                continue
        error = _error(want, got, rtol)
        if error is None:
            return CheckResult(spec, kind, False, f"layer '{writer}' (blob '{blob}') has shape {list(b[blob].shape)}, the net before had {list(want.shape)}", writer, blob, compared, worst)
        compared += 1
        worst = max(worst, error)
        if error > 1:
            how = "sampled every few pixels, " if jumps is not None else ""
            return CheckResult(spec, kind, False, f"layer '{writer}' (blob '{blob}') {how}differs from the net before by {error:.3g}x the tolerance", writer, blob, compared, worst)
    notes = []
    for blob, source in result.means.items():
        got = b[blob].reshape(*b[blob].shape[:2], -1).mean(-1)
        error = _error(a[source], got, rtol)
        writer = dict(order).get(blob, blob)
        if error is None or error > 1:
            shown = "a different shape" if error is None else f"{error:.3g}x the tolerance off"
            return CheckResult(spec, kind, False, f"layer '{writer}': the mean of '{blob}' over its map is {shown} from '{source}' before", writer, blob, compared, worst)
        worst = max(worst, error)
        notes.append(f"the mean of '{blob}' over its {'x'.join(map(str, b[blob].shape[2:]))} map equals '{source}'")
    what = "sampled at the original pixels equal the net before" if kind == "shift" else "are unchanged"
    skipped = f"; {len(result.redefined)} redefined on purpose not compared" if result.redefined else ""
    detail = "; ".join([*notes, f"{compared} blobs {what} (worst {worst:.2g}x the tolerance){skipped}"])
    return CheckResult(spec, kind, True, detail, compared=compared, worst=worst)


def _run(net: Net, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    from ..backend.live import build_graph_module, run_blobs

    module = build_graph_module(net)
    return {k: v.numpy() for k, v in run_blobs(module, **{k: torch.from_numpy(v) for k, v in inputs.items()}).items()}


def _blob_order(net: Net) -> list[tuple[str, str]]:
    """(blob, the layer that started its final value), in execution order: a layer that writes a
    blob without reading it starts it anew; in-place layers only rewrite it."""
    first: dict[str, str] = {}
    for node in net.nodes:
        reads = {net.values[v].blob for v in node.inputs}
        for v in node.outputs:
            blob = net.values[v].blob
            if blob not in first or blob not in reads:
                first[blob] = node.name
    return list(first.items())


def _error(want: np.ndarray, got: np.ndarray, rtol: float) -> float | None:
    if got.shape != want.shape:
        if tuple(d for d in got.shape if d != 1) != tuple(d for d in want.shape if d != 1):
            return None
        got = got.reshape(want.shape)
    return error_ratio(want, got, rtol)


def _jumps(net: Net) -> dict[str, tuple[Fraction, Fraction]]:
    from ..summary import layer_rows

    out = {}
    for row in layer_rows(net):
        if row.stride is not None:
            for blob in row.tops:
                out[blob] = (Fraction(row.stride[0]), Fraction(row.stride[1]))
    return out


def _sampled(got: np.ndarray, want: np.ndarray, old: tuple[Fraction, Fraction] | None, new: tuple[Fraction, Fraction] | None) -> np.ndarray | None:
    """``got`` at the pixels ``want`` has: every (old jump / new jump)-th pixel, cut to ``want``'s size."""
    if got.ndim != 4 or want.ndim != 4:
        return got if got.shape == want.shape else None
    if old is None or new is None:
        return None
    ratio = [o / n for o, n in zip(old, new)]
    if any(r.denominator != 1 or r < 1 for r in ratio):
        return None
    ry, rx = (int(r) for r in ratio)
    sampled = got[:, :, ::ry, ::rx][:, :, : want.shape[2], : want.shape[3]]
    return sampled if sampled.shape == want.shape else None


def _check_receptive_fields(spec: str, before: Net, after: Net) -> CheckResult:
    from ..summary import layer_rows

    old = {r.name: r.receptive_field for r in layer_rows(before)}
    table, compared = [], 0
    for row in layer_rows(after):
        was, now = old.get(row.name), row.receptive_field
        if not isinstance(was, list) or not isinstance(now, list):
            continue
        compared += 1
        if was != now:
            table.append(f"{row.name}: {_rf(was)} -> {_rf(now)}")
        if now[0] < was[0] or now[1] < was[1]:
            return CheckResult(spec, "receptive-field", False, f"layer '{row.name}': its receptive field shrank from {_rf(was)} to {_rf(now)}", row.name, row.tops[0] if row.tops else None, compared, table=table)
    grown = f"; {len(table)} grew (last: {table[-1]})" if table else ""
    return CheckResult(spec, "receptive-field", True, f"no receptive field of {compared} layers shrank{grown}", compared=compared, table=table)


def _rf(value: list[int]) -> str:
    return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"
