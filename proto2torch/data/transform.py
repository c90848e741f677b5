"""Caffe's DataTransformer: ``transform_param`` applied to one image, in Caffe's order.

For every output pixel ``(c, h, w)`` of the (cropped) image, taken from input pixel
``(c, h_off + h, w_off + w)`` (mirrored: ``w`` counted from the right):

* with ``mean_file``: ``(x - mean[c, h_off + h, w_off + w]) * scale`` (the mean has the
  uncropped image's size; the crop takes its matching region);
* with ``mean_value`` (one, or one per channel): ``(x - mean_value[c]) * scale``;
* otherwise ``x * scale``,

computed in float32 from the uint8 (or float) pixel, as Caffe does.  ``crop_size`` takes the
centre in TEST and a random window in TRAIN; ``mirror`` flips at random (in both phases, as in
Caffe: test nets say ``mirror: false``).  The
random choices use this transformer's generator (Caffe's own cannot be reproduced): each
batch is one of the crops and flips Caffe could make, with Caffe's probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..prototxt.message import Msg
from ..resources import locate
from .datum import load_mean


@dataclass(frozen=True)
class TransformParams:
    scale: float = 1.0
    mirror: bool = False
    crop_size: int = 0
    mean_file: str | None = None
    mean_values: tuple[float, ...] = ()
    force_color: bool = False
    force_gray: bool = False

    @classmethod
    def from_msg(cls, param: Msg, where: str) -> TransformParams:
        mean_file = str(param.get("mean_file")) if param.has("mean_file") else None
        values = tuple(float(np.float32(v)) for v in param.all("mean_value"))
        if mean_file and values:
            raise DataError(f"{where}: transform_param cannot give both mean_file and mean_value (Caffe refuses it)")
        if param.get("force_color") and param.get("force_gray"):
            raise DataError(f"{where}: transform_param cannot force both colour and grey")
        return cls(
            float(np.float32(param.get("scale"))),
            bool(param.get("mirror")),
            int(param.get("crop_size")),
            mean_file,
            values,
            bool(param.get("force_color")),
            bool(param.get("force_gray")),
        )


class DataTransformer:
    """One ``transform_param`` in one phase; ``__call__`` turns a (C, H, W) image into the net's float32 input."""

    def __init__(self, params: TransformParams, phase: str = "TEST", *, base_dir: str | Path | None = None, rng: np.random.Generator | None = None, where: str = "transform_param"):
        self.params = params
        self.phase = phase
        self.where = where
        self.rng = rng if rng is not None else np.random.default_rng()
        self.mean: np.ndarray | None = None
        if params.mean_file:
            self.mean = load_mean(locate(params.mean_file, base_dir))

    def output_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        crop = self.params.crop_size
        return (channels, crop, crop) if crop else (channels, height, width)

    def __call__(self, image: np.ndarray, record: str = "") -> np.ndarray:
        p = self.params
        where = f"{self.where}{': ' + record if record else ''}"
        if image.ndim != 3:
            raise DataError(f"{where}: an image must be (C, H, W), got shape {list(image.shape)}")
        channels, height, width = image.shape
        crop = p.crop_size
        if crop and (crop > height or crop > width):
            raise DataError(f"{where}: crop_size {crop} is larger than the {height}x{width} image")
        train = self.phase == "TRAIN"
        do_mirror = bool(p.mirror and self.rng.integers(2))  # (Caffe flips in TEST too when mirror is set)
        h_off = w_off = 0
        out_h, out_w = height, width
        if crop:
            out_h = out_w = crop
            if train:
                h_off = int(self.rng.integers(height - crop + 1))
                w_off = int(self.rng.integers(width - crop + 1))
            else:
                h_off, w_off = (height - crop) // 2, (width - crop) // 2
        window = image[:, h_off : h_off + out_h, w_off : w_off + out_w].astype(np.float32)
        scale = np.float32(p.scale)
        if self.mean is not None:
            if self.mean.shape != image.shape:
                raise DataError(f"{where}: the mean {p.mean_file} is {list(self.mean.shape)}, the image {list(image.shape)}; they must be the same size")
            out = (window - self.mean[:, h_off : h_off + out_h, w_off : w_off + out_w]) * scale
        elif p.mean_values:
            values = p.mean_values
            if len(values) == 1:
                values = values * channels
            elif len(values) != channels:
                raise DataError(f"{where}: {len(values)} mean_value entries for {channels} channels; give one or one per channel")
            out = (window - np.asarray(values, np.float32)[:, None, None]) * scale
        elif scale != 1:
            out = window * scale
        else:
            out = window
        if do_mirror:
            out = out[:, :, ::-1]
        return np.ascontiguousarray(out, np.float32)

    def possible_crops(self, image: np.ndarray) -> list[np.ndarray]:
        """Every output Caffe could make of ``image`` in this phase (each offset, mirrored or not): for checking TRAIN batches."""
        p = self.params
        channels, height, width = image.shape
        crop = p.crop_size or 0
        offsets = [(0, 0)] if not crop else (
            [(h, w) for h in range(height - crop + 1) for w in range(width - crop + 1)] if self.phase == "TRAIN" else [((height - crop) // 2, (width - crop) // 2)]
        )
        fixed = DataTransformer(TransformParams(p.scale, False, 0, None, p.mean_values), "TEST", where=self.where)
        fixed.mean = self.mean
        full = fixed(image)
        size_h, size_w = (crop, crop) if crop else (height, width)
        out = []
        for h, w in offsets:
            window = full[:, h : h + size_h, w : w + size_w]
            out.append(window)
            if p.mirror:
                out.append(window[:, :, ::-1])
        return out
