"""Prototxt → IR: parse, bind Caffe's schema, upgrade legacy forms, filter by phase, build the graph.

In-place layers get fresh SSA values; a bottom always refers to the latest value of its
blob, as in Caffe.  Layers without a converter (fork or Python layers) stay in the
graph, marked unsupported with a reason, so ``inspect`` can list them all at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import GraphError, LayerParamError, Proto2TorchError, SchemaError, UnsupportedFeature, guarded
from ..ir.graph import Net, Node, Value, compute_outputs
from ..ir.shapes import infer_shapes
from ..layers.registry import ParseContext, count_problem, lookup, lookup_python, python_class, registered
from .message import Msg
from .schema import Diagnostic, bind, unknown_fields
from .textformat import parse_text
from .upgrade import layer_included, upgrade_net


@guarded("reading the prototxt")
def load_prototxt(
    path: str | Path,
    *,
    phase: str = "TEST",
    level: int | None = None,
    stages: Sequence[str] | None = None,
    inputs: Mapping[str, Sequence[int]] | None = None,
    defines: Mapping[str, str] | None = None,
    options: Mapping[str, str] | None = None,
) -> Net:
    """Read a Caffe prototxt (V2, V1 or V0) into a :class:`Net` with shapes inferred.

    ``inputs`` overrides input shapes by blob name; ``defines`` fills ``${NAME}``
    placeholders; ``options`` chooses between fork semantics (e.g. ``{"Upsample": "segnet"}``).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Proto2TorchError(f"cannot read {path}: {exc.strerror}") from None
    return net_from_text(data, str(path), phase=phase, level=level, stages=stages, inputs=inputs, defines=defines, options=options)


@guarded("reading the prototxt")
def net_from_text(
    text: str | bytes,
    filename: str = "<text>",
    *,
    phase: str = "TEST",
    level: int | None = None,
    stages: Sequence[str] | None = None,
    inputs: Mapping[str, Sequence[int]] | None = None,
    defines: Mapping[str, str] | None = None,
    options: Mapping[str, str] | None = None,
) -> Net:
    registered()  # layer modules add their fork messages to the schema
    root = parse_text(text, filename, dict(defines) if defines else None)
    return net_from_msg(root, filename, phase=phase, level=level, stages=stages, inputs=inputs, options=options)


def net_from_msg(
    root: Msg,
    filename: str,
    *,
    phase: str = "TEST",
    level: int | None = None,
    stages: Sequence[str] | None = None,
    inputs: Mapping[str, Sequence[int]] | None = None,
    options: Mapping[str, str] | None = None,
) -> Net:
    """A net from an already parsed NetParameter message (e.g. a solver's inline ``net_param``)."""
    if phase not in ("TEST", "TRAIN"):
        raise SchemaError(f"phase must be TEST or TRAIN, not {phase!r}")
    registered()
    diagnostics: list[Diagnostic] = []
    bind(root, "NetParameter", diagnostics)
    net_msg = upgrade_net(root, diagnostics)
    state = net_msg.sub("state")
    level = int(state.get("level")) if level is None else level
    stage_set = frozenset(state.all("stage") if stages is None else stages)
    opts = {"phase": phase, **(options or {})}
    name = net_msg.get("name") or Path(filename).stem
    net = _build(net_msg, name, filename, phase, level, stage_set, opts, diagnostics)
    return infer_shapes(net, inputs)


def _build(
    net_msg: Msg,
    name: str,
    filename: str,
    phase: str,
    level: int,
    stages: frozenset[str],
    options: dict[str, str],
    diagnostics: list[Diagnostic],
) -> Net:
    builder = _Builder(phase, options, diagnostics)
    builder.add_layers(net_msg.all("layer"), level, stages)
    return builder.finish(name, filename)


def append_layers(net: Net, text: str | bytes, filename: str = "<layers>") -> Net:
    """``net`` with the layers of a prototxt snippet appended; their bottoms may name the net's blobs."""
    registered()
    root = parse_text(text, filename)
    diagnostics = list(net.diagnostics)
    bind(root, "NetParameter", diagnostics)
    snippet = upgrade_net(root, diagnostics)
    builder = _Builder(net.phase, dict(net.options), diagnostics, net)
    builder.add_layers(snippet.all("layer"), 0, frozenset())
    return infer_shapes(builder.finish(net.name, net.source or filename))


class _Builder:
    """Turns LayerParameter messages into nodes, tracking the latest value of every blob."""

    def __init__(self, phase: str, options: dict[str, str], diagnostics: list[Diagnostic], start: Net | None = None):
        self.phase = phase
        self.options = options
        self.diagnostics = diagnostics
        self.values: dict[str, Value] = dict(start.values) if start else {}
        self.latest: dict[str, str] = start.latest() if start else {}  # blob name → id of its current value
        self.nodes: list[Node] = list(start.nodes) if start else []
        self.names_seen: set[str] = {n.name for n in self.nodes}

    def finish(self, name: str, filename: str) -> Net:
        return Net(
            name=name,
            nodes=tuple(self.nodes),
            values=self.values,
            outputs=compute_outputs(self.nodes),
            source=filename,
            phase=self.phase,
            diagnostics=tuple(dict.fromkeys(self.diagnostics)),  # once each, in order
            options=self.options,
        )

    def add_layers(self, layers: list[Msg], level: int, stages: frozenset[str]) -> None:
        excluded: dict[str, Msg] = {}  # blob → a layer that writes it but is not in this phase/stage
        for index, layer in enumerate(layers):
            if not layer_included(layer, self.phase, level, stages):
                for top in layer.all("top"):
                    excluded.setdefault(top, layer)
                continue
            self.add_layer(layer, index, excluded)

    def _runtime_input(self, layer: Msg, layer_name: str, name: str) -> str:
        node = _runtime_input_node(layer, layer_name, name, self.values, self.latest)
        self.nodes.append(node)
        self.diagnostics.append(
            Diagnostic(layer.span(), f"layer '{layer_name}' reads {name} from a file while Caffe runs; the converted net takes it as input '{node.name}'")
        )
        return node.outputs[0]

    def add_layer(self, layer: Msg, index: int, excluded: Mapping[str, Msg]) -> None:
        values, latest, diagnostics = self.values, self.latest, self.diagnostics
        type_name = layer.get("type")
        if not type_name:
            raise SchemaError("layer has no type", layer.span("name") or layer.span())
        layer_name = layer.get("name") or f"{type_name}{index}"
        if layer_name in self.names_seen:
            diagnostics.append(Diagnostic(layer.span("name"), f"layer name '{layer_name}' is used twice; weights are matched by name"))
        self.names_seen.add(layer_name)
        bottoms, tops = layer.all("bottom"), layer.all("top")
        inputs = []
        for i, bottom in enumerate(bottoms):
            if bottom not in latest:
                self.nodes.append(_implicit_input(bottom, excluded.get(bottom), layer, i, self.phase, values, latest, diagnostics))
            inputs.append(latest[bottom])
        spec = lookup(type_name)
        if spec is not None and spec.auto_tops and len(tops) < spec.tops[0]:
            # Caffe gives a loss layer without tops an anonymous one (AutoTopBlobs)
            tops = tops + [f"{layer_name} (automatic {k})" if k else f"{layer_name} (automatic)" for k in range(spec.tops[0] - len(tops))]
        outputs = []
        for j, top in enumerate(tops):
            in_place = j < len(bottoms) and bottoms[j] == top
            if top in latest and not in_place:
                raise GraphError(
                    f"top '{top}' is already produced by an earlier layer and this layer is not in-place (bottom {j} is not '{top}')",
                    _nth_span(layer, "top", j),
                    layer_name,
                )
            if in_place and spec is not None and not spec.in_place_ok:
                raise GraphError(f"{type_name} cannot work in place (top '{top}' is also its bottom)", _nth_span(layer, "top", j), layer_name)
            value_id = _fresh_id(top, values, latest)
            values[value_id] = Value(value_id, top)
            latest[top] = value_id
            outputs.append(value_id)
        param_names = tuple(spec_msg.get("name") for spec_msg in layer.all("param"))
        params, unsupported = None, None
        if type_name == "Python" and not bottoms and lookup_python(python_class(layer)) is None:
            python = layer.sub("python_param")
            diagnostics.append(
                Diagnostic(
                    layer.span(),
                    f"layer '{layer_name}' is a Python data layer ({python.get('module')}.{python.get('layer')}); "
                    f"its tops {', '.join(tops)} become net inputs (give their shapes with --input)",
                )
            )
            from ..layers.data import InputParams

            self.nodes.append(Node(layer_name, "Input", InputParams((None,) * len(tops)), (), tuple(outputs), span=layer.span()))
            return
        if spec is None:
            unsupported = _why_unsupported(layer, type_name)
        else:
            unsupported = count_problem(spec, len(bottoms), len(tops)) or _unknown_field_problem(layer, spec)
            if unsupported is None:
                ctx = ParseContext(layer, layer_name, self.options, len(bottoms), len(tops))
                try:
                    params = spec.parse(ctx)
                except UnsupportedFeature as exc:
                    unsupported = exc.message
                except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
                    if isinstance(exc, Proto2TorchError):
                        raise
                    raise LayerParamError(f"cannot read the parameters of this {type_name} layer ({exc})", layer.span(), layer_name) from exc
                diagnostics.extend(Diagnostic(layer.span(), f"layer '{layer_name}': {note}") for note in ctx.notes)
                for extra in ctx.runtime_inputs:
                    inputs.append(self._runtime_input(layer, layer_name, extra))
        self.nodes.append(
            Node(
                name=layer_name,
                type=type_name,
                params=params,
                inputs=tuple(inputs),
                outputs=tuple(outputs),
                msg=layer,
                span=layer.span(),
                param_names=param_names,
                unsupported=unsupported,
            )
        )


def _runtime_input_node(layer: Msg, layer_name: str, name: str, values: dict[str, Value], latest: dict[str, str]) -> Node:
    blob = f"{layer_name}.{name}"
    if blob in latest:
        raise LayerParamError(
            f"the extra input '{blob}' (the data this layer reads from a file) has the name of a blob the net already has", layer.span(), layer_name
        )
    value_id = _fresh_id(blob, values, latest)
    values[value_id] = Value(value_id, blob)
    latest[blob] = value_id
    from ..layers.data import InputParams

    return Node(blob, "Input", InputParams((None,), runtime=True), (), (value_id,), span=layer.span())


def _implicit_input(
    blob: str,
    producer: Msg | None,
    consumer: Msg,
    index: int,
    phase: str,
    values: dict[str, Value],
    latest: dict[str, str],
    diagnostics: list[Diagnostic],
) -> Node:
    """An input node for a bottom that no included layer writes.

    When a layer of another phase or stage writes it (a TRAIN-only data layer, say) the
    blob simply becomes a net input of unknown shape.  When no layer writes it at all
    (a fragment of a larger net, or a typo) the input is marked unsupported, so the net
    still loads for ``inspect`` but cannot be converted.
    """
    span = _nth_span(consumer, "bottom", index)
    unsupported = None
    if producer is not None:
        diagnostics.append(
            Diagnostic(
                producer.span("name") or producer.span(),
                f"blob '{blob}' is written only by layer '{producer.get('name')}' ({producer.get('type')}), which the {phase} "
                f"phase (and stages) leave out; it becomes a net input of unknown shape (give --input {blob}=..., or choose --phase/--stage)",
            )
        )
    else:
        unsupported = f"bottom '{blob}' of layer '{consumer.get('name')}' is not produced by any layer (a fragment of a larger net, or a misspelt name?)"
    value_id = _fresh_id(blob, values, latest)
    values[value_id] = Value(value_id, blob)
    latest[blob] = value_id
    from ..layers.data import InputParams

    return Node(f"input_{blob}", "Input", InputParams((None,)), (), (value_id,), span=span, unsupported=unsupported)


def _fresh_id(blob: str, values: Mapping[str, Value], latest: Mapping[str, str] | None = None) -> str:
    """A value id for a new version of ``blob``: ``blob``, then ``blob@2``, ``blob@3``… The search starts after
    the blob's latest version, so a chain of n in-place layers costs O(n), not O(n^2)."""
    if blob not in values:
        return blob
    n = 2
    current = latest.get(blob) if latest is not None else None
    if current is not None and current.startswith(blob + "@") and current[len(blob) + 1 :].isdigit():
        n = int(current[len(blob) + 1 :]) + 1
    while f"{blob}@{n}" in values:
        n += 1
    return f"{blob}@{n}"


def _nth_span(layer: Msg, field: str, n: int):  # noqa: ANN202
    seen = 0
    for i, entry in enumerate(layer.entries):
        if entry[0] == field:
            if seen == n:
                return layer.entry_span(i)
            seen += 1
    return layer.span()


# LayerParameter fields that never change what a layer computes: training, bookkeeping,
# data preprocessing (a converted net receives the data already prepared), and the
# precision hints of NVIDIA's Caffe (which fix the arithmetic type, not the function), and
# DeepLab's strict_dim (read when weights are attached, see ir/weights.py)
_INERT_LAYER_FIELDS = frozenset(
    {"include", "exclude", "param", "propagate_down", "loss_weight", "transform_param", "blobs", "phase",
     "blobs_lr", "weight_decay", "visualise", "visualise_channel", "forward_type", "backward_type",
     "forward_math", "backward_math", "debug_info", "cudnn_math_override", "strict_dim"}
)


def _unknown_field_problem(layer: Msg, spec) -> str | None:  # noqa: ANN001
    """A supported layer whose message carries fields the schema does not know may compute
    something else than the converter assumes (a fork's extension): it is refused."""
    if spec.source:
        return None  # data layers: their parameters describe files, not arithmetic
    unknown = unknown_fields(layer, _INERT_LAYER_FIELDS)
    if not unknown:
        return None
    path, span = unknown[0]
    where = f" ({span.line}:{span.column})" if span is not None else ""
    more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
    return f"fork field {path}{where}{more} is not understood by this converter and may change the layer's result"


def _why_unsupported(layer: Msg, type_name: str) -> str:
    return f"no converter for layer type '{type_name}' (a Caffe fork layer?); see 'Adding a layer' in the README"
