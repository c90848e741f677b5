"""The caffe-tensorflow DSL: reading (never running) model files, TF semantics, weights, and emission."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from proto2torch.api import load_net, with_weights
from proto2torch.backend.live import build_graph_module, run_blobs
from proto2torch.cli import main
from proto2torch.conformance import Case
from proto2torch.dsl import load_dsl, net_from_dsl
from proto2torch.dsl.emit import emit_dsl, write_dsl
from proto2torch.dsl.weights import load_npy_weights
from proto2torch.errors import DSLError
from proto2torch.passes import run_passes
from proto2torch.verify import verify_net

from .conftest import CASES_DIR, case_reference

DSL_DIR = Path(__file__).parent / "data" / "dsl"
EXPRESSIBLE = ["net_caffenet", "net_caffenet_v0", "net_densenet121", "net_googlenet", "net_lenet", "net_mnist_siamese", "net_mobilenet_v2", "net_resnet50", "net_squeezenet11", "net_vgg16_v1"]
NOT_EXPRESSIBLE = {"net_cifar10_full": "LRN", "net_fcn8s": "Deconvolution", "net_hed": "Crop", "net_mobilenetv2_ssd": "Permute"}


def _run(net, **inputs):
    module = build_graph_module(with_weights(net))
    with torch.no_grad():
        return module(*[torch.from_numpy(v) for v in inputs.values()])


# --- prototxt -> DSL -> verify against Caffe ---------------------------------------------------


@pytest.mark.parametrize("name", EXPRESSIBLE)
def test_dsl_round_trip_matches_caffe(name: str, tmp_path) -> None:
    case = Case.load(CASES_DIR / name)
    inputs = case.inputs()
    shapes = {k: v.shape for k, v in inputs.items()}
    net = with_weights(load_net(case.prototxt, shapes), case.write_caffemodel(tmp_path / "w.caffemodel"))
    py, npy = write_dsl(net, tmp_path / "dsl")
    dsl_net = with_weights(load_net(py, shapes), npy)
    module = build_graph_module(dsl_net)

    def run(feed):
        return run_blobs(module, **{k: torch.from_numpy(v) for k, v in feed.items()})

    report = verify_net(dsl_net, case_reference(case), run, rtol=case.rtol)
    assert report.passed, report.table()
    assert not report.unused, report.unused
    assert "proto2torch" not in py.read_text().split('"""')[-1]  # the class body is plain DSL


@pytest.mark.parametrize(("name", "layer_type"), sorted(NOT_EXPRESSIBLE.items()))
def test_nets_the_dsl_cannot_express_are_refused_by_layer(name: str, layer_type: str) -> None:
    net = with_weights(load_net(CASES_DIR / name / "net.prototxt", {k: tuple(v) for k, v in Case.load(CASES_DIR / name).meta["inputs"].items()}))
    with pytest.raises(DSLError, match=rf"\({layer_type}\) cannot be written exactly"):
        emit_dsl(net)


def test_cli_convert_to_dsl_and_verify(tmp_path, capsys) -> None:
    case_dir = CASES_DIR / "net_squeezenet11"
    assert main(["case", str(case_dir), "-o", str(tmp_path)]) == 0
    assert main(["convert", str(case_dir / "net.prototxt"), "--weights", str(tmp_path / "weights.caffemodel"), "--to", "dsl", "-o", str(tmp_path / "dsl"), "--name", "squeeze"]) == 0
    capsys.readouterr()
    code = main(["verify", str(tmp_path / "dsl" / "squeeze.py"), "--weights", str(tmp_path / "dsl" / "squeeze.npy"), "--reference", str(tmp_path / "reference.npz")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "differs by unit axes only" in out  # caffe-tensorflow's softmax squeezes (N, C, 1, 1) to (N, C)


# --- reading files in the styles of the public ports ----------------------------------------------


def test_ethereon_caffenet_with_converted_weights_matches_caffe(tmp_path) -> None:
    """A hand-written ethereon-style CaffeNet, fed the CaffeNet weights as caffe-tensorflow stores them."""
    case = Case.load(CASES_DIR / "net_caffenet")
    caffe_net = with_weights(load_net(case.prototxt, {"data": (1, 3, 227, 227)}), case.write_caffemodel(tmp_path / "w.caffemodel"))
    _, npy = write_dsl(caffe_net, tmp_path / "dsl")  # HWIO kernels, H·W·C-ordered fc6 rows
    net = load_dsl(DSL_DIR / "ethereon_caffenet.py", inputs={"data": (1, 3, 227, 227)})
    assert [str(d) for d in net.diagnostics][-1].startswith("dialect: ethereon")
    module = build_graph_module(with_weights(net, npy))
    with torch.no_grad():
        prob = module(torch.from_numpy(case.inputs()["data"]))
    expected = case.expected()["prob"]
    assert float(np.abs(prob.numpy() - expected).max()) <= 1e-4


@pytest.mark.parametrize(
    ("file", "size", "classes", "out"),
    [
        ("ethereon_alexnet.py", 227, None, (1, 1000)),
        ("ethereon_nin.py", 227, None, (1, 1000)),
        ("ethereon_vgg16.py", 224, None, (1, 1000)),
        ("ethereon_resnets.py", 56, None, (1, 10)),
        ("ethereon_resnets.py", 8, "TinyResNetB", (1, 4)),
    ],
)
def test_ethereon_style_files(file: str, size: int, classes: str | None, out: tuple[int, ...]) -> None:
    net = load_dsl(DSL_DIR / file, inputs={"data": (1, 3, size, size)}, class_name=classes)
    assert [net.values[v].shape for v in net.outputs] == [out]
    result = _run(net, data=np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32))
    assert tuple(result.shape) == out
    if classes is None and file == "ethereon_resnets.py":
        assert any("TinyResNetA, TinyResNetB" in str(d) for d in net.diagnostics)


def _deeplab_text(blocks: tuple[int, int, int, int] = (3, 4, 23, 3)) -> str:
    """A DeepLab-ResNet-101 model file in DrSleep's style (TF-slim batch norm, atrous_conv, setup parameters)."""
    lines = [
        "from kaffe.tensorflow import Network",
        "import tensorflow as tf",
        "",
        "class DeepLabResNetModel(Network):",
        "    def setup(self, is_training, num_classes):",
        "        '''DeepLab-v2 on ResNet-101.'''",
        "        (self.feed('data')",
        "             .conv(7, 7, 64, 2, 2, biased=False, relu=False, name='conv1')",
        "             .batch_normalization(is_training=is_training, activation_fn=tf.nn.relu, name='bn_conv1')",
        "             .max_pool(3, 3, 2, 2, name='pool1'))",
    ]
    previous = "pool1"
    for stage, (count, width, rate) in enumerate(zip(blocks, (64, 128, 256, 512), (1, 1, 2, 4)), start=2):
        for b in range(count):
            block = f"res{stage}{'a' if b == 0 else ('b' + str(b) if count > 3 else 'bc'[b - 1])}"
            stride = 2 if b == 0 and stage == 3 else 1
            shortcut = previous
            if b == 0:
                lines += [
                    f"        (self.feed('{previous}')",
                    f"             .conv(1, 1, {width * 4}, {stride}, {stride}, biased=False, relu=False, name='{block}_branch1')",
                    f"             .batch_normalization(is_training=is_training, activation_fn=None, name='bn{block[3:]}_branch1'))",
                ]
                shortcut = f"bn{block[3:]}_branch1"
            middle = (
                f"             .atrous_conv(3, 3, {width}, {rate}, padding='SAME', biased=False, relu=False, name='{block}_branch2b')"
                if rate > 1
                else f"             .conv(3, 3, {width}, 1, 1, biased=False, relu=False, name='{block}_branch2b')"
            )
            lines += [
                f"        (self.feed('{previous}')",
                f"             .conv(1, 1, {width}, {stride}, {stride}, biased=False, relu=False, name='{block}_branch2a')",
                f"             .batch_normalization(is_training=is_training, activation_fn=tf.nn.relu, name='bn{block[3:]}_branch2a')",
                middle,
                f"             .batch_normalization(is_training=is_training, activation_fn=tf.nn.relu, name='bn{block[3:]}_branch2b')",
                f"             .conv(1, 1, {width * 4}, 1, 1, biased=False, relu=False, name='{block}_branch2c')",
                f"             .batch_normalization(is_training=is_training, activation_fn=None, name='bn{block[3:]}_branch2c'))",
                f"        (self.feed('{shortcut}',",
                f"                   'bn{block[3:]}_branch2c')",
                f"             .add(name='{block}')",
                f"             .relu(name='{block}_relu'))",
            ]
            previous = f"{block}_relu"
    for i, rate in enumerate((6, 12, 18, 24)):
        lines += [f"        (self.feed('{previous}')", f"             .atrous_conv(3, 3, num_classes, {rate}, padding='SAME', relu=False, name='fc1_voc12_c{i}'))"]
    lines += [
        "        (self.feed('fc1_voc12_c0',",
        "                   'fc1_voc12_c1',",
        "                   'fc1_voc12_c2',",
        "                   'fc1_voc12_c3')",
        "             .add(name='fc1_voc12'))",
    ]
    return "\n".join(lines) + "\n"


def test_drsleep_deeplab_resnet101() -> None:
    text = _deeplab_text()
    with pytest.raises(DSLError, match="num_classes"):
        net_from_dsl(text, "model.py", inputs={"data": (1, 3, 321, 321)})
    net = net_from_dsl(text, "model.py", inputs={"data": (1, 3, 321, 321)}, defines={"num_classes": "21"})
    assert "dialect: drsleep" in str(net.diagnostics[-1])
    assert [net.values[v].shape for v in net.outputs] == [(1, 21, 41, 41)]
    bn = net.node("bn_conv1")
    assert bn.params.eps == 1e-3  # TF-slim's default, not Caffe's
    conv = net.node("res4b22_branch2b").params
    assert conv.dilation == (2,) and conv.tf_same
    small = net_from_dsl(_deeplab_text((1, 1, 1, 1)), "small.py", inputs={"data": (1, 3, 65, 65)}, defines={"num_classes": "3"})
    assert tuple(_run(small, data=np.ones((1, 3, 65, 65), np.float32)).shape) == (1, 3, 9, 9)


def _pspnet_text() -> str:
    """hellochick's PSPNet style: VALID default, zero_padding, atrous_conv, layer and shape references."""
    return """from network import Network
import tensorflow as tf

class PSPNet50(Network):
    def setup(self, is_training, num_classes):
        (self.feed('data')
             .conv(3, 3, 16, 2, 2, biased=False, relu=False, padding='SAME', name='conv1_1_3x3_s2')
             .batch_normalization(relu=True, name='conv1_1_3x3_s2_bn')
             .max_pool(3, 3, 2, 2, padding='SAME', name='pool1_3x3_s2')
             .conv(1, 1, 32, 1, 1, biased=False, relu=False, name='conv2_1_1x1_proj')
             .batch_normalization(relu=False, name='conv2_1_1x1_proj_bn'))

        (self.feed('pool1_3x3_s2')
             .conv(1, 1, 8, 1, 1, biased=False, relu=False, name='conv2_1_1x1_reduce')
             .batch_normalization(relu=True, name='conv2_1_1x1_reduce_bn')
             .zero_padding(paddings=2, name='padding1')
             .atrous_conv(3, 3, 8, 2, biased=False, relu=False, name='conv2_1_3x3')
             .batch_normalization(relu=True, name='conv2_1_3x3_bn')
             .conv(1, 1, 32, 1, 1, biased=False, relu=False, name='conv2_1_1x1_increase')
             .batch_normalization(relu=False, name='conv2_1_1x1_increase_bn'))

        (self.feed('conv2_1_1x1_proj_bn',
                   'conv2_1_1x1_increase_bn')
             .add(name='conv2_1')
             .relu(name='conv5_3/relu'))

        conv5_3 = self.layers['conv5_3/relu']
        shape = tf.shape(conv5_3)[1:3]

        (self.feed('conv5_3/relu')
             .avg_pool(12, 12, 12, 12, name='conv5_3_pool1')
             .conv(1, 1, 8, 1, 1, biased=False, relu=False, name='conv5_3_pool1_conv')
             .batch_normalization(relu=True, name='conv5_3_pool1_conv_bn')
             .resize_bilinear(shape, name='conv5_3_pool1_interp'))

        (self.feed('conv5_3/relu')
             .avg_pool(6, 6, 6, 6, name='conv5_3_pool2')
             .conv(1, 1, 8, 1, 1, biased=False, relu=False, name='conv5_3_pool2_conv')
             .batch_normalization(relu=True, name='conv5_3_pool2_conv_bn')
             .resize_bilinear(shape, name='conv5_3_pool2_interp'))

        (self.feed('conv5_3/relu',
                   'conv5_3_pool2_interp',
                   'conv5_3_pool1_interp')
             .concat(axis=-1, name='conv5_3_concat')
             .conv(3, 3, 16, 1, 1, biased=False, relu=False, padding='SAME', name='conv5_4')
             .batch_normalization(relu=True, name='conv5_4_bn')
             .conv(1, 1, num_classes, 1, 1, biased=True, relu=False, name='conv6'))
"""


def test_hellochick_pspnet_style() -> None:
    net = net_from_dsl(_pspnet_text(), "model.py", inputs={"data": (1, 3, 47, 47)}, defines={"num_classes": "19"})
    assert "dialect: pspnet" in str(net.diagnostics[-1])
    assert [net.values[v].shape for v in net.outputs] == [(1, 19, 12, 12)]
    interp = net.node("conv5_3_pool1_interp")
    assert interp.type == "Interp" and [net.values[v].blob for v in interp.inputs] == ["conv5_3_pool1_conv_bn", "conv5_3/relu"]
    assert net.node("padding1").type == "Pad" and not net.node("conv2_1_3x3").params.tf_same  # VALID by default here
    assert tuple(_run(net, data=np.ones((1, 3, 47, 47), np.float32)).shape) == (1, 19, 12, 12)


def test_pspnet_real_python_is_reported_with_the_chain() -> None:
    text = _pspnet_text().replace("shape = tf.shape(conv5_3)[1:3]", "h, w = tf.shape(conv5_3)[1], tf.shape(conv5_3)[2]\n        shape = [h, w]")
    with pytest.raises(DSLError) as info:
        net_from_dsl(text, "model.py", inputs={"data": (1, 3, 47, 47)}, defines={"num_classes": "19"})
    message = str(info.value)
    assert message.startswith("model.py:") and "computed by Python code at line 29" in message


@pytest.mark.parametrize(
    ("snippet", "words"),
    [
        ("        while True:\n            (self.feed('data').relu(name='r'))\n", r"'while' statement is Python control flow .* holds 1 chain\(s\), starting with the chain with 'r'"),
        ("        if tf.shape(x)[0] > 2:\n            (self.feed('data').relu(name='r'))\n", r"condition of this 'if' cannot be evaluated .* decides 1 chain\(s\), starting with the chain with 'r'"),
        ("        for i in range(n):\n            (self.feed('data').relu(name='r%d' % i))\n", r"'for' runs over something that cannot be evaluated .* repeats 1 chain"),
        ("        (self.feed('data').conv(3, 3, tf.shape(x)[0], 1, 1, name='c'))\n", r"the call tf.shape\(...\) is not evaluated"),
        ("        (self.feed('data').conv(3, 3, 8, 1, 1, 'c'))\n", "takes 5 positional arguments"),
        ("        (self.feed('data').conv(3, 3, 8, 1, 1, name='c', colour='red'))\n", "has no argument 'colour'"),
        ("        (self.feed('nowhere').relu(name='r'))\n", "'nowhere' is fed but is neither"),
        ("        (self.feed('data').relu(name='r'))\n        (self.feed('data').relu(name='r'))\n", "used twice"),
        ("        (self.feed('data').deconv(3, name='r'))\n", r"deconv\(\) is not part of"),
        ("        x = 1\n        x += tf.shape(y)[1]\n        (self.feed('data').conv(3, 3, x, 1, 1, name='c'))\n", "computed by Python code"),
    ],
)
def test_constructs_outside_the_subset_are_located(snippet: str, words: str) -> None:
    text = "import tensorflow as tf\nfrom kaffe.tensorflow import Network\n\nclass M(Network):\n    def setup(self):\n" + snippet
    with pytest.raises(DSLError, match=words) as info:
        net_from_dsl(text, "m.py", inputs={"data": (1, 3, 8, 8)})
    assert str(info.value).startswith("m.py:")


def test_syntax_errors_are_located() -> None:
    with pytest.raises(DSLError, match=r"^m\.py:5:29: this is not valid Python: invalid syntax") as info:
        net_from_dsl("from x import Network\nclass M(Network):\n    def setup(self):\n        (self.feed('data')\n             .relu(name='r' !!))\n", "m.py")
    assert "^" in str(info.value)


def test_hostile_file_is_never_executed(tmp_path) -> None:
    marker = Path("/tmp/proto2torch_hostile_was_run")
    marker.unlink(missing_ok=True)
    with pytest.raises(DSLError) as info:
        load_dsl(DSL_DIR / "hostile.py", inputs={"data": (1, 3, 8, 8)})
    assert "hostile.py:" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "argument",
    ["__import__('os').system('touch /tmp/proto2torch_hostile_was_run')", "open('/tmp/proto2torch_hostile_was_run', 'w')", "x.__class__", "().__class__.__bases__", "2 ** 999999999", "'a' * 10 ** 9"],
)
def test_hostile_arguments_are_refused(argument: str) -> None:
    text = f"from k import Network\nclass M(Network):\n    def setup(self):\n        (self.feed('data').conv(3, 3, {argument}, 1, 1, name='c'))\n"
    with pytest.raises(DSLError):
        net_from_dsl(text, "m.py", inputs={"data": (1, 3, 8, 8)})
    assert not Path("/tmp/proto2torch_hostile_was_run").exists()


# --- TensorFlow semantics ------------------------------------------------------------------------


def _model(chain: str) -> str:
    return f"from k import Network\nclass M(Network):\n    def setup(self):\n        (self.feed('data')\n{chain})\n"


def test_same_padding_puts_the_odd_pixel_bottom_right() -> None:
    net = with_weights(net_from_dsl(_model("             .conv(3, 3, 2, 2, 2, relu=False, name='c')"), inputs={"data": (1, 1, 8, 8)}))
    weight = torch.from_numpy(net.node("c").blobs[0])
    bias = torch.from_numpy(net.node("c").blobs[1])
    x = torch.randn(1, 1, 8, 8)
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), weight, bias, stride=2)  # TF: 0 before, 1 after
    with torch.no_grad():
        got = build_graph_module(net)(x)
    assert got.shape == (1, 2, 4, 4) and torch.allclose(got, expected, atol=1e-6)


def test_same_average_pooling_excludes_padding() -> None:
    net = net_from_dsl(_model("             .avg_pool(3, 3, 2, 2, name='p')"), inputs={"data": (1, 1, 4, 4)})
    x = torch.arange(16.0).view(1, 1, 4, 4)
    with torch.no_grad():
        got = build_graph_module(with_weights(net))(x)
    # TF SAME on 4x4, k3 s2: pad (0, 1); the last window sees 2x2 real pixels
    assert got.shape == (1, 1, 2, 2)
    assert float(got[0, 0, 1, 1]) == pytest.approx(float(x[0, 0, 2:4, 2:4].mean()))
    assert float(got[0, 0, 0, 0]) == pytest.approx(float(x[0, 0, 0:3, 0:3].mean()))


def test_fc_reads_weights_in_hwc_order(tmp_path) -> None:
    net = net_from_dsl(_model("             .fc(3, relu=False, name='fc')"), inputs={"data": (1, 2, 2, 2)})
    rng = np.random.default_rng(0)
    hwio = rng.standard_normal((8, 3)).astype(np.float32)  # rows in H, W, C order
    np.save(tmp_path / "w.npy", np.array({"fc": {"weights": hwio, "biases": np.zeros(3, np.float32)}}, dtype=object), allow_pickle=True)
    x = rng.standard_normal((1, 2, 2, 2)).astype(np.float32)
    with torch.no_grad():
        got = build_graph_module(with_weights(net, tmp_path / "w.npy"))(torch.from_numpy(x)).numpy()
    expected = x.transpose(0, 2, 3, 1).reshape(1, -1) @ hwio  # what TensorFlow computes on NHWC
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_lrn_alpha_and_concat_axis() -> None:
    net = net_from_dsl(_model("             .lrn(2, 2e-05, 0.75, bias=2.0, name='n')"), inputs={"data": (1, 6, 3, 3)})
    p = net.node("n").params
    assert (p.size, p.alpha, p.beta, p.k) == (5, pytest.approx(1e-4), 0.75, 2.0)


# --- weights -------------------------------------------------------------------------------------


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/proto2torch_hostile_was_run",))


def test_npy_loader_refuses_arbitrary_objects(tmp_path) -> None:
    marker = Path("/tmp/proto2torch_hostile_was_run")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array({"conv1": {"weights": _Boom()}}, dtype=object), allow_pickle=True)
    with pytest.raises(DSLError, match="posix.system|os.system|only arrays"):
        load_npy_weights(evil)
    assert not marker.exists()


def test_npy_loader_reads_python2_style_pickles(tmp_path) -> None:
    path = tmp_path / "w.npy"
    weights = {b"conv1": {b"weights": np.ones((3, 3, 1, 2), np.float32), b"biases": np.zeros(2, np.float32)}}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array(weights, dtype=object), f, protocol=2)
    loaded = load_npy_weights(path)
    assert set(loaded) == {"conv1"} and loaded["conv1"]["weights"].shape == (3, 3, 1, 2)


@pytest.mark.parametrize("payload", [b"not numpy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}\n" + b"\x00" * 16])
def test_npy_loader_refuses_other_files(tmp_path, payload: bytes) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(payload)
    with pytest.raises(DSLError):
        load_npy_weights(path)


# --- the surgery seed example (issue 3) -----------------------------------------------------------


def test_dilate_deeplab_policy_turns_the_before_chain_into_the_after_chain() -> None:
    """PSPNet style: zero_padding(1) + stride-2 conv becomes zero_padding(2) + atrous_conv(rate 2)."""
    stem = "             .conv(3, 3, 8, 2, 2, biased=False, relu=False, padding='SAME', name='stem')\n             .max_pool(3, 3, 2, 2, padding='SAME', name='pool')\n             .conv(1, 1, 8, 2, 2, biased=False, relu=False, name='conv3')\n"
    before = _model(stem + "             .zero_padding(paddings=1, name='padding8')\n             .conv(3, 3, 256, 2, 2, biased=False, relu=False, name='conv4_1_3x3')")
    after = _model(stem + "             .zero_padding(paddings=2, name='padding8')\n             .atrous_conv(3, 3, 256, 2, biased=False, relu=False, name='conv4_1_3x3')")
    shapes = {"data": (1, 3, 64, 64)}
    dilated = run_passes(net_from_dsl(before, inputs=shapes, dialect="pspnet"), ["dilate:output_stride=8,policy=deeplab"], check_weights=False).net
    target = net_from_dsl(after, inputs=shapes, dialect="pspnet")
    for name in ("padding8", "conv4_1_3x3"):
        assert dilated.node(name).params == target.node(name).params, name
    assert [dilated.values[v].shape for v in dilated.outputs] == [target.values[v].shape for v in target.outputs] == [(1, 256, 8, 8)]
