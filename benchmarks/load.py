"""Loading caffemodels: time against reading the file's bytes, peak memory against its size.

    python benchmarks/load.py [resnet50 vgg16 resnet152] [--repeat 5]

Each measurement runs in a fresh process (as a user's script would), five times, with
the file already in the page cache, the ways taking turns in a shuffled order; the median
time, and the fastest (the machine's memory stalls aside: see ``_common.fresh_runs``), are
compared with reading the raw bytes in the same way.  Measured: ``load_caffemodel``; ``to_torch`` (the weights read
and placed in a built torch module); and the way other converters read weights
(protobuf's parser, then ``np.array(blob.data)`` per blob).  Peak memory is the growth
of resident memory over the process's state after its imports, per byte of file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import fresh_runs, model, table


def protobuf_way(path: str) -> dict[str, list[np.ndarray]]:
    from proto2torch.prototxt.protobuf import caffe_pb2

    net = caffe_pb2().NetParameter()
    net.ParseFromString(Path(path).read_bytes())
    layers = net.layer or net.layers
    return {layer.name: [np.array(b.data, dtype=np.float32) for b in layer.blobs] for layer in layers}


def main(names: list[str], repeat: int) -> None:
    rows = [("model", "file", "raw read", "load_caffemodel", "to_torch", "protobuf way", "peak: to_torch", "protobuf way")]
    for name in names:
        prototxt, weights = model(name)
        mib = weights.stat().st_size / 2**20
        w, p = str(weights), str(prototxt)
        runs = fresh_runs({
            "raw": f"data = open({w!r}, 'rb').read()",
            "ours": f"from proto2torch import load_caffemodel\nweights = load_caffemodel({w!r}, progress=False)",
            "built": f"from proto2torch.api import load_net, to_torch\nnet = load_net({p!r})\nstart = time.perf_counter()\nmodule = to_torch(net, {w!r})",
            "peers": f"from load import protobuf_way\nweights = protobuf_way({w!r})",
        }, repeat=repeat)  # fmt: skip
        raw = runs["raw"]
        ratio = {label: f"{r.median_s / raw.median_s:.2f}x ({r.best_s / raw.best_s:.2f}x)" for label, r in runs.items()}
        rows.append((
            name, f"{mib:.0f} MiB", f"{raw.median_s * 1000:.0f} ms ({raw.best_s * 1000:.0f})", ratio["ours"], ratio["built"], ratio["peers"],
            f"{runs['built'].peak_mib / mib:.2f}x file", f"{runs['peers'].peak_mib / mib:.2f}x file",
        ))  # fmt: skip
        print(f"{name}: done", file=sys.stderr)
    print("time: median of fresh processes (in brackets: the fastest), as a ratio to reading the file's raw bytes (file in the page cache)")
    print("peak: growth of resident memory over the process's state after its imports, per byte of file")
    print("to_torch: the prototxt is parsed before the clock starts; building the module is included")
    print(table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["resnet50", "vgg16", "resnet152"])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    main(args.models, args.repeat)
