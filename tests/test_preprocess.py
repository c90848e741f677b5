"""Deploy-time preprocessing equals pycaffe's (load_image + Transformer, run by real pycaffe in
tools/make_preprocess_case.py), and a deploy net + mean file classifies as Caffe did, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from proto2torch.cli import main
from proto2torch.conformance import Case
from proto2torch.data.datum import load_mean, write_mean
from proto2torch.data.preprocess import Preprocess, load_image
from tools.make_preprocess_case import preprocess_mean

CASE = Path(__file__).parent / "data" / "preprocess_case"
SQUEEZENET = Path(__file__).parent / "data" / "conformance" / "net_squeezenet11"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    out = {}
    with np.load(CASE / "images.npz") as data:
        for key in data.files:
            name = key.split(":", 1)[1]
            (folder / name).write_bytes(data[key].tobytes())
            out[name] = folder / name
    write_mean(folder / "mean.binaryproto", preprocess_mean())
    out["mean"] = folder / "mean.binaryproto"
    return out


def _expected() -> dict[str, np.ndarray]:
    with np.load(CASE / "expected.npz") as data:
        return {k: data[k] for k in data.files}


def test_preprocess_equals_pycaffes_transformer(files) -> None:
    pre = Preprocess(channel_swap=(2, 1, 0), raw_scale=255.0, mean=load_mean(files["mean"]).mean(1).mean(1))
    for key, want in _expected().items():
        if not key.startswith("pre:"):
            continue
        image = load_image(files[key[4:]])
        got = pre(image)
        np.testing.assert_array_equal(got, want, err_msg=key)  # bit for bit
        tensor = pre(torch.from_numpy(image))
        np.testing.assert_allclose(tensor.numpy(), got, rtol=0, atol=1e-4)


def test_emitted_preprocess_and_net_classify_as_caffe(files, tmp_path, capsys) -> None:
    case = Case.load(SQUEEZENET)
    weights = case.write_caffemodel(tmp_path / "squeezenet.caffemodel")
    argv = ["convert", str(case.prototxt), "--weights", str(weights), "--input", "data=1,3,227,227", "-o", str(tmp_path / "out")]
    argv += ["--mean", str(files["mean"]), "--mean-per-channel", "--channel-swap", "2,1,0", "--raw-scale", "255"]
    assert main(argv) == 0, capsys.readouterr().err
    from proto2torch.backend.source import import_source

    py = next((tmp_path / "out").glob("*.py"))
    assert "def preprocess(self, image: Tensor)" in py.read_text()
    module = import_source(py)
    model = module.build(str(py.with_suffix(".safetensors")))
    scripted = torch.jit.script(model)
    for key, want in _expected().items():
        if not key.startswith("prob:"):
            continue
        image = torch.from_numpy(load_image(files[key[5:]]))
        with torch.no_grad():
            prob = model(model.preprocess(image).unsqueeze(0))
            again = scripted(scripted.preprocess(image).unsqueeze(0))
        np.testing.assert_allclose(prob.numpy(), want, rtol=0, atol=1e-5, err_msg=key)
        assert int(prob.argmax()) == int(want.argmax())
        np.testing.assert_allclose(again.numpy(), prob.numpy(), rtol=0, atol=1e-6)


def test_preprocess_from_a_data_layers_transform_param(tmp_path) -> None:
    from proto2torch.data.preprocess import from_transform_param
    from proto2torch.prototxt.lower import load_prototxt

    mean = np.arange(3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8)
    write_mean(tmp_path / "m.binaryproto", mean)
    (tmp_path / "n.prototxt").write_text(
        'layer { name: "d" type: "Data" top: "data" top: "label" transform_param { crop_size: 6 scale: 0.5 mean_file: "m.binaryproto" }'
        ' data_param { source: "x" backend: LMDB batch_size: 1 } }\n'
    )
    node = load_prototxt(tmp_path / "n.prototxt").nodes[0]
    pre = from_transform_param(node.msg.sub("transform_param"), tmp_path)
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)  # H x W x C, as cv2.imread gives
    want = (image.transpose(2, 0, 1)[:, 1:7, 1:7].astype(np.float32) - mean[:, 1:7, 1:7]) * np.float32(0.5)
    np.testing.assert_array_equal(pre(image), want)
