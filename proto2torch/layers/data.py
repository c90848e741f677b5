"""Layers that bring data into a net: Input, and the data layers of train/test nets.

Their tops are the net's inputs: the live module takes them as ``forward`` arguments.
Input declares its shapes; a data layer's shapes follow from its parameters where they
can (batch size, crop or resize size, colour), otherwise they stay unknown until given
(``--input data=1,3,224,224``).  The converted net receives the tensors a data layer
produces; :mod:`proto2torch.data` reads them from the layer's databases, image lists and
HDF5 files as Caffe does (``Data``, ``ImageData``, ``HDF5Data``, ``MemoryData``, and the
segmentation forks' ``ImageSegData`` and ``DenseImageData``).
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
  label_divide_factor -  uint32  = 1
message ResizeParameter
  height              -  uint32
  width               -  uint32
enum Modality RGB=0 FLOW=1 RGB_DIFF=2
message VideoDataParameter
  source              1  string
  batch_size          2  uint32  = 1
  new_length          3  uint32  = 1
  new_height          4  uint32  = 0
  new_width           5  uint32  = 0
  use_image           6  bool    = false
  show_data           7  bool    = false
  shuffle             8  bool    = false
  root_folder         9  string  = ""
  num_segments        -  uint32  = 1
  modality            -  Modality = RGB
message HeatmapDataParameter
  batchsize           -  uint32  = 1
  outsize             -  uint32  = 0
  label_width         -  uint32  = 0
  label_height        -  uint32  = 0
""")
extend("LayerParameter", """
  dense_image_data_param - DenseImageDataParameter
  video_data_param    -  VideoDataParameter
  image_data_modify_param - ImageDataParameter
  heatmap_data_param  -  HeatmapDataParameter
""")
define("enum SegLabelType NONE=0 IMAGE=1 PIXEL=2")
extend("ImageDataParameter", """
  label_type         16  SegLabelType = IMAGE
  ignore_label       15  int32   = 255
  new_length          -  uint32  = 1
  show_data           -  uint32  = 0
  use_image           -  bool    = false
""")
extend("TransformationParameter", """
  resize_param        -  ResizeParameter
  scale_factors       8  float*
  crop_width          9  uint32  = 0
  crop_height        10  uint32  = 0
""")


@dataclass(frozen=True)
class InputParams:
    shapes: tuple[Shape | None, ...] = ()
    """One shape per top; None where it is not known."""
    runtime: bool = False
    """An input a layer asked for in place of a file Caffe reads at run time (not written back)."""


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
    semantics = (
        "DeepLab (deeplab-public v1/v2): images and label maps (label_type PIXEL/IMAGE/NONE) padded with the mean and "
        "ignore_label up to transform_param's crop (crop_size or crop_height/crop_width), cropped together; data_dim top"
    )

    def parse(self, ctx: ParseContext) -> InputParams:
        tp = ctx.param("transform_param")
        ip = ctx.param("image_data_param")
        crop = _crop(ctx)
        h, w = (crop, crop) if crop else (int(tp.get("crop_height")), int(tp.get("crop_width")))
        if not (h and w):
            h, w = int(ip.get("new_height")), int(ip.get("new_width"))
        batch = int(ip.get("batch_size") or 1)
        data = (batch, 3 if ip.get("is_color") else 1, h, w) if h and w else None
        shapes: list[Shape | None] = [data]
        if ctx.n_tops > 1:
            shapes.append((batch, 1, h, w) if data else None)
        if ctx.n_tops > 2:
            shapes.append((batch, 1, 1, 2))  # data_dim: each image's height and width
        if data is None:
            ctx.note("the data shape is not known from the layer's parameters; give it with --input")
        return InputParams(tuple(shapes[: ctx.n_tops]))


@register
class DenseImageData(_Source):
    type = "DenseImageData"
    semantics = (
        "SegNet (caffe-segnet; ENet adds label_divide_factor): images (bilinear) and label maps (nearest) resized to "
        "new_height/new_width, flipped and cropped together by dense_image_data_param"
    )

    def parse(self, ctx: ParseContext) -> InputParams:
        dp = ctx.param("dense_image_data_param")
        batch = int(dp.get("batch_size"))
        h = int(dp.get("crop_height") or dp.get("new_height"))
        w = int(dp.get("crop_width") or dp.get("new_width"))
        channels = 3 if dp.get("is_color") else 1
        data = (batch, channels, h, w) if h and w else None
        factor = int(dp.get("label_divide_factor")) or 1  # ENet's encoder trains on labels shrunk by this factor
        shapes: list[Shape | None] = [data, (batch, 1, h // factor, w // factor) if data else None][: ctx.n_tops]
        if data is None:
            ctx.note("the data shape is not known from the layer's parameters; give it with --input")
        return InputParams(tuple(shapes) + (None,) * (ctx.n_tops - len(shapes)))


def data_layer_types() -> tuple[str, ...]:
    """Every registered type that brings data in, except Input itself."""
    from .registry import registered

    return tuple(sorted(t for t, spec in registered().items() if spec.source and t != "Input"))


@register
class VideoData(_Source):
    type = "VideoData"
    semantics = (
        "C3D (facebook/C3D): clips (batch, 3, new_length, crop, crop); temporal-segment-networks (yjxiong/caffe, "
        "when num_segments/modality are given): (batch x num_segments, new_length x 3 (RGB) or 2 (flow), crop, crop)"
    )

    def parse(self, ctx: ParseContext) -> InputParams:
        # C3D v1.1 and TSN write video_data_param; C3D v1.0 (V1 type VIDEO_DATA) writes image_data_param
        vp = ctx.param("video_data_param") if ctx.layer.has("video_data_param") else ctx.param("image_data_param")
        crop = _crop(ctx) or int(vp.get("crop_size") or 0)
        size = (crop, crop) if crop else (int(vp.get("new_height") or 0), int(vp.get("new_width") or 0))
        batch, length = int(vp.get("batch_size") or 0), int(vp.get("new_length") or 1)
        if vp.has("num_segments") or vp.has("modality"):
            channels = length * (3 if str(vp.get("modality")) != "FLOW" else 2)
            shape: Shape = (batch * int(vp.get("num_segments")), channels, *size)
        else:
            shape = (batch, 3, length, *size)
        data = shape if batch and min(size) > 0 else None
        if data is None:
            ctx.note("the clip shape is not known from the layer's parameters; give it with --input")
        return InputParams((data, (batch,) if batch else None)[: ctx.n_tops] + (None,) * max(ctx.n_tops - 2, 0))


@register
class ImageLabelmapData(_Source):
    type = "ImageLabelmapData"
    semantics = "HED (s9xie/hed): images and edge label maps of the images' own size"

    def parse(self, ctx: ParseContext) -> InputParams:
        ip = ctx.param("image_data_param")
        batch, h, w = int(ip.get("batch_size")), int(ip.get("new_height")), int(ip.get("new_width"))
        if not (h and w):
            ctx.note("images keep their own size; give the data and label shapes with --input")
            return InputParams((None,) * ctx.n_tops)
        return InputParams(((batch, 3, h, w), (batch, 1, h, w))[: ctx.n_tops] + (None,) * max(ctx.n_tops - 2, 0))


@register
class ImageDataModify(_Source):
    type = "ImageDataModify"
    semantics = "colorization_flow_caffe: image lists like ImageData (its extra processing happens before the net)"

    def parse(self, ctx: ParseContext) -> InputParams:
        ip = ctx.param("image_data_modify_param")
        crop = _crop(ctx)
        size = (crop, crop) if crop else (int(ip.get("new_height")), int(ip.get("new_width")))
        return _image_shapes(ctx, int(ip.get("batch_size")), 3 if ip.get("is_color") else 1, size, label=True)


@register
class DataHeatmap(_Source):
    type = "DataHeatmap"
    semantics = "caffe-heatmap (tpfister): images and joint heatmaps; shapes depend on the dataset"

    def parse(self, ctx: ParseContext) -> InputParams:
        ctx.note("DataHeatmap shapes depend on the dataset (joint count); give them with --input")
        return InputParams((None,) * ctx.n_tops)


@register
class VideoWithVoxelTruthData(_Source):
    type = "VideoWithVoxelTruthData"
    semantics = "C3D (facebook/C3D, v2v): clips and per-voxel truth (e.g. optical flow); shapes depend on the data files"

    def parse(self, ctx: ParseContext) -> InputParams:
        ctx.note("the clip and truth shapes depend on the data files; give them with --input")
        return InputParams((None,) * ctx.n_tops)
