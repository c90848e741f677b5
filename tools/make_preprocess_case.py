#!/usr/bin/env python3
"""Make the pycaffe preprocessing case: images, what pycaffe's load_image + Transformer make of them,
and what a deploy net (SqueezeNet 1.1 of the conformance cases) classifies them as, end to end.

usage: PYTHONPATH=/tmp/caffe-full/src/python python tools/make_preprocess_case.py [-o tests/data/preprocess_case]

Needs pycaffe and scikit-image (pycaffe's caffe.io reads images with it).  Writes ``images.npz`` (the
files' bytes) and ``expected.npz``: per image
``pre:<name>`` (Transformer.preprocess of load_image) and, for the 227 x 227 ones, ``prob:<name>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")

from tests.datagen import _image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--output", default=str(ROOT / "tests" / "data" / "preprocess_case"))
    args = parser.parse_args()
    import caffe
    import caffe.io
    import cv2
    import skimage.io

    # this pycaffe passes scikit-image's old keyword (as_grey); today's spells it as_gray
    imread = skimage.io.imread
    caffe.io.skimage.io.imread = lambda path, as_grey=False, **kw: imread(path, as_gray=as_grey, **kw)

    from proto2torch.conformance import Case
    from proto2torch.data.datum import write_mean

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="preprocess-"))
    rng = np.random.default_rng(5)
    images = {
        "colour.jpg": _image(rng, 31, 29, 3), "colour.png": _image(rng, 20, 24, 3), "grey.png": _image(rng, 18, 16, 1),
        "big0.jpg": _image(rng, 227, 227, 3), "big1.png": _image(rng, 227, 227, 3),
    }
    files = {}
    for name, image in images.items():
        ok, data = cv2.imencode(Path(name).suffix, image)
        assert ok
        (work / name).write_bytes(data.tobytes())
        files[f"file:{name}"] = np.frombuffer(data.tobytes(), np.uint8)
    mean = preprocess_mean()
    write_mean(work / "mean.binaryproto", mean)
    per_channel = caffe.io.blobproto_to_array(_blob(caffe, work / "mean.binaryproto"))[0].mean(1).mean(1)
    expected: dict[str, np.ndarray] = {}
    case = Case.load(ROOT / "tests" / "data" / "conformance" / "net_squeezenet11")
    weights = case.write_caffemodel(work / "squeezenet.caffemodel")
    net = caffe.Net(str(case.prototxt), str(weights), caffe.TEST)
    net.blobs["data"].reshape(1, 3, 227, 227)
    for name in images:
        image = caffe.io.load_image(str(work / name))
        t = caffe.io.Transformer({"data": (1, 3) + image.shape[:2]})
        t.set_transpose("data", (2, 0, 1))
        t.set_channel_swap("data", (2, 1, 0))
        t.set_raw_scale("data", 255)
        t.set_mean("data", per_channel)
        pre = t.preprocess("data", image)
        if name.startswith("big"):
            net.blobs["data"].data[...] = pre
            expected[f"prob:{name}"] = net.forward()["prob"].copy()
        else:
            expected[f"pre:{name}"] = pre
    np.savez_compressed(out / "images.npz", **files)
    np.savez_compressed(out / "expected.npz", **expected)
    print(f"wrote {out}: {', '.join(images)}")


def preprocess_mean() -> np.ndarray:
    """The case's mean image: integers, so every machine makes the same float32 values."""
    c, h, w = np.meshgrid(np.arange(3), np.arange(227), np.arange(227), indexing="ij")
    return (100 + 7 * c + h % 5 + w % 3).astype(np.float32)


def _blob(caffe, path: Path):  # noqa: ANN001, ANN202
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.ParseFromString(path.read_bytes())
    return blob


if __name__ == "__main__":
    main()
