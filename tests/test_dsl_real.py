"""facenet's real detect_face.py, the MTCNN file everyone uses, read as it is: a base Network class in
the same file (decorators, *args/**kwargs, lambdas, asserts), three model classes chosen with
--class, and its own det1/2/3.npy weights, checked layer by layer against real TensorFlow running
the same file (tests/data/dsl_reference/facenet_mtcnn.npz, made by tools/make_dsl_reference.py).

The file and weights come from the PyPI package facenet 1.0.5, installed without its dependencies
as data (.ci/run does this: pip install --no-deps facenet==1.0.5); nothing of it is imported."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest

from proto2torch.cli import main

REFERENCE = Path(__file__).parent / "data" / "dsl_reference" / "facenet_mtcnn.npz"
NETS = {"PNet": "det1.npy", "RNet": "det2.npy", "ONet": "det3.npy"}


def _facenet() -> dict[str, Path]:
    try:
        dist = importlib.metadata.distribution("facenet")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the facenet 1.0.5 package is test data here: pip install --no-deps facenet==1.0.5 (as .ci/run does)")
    found = {Path(str(f)).name: Path(dist.locate_file(f)) for f in dist.files or () if "align" in str(f)}
    return {name: found[name] for name in ("detect_face.py", *NETS.values())}


def _nchw(array: np.ndarray) -> np.ndarray:
    return array.transpose(0, 3, 1, 2) if array.ndim == 4 else array


@pytest.mark.parametrize("class_name", sorted(NETS))
def test_facenet_detect_face_matches_tensorflow(class_name: str, tmp_path, capsys) -> None:
    files = _facenet()
    with np.load(REFERENCE) as data:
        layers = {k.split(":", 1)[1]: _nchw(data[k]) for k in data.files if k.startswith(f"{class_name}:")}
    reference = {("input:data" if name == "input" else name): value for name, value in layers.items()}
    np.savez(tmp_path / "reference.npz", **reference)
    argv = ["verify", str(files["detect_face.py"]), "--class", class_name, "--weights", str(files[NETS[class_name]]), "--reference", str(tmp_path / "reference.npz"), "--json"]
    code = main(argv)
    report = capsys.readouterr().out
    result = json.loads(report)
    assert code == 0 and result["passed"], report[-3000:]
    compared = {b["blob"] for b in result["blobs"] if b["status"] == "ok"}
    assert compared == set(layers) - {"input"}  # every layer TensorFlow computed, each within 1e-4 of it
    assert not result["reference_blobs_not_in_net"]


def test_inspect_lists_the_model_classes_of_a_file_with_several(capsys) -> None:
    files = _facenet()
    assert main(["inspect", str(files["detect_face.py"]), "--class", "Network", "--input", "data=1,3,12,12"]) == 2
    assert "no model class 'Network'; the file defines PNet, RNet, ONet (choose with --class)" in capsys.readouterr().err


DSL_REFERENCE = Path(__file__).parent / "data" / "dsl_reference"


def test_tf1_resize_bilinear_is_tensorflows_bit_for_bit() -> None:
    """TF1's resize_bilinear without align_corners (ICNet's add, CIHP_PGN's pyramid_pooling), against
    TensorFlow's own outputs up, down and across (tools/make_dsl_reference.py --cihp-network ...)."""
    import torch

    from proto2torch.backend.caffe_ops import resize_bilinear_tf1

    with np.load(DSL_REFERENCE / "tf1_resize_bilinear.npz") as data:
        x = torch.from_numpy(data["x"]).permute(0, 3, 1, 2)
        sizes = [k for k in data.files if k != "x"]
        assert len(sizes) == 5
        for key in sizes:
            height, width = map(int, key.split("x"))
            np.testing.assert_array_equal(resize_bilinear_tf1(x, height, width).permute(0, 2, 3, 1).numpy(), data[key])


def test_cihp_pyramid_pooling_matches_tensorflow_on_cihps_own_base_class(tmp_path, capsys) -> None:
    """A small net using CIHP_PGN's pyramid_pooling (tests/data/dsl_reference/cihp_tiny.py), run by TensorFlow
    on CIHP_PGN's own kaffe/tensorflow/network.py with seeded weights: every layer within 1e-4."""
    with np.load(DSL_REFERENCE / "cihp_pyramid_pooling.npz") as data:
        arrays = {k: data[k] for k in data.files}
    weights: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("w:"):
            _, layer, param = key.split(":")
            weights.setdefault(layer, {})[param] = value
    np.save(tmp_path / "w.npy", np.array(weights, dtype=object), allow_pickle=True)
    layers = {k: _nchw(v) for k, v in arrays.items() if not k.startswith("w:") and k != "input"}
    np.savez(tmp_path / "reference.npz", **{"input:data": _nchw(arrays["input"])}, **layers)
    argv = ["verify", str(DSL_REFERENCE / "cihp_tiny.py"), "--weights", str(tmp_path / "w.npy"), "--reference", str(tmp_path / "reference.npz"), "--define", "n_classes=5", "--json"]
    code = main(argv)
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["passed"], result
    assert {b["blob"] for b in result["blobs"] if b["status"] == "ok"} == set(layers) == {"branch", "pp1", "pp2", "pp_out", "score"}
