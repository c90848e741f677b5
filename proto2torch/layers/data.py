"""Layers that bring data into a net: Input, and the data layers of train/test nets.

Their tops are the net's inputs: the live module takes them as ``forward`` arguments.
Input declares its shapes; a data layer's shapes follow from its parameters where they
can (batch size, crop or resize size, colour), otherwise they stay unknown until given
(``--input data=1,3,224,224``).  Reading the actual databases, image lists or videos is
not proto2torch's job: the converted net receives the tensors a data layer would have
produced.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ShapeError
from ..prototxt.message import Msg
from ..prototxt.schema import define, extend
from .common import plain_all
from .registry import LayerSpec, ParseContext, Shape, check_shape, register

define("""
message ImageSegDataParameter
  source              1  string
  batch_size          2  uint32  = 1
message DenseImageDataParameter
  source              1  string
  batch_size          4  uint32  = 1
  rand_skip           7  uint32  = 0
  shuffle             8  bool    = false
  new_height          9  uint32  = 0
  new_width          10  uint32  = 0
  crop_height        11  uint32  = 0
  crop_width         12  uint32  = 0
  is_color           13  bool    = true
  mirror              6  bool    = false
  root_folder        14  string  = ""
message ResizeParameter
  height              -  uint32
  width               -  uint32
""")
extend("LayerParameter", """
  dense_image_data_param - DenseImageDataParameter
""")
extend("TransformationParameter", """
  resize_param        -  ResizeParameter
""")


@dataclass(frozen=True)
class InputParams:
    shapes: tuple[Shape | None, ...] = ()
    """One shape per top; None where it is not known."""


class _Source(LayerSpec):
    bottoms = (0, 0)
    tops = (1, None)
    source = True

    def unparse(self, p: InputParams, layer: Msg) -> Msg:
        return layer


@register
class Input(_Source):
    type = "Input"
    description = "net inputs with declared shapes"

    def parse(self, ctx: ParseContext) -> InputParams:
        ip = ctx.param("input_param")
        declared = [tuple(int(d) for d in plain_all(ctx, s, "dim")) for s in ip.all("shape")]
        if len(declared) not in (0, 1, ctx.n_tops):
            raise ctx.error(f"{len(declared)} shapes for {ctx.n_tops} tops; give one shape, or one per top", "input_param")
        if len(declared) == 1:
            declared = declared * ctx.n_tops
        for i, shape in enumerate(declared):
            try:
                check_shape(shape)
            except ShapeError as exc:
                raise ctx.error(f"input shape {i}: {exc}", "input_param") from None
        shapes: tuple[Shape | None, ...] = tuple(declared) if declared else (None,) * ctx.n_tops
        return InputParams(shapes)

    def unparse(self, p: InputParams, layer: Msg) -> Msg:
        layer = layer.copy().remove("input_param")
        param = Msg(type="InputParameter")
        for shape in p.shapes:
            if shape is None:
                continue
            blob_shape = Msg(type="BlobShape")
            for d in shape:
                blob_shape.add("dim", d)
            param.add("shape", blob_shape)
        if param.entries:
            layer.add("input_param", param)
        return layer


def _image_shapes(ctx: ParseContext, batch: int | None, channels: int | None, size: tuple[int, int] | None, label: bool) -> InputParams:
    """(batch, channels, h, w) for the first top when known, (batch,) labels for a classification second top."""
    data = (batch, channels, *size) if batch and channels and size and min(size) > 0 else None
    shapes: list[Shape | None] = [data]
    for _ in range(1, ctx.n_tops):
        shapes.append((batch,) if label and batch else None)
    if data is None:
        ctx.note("the data shape is not known from the layer's parameters; give it with --input")
    return InputParams(tuple(shapes))


def _crop(ctx: ParseContext) -> int:
    return int(ctx.param("transform_param").get("crop_size") or 0)


@register
class Data(_Source):
    type = "Data"
    description = "LMDB/LevelDB batches; (batch, 3, crop, crop) when transform_param.crop_size is set"

    def parse(self, ctx: ParseContext) -> InputParams:
        crop = _crop(ctx)
        batch = int(ctx.param("data_param").get("batch_size") or 0)
        if crop:
            ctx.note("a Data layer's channel count is in its database; 3 is assumed (override with --input)")
        return _image_shapes(ctx, batch, 3, (crop, crop) if crop else None, label=True)


@register
class ImageData(_Source):
    type = "ImageData"
    description = "image lists; (batch, 3 or 1, h, w) from crop_size or new_height/new_width"

    def parse(self, ctx: ParseContext) -> InputParams:
        ip = ctx.param("image_data_param")
        crop = _crop(ctx)
        size = (crop, crop) if crop else (int(ip.get("new_height")), int(ip.get("new_width")))
        return _image_shapes(ctx, int(ip.get("batch_size")), 3 if ip.get("is_color") else 1, size, label=True)


@register
class WindowData(_Source):
    type = "WindowData"
    description = "R-CNN windows; (batch, 3, crop, crop)"

    def parse(self, ctx: ParseContext) -> InputParams:
        wp = ctx.param("window_data_param")
        crop = _crop(ctx) or int(wp.get("crop_size"))
        return _image_shapes(ctx, int(wp.get("batch_size") or 0), 3, (crop, crop) if crop else None, label=True)


@register
class MemoryData(_Source):
    type = "MemoryData"
    description = "arrays fed from memory; (batch, channels, height, width) as declared"

    def parse(self, ctx: ParseContext) -> InputParams:
        mp = ctx.param("memory_data_param")
        crop = _crop(ctx)
        size = (crop, crop) if crop else (int(mp.get("height") or 0), int(mp.get("width") or 0))
        return _image_shapes(ctx, int(mp.get("batch_size") or 0), int(mp.get("channels") or 0), size, label=True)


@register
class DummyData(_Source):
    type = "DummyData"
    description = "constant or random blobs of declared shapes"

    def parse(self, ctx: ParseContext) -> InputParams:
        dp = ctx.param("dummy_data_param")
        shapes: list[Shape] = [tuple(int(d) for d in plain_all(ctx, s, "dim")) for s in dp.all("shape")]
        if not shapes and dp.all("num"):
            legacy = [dp.all(k) for k in ("num", "channels", "height", "width")]
            shapes = [tuple(int(values[i] if len(values) > 1 else values[0]) for values in legacy) for i in range(len(legacy[0]))]
        if len(shapes) == 1:
            shapes = shapes * ctx.n_tops
        if len(shapes) != ctx.n_tops:
            raise ctx.error(f"{len(shapes)} shapes for {ctx.n_tops} tops", "dummy_data_param")
        return InputParams(tuple(check_shape(s) for s in shapes))


@register
class HDF5Data(_Source):
    type = "HDF5Data"
    description = "HDF5 datasets (shapes are in the files: give them with --input)"

    def parse(self, ctx: ParseContext) -> InputParams:
        ctx.note("HDF5Data shapes are stored in the data files; give them with --input")
        return InputParams((None,) * ctx.n_tops)


@register
class AnnotatedData(_Source):
    type = "AnnotatedData"
    semantics = "SSD (weiliu89/caffe): images resized by transform_param.resize_param, plus box annotations"

    def parse(self, ctx: ParseContext) -> InputParams:
        resize = ctx.param("transform_param").sub("resize_param")
        batch = int(ctx.param("data_param").get("batch_size") or 0)
        size = (int(resize.get("height") or 0), int(resize.get("width") or 0))
        shapes = _image_shapes(ctx, batch, 3, size, label=False)
        return shapes


@register
class ImageSegData(_Source):
    type = "ImageSegData"
    semantics = "DeepLab (deeplab-public): images and label maps cropped to transform_param.crop_size"

    def parse(self, ctx: ParseContext) -> InputParams:
        crop = _crop(ctx)
        batch = int(ctx.param("image_data_param").get("batch_size") or 1)
        data = (batch, 3, crop, crop) if crop else None
        shapes: list[Shape | None] = [data]
        if ctx.n_tops > 1:
            shapes.append((batch, 1, crop, crop) if crop else None)
        if ctx.n_tops > 2:
            shapes.append((batch, 1, 1, 2))  # data_dim: the original height and width
        if data is None:
            ctx.note("the data shape is not known from the layer's parameters; give it with --input")
        return InputParams(tuple(shapes[: ctx.n_tops]))


@register
class DenseImageData(_Source):
    type = "DenseImageData"
    semantics = "SegNet (caffe-segnet): images with dense label maps"

    def parse(self, ctx: ParseContext) -> InputParams:
        dp = ctx.param("dense_image_data_param")
        batch = int(dp.get("batch_size"))
        h = int(dp.get("crop_height") or dp.get("new_height"))
        w = int(dp.get("crop_width") or dp.get("new_width"))
        channels = 3 if dp.get("is_color") else 1
        data = (batch, channels, h, w) if h and w else None
        shapes: list[Shape | None] = [data, (batch, 1, h, w) if data else None][: ctx.n_tops]
        if data is None:
            ctx.note("the data shape is not known from the layer's parameters; give it with --input")
        return InputParams(tuple(shapes) + (None,) * (ctx.n_tops - len(shapes)))


def data_layer_types() -> tuple[str, ...]:
    """Every registered type that brings data in, except Input itself."""
    from .registry import registered

    return tuple(sorted(t for t, spec in registered().items() if spec.source and t != "Input"))
