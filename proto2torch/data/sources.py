"""Where Caffe's data layers read from, as ordered record streams.

* :class:`DatabaseSource` — ``Data``: an LMDB (``lmdb``) or LevelDB (``plyvel``, optional)
  database of Datums, in key order, as Caffe's cursor walks it.
* :class:`ImageListSource` — ``ImageData``: a list file of ``path label`` lines (the label is
  after the last space), images read with OpenCV as Caffe's ``ReadImageToCVMat`` does (colour or
  grey, then ``cv::resize`` to ``new_height`` x ``new_width`` when both are given).
* :class:`HDF5Source` — ``HDF5Data``: a list file of ``.h5`` files, one dataset per top, rows in
  order, file after file.

Each yields records forever (Caffe starts again from the first record at the end), and every
failure names the source and the record: a missing database, an unreadable image, a Datum that
disagrees with its shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..resources import exists
from .datum import _cv2, decode_image, hwc_to_chw, parse_datum

MAX_LIST_LINES = 50_000_000


@dataclass
class Record:
    image: np.ndarray
    """(C, H, W) uint8 or float32."""
    label: float
    where: str


class DatabaseSource:
    """Datums of an LMDB or LevelDB database, in key order."""

    def __init__(self, path: str | Path, backend: str, color: bool | None = None):
        self.path = Path(path)
        self.backend = backend
        self.color = color
        if not exists(self.path):
            raise DataError(f"{backend} database {self.path} does not exist")

    def _items(self) -> Iterator[tuple[bytes, bytes]]:
        if self.backend == "LMDB":
            try:
                import lmdb
            except ImportError:
                raise DataError("reading LMDB needs the lmdb package: pip install 'proto2torch[data]'") from None
            try:
                env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, max_readers=126, subdir=self.path.is_dir())
            except lmdb.Error as exc:
                raise DataError(f"cannot open LMDB {self.path}: {exc}") from None
            with env, env.begin(buffers=False) as txn:
                cursor = txn.cursor()
                for key, value in cursor:
                    yield bytes(key), bytes(value)
            return
        try:
            import plyvel
        except ImportError:
            raise DataError("reading LevelDB needs plyvel: pip install plyvel (or convert the database to LMDB)") from None
        try:
            db = plyvel.DB(str(self.path), create_if_missing=False)
        except plyvel.Error as exc:
            raise DataError(f"cannot open LevelDB {self.path}: {exc}") from None
        try:
            yield from db.iterator()
        finally:
            db.close()

    def records(self) -> Iterator[Record]:
        while True:
            empty = True
            for key, value in self._items():
                empty = False
                where = f"{self.path} record {key.decode('utf-8', 'replace')!r}"
                datum = parse_datum(value, where)
                image = decode_image(datum.data, where, self.color) if datum.encoded else datum.array(where)  # type: ignore[arg-type]
                yield Record(image, float(datum.label), where)
            if empty:
                raise DataError(f"{self.backend} database {self.path} holds no records")


def read_list(path: str | Path, what: str) -> list[str]:
    path = Path(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = []
            for line in f:
                if len(lines) >= MAX_LIST_LINES:
                    raise DataError(f"{path}: more than {MAX_LIST_LINES} lines")
                if line.strip():
                    lines.append(line.rstrip("\n\r"))
    except OSError as exc:
        raise DataError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if not lines:
        raise DataError(f"the {what} {path} is empty")
    return lines


class ImageListSource:
    """``ImageData``'s list of ``path label`` lines."""

    def __init__(self, source: str | Path, root_folder: str = "", new_height: int = 0, new_width: int = 0, is_color: bool = True,
                 shuffle: bool = False, rng: np.random.Generator | None = None):
        self.source = Path(source)
        self.root = root_folder
        self.size = (new_height, new_width)
        self.is_color = is_color
        self.shuffle = shuffle
        self.rng = rng if rng is not None else np.random.default_rng()
        self.lines: list[tuple[str, int]] = []
        for number, line in enumerate(read_list(self.source, "image list"), 1):
            name, sep, label = line.strip().rpartition(" ")
            if not sep:
                raise DataError(f"{self.source}:{number}: expected 'path label', got {line!r}")
            try:
                self.lines.append((name, int(label)))
            except ValueError:
                raise DataError(f"{self.source}:{number}: the label {label!r} is not an integer") from None

    def read(self, name: str, where: str) -> np.ndarray:
        cv2 = _cv2()
        image = cv2.imread(self.root + name, cv2.IMREAD_COLOR if self.is_color else cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DataError(f"{where}: could not open or decode the image {self.root + name}")
        height, width = self.size
        if height > 0 and width > 0:
            image = cv2.resize(image, (width, height))
        return hwc_to_chw(image)

    def records(self) -> Iterator[Record]:
        order = list(range(len(self.lines)))
        while True:
            if self.shuffle:
                self.rng.shuffle(order)
            for i in order:
                name, label = self.lines[i]
                where = f"{self.source} line {i + 1} ({name})"
                yield Record(self.read(name, where), float(label), where)


class HDF5Source:
    """``HDF5Data``'s list of ``.h5`` files: one dataset per top, the same number of rows in each."""

    def __init__(self, source: str | Path, tops: list[str], shuffle: bool = False, rng: np.random.Generator | None = None):
        self.source = Path(source)
        self.tops = tops
        self.shuffle = shuffle
        self.rng = rng if rng is not None else np.random.default_rng()
        self.files = [line.strip() for line in read_list(self.source, "HDF5 file list")]

    def load(self, name: str) -> dict[str, np.ndarray]:
        try:
            import h5py
        except ImportError:
            raise DataError("reading HDF5 needs h5py: pip install 'proto2torch[data]'") from None
        try:
            with h5py.File(name, "r") as f:
                out = {}
                for top in self.tops:
                    if top not in f:
                        raise DataError(f"{name}: no dataset '{top}' (the layer's tops are {', '.join(self.tops)})")
                    dataset = f[top]
                    if dataset.ndim < 1:
                        raise DataError(f"{name}: dataset '{top}' is a scalar; it needs a row per sample")
                    out[top] = np.asarray(dataset, np.float32)
        except OSError as exc:
            raise DataError(f"cannot read HDF5 file {name}: {exc}") from None
        rows = {top: a.shape[0] for top, a in out.items()}
        if len(set(rows.values())) != 1:
            raise DataError(f"{name}: the datasets have different numbers of rows {rows}")
        return out

    def rows(self) -> Iterator[tuple[dict[str, np.ndarray], str]]:
        order = list(range(len(self.files)))
        while True:
            if self.shuffle:
                self.rng.shuffle(order)
            for i in order:
                data = self.load(self.files[i])
                n = next(iter(data.values())).shape[0]
                rows = list(range(n))
                if self.shuffle:
                    self.rng.shuffle(rows)
                for r in rows:
                    yield {top: a[r] for top, a in data.items()}, f"{self.files[i]} row {r}"
