"""Bring legacy nets to today's form, in the order Caffe's own upgrader uses.

1. V0 (``layers { layer { type: "conv" ... } }``): ``padding`` layers are folded into
   the ``pad`` of the convolution or pooling that reads them, then every V0 layer
   becomes a V1 layer (flat V0 fields move into ``convolution_param`` & co.).
2. Data-transformation fields of V1 data layers move into ``transform_param``.
3. V1 (``layers { type: CONVOLUTION }``) becomes V2 (``layer { type: "Convolution" }``);
   ``blobs_lr``/``weight_decay`` become ``param { lr_mult decay_mult }``.  A file that
   mixes ``layer`` and ``layers`` is refused, as Caffe refuses it.
4. Net-level ``input`` + ``input_dim``/``input_shape`` become an ``Input`` layer named
   "input", placed first.
5. BatchNorm layers that declare three ``param`` specs get lr/decay multipliers 0.

Each step works on a copy of the bound :class:`Msg` tree and keeps source positions,
so errors in upgraded layers still point at the original text.
"""

from __future__ import annotations

from ..errors import GraphError, SchemaError
from .message import Ident, Msg
from .schema import Diagnostic, bind

# V0 type string → V1 enum name (BVLC UpgradeV0LayerType).
V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION", "data": "DATA",
    "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS", "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT", "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN", "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING", "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# V1 enum name → V2 type string (BVLC UpgradeV1LayerType).
V1_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution",
    "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power",
    "RELU": "ReLU", "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# Where each flat V0 field goes: {v0 field: {v0 type: (param message, field, repeated)}};
# "*" applies to every type.
_V0_FIELDS: dict[str, dict[str, tuple[str, str, bool]]] = {
    "num_output": {"conv": ("convolution_param", "num_output", False), "innerproduct": ("inner_product_param", "num_output", False)},
    "biasterm": {"conv": ("convolution_param", "bias_term", False), "innerproduct": ("inner_product_param", "bias_term", False)},
    "weight_filler": {"conv": ("convolution_param", "weight_filler", False), "innerproduct": ("inner_product_param", "weight_filler", False)},
    "bias_filler": {"conv": ("convolution_param", "bias_filler", False), "innerproduct": ("inner_product_param", "bias_filler", False)},
    "pad": {"conv": ("convolution_param", "pad", True), "pool": ("pooling_param", "pad", False)},
    "kernelsize": {"conv": ("convolution_param", "kernel_size", True), "pool": ("pooling_param", "kernel_size", False)},
    "group": {"conv": ("convolution_param", "group", False)},
    "stride": {"conv": ("convolution_param", "stride", True), "pool": ("pooling_param", "stride", False)},
    "pool": {"pool": ("pooling_param", "pool", False)},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio", False)},
    "local_size": {"lrn": ("lrn_param", "local_size", False)},
    "alpha": {"lrn": ("lrn_param", "alpha", False)},
    "beta": {"lrn": ("lrn_param", "beta", False)},
    "k": {"lrn": ("lrn_param", "k", False)},
    "source": {"data": ("data_param", "source", False), "hdf5_data": ("hdf5_data_param", "source", False),
               "images": ("image_data_param", "source", False), "window_data": ("window_data_param", "source", False),
               "infogain_loss": ("infogain_loss_param", "source", False)},
    "scale": {"*": ("transform_param", "scale", False)},
    "meanfile": {"*": ("transform_param", "mean_file", False)},
    "batchsize": {"data": ("data_param", "batch_size", False), "hdf5_data": ("hdf5_data_param", "batch_size", False),
                  "images": ("image_data_param", "batch_size", False), "window_data": ("window_data_param", "batch_size", False)},
    "cropsize": {"*": ("transform_param", "crop_size", False)},
    "mirror": {"*": ("transform_param", "mirror", False)},
    "rand_skip": {"data": ("data_param", "rand_skip", False), "images": ("image_data_param", "rand_skip", False)},
    "shuffle_images": {"images": ("image_data_param", "shuffle", False)},
    "new_height": {"images": ("image_data_param", "new_height", False)},
    "new_width": {"images": ("image_data_param", "new_width", False)},
    "concat_dim": {"concat": ("concat_param", "concat_dim", False)},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold", False)},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold", False)},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction", False)},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad", False)},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode", False)},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None, False)},  # type: ignore[dict-item]
}
_V0_PLAIN = ("name", "blobs", "blobs_lr", "weight_decay")  # copied as they are; "type" is mapped

def upgrade_net(net: Msg, diagnostics: list[Diagnostic]) -> Msg:
    """Return a V2 ``NetParameter`` equivalent to ``net`` (a bound NetParameter)."""
    net = net.copy()
    if any(layer.has("layer") for layer in net.all("layers")):
        net = _upgrade_v0(net, diagnostics)
    if net.all("layers"):
        _upgrade_data_transform(net)
        net = _upgrade_v1(net, diagnostics)
    if net.has("input"):
        net = _upgrade_input(net)
    for layer in net.all("layer"):
        if layer.get("type") == "BatchNorm" and len(layer.all("param")) == 3:
            for spec in layer.all("param"):
                spec.set("lr_mult", 0.0).set("decay_mult", 0.0)
    return net


# --- V0 → V1 -------------------------------------------------------------------------------

def _upgrade_v0(net: Msg, diagnostics: list[Diagnostic]) -> Msg:
    layers = net.all("layers")
    producer: dict[str, int] = {name: -1 for name in net.all("input")}
    kept: list[Msg] = []
    for i, conn in enumerate(layers):
        v0 = conn.sub("layer")
        v0_type = v0.get("type") or ""
        if v0_type != "padding":
            kept.append(conn)
        for j, bottom in enumerate(conn.all("bottom")):
            if bottom not in producer:
                raise GraphError(f"unknown bottom blob '{bottom}' (V0 layer '{v0.get('name')}')", conn.span("bottom"))
            source_index = producer[bottom]
            if source_index < 0:
                continue
            source = layers[source_index]
            if source.sub("layer").get("type") != "padding":
                continue
            # A padding layer feeds this one: fold its pad in and read from the padding's input.
            if v0_type not in ("conv", "pool"):
                raise SchemaError(f"V0 padding layer feeds a '{v0_type}' layer; only conv and pool can absorb it", conn.span())
            if len(conn.all("bottom")) != 1 or len(source.all("bottom")) != 1 or len(source.all("top")) != 1:
                raise SchemaError("V0 padding layers and the layer they feed must have one input and one output", conn.span())
            v0.set("pad", source.sub("layer").get("pad"))
            bottoms = conn.all("bottom")
            bottoms[j] = source.all("bottom")[0]
            conn.set_all("bottom", bottoms)
        for top in conn.all("top"):
            producer[top] = i
    out = Msg([e for e in net.entries if e[0] != "layers"], net.type, net.source, net.line, net.column)
    for conn in kept:
        out.add("layers", _v0_layer_to_v1(conn, diagnostics))
    return out


def _v0_layer_to_v1(conn: Msg, diagnostics: list[Diagnostic]) -> Msg:
    v0 = conn.sub("layer")
    v0_type = v0.get("type") or ""
    layer = Msg(type="V1LayerParameter", source=conn.source, line=conn.line, column=conn.column)
    for bottom in conn.all("bottom"):
        layer.add("bottom", bottom)
    for top in conn.all("top"):
        layer.add("top", top)
    params: dict[str, Msg] = {}
    for index, (name, value, line, column) in enumerate(v0.entries):
        if name == "type":
            enum = V0_TYPES.get(value)
            if enum is None:
                raise SchemaError(f"unknown V0 layer type '{value}'", v0.entry_span(index))
            layer.entries.append(("type", Ident(enum), line, column))
            continue
        if name in _V0_PLAIN:
            layer.entries.append((name, value, line, column))
            continue
        targets = _V0_FIELDS.get(name)
        target = None if targets is None else targets.get(v0_type, targets.get("*"))
        if target is None:
            diagnostics.append(Diagnostic(v0.entry_span(index), f"V0 field '{name}' does not apply to a '{v0_type}' layer; ignored (as Caffe does)"))
            continue
        param_name, field_name, _ = target
        if field_name is None:
            layer.entries.append((param_name, value, line, column))
            continue
        holder = params.get(param_name)
        if holder is None:
            holder = params[param_name] = Msg(source=conn.source, line=line, column=column)
            layer.entries.append((param_name, holder, line, column))
        holder.entries.append((field_name, value, line, column))
    bind(layer, "V1LayerParameter")
    return layer


# --- data transformation fields ---------------------------------------------------------------

def _upgrade_data_transform(net: Msg) -> None:
    moves = {"DATA": "data_param", "IMAGE_DATA": "image_data_param", "WINDOW_DATA": "window_data_param"}
    for layer in net.all("layers"):
        param_name = moves.get(str(layer.get("type") or ""))
        if param_name is None or not layer.has(param_name):
            continue
        param = layer.sub(param_name)
        for field_name in ("scale", "mean_file", "crop_size", "mirror"):
            if param.has(field_name):
                transform = layer.sub("transform_param")
                if not layer.has("transform_param"):
                    layer.add("transform_param", transform)
                transform.set(field_name, param.get(field_name))
                param.remove(field_name)


# --- V1 → V2 -------------------------------------------------------------------------------

def _upgrade_v1(net: Msg, diagnostics: list[Diagnostic]) -> Msg:
    if net.all("layer"):
        raise SchemaError("the net mixes V2 'layer' and legacy V1 'layers' entries; Caffe refuses such files", net.span("layers"))
    out = Msg([e for e in net.entries if e[0] != "layers"], net.type, net.source, net.line, net.column)
    for v1 in net.all("layers"):
        out.entries.append(("layer", _v1_layer_to_v2(v1, diagnostics), v1.line, v1.column))
    return out


def v1_type_name(enum: str, diagnostics: list[Diagnostic] | None = None, span: object = None) -> str:
    """V2 type string of a V1 enum name; forks' own enum names (IMAGE_SEG_DATA, CONVOLUTION3D…)
    become the CamelCase names those forks register (ImageSegData, Convolution3D…)."""
    if enum in V1_TYPES:
        return V1_TYPES[enum]
    words = []
    for word in enum.split("_"):
        if len(word) > 1 and word[-1] == "D" and word[-2].isdigit():  # 3D stays 3D
            words.append(word[0] + word[1:-2].lower() + word[-2:])
        else:
            words.append(word[:1] + word[1:].lower())
    name = "".join(words)
    if diagnostics is not None:
        diagnostics.append(Diagnostic(span, f"V1 layer type {enum} is not BVLC's; read as the fork type '{name}'"))  # type: ignore[arg-type]
    return name


def _v1_layer_to_v2(v1: Msg, diagnostics: list[Diagnostic]) -> Msg:
    layer = Msg(type="LayerParameter", source=v1.source, line=v1.line, column=v1.column)
    specs: list[Msg] = []

    def spec(i: int) -> Msg:
        while len(specs) <= i:
            specs.append(Msg(type="ParamSpec", source=v1.source))
        return specs[i]

    for index, (name, value, line, column) in enumerate(v1.entries):
        if name == "type":
            layer.entries.append(("type", v1_type_name(str(value), diagnostics, v1.entry_span(index)), line, column))
        elif name == "param":
            spec(len([s for s in specs if s.has("name")])).set("name", value)
        elif name == "blob_share_mode":
            spec(sum(1 for s in specs if s.has("share_mode"))).set("share_mode", value)
        elif name == "blobs_lr":
            spec(sum(1 for s in specs if s.has("lr_mult"))).set("lr_mult", value)
        elif name == "weight_decay":
            spec(sum(1 for s in specs if s.has("decay_mult"))).set("decay_mult", value)
        elif name == "layer":
            diagnostics.append(Diagnostic(v1.entry_span(index), "a V0 'layer' inside a V1 layer is ignored, as Caffe ignores it"))
        else:  # bottom, top, name, rules, blobs, loss_weight and every *_param (forks' included) carry over
            layer.entries.append((name, value, line, column))
    for s in specs:
        layer.add("param", s)
    # re-type as a V2 layer: *_param messages of forks (interp_param…) are known there
    return bind(layer, "LayerParameter", diagnostics)


# --- legacy net inputs -----------------------------------------------------------------------

def _upgrade_input(net: Msg) -> Msg:
    names = net.all("input")
    shapes = net.all("input_shape")
    dims = net.all("input_dim")
    out = Msg([e for e in net.entries if e[0] not in ("input", "input_shape", "input_dim")], net.type, net.source, net.line, net.column)
    line, column = next(((ln, col) for n, _, ln, col in net.entries if n == "input"), (0, 0))
    layer = Msg(type="LayerParameter", source=net.source, line=line, column=column)
    layer.add("name", "input").add("type", "Input")
    input_param = Msg(type="InputParameter", source=net.source, line=line, column=column)
    if shapes and dims:
        raise SchemaError("give net inputs either 'input_shape' or 'input_dim', not both", net.span("input_dim"))
    if shapes and len(shapes) != len(names):
        raise SchemaError(f"{len(names)} net input(s) but {len(shapes)} 'input_shape' entries", net.span("input_shape"))
    if dims and len(dims) != 4 * len(names):
        raise SchemaError(
            f"{len(names)} net input(s) need {4 * len(names)} 'input_dim' values (4 each), found {len(dims)}",
            net.span("input_dim"),
        )
    for i, name in enumerate(names):
        layer.add("top", name)
        if shapes:
            input_param.add("shape", shapes[i])
        elif dims:
            shape = Msg(type="BlobShape", source=net.source)
            for d in dims[4 * i : 4 * i + 4]:
                shape.add("dim", d)
            input_param.add("shape", shape)
    if input_param.entries:
        layer.add("input_param", input_param)
    # the Input layer goes first, before every other layer
    first = next((i for i, e in enumerate(out.entries) if e[0] == "layer"), len(out.entries))
    out.entries.insert(first, ("layer", layer, line, column))
    return out


# --- phase / stage / level rules (NetStateRule) --------------------------------------------------

def rule_met(rule: Msg, phase: str, level: int, stages: frozenset[str]) -> bool:
    """Caffe's StateMeetsRule: every condition the rule states must hold."""
    if rule.has("phase") and str(rule.get("phase")) != phase:
        return False
    if rule.has("min_level") and level < rule.get("min_level"):
        return False
    if rule.has("max_level") and level > rule.get("max_level"):
        return False
    if any(stage not in stages for stage in rule.all("stage")):
        return False
    if any(stage in stages for stage in rule.all("not_stage")):
        return False
    return True


def layer_included(layer: Msg, phase: str, level: int = 0, stages: frozenset[str] = frozenset()) -> bool:
    """Caffe's FilterNet decision for one layer."""
    include, exclude = layer.all("include"), layer.all("exclude")
    if include and exclude:
        raise SchemaError(
            f"layer '{layer.get('name')}' has both include and exclude rules; Caffe allows only one kind",
            layer.span("exclude"),
        )
    if include:
        return any(rule_met(r, phase, level, stages) for r in include)
    return not any(rule_met(r, phase, level, stages) for r in exclude)
