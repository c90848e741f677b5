#!/usr/bin/env python3
"""Make the TensorFlow reference for facenet's MTCNN nets: real TensorFlow (``tf.compat.v1``) runs
the original ``detect_face.py`` of the PyPI package ``facenet`` 1.0.5 with its own ``det1/2/3.npy``
weights on seeded inputs, and every layer's output is recorded.

usage: python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu six opencv-python-headless tf_slim \\
         && /tmp/tfenv/bin/pip install --no-deps facenet==1.0.5
       /tmp/tfenv/bin/python tools/make_dsl_reference.py [-o tests/data/dsl_reference/facenet_mtcnn.npz]
       /tmp/tfenv/bin/python tools/make_dsl_reference.py --cihp-network CIHP_PGN/kaffe/tensorflow/network.py

The second form writes ``tf1_resize_bilinear.npz`` (TF1's resize_bilinear without align_corners) and
``cihp_pyramid_pooling.npz`` (``tests/data/dsl_reference/cihp_tiny.py`` run on CIHP_PGN's own base class,
from a checkout of github.com/Engineering-Course/CIHP_PGN; that code is not kept here).

The file's ``Network.load`` reads the weights with ``np.load(...).item()``, which numpy now refuses
for pickled files; this script (the oracle, trusting the package) lets it.  Keys: ``<Class>:input``
(NHWC) and ``<Class>:<layer>`` (TensorFlow's NHWC or N x C outputs).  This script runs only here,
never in the test suite or at run time.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# (class, weights file, input shape NHWC): PNet is fully convolutional, so a non-square input
# catches height/width mix-ups; RNet and ONet take their fixed 24 and 48 pixel crops
NETS = (("PNet", "det1.npy", (1, 19, 23, 3)), ("RNet", "det2.npy", (1, 24, 24, 3)), ("ONet", "det3.npy", (1, 48, 48, 3)))


def facenet_files() -> dict[str, Path]:
    """detect_face.py and det1-3.npy of the installed facenet distribution (found without importing it)."""
    dist = importlib.metadata.distribution("facenet")
    found = {Path(str(f)).name: Path(dist.locate_file(f)) for f in dist.files or () if "align" in str(f)}
    return {name: found[name] for name in ("detect_face.py", "det1.npy", "det2.npy", "det3.npy")}


def resize_reference(tf, output: Path) -> None:
    """TF1's resize_bilinear (no align_corners) up, down and across, on a 2 x 7 x 5 x 3 input."""
    x = np.random.default_rng(0).uniform(-1, 1, (2, 7, 5, 3)).astype(np.float32)
    sizes = [(13, 9), (3, 2), (14, 10), (7, 5), (20, 4)]
    with tf.Graph().as_default(), tf.Session() as session:
        outs = session.run([tf.image.resize_bilinear(tf.constant(x), list(size)) for size in sizes])
    np.savez_compressed(output, x=x, **{f"{h}x{w}": v for (h, w), v in zip(sizes, outs)})
    print(f"wrote {output}")


def cihp_reference(tf, network_py: Path, output: Path) -> None:
    """tests/data/dsl_reference/cihp_tiny.py run by TensorFlow on CIHP_PGN's own base class (its
    pyramid_pooling), with seeded weights: the input, every weight ("w:<layer>:<param>") and every layer."""
    import types

    import tf_slim

    if not hasattr(tf, "contrib"):  # the file's "slim = tf.contrib.slim" (TensorFlow 1): tf_slim is that package
        tf.contrib = types.SimpleNamespace(slim=tf_slim)
    spec = importlib.util.spec_from_file_location("cihp_network", network_py)
    assert spec is not None and spec.loader is not None
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    package = types.ModuleType("kaffe.tensorflow")
    package.Network = base.Network  # type: ignore[attr-defined]
    sys.modules.update({"kaffe": types.ModuleType("kaffe"), "kaffe.tensorflow": package})
    spec = importlib.util.spec_from_file_location("cihp_tiny", ROOT / "tests" / "data" / "dsl_reference" / "cihp_tiny.py")
    assert spec is not None and spec.loader is not None
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    rng = np.random.default_rng(20261205)
    x = rng.uniform(-1, 1, (1, 13, 19, 3)).astype(np.float32)
    out: dict[str, np.ndarray] = {"input": x}
    with tf.Graph().as_default(), tf.Session() as session:
        data = tf.placeholder(tf.float32, x.shape, "data")
        net = model.TinyPGN({"data": data}, n_classes=5)
        for var in tf.global_variables():
            layer, _, param = var.op.name.rpartition("/")
            value = rng.uniform(-0.5, 0.5, var.shape.as_list()).astype(np.float32)
            session.run(var.assign(value))
            out[f"w:{layer}:{param}"] = value
        names = [n for n in net.layers if n != "data"]
        out.update(zip(names, session.run([net.layers[n] for n in names], feed_dict={data: x})))
    np.savez_compressed(output, **out)
    print(f"wrote {output}: {len(out)} arrays")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--output", default=str(ROOT / "tests" / "data" / "dsl_reference" / "facenet_mtcnn.npz"))
    parser.add_argument("--cihp-network", default=None, metavar="network.py", help="CIHP_PGN's kaffe/tensorflow/network.py (needs tf_slim): also write the pyramid_pooling and resize references")
    args = parser.parse_args()
    import tensorflow.compat.v1 as tf

    tf.disable_v2_behavior()
    sys.modules["tensorflow"] = tf  # detect_face.py says "import tensorflow as tf" and uses the 1.x API
    if args.cihp_network:
        folder = ROOT / "tests" / "data" / "dsl_reference"
        resize_reference(tf, folder / "tf1_resize_bilinear.npz")
        cihp_reference(tf, Path(args.cihp_network), folder / "cihp_pyramid_pooling.npz")
        return
    files = facenet_files()
    spec = importlib.util.spec_from_file_location("detect_face", files["detect_face.py"])
    assert spec is not None and spec.loader is not None
    detect_face = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(detect_face)
    original_load = np.load
    detect_face.np.load = lambda *a, **k: original_load(*a, **{**k, "allow_pickle": True})
    out: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(20261205)
    for class_name, weights, shape in NETS:
        with tf.Graph().as_default(), tf.Session() as session:
            data = tf.placeholder(tf.float32, (None, *shape[1:]), "input")
            net = getattr(detect_face, class_name)({"data": data})
            net.load(str(files[weights]), session)
            x = rng.uniform(-1, 1, shape).astype(np.float32)
            names = [n for n in net.layers if n != "data"]
            values = session.run([net.layers[n] for n in names], feed_dict={data: x})
            out[f"{class_name}:input"] = x
            out.update({f"{class_name}:{n}": v for n, v in zip(names, values)})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **out)
    print(f"wrote {args.output}: {len(out)} arrays, tensorflow {tf.__version__ if hasattr(tf, '__version__') else ''}")


if __name__ == "__main__":
    main()
