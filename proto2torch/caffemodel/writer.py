"""Write binary ``.caffemodel`` files: V2 ``layer`` entries, or legacy V1 ``layers``.

Blob payloads are written straight from the arrays' memory, so writing a large model
costs about one sequential write.  Each layer holds its name, type and blobs — what
Caffe's ``CopyTrainedLayersFrom`` reads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import WeightError
from ..prototxt.schema import ENUMS
from ..prototxt.upgrade import V1_TYPES

_V2_TO_V1 = {v2: v1 for v1, v2 in V1_TYPES.items() if v2}


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


class _Blob:
    """One blob's header bytes and its payload, sized before anything is written."""

    def __init__(self, array: np.ndarray, v1: bool):
        data = np.asarray(array, dtype="<f4")  # (np.ascontiguousarray would turn 0-d blobs into 1-d)
        self.data = data if data.flags.c_contiguous else data.copy(order="C")
        if v1:
            if self.data.ndim > 4:
                raise WeightError(f"a {self.data.ndim}-d blob cannot be stored in a V1 caffemodel (4 dimensions at most)")
            dims = [1] * (4 - self.data.ndim) + list(self.data.shape)
            head = b"".join(_key(n, 0) + _varint(d) for n, d in zip((1, 2, 3, 4), dims))
        else:
            head = _field(7, _field(1, b"".join(_varint(d) for d in self.data.shape)))
        self.head = head + _key(5, 2) + _varint(self.data.nbytes)
        self.size = len(self.head) + self.data.nbytes

    def write(self, f: BinaryIO, number: int) -> None:
        f.write(_key(number, 2) + _varint(self.size) + self.head)
        f.write(memoryview(self.data).cast("B"))


def write_caffemodel(
    path: str | Path,
    layers: Iterable[tuple[str, str, Sequence[np.ndarray]]],
    *,
    net_name: str = "",
    v1: bool = False,
) -> int:
    """Write ``(layer name, layer type, blobs)`` entries; returns the number of bytes written."""
    total = 0
    with atomic_open(path) as f:
        if net_name:
            head = _field(1, net_name.encode())
            f.write(head)
            total += len(head)
        for name, type_name, blobs in layers:
            total += _write_layer(f, name, type_name, blobs, v1)
    return total


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A file that appears under ``path`` only once it is completely written (a temporary name, then a rename)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.part")
    try:
        with open(partial, "wb") as f:
            yield f
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_blobproto(path: str | Path, array: np.ndarray) -> None:
    """One BlobProto (a ``.binaryproto``, e.g. a mean file), with a shape field."""
    blob = _Blob(array, v1=False)
    with atomic_open(path) as f:
        f.write(blob.head)
        f.write(memoryview(blob.data).cast("B"))


def write_solverstate(path: str | Path, iteration: int, learned_net: str, history: Sequence[np.ndarray], current_step: int = 0) -> None:
    """Caffe's SolverState: the iteration, the caffemodel it goes with, the history blobs, multistep's counter."""
    with atomic_open(path) as f:
        f.write(_key(1, 0) + _varint(iteration))
        f.write(_field(2, learned_net.encode()))
        for array in history:
            _Blob(array, v1=False).write(f, 3)
        f.write(_key(4, 0) + _varint(current_step))


def _write_layer(f: BinaryIO, name: str, type_name: str, blobs: Sequence[np.ndarray], v1: bool) -> int:
    encoded = [_Blob(b, v1) for b in blobs]
    if v1:
        enum_name = _V2_TO_V1.get(type_name)
        if enum_name is None:
            raise WeightError(f"layer '{name}': type {type_name} has no V1 enum value; write a V2 caffemodel instead")
        head = _field(4, name.encode()) + _key(5, 0) + _varint(ENUMS["V1LayerType"].values[enum_name])
        blob_field = 6
    else:
        head = _field(1, name.encode()) + _field(2, type_name.encode())
        blob_field = 7
    body = len(head) + sum(_blob_field_size(b, blob_field) for b in encoded)
    outer = _key(2 if v1 else 100, 2) + _varint(body)
    f.write(outer + head)
    for b in encoded:
        b.write(f, blob_field)
    return len(outer) + body


def _blob_field_size(blob: _Blob, number: int) -> int:
    return len(_key(number, 2)) + len(_varint(blob.size)) + blob.size
