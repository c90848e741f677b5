"""The command line: inspect tables and exit codes, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

from proto2torch.cli import main

from .conftest import CASES_DIR


def test_inspect_table(capsys) -> None:
    assert main(["inspect", str(CASES_DIR / "net_caffenet" / "net.prototxt"), "--input", "data=1,3,227,227"]) == 0
    out = capsys.readouterr().out
    conv1 = next(line for line in out.splitlines() if line.startswith("conv1 "))
    assert "1x96x55x55" in conv1 and "34,944" in conv1 and " 11 " in conv1 and conv1.rstrip().endswith("4")
    pool5 = next(line for line in out.splitlines() if line.startswith("pool5 "))
    assert "1x256x6x6" in pool5 and " 195 " in pool5 and pool5.rstrip().endswith("32")
    assert "60,965,224 parameters" in out


def test_inspect_json_and_input_reshape(capsys) -> None:
    assert main(["inspect", str(CASES_DIR / "surgery_caffenet_full_conv" / "net.prototxt"), "--input", "data=1,3,451,451", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"] == {"prob": [1, 1000, 8, 8]}
    assert report["inputs"] == {"data": [1, 3, 451, 451]}


def test_inspect_exit_3_lists_unsupported_layers(tmp_path, capsys) -> None:
    net = tmp_path / "n.prototxt"
    net.write_text(
        'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
        'layer { name: "py" type: "Python" bottom: "data" top: "p" python_param { module: "mymod" layer: "MyLayer" } }\n'
        'layer { name: "odd" type: "FancyFork" bottom: "p" top: "q" }\n'
    )
    assert main(["inspect", str(net)]) == 3
    out = capsys.readouterr().out
    assert "n.prototxt:2:1: layer 'py' (type Python): Python layer mymod.MyLayer" in out
    assert "n.prototxt:3:1: layer 'odd' (type FancyFork)" in out


def test_errors_exit_2_with_position_and_no_traceback(tmp_path) -> None:
    net = tmp_path / "bad.prototxt"
    net.write_text('layer { name: "c" type: "Convolution" bottom: "x" top: "y"\n  convolution_param { num_output: 2 kernel_size: 3 }\n')
    proc = subprocess.run([sys.executable, "-m", "proto2torch", "inspect", str(net)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "bad.prototxt:1:7: unexpected end of file: this '{' is never closed" in proc.stderr
    assert "Traceback" not in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "proto2torch", "--debug", "inspect", str(net)], capture_output=True, text=True)
    assert "Traceback" in debug.stderr


def test_shape_error_names_layer_and_shapes(tmp_path, capsys) -> None:
    net = tmp_path / "s.prototxt"
    net.write_text(
        'input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
        'layer { name: "big" type: "Convolution" bottom: "data" top: "y" convolution_param { num_output: 2 kernel_size: 7 } }\n'
    )
    assert main(["inspect", str(net)]) == 2
    err = capsys.readouterr().err
    assert "s.prototxt:2:1: layer 'big': kernel 7 (dilated) is larger than the padded input 4" in err

