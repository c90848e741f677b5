"""Legacy formats (V0, V1, net-level inputs) and NetStateRule filtering, as Caffe upgrades and filters them."""

from __future__ import annotations

import pytest

from proto2torch import load_prototxt, net_from_text
from proto2torch.api import to_torch
from proto2torch.errors import SchemaError, UnsupportedLayerError

from .conftest import CASES_DIR


def _types(net):
    return [(n.name, n.type) for n in net.nodes]


def test_v0_net_with_padding_layer_folds_the_pad() -> None:
    text = """
    name: "v0" input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
    layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
    layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1 biasterm: false } bottom: "pad1" top: "conv1" }
    layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
    layers { layer { name: "norm" type: "lrn" local_size: 3 alpha: 0.5 beta: 0.7 k: 2 } bottom: "pool1" top: "norm" }
    """
    net = net_from_text(text, "v0.prototxt")
    assert _types(net) == [("input", "Input"), ("conv1", "Convolution"), ("pool1", "Pooling"), ("norm", "LRN")]
    conv = net.node("conv1").params
    assert conv.pad == (2,) and conv.kernel == (3,) and conv.bias_term is False
    assert net.node("pool1").params.method == "AVE"
    assert net.node("norm").params.k == 2.0
    assert net.values[net.node("conv1").outputs[0]].shape == (1, 4, 10, 10)


def test_v0_padding_feeding_other_layers_is_refused() -> None:
    text = """
    input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
    layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
    layers { layer { name: "relu" type: "relu" } bottom: "pad1" top: "r" }
    """
    with pytest.raises(SchemaError, match="only conv and pool"):
        net_from_text(text, "v0.prototxt")


def test_v1_enum_types_and_blobs_lr() -> None:
    net = load_prototxt(CASES_DIR / "layer_legacy_v1" / "net.prototxt")
    assert [t for _, t in _types(net)] == ["Input", "Convolution", "ReLU", "Pooling", "LRN", "Convolution", "ReLU", "InnerProduct", "Dropout", "Softmax"]
    conv1 = net.node("conv1").msg
    assert [p.get("lr_mult") for p in conv1.all("param")] == [1.0, 2.0]
    assert [p.get("decay_mult") for p in conv1.all("param")] == [1.0, 0.0]


def test_mixing_v1_and_v2_is_refused() -> None:
    with pytest.raises(SchemaError, match="mixes"):
        net_from_text('layer { name: "a" type: "Input" top: "x" } layers { name: "b" type: RELU bottom: "x" top: "x" }')


@pytest.mark.parametrize(
    "inputs",
    [
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 5',
        'input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 5 }',
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 5 } } }',
    ],
)
def test_three_ways_to_declare_inputs(inputs: str) -> None:
    net = net_from_text(inputs + ' layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    (data,) = net.inputs
    assert net.values[data].shape == (1, 3, 4, 5)


def test_input_dim_count_must_fit() -> None:
    with pytest.raises(SchemaError, match="need 8 'input_dim' values"):
        net_from_text('input: "a" input: "b" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4')


def test_phase_stage_and_level_rules() -> None:
    text = """
    layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "test_only" type: "ReLU" bottom: "x" top: "a" include { phase: TEST } }
    layer { name: "train_only" type: "ReLU" bottom: "x" top: "b" include { phase: TRAIN } }
    layer { name: "not_test" type: "ReLU" bottom: "x" top: "c" exclude { phase: TEST } }
    layer { name: "staged" type: "ReLU" bottom: "x" top: "d" include { stage: "deploy" } }
    layer { name: "not_staged" type: "ReLU" bottom: "x" top: "e" exclude { stage: "deploy" } }
    layer { name: "level2" type: "ReLU" bottom: "x" top: "f" include { min_level: 2 } }
    """
    names = lambda net: [n.name for n in net.nodes][1:]  # noqa: E731
    assert names(net_from_text(text)) == ["test_only", "not_staged"]
    assert names(net_from_text(text, phase="TRAIN")) == ["train_only", "not_test", "not_staged"]
    assert names(net_from_text(text, stages=["deploy"])) == ["test_only", "staged"]
    assert names(net_from_text(text, level=3)) == ["test_only", "not_staged", "level2"]


def test_in_place_layers_get_fresh_values_and_the_name_means_latest() -> None:
    net = load_prototxt(CASES_DIR / "layer_inplace_phase" / "net.prototxt")
    versions = [v for v in net.values.values() if v.blob == "conv1"]
    assert len(versions) == 4  # conv1, relu1, drop1, scale1 each write "conv1"
    tap = net.node("tap_after")
    assert tap.inputs == (net.node("scale1").outputs[0],)
    assert net.latest()["conv1"] == net.node("scale1").outputs[0]


def test_duplicate_top_that_is_not_in_place_is_an_error() -> None:
    from proto2torch.errors import GraphError

    text = """
    layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "a" type: "ReLU" bottom: "x" top: "y" }
    layer { name: "b" type: "Sigmoid" bottom: "x" top: "y" }
    """
    with pytest.raises(GraphError, match="already produced") as info:
        net_from_text(text, "dup.prototxt")
    assert "dup.prototxt:4:" in str(info.value)


def test_missing_bottom_marks_the_net_unconvertible() -> None:
    text = 'layer { name: "a" type: "ReLU" bottom: "nowhere" top: "y" }'
    net = net_from_text(text, "frag.prototxt")
    (problem,) = net.unsupported()
    assert "not produced by any layer" in problem.reason
    with pytest.raises(UnsupportedLayerError, match="frag.prototxt:1:"):
        to_torch(net)


def test_bottom_from_other_phase_becomes_an_input() -> None:
    text = """
    layer { name: "train-data" type: "DummyData" top: "x" include { phase: TRAIN } dummy_data_param { shape { dim: 4 dim: 2 } } }
    layer { name: "a" type: "ReLU" bottom: "x" top: "y" }
    """
    net = net_from_text(text)
    assert not net.unsupported()
    assert [net.values[v].blob for v in net.inputs] == ["x"]
    assert any("TRAIN-only" in str(d) or "leave out" in str(d) for d in net.diagnostics)
    module = to_torch(net, inputs={"x": (4, 2)})
    assert module is not None
