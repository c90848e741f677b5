"""Boxes from class score maps, as Dilated Residual Networks localise objects without fine-tuning
(Yu, Koltun, Funkhouser, CVPR 2017, §4.2).

Given a map ``f`` of class scores (N, K, H, W), e.g. from ``dilate:output_stride=8`` then
``gap-to-conv`` on a classifier:

1. every pixel takes its arg-max class;
2. for a class ``c``, the candidate pixels are those of class ``c`` whose score ``f[c]`` exceeds
   the threshold ``t``;
3. each connected region of candidates (8-neighbourhood by default) gives the box around it,
   scored by the highest ``f[c]`` inside it;
4. per class, the box with the highest score is kept (``best_only=False`` keeps every region).

Boxes are given in map pixels and in input pixels: map pixel ``(i, j)`` is centred on input pixel
``offset + jump · (i, j)`` (``inspect --rf`` shows both numbers for every layer) and stands for the
``jump × jump`` cell around that centre.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np

from .errors import Proto2TorchError


@dataclass(frozen=True)
class Box:
    label: int
    score: float
    """The highest score of the class inside the region."""
    pixels: int
    """The region's size in map pixels."""
    map_box: tuple[int, int, int, int]
    """(x0, y0, x1, y1): the first and last map column and row of the region (inclusive)."""
    box: tuple[float, float, float, float]
    """(x0, y0, x1, y1) in input pixels: the cells of those map pixels, clipped to the image when its size is known."""

    def as_dict(self) -> dict:
        return asdict(self)


def localize(
    scores: np.ndarray,
    threshold: float,
    *,
    jump: float | Sequence[float] = 1.0,
    offset: float | Sequence[float] = 0.0,
    image_size: Sequence[int] | None = None,
    best_only: bool = True,
    connectivity: int = 8,
) -> list[list[Box]]:
    """Boxes per image of ``scores`` ((N, K, H, W), or (K, H, W) for one image), best first.

    ``jump`` and ``offset`` (one number, or (vertical, horizontal)) place map pixels on the input;
    ``image_size`` (H, W) clips the boxes to it."""
    maps = np.asarray(scores)
    if maps.ndim == 3:
        maps = maps[None]
    if maps.ndim != 4 or min(maps.shape) == 0:
        raise Proto2TorchError(f"localize needs a score map of shape (N, K, H, W), got {list(np.shape(scores))}")
    if connectivity not in (4, 8):
        raise Proto2TorchError(f"connectivity must be 4 or 8, got {connectivity}")
    jy, jx = _pair(jump)
    oy, ox = _pair(offset)
    out = []
    for image in maps:
        labels = image.argmax(0)
        boxes = []
        for c in np.unique(labels):
            mask = (labels == c) & (image[c] > threshold)
            regions = [_box(int(c), image[c], region, (jy, jx), (oy, ox), image_size) for region in _regions(mask, connectivity)]
            regions.sort(key=lambda b: -b.score)
            boxes += regions[:1] if best_only else regions
        out.append(sorted(boxes, key=lambda b: -b.score))
    return out


def _pair(value: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    a, b = value
    return float(a), float(b)


def _regions(mask: np.ndarray, connectivity: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Connected regions of ``mask``, each as (rows, columns) of its pixels."""
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    regions = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        queue, rows, cols = deque([start]), [], []
        while queue:
            i, j = queue.popleft()
            rows.append(i)
            cols.append(j)
            for di, dj in steps:
                a, b = i + di, j + dj
                if 0 <= a < height and 0 <= b < width and mask[a, b] and not seen[a, b]:
                    seen[a, b] = True
                    queue.append((a, b))
        regions.append((np.asarray(rows), np.asarray(cols)))
    return regions


def _box(label: int, score_map: np.ndarray, region: tuple[np.ndarray, np.ndarray], jump: tuple[float, float], offset: tuple[float, float], image_size: Sequence[int] | None) -> Box:
    rows, cols = region
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    (jy, jx), (oy, ox) = jump, offset
    box = [ox + jx * (x0 - 0.5), oy + jy * (y0 - 0.5), ox + jx * (x1 + 0.5), oy + jy * (y1 + 0.5)]
    if image_size is not None:
        h, w = image_size
        box = [min(max(box[0], 0.0), w), min(max(box[1], 0.0), h), min(max(box[2], 0.0), w), min(max(box[3], 0.0), h)]
    return Box(label, float(score_map[rows, cols].max()), len(rows), (x0, y0, x1, y1), (box[0], box[1], box[2], box[3]))


def placement(net, blob: str) -> tuple[tuple[float, float], tuple[float, float]]:  # noqa: ANN001
    """(jump, offset) of ``blob``'s pixels on the net's input, (vertical, horizontal), from the
    receptive-field arithmetic of ``inspect --rf``."""
    from .summary import layer_rows

    row = next((r for r in reversed(layer_rows(net)) if blob in r.tops), None)
    if row is None:
        raise Proto2TorchError(f"the net has no blob named '{blob}'")
    if row.stride is None or row.offset is None:
        raise Proto2TorchError(f"where the pixels of blob '{blob}' fall on the input is not known (a global pooling, a fully connected layer or a size-dependent padding before it)")
    number = lambda text: float(Fraction(text))  # noqa: E731  (the table's '8', '-19', '7.5', '1/3')
    return (number(row.stride[0]), number(row.stride[1])), (number(row.offset[0]), number(row.offset[1]))


def localize_net(net, inputs: dict[str, np.ndarray], threshold: float, *, blob: str | None = None, best_only: bool = True, connectivity: int = 8) -> tuple[str, list[list[Box]]]:  # noqa: ANN001
    """Run ``net`` (with weights) on ``inputs`` and localise on its score map ``blob`` (default: the
    first 4-d output).  Returns the blob's name and the boxes per image, in the input's pixels."""
    import torch

    from .backend.live import build_graph_module, run_blobs

    if blob is None:
        blob = next((net.values[v].blob for v in net.outputs if net.values[v].shape is not None and len(net.values[v].shape) == 4), None)
        if blob is None:
            raise Proto2TorchError("the net has no 4-d output to localise on: name the score map (--blob NAME; blob= in Python)")
    jump, offset = placement(net, blob)
    with torch.no_grad():
        values = run_blobs(build_graph_module(net), **{k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in inputs.items()})
    if blob not in values:
        raise Proto2TorchError(f"the net computes no blob named '{blob}'")
    sizes = [tuple(v.shape[2:]) for v in inputs.values() if np.ndim(v) == 4]
    scores = values[blob].numpy()
    return blob, localize(scores, threshold, jump=jump, offset=offset, image_size=sizes[0] if sizes else None, best_only=best_only, connectivity=connectivity)
