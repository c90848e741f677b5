"""What other runtimes load: safetensors and .pth weights, ONNX (run in onnxruntime against Caffe's
blobs), frozen TorchScript and torch.export archives (loaded in a fresh process without proto2torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from proto2torch.api import with_weights
from proto2torch.backend.source import import_source, load_emitted, write_source
from proto2torch.cli import main
from proto2torch.conformance import Case
from proto2torch.export import ExportError, export
from proto2torch.prototxt.lower import load_prototxt

from .conftest import CASES_DIR

NETS = sorted(p.name for p in CASES_DIR.iterdir() if p.name.startswith("net_"))
DATA_DEPENDENT = {"net_mobilenetv2_ssd"}  # DetectionOutput: a data-dependent number of boxes


def _net(case: Case, tmp_path: Path):
    inputs = case.inputs()
    net = load_prototxt(case.prototxt, inputs={k: v.shape for k, v in inputs.items()}, options=case.semantics)
    return with_weights(net, case.write_caffemodel(tmp_path / "weights.caffemodel")), inputs


def _check_against_caffe(case: Case, net, outputs: list[np.ndarray]) -> None:
    expected = case.expected()
    names = [net.values[v].blob for v in net.outputs]
    assert len(outputs) == len(names)
    for name, got in zip(names, outputs):
        want = expected[name]
        scale = float(np.max(np.abs(want))) or 1.0
        assert float(np.max(np.abs(got - want))) <= 1e-4 * scale, name


# The dynamic axes some nets must get: FCN-8s is fully convolutional; LeNet's ip1 pins height and width.
DYNAMIC = {"net_fcn8s": ["data:batch", "data:height", "data:width"], "net_lenet": ["data:batch"]}


@pytest.mark.parametrize("name", NETS)
def test_onnx_in_onnxruntime_matches_caffe(name: str, tmp_path) -> None:
    import onnx
    import onnxruntime as ort

    case = Case.load(CASES_DIR / name)
    net, inputs = _net(case, tmp_path)
    if name in DATA_DEPENDENT:
        with pytest.raises(ExportError, match=r"DetectionOutput.*surgery cut:"):
            export(net, tmp_path / "m.onnx", "onnx")
        return
    report = export(net, tmp_path / "m.onnx", "onnx")
    onnx.checker.check_model(onnx.load(str(report.path)), full_check=True)
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[net.values[v].blob] for i, v in zip(session.get_inputs(), net.inputs)}
    _check_against_caffe(case, net, session.run(None, feeds))
    assert all(a.endswith(":batch") or a.endswith(":height") or a.endswith(":width") for a in report.dynamic)
    if name in DYNAMIC:
        assert report.dynamic == DYNAMIC[name]
    if "data:width" in report.dynamic:  # at a batch and a size it was not exported at, it computes what the module does
        n, c, h, w = inputs["data"].shape
        x = np.random.default_rng(0).random((n + 1, c, h + 32, w + 32), np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})
        with torch.no_grad():
            want = load_emitted(net, tmp_path / "emitted")(torch.from_numpy(x))
        want = [want[net.values[v].blob] for v in net.outputs] if isinstance(want, dict) else want if isinstance(want, (tuple, list)) else [want]
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.shape == tuple(b.shape) and np.allclose(a, b.numpy(), rtol=1e-4, atol=1e-4 * float(b.abs().max()))
        if name == "net_fcn8s":  # FCN's crop gives back the input's size
            assert got[0].shape[2:] == (h + 32, w + 32)


def test_axis_probes_run_at_batch_2_whatever_the_declared_batch() -> None:
    from proto2torch.export import _movable_axes

    seen = []

    class Net(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            return x.flatten(1) @ torch.ones(4 * 5 * 6, 3)  # pins C, H and W, not the batch

    example, axes = _movable_axes(Net(), (torch.rand(10000, 4, 5, 6),))
    assert axes == [(0,)] and example[0].shape == (2, 4, 5, 6) and max(seen) == 2


_FRESH = """
import sys, json, numpy as np, torch
sys.modules["proto2torch"] = None  # the archive must not need proto2torch
path, kind, inp = sys.argv[1:]
x = [torch.from_numpy(a) for a in np.load(inp).values()]
m = torch.jit.load(path) if kind == "torchscript" else torch.export.load(path).module()
with torch.no_grad():
    out = m(*x)
out = out if isinstance(out, (tuple, list)) else list(out.values()) if isinstance(out, dict) else [out]
np.savez(inp + ".out.npz", *[o.detach().numpy() for o in out])
"""


@pytest.mark.parametrize("kind", ["torchscript", "exported"])
@pytest.mark.parametrize("name", ["net_googlenet", "net_hed"])
def test_archives_load_in_a_fresh_process_without_proto2torch(kind: str, name: str, tmp_path) -> None:
    case = Case.load(CASES_DIR / name)
    net, inputs = _net(case, tmp_path)
    report = export(net, tmp_path / f"m{'.pt' if kind == 'torchscript' else '.pt2'}", kind)
    np.savez(tmp_path / "in.npz", *[inputs[net.values[v].blob] for v in net.inputs])
    run = subprocess.run([sys.executable, "-c", _FRESH, str(report.path), kind, str(tmp_path / "in.npz")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    with np.load(tmp_path / "in.npz.out.npz") as data:
        _check_against_caffe(case, net, [data[k] for k in data.files])


def test_safetensors_and_pth_give_identical_modules(tmp_path) -> None:
    case = Case.load(CASES_DIR / "net_mnist_siamese")  # shared weights
    net, inputs = _net(case, tmp_path)
    py_s, st, _ = write_source(net, tmp_path / "s")
    py_p, pth, _ = write_source(net, tmp_path / "p", weights_format="pth")
    assert st.suffix == ".safetensors" and pth.suffix == ".pth" and py_s.read_text() == py_p.read_text()
    a = import_source(py_s, "st_module").build(str(st))
    b = import_source(py_p, "pth_module").build(str(pth))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    args = [torch.from_numpy(inputs[net.values[v].blob]) for v in net.inputs]
    with torch.no_grad():
        for x, y in zip(a(*args), b(*args)):
            assert torch.equal(x, y)
    assert st.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle


def test_cli_convert_to_every_format(tmp_path, capsys) -> None:
    case = CASES_DIR / "net_lenet"
    main(["case", str(case), "-o", str(tmp_path / "w")])
    capsys.readouterr()
    weights = str(tmp_path / "w" / "weights.caffemodel")
    for to, suffix in (("onnx", ".onnx"), ("torchscript", ".pt"), ("exported", ".pt2")):
        assert main(["convert", str(case / "net.prototxt"), "--weights", weights, "--to", to, "-o", str(tmp_path / to), "--name", "sq"]) == 0
        assert (tmp_path / to / f"sq{suffix}").stat().st_size > 1_000_000
        assert "dynamic axes: data:batch" in capsys.readouterr().out
    assert main(["convert", str(case / "net.prototxt"), "--weights", weights, "--weights-format", "pth", "-o", str(tmp_path / "pth")]) == 0
    assert json.dumps(sorted(p.suffix for p in (tmp_path / "pth").iterdir())) == '[".pth", ".py"]'


def test_export_refuses_unknown_shapes_and_formats(tmp_path) -> None:
    path = tmp_path / "n.prototxt"
    path.write_text('name: "n" layer { name: "d" type: "Input" top: "d" } layer { name: "r" type: "ReLU" bottom: "d" top: "r" }')
    net = load_prototxt(path)
    with pytest.raises(ExportError, match="input shapes of d are not known"):
        export(net, tmp_path / "n.onnx", "onnx")
    with pytest.raises(ExportError, match="unknown export format"):
        export(net, tmp_path / "n.x", "tflite")
    assert not list(tmp_path.glob("n.onnx*"))
