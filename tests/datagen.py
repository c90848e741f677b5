"""Small data sources for the data-layer tests, made by code: LMDB and LevelDB databases (raw, float and
encoded Datums), image lists (PNG and JPEG of odd sizes, colour and grey), HDF5 files and a mean file.

``materialise(case_dir, work)`` writes one data case's sources into ``work``; the image files' bytes
come from the case's ``inputs.npz`` (made once, with the case), so every machine decodes the bytes Caffe
decoded.  ``tools/make_data_cases.py`` makes the cases (the inputs with :func:`make_inputs`, Caffe's tops
with real Caffe).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from proto2torch.data.datum import datum_bytes, write_mean


def _image(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """A smooth image with detail (gradients plus noise), HWC uint8 (HW for grey)."""
    y, x = np.mgrid[0:h, 0:w]
    planes = [(128 + 100 * np.sin(x / (2 + k) + y / (3 + k) + k) + rng.normal(0, 12, (h, w))) for k in range(c)]
    image = np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)
    return image[..., 0] if c == 1 else image


def make_inputs(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays (and encoded files) of one data case, by kind."""
    import cv2

    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    if kind in ("lmdb_raw", "lmdb_train", "leveldb_raw"):
        for i in range(20):
            out[f"raw:{i:05d}"] = _image(rng, 13, 11, 3).transpose(2, 0, 1).copy()
            out[f"label:{i:05d}"] = np.array(i % 7)
        out["mean"] = rng.uniform(90, 140, (3, 13, 11)).astype(np.float32)
    elif kind == "lmdb_float":
        for i in range(10):
            out[f"raw:{i:05d}"] = rng.normal(0, 2, (2, 5, 6)).astype(np.float32)
            out[f"label:{i:05d}"] = np.array(i)
    elif kind == "lmdb_encoded":
        for i in range(12):
            colour = 1 if i % 3 == 0 else 3
            image = _image(rng, 14 + i % 3, 12 + i % 2, colour)
            ext = ".png" if i % 2 else ".jpg"
            ok, data = cv2.imencode(ext, image, [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == ".jpg" else [])
            assert ok
            out[f"file:{i:05d}{ext}"] = np.frombuffer(data.tobytes(), np.uint8)
            out[f"label:{i:05d}"] = np.array(i % 5)
    elif kind in ("imagelist", "imagelist_gray"):
        for i in range(9):
            grey = kind == "imagelist_gray"
            image = _image(rng, 10 if grey else 15 + i, 9 if grey else 17 - i, 1 if grey or i == 4 else 3)
            ext = ".png" if i % 2 else ".jpg"
            ok, data = cv2.imencode(ext, image)
            assert ok
            out[f"file:img_{i}{ext}"] = np.frombuffer(data.tobytes(), np.uint8)
            out[f"label:img_{i}{ext}"] = np.array(3 * i)
    elif kind == "hdf5":
        for f in range(2):
            out[f"h5:{f}:data"] = rng.normal(0, 1, (7, 2, 3, 4)).astype(np.float32)
            out[f"h5:{f}:label"] = rng.integers(0, 4, 7).astype(np.float32)
    else:
        raise ValueError(kind)
    return out


def materialise(case_dir: Path, work: Path) -> dict[str, str]:
    """Write the case's sources into ``work``; returns the ``--define`` values its prototxt uses (``DATA``)."""
    import h5py
    import lmdb

    meta = json.loads((case_dir / "meta.json").read_text())
    with np.load(case_dir / "inputs.npz") as data:
        arrays = {k: data[k] for k in data.files}
    work.mkdir(parents=True, exist_ok=True)
    kind = meta["data_kind"]
    if kind.startswith(("lmdb", "leveldb")):
        records = []
        for key in sorted(k for k in arrays if k.startswith(("raw:", "file:"))):
            name = key.split(":", 1)[1]
            stem = name.split(".")[0]
            label = int(arrays[f"label:{stem}"])
            value = datum_bytes(arrays[key], label) if key.startswith("raw:") else datum_bytes(arrays[key].tobytes(), label, encoded=True)
            records.append((stem.encode(), value))
        if kind.startswith("leveldb"):
            import plyvel

            db = plyvel.DB(str(work / "db"), create_if_missing=True)
            for key, value in records:
                db.put(key, value)
            db.close()
        else:
            env = lmdb.open(str(work / "db"), map_size=1 << 26)
            with env.begin(write=True) as txn:
                for key, value in records:
                    txn.put(key, value)
            env.close()
        if "mean" in arrays:
            write_mean(work / "mean.binaryproto", arrays["mean"])
    elif kind.startswith("imagelist"):
        (work / "images").mkdir(exist_ok=True)
        lines = []
        for key in sorted(k for k in arrays if k.startswith("file:")):
            name = key.split(":", 1)[1]
            (work / "images" / name).write_bytes(arrays[key].tobytes())
            lines.append(f"{name} {int(arrays['label:' + name])}")
        (work / "list.txt").write_text("\n".join(lines) + "\n")
    elif kind == "hdf5":
        files = []
        for f in sorted({k.split(":")[1] for k in arrays if k.startswith("h5:")}):
            path = work / f"part{f}.h5"
            with h5py.File(path, "w") as h5:
                h5["data"] = arrays[f"h5:{f}:data"]
                h5["label"] = arrays[f"h5:{f}:label"]
            files.append(str(path))
        (work / "list.txt").write_text("\n".join(files) + "\n")
    return {"DATA": str(work)}
