"""Forward speed of five converted nets, every proto2torch path against OpenCV's dnn, in one run.

    OPENCV_PY=/tmp/cv4 python benchmarks/forward.py [--nets resnet50,googlenet,...] [--batches 1,8,32] [--threads 2]

The nets are the conformance cases' ResNet-50, GoogLeNet, SqueezeNet 1.1, MobileNet v2 and VGG-16
with their recipe weights, at each batch size.  Per net and batch, in the same process:

* the hand-written PyTorch port (ResNet-50: Caffe's layers, and the idiomatic affine BatchNorm2d);
* the live torch.fx module and the emitted standalone source, as converted;
* both after the ``fold-bn`` pass, in channels_last memory format, and that scripted, frozen and
  optimised for inference by TorchScript;
* ``proto2torch.optimize`` on the fold-bn net: the fastest candidate it measured, with its build
  (compile) time;
* OpenCV's dnn reading the same prototxt and caffemodel (in a subprocess; OpenCV 5 has no Caffe
  importer, so ``OPENCV_PY`` points at an OpenCV 4 install), and Caffe when it is installed
  (pycaffe on ``CAFFE_PY``).

Times are medians after three warm-up runs on ``--threads`` threads; ratios are OpenCV's time over each
path's (above 1: faster than OpenCV).  The issue's goal is 1.5 at batch 1.  Build times are the
seconds a path takes before its first forward (scripting, freezing, compiling, measuring).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import median_seconds, model, scratch, table
from torch import Tensor, nn


class BatchNormThenScale(nn.Module):
    """Caffe's pair as two layers: BatchNorm without affine, then a per-channel Scale with bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def norm(channels: int, separate_scale: bool) -> nn.Module:
    return BatchNormThenScale(channels) if separate_scale else nn.BatchNorm2d(channels)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int, separate_scale: bool):
        super().__init__()
        self.conv_a = nn.Conv2d(cin, mid, 1, stride, bias=False)
        self.bn_a = norm(mid, separate_scale)
        self.conv_b = nn.Conv2d(mid, mid, 3, 1, 1, bias=False)
        self.bn_b = norm(mid, separate_scale)
        self.conv_c = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn_c = norm(cout, separate_scale)
        self.project = cin != cout or stride != 1
        if self.project:
            self.conv_p = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.bn_p = norm(cout, separate_scale)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn_a(self.conv_a(x)))
        y = F.relu(self.bn_b(self.conv_b(y)))
        y = self.bn_c(self.conv_c(y))
        shortcut = self.bn_p(self.conv_p(x)) if self.project else x
        return F.relu(y + shortcut)


class HandWrittenResNet50(nn.Module):
    """Kaiming He's ResNet-50 written by hand; ``separate_scale``: each batch norm followed by a
    Scale layer, exactly Caffe's layer list, otherwise the idiomatic affine BatchNorm2d."""

    def __init__(self, separate_scale: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
        self.bn1 = norm(64, separate_scale)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        blocks, cin = [], 64
        for mid, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(count):
                blocks.append(Bottleneck(cin, mid, 4 * mid, stride if i == 0 else 1, separate_scale))
                cin = 4 * mid
        self.blocks = nn.Sequential(*blocks)
        self.pool5 = nn.AvgPool2d(7, 1)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))
        x = self.pool5(self.blocks(x))
        return torch.softmax(self.fc(x.flatten(1)), 1)


OPENCV_RUN = """
import json, sys, time, statistics
import numpy as np
import cv2
cv2.setNumThreads(int(sys.argv[4]))
net = cv2.dnn.readNetFromCaffe(sys.argv[1], sys.argv[2])
x = np.load(sys.argv[3])
times = []
for i in range(int(sys.argv[5]) + 3):
    start = time.perf_counter(); net.setInput(x); net.forward(); times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times[3:])))
"""


def opencv_seconds(prototxt: Path, weights: Path, x: np.ndarray, threads: int, repeat: int) -> float | None:
    """OpenCV's dnn in a subprocess.  OpenCV 5 dropped the Caffe importer: point ``OPENCV_PY`` at an
    OpenCV 4 install (``pip install --target /tmp/cv4 opencv-python-headless==4.14.0.94``)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if os.environ.get("OPENCV_PY"):
        env["PYTHONPATH"] = os.pathsep.join([os.environ["OPENCV_PY"], os.environ.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        try:
            out = subprocess.run(
                [sys.executable, "-c", OPENCV_RUN, str(prototxt), str(weights), str(Path(tmp) / "x.npy"), str(threads), str(repeat)],
                capture_output=True, text=True, env=env, timeout=600,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return None
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None


CAFFE_RUN = """
import json, sys, time, statistics
import numpy as np
import caffe
caffe.set_mode_cpu()
net = caffe.Net(sys.argv[1], sys.argv[2], caffe.TEST)
net.blobs["data"].data[...] = np.load(sys.argv[3])
times = []
for i in range(int(sys.argv[4]) + 3):
    start = time.perf_counter(); net.forward(); times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times[3:])))
"""


def caffe_seconds(prototxt: Path, weights: Path, x: np.ndarray, threads: int, repeat: int) -> float | None:
    """Caffe in a subprocess (its BLAS reads the thread count from the environment)."""
    path = os.environ.get("CAFFE_PY", "/tmp/caffe-oracle/src/python")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([path, os.environ.get("PYTHONPATH", "")]), GLOG_minloglevel="2")
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        try:
            out = subprocess.run(
                [sys.executable, "-c", CAFFE_RUN, str(prototxt), str(weights), str(Path(tmp) / "x.npy"), str(repeat)],
                capture_output=True, text=True, env=env, timeout=600,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return None
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None


def timed_seconds(fn: Callable[[], object], repeat: int, budget: float) -> float:
    """Median of up to ``repeat`` calls after three warm-up calls (TorchScript optimises on its
    third), fewer (at least 3) where one call is long, so that a row takes about ``budget`` seconds."""
    first = median_seconds(fn, repeat=1, warmup=2)  # the third warm-up call, timed
    return median_seconds(fn, repeat=max(3, min(repeat, int(budget / max(first, 1e-6)))), warmup=0)


def frozen(module: nn.Module, x: Tensor) -> nn.Module:
    """Traced, frozen and optimised for inference by TorchScript (oneDNN fusions), in channels_last:
    ``proto2torch.optimize``'s TorchScript candidate alone.  (Traced, not scripted: scripting torch.nn's
    Conv2d after torch.compile has run in the same process failed once with "builtin cannot be used as
    a value", TorchScript mistaking a list attribute for a builtin it had registered by id().)"""
    from proto2torch.optimization import _torchscript

    return _torchscript(module.eval(), (x,), channels_last=True)


def paths(name: str, net: object, folded: object, x: Tensor, work: Path) -> list[tuple[str, Callable[[], nn.Module], bool]]:
    """(label, builder, channels_last input) of every path measured for one net."""
    from proto2torch.backend.live import build_graph_module
    from proto2torch.backend.source import load_emitted
    from proto2torch.optimization import optimize

    def optimized() -> nn.Module:
        fast = optimize(build_graph_module(folded), x)
        optimized.label = f"proto2torch.optimize, fold-bn (chose {fast.choice})"  # type: ignore[attr-defined]
        return fast

    hand = [
        ("hand-written port, Caffe's layers", lambda: HandWrittenResNet50(separate_scale=True), False),
        ("hand-written port, affine BatchNorm2d", lambda: HandWrittenResNet50(separate_scale=False), False),
    ] if name == "resnet50" else []  # fmt: skip
    return [
        *hand,
        ("live module", lambda: build_graph_module(net), False),
        ("emitted source", lambda: load_emitted(net, work / "plain"), False),
        ("live module, fold-bn", lambda: build_graph_module(folded), False),
        ("live module, fold-bn, channels_last", lambda: build_graph_module(folded).to(memory_format=torch.channels_last), True),
        ("emitted source, fold-bn, channels_last", lambda: load_emitted(folded, work / "folded").to(memory_format=torch.channels_last), True),
        ("fold-bn, channels_last, TorchScript optimize_for_inference", lambda: frozen(build_graph_module(folded), x), True),
        ("proto2torch.optimize", optimized, False),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nets", default="resnet50,googlenet,squeezenet11,mobilenet_v2,vgg16")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15, help="forwards per row at most")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per row, about (fewer forwards for slow rows, at least 3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from proto2torch.api import load_net, with_weights
    from proto2torch.passes import run_passes

    work = scratch("proto2torch-forward-")
    summary = [("net", "batch", "OpenCV dnn", "Caffe", "fastest proto2torch path", "time", "build s", "OpenCV / fastest")]
    print(f"{args.threads} threads, torch {torch.__version__}; medians after 3 warm-up forwards ({args.repeat} at most, 3 at least)")
    for name in args.nets.split(","):
        prototxt, weights = model(name)
        for batch in (int(b) for b in args.batches.split(",")):
            declared = load_net(prototxt)
            data = declared.values[declared.inputs[0]]
            shape = (batch, *data.shape[1:])
            net = with_weights(load_net(prototxt, {data.blob: shape}), weights)
            folded = run_passes(net, ["fold-bn"]).net
            x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32))
            results = []
            for label, build, channels_last in paths(name, net, folded, x, work / f"{name}-{batch}"):
                start = time.perf_counter()
                module = build().eval()
                built = time.perf_counter() - start
                label = getattr(build, "label", label)
                inp = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                with torch.inference_mode():
                    seconds = timed_seconds(lambda m=module, i=inp: m(i), args.repeat, args.budget)
                results.append((label, seconds, built))
                print(f"{name} {batch}: {label}: {seconds * 1000:.1f} ms (built in {built:.1f} s)", file=sys.stderr, flush=True)
                del module
            shutil.rmtree(work / f"{name}-{batch}", ignore_errors=True)  # its emitted weights
            repeat = max(3, min(args.repeat, int(args.budget / min(t for _, t, _ in results))))
            cv = opencv_seconds(prototxt, weights, x.numpy(), args.threads, repeat)
            caffe = caffe_seconds(prototxt, weights, x.numpy(), args.threads, repeat)
            rows = [(f"{name}, batch {batch}", "median", "build s", "OpenCV / this")]
            for label, seconds, built in results:
                rows.append((label, f"{seconds * 1000:.1f} ms", f"{built:.1f}", "" if cv is None else f"{cv / seconds:.2f}"))
            for label, seconds in (("OpenCV dnn", cv), ("Caffe (CPU)", caffe)):
                rows.append((label, "not available" if seconds is None else f"{seconds * 1000:.1f} ms", "", "" if None in (cv, seconds) else f"{cv / seconds:.2f}"))
            print()
            print(table(rows), flush=True)
            best = min((r for r in results if not r[0].startswith("hand-written")), key=lambda r: r[1])
            summary.append((
                name, str(batch), "not available" if cv is None else f"{cv * 1000:.1f} ms", "not available" if caffe is None else f"{caffe * 1000:.1f} ms",
                best[0], f"{best[1] * 1000:.1f} ms", f"{best[2]:.1f}", "" if cv is None else f"{cv / best[1]:.2f}",
            ))  # fmt: skip
    print()
    print(table(summary))


if __name__ == "__main__":
    main()
