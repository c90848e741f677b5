"""A net's data layers as batch iterators: the tops Caffe's ``Data``, ``ImageData``, ``HDF5Data``
and ``MemoryData`` layers produce, batch after batch, in Caffe's order (and those of the
segmentation forks' ``ImageSegData`` and ``DenseImageData``, :mod:`.segmentation`).

:class:`NetFeed` finds the data layers of a net (in the phase it was read in) and yields, per
iteration, ``{top name: float32 array}`` for every one of their tops; ``proto2torch batches``
writes those, and ``proto2torch train`` feeds them to the net instead of fixed inputs.
Paths in the layers (``source``, ``mean_file``, ``root_folder`` is used as written) are taken
as written (Caffe's working-folder rule), then beside the prototxt.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..ir.graph import Net, Node
from ..resources import locate
from .segmentation import DenseImageFeed, ImageSegFeed
from .sources import DatabaseSource, HDF5Source, ImageListSource, Record
from .transform import DataTransformer, TransformParams

SUPPORTED = ("Data", "ImageData", "HDF5Data", "MemoryData", "ImageSegData", "DenseImageData")


class LayerFeed:
    """One data layer's batches."""

    def __init__(self, net: Net, node: Node, base: Path | None, rng: np.random.Generator, memory: Mapping[str, np.ndarray] | None = None):
        self.node = node
        self.tops = [net.values[v].blob for v in node.outputs]
        msg = node.msg
        where = f"layer '{node.name}' ({node.type})"
        if msg is None:
            raise DataError(f"{where}: no parameters to read the data from")
        self.where = where
        self.rng = rng
        self.pairs: ImageSegFeed | DenseImageFeed | None = None
        if node.type in ("ImageSegData", "DenseImageData"):
            make = ImageSegFeed if node.type == "ImageSegData" else DenseImageFeed
            self.pairs = make(where, self.tops, msg, net.phase, base, rng)
            self.batch_size = self.pairs.batch_size
            return
        self.transformer = DataTransformer(TransformParams.from_msg(msg.sub("transform_param"), where), net.phase, base_dir=base, rng=rng, where=where)
        kind = node.type
        self.batch_size = 0
        self.records: Iterator[Record] | None = None
        self.rows = None
        if kind == "Data":
            p = msg.sub("data_param")
            self.batch_size = int(p.get("batch_size") or 0)
            if not p.has("source"):
                raise DataError(f"{where}: data_param.source is missing")
            tp = self.transformer.params
            color = True if tp.force_color else (False if tp.force_gray else None)
            source = DatabaseSource(locate(str(p.get("source")), base), str(p.get("backend")), color)
            self.records = source.records()
            self._skip(int(p.get("rand_skip")))
        elif kind == "ImageData":
            p = msg.sub("image_data_param")
            self.batch_size = int(p.get("batch_size"))
            if not p.has("source"):
                raise DataError(f"{where}: image_data_param.source is missing")
            source = ImageListSource(
                locate(str(p.get("source")), base), str(p.get("root_folder")), int(p.get("new_height")), int(p.get("new_width")),
                bool(p.get("is_color")), bool(p.get("shuffle")), rng,
            )
            self.records = source.records()
            self._skip(int(p.get("rand_skip")))
        elif kind == "HDF5Data":
            p = msg.sub("hdf5_data_param")
            self.batch_size = int(p.get("batch_size") or 0)
            if not p.has("source"):
                raise DataError(f"{where}: hdf5_data_param.source is missing")
            self.rows = HDF5Source(locate(str(p.get("source")), base), self.tops, bool(p.get("shuffle")), rng).rows()
        elif kind == "MemoryData":
            p = msg.sub("memory_data_param")
            self.batch_size = int(p.get("batch_size") or 0)
            if memory is None or not all(t in memory for t in self.tops):
                raise DataError(f"{where}: MemoryData takes its arrays from the caller; give {', '.join(self.tops)}")
            arrays = [np.asarray(memory[t], np.float32) for t in self.tops]
            if len({a.shape[0] for a in arrays}) != 1:
                raise DataError(f"{where}: the arrays for {', '.join(self.tops)} have different numbers of rows")
            if arrays[0].shape[0] % max(self.batch_size, 1):
                raise DataError(f"{where}: {arrays[0].shape[0]} rows are not a whole number of batches of {self.batch_size}")
            self.memory = arrays
            self.offset = 0
        else:
            raise DataError(f"{where}: reading {kind} layers is not supported (supported: {', '.join(SUPPORTED)})")
        if self.batch_size <= 0:
            raise DataError(f"{where}: batch_size must be positive")

    def _skip(self, rand_skip: int) -> None:
        """``rand_skip``: Caffe starts at a random record below it (its generator cannot be reproduced; ours is seeded)."""
        if rand_skip > 0:
            assert self.records is not None
            for _ in range(int(self.rng.integers(rand_skip))):
                next(self.records)

    def batch(self) -> dict[str, np.ndarray]:
        if self.pairs is not None:
            return self.pairs.batch()
        if self.records is not None:
            images, labels = [], []
            for _ in range(self.batch_size):
                record = next(self.records)
                out = self.transformer(record.image, record.where)
                if images and out.shape != images[0].shape:
                    raise DataError(f"{record.where}: gives a {list(out.shape)} input, the batch's first gave {list(images[0].shape)}")
                images.append(out)
                labels.append(record.label)
            out = {self.tops[0]: np.stack(images)}
            if len(self.tops) > 1:
                out[self.tops[1]] = np.asarray(labels, np.float32)
            return out
        if self.rows is not None:
            rows = [next(self.rows) for _ in range(self.batch_size)]
            out = {}
            for top in self.tops:
                values = [r[0][top] for r in rows]
                if len({v.shape for v in values}) != 1:
                    raise DataError(f"{self.where}: rows of '{top}' differ in shape between files ({rows[0][1]} and others)")
                out[top] = np.stack(values).astype(np.float32)
            return out
        n = self.memory[0].shape[0]
        take = [(self.offset + i) % n for i in range(self.batch_size)]
        self.offset = (self.offset + self.batch_size) % n
        return {top: a[take] for top, a in zip(self.tops, self.memory)}


class NetFeed:
    """Every data layer of ``net``: ``next()`` gives the next batch of all their tops."""

    def __init__(self, net: Net, *, seed: int | None = 0, memory: Mapping[str, np.ndarray] | None = None):
        base = Path(net.source).parent if net.source else None
        rng = np.random.default_rng(seed)
        self.layers = [LayerFeed(net, node, base, rng, memory) for node in net.nodes if node.is_input and node.type != "Input"]

    def __bool__(self) -> bool:
        return bool(self.layers)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for layer in self.layers:
            out.update(layer.batch())
        return out

    def tops(self) -> list[str]:
        return [t for layer in self.layers for t in layer.tops]


def batches(net: Net, count: int, seed: int | None = 0) -> dict[str, np.ndarray]:
    """The first ``count`` batches of the net's data layers, as ``{"<top>:<k>": array}``."""
    feed = NetFeed(net, seed=seed)
    if not feed:
        raise DataError(f"net '{net.name}' has no data layers ({', '.join(SUPPORTED)}) in the {net.phase} phase")
    out: dict[str, np.ndarray] = {}
    for k in range(count):
        for top, value in next(feed).items():
            out[f"{top}:{k}"] = value
    return out
