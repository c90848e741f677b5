#!/usr/bin/env python3
"""Make data-layer conformance cases with real Caffe (built with FULL=1: LMDB, HDF5, OpenCV).

usage: PYTHONPATH=/tmp/caffe-full/src/python python tools/make_data_cases.py [NAME ...] [-o tests/data/data_cases]

A case is a net of data layers whose sources ``tests/datagen.py`` makes (LMDB databases of raw,
float and encoded Datums, image lists, HDF5 files, a mean file; the image files' bytes are kept in
the case's ``inputs.npz``), and Caffe's tops for its first batches (``<top>:<k>`` in ``expected.npz``).
Paths in the prototxt are written ``${DATA}/...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")

from tests.datagen import make_inputs, materialise  # noqa: E402

ORACLE = "BVLC Caffe 1.0 (commit 9b89154, packaged as brocolli-caffe 9.0.2, FULL=1: LMDB, HDF5, OpenCV 4), CPU"

CASES = {
    "data_lmdb_raw": ("lmdb_raw", "TEST", 4, """
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { scale: 0.0078125 mean_file: "${DATA}/mean.binaryproto" crop_size: 9 }
  data_param { source: "${DATA}/db" backend: LMDB batch_size: 6 } }
"""),
    "data_lmdb_encoded": ("lmdb_encoded", "TEST", 3, """
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { force_color: true mean_value: 104 mean_value: 117 mean_value: 123 crop_size: 10 }
  data_param { source: "${DATA}/db" backend: LMDB batch_size: 4 } }
"""),
    "data_lmdb_float": ("lmdb_float", "TEST", 3, """
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { scale: 0.5 mean_value: 1.5 }
  data_param { source: "${DATA}/db" backend: LMDB batch_size: 4 } }
"""),
    "data_imagelist": ("imagelist", "TEST", 4, """
layer { name: "data" type: "ImageData" top: "data" top: "label"
  transform_param { mean_value: 100 mean_value: 110 mean_value: 120 scale: 0.01 }
  image_data_param { source: "${DATA}/list.txt" root_folder: "${DATA}/images/" new_height: 12 new_width: 10 batch_size: 3 } }
"""),
    "data_imagelist_gray": ("imagelist_gray", "TEST", 3, """
layer { name: "data" type: "ImageData" top: "data" top: "label"
  transform_param { crop_size: 5 scale: 0.5 }
  image_data_param { source: "${DATA}/list.txt" root_folder: "${DATA}/images/" is_color: false batch_size: 4 } }
"""),
    "data_leveldb_raw": ("leveldb_raw", "TEST", 2, """
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { mean_value: 128 crop_size: 11 }
  data_param { source: "${DATA}/db" backend: LEVELDB batch_size: 7 } }
"""),
    "data_hdf5": ("hdf5", "TEST", 4, """
layer { name: "data" type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "${DATA}/list.txt" batch_size: 5 } }
"""),
    "data_lmdb_net": ("lmdb_raw", "TEST", 1, """
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { scale: 0.0078125 mean_file: "${DATA}/mean.binaryproto" crop_size: 9 }
  data_param { source: "${DATA}/db" backend: LMDB batch_size: 6 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 7 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""),
    "data_lmdb_train": ("lmdb_train", "TRAIN", 12, """
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { mirror: true crop_size: 7 mean_file: "${DATA}/mean.binaryproto" scale: 0.5 }
  data_param { source: "${DATA}/db" backend: LMDB batch_size: 5 } }
"""),
}


def make(name: str, out: Path, caffe) -> None:  # noqa: ANN001
    kind, phase, count, layers = CASES[name]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    text = f'name: "{name}"\n' + layers.strip() + "\n"
    (folder / "net.prototxt").write_text(text)
    np.savez_compressed(folder / "inputs.npz", **make_inputs(kind))
    meta = {"name": name, "kind": "data", "data_kind": kind, "phase": phase, "batches": count, "oracle": ORACLE}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    work = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    defines = materialise(folder, work)
    concrete = text.replace("${DATA}", defines["DATA"])
    (work / "net.prototxt").write_text(concrete)
    net = caffe.Net(str(work / "net.prototxt"), caffe.TEST if phase == "TEST" else caffe.TRAIN)
    if net.params:  # weights from the layers' fillers, drawn by proto2torch (seed 0), as the test draws them again
        from proto2torch.api import with_weights
        from proto2torch.caffemodel.writer import write_caffemodel
        from proto2torch.data.layers import NetFeed
        from proto2torch.ir.shapes import infer_shapes
        from proto2torch.prototxt.lower import load_prototxt

        ours = load_prototxt(folder / "net.prototxt", phase=phase, defines=defines)
        ours = with_weights(infer_shapes(ours, {k: v.shape for k, v in next(NetFeed(ours)).items()}), None)
        write_caffemodel(work / "w.caffemodel", ((n.name, n.type, n.blobs) for n in ours.nodes if n.blobs))
        net.copy_from(str(work / "w.caffemodel"))
    expected = {}
    for k in range(count):
        net.forward()
        for top in net.blobs:
            expected[f"{top}:{k}"] = net.blobs[top].data.copy()
    np.savez_compressed(folder / "expected.npz", **expected)
    print(f"{name}: {count} batches of {', '.join(net.blobs)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*")
    parser.add_argument("-o", "--output", default=str(ROOT / "tests" / "data" / "data_cases"))
    args = parser.parse_args()
    import caffe

    caffe.set_mode_cpu()
    for name in args.names or CASES:
        make(name, Path(args.output), caffe)


if __name__ == "__main__":
    main()
