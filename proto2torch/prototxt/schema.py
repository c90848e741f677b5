"""Caffe's message schema: which fields each message has, their types and defaults.

The schema is written below as compact tables (our own notation, not protobuf
syntax): ``name number type[*] [= default]`` per field, ``*`` marking repeated
fields.  A number of ``-`` marks a field known in text form only (forks that reuse
BVLC's field numbers, so a number would be ambiguous).  Fork layers add their own
messages from their layer modules through :func:`define` and :func:`extend`.

:func:`bind` applies the schema to a parsed :class:`Msg` tree: scalars get their
declared types, enum names are checked, a singular field given twice is an error,
and fields the schema does not know are kept (and reported) rather than dropped,
so files of Caffe forks parse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import SchemaError, SourceSpan
from .message import Ident, Msg, Template

SCALAR_TYPES = frozenset({"double", "float", "int32", "int64", "uint32", "uint64", "bool", "string", "bytes"})


@dataclass(frozen=True, slots=True)
class FieldDef:
    name: str
    number: int | None
    type: str
    repeated: bool = False
    default: Any = None


@dataclass(slots=True)
class MessageDef:
    name: str
    fields: dict[str, FieldDef] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EnumDef:
    name: str
    values: dict[str, int]

    def name_of(self, number: int) -> str | None:
        for k, v in self.values.items():
            if v == number:
                return k
        return None


MESSAGES: dict[str, MessageDef] = {}
ENUMS: dict[str, EnumDef] = {}


def _parse_default(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if text[0] in "\"'":
        return text[1:-1]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return Ident(text)


def define(table: str) -> None:
    """Add messages and enums written in the table notation (see the module docstring)."""
    current: MessageDef | None = None
    for raw in table.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "enum":
            values = {}
            for item in words[2:]:
                k, v = item.split("=")
                values[k] = int(v)
            ENUMS[words[1]] = EnumDef(words[1], values)
            current = None
        elif words[0] == "message":
            current = MESSAGES.setdefault(words[1], MessageDef(words[1]))
        else:
            if current is None:
                raise ValueError(f"schema table: field outside a message: {raw!r}")
            _add_field(current, words, raw)


def _add_field(msg: MessageDef, words: list[str], raw: str) -> None:
    name, number, type_ = words[0], words[1], words[2]
    repeated = type_.endswith("*")
    type_ = type_.rstrip("*")
    default = None
    if len(words) >= 5 and words[3] == "=":
        default = _parse_default(" ".join(words[4:]))
    elif len(words) > 3:
        raise ValueError(f"schema table: cannot read {raw!r}")
    field = FieldDef(name, None if number == "-" else int(number), type_, repeated, default)
    clash = next((f.name for f in msg.fields.values() if f.name != name and field.number is not None and f.number == field.number), None)
    if clash:
        raise ValueError(f"schema table: {msg.name}.{name} reuses number {number} of {msg.name}.{clash}; give a fork field that reuses a number as '-'")
    msg.fields[name] = field


def extend(message: str, table: str) -> None:
    """Add fields to an existing message, e.g. a fork's ``interp_param`` to LayerParameter."""
    define(f"message {message}\n{table}")


def field_def(message: str | None, name: str) -> FieldDef | None:
    if message is None:
        return None
    m = MESSAGES.get(message)
    return m.fields.get(name) if m is not None else None


def field_type(message: str | None, name: str) -> str | None:
    f = field_def(message, name)
    return f.type if f is not None and f.type in MESSAGES else None


def default_of(message: str | None, name: str) -> Any:
    f = field_def(message, name)
    if f is None:
        return None
    if f.repeated:
        return []
    if f.default is not None:
        return f.default
    if f.type in ENUMS:
        return Ident(next(iter(ENUMS[f.type].values)))
    return None


# --- binding -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A non-fatal remark about the input, e.g. a field the schema does not know."""

    where: SourceSpan | None
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where is not None else self.message


_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOAT_WORDS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}
_BOOL_WORDS = {"true": True, "t": True, "True": True, "false": False, "f": False, "False": False}


class Placeholder(ValueError):
    """A value that is not of the field's type but looks like a template placeholder or a fork's enum value."""


def _convert(value: Any, f: FieldDef) -> Any:
    """The typed value (already typed values pass unchanged), or raise ValueError with a short reason.

    Bare identifiers where a number is expected (``num_output: cls3x`` in template files)
    and enum names the schema does not know (a fork's extension) raise :class:`Placeholder`:
    they are kept and reported rather than refused, and a layer that needs them says so.
    """
    t = f.type
    if isinstance(value, Template):
        return value
    if t in ("float", "double"):
        if isinstance(value, float):
            return value
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value}")
        if isinstance(value, (int, float)) and not isinstance(value, Ident):
            return float(value)
        if isinstance(value, Ident):
            word = value.lstrip("-").lower()
            if word in _FLOAT_WORDS:
                number = _FLOAT_WORDS[word]
                return -number if value.startswith("-") else number
            raise Placeholder(f"expected a number, got the identifier {value} (a template placeholder?)")
        raise ValueError(f"expected a number, got {_show(value)}")
    if t in _INT_RANGES:
        if isinstance(value, int) and not isinstance(value, bool):
            lo, hi = _INT_RANGES[t]
            if not lo <= value <= hi:
                raise ValueError(f"{value} is out of range for {t}")
            return value
        if isinstance(value, Ident):
            raise Placeholder(f"expected an integer, got the identifier {value} (a template placeholder?)")
        raise ValueError(f"expected an integer, got {_show(value)}")
    if t == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, Ident) and str(value) in _BOOL_WORDS:
            return _BOOL_WORDS[str(value)]
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
        raise ValueError(f"expected true or false, got {_show(value)}")
    if t in ("string", "bytes"):
        if isinstance(value, str) and not isinstance(value, Ident):
            return value
        raise ValueError(f"expected a quoted string, got {_show(value)}")
    enum = ENUMS.get(t)
    if enum is not None:
        if isinstance(value, Ident) and str(value) in enum.values:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            name = enum.name_of(value)
            if name is not None:
                return Ident(name)
        choices = ", ".join(enum.values)
        if isinstance(value, Ident):
            raise Placeholder(f"unknown value {value} for enum {t} (one of: {choices}; a fork's extension?)")
        raise ValueError(f"unknown value {_show(value)} for enum {t} (one of: {choices})")
    raise ValueError(f"expected a {t} message, got {_show(value)}")


def _show(value: Any) -> str:
    if isinstance(value, Msg):
        return "a message"
    if isinstance(value, Ident):
        return str(value)
    return repr(value)


def unknown_fields(msg: Msg, skip: frozenset[str] = frozenset()) -> list[tuple[str, SourceSpan | None]]:
    """Fields of ``msg`` and its sub-messages that the schema does not know, as dotted paths
    with their positions (fields named in ``skip`` are not entered at the top level)."""
    out: list[tuple[str, SourceSpan | None]] = []
    mdef = MESSAGES.get(msg.type or "")
    if mdef is None:
        return out
    for i, (name, value, _, _) in enumerate(msg.entries):
        if name in skip:
            continue
        f = mdef.fields.get(name)
        if f is None:
            out.append((f"{msg.type}.{name}", msg.entry_span(i)))
        elif isinstance(value, Msg) and f.type in MESSAGES:
            out.extend(unknown_fields(value))
    return out


def bind(msg: Msg, type_name: str, diagnostics: list[Diagnostic] | None = None) -> Msg:
    """Type ``msg`` (in place) as ``type_name``, recursively.  Returns ``msg``.

    Unknown fields are kept and reported in ``diagnostics``; type errors raise
    :class:`SchemaError` naming the field and its position.
    """
    msg.type = type_name
    mdef = MESSAGES.get(type_name)
    if mdef is None:
        return msg
    fields = mdef.fields
    seen_singular: set[str] = set()
    entries = msg.entries
    for i, (name, value, line, column) in enumerate(entries):
        f = fields.get(name)
        if f is None:
            if diagnostics is not None:
                diagnostics.append(Diagnostic(msg.entry_span(i), f"unknown field '{name}' in {type_name} (kept as is)"))
            continue
        if not f.repeated:
            if name in seen_singular:
                raise SchemaError(f"field '{name}' of {type_name} is not repeated but is given more than once", msg.entry_span(i))
            seen_singular.add(name)
        if f.type in MESSAGES:
            if not isinstance(value, Msg):
                raise SchemaError(f"field '{name}' of {type_name} must be a message {{ ... }}, got {_show(value)}", msg.entry_span(i))
            bind(value, f.type, diagnostics)
            continue
        if isinstance(value, Msg):
            raise SchemaError(f"field '{name}' of {type_name} takes a {f.type} value, not a message", msg.entry_span(i))
        try:
            typed = _convert(value, f)
        except Placeholder as exc:
            if diagnostics is not None:
                diagnostics.append(Diagnostic(msg.entry_span(i), f"field '{name}' of {type_name}: {exc}"))
            typed = value if isinstance(value, Ident) and f.type in ENUMS else Template(str(value))
        except ValueError as exc:
            raise SchemaError(f"field '{name}' of {type_name}: {exc}", msg.entry_span(i)) from None
        if typed is not value:
            entries[i] = (name, typed, line, column)
    return msg


# --- BVLC Caffe (caffe.proto at BVLC master 9b89154) ------------------------------------------

define("""
enum Phase TRAIN=0 TEST=1
enum DimCheckMode STRICT=0 PERMISSIVE=1
enum Engine DEFAULT=0 CAFFE=1 CUDNN=2
enum VarianceNorm FAN_IN=0 FAN_OUT=1 AVERAGE=2
enum NormalizationMode FULL=0 VALID=1 BATCH_SIZE=2 NONE=3 PRE_FIXED=4
enum DB LEVELDB=0 LMDB=1
enum EltwiseOp PROD=0 SUM=1 MAX=2
enum HingeNorm L1=1 L2=2
enum NormRegion ACROSS_CHANNELS=0 WITHIN_CHANNEL=1
enum PoolMethod MAX=0 AVE=1 STOCHASTIC=2
enum RoundMode CEIL=0 FLOOR=1
enum ReductionOp SUM=1 ASUM=2 SUMSQ=3 MEAN=4
enum V1LayerType NONE=0 ABSVAL=35 ACCURACY=1 ARGMAX=30 BNLL=2 CONCAT=3 CONTRASTIVE_LOSS=37 CONVOLUTION=4 DATA=5 DECONVOLUTION=39 DROPOUT=6 DUMMY_DATA=32 EUCLIDEAN_LOSS=7 ELTWISE=25 EXP=38 FLATTEN=8 HDF5_DATA=9 HDF5_OUTPUT=10 HINGE_LOSS=28 IM2COL=11 IMAGE_DATA=12 INFOGAIN_LOSS=13 INNER_PRODUCT=14 LRN=15 MEMORY_DATA=29 MULTINOMIAL_LOGISTIC_LOSS=16 MVN=34 POOLING=17 POWER=26 RELU=18 SIGMOID=19 SIGMOID_CROSS_ENTROPY_LOSS=27 SILENCE=36 SOFTMAX=20 SOFTMAX_LOSS=21 SPLIT=22 SLICE=33 TANH=23 WINDOW_DATA=24 THRESHOLD=31

message BlobShape
  dim                 1  int64*

message BlobProto
  shape               7  BlobShape
  data                5  float*
  diff                6  float*
  double_data         8  double*
  double_diff         9  double*
  num                 1  int32   = 0
  channels            2  int32   = 0
  height              3  int32   = 0
  width               4  int32   = 0

message FillerParameter
  type                1  string  = "constant"
  value               2  float   = 0
  min                 3  float   = 0
  max                 4  float   = 1
  mean                5  float   = 0
  std                 6  float   = 1
  sparse              7  int32   = -1
  variance_norm       8  VarianceNorm = FAN_IN

message NetParameter
  name                1  string
  input               3  string*
  input_shape         8  BlobShape*
  input_dim           4  int32*
  force_backward      5  bool    = false
  state               6  NetState
  debug_info          7  bool    = false
  layer             100  LayerParameter*
  layers              2  V1LayerParameter*

message NetState
  phase               1  Phase   = TEST
  level               2  int32   = 0
  stage               3  string*

message NetStateRule
  phase               1  Phase
  min_level           2  int32
  max_level           3  int32
  stage               4  string*
  not_stage           5  string*

message ParamSpec
  name                1  string
  share_mode          2  DimCheckMode
  lr_mult             3  float   = 1.0
  decay_mult          4  float   = 1.0

message LayerParameter
  name                1  string
  type                2  string
  bottom              3  string*
  top                 4  string*
  phase              10  Phase
  loss_weight         5  float*
  param               6  ParamSpec*
  blobs               7  BlobProto*
  propagate_down     11  bool*
  include             8  NetStateRule*
  exclude             9  NetStateRule*
  transform_param   100  TransformationParameter
  loss_param        101  LossParameter
  accuracy_param    102  AccuracyParameter
  argmax_param      103  ArgMaxParameter
  batch_norm_param  139  BatchNormParameter
  bias_param        141  BiasParameter
  clip_param        148  ClipParameter
  concat_param      104  ConcatParameter
  contrastive_loss_param 105 ContrastiveLossParameter
  convolution_param 106  ConvolutionParameter
  crop_param        144  CropParameter
  data_param        107  DataParameter
  dropout_param     108  DropoutParameter
  dummy_data_param  109  DummyDataParameter
  eltwise_param     110  EltwiseParameter
  elu_param         140  ELUParameter
  embed_param       137  EmbedParameter
  exp_param         111  ExpParameter
  flatten_param     135  FlattenParameter
  hdf5_data_param   112  HDF5DataParameter
  hdf5_output_param 113  HDF5OutputParameter
  hinge_loss_param  114  HingeLossParameter
  image_data_param  115  ImageDataParameter
  infogain_loss_param 116 InfogainLossParameter
  inner_product_param 117 InnerProductParameter
  input_param       143  InputParameter
  log_param         134  LogParameter
  lrn_param         118  LRNParameter
  memory_data_param 119  MemoryDataParameter
  mvn_param         120  MVNParameter
  parameter_param   145  ParameterParameter
  pooling_param     121  PoolingParameter
  power_param       122  PowerParameter
  prelu_param       131  PReLUParameter
  python_param      130  PythonParameter
  recurrent_param   146  RecurrentParameter
  reduction_param   136  ReductionParameter
  relu_param        123  ReLUParameter
  reshape_param     133  ReshapeParameter
  scale_param       142  ScaleParameter
  sigmoid_param     124  SigmoidParameter
  softmax_param     125  SoftmaxParameter
  spp_param         132  SPPParameter
  slice_param       126  SliceParameter
  swish_param       147  SwishParameter
  tanh_param        127  TanHParameter
  threshold_param   128  ThresholdParameter
  tile_param        138  TileParameter
  window_data_param 129  WindowDataParameter
  strict_dim       1003  bool    = true     // DeepLab: false reshapes a caffemodel blob of equal count

message TransformationParameter
  scale               1  float   = 1
  mirror              2  bool    = false
  crop_size           3  uint32  = 0
  mean_file           4  string
  mean_value          5  float*
  force_color         6  bool    = false
  force_gray          7  bool    = false

message LossParameter
  ignore_label        1  int32
  normalization       3  NormalizationMode = VALID
  normalize           2  bool
  pre_fixed_normalizer - float   = 1        // NVIDIA Caffe / SSD: normalization PRE_FIXED
  weight_by_label_freqs - bool   = false    // SegNet: weight each label's term
  class_weighting     -  float*             // SegNet: the weights, one per class

message AccuracyParameter
  top_k               1  uint32  = 1
  axis                2  int32   = 1
  ignore_label        3  int32

message ArgMaxParameter
  out_max_val         1  bool    = false
  top_k               2  uint32  = 1
  axis                3  int32

message ClipParameter
  min                 1  float
  max                 2  float

message ConcatParameter
  axis                2  int32   = 1
  concat_dim          1  uint32  = 1

message BatchNormParameter
  use_global_stats    1  bool
  moving_average_fraction 2 float = 0.999
  eps                 3  float   = 1e-5
  scale_bias          -  bool    = false    // NVIDIA Caffe
  scale_filler        -  FillerParameter    // NVIDIA Caffe
  bias_filler         -  FillerParameter    // NVIDIA Caffe

message BiasParameter
  axis                1  int32   = 1
  num_axes            2  int32   = 1
  filler              3  FillerParameter

message ContrastiveLossParameter
  margin              1  float   = 1.0
  legacy_version      2  bool    = false

message ConvolutionParameter
  num_output          1  uint32
  bias_term           2  bool    = true
  pad                 3  uint32*
  kernel_size         4  uint32*
  stride              6  uint32*
  dilation           18  uint32*
  pad_h               9  uint32  = 0
  pad_w              10  uint32  = 0
  kernel_h           11  uint32
  kernel_w           12  uint32
  stride_h           13  uint32
  stride_w           14  uint32
  group               5  uint32  = 1
  weight_filler       7  FillerParameter
  bias_filler         8  FillerParameter
  engine             15  Engine  = DEFAULT
  axis               16  int32   = 1
  force_nd_im2col    17  bool    = false
  hole                -  uint32             // DeepLab v1 (deeplab-public): dilation
  hole_h              -  uint32
  hole_w              -  uint32

message CropParameter
  axis                1  int32   = 2
  offset              2  uint32*

message DataParameter
  source              1  string
  batch_size          4  uint32
  rand_skip           7  uint32  = 0
  backend             8  DB      = LEVELDB
  scale               2  float   = 1
  mean_file           3  string
  crop_size           5  uint32  = 0
  mirror              6  bool    = false
  force_encoded_color 9  bool    = false
  prefetch           10  uint32  = 4

message DropoutParameter
  dropout_ratio       1  float   = 0.5
  scale_train         -  bool    = true     // caffe-fast-rcnn: false scales by (1 - ratio) at test time instead
  sample_weights_test -  bool    = false    // Bayesian SegNet: keep dropping at test time

message DummyDataParameter
  data_filler         1  FillerParameter*
  shape               6  BlobShape*
  num                 2  uint32*
  channels            3  uint32*
  height              4  uint32*
  width               5  uint32*

message EltwiseParameter
  operation           1  EltwiseOp = SUM
  coeff               2  float*
  stable_prod_grad    3  bool    = true

message ELUParameter
  alpha               1  float   = 1

message EmbedParameter
  num_output          1  uint32
  input_dim           2  uint32
  bias_term           3  bool    = true
  weight_filler       4  FillerParameter
  bias_filler         5  FillerParameter

message ExpParameter
  base                1  float   = -1.0
  scale               2  float   = 1.0
  shift               3  float   = 0.0

message FlattenParameter
  axis                1  int32   = 1
  end_axis            2  int32   = -1

message HDF5DataParameter
  source              1  string
  batch_size          2  uint32
  shuffle             3  bool    = false

message HDF5OutputParameter
  file_name           1  string

message HingeLossParameter
  norm                1  HingeNorm = L1

message ImageDataParameter
  source              1  string
  batch_size          4  uint32  = 1
  rand_skip           7  uint32  = 0
  shuffle             8  bool    = false
  new_height          9  uint32  = 0
  new_width          10  uint32  = 0
  is_color           11  bool    = true
  scale               2  float   = 1
  mean_file           3  string
  crop_size           5  uint32  = 0
  mirror              6  bool    = false
  root_folder        12  string  = ""

message InfogainLossParameter
  source              1  string
  axis                2  int32   = 1

message InnerProductParameter
  num_output          1  uint32
  bias_term           2  bool    = true
  weight_filler       3  FillerParameter
  bias_filler         4  FillerParameter
  axis                5  int32   = 1
  transpose           6  bool    = false
  normalize           -  bool    = false    // happynear (NormFace, AM-Softmax): unit-length weight rows

message InputParameter
  shape               1  BlobShape*

message LogParameter
  base                1  float   = -1.0
  scale               2  float   = 1.0
  shift               3  float   = 0.0

message LRNParameter
  local_size          1  uint32  = 5
  alpha               2  float   = 1.0
  beta                3  float   = 0.75
  norm_region         4  NormRegion = ACROSS_CHANNELS
  k                   5  float   = 1.0
  engine              6  Engine  = DEFAULT

message MemoryDataParameter
  batch_size          1  uint32
  channels            2  uint32
  height              3  uint32
  width               4  uint32

message MVNParameter
  normalize_variance  1  bool    = true
  across_channels     2  bool    = false
  eps                 3  float   = 1e-9

message ParameterParameter
  shape               1  BlobShape
  blob_filler         -  FillerParameter    // NVIDIA Caffe, initialisation only

message PoolingParameter
  pool                1  PoolMethod = MAX
  pad                 4  uint32  = 0
  pad_h               9  uint32  = 0
  pad_w              10  uint32  = 0
  kernel_size         2  uint32
  kernel_h            5  uint32
  kernel_w            6  uint32
  stride              3  uint32  = 1
  stride_h            7  uint32
  stride_w            8  uint32
  engine             11  Engine  = DEFAULT
  global_pooling     12  bool    = false
  round_mode         13  RoundMode = CEIL
  ceil_mode           -  bool    = true      // fork field (PR #3057), BVLC field 13 in text form

message PowerParameter
  power               1  float   = 1.0
  scale               2  float   = 1.0
  shift               3  float   = 0.0

message PythonParameter
  module              1  string
  layer               2  string
  param_str           3  string  = ""
  share_in_parallel   4  bool    = false

message RecurrentParameter
  num_output          1  uint32  = 0
  weight_filler       2  FillerParameter
  bias_filler         3  FillerParameter
  debug_info          4  bool    = false
  expose_hidden       5  bool    = false

message ReductionParameter
  operation           1  ReductionOp = SUM
  axis                2  int32   = 0
  coeff               3  float   = 1.0

message ReLUParameter
  negative_slope      1  float   = 0
  engine              2  Engine  = DEFAULT

message ReshapeParameter
  shape               1  BlobShape
  axis                2  int32   = 0
  num_axes            3  int32   = -1

message ScaleParameter
  axis                1  int32   = 1
  num_axes            2  int32   = 1
  filler              3  FillerParameter
  bias_term           4  bool    = false
  bias_filler         5  FillerParameter

message SigmoidParameter
  engine              1  Engine  = DEFAULT

message SliceParameter
  axis                3  int32   = 1
  slice_point         2  uint32*
  slice_dim           1  uint32  = 1

message SoftmaxParameter
  engine              1  Engine  = DEFAULT
  axis                2  int32   = 1

message SwishParameter
  beta                1  float   = 1

message TanHParameter
  engine              1  Engine  = DEFAULT

message TileParameter
  axis                1  int32   = 1
  tiles               2  int32

message ThresholdParameter
  threshold           1  float   = 0

message WindowDataParameter
  source              1  string
  scale               2  float   = 1
  mean_file           3  string
  batch_size          4  uint32
  crop_size           5  uint32  = 0
  mirror              6  bool    = false
  fg_threshold        7  float   = 0.5
  bg_threshold        8  float   = 0.5
  fg_fraction         9  float   = 0.25
  context_pad        10  uint32  = 0
  crop_mode          11  string  = "warp"
  cache_images       12  bool    = false
  root_folder        13  string  = ""

message SPPParameter
  pyramid_height      1  uint32
  pool                2  PoolMethod = MAX
  engine              6  Engine  = DEFAULT

message PReLUParameter
  filler              1  FillerParameter
  channel_shared      2  bool    = false

message V1LayerParameter
  bottom              2  string*
  top                 3  string*
  name                4  string
  include            32  NetStateRule*
  exclude            33  NetStateRule*
  type                5  V1LayerType
  blobs               6  BlobProto*
  param            1001  string*
  blob_share_mode  1002  DimCheckMode*
  blobs_lr            7  float*
  weight_decay        8  float*
  loss_weight        35  float*
  accuracy_param     27  AccuracyParameter
  argmax_param       23  ArgMaxParameter
  concat_param        9  ConcatParameter
  contrastive_loss_param 40 ContrastiveLossParameter
  convolution_param  10  ConvolutionParameter
  data_param         11  DataParameter
  dropout_param      12  DropoutParameter
  dummy_data_param   26  DummyDataParameter
  eltwise_param      24  EltwiseParameter
  exp_param          41  ExpParameter
  hdf5_data_param    13  HDF5DataParameter
  hdf5_output_param  14  HDF5OutputParameter
  hinge_loss_param   29  HingeLossParameter
  image_data_param   15  ImageDataParameter
  infogain_loss_param 16 InfogainLossParameter
  inner_product_param 17 InnerProductParameter
  lrn_param          18  LRNParameter
  memory_data_param  22  MemoryDataParameter
  mvn_param          34  MVNParameter
  pooling_param      19  PoolingParameter
  power_param        21  PowerParameter
  relu_param         30  ReLUParameter
  sigmoid_param      38  SigmoidParameter
  softmax_param      39  SoftmaxParameter
  slice_param        31  SliceParameter
  tanh_param         37  TanHParameter
  threshold_param    25  ThresholdParameter
  window_data_param  20  WindowDataParameter
  transform_param    36  TransformationParameter
  loss_param         42  LossParameter
  layer               1  V0LayerParameter

message V0LayerParameter
  name                1  string
  type                2  string
  num_output          3  uint32
  biasterm            4  bool    = true
  weight_filler       5  FillerParameter
  bias_filler         6  FillerParameter
  pad                 7  uint32  = 0
  kernelsize          8  uint32
  group               9  uint32  = 1
  stride             10  uint32  = 1
  pool               11  PoolMethod = MAX
  dropout_ratio      12  float   = 0.5
  local_size         13  uint32  = 5
  alpha              14  float   = 1.0
  beta               15  float   = 0.75
  k                  22  float   = 1.0
  source             16  string
  scale              17  float   = 1
  meanfile           18  string
  batchsize          19  uint32
  cropsize           20  uint32  = 0
  mirror             21  bool    = false
  blobs              50  BlobProto*
  blobs_lr           51  float*
  weight_decay       52  float*
  rand_skip          53  uint32  = 0
  det_fg_threshold   54  float   = 0.5
  det_bg_threshold   55  float   = 0.5
  det_fg_fraction    56  float   = 0.25
  det_context_pad    58  uint32  = 0
  det_crop_mode      59  string  = "warp"
  new_num            60  int32   = 0
  new_channels       61  int32   = 0
  new_height         62  int32   = 0
  new_width          63  int32   = 0
  shuffle_images     64  bool    = false
  concat_dim         65  uint32  = 1
  hdf5_output_param 1001 HDF5OutputParameter
""")
