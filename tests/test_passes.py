"""Surgery passes: the net_surgery and DeepLab recipes against Caffe's own results, and each pass alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from proto2torch import net_from_text
from proto2torch.api import load_net, with_weights
from proto2torch.backend.live import build_graph_module, run_blobs
from proto2torch.caffemodel.reader import read_caffemodel
from proto2torch.cli import main
from proto2torch.conformance import Case, recipe_layers
from proto2torch.errors import PassError
from proto2torch.ir.shapes import infer_shapes
from proto2torch.passes import parse_spec, run_passes
from proto2torch.passes.bilinear import upsample_kernel
from proto2torch.passes.transplant import transplant
from proto2torch.prototxt.protobuf import caffe_pb2
from proto2torch.verify import verify_net

from .conftest import CASE_NAMES, CASES_DIR, CORPUS_DIR, case_net, case_reference, live_runner

SURGERY = {
    "surgery_caffenet_full_conv": ["fc-to-conv:suffix=-conv"],
    "surgery_resnet50_os8": ["dilate:output_stride=8", "cut:after=res5c"],
}


@pytest.mark.parametrize("name", sorted(SURGERY))
def test_surgery_from_the_source_net_matches_caffe(name: str, tmp_path) -> None:
    target = Case.load(CASES_DIR / name)
    source = Case.load(CASES_DIR / target.meta["surgery"]["from"])
    net = with_weights(load_net(source.prototxt), source.write_caffemodel(tmp_path / "source.caffemodel"))
    result = run_passes(net, SURGERY[name])
    inputs = target.inputs()
    operated = infer_shapes(result.net, {k: v.shape for k, v in inputs.items()})
    report = verify_net(operated, case_reference(target), live_runner(operated), rtol=target.rtol, strict=True)
    assert report.passed, report.table()
    # the weights are the target case's weights: same layer names, same numbers
    expected = {layer: blobs for layer, _, blobs in recipe_layers(target.recipe)}
    got = {n.name: n.blobs for n in operated.nodes if n.blobs}
    assert set(got) == set(expected)
    for layer, blobs in expected.items():
        for a, b in zip(got[layer], blobs):
            np.testing.assert_array_equal(a, b)


def test_cli_surgery_writes_caffe_files_that_verify(tmp_path, capsys) -> None:
    main(["case", str(CASES_DIR / "net_caffenet"), "-o", str(tmp_path / "src")])
    main(["case", str(CASES_DIR / "surgery_caffenet_full_conv"), "-o", str(tmp_path / "tgt")])
    out = tmp_path / "out"
    code = main(["surgery", str(CASES_DIR / "net_caffenet" / "net.prototxt"), "--weights", str(tmp_path / "src" / "weights.caffemodel"), "--pass", "fc-to-conv", "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "fc6: InnerProduct on 256x6x6 -> Convolution 'fc6' 4096x256x6x6" in printed
    files = sorted(p.name for p in out.iterdir())
    assert files == ["CaffeNet.caffemodel", "CaffeNet.prototxt"]
    # both files are valid for protobuf with Caffe's schema
    pb = caffe_pb2()
    parsed = text_format.Parse((out / "CaffeNet.prototxt").read_text(), pb.NetParameter())
    assert [layer.type for layer in parsed.layer][-4:] == ["Convolution", "ReLU", "Dropout", "Convolution"][-4:] or parsed.layer[-1].type == "Softmax"
    binary = pb.NetParameter()
    binary.ParseFromString((out / "CaffeNet.caffemodel").read_bytes())
    assert [tuple(b.shape.dim) for b in binary.layer[5].blobs] == [(4096, 256, 6, 6), (4096,)]
    code = main(["verify", str(out / "CaffeNet.prototxt"), "--weights", str(out / "CaffeNet.caffemodel"), "--reference", str(tmp_path / "tgt" / "reference.npz")])
    assert code == 0, capsys.readouterr().out


def test_dilation_is_shift_exact(tmp_path) -> None:
    """exact policy: the output-stride-8 ResNet sampled every 4th pixel equals the stride-32 one."""
    case = Case.load(CASES_DIR / "net_resnet50")
    net = with_weights(load_net(case.prototxt), case.write_caffemodel(tmp_path / "w.caffemodel"))
    original = infer_shapes(run_passes(net, ["cut:after=res5c"]).net, {"data": (1, 3, 96, 96)})
    dilated = infer_shapes(run_passes(net, ["dilate:output_stride=8", "cut:after=res5c"]).net, {"data": (1, 3, 96, 96)})
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, 96, 96)).astype(np.float32))
    with torch.no_grad():
        a = build_graph_module(original)(x)
        b = build_graph_module(dilated)(x)
    assert a.shape == (1, 2048, 3, 3) and b.shape == (1, 2048, 12, 12)
    assert torch.allclose(b[:, :, ::4, ::4], a, rtol=0, atol=1e-4 * max(1.0, float(a.abs().max())))


def test_dilate_reports_each_change_and_policies_differ() -> None:
    text = """
    input: "data" input_shape { dim: 1 dim: 3 dim: 32 dim: 32 }
    layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
    layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
    layer { name: "c3" type: "Convolution" bottom: "c2" top: "c3" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
    layer { name: "c4" type: "Convolution" bottom: "c3" top: "c4" convolution_param { num_output: 4 kernel_size: 1 } }
    """
    net = net_from_text(text)
    exact = run_passes(net, ["dilate:output_stride=2"], check_weights=False)
    deeplab = run_passes(net, ["dilate:output_stride=2,policy=deeplab"], check_weights=False)
    p = {n.name: n.params for n in exact.net.nodes if n.type == "Convolution"}
    q = {n.name: n.params for n in deeplab.net.nodes if n.type == "Convolution"}
    assert p["c2"].stride == (1,) and p["c2"].dilation == (1,) and p["c2"].pad == (1,)
    assert q["c2"].stride == (1,) and q["c2"].dilation == (2,) and q["c2"].pad == (2,)
    assert p["c3"].dilation == q["c3"].dilation == (2,) and p["c3"].pad == (2,)
    assert p["c4"].dilation == (1,)  # 1x1 kernels are left alone
    assert "dilate: c2: stride 2 -> 1 (output stride stays 2); later kernels dilated x2" in exact.log
    assert any(line.startswith("dilate: c3: dilation [1] -> [2]") for line in exact.log)


def _bn_cases() -> list[str]:
    return [n for n in CASE_NAMES if "BatchNorm" in Case.load(CASES_DIR / n).meta["layer_types"]]


@pytest.mark.parametrize("name", _bn_cases())
def test_fold_bn_keeps_outputs(name: str, tmp_path) -> None:
    case = Case.load(CASES_DIR / name)
    net = case_net(case, tmp_path)
    folded = run_passes(net, ["fold-bn"]).net
    inputs = {k: torch.from_numpy(v) for k, v in case.inputs().items()}
    before = run_blobs(build_graph_module(net), **inputs)
    after = run_blobs(build_graph_module(folded), **inputs)
    for v in folded.outputs:
        blob = folded.values[v].blob
        scale = max(1.0, float(before[blob].abs().max()))
        assert float((after[blob] - before[blob]).abs().max()) <= 1e-4 * scale, blob
    if name != "layer_bn_scale":  # there the BatchNorms read the input directly: nothing to fold into
        assert sum(n.type == "BatchNorm" for n in folded.nodes) < sum(n.type == "BatchNorm" for n in net.nodes)


def test_cut_keeps_ancestors_only() -> None:
    net = load_net(CASES_DIR / "net_googlenet" / "net.prototxt")
    cut = run_passes(net, ["cut:after=inception_3b/output"], check_weights=False).net
    assert [cut.values[v].blob for v in cut.outputs] == ["inception_3b/output"]
    assert cut.find("inception_4a/1x1") is None and cut.find("conv1/7x7_s2") is not None


def test_deploy_from_train_val() -> None:
    net = load_net(CORPUS_DIR / "BVLC__caffe" / "models" / "bvlc_reference_caffenet" / "train_val.prototxt")
    result = run_passes(net, ["deploy"], check_weights=False)
    deployed = result.net
    assert [(n.name, n.type) for n in deployed.nodes][0] == ("data", "Input")
    assert [deployed.values[v].blob for v in deployed.inputs] == ["data"]
    assert deployed.values[deployed.inputs[0]].shape == (50, 3, 227, 227)
    assert [(deployed.values[v].blob, deployed.values[v].shape) for v in deployed.outputs] == [("prob", (50, 1000))]
    assert all(n.type not in ("Accuracy", "SoftmaxWithLoss", "Data") for n in deployed.nodes)
    assert not deployed.unsupported()


def test_transplant_by_name_with_reshape(tmp_path) -> None:
    """The notebook's transplant: CaffeNet's fc weights into the fully convolutional net."""
    source = Case.load(CASES_DIR / "net_caffenet")
    weights = read_caffemodel(source.write_caffemodel(tmp_path / "caffenet.caffemodel")).as_dict()
    full_conv = load_net(CASES_DIR / "surgery_caffenet_full_conv" / "net.prototxt")
    renames = {"fc6": "fc6-conv", "fc7": "fc7-conv", "fc8": "fc8-conv"}
    net, log = transplant(full_conv, weights, renames)
    assert "fc6-conv: reshaped from 'fc6' [[4096, 256, 6, 6], [4096]]" in log
    assert "conv1: copied [[96, 3, 11, 11], [96]]" in log
    np.testing.assert_array_equal(net.node("fc6-conv").blobs[0].reshape(4096, -1), weights["fc6"][0])


def test_bilinear_upsample_kernels() -> None:
    text = """
    input: "x" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }
    layer { name: "up" type: "Deconvolution" bottom: "x" top: "up" convolution_param { num_output: 3 kernel_size: 4 stride: 2 group: 3 bias_term: false } }
    layer { name: "full" type: "Deconvolution" bottom: "x" top: "full" convolution_param { num_output: 3 kernel_size: 4 stride: 2 } }
    """
    net = run_passes(with_weights(net_from_text(text)), ["bilinear-upsample"]).net
    kernel = upsample_kernel(4)
    np.testing.assert_allclose(kernel[0], [0.0625, 0.1875, 0.1875, 0.0625])
    up, full = net.node("up").blobs[0], net.node("full").blobs[0]
    assert up.shape == (3, 1, 4, 4) and all(np.array_equal(up[c, 0], kernel) for c in range(3))
    assert full.shape == (3, 3, 4, 4) and np.array_equal(full[1, 1], kernel) and not full[0, 1].any()
    # bilinear upsampling of a constant is constant away from the border
    out = build_graph_module(net)(torch.ones(1, 3, 4, 4))["up"]
    assert torch.allclose(out[0, :, 2:-2, 2:-2], torch.ones(3, 6, 6))


def test_fcn32s_recipe_matches_fcn(tmp_path) -> None:
    """VGG-16 → FCN-32s by passes has the layers and shapes of FCN's own voc-fcn32s net."""
    vgg = load_net(CASES_DIR / "net_vgg16_v1" / "net.prototxt")
    passes = [
        "fc-to-conv",
        "set:layer=conv1_1,field=convolution_param.pad,value=100",
        "cut:after=fc7",
        "append:file=models/fcn32s/head.prototxt",
        "bilinear-upsample:layers=upscore",
    ]
    built = infer_shapes(run_passes(with_weights(vgg), passes).net, {"data": (1, 3, 500, 500)})
    fcn = load_net(CORPUS_DIR / "shelhamer__fcn.berkeleyvision.org" / "voc-fcn32s" / "val.prototxt", inputs={"data": (1, 3, 500, 500)})
    ours = {n.name: n for n in built.nodes if n.type not in ("Input", "Dropout")}
    theirs = {n.name: n for n in fcn.nodes if n.type not in ("Python", "SoftmaxWithLoss", "Dropout", "Input")}
    assert set(ours) == set(theirs)
    for name, node in theirs.items():
        assert ours[name].type == node.type, name
        assert ours[name].params == node.params, name
        assert built.values[ours[name].outputs[0]].shape == fcn.values[node.outputs[0]].shape, name
    assert built.values[built.node("score").outputs[0]].shape == (1, 21, 500, 500)
    assert np.array_equal(built.node("upscore").blobs[0][5, 5], upsample_kernel(64))


@pytest.mark.parametrize(
    ("spec", "words"),
    [("nope", "unknown pass 'nope'"), ("dilate:stride=4", "cannot read option"), ("dilate:output_stride=x", "expected int"), ("cut", "needs after=")],
)
def test_bad_pass_specs(spec: str, words: str) -> None:
    net = load_net(CASES_DIR / "net_lenet" / "net.prototxt")
    with pytest.raises(PassError, match=words):
        run_passes(net, [spec], check_weights=False)


def test_weights_that_no_longer_fit_are_reported(tmp_path) -> None:
    net = load_net(CASES_DIR / "net_caffenet" / "net.prototxt")
    net = with_weights(net)  # fillers: only the shapes matter here
    with pytest.raises(PassError, match="fc6"):  # pool5 (MAX 3x3) now gives 27x27: fc6's weights no longer fit
        run_passes(net, ["dilate:output_stride=8"])


def test_a_dilated_classifier_averages_the_whole_dilated_map(tmp_path) -> None:
    """ResNet's pool5 window covered res5c (7x7): after dilate it is global pooling over 28x28, as
    DRN classifies, so fc1000's weights still fit and the class scores come from the dilated features."""
    case = Case.load(CASES_DIR / "net_resnet50")
    net = with_weights(load_net(case.prototxt), case.write_caffemodel(tmp_path / "w.caffemodel"))
    result = run_passes(net, ["dilate:output_stride=8"])
    assert result.net.node("pool5").params.is_global
    assert any(line.startswith("dilate: pool5: its [7, 7] window covered its whole input: now global pooling") for line in result.log)
    x = torch.from_numpy(case.inputs()["data"])
    with torch.no_grad():
        blobs = run_blobs(build_graph_module(result.net), data=x)
    assert blobs["res5c"].shape == (1, 2048, 28, 28) and blobs["prob"].shape == (1, 1000)
    assert torch.allclose(blobs["pool5"].flatten(1), blobs["res5c"].mean((2, 3)), atol=1e-5)


def test_parse_spec_round_trip() -> None:
    p = parse_spec("dilate:output_stride=16,policy=deeplab")
    assert (p.output_stride, p.policy) == (16, "deeplab")
