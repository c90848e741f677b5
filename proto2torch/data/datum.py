"""Caffe's ``Datum`` (one record of an LMDB or LevelDB database) and mean files.

A Datum holds ``channels``, ``height``, ``width``, the pixels as ``data`` (uint8 bytes, CHW)
or ``float_data``, an integer ``label``, and ``encoded`` when ``data`` is a JPEG/PNG file's
bytes.  :func:`parse_datum` reads the protobuf wire format directly and checks that the
payload fits the declared shape before anything is allocated; :func:`datum_image` decodes
an encoded one with OpenCV, as Caffe does.

Mean files are a BlobProto (``.binaryproto``, as ``mean_file`` names it) or the ``.npy``
arrays pycaffe scripts use; :func:`load_mean` reads either as float32 (C, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, WeightError

MAX_PIXELS = 2**31
"""No record may claim more values than this (Caffe's int32 counts)."""


@dataclass(frozen=True)
class Datum:
    channels: int
    height: int
    width: int
    data: bytes | None
    float_data: np.ndarray | None
    label: int
    encoded: bool

    def array(self, where: str) -> np.ndarray:
        """The pixels as (C, H, W): uint8 from ``data``, float32 from ``float_data`` (not for encoded datums)."""
        shape = (self.channels, self.height, self.width)
        if self.data:
            return np.frombuffer(self.data, np.uint8).reshape(shape)
        if self.float_data is not None and self.float_data.size:
            return self.float_data.reshape(shape)
        raise DataError(f"{where}: the datum holds no pixels")


def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise DataError(f"{where}: truncated datum (a number runs past the record's end)")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise DataError(f"{where}: corrupt datum (a number longer than 10 bytes)")


def _signed32(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_datum(raw: bytes, where: str) -> Datum:
    """A Datum from its serialised bytes; ``where`` names the database and record for errors."""
    fields = {1: 0, 2: 0, 3: 0, 5: 0, 7: 0}
    data: bytes | None = None
    floats: list[np.ndarray] = []
    pos, end = 0, len(raw)
    while pos < end:
        key, pos = _varint(raw, pos, where)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(raw, pos, where)
            if number in fields:
                fields[number] = _signed32(value)
        elif wire == 2:
            n, pos = _varint(raw, pos, where)
            if n > end - pos:
                raise DataError(f"{where}: truncated datum (a field claims {n} bytes, {end - pos} remain)")
            chunk = raw[pos : pos + n]
            pos += n
            if number == 4:
                data = chunk
            elif number == 6:
                if n % 4:
                    raise DataError(f"{where}: corrupt datum (float_data of {n} bytes is not a whole number of floats)")
                floats.append(np.frombuffer(chunk, "<f4"))
        elif wire == 5:
            if end - pos < 4:
                raise DataError(f"{where}: truncated datum")
            if number == 6:
                floats.append(np.frombuffer(raw[pos : pos + 4], "<f4"))
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise DataError(f"{where}: corrupt datum (wire type {wire})")
    if pos != end:
        raise DataError(f"{where}: truncated datum")
    channels, height, width = fields[1], fields[2], fields[3]
    encoded = bool(fields[7])
    float_data = np.concatenate(floats).astype(np.float32) if floats else None
    if not encoded:
        if min(channels, height, width) <= 0:
            raise DataError(f"{where}: the datum's shape {channels}x{height}x{width} has a dimension that is not positive")
        count = channels * height * width
        if count > MAX_PIXELS:
            raise DataError(f"{where}: the datum claims {count} values")
        have = len(data) if data else (float_data.size if float_data is not None else 0)
        if have != count:
            what = "bytes of data" if data else "float_data values"
            raise DataError(f"{where}: the datum is {channels}x{height}x{width} ({count} values) but holds {have} {what}")
    elif not data:
        raise DataError(f"{where}: an encoded datum without image bytes")
    return Datum(channels, height, width, data, float_data, fields[5], encoded)


def decode_image(data: bytes, where: str, color: bool | None) -> np.ndarray:
    """An encoded image (JPEG, PNG, …) as uint8 (C, H, W), BGR as OpenCV decodes it.

    ``color`` True/False force 3 channels or 1 (Caffe's ``force_color``/``force_gray``,
    ``is_color``); None keeps the file's own channels (Caffe's "native" decoding)."""
    cv2 = _cv2()
    flag = cv2.IMREAD_UNCHANGED if color is None else (cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise DataError(f"{where}: the image bytes cannot be decoded")
    return hwc_to_chw(image)


def hwc_to_chw(image: np.ndarray) -> np.ndarray:
    return image[None] if image.ndim == 2 else np.ascontiguousarray(image.transpose(2, 0, 1))


def _cv2():  # noqa: ANN202
    try:
        import cv2
    except ImportError:
        raise DataError("decoding images needs OpenCV: pip install 'proto2torch[data]' (opencv-python-headless)") from None
    return cv2


def load_mean(path: str | Path) -> np.ndarray:
    """A mean as float32 (C, H, W): a ``.binaryproto`` BlobProto or a ``.npy`` array ((C, H, W), or (C,) per channel)."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read mean {path}: {exc}") from None
    else:
        from ..caffemodel.reader import read_blobproto

        try:
            array = read_blobproto(path)
        except WeightError as exc:
            raise DataError(f"cannot read mean file: {exc}") from None
    array = np.asarray(array, np.float32)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 1:
        array = array[:, None, None]
    if array.ndim != 3:
        raise DataError(f"{path}: a mean must be (C, H, W) (or 1 x C x H x W), got shape {list(array.shape)}")
    return array


def write_mean(path: str | Path, mean: np.ndarray) -> Path:
    """``mean`` (C, H, W) as a ``.binaryproto`` Caffe reads (shape 1 x C x H x W, as compute_image_mean writes)."""
    from ..caffemodel.writer import write_blobproto

    mean = np.asarray(mean, np.float32)
    if mean.ndim != 3:
        raise DataError(f"a mean must be (C, H, W), got shape {list(mean.shape)}")
    write_blobproto(path, mean[None])
    return Path(path)


def datum_bytes(image: np.ndarray | bytes, label: int = 0, *, encoded: bool = False) -> bytes:
    """A serialised Datum, as Caffe's convert_imageset writes one: a uint8 (C, H, W) image as ``data``, a
    float one as ``float_data``, or (``encoded``) an image file's bytes."""
    from ..caffemodel.writer import _key
    from ..caffemodel.writer import _varint as encode

    out = bytearray()
    if encoded:
        if not isinstance(image, (bytes, bytearray)):
            raise DataError("an encoded datum takes the image file's bytes")
        out += _key(4, 2) + encode(len(image)) + bytes(image)
        out += _key(5, 0) + encode(label) + _key(7, 0) + encode(1)
        return bytes(out)
    array = np.asarray(image)
    if array.ndim != 3:
        raise DataError(f"a datum image must be (C, H, W), got shape {list(array.shape)}")
    for number, dim in zip((1, 2, 3), array.shape):
        out += _key(number, 0) + encode(int(dim))
    if array.dtype == np.uint8:
        payload = np.ascontiguousarray(array).tobytes()
        out += _key(4, 2) + encode(len(payload)) + payload
    else:
        payload = np.ascontiguousarray(array, "<f4").tobytes()
        out += _key(6, 2) + encode(len(payload)) + payload
    out += _key(5, 0) + encode(label)
    return bytes(out)
