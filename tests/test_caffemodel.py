"""The caffemodel reader and writer: formats, legacy shapes, and refusal of broken files."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from google.protobuf import descriptor_pb2  # noqa: F401  (protobuf is a dependency; used by the bridge tests)

from proto2torch import load_caffemodel, read_caffemodel
from proto2torch.caffemodel import reader as reader_module
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


def _packed_blob(values: np.ndarray, pieces: int = 1) -> bytes:
    """A V2 blob with a shape and its data as ``pieces`` packed runs (protobuf concatenates repeated runs)."""
    shape = _field(7, _field(1, b"".join(_varint(d) for d in values.shape)))
    runs = np.array_split(values.astype("<f4").ravel(), pieces)
    return _field(7, shape + b"".join(_field(5, run.tobytes()) for run in runs))


def _model_file(tmp_path, layers: list[tuple[str, list[tuple[np.ndarray, int]]]]) -> tuple[bytes, object]:
    data = b"".join(_field(100, _field(1, name.encode()) + _field(2, b"Convolution") + b"".join(_packed_blob(v, k) for v, k in blobs)) for name, blobs in layers)
    path = tmp_path / "m.caffemodel"
    path.write_bytes(data)
    return data, path


@pytest.mark.parametrize(
    ("limits", "reads"), [(None, 1), ((1 << 16, 3, 1 << 20), 2), ((0, 512, 1 << 20), 4)], ids=["one read", "three buffers a read", "no gap bridged"]
)
def test_payloads_are_read_in_a_second_pass_into_one_aligned_block(tmp_path, monkeypatch, limits, reads) -> None:
    """Every blob, whatever the offsets in the file, equals what was written; single-run payloads are
    64-byte-aligned views of one shared block; a blob written in several runs is joined; reading a file
    and its bytes (no file descriptor, no ``preadv``) give the same, however the scattered reads are
    grouped (gap, buffers and bytes per ``preadv``)."""
    if limits is not None:
        for name, value in zip(("_GROUP_GAP", "_GROUP_IOVECS", "_GROUP_BYTES"), limits):
            monkeypatch.setattr(reader_module, name, value)
    real, calls = os.preadv, []
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: calls.append(offset) or real(fd, buffers, offset))
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in [(3,), (5, 2, 3, 3), (7,), (64, 33), (1,)]]
    layers = [("a", [(arrays[0], 1), (arrays[1], 1)]), ("b", [(arrays[2], 3)]), ("c", [(arrays[3], 1), (arrays[4], 1)])]
    data, path = _model_file(tmp_path, layers)
    for model in (read_caffemodel(path), read_caffemodel_bytes(data)):
        got = [b for layer in model.layers for b in layer.blobs]
        for a, b in zip(arrays, got):
            np.testing.assert_array_equal(a, b)
            assert b.dtype == np.float32 and b.flags.c_contiguous
        single = [got[i] for i in (0, 1, 3, 4)]
        assert all(b.ctypes.data % 64 == 0 for b in single)
        assert len({id(_root(b)) for b in single}) == 1
    assert len(calls) == reads  # the file's four single-run payloads; the bytes have no descriptor


def _root(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def test_a_file_that_ends_early_in_the_second_pass_is_a_weight_error(tmp_path, monkeypatch) -> None:
    """The first pass checks every length against the file's size; if the file is cut while it is read,
    the short read is a WeightError with the offset, not zeros left in the weights."""
    _, path = _model_file(tmp_path, [("a", [(np.ones((4, 4), np.float32), 1)])])
    real = os.preadv
    calls = []
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: calls.append(offset) or (0 if len(calls) > 1 else min(real(fd, buffers, offset), 8)))
    with pytest.raises(WeightError, match="ended inside blob data") as info:
        read_caffemodel(path)
    assert "m.caffemodel" in str(info.value) and len(calls) == 2 and calls[1] == calls[0] + 8
