"""Layers that move data around without arithmetic: Concat, Slice, Split, Silence,
Flatten, Reshape, Permute, Tile, Crop, Parameter, and the fork layers ShuffleChannel
(ShuffleNet), Flip (happynear), Reverse and Transpose (caffe_ocr)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import AliasOp, CallOp, In, InList, ModuleOp
from ..errors import ShapeError
from ..lazy import caffe_ops, torch
from ..prototxt.schema import define, extend
from .common import plain, plain_all
from .registry import LayerSpec, NoParams, ParseContext, Shape, canonical_axis, count, register

define("""
message PermuteParameter
  order               1  uint32*
message ShuffleChannelParameter
  group               1  uint32  = 1
message FlipParameter
  flip_width          1  bool    = true
  flip_height         2  bool    = false
message ReverseParameter
  axis                1  int32   = 0
message TransposeParameter
  dim                 1  int32*
""")
extend("LayerParameter", """
  permute_param     202  PermuteParameter
  shuffle_channel_param - ShuffleChannelParameter
  flip_param          -  FlipParameter
  reverse_param       -  ReverseParameter
  transpose_param     -  TransposeParameter
""")


@dataclass(frozen=True)
class AxisParams:
    axis: int = 1


@register
class Concat(LayerSpec):
    type = "Concat"
    bottoms = (1, None)
    description = "join inputs along `axis` (or legacy `concat_dim`)"

    def parse(self, ctx: ParseContext) -> AxisParams:
        cp = ctx.param("concat_param")
        if cp.has("axis") and cp.has("concat_dim"):
            raise ctx.error("give either axis or concat_dim, not both", "concat_dim", cp)
        return AxisParams(int(cp.get("concat_dim") if cp.has("concat_dim") else cp.get("axis")))

    def infer(self, p: AxisParams, shapes: list[Shape]) -> list[Shape]:
        axis = canonical_axis(p.axis, len(shapes[0]))
        first = shapes[0]
        total = 0
        for i, shape in enumerate(shapes):
            if len(shape) != len(first) or any(a != b for j, (a, b) in enumerate(zip(shape, first)) if j != axis):
                raise ShapeError(f"input {i} has shape {list(shape)}, which does not fit input 0 {list(first)} except on axis {axis}")
            total += shape[axis]
        return [(*first[:axis], total, *first[axis + 1 :])]

    def lower(self, p: AxisParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp | AliasOp:
        if len(shapes) == 1:
            return AliasOp((0,))
        return CallOp(torch.cat, (InList(),), {"dim": canonical_axis(p.axis, len(shapes[0]))})


@dataclass(frozen=True)
class SliceParams:
    axis: int = 1
    points: tuple[int, ...] = ()
    parts: int = 1
    """Number of tops."""


@register
class Slice(LayerSpec):
    type = "Slice"
    tops = (1, None)
    description = "cut one input into several along `axis` at `slice_point`s, or into equal parts"

    def parse(self, ctx: ParseContext) -> SliceParams:
        sp = ctx.param("slice_param")
        if sp.has("axis") and sp.has("slice_dim"):
            raise ctx.error("give either axis or slice_dim, not both", "slice_dim", sp)
        axis = int(sp.get("slice_dim") if sp.has("slice_dim") else sp.get("axis"))
        points = tuple(int(v) for v in plain_all(ctx, sp, "slice_point"))
        if points and len(points) != ctx.n_tops - 1:
            raise ctx.error(f"{len(points)} slice_point values for {ctx.n_tops} tops; give one fewer than tops", "slice_point", sp)
        if any(b <= a for a, b in zip(points, points[1:])):
            raise ctx.error(f"slice_point values must increase, got {list(points)}", "slice_point", sp)
        return SliceParams(axis, points, ctx.n_tops)

    def sizes(self, p: SliceParams, shape: Shape) -> tuple[int, list[int]]:
        axis = canonical_axis(p.axis, len(shape))
        dim = shape[axis]
        if p.points:
            bounds = [0, *p.points, dim]
            if p.points[-1] >= dim:
                raise ShapeError(f"slice_point {p.points[-1]} is beyond the axis size {dim}")
            return axis, [b - a for a, b in zip(bounds, bounds[1:])]
        if dim % p.parts:
            raise ShapeError(f"axis {axis} of size {dim} cannot be split equally into {p.parts} parts")
        return axis, [dim // p.parts] * p.parts

    def infer(self, p: SliceParams, shapes: list[Shape]) -> list[Shape]:
        axis, sizes = self.sizes(p, shapes[0])
        return [(*shapes[0][:axis], s, *shapes[0][axis + 1 :]) for s in sizes]

    def lower(self, p: SliceParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp | AliasOp:
        if p.parts == 1:
            return AliasOp((0,))
        axis, sizes = self.sizes(p, shapes[0])
        return CallOp(torch.split, (In(0), sizes), {"dim": axis}, n_out=p.parts)


@dataclass(frozen=True)
class SplitParams:
    parts: int = 1


@register
class Split(LayerSpec):
    type = "Split"
    tops = (1, None)
    description = "the same blob under several names"

    def parse(self, ctx: ParseContext) -> SplitParams:
        return SplitParams(ctx.n_tops)

    def infer(self, p: SplitParams, shapes: list[Shape]) -> list[Shape]:
        return [shapes[0]] * p.parts

    def lower(self, p: SplitParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> AliasOp:
        return AliasOp((0,) * p.parts)


@register
class Silence(LayerSpec):
    type = "Silence"
    bottoms = (1, None)
    tops = (0, 0)
    description = "consumes blobs so they are not net outputs"

    def infer(self, p: NoParams, shapes: list[Shape]) -> list[Shape]:
        return []

    def lower(self, p: NoParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> AliasOp:
        return AliasOp(())


@dataclass(frozen=True)
class FlattenParams:
    axis: int = 1
    end_axis: int = -1


@register
class Flatten(LayerSpec):
    type = "Flatten"
    in_place_ok = False
    description = "collapse axes axis..end_axis into one"

    def parse(self, ctx: ParseContext) -> FlattenParams:
        fp = ctx.param("flatten_param")
        return FlattenParams(int(fp.get("axis")), int(fp.get("end_axis")))

    def _axes(self, p: FlattenParams, shape: Shape) -> tuple[int, int]:
        start = canonical_axis(p.axis, len(shape))
        end = canonical_axis(p.end_axis, len(shape), "end_axis")
        if end < start:
            raise ShapeError(f"end_axis {p.end_axis} comes before axis {p.axis} for a {len(shape)}-d blob")
        return start, end

    def infer(self, p: FlattenParams, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        start, end = self._axes(p, shape)
        return [(*shape[:start], count(shape, start, end + 1), *shape[end + 1 :])]

    def lower(self, p: FlattenParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        start, end = self._axes(p, shapes[0])
        args: tuple = (In(0), start) if end == len(shapes[0]) - 1 else (In(0), start, end)
        return CallOp(torch.flatten, args)


@dataclass(frozen=True)
class ReshapeParams:
    dims: tuple[int, ...] = ()
    axis: int = 0
    num_axes: int = -1


@register
class Reshape(LayerSpec):
    type = "Reshape"
    in_place_ok = False
    description = "new shape with 0 = copy and -1 = infer, optionally only over axes axis..axis+num_axes"

    def parse(self, ctx: ParseContext) -> ReshapeParams:
        rp = ctx.param("reshape_param")
        dims = tuple(int(d) for d in plain_all(ctx, rp.sub("shape"), "dim"))
        if sum(1 for d in dims if d == -1) > 1:
            raise ctx.error("at most one dimension may be -1", "reshape_param")
        if any(d < -1 for d in dims):
            raise ctx.error(f"dimensions must be -1, 0 or positive, got {list(dims)}", "reshape_param")
        num_axes = int(rp.get("num_axes"))
        if num_axes < -1:
            raise ctx.error(f"num_axes must be -1 or more, got {num_axes}", "num_axes", rp)
        return ReshapeParams(dims, int(rp.get("axis")), num_axes)

    def _span(self, p: ReshapeParams, shape: Shape) -> tuple[int, int]:
        # Caffe quirk: a negative axis counts as ndim + axis + 1 here, unlike every other layer
        start = p.axis if p.axis >= 0 else len(shape) + p.axis + 1
        if not 0 <= start <= len(shape):
            raise ShapeError(f"axis {p.axis} is out of range for a {len(shape)}-d blob")
        end = len(shape) if p.num_axes == -1 else start + p.num_axes
        if end > len(shape):
            raise ShapeError(f"axis {start} + num_axes {p.num_axes} runs past the {len(shape)}-d input")
        return start, end

    def infer(self, p: ReshapeParams, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        start, end = self._span(p, shape)
        middle = []
        for i, d in enumerate(p.dims):
            if d == 0:
                if start + i >= len(shape):
                    raise ShapeError(f"dimension {i} copies input axis {start + i}, which does not exist")
                middle.append(shape[start + i])
            else:
                middle.append(d)
        known = count(shape[:start]) * count(shape[end:]) * count([d for d in middle if d != -1])
        total = count(shape)
        if -1 in middle:
            if known == 0 or total % known:
                raise ShapeError(f"cannot reshape {list(shape)} ({total} elements) to {list(p.dims)}")
            middle[middle.index(-1)] = total // known
        elif known != total:
            raise ShapeError(f"cannot reshape {list(shape)} ({total} elements) to {list(p.dims)} ({known} elements)")
        return [(*shape[:start], *middle, *shape[end:])]

    def lower(self, p: ReshapeParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        start, _ = self._span(p, shapes[0])
        return CallOp(caffe_ops.caffe_reshape, (In(0), list(p.dims), start, p.num_axes))


@dataclass(frozen=True)
class PermuteParams:
    order: tuple[int, ...] = ()


@register
class Permute(LayerSpec):
    type = "Permute"
    semantics = "SSD (weiliu89/caffe): axes not named in `order` follow in their original order"

    def parse(self, ctx: ParseContext) -> PermuteParams:
        order = tuple(int(v) for v in plain_all(ctx, ctx.param("permute_param"), "order"))
        if len(set(order)) != len(order):
            raise ctx.error(f"order {list(order)} names an axis twice", "permute_param")
        return PermuteParams(order)

    def full_order(self, p: PermuteParams, ndim: int) -> list[int]:
        if any(a >= ndim for a in p.order):
            raise ShapeError(f"order {list(p.order)} names an axis beyond the {ndim}-d input")
        return [*p.order, *(a for a in range(ndim) if a not in p.order)]

    def infer(self, p: PermuteParams, shapes: list[Shape]) -> list[Shape]:
        return [tuple(shapes[0][a] for a in self.full_order(p, len(shapes[0])))]

    def lower(self, p: PermuteParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp | AliasOp:
        order = self.full_order(p, len(shapes[0]))
        if order == sorted(order):
            return AliasOp((0,))
        return CallOp(torch.permute, (In(0), order))


@dataclass(frozen=True)
class TileParams:
    axis: int = 1
    tiles: int = 1


@register
class Tile(LayerSpec):
    type = "Tile"
    description = "repeat the blob `tiles` times along `axis`"

    def parse(self, ctx: ParseContext) -> TileParams:
        tp = ctx.param("tile_param")
        if not tp.has("tiles"):
            raise ctx.error("tile_param.tiles is required", "tile_param")
        tiles = int(plain(ctx, tp, "tiles"))
        if tiles <= 0:
            raise ctx.error(f"tiles must be positive, got {tiles}", "tiles", tp)
        return TileParams(int(tp.get("axis")), tiles)

    def infer(self, p: TileParams, shapes: list[Shape]) -> list[Shape]:
        shape = list(shapes[0])
        axis = canonical_axis(p.axis, len(shape))
        shape[axis] *= p.tiles
        return [tuple(shape)]

    def lower(self, p: TileParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        axis = canonical_axis(p.axis, len(shapes[0]))
        reps = [1] * len(shapes[0])
        reps[axis] = p.tiles
        return CallOp(torch.tile, (In(0), reps))


@dataclass(frozen=True)
class CropParams:
    axis: int = 2
    offsets: tuple[int, ...] = ()


@register
class Crop(LayerSpec):
    type = "Crop"
    bottoms = (2, 2)
    description = "cut input 0 to input 1's size on axes axis.., from the given offsets (not centred)"

    def parse(self, ctx: ParseContext) -> CropParams:
        cp = ctx.param("crop_param")
        return CropParams(int(cp.get("axis")), tuple(int(v) for v in plain_all(ctx, cp, "offset")))

    def offsets(self, p: CropParams, shapes: list[Shape]) -> tuple[int, list[int]]:
        big, ref = shapes
        if len(big) != len(ref):
            raise ShapeError(f"inputs of different rank: {list(big)} and {list(ref)}")
        axis = canonical_axis(p.axis, len(big))
        n = len(big) - axis
        if len(p.offsets) not in (0, 1, n):
            raise ShapeError(f"{len(p.offsets)} offsets for {n} cropped axes; give 0, 1 or {n}")
        offsets = list(p.offsets) * n if len(p.offsets) == 1 else (list(p.offsets) or [0] * n)
        for i, off in enumerate(offsets):
            d = axis + i
            if off + ref[d] > big[d]:
                raise ShapeError(f"crop of size {ref[d]} at offset {off} does not fit axis {d} of size {big[d]}")
        return axis, offsets

    def infer(self, p: CropParams, shapes: list[Shape]) -> list[Shape]:
        axis, _ = self.offsets(p, shapes)
        return [(*shapes[0][:axis], *shapes[1][axis:])]

    def lower(self, p: CropParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        axis, offsets = self.offsets(p, shapes)
        return CallOp(caffe_ops.crop_like, (In(0), In(1), axis, offsets))


@dataclass(frozen=True)
class ShuffleChannelParams:
    group: int = 1


@register
class ShuffleChannel(LayerSpec):
    type = "ShuffleChannel"
    semantics = "ShuffleNet (farmingyard/ShuffleNet): channels viewed as (group, C/group), transposed"

    def parse(self, ctx: ParseContext) -> ShuffleChannelParams:
        sp = ctx.param("shuffle_channel_param")
        group = int(plain(ctx, sp, "group"))
        if group < 1:
            raise ctx.error(f"group must be at least 1, got {group}", "group", sp)
        return ShuffleChannelParams(group)

    def infer(self, p: ShuffleChannelParams, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        if len(shape) < 2 or shape[1] % p.group:
            raise ShapeError(f"ShuffleChannel with group {p.group} needs a channel count divisible by it, got shape {list(shape)}")
        return [shape]

    def lower(self, p: ShuffleChannelParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp | AliasOp:
        if p.group == 1:
            return AliasOp((0,))
        return CallOp(caffe_ops.shuffle_channels, (In(0), p.group))


@dataclass(frozen=True)
class FlipParams:
    dims: tuple[int, ...] = (3,)


@register
class Flip(LayerSpec):
    type = "Flip"
    semantics = "happynear's caffe-windows: mirror an (N, C, H, W) blob left-right (flip_width) and/or up-down (flip_height)"

    def parse(self, ctx: ParseContext) -> FlipParams:
        fp = ctx.param("flip_param")
        return FlipParams(tuple(d for d, on in ((2, fp.get("flip_height")), (3, fp.get("flip_width"))) if on))

    def infer(self, p: FlipParams, shapes: list[Shape]) -> list[Shape]:
        if len(shapes[0]) != 4:
            raise ShapeError(f"Flip works on 4-d blobs (N, C, H, W), got shape {list(shapes[0])}")
        return [shapes[0]]

    def lower(self, p: FlipParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp | AliasOp:
        return CallOp(torch.flip, (In(0), list(p.dims))) if p.dims else AliasOp((0,))


@register
class Reverse(LayerSpec):
    type = "Reverse"
    semantics = "caffe_ocr: reverse the order along reverse_param.axis (time, for bidirectional LSTMs)"

    def parse(self, ctx: ParseContext) -> AxisParams:
        return AxisParams(int(plain(ctx, ctx.param("reverse_param"), "axis")))

    def infer(self, p: AxisParams, shapes: list[Shape]) -> list[Shape]:
        canonical_axis(p.axis, len(shapes[0]))
        return [shapes[0]]

    def lower(self, p: AxisParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        return CallOp(torch.flip, (In(0), [canonical_axis(p.axis, len(shapes[0]))]))


@register
class Transpose(LayerSpec):
    type = "Transpose"
    semantics = "caffe_ocr: output axis i is input axis transpose_param.dim[i] (like Permute)"

    def parse(self, ctx: ParseContext) -> PermuteParams:
        dims = tuple(int(d) for d in plain_all(ctx, ctx.param("transpose_param"), "dim"))
        if not dims:
            raise ctx.error("transpose_param needs the new order as dim values", "transpose_param")
        return PermuteParams(dims)

    def infer(self, p: PermuteParams, shapes: list[Shape]) -> list[Shape]:
        shape = shapes[0]
        if sorted(p.order) != list(range(len(shape))):
            raise ShapeError(f"dim {list(p.order)} is not a permutation of the {len(shape)} axes of {list(shape)}")
        return [tuple(shape[d] for d in p.order)]

    def lower(self, p: PermuteParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        return CallOp(torch.permute, (In(0), list(p.order)))


@dataclass(frozen=True)
class ParameterParams:
    shape: Shape


@register
class Parameter(LayerSpec):
    type = "Parameter"
    bottoms = (0, 0)
    description = "no input; outputs its learned blob of parameter_param.shape"

    def parse(self, ctx: ParseContext) -> ParameterParams:
        shape = tuple(int(d) for d in plain_all(ctx, ctx.param("parameter_param").sub("shape"), "dim"))
        if not shape:
            raise ctx.error("parameter_param.shape must give the blob's dims", "parameter_param")
        return ParameterParams(shape)

    def infer(self, p: ParameterParams, shapes: list[Shape]) -> list[Shape]:
        return [p.shape]

    def weight_shapes(self, p: ParameterParams, shapes: list[Shape]) -> list[Shape]:
        return [p.shape]

    def lower(self, p: ParameterParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        return ModuleOp(caffe_ops.ParameterBlob, (list(p.shape),), {}, {"weight": blobs[0]}, ("weight",))


@register
class BatchReindex(LayerSpec):
    type = "BatchReindex"
    bottoms = (2, 2)
    in_place_ok = False
    description = "rows of input 0 picked by the indices in input 1 (1-d): (len(indices), ...)"

    def infer(self, p: object, shapes: list[Shape]) -> list[Shape]:
        data, index = shapes
        if len(index) != 1:
            raise ShapeError(f"the indices must be 1-d, got shape {list(index)}")
        return [(index[0], *data[1:])]

    def lower(self, p: object, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> CallOp:
        return CallOp(caffe_ops.batch_reindex, (In(0), In(1)))


@register
class Filter(LayerSpec):
    type = "Filter"
    bottoms = (2, None)
    tops = (1, None)
    description = "not convertible: keeps the rows whose selector is non-zero, so its output size depends on the data"

    def parse(self, ctx: ParseContext) -> NoParams:
        raise ctx.unsupported(
            "Filter keeps the samples whose selector (the last bottom) is non-zero: its output batch size depends on "
            "the data, which a converted net with fixed shapes cannot express; select the rows in your own code"
        )
