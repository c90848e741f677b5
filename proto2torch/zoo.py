"""Convert, and verify where a reference lies beside it, every net in a folder tree.

``proto2torch zoo DIR -o OUT [--jobs N]`` finds the nets under ``DIR`` (``.prototxt`` files and
prototxt-format ``.pt`` files, solver files left out; caffe-tensorflow ``.py`` files that chain
``self.feed(...)``), and for each one, in a pool of worker processes:

* loads it (the phase, stages, defines, input shapes and semantics given apply to every net);
* takes its weights from ``<stem>.caffemodel`` (``<stem>.npy`` for a DSL file) beside it, or from
  the folder's only ``.caffemodel`` when the folder holds one net;
* writes ``OUT/<folder>/<stem>.py`` and, with weights, ``<stem>.safetensors`` (or ``.pth``);
* with weights and a reference beside it (``<stem>.npz``/``.h5``, or ``reference.npz``/``.h5``
  when the folder holds one net), runs every blob against it as ``proto2torch verify`` does.

One net's failure never stops the others: typed errors are that net's status, any other
exception is reported as a crash with its last line, and a worker process that dies is
replaced (the nets it was running are retried alone, so the one that kills its process is
found and reported).  The results go to ``OUT/zoo.json`` and ``OUT/zoo.html`` and, as a table,
to the terminal.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import MissingShapeError, Proto2TorchError

NET_SUFFIXES = (".prototxt", ".pt", ".py")
REFERENCE_SUFFIXES = (".npz", ".h5", ".hdf5")

# Statuses, in the order the summary lists them; the first two are the successes.
STATUSES = ("verified", "converted", "mismatch", "needs-shapes", "unsupported", "error", "crashed")
SUPPORTED = frozenset({"verified", "converted", "mismatch", "needs-shapes"})
"""Every layer of the net converts (a net that needs input shapes converts once they are given)."""


@dataclass(frozen=True)
class ZooJob:
    """One net of the tree and the files that go with it (paths relative to the tree's root)."""

    path: str
    format: str
    """prototxt or dsl"""
    weights: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class ZooOptions:
    """What applies to every net: loading options, the weights format, verification tolerance, plugins."""

    inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()
    load: tuple[tuple[str, Any], ...] = ()
    """``load_net``'s options (phase, stages, level, defines, options, dialect, class_name, base): each
    net takes those that apply to its format."""
    weights_format: str = "safetensors"
    rtol: float = 1e-4
    plugins: tuple[str, ...] = ()


@dataclass
class NetResult:
    path: str
    status: str
    name: str = ""
    layers: int | None = None
    parameters: int | None = None
    weights: str | None = None
    reference: str | None = None
    outputs: list[str] = field(default_factory=list)
    """Files written, relative to the output folder."""
    unsupported: list[dict[str, str]] = field(default_factory=list)
    """``layer``, ``type``, ``where`` (file:line) and ``reason`` of each layer that does not convert."""
    error: str | None = None
    max_error: float | None = None
    """Verified nets: the largest ``max|ours - ref| / tolerance`` over the compared blobs (≤ 1 passes)."""
    first_divergence: str | None = None
    note: str | None = None
    seconds: float = 0.0


# --- finding the nets -------------------------------------------------------------------------

_SOLVER = re.compile(rb"^\s*(base_lr|lr_policy|max_iter|solver_mode)\s*:", re.M)
_DSL_CHAIN = re.compile(rb"\.feed\(")


def find_nets(root: str | Path) -> list[ZooJob]:
    """Every net under ``root``, sorted by path, with its weights and reference files."""
    root = Path(root)
    if not root.is_dir():
        raise Proto2TorchError(f"zoo: {root} is not a folder")
    folders: dict[Path, list[tuple[Path, str]]] = {}
    found = (Path(top) / name for top, _, names in os.walk(root) for name in names)  # symlinked folders are not followed: no loops
    for path in sorted(p for p in found if p.suffix in NET_SUFFIXES and p.is_file()):
        kind = _net_format(path)
        if kind is not None:
            folders.setdefault(path.parent, []).append((path, kind))
    jobs = []
    for nets in folders.values():
        for path, kind in nets:
            weights = _beside(path, (".npy",) if kind == "dsl" else (".caffemodel",), alone=len(nets) == 1)
            reference = _beside(path, REFERENCE_SUFFIXES, alone=len(nets) == 1, lone_stems=("reference", "expected"))
            jobs.append(ZooJob(_rel(path, root), kind, weights and _rel(weights, root), reference and _rel(reference, root)))
    return sorted(jobs, key=lambda j: j.path)


def _net_format(path: Path) -> str | None:
    """``prototxt``, ``dsl`` or None (a solver, a binary file, Python that builds no DSL net)."""
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if b"\0" in head or head.startswith(b"PK"):  # a zip (a PyTorch .pt archive) or other binary file
        return None
    if path.suffix == ".py":
        return "dsl" if _DSL_CHAIN.search(head) else None
    return None if _SOLVER.search(head) else "prototxt"


def _beside(net: Path, suffixes: Sequence[str], alone: bool, lone_stems: Sequence[str] = ()) -> Path | None:
    """``<stem><suffix>`` next to ``net``; else, when ``net`` is its folder's only net, the folder's
    single file of those suffixes (named one of ``lone_stems`` when they are given)."""
    for suffix in suffixes:
        candidate = net.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    if not alone:
        return None
    found = [p for p in sorted(net.parent.iterdir()) if p.is_file() and p.suffix in suffixes and (not lone_stems or p.stem in lone_stems)]
    return found[0] if len(found) == 1 else None


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# --- one net (in a worker process) ------------------------------------------------------------

def convert_one(job: ZooJob, root: str, out: str, options: ZooOptions) -> NetResult:
    """Load, convert and (with weights and a reference) verify one net; never raises."""
    start = time.perf_counter()
    result = NetResult(job.path, "error", weights=job.weights, reference=job.reference)
    try:
        _convert(job, Path(root), Path(out), options, result)
    except MissingShapeError as exc:
        result.status, result.error = "needs-shapes", _message(exc)
    except Proto2TorchError as exc:
        result.status, result.error = "error", _message(exc)
    except Exception as exc:  # a bug in proto2torch: reported as this net's crash, the zoo goes on
        result.status = "crashed"
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        result.note = "".join(traceback.format_exception(exc)[-3:])[-2000:]
    prefix = f"{Path(root).resolve()}{os.sep}", f"{root}{os.sep}"  # paths in messages as the report shows them: under the root
    result.error = _relative(result.error, prefix)
    result.unsupported = [dict(u, where=_relative(u["where"], prefix) or "") for u in result.unsupported]
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _relative(text: str | None, prefixes: Sequence[str]) -> str | None:
    for prefix in prefixes:
        text = text.replace(prefix, "") if text is not None else None
    return text


def _convert(job: ZooJob, root: Path, out: Path, options: ZooOptions, result: NetResult) -> None:
    from .api import load_net
    from .ir.weights import parameter_count

    path = root / job.path
    reference = None
    inputs = dict(options.inputs)
    if job.reference and job.weights:
        from .verify import load_reference

        reference = load_reference(root / job.reference)
        inputs = {k[len("input:") :]: tuple(v.shape) for k, v in reference.items() if k.startswith("input:")} | inputs
    elif job.reference:
        result.note = "a reference lies beside the net but no weights: not verified"
    net = load_net(path, inputs or None, format=job.format, **dict(options.load))
    result.name = net.name
    result.layers = sum(1 for n in net.nodes if not n.is_input)
    problems = net.unsupported()
    if problems:
        result.status = "unsupported"
        result.unsupported = [{"layer": p.name, "type": p.type, "where": str(p.where or ""), "reason": p.reason} for p in problems]
        return
    result.parameters = parameter_count(net)
    folder = out / Path(job.path).parent
    stem = _stem(path)
    if job.weights:
        from .api import with_weights
        from .backend.source import write_source

        net = with_weights(net, root / job.weights)
        py, weights, _ = write_source(net, folder, stem, weights_format=options.weights_format)
        result.outputs = [_rel(py, out), _rel(weights, out)]
    else:
        from .backend.source import write_code

        py, _ = write_code(net, folder, stem)
        result.outputs = [_rel(py, out)]
    result.status = "converted"
    if reference is not None:
        from .verify import verify_files

        report = verify_files(net, None, reference, rtol=options.rtol)
        compared = [b for b in report.blobs if b.tolerance > 0 and math.isfinite(b.max_abs)]
        result.max_error = max((b.max_abs / b.tolerance for b in compared), default=0.0)
        first = report.first_divergence
        result.status = "verified" if report.passed else "mismatch"
        if first is not None:
            result.first_divergence = f"layer '{first.layer}' (blob '{first.blob}'): {first.status}"


def _stem(path: Path) -> str:
    from .backend.names import identifier

    return identifier(path.stem)


def _message(exc: Proto2TorchError) -> str:
    return str(exc).splitlines()[0][:1000]


# --- the pool ---------------------------------------------------------------------------------

def _worker_init(plugins: Sequence[str], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    if plugins:
        from .layers.registry import load_plugin

        for plugin in plugins:
            load_plugin(plugin)


def _pool(workers: int, options: ZooOptions) -> ProcessPoolExecutor:
    import multiprocessing

    # forkserver: workers start from a clean process, not a copy of one whose OpenMP threads may be mid-work
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["proto2torch.zoo", "torch"])
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(options.plugins, threads))


def run_zoo(
    root: str | Path,
    out: str | Path,
    options: ZooOptions | None = None,
    jobs: int | None = None,
    on_result: Callable[[NetResult], None] | None = None,
    nets: Sequence[ZooJob] | None = None,
) -> list[NetResult]:
    """Convert every net under ``root`` (or the ``nets`` :func:`find_nets` gave) into ``out`` with
    ``jobs`` worker processes (default: one per core)."""
    options = options or ZooOptions()
    todo = list(nets) if nets is not None else find_nets(root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))
    results: dict[str, NetResult] = {}

    def done(result: NetResult) -> None:
        results[result.path] = result
        if on_result is not None:
            on_result(result)

    broken = _run_pool(todo, str(root), str(out), options, workers, done)
    for job in broken:  # a worker died while these were in the pool: each alone, to find the one that kills it
        again = _run_pool([job], str(root), str(out), options, 1, done)
        if again:
            done(NetResult(job.path, "crashed", weights=job.weights, reference=job.reference, error="the worker process died while converting this net"))
    return [results[j.path] for j in todo]


def _run_pool(todo: Sequence[ZooJob], root: str, out: str, options: ZooOptions, workers: int, done: Callable[[NetResult], None]) -> list[ZooJob]:
    """Run ``todo`` in a pool; the jobs lost to a dying worker are returned."""
    lost = []
    with _pool(workers, options) as pool:
        futures: dict[Future[NetResult], ZooJob] = {pool.submit(convert_one, job, root, out, options): job for job in todo}
        for future in as_completed(futures):
            try:
                done(future.result())
            except BrokenProcessPool:
                lost.append(futures[future])
    return sorted(lost, key=lambda j: j.path)


# --- reports ----------------------------------------------------------------------------------

def summary(results: Iterable[NetResult]) -> dict[str, int]:
    counts = Counter(r.status for r in results)
    return {status: counts.get(status, 0) for status in STATUSES}


def exit_code(results: Sequence[NetResult]) -> int:
    """0 every net converted (and verified where a reference lay beside it); 1 a verification
    failed or a net crashed the converter; 3 some nets do not convert (unsupported layers, an
    error in the file, input shapes needed)."""
    statuses = {r.status for r in results}
    if statuses & {"mismatch", "crashed"}:
        return 1
    return 3 if statuses - {"verified", "converted"} else 0


def to_json(results: Sequence[NetResult], root: str | Path) -> str:
    return json.dumps({"root": str(root), "summary": summary(results), "nets": [asdict(r) for r in results]}, indent=2)


def table(results: Sequence[NetResult]) -> str:
    """The counts per status, then one line per net that did not convert cleanly."""
    counts = summary(results)
    supported = sum(counts[s] for s in SUPPORTED)
    lines = [f"{len(results)} nets: {supported} supported ({', '.join(f'{counts[s]} {s}' for s in STATUSES if counts[s])})"]
    width = max((len(r.path) for r in results), default=0)
    for r in results:
        if r.status in ("verified", "converted"):
            continue
        lines.append(f"  {r.path:{width}s}  {r.status:12s}  {_detail(r)}")
    return "\n".join(lines)


def _detail(r: NetResult) -> str:
    if r.status == "unsupported":
        shown = [f"{u['layer']} ({u['type']})" for u in r.unsupported[:4]]
        return ", ".join(shown) + (f", and {len(r.unsupported) - 4} more" if len(r.unsupported) > 4 else "")
    if r.status == "mismatch":
        return f"{r.first_divergence} (worst {r.max_error:.3g}x the tolerance)"
    return r.error or ""


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { font-weight: 600; white-space: nowrap; }
.verified, .converted { color: #17692b; } .needs-shapes { color: #8a6d00; }
.unsupported, .error { color: #a33; } .mismatch, .crashed { color: #fff; background: #b00020; }
ul { margin: 0; padding-left: 1.2em; } code { font-size: 12px; }
"""


def to_html(results: Sequence[NetResult], root: str | Path) -> str:
    """A static page: the counts, then a row per net (status, layers, parameters, max error, details)."""
    e = html.escape
    counts = summary(results)
    cells = "".join(f"<li><span class='status {s}'>{s}</span>: {counts[s]}</li>" for s in STATUSES if counts[s])
    rows = []
    for r in results:
        details = []
        if r.unsupported:
            details.append("<ul>" + "".join(f"<li><code>{e(u['layer'])}</code> ({e(u['type'])}) {e(u['where'])}: {e(u['reason'])}</li>" for u in r.unsupported) + "</ul>")
        for text in (r.error, r.first_divergence, r.note if r.status != "crashed" else None):
            if text:
                details.append(f"<div>{e(text)}</div>")
        if r.outputs:
            details.append("<div>" + ", ".join(f"<a href='{e(o, quote=True)}'>{e(Path(o).name)}</a>" for o in r.outputs) + "</div>")
        max_error = "" if r.max_error is None else f"{r.max_error:.3g}"
        rows.append(
            f"<tr><td><code>{e(r.path)}</code></td><td class='status {r.status}'>{r.status}</td>"
            f"<td class='num'>{'' if r.layers is None else r.layers}</td><td class='num'>{'' if r.parameters is None else f'{r.parameters:,}'}</td>"
            f"<td class='num'>{max_error}</td><td>{''.join(details)}</td></tr>"
        )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>proto2torch zoo report</title>"
        f"<style>{_CSS}</style></head><body>\n<h1>proto2torch zoo: {e(str(root))}</h1>\n<ul class='summary'>{cells}</ul>\n"
        "<p>max error: the worst blob's difference from the reference, as a multiple of its tolerance (at most 1 passes).</p>\n"
        "<table><thead><tr><th>net</th><th>status</th><th>layers</th><th>parameters</th><th>max error</th><th>details</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table></body></html>\n"
    )


def write_reports(results: Sequence[NetResult], root: str | Path, out: str | Path) -> tuple[Path, Path]:
    from .caffemodel.writer import atomic_open

    out = Path(out)
    paths = out / "zoo.json", out / "zoo.html"
    for path, text in zip(paths, (to_json(results, root), to_html(results, root))):
        with atomic_open(path) as f:
            f.write(text.encode())
    return paths
