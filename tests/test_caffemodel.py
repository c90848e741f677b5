"""The caffemodel reader and writer: formats, legacy shapes, and refusal of broken files."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from google.protobuf import descriptor_pb2  # noqa: F401  (protobuf is a dependency; used by the bridge tests)

from proto2torch import load_caffemodel, read_caffemodel
from proto2torch.caffemodel.reader import read_caffemodel_bytes
from proto2torch.caffemodel.writer import write_caffemodel
from proto2torch.errors import WeightError


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_round_trip_v2_and_v1(tmp_path) -> None:
    rng = np.random.default_rng(0)
    blobs = [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    ip = [rng.standard_normal((5, 7)).astype(np.float32)]
    layers = [("conv", "Convolution", blobs), ("fc", "InnerProduct", ip)]
    write_caffemodel(tmp_path / "v2.caffemodel", layers, net_name="n")
    write_caffemodel(tmp_path / "v1.caffemodel", layers, net_name="n", v1=True)
    v2 = read_caffemodel(tmp_path / "v2.caffemodel")
    v1 = read_caffemodel(tmp_path / "v1.caffemodel")
    assert v2.format == "v2" and v1.format == "v1"
    assert [(layer.name, layer.type) for layer in v1.layers] == [("conv", "Convolution"), ("fc", "InnerProduct")]
    np.testing.assert_array_equal(v2.layers[0].blobs[0], blobs[0])
    assert v1.layers[0].blobs[1].shape == (1, 1, 1, 4)  # legacy num/channels/height/width, right-aligned
    assert v1.layers[1].blobs[0].shape == (1, 1, 5, 7)
    assert v1.layers[0].legacy == [False, True] or v1.layers[0].legacy == [True, True]
    assert load_caffemodel(tmp_path / "v2.caffemodel")["fc"][0].shape == (5, 7)


def test_double_data_and_unpacked_floats() -> None:
    shape = _field(7, _field(1, _varint(3)))
    doubles = _field(8, struct.pack("<3d", 1.5, -2.0, 3.25))
    layer = _field(1, b"a") + _field(2, b"Scale") + _field(7, shape + doubles)
    unpacked = b"".join(bytes([0x2D]) + struct.pack("<f", v) for v in (1.0, 2.0))
    layer2 = _field(1, b"b") + _field(2, b"Bias") + _field(7, unpacked)
    model = read_caffemodel_bytes(_field(100, layer) + _field(100, layer2))
    np.testing.assert_array_equal(model.layers[0].blobs[0], np.array([1.5, -2.0, 3.25], np.float32))
    np.testing.assert_array_equal(model.layers[1].blobs[0], np.array([1.0, 2.0], np.float32))


def test_v0_caffemodel_layers() -> None:
    v0 = _field(1, b"conv1") + _field(2, b"conv") + _field(50, _field(5, struct.pack("<2f", 1, 2)))
    model = read_caffemodel_bytes(_field(2, _field(1, v0)))
    assert model.format == "v0"
    assert model.layers[0].name == "conv1" and model.layers[0].type == "Convolution"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (_field(100, _field(1, b"abc"))[:-1], "truncated"),
        (_field(100, _field(7, _field(7, _field(1, _varint(10**12))) + _field(5, struct.pack("<f", 1.0)))), "declares shape"),
        (_field(100, _field(7, _field(5, b"\x00" * 6))), "whole number"),
        (_varint(100 << 3 | 2) + _varint(2**40), "claims"),
        (b"\x0f\x00\x00", "invalid field key"),
        (b'name: "CaffeNet"\nlayer {', "text file"),
        (_field(100, _field(1, b"a")) + _field(2, _field(4, b"b")), "mixes"),
    ],
)
def test_broken_files_raise_weight_error_with_offset(data: bytes, words: str) -> None:
    with pytest.raises(WeightError, match=words) as info:
        read_caffemodel_bytes(data, "bad.caffemodel")
    assert "bad.caffemodel" in str(info.value)


def test_truncated_real_file_names_the_layer(tmp_path) -> None:
    layers = [("conv", "Convolution", [np.ones((8, 3, 3, 3), np.float32)])]
    path = tmp_path / "w.caffemodel"
    write_caffemodel(path, layers)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(WeightError) as info:
        read_caffemodel(path)
    assert "layer 'conv'" in str(info.value) and "w.caffemodel" in str(info.value)
