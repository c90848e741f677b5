"""proto2torch zoo: every net of a folder tree converted (and verified where a reference lies
beside it) in worker processes, one net's failure never stopping the others, with a JSON and an
HTML report.  The corpus is its big test: the same supported/unsupported files as the corpus test."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from proto2torch.backend.source import import_source
from proto2torch.cli import main
from proto2torch.coverage import corpus_status
from proto2torch.zoo import SUPPORTED, find_nets

from .conftest import CORPUS_DIR, DATA

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet"


class _Rows(HTMLParser):
    """The report's table rows as lists of cell texts, and whether any script or handler got in."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.scripts = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs) -> None:
        self.scripts += tag == "script" or any(name.startswith("on") for name, _ in attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _report(out: Path) -> tuple[dict, list[list[str]], _Rows]:
    data = json.loads((out / "zoo.json").read_text())
    parser = _Rows()
    parser.feed((out / "zoo.html").read_text())
    parser.close()
    return data, [r for r in parser.rows if r], parser


def test_the_corpus_zoo_has_the_corpus_tests_supported_and_unsupported_files(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["zoo", str(CORPUS_DIR), "-o", str(out), "--jobs", "2"])
    printed = capsys.readouterr().out
    assert code == 3  # some corpus nets do not convert
    data, rows, parser = _report(out)
    nets = {n["path"]: n for n in data["nets"]}
    expected = {s.path: s for s in corpus_status(CORPUS_DIR)}
    assert nets.keys() == expected.keys() and len(nets) == 478
    assert {p for p, n in nets.items() if n["status"] in SUPPORTED} == {p for p, s in expected.items() if s.supported}
    assert {p for p, n in nets.items() if n["status"] == "unsupported"} == {p for p, s in expected.items() if not s.supported and not s.error}
    assert {p for p, n in nets.items() if n["status"] == "error"} == {p for p, s in expected.items() if s.error}
    assert not [p for p, n in nets.items() if n["status"] == "crashed"]
    for path, net in nets.items():  # every unsupported layer the corpus test names, with its reason
        assert {(u["layer"], u["reason"]) for u in net["unsupported"]} == {(p.layer, p.reason) for p in expected[path].problems}, path
    supported = sum(data["summary"][s] for s in SUPPORTED)
    assert f"478 nets: {supported} supported" in printed
    # the HTML report: one row per net, in the JSON's order, with its status, and nothing executable
    assert [(r[0], r[1]) for r in rows] == [(n["path"], n["status"]) for n in data["nets"]]
    assert parser.scripts == 0
    # every net that converts has its class written, and it compiles
    written = [out / f for n in data["nets"] for f in n["outputs"]]
    assert len(written) == data["summary"]["converted"] > 300
    for py in written:
        compile(py.read_text(), str(py), "exec")


def _tree(tmp_path: Path) -> Path:
    """A small zoo with one net of each kind of outcome (and files that are not nets)."""
    root = tmp_path / "zoo"
    shutil.copytree(LENET, root / "lenet")  # prototxt + caffemodel + reference.npz: verified
    (root / "lenet" / "solver.prototxt").write_text('net: "lenet.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 10\n')  # not a net
    torch.save({"w": torch.zeros(2)}, root / "lenet" / "checkpoint.pt")  # a PyTorch archive, not a prototxt
    wrong = root / "wrong"  # a reference whose ip1 is off: the mismatch names the layer
    shutil.copytree(LENET, wrong)
    with np.load(wrong / "reference.npz") as ref:
        arrays = {k: ref[k] for k in ref.files}
    arrays["conv2"] = arrays["conv2"] + 0.5
    np.savez(wrong / "reference.npz", **arrays)
    (root / "broken").mkdir()
    (root / "broken" / "net.prototxt").write_text('name: "broken"\nlayer {\n  name: "data" type: "Input"\n  input_param { shape { dim: 1 dim: 3 } \n')
    (root / "fork").mkdir()
    (root / "fork" / "net.prototxt").write_text(
        'name: "fork"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
        'layer { name: "<script>alert(1)</script>" type: "MagicPool" bottom: "data" top: "out" }\n'
    )
    (root / "shapeless").mkdir()
    (root / "shapeless" / "net.prototxt").write_text(
        'name: "shapeless"\nlayer { name: "data" type: "Input" top: "data" }\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }\n'
    )
    (root / "fresh").mkdir()  # no weights: the class alone
    (root / "fresh" / "net.prototxt").write_text(
        'name: "fresh"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }\n'
    )
    (root / "dsl").mkdir()
    shutil.copy(DATA / "dsl" / "ethereon_vgg16.py", root / "dsl")  # a caffe-tensorflow file: needs --input
    (root / "dsl" / "helpers.py").write_text("def f():\n    return 1\n")  # Python that builds no net
    (root / "fresh" / "loop").symlink_to(root, target_is_directory=True)  # a link back up: not followed
    return root


def test_zoo_converts_verifies_and_reports_each_net(tmp_path, capsys) -> None:
    root = _tree(tmp_path)
    assert [j.path for j in find_nets(root)] == [
        "broken/net.prototxt", "dsl/ethereon_vgg16.py", "fork/net.prototxt", "fresh/net.prototxt",
        "lenet/lenet.prototxt", "shapeless/net.prototxt", "wrong/lenet.prototxt",
    ]
    out = tmp_path / "out"
    code = main(["zoo", str(root), "-o", str(out), "--jobs", "2"])
    printed = capsys.readouterr().out
    assert code == 1  # a verification failed
    data, rows, parser = _report(out)
    nets = {n["path"]: n for n in data["nets"]}
    status = {p: n["status"] for p, n in nets.items()}
    assert status == {
        "broken/net.prototxt": "error",
        "dsl/ethereon_vgg16.py": "needs-shapes",
        "fork/net.prototxt": "unsupported",
        "fresh/net.prototxt": "converted",
        "lenet/lenet.prototxt": "verified",
        "shapeless/net.prototxt": "needs-shapes",
        "wrong/lenet.prototxt": "mismatch",
    }
    lenet = nets["lenet/lenet.prototxt"]
    assert lenet["weights"] == "lenet/lenet.caffemodel" and lenet["reference"] == "lenet/reference.npz"
    assert lenet["outputs"] == ["lenet/lenet.py", "lenet/lenet.safetensors"] and 0 <= lenet["max_error"] <= 1
    assert lenet["layers"] == 8 and lenet["parameters"] == 431080
    wrong = nets["wrong/lenet.prototxt"]
    assert wrong["first_divergence"].startswith("layer 'conv2' (blob 'conv2')") and wrong["max_error"] > 1
    assert nets["broken/net.prototxt"]["error"].startswith("broken/net.prototxt:4:15: unexpected end of file")  # located, under the root
    (fork,) = nets["fork/net.prototxt"]["unsupported"]
    assert fork["layer"] == "<script>alert(1)</script>" and fork["type"] == "MagicPool" and fork["where"] == "fork/net.prototxt:4:1"
    assert nets["fresh/net.prototxt"]["outputs"] == ["fresh/net.py"] and nets["fresh/net.prototxt"]["parameters"] == 4 * 3 * 9 + 4
    assert "--input data=" in nets["dsl/ethereon_vgg16.py"]["error"]
    # the converted LeNet runs as Caffe ran it
    module = import_source(out / "lenet" / "lenet.py", "zoo_lenet").build(str(out / "lenet" / "lenet.safetensors"))
    with np.load(LENET / "reference.npz") as ref, torch.no_grad():
        prob = module(torch.from_numpy(ref["input:data"]))
        assert np.allclose(prob.numpy(), ref["prob"], atol=1e-5)
    # reports: the hostile layer name is text, not markup
    assert parser.scripts == 0 and any("<script>alert(1)</script>" in cell for row in rows for cell in row)
    assert "7 nets: 5 supported (1 verified, 1 converted, 1 mismatch, 2 needs-shapes, 1 unsupported, 1 error)" in printed
    assert "wrong/lenet.prototxt" in printed and "lenet/lenet.prototxt " not in printed  # only nets that did not convert cleanly


def test_zoo_options_apply_to_every_net(tmp_path) -> None:
    root = tmp_path / "zoo"
    (root / "a").mkdir(parents=True)
    (root / "a" / "net.prototxt").write_text((_tree(tmp_path / "t") / "shapeless" / "net.prototxt").read_text())
    shutil.copy(DATA / "dsl" / "ethereon_vgg16.py", root / "a")
    (root / "b").mkdir()  # a DSL file whose setup needs a --define, as prototxt templates do
    (root / "b" / "head.py").write_text(
        "class Head(Network):\n    def setup(self, n):\n        (self.feed('data').conv(1, 1, n, 1, 1, name='cls'))\n"
    )
    out = tmp_path / "out"
    assert main(["zoo", str(root), "-o", str(out), "--jobs", "1", "--input", "data=1,3,32,32", "--define", "n=4"]) == 0
    data = json.loads((out / "zoo.json").read_text())
    assert {n["status"] for n in data["nets"]} == {"converted"} and len(data["nets"]) == 3
    assert "nn.Conv2d(3, 4, " in (out / "b" / "head.py").read_text()


_KILLER = '''
import os
from dataclasses import dataclass
from proto2torch import LayerSpec, register_layer

@dataclass(frozen=True)
class P:
    pass

@register_layer
class Killer(LayerSpec):
    type = "Killer"
    semantics = "ends its process while being converted"

    def parse(self, ctx):
        return P()

    def lower(self, p, shapes, blobs):
        os._exit(7)
'''


def test_a_net_that_kills_its_worker_is_reported_and_the_others_convert(tmp_path, capsys) -> None:
    root = tmp_path / "zoo"
    shutil.copytree(LENET, root / "lenet")
    (root / "killer").mkdir()
    (root / "killer" / "net.prototxt").write_text(
        'name: "killer"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
        'layer { name: "k" type: "Killer" bottom: "data" top: "out" }\n'
    )
    plugin = tmp_path / "killer_plugin.py"
    plugin.write_text(_KILLER)
    out = tmp_path / "out"
    assert main(["zoo", str(root), "-o", str(out), "--jobs", "2", "--plugin", str(plugin)]) == 1
    data = json.loads((out / "zoo.json").read_text())
    status = {n["path"]: (n["status"], n["error"]) for n in data["nets"]}
    assert status["lenet/lenet.prototxt"] == ("verified", None)
    assert status["killer/net.prototxt"] == ("crashed", "the worker process died while converting this net")


@pytest.mark.parametrize("args, message", [(["nowhere"], "is not a folder"), ([], "no nets")])
def test_zoo_errors_exit_2(tmp_path, capsys, args, message) -> None:
    folder = [str(tmp_path / a) for a in args] or [str(tmp_path)]
    assert main(["zoo", *folder, "-o", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
