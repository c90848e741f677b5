"""The papers' workflows: DRN localisation (gap-to-conv + localize), surgery that checks itself,
and where output pixels sit on the input (inspect --rf)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from proto2torch import net_from_text
from proto2torch.api import load_net, with_weights
from proto2torch.backend.live import build_graph_module, run_blobs
from proto2torch.cli import main
from proto2torch.conformance import Case
from proto2torch.errors import PassError, Proto2TorchError
from proto2torch.localize import localize, placement
from proto2torch.passes import run_passes
from proto2torch.passes.check import check_passes
from proto2torch.passes.fold_bn import FoldBN
from proto2torch.summary import layer_rows

from .conftest import CASES_DIR
from .test_passes import SURGERY


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    case = Case.load(CASES_DIR / "net_resnet50")
    weights = case.write_caffemodel(tmp_path_factory.mktemp("r50") / "w.caffemodel")
    return case, with_weights(load_net(case.prototxt), weights), weights


def _blobs(net, x: np.ndarray) -> dict[str, torch.Tensor]:
    return run_blobs(build_graph_module(net), data=torch.from_numpy(x))


# --- gap-to-conv ------------------------------------------------------------------------------

def test_gap_to_conv_map_averages_to_the_logits_and_os8_gives_28x28(resnet50) -> None:
    case, net, _ = resnet50
    x = case.inputs()["data"]
    logits = _blobs(net, x)["fc1000"]
    moved = run_passes(net, ["gap-to-conv"])
    assert moved.net.find("pool5") is None and moved.net.node("fc1000").type == "Convolution"
    cam = _blobs(moved.net, x)["fc1000"]
    assert cam.shape == (1, 1000, 7, 7)
    assert float((cam.mean((2, 3)) - logits).abs().max()) <= 1e-4 * max(1.0, float(logits.abs().max()))  # exact by linearity
    for order in (["dilate:output_stride=8", "gap-to-conv"], ["gap-to-conv", "dilate:output_stride=8"]):
        drn = run_passes(net, order).net
        assert _blobs(drn, x)["fc1000"].shape == (1, 1000, 28, 28), order


def test_gap_to_conv_keep_logits_adds_the_map_as_a_second_output(resnet50) -> None:
    case, net, _ = resnet50
    result = run_passes(net, ["gap-to-conv:keep_logits=true"])
    assert [result.net.values[v].blob for v in result.net.outputs] == ["prob", "fc1000_map"]
    blobs = _blobs(result.net, case.inputs()["data"])
    assert torch.allclose(blobs["fc1000_map"].mean((2, 3)), blobs["fc1000"], atol=1e-4)


def test_gap_to_conv_finds_only_classifiers_behind_global_average_pooling() -> None:
    head = 'layer { name: "fc" type: "InnerProduct" bottom: "%s" top: "fc" inner_product_param { num_output: 5 } }'
    base = """input: "data" input_shape { dim: 2 dim: 3 dim: 6 dim: 6 }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
    layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: %s %s } }
    layer { name: "drop" type: "Dropout" bottom: "pool" top: "pool" }
    """
    net = with_weights(net_from_text(base % ("AVE", "global_pooling: true") + head % "pool"))
    result = run_passes(net, ["gap-to-conv"])
    assert result.net.node("fc").params.kernel == (1,) and result.net.find("drop") is None
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 6, 6)).astype(np.float32)
    assert torch.allclose(_blobs(result.net, x)["fc"].mean((2, 3)), _blobs(net, x)["fc"], atol=1e-5)
    full_window = with_weights(net_from_text(base % ("AVE", "kernel_size: 6") + head % "pool"))
    assert run_passes(full_window, ["gap-to-conv"]).net.node("fc").type == "Convolution"
    for pool in (("MAX", "global_pooling: true"), ("AVE", "kernel_size: 3 stride: 3")):
        other = with_weights(net_from_text(base % pool + head % "pool"))
        with pytest.raises(PassError, match="no InnerProduct reads a global average pooling"):
            run_passes(other, ["gap-to-conv"])
        with pytest.raises(PassError, match="layer 'fc' does not read a global average pooling"):
            run_passes(other, ["gap-to-conv:layers=fc"])


# --- localize ---------------------------------------------------------------------------------

def test_localize_boxes_connected_regions_of_the_arg_max_class() -> None:
    scores = np.zeros((1, 3, 6, 8), np.float32)
    scores[0, 1, 1:3, 1:3] = 5.0  # class 1: a 2x2 region
    scores[0, 1, 4, 6] = 9.0  # class 1: a lone pixel, the best
    scores[0, 2, 4:6, 0:2] = 3.0  # class 2
    scores[0, 2, 1, 1] = 4.0  # class 2 scores here but class 1 wins the pixel
    scores[0, 0, 0, 7] = 0.5  # class 0 below the threshold
    (boxes,) = localize(scores, 1.0)
    assert [(b.label, b.score, b.map_box, b.pixels) for b in boxes] == [(1, 9.0, (6, 4, 6, 4), 1), (2, 3.0, (0, 4, 1, 5), 4)]
    (every,) = localize(scores, 1.0, best_only=False)
    assert sorted((b.label, b.map_box) for b in every) == [(1, (1, 1, 2, 2)), (1, (6, 4, 6, 4)), (2, (0, 4, 1, 5))]
    diagonal = np.zeros((1, 2, 3, 3), np.float32)
    diagonal[0, 1] = np.eye(3) * 2
    assert len(localize(diagonal, 1.0, best_only=False)[0]) == 1
    assert len(localize(diagonal, 1.0, best_only=False, connectivity=4)[0]) == 3
    # map pixel (i, j) is centred on offset + jump * (i, j) and stands for the jump x jump cell around it
    (placed,) = localize(scores, 1.0, jump=8, offset=2, image_size=(40, 60))
    assert placed[0].box == (2 + 8 * 5.5, 2 + 8 * 3.5, min(2 + 8 * 6.5, 60), min(2 + 8 * 4.5, 40))
    assert placed[1].box == (0.0, 2 + 8 * 3.5, 2 + 8 * 1.5, 40.0)
    with pytest.raises(Proto2TorchError, match=r"\(N, K, H, W\)"):
        localize(np.zeros((3, 4)), 0.5)


def test_cli_localize_on_a_drn_class_map(resnet50, tmp_path, capsys) -> None:
    case, _, weights = resnet50
    assert main(["surgery", str(case.prototxt), "--weights", str(weights), "--pass", "dilate:output_stride=8", "--pass", "gap-to-conv", "-o", str(tmp_path / "drn"), "--name", "drn"]) == 0
    np.savez(tmp_path / "in.npz", **{"input:data": case.inputs()["data"]})
    capsys.readouterr()
    args = ["localize", str(tmp_path / "drn" / "drn.prototxt"), "--weights", str(tmp_path / "drn" / "drn.caffemodel"), "--inputs", str(tmp_path / "in.npz")]
    assert main([*args, "--blob", "fc1000", "--threshold", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (boxes,) = report["images"]
    assert report["blob"] == "fc1000" and boxes and len({b["label"] for b in boxes}) == len(boxes)  # one box per class
    net = load_net(tmp_path / "drn" / "drn.prototxt")
    assert placement(net, "fc1000") == ((8.0, 8.0), (2.0, 2.0))  # conv1 7x7/2 pad 3, then pool1 3x3/2 unpadded
    with torch.no_grad():
        cam = _blobs(with_weights(net, tmp_path / "drn" / "drn.caffemodel"), case.inputs()["data"])["fc1000"][0].numpy()
    top = boxes[0]
    x0, y0, x1, y1 = top["map_box"]
    region = cam[top["label"], y0 : y1 + 1, x0 : x1 + 1]
    assert np.isclose(region.max(), top["score"], rtol=1e-5) and top["score"] == pytest.approx(float(cam.max()), rel=1e-5)
    assert all(0 <= v <= 224 for b in boxes for v in b["box"])
    capsys.readouterr()
    assert main([*args, "--blob", "fc9999", "--threshold", "5"]) == 2
    assert "error: the net has no blob named 'fc9999'" in capsys.readouterr().err


# --- surgery --check --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SURGERY))
def test_surgery_check_passes_on_the_surgery_cases(name: str, tmp_path, capsys) -> None:
    source = Case.load(CASES_DIR / Case.load(CASES_DIR / name).meta["surgery"]["from"])
    weights = source.write_caffemodel(tmp_path / "source.caffemodel")
    passes = [a for spec in SURGERY[name] for a in ("--pass", spec)]
    assert main(["surgery", str(source.prototxt), "--weights", str(weights), *passes, "--check", "-o", str(tmp_path / "out")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("check ")]
    assert len(lines) == len(SURGERY[name])
    assert "PASS" in lines[0] and "blobs" in lines[0]
    if name == "surgery_resnet50_os8":
        assert "sampled at the original pixels equal the net before" in lines[0]


@dataclass(frozen=True)
class _BrokenFold(FoldBN):
    """fold-bn with a bug: one folded layer's bias is off."""

    name = "broken-fold-bn"

    def apply(self, net):
        result = super().apply(net)
        nodes = tuple(n.replace(blobs=(n.blobs[0], n.blobs[1] + 0.5)) if n.name == "res3a_branch2b" else n for n in result.net.nodes)
        result.net = result.net.replace(nodes=nodes)
        return result


def test_surgery_check_names_the_layer_a_broken_pass_broke(resnet50) -> None:
    _, net, _ = resnet50
    _, (good,) = check_passes(net, ["fold-bn"])
    assert good.passed and good.compared > 60 and good.worst < 1
    _, (bad,) = check_passes(net, [_BrokenFold()])
    assert bad.passed is False and bad.layer == "res3a_branch2b" and bad.blob == "res3a_branch2b"
    assert "layer 'res3a_branch2b' (blob 'res3a_branch2b') differs from the net before" in bad.line()


def test_surgery_check_fails_where_dilation_stops_being_shift_exact(tmp_path, capsys) -> None:
    """A max pooling after the removed stride would need dilation, which Caffe's Pooling lacks:
    the dilate pass warns, and --check fails at that layer with exit 1, writing nothing."""
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text("""name: "pools"
    input: "data" input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
    layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "gaussian" std: 0.5 } } }
    layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "gaussian" std: 0.5 } } }
    layer { name: "p3" type: "Pooling" bottom: "c2" top: "p3" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
    layer { name: "c4" type: "Convolution" bottom: "p3" top: "c4" convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 } } }
    """)
    assert main(["surgery", str(prototxt), "--pass", "dilate:output_stride=2", "--check", "-o", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "check dilate:output_stride=2,policy=exact: FAIL: layer 'p3' (blob 'p3') sampled every few pixels, differs from the net before" in captured.out
    assert "failed at pass dilate:output_stride=2,policy=exact, layer 'p3': nothing written" in captured.err
    assert not (tmp_path / "out").exists()
    deeplab = ["surgery", str(prototxt), "--pass", "dilate:output_stride=2,policy=deeplab", "--check", "-o", str(tmp_path / "dl")]
    assert main(deeplab) == 0
    assert "no receptive field of 5 layers shrank; 1 grew (last: c2: 7 -> 11)" in capsys.readouterr().out  # p3, c4: the jump halves


# --- inspect --rf -----------------------------------------------------------------------------

def test_offsets_follow_fcn_and_inspect_rf_shows_them(tmp_path, capsys) -> None:
    """FCN-32s on a VGG-shaped net with conv1_1 padded by 100: upscore's first pixel sits 19 pixels
    before the image (FCN's crop offset), the crop brings it to 0."""
    out = tmp_path / "fcn"
    assert main([
        "surgery", "models/fcn32s/tiny/classifier.prototxt", "--pass", "fc-to-conv", "--pass", "set:layer=conv1_1,field=convolution_param.pad,value=100",
        "--pass", "cut:after=fc7", "--pass", "append:file=models/fcn32s/head.prototxt", "--pass", "bilinear-upsample:layers=upscore",
        "--input", "data=1,3,64,64", "--name", "fcn", "-o", str(out),
    ]) == 0
    rows = {r.name: r for r in layer_rows(load_net(out / "fcn.prototxt"))}
    assert rows["conv1_1"].offset == ["-99", "-99"] and rows["pool1"].offset == ["-98.5", "-98.5"]
    assert rows["upscore"].offset == ["-19", "-19"] and rows["upscore"].stride == ["1", "1"]
    assert rows["score"].offset == ["0", "0"] and rows["score"].receptive_field == [436, 436]
    capsys.readouterr()
    assert main(["inspect", str(out / "fcn.prototxt"), "--rf"]) == 0
    table = capsys.readouterr().out
    assert any(line.split() == ["upscore", "Deconvolution", "128x128", "436", "1", "-19"] for line in table.splitlines())
    assert "offset: where the centre of output pixel (0, 0) falls on the input" in table
