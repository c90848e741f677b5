"""Deploy-time preprocessing: pycaffe's ``caffe.io.Transformer`` and ``caffe.io.load_image``, without Caffe.

A classify script ports in a line::

    pre = Preprocess(channel_swap=(2, 1, 0), raw_scale=255.0, mean=load_mean("mean.binaryproto").mean(1).mean(1))
    x = pre(load_image("cat.jpg"))             # H x W x 3 RGB in [0, 1]  ->  3 x H x W, as the net wants

:class:`Preprocess` applies, in pycaffe's order: ``transpose`` (H x W x C → C x H x W), ``channel_swap``
(RGB → BGR), ``raw_scale`` (e.g. 255), a centre ``crop`` (transform_param's TEST crop), subtracting
``mean`` (per channel, or a whole C x H x W mean whose centre region is taken with the crop) and
``input_scale``.  It runs on numpy arrays or torch tensors; :func:`preprocess_source` is the same thing
as a method of an emitted model class (``model.preprocess(image)``, torch only).

:func:`from_transform_param` builds it from a data layer's ``transform_param`` for images as OpenCV
reads them (H x W x C, BGR, 0–255), :func:`load_image` reads a file as pycaffe does (RGB floats in
[0, 1]; grey files repeated to three channels; a colour file read as grey with the ITU-R 709 luma
weights pycaffe's scikit-image uses).  Resizing to the net's size (pycaffe's ``resize_image``, through
scikit-image) is not reproduced: give images of the net's input size, or resize them yourself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..resources import locate
from .datum import _cv2, load_mean


@dataclass(frozen=True)
class Preprocess:
    transpose: tuple[int, ...] | None = (2, 0, 1)
    channel_swap: tuple[int, ...] | None = None
    raw_scale: float | None = None
    crop: int = 0
    mean: Any = None
    """None, a per-channel vector (C,), or a whole mean (C, H, W)."""
    input_scale: float | None = None

    def mean_array(self) -> np.ndarray | None:
        if self.mean is None:
            return None
        mean = np.asarray(self.mean, np.float32)
        if mean.ndim == 1:
            return mean[:, None, None]
        if mean.ndim != 3:
            raise DataError(f"a mean must be per channel (C,) or (C, H, W), got shape {list(mean.shape)}")
        return mean

    def __call__(self, image: Any) -> Any:
        """One image (numpy or torch) → the net's float32 input."""
        import torch

        is_torch = isinstance(image, torch.Tensor)
        x = image.to(torch.float32) if is_torch else np.asarray(image).astype(np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        if self.transpose is not None:
            x = x.permute(*self.transpose) if is_torch else x.transpose(self.transpose)
        if self.channel_swap is not None:
            if len(self.channel_swap) != x.shape[0]:
                raise DataError(f"channel_swap {list(self.channel_swap)} for an image of {x.shape[0]} channels")
            x = x[list(self.channel_swap)]
        if self.raw_scale is not None:
            x = x * np.float32(self.raw_scale) if not is_torch else x * self.raw_scale
        mean = self.mean_array()
        if self.crop:
            height, width = x.shape[1], x.shape[2]
            if self.crop > height or self.crop > width:
                raise DataError(f"crop {self.crop} is larger than the {height}x{width} image")
            top, left = (height - self.crop) // 2, (width - self.crop) // 2
            x = x[:, top : top + self.crop, left : left + self.crop]
            if mean is not None and mean.shape[1:] == (height, width):
                mean = mean[:, top : top + self.crop, left : left + self.crop]
        if mean is not None:
            if mean.shape[1:] != (1, 1) and tuple(mean.shape) != tuple(x.shape):
                raise DataError(f"the mean is {list(mean.shape)}, the image {list(x.shape)}")
            x = x - (torch.from_numpy(np.ascontiguousarray(mean)) if is_torch else mean)
        if self.input_scale is not None:
            x = x * (np.float32(self.input_scale) if not is_torch else self.input_scale)
        return x if is_torch else np.ascontiguousarray(x, np.float32)


def from_transform_param(param: Any, base_dir: str | Path | None = None) -> Preprocess:
    """A data layer's ``transform_param`` in the TEST phase, for H x W x C BGR 0–255 images (``cv2.imread``)."""
    from .transform import TransformParams

    p = TransformParams.from_msg(param, "transform_param")
    mean: np.ndarray | None = None
    if p.mean_file:
        mean = load_mean(locate(p.mean_file, base_dir))
    elif p.mean_values:
        mean = np.asarray(p.mean_values, np.float32)
    return Preprocess(crop=p.crop_size, mean=mean, input_scale=p.scale if p.scale != 1 else None)


def load_image(path: str | Path, color: bool = True) -> np.ndarray:
    """An image file as pycaffe's ``caffe.io.load_image`` gives it: H x W x 3 RGB (or H x W x 1) float32 in [0, 1]."""
    cv2 = _cv2()
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"could not open or decode the image {path}")
    if raw.dtype != np.uint8:
        raise DataError(f"{path}: only 8-bit images are read (this one is {raw.dtype})")
    image = raw.astype(np.float64) / 255.0
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3:
        image = image[:, :, ::-1]  # OpenCV's BGR to RGB
    if not color:
        if image.ndim == 3:
            image = image @ np.array([0.2125, 0.7154, 0.0721])
        return image[:, :, None].astype(np.float32)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image, np.float32)


def preprocess_source(pre: Preprocess) -> tuple[list[str], np.ndarray | None]:
    """Lines of a ``preprocess`` method for an emitted model class, and the mean buffer it reads (``self.input_mean``)."""
    lines = [
        "@torch.jit.export",
        "def preprocess(self, image: Tensor) -> Tensor:",
        '    """The input side of the port: an image as the original pipeline read it -> this net\'s input (C x H x W)."""',
        "    x = image.to(torch.float32)",
        "    if x.dim() == 2:",
        "        x = x.unsqueeze(2)",
    ]
    if pre.transpose is not None:
        lines.append(f"    x = x.permute({', '.join(map(str, pre.transpose))})")
    if pre.channel_swap is not None:
        lines.append(f"    x = x[{list(pre.channel_swap)}]")
    if pre.raw_scale is not None:
        lines.append(f"    x = x * {float(pre.raw_scale)!r}")
    mean = pre.mean_array()
    if pre.crop:
        lines += [
            f"    top, left = (x.shape[1] - {pre.crop}) // 2, (x.shape[2] - {pre.crop}) // 2",
            f"    x = x[:, top : top + {pre.crop}, left : left + {pre.crop}]",
        ]
        if mean is not None and mean.shape[1:] != (1, 1):
            lines.append(f"    x = x - self.input_mean[:, top : top + {pre.crop}, left : left + {pre.crop}]")
        elif mean is not None:
            lines.append("    x = x - self.input_mean")
    elif mean is not None:
        lines.append("    x = x - self.input_mean")
    if pre.input_scale is not None:
        lines.append(f"    x = x * {float(pre.input_scale)!r}")
    lines.append("    return x")
    return lines, mean
