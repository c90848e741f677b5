"""Shared pieces of the benchmarks: model files made from the repository's own data,
median timings, and peak memory measured in a fresh process."""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = ROOT / "tests" / "data" / "conformance"
CORPUS = ROOT / "tests" / "data" / "corpus" / "prototxt"
RESNET152 = CORPUS / "KaimingHe__deep-residual-networks" / "prototxt" / "ResNet-152-deploy.prototxt"
WORK = Path(os.environ.get("PROTO2TORCH_BENCH_DIR", Path(tempfile.gettempdir()) / "proto2torch-bench"))


def median_seconds(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


CASE_OF = {
    "resnet50": "net_resnet50",
    "vgg16": "net_vgg16_v1",
    "googlenet": "net_googlenet",
    "squeezenet11": "net_squeezenet11",
    "mobilenet_v2": "net_mobilenet_v2",
}
"""Benchmark models made from the conformance cases (their recipe weights regenerate bit-exactly)."""


def model(name: str) -> tuple[Path, Path]:
    """(prototxt, caffemodel) of a benchmark model, written once into ``WORK``.

    ``resnet50`` (V2) and ``vgg16`` (V1, 553 MB) come from the conformance recipes, whose
    weights regenerate bit-exactly; ``resnet152`` (V2) is the corpus deploy file with
    weights drawn from its fillers.
    """
    from proto2torch.api import load_net, with_weights
    from proto2torch.caffemodel.writer import write_caffemodel
    from proto2torch.conformance import Case

    WORK.mkdir(parents=True, exist_ok=True)
    weights = WORK / f"{name}.caffemodel"
    if name == "resnet152":
        prototxt = RESNET152
        if not weights.exists():
            net = with_weights(load_net(prototxt), None)
            write_caffemodel(weights, ((n.name, n.type, n.blobs) for n in net.nodes if n.blobs), net_name=net.name)
        return prototxt, weights
    case = Case.load(CASES / CASE_OF[name])
    if not weights.exists():
        case.write_caffemodel(weights)
    return case.prototxt, weights


def bytecode_env(cached: bool) -> dict[str, str]:
    """This environment with Python's bytecode cache on (a private ``PYTHONPYCACHEPREFIX``, as an
    installed package has its .pyc files) or off (``PYTHONDONTWRITEBYTECODE``: every module compiled
    anew in every process, which some machines set and no installed package pays)."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    return {**base, "PYTHONPYCACHEPREFIX": str(WORK / "pycache")} if cached else {**base, "PYTHONDONTWRITEBYTECODE": "1"}


def fresh_process(code: str) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter (after the imports) and report its wall time in
    seconds and its memory in MiB: ``baseline`` once the imports are done, ``peak`` the
    high-water mark of resident memory.  ``code`` must keep what it builds alive.  Bytecode is
    cached (:func:`bytecode_env`), so modules that ``code`` imports lazily cost what they cost an
    installed package, not a compile of their source."""
    script = f"""
import gc, json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(Path(__file__).parent)!r})
import numpy, torch, proto2torch
from proto2torch.prototxt.protobuf import caffe_pb2
caffe_pb2()
torch.set_num_threads(2)
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
gc.collect()
baseline = rss()
start = time.perf_counter()
{code}
seconds = time.perf_counter() - start
# VmHWM is this address space's high-water mark (ru_maxrss would carry the parent's over exec)
with open('/proc/self/status') as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) / 1024
print(json.dumps({{"seconds": seconds, "baseline": baseline, "peak": peak}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=bytecode_env(cached=True))
    return json.loads(out.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Runs:
    """Fresh-process measurements of one piece of code."""

    median_s: float
    best_s: float
    """The fastest process: the code's own cost, without the machine's stalls."""
    peak_mib: float
    """The largest growth of resident memory over the process's state after its imports."""


def fresh_runs(codes: dict[str, str], repeat: int = 5) -> dict[str, Runs]:
    """Per label, its :class:`Runs` over ``repeat`` fresh processes, after one of each that is not
    counted (it writes the bytecode cache).  The codes take turns, round by round and in a shuffled
    (seeded) order each round, so that a slow spell of the machine falls on all of them alike rather
    than on whichever ran after the same neighbour each time.

    Why the best as well as the median: numpy asks the kernel for transparent huge pages for large
    arrays, and on this VM a process that faults in hundreds of MiB of them soon after another
    freed as much sometimes stalls while the kernel compacts memory (VGG-16's 528 MiB loaded in
    0.1 s or in 1.1 s, the same code).  ``read()`` into a ``bytes`` object gets ordinary pages and a
    steady, slower rate."""
    for code in codes.values():
        fresh_process(code)
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in codes}
    order = random.Random(0)
    for _ in range(repeat):
        for label in order.sample(list(codes), len(codes)):
            runs[label].append(fresh_process(codes[label]))
    return {
        label: Runs(
            statistics.median(r["seconds"] for r in rs), min(r["seconds"] for r in rs), max(r["peak"] - r["baseline"] for r in rs)
        )
        for label, rs in runs.items()
    }


def scratch(prefix: str) -> Path:
    """A temporary folder for a benchmark's files, removed when the process exits (the emitted weights
    of VGG-16 alone are 0.5 GB for each batch size)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)
