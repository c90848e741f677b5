"""The segmentation forks' data layers: image + label-map pairs, transformed together.

* :class:`ImageSegFeed` — DeepLab's ``ImageSegData`` (deeplab-public v1/v2, PSPNet's copy): a list
  of ``image [label]`` lines under ``image_data_param``; ``label_type`` PIXEL (a label image),
  IMAGE (one class for the whole image, written after the path) or NONE (every pixel
  ``ignore_label``).  Both images are read with OpenCV (the label grey) and resized to
  ``new_height`` x ``new_width`` bilinearly, the label too, as DeepLab's ``ReadImageToCVMat``
  does.  Then DeepLab's ``TransformImgAndSeg``, in its order: a mirror draw; one of
  ``scale_factors`` (image bilinear, label nearest; the size truncated); padding at the bottom
  and right up to the crop (the image with ``mean_value``, so those pixels end at 0, the label
  with ``ignore_label``); the crop (``crop_size`` or ``crop_height``/``crop_width``: the centre
  in TEST, at random in TRAIN); ``(x - mean_value[c]) * scale`` in float32; the label's values
  as they are.  The third top, ``data_dim``, holds each image's height and width after the
  resize, capped at the output size.  DeepLab refuses ``mean_file``.
* :class:`DenseImageFeed` — SegNet's ``DenseImageData`` (caffe-segnet; ENet's copy adds
  ``label_divide_factor``): pairs ``image label`` under ``dense_image_data_param``; the image
  resized bilinearly, the label (grey) by nearest neighbour, to ``new_height`` x ``new_width``
  (the label to that size divided by ``label_divide_factor``); ``mirror`` and
  ``crop_height``/``crop_width`` of ``dense_image_data_param`` flip and crop both at random in
  every phase; ``transform_param``'s mean and scale apply to the image only.  With
  ``batch_size: 1`` and no resize or crop every image keeps its own size.

Random choices use the feed's seeded generator: Caffe's cannot be reproduced, so a TRAIN batch
is one of those Caffe could make.  Whatever the forks would crash on or read out of bounds
(a label map whose size differs from its image, padding without ``mean_value``, a crop larger
than the image, transform-side mirroring that would move image and label apart) is a
:class:`DataError` naming the layer and the record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..prototxt.message import Msg
from ..resources import locate
from .datum import _cv2, hwc_to_chw, load_mean
from .sources import read_list


def _read(path: str, color: bool, where: str) -> np.ndarray:
    """An image as OpenCV reads it: (H, W, 3) BGR or (H, W) grey, uint8."""
    cv2 = _cv2()
    image = cv2.imread(path, cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(f"{where}: could not open or decode the image {path}")
    return image


def _resize(image: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    if height <= 0 or width <= 0:
        return image
    cv2 = _cv2()
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def _u8(value: int) -> int:
    """A value written into a one-channel uint8 image, as ``cv::Scalar`` saturates it."""
    return min(max(int(value), 0), 255)


def _crop_window(rng: np.random.Generator, train: bool, height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    if train:
        return int(rng.integers(height - crop_h + 1)), int(rng.integers(width - crop_w + 1))
    return (height - crop_h) // 2, (width - crop_w) // 2


class _PairFeed:
    """Shared by both layers: the list, its order (shuffle, rand_skip) and the batch assembly."""

    tops: list[str]
    batch_size: int

    def __init__(self, where: str, param: Msg, base: Path | None, rng: np.random.Generator):
        self.where = where
        self.rng = rng
        if not param.has("source"):
            raise DataError(f"{where}: source is missing")
        self.source = locate(str(param.get("source")), base)
        self.root = str(param.get("root_folder"))
        self.shuffle = bool(param.get("shuffle"))
        self.batch_size = int(param.get("batch_size") or 0)
        if self.batch_size <= 0:
            raise DataError(f"{where}: batch_size must be positive")
        height, width = int(param.get("new_height")), int(param.get("new_width"))
        if (height > 0) != (width > 0):
            raise DataError(f"{where}: new_height and new_width must be given together (the fork requires it)")
        self.size = (height, width)
        self.is_color = bool(param.get("is_color"))
        self.rand_skip = int(param.get("rand_skip") or 0)

    def items(self, lines: list[tuple[str, str]]) -> Iterator[tuple[str, str, str]]:
        """``(image path, second field, where)`` forever, in the fork's order."""
        order = list(range(len(lines)))
        if self.shuffle:
            self.rng.shuffle(order)
        position = 0
        if self.rand_skip:
            position = int(self.rng.integers(self.rand_skip))
            if position >= len(lines):
                raise DataError(f"{self.where}: rand_skip drew {position}, but {self.source} has only {len(lines)} entries")
        while True:
            i = order[position]
            image, second = lines[i]
            yield self.root + image, second, f"{self.source} entry {i + 1} ({image})"
            position += 1
            if position == len(lines):
                position = 0
                if self.shuffle:
                    self.rng.shuffle(order)

    def item(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def batch(self) -> dict[str, np.ndarray]:
        return self.stack([self.item() for _ in range(self.batch_size)])

    def stack(self, items: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
        out = {}
        for k, top in enumerate(self.tops):
            values = [item[k] for item in items]
            if len({v.shape for v in values}) != 1:
                raise DataError(f"{self.where}: the images of one batch differ in size ({[list(v.shape) for v in values]}); give new_height/new_width or a crop")
            out[top] = np.stack(values)
        return out


class ImageSegFeed(_PairFeed):
    """DeepLab's ``ImageSegData``: ``data``, ``label`` and (v2) ``data_dim``."""

    def __init__(self, where: str, tops: list[str], msg: Msg, phase: str, base: Path | None, rng: np.random.Generator):
        param = msg.sub("image_data_param")
        super().__init__(where, param, base, rng)
        self.tops = tops
        self.train = phase == "TRAIN"
        self.label_type = str(param.get("label_type"))
        self.ignore_label = int(param.get("ignore_label"))
        tp = msg.sub("transform_param")
        if tp.has("mean_file"):
            raise DataError(f"{where}: ImageSegData does not support mean_file (DeepLab refuses it); give mean_value")
        if tp.has("crop_size") and (tp.has("crop_height") or tp.has("crop_width")):
            raise DataError(f"{where}: give crop_size or crop_height and crop_width, not both")
        if tp.has("crop_height") != tp.has("crop_width"):
            raise DataError(f"{where}: crop_height and crop_width must be given together")
        crop = int(tp.get("crop_size"))
        self.crop = (crop, crop) if crop else (int(tp.get("crop_height")), int(tp.get("crop_width")))
        self.scale = np.float32(tp.get("scale"))
        self.mirror = bool(tp.get("mirror"))
        self.means = [float(np.float32(v)) for v in tp.all("mean_value")]
        self.scale_factors = [float(np.float32(v)) for v in tp.all("scale_factors")]
        self.lines: list[tuple[str, str]] = []
        for number, line in enumerate(read_list(self.source, "image list"), 1):
            fields = line.split()
            if self.label_type == "PIXEL" and len(fields) < 2:
                raise DataError(f"{self.source}:{number}: label_type PIXEL needs 'image label_image', got {line!r}")
            self.lines.append((fields[0], fields[1] if len(fields) > 1 and self.label_type != "NONE" else ""))
        self.stream = self.items(self.lines)
        self.out_size: tuple[int, int] | None = None

    def _label(self, second: str, image: np.ndarray, where: str) -> np.ndarray:
        if self.label_type == "PIXEL":
            label = _resize(_read(self.root + second, False, where), *self.size)
            if label.shape[:2] != image.shape[:2]:
                raise DataError(f"{where}: the label map {second} is {label.shape[0]}x{label.shape[1]}, its image {image.shape[0]}x{image.shape[1]}")
            return label
        if self.label_type == "IMAGE":
            try:
                value = int(second)
            except ValueError:
                raise DataError(f"{where}: label_type IMAGE needs a class number after the path, got {second!r}") from None
        else:
            value = self.ignore_label
        return np.full(image.shape[:2], _u8(value), np.uint8)

    def item(self) -> tuple[np.ndarray, ...]:
        path, second, where = next(self.stream)
        image = _resize(_read(path, self.is_color, where), *self.size)
        label = self._label(second, image, where)
        rows, cols = image.shape[:2]
        do_mirror = self.mirror and bool(self.rng.integers(2))
        if self.scale_factors:
            factor = self.scale_factors[int(self.rng.integers(len(self.scale_factors)))]
            if factor != 1:
                h, w = (int(np.float32(n) * np.float32(factor)) for n in (rows, cols))  # C++: int *= float
                if h <= 0 or w <= 0:
                    raise DataError(f"{where}: scale factor {factor} leaves no pixels of the {rows}x{cols} image")
                image, label = _resize(image, h, w), _resize(label, h, w, nearest=True)
        data = hwc_to_chw(image).astype(np.float64)
        label = label.astype(np.float32)
        channels = data.shape[0]
        means = self.means * channels if len(self.means) == 1 else self.means
        if means and len(means) != channels:
            raise DataError(f"{where}: {len(self.means)} mean_value entries for {channels} channels; give one or one per channel")
        crop_h, crop_w = self.crop
        height, width = data.shape[1:]
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        if pad_h or pad_w:
            if not means:
                raise DataError(f"{where}: the {height}x{width} image is smaller than the {crop_h}x{crop_w} crop and is padded with mean_value, which the layer does not give")
            data = np.concatenate([np.pad(data[c : c + 1], ((0, 0), (0, pad_h), (0, pad_w)), constant_values=means[c]) for c in range(channels)])
            label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=_u8(self.ignore_label))
            height, width = data.shape[1:]
        if crop_h and crop_w:
            h_off, w_off = _crop_window(self.rng, self.train, height, width, crop_h, crop_w)
            data = data[:, h_off : h_off + crop_h, w_off : w_off + crop_w]
            label = label[h_off : h_off + crop_h, w_off : w_off + crop_w]
        if self.out_size is None:
            self.out_size = data.shape[1:]
        elif data.shape[1:] != self.out_size:
            raise DataError(f"{where}: the image is {data.shape[1]}x{data.shape[2]} after resizing, the layer's first was {self.out_size[0]}x{self.out_size[1]}; give new_height/new_width or a crop")
        out = data.astype(np.float32)
        if means:
            out = out - np.asarray(means, np.float32)[:, None, None]
        out = out * self.scale
        if do_mirror:
            out, label = out[:, :, ::-1], label[:, ::-1]
        dim = np.array([[[min(self.out_size[0], rows), min(self.out_size[1], cols)]]], np.float32)
        return tuple([np.ascontiguousarray(out, np.float32), np.ascontiguousarray(label)[None], dim][: len(self.tops)])



class DenseImageFeed(_PairFeed):
    """SegNet's ``DenseImageData``: ``data`` and ``label``."""

    def __init__(self, where: str, tops: list[str], msg: Msg, phase: str, base: Path | None, rng: np.random.Generator):
        """``phase`` does not matter: SegNet flips and crops at random in every phase."""
        param = msg.sub("dense_image_data_param")
        super().__init__(where, param, base, rng)
        self.tops = tops
        crop_h, crop_w = int(param.get("crop_height")), int(param.get("crop_width"))
        if (crop_h > 0) != (crop_w > 0):
            raise DataError(f"{where}: crop_height and crop_width must be given together")
        self.crop = (crop_h, crop_w)
        self.mirror = bool(param.get("mirror"))
        self.factor = int(param.get("label_divide_factor") or 1)
        if self.factor > 1 and (not self.size[0] or crop_h):
            raise DataError(f"{where}: label_divide_factor {self.factor} needs new_height/new_width and no crop (the label is shrunk at reading)")
        tp = msg.sub("transform_param")
        if tp.get("mirror") or int(tp.get("crop_size")):
            raise DataError(
                f"{where}: DenseImageData flips and crops through dense_image_data_param (mirror, crop_height/crop_width); "
                "transform_param's mirror and crop_size would move the image and its label apart (SegNet refuses them)"
            )
        self.scale = np.float32(tp.get("scale"))
        self.means = [float(np.float32(v)) for v in tp.all("mean_value")]
        self.mean = load_mean(locate(str(tp.get("mean_file")), base)) if tp.has("mean_file") else None
        if self.mean is not None and self.means:
            raise DataError(f"{where}: transform_param cannot give both mean_file and mean_value (Caffe refuses it)")
        tokens = [t for line in read_list(self.source, "image list") for t in line.split()]
        if len(tokens) % 2:
            raise DataError(f"{self.source}: {len(tokens)} names; DenseImageData reads them as 'image label' pairs")
        self.lines = list(zip(tokens[0::2], tokens[1::2]))
        self.stream = self.items(self.lines)
        self.varying = self.batch_size == 1 and not self.size[0] and not crop_h
        self.out_size: tuple[int, int] | None = None

    def item(self) -> tuple[np.ndarray, ...]:
        path, second, where = next(self.stream)
        height, width = self.size
        image = _resize(_read(path, self.is_color, where), height, width)
        label = _resize(_read(self.root + second, False, where), height // self.factor, width // self.factor, nearest=True)
        expected = (image.shape[0] // self.factor, image.shape[1] // self.factor)
        if label.shape[:2] != expected:
            raise DataError(f"{where}: the label map {second} is {label.shape[0]}x{label.shape[1]}, expected {expected[0]}x{expected[1]} for its image")
        if self.mirror and self.rng.integers(2):
            image, label = image[:, ::-1], label[:, ::-1]
        crop_h, crop_w = self.crop
        if crop_h:
            if crop_h > image.shape[0] or crop_w > image.shape[1]:
                raise DataError(f"{where}: the {crop_h}x{crop_w} crop is larger than the {image.shape[0]}x{image.shape[1]} image")
            h_off, w_off = _crop_window(self.rng, True, image.shape[0], image.shape[1], crop_h, crop_w)
            image, label = image[h_off : h_off + crop_h, w_off : w_off + crop_w], label[h_off : h_off + crop_h, w_off : w_off + crop_w]
        data = hwc_to_chw(image).astype(np.float32)
        if not self.varying:
            if self.out_size is None:
                self.out_size = data.shape[1:]
            elif data.shape[1:] != self.out_size:
                raise DataError(f"{where}: the image is {data.shape[1]}x{data.shape[2]}, the layer's first was {self.out_size[0]}x{self.out_size[1]}; give new_height/new_width")
        if self.mean is not None:
            if self.mean.shape != data.shape:
                raise DataError(f"{where}: the mean is {list(self.mean.shape)}, the image {list(data.shape)}; they must be the same size")
            data = data - self.mean
        elif self.means:
            means = self.means * data.shape[0] if len(self.means) == 1 else self.means
            if len(means) != data.shape[0]:
                raise DataError(f"{where}: {len(self.means)} mean_value entries for {data.shape[0]} channels; give one or one per channel")
            data = data - np.asarray(means, np.float32)[:, None, None]
        data = data * self.scale
        return (np.ascontiguousarray(data, np.float32), np.ascontiguousarray(label, np.float32)[None])[: len(self.tops)]
