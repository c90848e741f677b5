"""Streaming an LMDB of 10,000 small images through a Data layer, against the forward of a small net.

    python benchmarks/data_lmdb.py [--records 10000] [--batch 64]

The database (raw 3x32x32 Datums, written once into the benchmark folder) is read through
``proto2torch.data.NetFeed`` with a ``transform_param`` (mean value, scale, crop 28, mirror in TRAIN).
Printed: images per second of the loader, of the net's forward at the same batch, their ratio, and the
process's anonymous memory (RssAnon: heap, not the database's memory-mapped pages, which are the page
cache's) after 10% and after 100% of the records: streaming means the two are about the same.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import WORK

NET = """
name: "stream"
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { mean_value: 120 scale: 0.0125 crop_size: 28 mirror: true }
  data_param { source: "%(db)s" backend: LMDB batch_size: %(batch)d } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool2" top: "ip" inner_product_param { num_output: 10 } }
"""


def rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_db(path: Path, records: int) -> None:
    import lmdb

    from proto2torch.data.datum import datum_bytes

    rng = np.random.default_rng(0)
    env = lmdb.open(str(path), map_size=1 << 32)
    with env.begin(write=True) as txn:
        for i in range(records):
            txn.put(f"{i:08d}".encode(), datum_bytes(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8), i % 10))
    env.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    import torch

    from proto2torch.api import with_weights
    from proto2torch.backend.live import build_graph_module
    from proto2torch.data import NetFeed
    from proto2torch.ir.shapes import infer_shapes
    from proto2torch.prototxt.lower import net_from_text

    torch.set_num_threads(2)
    db = WORK / f"stream_{args.records}.lmdb"
    WORK.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        make_db(db, args.records)
    net = net_from_text(NET % {"db": db, "batch": args.batch}, phase="TRAIN")
    feed = NetFeed(net, seed=0)
    steps = args.records // args.batch
    start = time.perf_counter()
    first = next(feed)
    early = late = 0.0
    for k in range(1, steps):
        batch = next(feed)
        if k == steps // 10:
            early = rss_anon_mib()
    late = rss_anon_mib()
    loader = (time.perf_counter() - start) / (steps * args.batch)
    module = build_graph_module(with_weights(infer_shapes(net, {k: v.shape for k, v in first.items()}), None)).eval()
    x = torch.from_numpy(batch["data"])
    with torch.no_grad():
        module(x, torch.from_numpy(batch["label"]))
        start = time.perf_counter()
        for _ in range(10):
            module(x, torch.from_numpy(batch["label"]))
        forward = (time.perf_counter() - start) / (10 * args.batch)
    print(f"{args.records} records, batch {args.batch}: loader {1 / loader:,.0f} images/s, forward {1 / forward:,.0f} images/s, "
          f"loader time / forward time {loader / forward:.2f}")
    print(f"anonymous memory after 10% of the records {early:.1f} MiB, after all {late:.1f} MiB")


if __name__ == "__main__":
    main()
