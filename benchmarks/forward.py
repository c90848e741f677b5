"""Forward speed of a converted ResNet-50 against a hand-written PyTorch ResNet-50.

    python benchmarks/forward.py [--threads 2] [--repeat 20]

The converted net is the conformance case's ResNet-50 (Kaiming He's deploy file) with its
recipe weights, at 1x3x224x224.  Baseline: a hand-written eager PyTorch ResNet-50 with the
same layers (convolutions, batch norm, its separate scale, ReLU, pooling, fc, softmax); also
shown: the idiomatic port whose BatchNorm2d carries the scale.
Compared: the live torch.fx module, the emitted standalone source, both after the
``fold-bn`` pass and in channels_last memory format, and that frozen and optimised by
TorchScript, and ``proto2torch.optimize`` (the fastest measured path, its compile time shown);
OpenCV's dnn module (4.x: set ``OPENCV_PY`` to an OpenCV 4 install, since OpenCV 5 has no Caffe importer) and Caffe itself
when they are installed (``opencv-python-headless`` 4.x; pycaffe on PYTHONPATH or in
``CAFFE_PY``).  Medians of ``--repeat`` forwards after warm-up, on ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import median_seconds, model, table
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from proto2torch.api import load_net, with_weights
    from proto2torch.backend.live import build_graph_module
    from proto2torch.backend.source import load_emitted
    from proto2torch.optimization import optimize
    from proto2torch.passes import run_passes

    prototxt, weights = model("resnet50")
    net = with_weights(load_net(prototxt), weights)
    folded = run_passes(net, ["fold-bn"]).net
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32))
    work = Path(tempfile.mkdtemp(prefix="proto2torch-forward-"))

    def frozen(module: nn.Module) -> nn.Module:
        """Scripted, frozen and optimised for inference by TorchScript (oneDNN fusions), in channels_last."""
        module = module.eval().to(memory_format=torch.channels_last)
        return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(module)))

    def timed(module: nn.Module, channels_last: bool = False) -> float:
        module = module.eval()
        inp = x
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
            inp = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return median_seconds(lambda: module(inp), repeat=args.repeat, warmup=3)

    base = timed(HandWrittenResNet50(separate_scale=True))
    results = [
        ("hand-written PyTorch ResNet-50, Caffe's layers (baseline)", base),
        ("hand-written, affine BatchNorm2d (no separate Scale)", timed(HandWrittenResNet50(separate_scale=False))),
        ("live module", timed(build_graph_module(net))),
        ("emitted source", timed(load_emitted(net, work / "plain"))),
        ("live module, fold-bn", timed(build_graph_module(folded))),
        ("live module, fold-bn, channels_last", timed(build_graph_module(folded), channels_last=True)),
        ("emitted source, fold-bn, channels_last", timed(load_emitted(folded, work / "folded"), channels_last=True)),
        ("fold-bn, channels_last, TorchScript optimize_for_inference", timed(frozen(build_graph_module(folded)), channels_last=True)),
    ]
    fast = optimize(build_graph_module(folded), x)
    built = next(c.build_s for c in fast.report if c.name == fast.choice)
    results.append((f"proto2torch.optimize, fold-bn (chose {fast.choice}, built in {built:.1f} s)", timed(fast)))
    others = [("OpenCV dnn", opencv_seconds(prototxt, weights, x.numpy(), args.threads, args.repeat))]
    others.append(("Caffe (CPU)", caffe_seconds(prototxt, weights, x.numpy(), args.threads, args.repeat)))
    rows = [("ResNet-50, 1x3x224x224", "median", "time / baseline")]
    rows += [(name, f"{t * 1000:.1f} ms", f"{t / base:.3f}") for name, t in results]
    best = min(t for _, t in results)
    for name, t in others:
        rows.append((name, "not available" if t is None else f"{t * 1000:.1f} ms", "" if t is None else f"{t / base:.3f} (the fastest conversion is {t / best:.2f}x faster)"))
    print(f"{args.threads} threads, median of {args.repeat} forwards after 3 warm-up runs, torch {torch.__version__}")
    print(table(rows))


if __name__ == "__main__":
    main()
