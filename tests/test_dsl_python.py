"""caffe-tensorflow files as they are found in the wild: the whole file is parsed as Python 3
(nothing imported or run), only the model classes are read, and setup's Python is evaluated by
proto2torch's own evaluator: if/else on known values, for loops over literal sequences, names
built from strings, arithmetic, lambdas, self.X constants.  The files here are written for these
tests in the styles of facenet's detect_face.py, tf-pose, ICNet, CIHP_PGN and TFFRCNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proto2torch.api import with_weights
from proto2torch.backend.live import build_graph_module
from proto2torch.cli import main
from proto2torch.dsl import net_from_dsl
from proto2torch.errors import DSLError, LimitError

BASE = '''
"""A base Network in the same file, as facenet's detect_face.py has it: none of it is read."""
from six import string_types
import numpy as np
import tensorflow as tf


def layer(op):
    def layer_decorated(self, *args, **kwargs):
        name = kwargs.setdefault('name', self.get_unique_name(op.__name__))
        layer_input = self.terminals[0] if len(self.terminals) == 1 else list(self.terminals)
        self.layers[name] = op(self, layer_input, *args, **kwargs)
        self.feed(self.layers[name])
        return self
    return layer_decorated


class Network(object):
    def __init__(self, inputs, trainable=True):
        self.inputs = inputs
        self.terminals = []
        self.layers = dict(inputs)
        self.trainable = trainable
        self.setup()

    def setup(self):
        raise NotImplementedError('Must be implemented by the subclass.')

    def get_unique_name(self, prefix):
        ident = sum(t.startswith(prefix) for t, _ in self.layers.items()) + 1
        return '%s_%d' % (prefix, ident)

    def validate_padding(self, padding):
        assert padding in ('SAME', 'VALID')

    @layer
    def conv(self, inp, k_h, k_w, c_o, s_h, s_w, name, relu=True, padding='SAME', group=1, biased=True):
        c_i = int(inp.get_shape()[-1])
        convolve = lambda i, k: tf.nn.conv2d(i, k, [1, s_h, s_w, 1], padding=padding)
        kernel = np.zeros((k_h, k_w, c_i, c_o))[:, :, 0, :]
        return [x for x in (convolve, kernel) if x is not None]
'''

MTCNN = BASE + '''

class PNet(Network):
    def setup(self):
        (self.feed('data')
             .conv(3, 3, 10, 1, 1, padding='VALID', relu=False, name='conv1')
             .prelu(name='PReLU1')
             .max_pool(2, 2, 2, 2, name='pool1')
             .conv(3, 3, 16, 1, 1, padding='VALID', relu=False, name='conv2')
             .prelu(name='PReLU2')
             .conv(1, 1, 2, 1, 1, relu=False, name='conv4-1')
             .softmax(3, name='prob1'))

        (self.feed('PReLU2')
             .conv(1, 1, 4, 1, 1, relu=False, name='conv4-2'))


class RNet(Network):
    def setup(self):
        (self.feed('data')
             .conv(3, 3, 28, 1, 1, padding='VALID', relu=False, name='conv1')
             .prelu(name='prelu1')
             .max_pool(3, 3, 2, 2, name='pool1')
             .fc(32, relu=False, name='conv4')
             .prelu(name='prelu4')
             .fc(2, relu=False, name='conv5-1')
             .softmax(1, name='prob1'))

        (self.feed('prelu4')
             .fc(4, relu=False, name='conv5-2'))


def detect_face(img, minsize, pnet, rnet, threshold, factor):
    scales = [m * np.power(factor, n) for n in range(10)]
    while minsize >= 12:
        minsize = minsize * factor
    boxes = img[0, :] if img.size else None
    return [s for s in scales if s > threshold], boxes
'''


def _run(net, **inputs):
    module = build_graph_module(with_weights(net))
    with torch.no_grad():
        return module(**{k: torch.from_numpy(v) for k, v in inputs.items()})


def test_a_file_full_of_python_is_read_at_its_model_classes(tmp_path, capsys) -> None:
    pnet = net_from_dsl(MTCNN, "detect_face.py", inputs={"data": (1, 3, 12, 12)})
    assert pnet.name == "PNet" and "dialect: facenet" in " ".join(map(str, pnet.diagnostics))
    assert sorted(pnet.values[v].blob for v in pnet.outputs) == ["conv4-2", "prob1"]
    rnet = net_from_dsl(MTCNN, "detect_face.py", inputs={"data": (1, 3, 24, 24)}, class_name="RNet")
    assert rnet.name == "RNet" and [rnet.values[v].shape for v in rnet.outputs] == [(1, 2), (1, 4)]
    with pytest.raises(DSLError, match=r"no model class 'ONet'; the file defines PNet, RNet \(choose with --class\)"):
        net_from_dsl(MTCNN, "detect_face.py", inputs={"data": (1, 3, 48, 48)}, class_name="ONet")
    path = tmp_path / "detect_face.py"
    path.write_text(MTCNN)
    assert main(["inspect", str(path), "--class", "RNet", "--input", "data=1,3,24,24"]) == 0
    assert "conv5-2" in capsys.readouterr().out
    assert main(["convert", str(path), "--class", "PNet", "--input", "data=1,3,12,12", "-o", str(tmp_path / "out")]) == 0
    source = (tmp_path / "out" / "PNet.py").read_text()
    assert "a PyTorch port of the caffe-tensorflow (facenet dialect) net 'PNet'" in source and "Caffe net" not in source


SETUP_PYTHON = '''
from network import Network
import tensorflow as tf

WIDTH = 8
SCALES = (8, 16, 32)


class Tiny(Network):
    MIN_DEPTH = 4

    def __init__(self, inputs, trainable=True, conv_width=0.5):
        self.conv_width = conv_width
        self.feat_stride = [16, ]
        Network.__init__(self, inputs, trainable)

    def setup(self, num_classes, use_bn=False, prefix='stage'):
        depth = lambda d: max(int(d * self.conv_width), self.MIN_DEPTH)
        print('building', prefix)  # passed over: builds nothing
        (self.feed('data')
             .conv(3, 3, depth(WIDTH * 2), 2, 2, name=f'{prefix}_conv0'))
        last = '%s_conv0' % prefix
        for i, c in enumerate_like((8, 12)):
            name = prefix + '_conv%d' % (i + 1)
            (self.feed(last)
                 .conv(3, 3, c, 1, 1, relu=not use_bn, name=name))
            if use_bn:
                (self.feed(name).batch_normalization(relu=True, name=name + '_bn'))
                name = name + '_bn'
            last = name
        with tf.variable_scope(None, 'head'):
            if num_classes > 10 or len(SCALES) * 3 * 2 != 18:
                (self.feed(last).conv(1, 1, 99, 1, 1, name='wrong'))
            else:
                (self.feed(last)
                     .conv(1, 1, len(SCALES) * 3 * 2, 1, 1, relu=False, name='score')
                     .avg_pool(2, 2, 2, 2, padding='VALID', name='pool'))
        scale = 1.0 / self.feat_stride[0]
        (self.feed('pool').conv(1, 1, num_classes if scale < 1 else 0, 1, 1, relu=False, name='cls'))
        return
        (self.feed('data').conv(1, 1, 1, 1, 1, name='after_return'))
'''


def test_setup_python_is_evaluated_not_run() -> None:
    text = SETUP_PYTHON.replace("enumerate_like((8, 12))", "((0, 8), (1, 12))")
    net = net_from_dsl(text, "tiny.py", inputs={"data": (1, 3, 16, 16)}, defines={"num_classes": "5"})
    layers = {n.name: n for n in net.nodes}
    assert [n.name for n in net.nodes if n.type == "Convolution"] == ["stage_conv0", "stage_conv1", "stage_conv2", "score", "cls"]
    assert layers["stage_conv0"].params.num_output == 8  # depth(16) = max(int(16 * 0.5), 4)
    assert layers["score"].params.num_output == 18 and layers["cls"].params.num_output == 5
    assert "after_return" not in layers and "wrong" not in layers
    assert any("is not run (it builds no layer)" in str(d) for d in net.diagnostics)  # the print(...) line
    with_bn = net_from_dsl(text, "tiny.py", inputs={"data": (1, 3, 16, 16)}, defines={"num_classes": "5", "use_bn": "True"})
    assert [n.name for n in with_bn.nodes if n.type == "BatchNorm"] == ["stage_conv1_bn", "stage_conv2_bn"]
    assert tuple(_run(net, data=np.ones((1, 3, 16, 16), np.float32)).shape) == (1, 5, 4, 4)
    with pytest.raises(DSLError, match=r"tiny\.py:\d+:\d+: this 'for' runs over something that cannot be evaluated .*enumerate_like\(\.\.\.\) is not evaluated.* repeats 2 chain"):
        net_from_dsl(SETUP_PYTHON, "tiny.py", inputs={"data": (1, 3, 16, 16)}, defines={"num_classes": "5"})
    with pytest.raises(DSLError, match=r"'num_classes' is computed by Python code .*give --define num_classes=VALUE"):
        net_from_dsl(text, "tiny.py", inputs={"data": (1, 3, 16, 16)})


def test_setup_parameters_take_the_values_the_base_init_passes() -> None:
    """CIHP_PGN-style: setup(self, is_training, n_classes, keep_prob) without defaults; the base
    __init__ of the same file passes its own defaults."""
    text = '''
import tensorflow as tf
class Network(object):
    def __init__(self, inputs, trainable=True, is_training=False, n_classes=20, keep_prob=1):
        self.inputs = inputs
        self.use_dropout = tf.placeholder_with_default(tf.constant(1.0), shape=[], name='use_dropout')
        self.setup(is_training, n_classes, keep_prob)

class PGN(Network):
    def setup(self, is_training, n_classes, keep_prob):
        (self.feed('data')
             .conv(1, 1, n_classes, 1, 1, name='cls')
             .dropout(keep_prob, name='drop'))
'''
    net = net_from_dsl(text, "model_pgn.py", inputs={"data": (1, 3, 8, 8)})
    assert net.node("cls").params.num_output == 20
    assert net_from_dsl(text, "model_pgn.py", inputs={"data": (1, 3, 8, 8)}, defines={"n_classes": "7"}).node("cls").params.num_output == 7


@pytest.mark.parametrize(
    ("snippet", "error", "words"),
    [
        ("        __import__('os').system('touch /tmp/proto2torch_pwned')\n        (self.feed('data').relu(name=__import__('os').name))\n", DSLError, "'__import__' is not allowed"),
        ("        (self.feed('data').relu(name=().__class__.__name__))\n", DSLError, "attribute '__name__' is not allowed"),
        ("        (self.feed('data').relu(name=open('/etc/passwd').read()))\n", DSLError, r"open\(\.\.\.\) is not evaluated"),
        ("        (self.feed('data').relu(name=exec('x = 1')))\n", DSLError, r"exec\(\.\.\.\) is not evaluated"),
        ("        (self.feed('data').conv(3, 3, 9**9**9, 1, 1, name='c'))\n", DSLError, "exponent too large"),
        ("        (self.feed('data').relu(name='x' * 10**10))\n", DSLError, "over the limit of 10,000"),
        ("        (self.feed('data').relu(name='%099999999d' % 1))\n", DSLError, "format widths of 4 digits or more"),
        ("        (self.feed('data').relu(name=f'{1:099999999}'))\n", DSLError, "format spec"),
        ("        (self.feed('data').relu(name='{:099999}'.format(1)))\n", DSLError, "format widths"),
        ("        for i in range(10**9):\n            pass\n", DSLError, "over the limit of 100,000"),
        ("        for i in range(60000):\n            for j in range(2):\n                pass\n", LimitError, "repeat more than 100,000 times"),
        ("        f = lambda x: f(x)\n        (self.feed('data').conv(3, 3, f(1), 1, 1, name='c'))\n", DSLError, "more than 64 deep"),
        ("        (self.feed('data').relu(name=[c for c in 'abc']))\n", DSLError, "a list comprehension is not evaluated"),
        ("        raise ValueError('no')\n", DSLError, "setup raises an exception here"),
        ("        x = " + "-" * 100_000 + "1\n", LimitError, "too deeply"),
        ("        x = " + "(" * 250 + "1" + ")" * 250 + "\n", LimitError, "nested more than 200 deep"),
    ],
)
def test_hostile_setup_is_refused_with_a_typed_error(snippet: str, error: type, words: str) -> None:
    text = "import os\nclass M(Network):\n    def setup(self):\n" + snippet + "        (self.feed('data').relu(name='end'))\n"
    with pytest.raises(error, match=words):
        net_from_dsl(text, "m.py", inputs={"data": (1, 3, 8, 8)})


def test_a_python_2_file_is_refused_as_such() -> None:
    text = "class Network(object):\n    def load(self, path):\n        print 'loading', path\n"
    with pytest.raises(DSLError, match=r"^net\.py:3:9: this file is Python 2 .*must be ported first"):
        net_from_dsl(text, "net.py")


ICNET_STYLE = '''
from network import Network

class Net(Network):
    def __init__(self, cfg, mode, image_reader=None):
        self.cfg = cfg
        self.mode = mode
        super().__init__(inputs={'data': image_reader.next_image}, cfg=self.cfg)

    def setup(self):
        (self.feed('data').conv(3, 3, 8, 2, 2, padding='VALID', name='c1'))
        shape = self.layers['c1'].get_shape().as_list()[1:3]
        h, w = shape
        if self.mode == 'eval':
            (self.feed('c1')
                 .avg_pool(h, w, h, w, padding='VALID', name='gp')
                 .resize_bilinear(shape, name='up'))
        else:
            (self.feed('c1').relu(name='train_only'))
        (self.feed('c1').conv(1, 1, self.cfg.param['num_classes'], 1, 1, name='cls'))
        (self.feed('c1').avg_pool(h / 3, w / 3, h / 3, w / 3, name='third'))
'''


def test_static_shapes_and_self_attributes_given_by_define() -> None:
    """ICNet-style: a layer's static shape (get_shape().as_list()) sizes later layers; self.mode and
    self.cfg come from __init__ arguments, so --define gives them (literals: dicts, tuples, strings)."""
    defines = {"self.mode": "eval", "self.cfg.param": "{'num_classes': 4}"}
    text = ICNET_STYLE.replace("h / 3, w / 3, h / 3, w / 3", "h // 3, w // 3, h // 3, w // 3")
    net = net_from_dsl(text, "icnet_like.py", inputs={"data": (1, 3, 17, 21)}, defines=defines)
    assert net.values[net.node("c1").outputs[0]].shape == (1, 8, 8, 10)
    assert net.node("gp").params.kernel == (8, 10) and net.values[net.node("up").outputs[0]].shape == (1, 8, 8, 10)
    assert net.node("cls").params.num_output == 4 and net.node("third").params.kernel == (2, 3) and net.find("train_only") is None
    train = net_from_dsl(text, "icnet_like.py", inputs={"data": (1, 3, 17, 21)}, defines={**defines, "self.mode": "'train'"})
    assert train.find("train_only") is not None and train.find("gp") is None
    with pytest.raises(DSLError, match=r"condition of this 'if' cannot be evaluated \('self.mode' is computed by Python code"):
        net_from_dsl(text, "icnet_like.py", inputs={"data": (1, 3, 17, 21)})
    with pytest.raises(DSLError, match=r"k_h must be an integer, got 2.6666666666666665: Python 3's '/' gives a float"):
        net_from_dsl(ICNET_STYLE, "icnet_like.py", inputs={"data": (1, 3, 17, 21)}, defines=defines)


def test_inspect_without_input_shapes_lists_the_layers(tmp_path, capsys) -> None:
    path = tmp_path / "detect_face.py"
    path.write_text(MTCNN)
    assert main(["inspect", str(path), "--class", "RNet"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line and not line.startswith(("layer", "net", "note"))}
    assert rows["conv5-2"][1] == "InnerProduct" and rows["conv5-2"][-3:] == ["?", "?", "?"]
    assert "inputs: data ?" in out
    with pytest.raises(DSLError, match="give --input data=N,C,H,W"):  # converting still needs them
        net_from_dsl(MTCNN, "detect_face.py", class_name="RNet")


TFPOSE_STYLE = '''
import tensorflow as tf
from tf_pose import network_base


class Tiny(network_base.BaseNetwork):
    def setup(self):
        (self.feed('image')
             .normalize_vgg(name='preprocess')
             .convb(3, 3, 8, 2, name='Conv2d_0')
             .separable_conv(3, 3, 12, 2, name='Conv2d_1')
             .separable_conv(1, 1, 5, 1, relu=False, name='out'))
'''


def _tf_same(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow's SAME padding: the odd pixel goes to the bottom/right."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return torch.nn.functional.pad(x, pads)


def test_tf_pose_slim_layers_compute_what_tensorflow_does(tmp_path) -> None:
    """tf-pose's convb (slim conv, batch norm center-only with eps 1e-3, ReLU) and separable_conv
    (depthwise, then pointwise with batch norm), with weights under slim's variable names, against
    the arithmetic written out here from TensorFlow's definitions."""
    rng = np.random.default_rng(0)
    r = lambda *shape: rng.uniform(-1, 1, shape).astype(np.float32)  # noqa: E731

    def bn(c):
        return {"beta": r(c), "moving_mean": r(c), "moving_variance": rng.uniform(0.5, 2, c).astype(np.float32)}

    weights = {
        "Conv2d_0": {"weights": r(3, 3, 3, 8)}, "Conv2d_0/BatchNorm": bn(8),
        "Conv2d_1_depthwise": {"depthwise_weights": r(3, 3, 8, 1)}, "Conv2d_1_pointwise": {"weights": r(1, 1, 8, 12)}, "Conv2d_1_pointwise/BatchNorm": bn(12),
        "out_depthwise": {"depthwise_weights": r(1, 1, 12, 1)}, "out_pointwise": {"weights": r(1, 1, 12, 5)}, "out_pointwise/BatchNorm": bn(5),
    }
    np.save(tmp_path / "w.npy", np.array(weights, dtype=object), allow_pickle=True)
    net = net_from_dsl(TFPOSE_STYLE, "tiny_pose.py", inputs={"image": (1, 3, 17, 16)})
    assert "dialect: tfpose" in " ".join(map(str, net.diagnostics))
    x = torch.from_numpy(rng.uniform(0, 255, (1, 3, 17, 16)).astype(np.float32))
    got = build_graph_module(with_weights(net, tmp_path / "w.npy"))(x)

    def norm(y, p):
        t = lambda a: torch.from_numpy(a).view(1, -1, 1, 1)  # noqa: E731
        return (y - t(p["moving_mean"])) / torch.sqrt(t(p["moving_variance"]) + 1e-3) + t(p["beta"])

    def conv(y, w, s, groups=1, k=None):
        k = k or w.shape[0]
        caffe = torch.from_numpy(np.ascontiguousarray(w.transpose(2, 3, 0, 1) if groups > 1 else w.transpose(3, 2, 0, 1)))
        return torch.nn.functional.conv2d(_tf_same(y, k, s), caffe, stride=s, groups=groups)

    with torch.no_grad():
        y = x * (1.0 / 256.0) - 0.5
        y = torch.relu(norm(conv(y, weights["Conv2d_0"]["weights"], 2), weights["Conv2d_0/BatchNorm"]))
        y = conv(y, weights["Conv2d_1_depthwise"]["depthwise_weights"], 2, groups=8)
        y = torch.relu(norm(conv(y, weights["Conv2d_1_pointwise"]["weights"], 1), weights["Conv2d_1_pointwise/BatchNorm"]))
        y = conv(y, weights["out_depthwise"]["depthwise_weights"], 1, groups=12)
        want = norm(conv(y, weights["out_pointwise"]["weights"], 1), weights["out_pointwise/BatchNorm"])
    assert got.shape == want.shape == (1, 5, 5, 4)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(DSLError, match=r"normalize_vgg\(\) is not part of the ethereon DSL"):  # tf-pose's methods belong to its dialect
        net_from_dsl(TFPOSE_STYLE, "tiny_pose.py", inputs={"image": (1, 3, 17, 16)}, dialect="ethereon")


def test_base_file_supplies_what_its_init_passes_to_setup(tmp_path) -> None:
    """CIHP_PGN-style, with the base class in its own network.py: --base reads it (as data) so that
    setup's arguments take the values its __init__ passes, and its class constants count."""
    from proto2torch.dsl import load_dsl

    base = tmp_path / "network.py"
    base.write_text('''
import tensorflow as tf
DEFAULT_PADDING = 'SAME'

class Network(object):
    WIDTH = 6

    def __init__(self, inputs, trainable=True, is_training=False, n_classes=20, keep_prob=1):
        self.inputs = inputs
        self.setup(is_training, n_classes, keep_prob)
''')
    model = tmp_path / "model_pgn.py"
    model.write_text('''
from kaffe.tensorflow import network

class PGN(network.Network):
    def setup(self, is_training, n_classes, keep_prob):
        (self.feed('data').conv(1, 1, self.WIDTH, 1, 1, name='c').conv(1, 1, n_classes, 1, 1, name='cls').dropout(keep_prob, name='drop'))
''')
    net = load_dsl(model, inputs={"data": (1, 3, 8, 8)}, base=[base])
    assert net.node("c").params.num_output == 6 and net.node("cls").params.num_output == 20
    with pytest.raises(DSLError, match=r"'self.WIDTH' is not set to a literal value"):
        load_dsl(model, inputs={"data": (1, 3, 8, 8)})
    assert main(["inspect", str(model), "--base", str(base), "--input", "data=1,3,8,8"]) == 0
    with pytest.raises(DSLError, match="cannot read base file"):
        load_dsl(model, inputs={"data": (1, 3, 8, 8)}, base=[tmp_path / "missing.py"])


def test_python_warnings_about_the_text_are_not_printed() -> None:
    """A model file with an invalid escape or ``1if`` makes Python's parser warn; reading it says nothing."""
    import warnings

    text = "class A(Network):\n    def setup(self):\n        x = '\\d'\n        y = 1if 1 else 2\n        (self.feed('data').relu(name='r'))\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = net_from_dsl(text, "warn.py", inputs={"data": (1, 3, 4, 4)})
    assert [n.type for n in net.nodes] == ["Input", "ReLU"]
