"""Read binary ``.caffemodel`` files (V2 ``layer``, V1 ``layers``, V0 ``layers { layer }``).

The reader walks the protobuf wire format itself instead of building protobuf
objects, in two passes.  The first reads the few message levels that matter (net →
layer → blob) and seeks over each blob's packed float payload, noting where it lies.
The second reads every payload straight from the file into one aligned block of
memory, the blobs being views of it, in a few scattered reads (``preadv``) rather than
one call per blob.  (Asking for transparent huge pages for the block was measured and
made it slower: after another process frees a lot of memory, the kernel stalls
compacting it.)  Loading
therefore costs less than reading the file into a ``bytes`` object, and peak memory
is about the size of the weights — no second copy, no Python float lists.  The blobs
of one file share that block: it is freed when the last of them is.

It is also defensive: every length is checked against the bytes that remain before
anything is allocated, so truncated, lying or non-Caffe files give a
:class:`~proto2torch.errors.WeightError` with the byte offset and layer, never a
crash or an unbounded allocation.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import ByteOffset, WeightError, guarded
from ..progress import Progress
from ..prototxt.schema import ENUMS
from ..prototxt.upgrade import V0_TYPES, V1_TYPES

MAX_FILE_BYTES = 2**31 - 1
"""Caffe itself reads model files up to 2 GB (protobuf's limit); so do we."""

MAX_DIMS = 32

_ALIGN = 64
"""Each payload starts at a multiple of this in the shared block (a cache line; SIMD loads)."""

_GROUP_BYTES = 64 * 2**20
_GROUP_IOVECS = 512
_GROUP_GAP = 1 << 16
"""One ``preadv`` covers payloads while the bytes between two of them (headers) are at most
``_GROUP_GAP``, up to ``_GROUP_BYTES`` and ``_GROUP_IOVECS`` buffers (Linux allows 1024)."""


@dataclass(frozen=True, slots=True)
class _Payload:
    """A packed float32 payload not read yet: where it lies in the file."""

    offset: int
    nbytes: int


_FLOAT32 = np.dtype("<f4")
"""Caffe's float data on disk."""

_UNREAD = np.empty(0, np.float32)
"""Holds a blob's place in its layer until :meth:`_WireReader.finish` reads it."""


@dataclass(frozen=True, slots=True)
class _Pending:
    payload: _Payload
    blobs: list[np.ndarray]
    index: int
    shape: tuple[int, ...]


@dataclass
class ModelLayer:
    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)
    legacy: list[bool] = field(default_factory=list)
    """Per blob: True when its shape came from the legacy num/channels/height/width fields."""
    offset: int = 0


@dataclass
class CaffeModel:
    name: str
    format: str
    """'v2', 'v1' or 'v0'."""
    layers: list[ModelLayer]
    path: str

    def as_dict(self) -> dict[str, list[np.ndarray]]:
        out: dict[str, list[np.ndarray]] = {}
        for layer in self.layers:
            if layer.blobs and layer.name not in out:
                out[layer.name] = layer.blobs
        return out


def load_caffemodel(path: str | Path, progress: bool = True) -> dict[str, list[np.ndarray]]:
    """Layer name → its blobs (float32 numpy arrays in Caffe's layout).

    Legacy 4-d blobs keep their num/channels/height/width shape; layers without blobs
    are left out.
    """
    return read_caffemodel(path, progress=progress).as_dict()


@guarded("reading the caffemodel")
def read_caffemodel(path: str | Path, progress: bool = True) -> CaffeModel:
    path = str(path)
    handle, size = _open_binary(path, "", "model")
    with handle, Progress(f"reading {os.path.basename(path)}", size, min_total=64 * 2**20) as bar:
        return _WireReader(handle, size, path, bar if progress else None).net()


@guarded("reading the caffemodel")
def read_caffemodel_bytes(data: bytes, name: str = "<bytes>") -> CaffeModel:
    return _WireReader(io.BytesIO(data), len(data), name, None).net()


@dataclass
class SolverStateFile:
    """A Caffe ``.solverstate``: the iteration reached, its caffemodel, the history blobs, multistep's counter."""

    iteration: int
    learned_net: str
    history: list[np.ndarray]
    current_step: int
    path: str


def _open_binary(path: str | Path, what: str, kind: str = "protobuf") -> tuple[BinaryIO, int]:
    """The open file and its size, refusing what is missing or over Caffe's 2 GB limit."""
    try:
        size = os.path.getsize(path)
        handle = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise WeightError(f"cannot read {what + ' ' if what else ''}{path}: {exc.strerror}") from None
    if size > MAX_FILE_BYTES:
        handle.close()
        raise WeightError(f"{path}: {size} bytes is over Caffe's 2 GB limit for {kind} files")
    return handle, size


def read_solverstate(path: str | Path) -> SolverStateFile:
    handle, size = _open_binary(path, "solver state")
    with handle:
        return _WireReader(handle, size, str(path), None).solver_state()


def read_blobproto(path: str | Path) -> np.ndarray:
    """The one BlobProto of a ``.binaryproto`` file (a mean file), in its declared shape."""
    handle, size = _open_binary(path, "blob file")
    with handle:
        reader = _WireReader(handle, size, str(path), None)
        if size == 0:
            raise reader.fail("the file is empty")
        holder = ModelLayer("", "")
        reader.blob(holder, size)
        reader.finish()
        return holder.blobs[0]


def _peek_name(head: bytes, name_field: int) -> str | None:
    """Best-effort layer name from the first bytes of a (truncated) layer entry."""
    key = bytes([name_field << 3 | 2])
    if not head.startswith(key) or len(head) < 2 or head[1] & 0x80:
        return None
    return head[2 : 2 + head[1]].decode("utf-8", errors="replace")


class _WireReader:
    """Just enough of the protobuf wire format for NetParameter → layers → blobs."""

    def __init__(self, f: BinaryIO, size: int, path: str, bar: Progress | None):
        self.f = f
        self.size = size
        self.path = path
        self.pos = 0
        self.bar = bar
        self.layer: str | None = None
        self.pending: list[_Pending] = []

    # --- errors --------------------------------------------------------------------------------
    def fail(self, message: str, at: int | None = None) -> WeightError:
        return WeightError(message, ByteOffset(self.path, self.pos if at is None else at), self.layer)

    # --- primitives ------------------------------------------------------------------------------
    def read(self, n: int, end: int) -> bytes:
        if n > end - self.pos:
            raise self.fail(f"truncated: a field needs {n} bytes but only {end - self.pos} remain")
        data = self.f.read(n)
        if len(data) != n:
            raise self.fail("truncated: the file ended early")
        self.pos += n
        return data

    def varint(self, end: int) -> int:
        result = shift = 0
        start = self.pos
        while True:
            if self.pos >= end:
                raise self.fail("truncated varint", start)
            b = self.f.read(1)
            if not b:
                raise self.fail("truncated: the file ended inside a varint", start)
            self.pos += 1
            byte = b[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise self.fail("malformed varint (more than 10 bytes)", start)

    def key(self, end: int) -> tuple[int, int]:
        start = self.pos
        k = self.varint(end)
        number, wire = k >> 3, k & 7
        if number == 0 or wire in (3, 4, 6, 7):
            raise self.fail(f"invalid field key (field {number}, wire type {wire}): not a Caffe model, or corrupted", start)
        return number, wire

    def length(self, end: int) -> int:
        n = self.varint(end)
        if n > end - self.pos:
            raise self.fail(f"truncated: a length-delimited field claims {n} bytes but only {end - self.pos} remain")
        return n

    def sub_end(self, end: int) -> int:
        """Read a nested message's length; return where the message ends."""
        n = self.length(end)
        return self.pos + n

    def layer_end(self, end: int, name_field: int) -> int:
        """Like :meth:`sub_end` for a layer entry; a truncated one is reported with its name."""
        start = self.pos
        n = self.varint(end)
        if n <= end - self.pos:
            return self.pos + n
        head = self.f.read(min(end - self.pos, 4096))
        self.layer = _peek_name(head, name_field)
        raise self.fail(f"truncated: the layer entry claims {n} bytes but only {end - self.pos} remain", start)

    def skip(self, wire: int, end: int) -> None:
        if wire == 0:
            self.varint(end)
            return
        n = {1: 8, 5: 4}.get(wire)
        if n is None:
            n = self.length(end)
        if n > end - self.pos:
            raise self.fail(f"truncated: a field needs {n} bytes but only {end - self.pos} remain")
        self.f.seek(n, io.SEEK_CUR)
        self.pos += n

    def string(self, end: int) -> str:
        n = self.length(end)
        return self.read(n, end).decode("utf-8", errors="replace")

    # --- messages ---------------------------------------------------------------------------------
    def net(self) -> CaffeModel:
        end = self.size
        name = ""
        v2: list[ModelLayer] = []
        v1: list[ModelLayer] = []
        if self.size == 0:
            raise self.fail("the file is empty")
        head = self.f.read(min(64, self.size))
        self.f.seek(0)
        if head.lstrip()[:6] in (b"name: ", b"layer ", b"layers", b"input:", b'name:"') or head.lstrip().startswith(b"#"):
            raise self.fail("this is a text file (a prototxt?), not a binary caffemodel", 0)
        while self.pos < end:
            number, wire = self.key(end)
            if number == 1 and wire == 2:
                name = self.string(end)
            elif number == 100 and wire == 2:
                v2.append(self.layer_v2(self.layer_end(end, 1)))
            elif number == 2 and wire == 2:
                v1.append(self.layer_v1(self.layer_end(end, 4)))
            else:
                self.skip(wire, end)
        if v2 and v1:
            raise self.fail("the model mixes V2 'layer' and legacy V1 'layers' entries; Caffe refuses such files", 0)
        fmt = "v2" if v2 else ("v0" if any(layer.type.startswith("v0:") for layer in v1) else "v1")
        for layer in v1:
            layer.type = layer.type.removeprefix("v0:")
        self.finish()
        return CaffeModel(name, fmt, v2 or v1, self.path)

    def solver_state(self) -> SolverStateFile:
        end = self.size
        iteration, current_step, learned = 0, 0, ""
        history = ModelLayer("", "")
        if self.size == 0:
            raise self.fail("the file is empty")
        while self.pos < end:
            number, wire = self.key(end)
            if number == 1 and wire == 0:
                iteration = self.signed(self.varint(end))
            elif number == 2 and wire == 2:
                learned = self.string(end)
            elif number == 3 and wire == 2:
                self.blob(history, self.sub_end(end))
            elif number == 4 and wire == 0:
                current_step = self.signed(self.varint(end))
            else:
                self.skip(wire, end)
        if iteration < 0 or current_step < 0:
            raise self.fail(f"a negative iteration ({iteration}) or step ({current_step})", 0)
        self.finish()
        return SolverStateFile(iteration, learned, history.blobs, current_step, self.path)

    def layer_v2(self, end: int) -> ModelLayer:
        layer = ModelLayer("", "", offset=self.pos)
        while self.pos < end:
            number, wire = self.key(end)
            if number == 1 and wire == 2:
                layer.name = self.string(end)
                self.layer = layer.name
            elif number == 2 and wire == 2:
                layer.type = self.string(end)
            elif number == 7 and wire == 2:
                self.blob(layer, self.sub_end(end))
            else:
                self.skip(wire, end)
        self.layer = None
        return layer

    def layer_v1(self, end: int) -> ModelLayer:
        layer = ModelLayer("", "", offset=self.pos)
        while self.pos < end:
            number, wire = self.key(end)
            if number == 4 and wire == 2:
                layer.name = self.string(end)
                self.layer = layer.name
            elif number == 5 and wire == 0:
                enum = self.varint(end)
                layer.type = V1_TYPES.get(ENUMS["V1LayerType"].name_of(enum) or "", f"V1 type {enum}")
            elif number == 6 and wire == 2:
                self.blob(layer, self.sub_end(end))
            elif number == 1 and wire == 2:
                self.layer_v0(layer, self.sub_end(end))
            else:
                self.skip(wire, end)
        self.layer = None
        return layer

    def layer_v0(self, layer: ModelLayer, end: int) -> None:
        while self.pos < end:
            number, wire = self.key(end)
            if number == 1 and wire == 2:
                layer.name = self.string(end)
                self.layer = layer.name
            elif number == 2 and wire == 2:
                v0 = self.string(end)
                layer.type = "v0:" + V1_TYPES.get(V0_TYPES.get(v0, ""), v0)
            elif number == 50 and wire == 2:
                self.blob(layer, self.sub_end(end))
            else:
                self.skip(wire, end)

    def blob(self, layer: ModelLayer, end: int) -> None:
        start = self.pos
        legacy = [0, 0, 0, 0]
        has_legacy = False
        dims: list[int] | None = None
        chunks: list[np.ndarray | _Payload] = []
        doubles: list[np.ndarray] = []
        while self.pos < end:
            number, wire = self.key(end)
            if 1 <= number <= 4 and wire == 0:
                value = self.varint(end)
                legacy[number - 1] = value - (1 << 64) if value >= 1 << 63 else value
                has_legacy = True
            elif number == 7 and wire == 2:
                dims = self.blob_shape(self.sub_end(end))
            elif number == 5 and wire == 2:
                chunks.append(self.payload(self.length(end), end))
            elif number == 5 and wire == 5:
                chunks.append(self.unpacked_floats(end))
            elif number == 8 and wire == 2:
                doubles.append(self.packed(self.length(end), np.dtype("<f8"), end))
            elif number == 8 and wire == 1:
                doubles.append(np.frombuffer(self.read(8, end), "<f8").copy())
            else:
                self.skip(wire, end)
        if chunks and doubles:
            raise self.fail("a blob has both float 'data' and 'double_data'", start)
        deferred = chunks[0] if len(chunks) == 1 and isinstance(chunks[0], _Payload) else None
        if deferred is not None:
            data, size = _UNREAD, deferred.nbytes // 4  # finish() reads it into its place
        else:
            parts = [self.fetch(c) if isinstance(c, _Payload) else c for c in chunks] or [d.astype(np.float32) for d in doubles]
            data = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else np.zeros(0, np.float32))
            size = data.size
        if dims is not None:
            shape = tuple(dims)
        elif has_legacy:
            shape = tuple(legacy)
        else:
            shape = (size,)
        if any(d < 0 for d in shape):
            raise self.fail(f"blob {len(layer.blobs)} declares a negative dimension {list(shape)}", start)
        expected = int(np.prod(shape, dtype=np.float64)) if shape else 1
        if expected != size:
            raise self.fail(f"blob {len(layer.blobs)} declares shape {list(shape)} ({expected} values) but holds {size} values", start)
        if deferred is not None:
            self.pending.append(_Pending(deferred, layer.blobs, len(layer.blobs), shape))
        layer.blobs.append(data if deferred is not None else data.reshape(shape))
        layer.legacy.append(dims is None and has_legacy)

    def blob_shape(self, end: int) -> list[int]:
        dims: list[int] = []
        while self.pos < end:
            number, wire = self.key(end)
            if number == 1 and wire == 2:
                stop = self.sub_end(end)
                while self.pos < stop:
                    dims.append(self.signed(self.varint(stop)))
            elif number == 1 and wire == 0:
                dims.append(self.signed(self.varint(end)))
            else:
                self.skip(wire, end)
            if len(dims) > MAX_DIMS:
                raise self.fail(f"a blob shape with more than {MAX_DIMS} dimensions")
        return dims

    @staticmethod
    def signed(value: int) -> int:
        return value - (1 << 64) if value >= 1 << 63 else value

    def payload(self, nbytes: int, end: int, itemsize: int = 4) -> _Payload:
        """Note a packed payload and seek over it; :meth:`finish` (or :meth:`fetch`) reads it."""
        if nbytes % itemsize:
            raise self.fail(f"packed data of {nbytes} bytes is not a whole number of {itemsize}-byte values")
        if nbytes > end - self.pos:
            raise self.fail(f"truncated: packed data claims {nbytes} bytes but only {end - self.pos} remain")
        found = _Payload(self.pos, nbytes)
        self.f.seek(nbytes, io.SEEK_CUR)
        self.pos += nbytes
        return found

    def packed(self, nbytes: int, dtype: np.dtype, end: int) -> np.ndarray:
        """A packed payload read now (double data)."""
        return self.fetch(self.payload(nbytes, end, dtype.itemsize), dtype)

    def fetch(self, payload: _Payload, dtype: np.dtype = _FLOAT32) -> np.ndarray:
        """A noted payload read now, in native byte order (a blob whose data comes in several pieces)."""
        out = np.empty(payload.nbytes // dtype.itemsize, dtype)
        self._read_into(memoryview(out).cast("B"), payload.offset)
        self.f.seek(self.pos)
        return out.astype(dtype.newbyteorder("="), copy=False)

    def _read_into(self, view: memoryview, offset: int) -> None:
        self.f.seek(offset)
        done = 0
        while done < len(view):
            n = self.f.readinto(view[done : done + (1 << 26)])  # type: ignore[attr-defined]
            if not n:
                raise self.fail("truncated: the file ended inside blob data", offset + done)
            done += n

    def finish(self) -> None:
        """Second pass: read every noted payload into one aligned block and make the blobs views of it."""
        if not self.pending:
            return
        slots, total = [], 0
        for item in self.pending:
            slots.append(total)
            total += -(-item.payload.nbytes // _ALIGN) * _ALIGN
        spare = np.empty(total + _ALIGN, np.uint8)
        shift = -spare.ctypes.data % _ALIGN
        block = spare[shift : shift + total]
        views = []
        for item, slot in zip(self.pending, slots):
            view = block[slot : slot + item.payload.nbytes]
            views.append(memoryview(view))
            item.blobs[item.index] = view.view("<f4").reshape(item.shape)
        self._read_payloads([item.payload for item in self.pending], views)
        if sys.byteorder != "little":
            for item in self.pending:
                item.blobs[item.index] = item.blobs[item.index].astype(np.float32)
        self.pending = []

    def _read_payloads(self, payloads: list[_Payload], views: list[memoryview]) -> None:
        """Fill ``views`` from the file: scattered reads over runs of payloads and the headers between them."""
        fileno = getattr(self.f, "fileno", None)
        try:
            fd = fileno() if fileno is not None and hasattr(os, "preadv") else None
        except (OSError, io.UnsupportedOperation):
            fd = None
        if fd is None:
            for payload, view in zip(payloads, views):
                self._read_into(view, payload.offset)
                self._progress(payload.offset + payload.nbytes)
            return
        scratch = memoryview(bytearray(_GROUP_GAP))
        group: list[memoryview] = []
        start = cursor = 0
        for payload, view in zip(payloads, views):
            gap = payload.offset - cursor
            if group and (gap > _GROUP_GAP or len(group) >= _GROUP_IOVECS or cursor - start >= _GROUP_BYTES):
                self._preadv(fd, group, start)
                group = []
            if not group:
                start = payload.offset
            elif gap:
                group.append(scratch[:gap])
            group.append(view)
            cursor = payload.offset + payload.nbytes
        if group:
            self._preadv(fd, group, start)

    def _preadv(self, fd: int, buffers: list[memoryview], offset: int) -> None:
        want = sum(len(b) for b in buffers)
        done = 0
        while done < want:
            n = os.preadv(fd, buffers, offset + done)
            if n <= 0:
                raise self.fail("truncated: the file ended inside blob data (did it change while being read?)", offset + done)
            done += n
            while buffers and n >= len(buffers[0]):
                n -= len(buffers[0])
                buffers = buffers[1:]
            if n:
                buffers = [buffers[0][n:], *buffers[1:]]
        self._progress(offset + want)

    def _progress(self, position: int) -> None:
        if self.bar is not None:
            self.bar.update(position)

    def unpacked_floats(self, end: int) -> np.ndarray:
        """Non-packed repeated floats: (key, 4 bytes) pairs; read the run in one go."""
        values = [np.frombuffer(self.read(4, end), "<f4")]
        while self.pos + 5 <= end:
            head = self.f.read(1)
            if head != b"\x2d":  # key of field 5, wire type 5
                self.f.seek(-len(head), io.SEEK_CUR)
                break
            self.pos += 1
            values.append(np.frombuffer(self.read(4, end), "<f4"))
        return np.concatenate(values).astype(np.float32)
