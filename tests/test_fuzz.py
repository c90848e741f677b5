"""Hostile and broken input: property tests and a bounded mutation-fuzzing run.

The long run is ``python -m tests.fuzz --minutes N`` (see tests/fuzz.py); here a fixed
seed keeps CI's share deterministic and short.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from proto2torch.caffemodel.reader import read_caffemodel_bytes
from proto2torch.errors import Proto2TorchError, ShapeError
from proto2torch.prototxt.lower import net_from_text
from proto2torch.prototxt.textformat import format_text
from proto2torch.prototxt.writer import net_message

from . import fuzz


def test_bounded_mutation_fuzzing_finds_no_traceback_and_no_hang() -> None:
    texts, models = fuzz.fuzz(prototxt_cases=400, caffemodel_cases=150, seed=7, hang_seconds=30)
    assert texts.total == 400 and models.total == 150
    assert not texts.failures and not models.failures, (texts.failures + models.failures)[0][1]
    # the mutations reach past the parser: some nets still load, some weights still fit
    assert texts.counts.get("loaded", 0) + texts.counts.get("built", 0) > 0
    assert models.counts.get("loaded", 0) > 0


def test_the_fuzzer_reports_what_is_not_a_proto2torch_error(tmp_path: Path) -> None:
    """The harness itself: a crash and a hang are caught, counted and kept."""
    tally = fuzz.Tally()
    fuzz.run_case(tally, "crash", lambda: [][1], b"crash input", hang_seconds=5)
    fuzz.run_case(tally, "hang", lambda: [None for _ in iter(int, 1)], b"hang input", hang_seconds=0.2)
    fuzz.run_case(tally, "fine", lambda: "refused", b"", hang_seconds=5)
    assert tally.counts == {"TRACEBACK": 1, "HANG": 1, "refused": 1}
    assert [f[0] for f in tally.failures] == ["crash", "hang"] and "IndexError" in tally.failures[0][1]


# --- generated nets: parse -> print -> parse is the identity on the IR ------------------------

V1_TYPES = {"Convolution": "CONVOLUTION", "Pooling": "POOLING", "ReLU": "RELU", "LRN": "LRN", "Dropout": "DROPOUT",
            "Power": "POWER", "Eltwise": "ELTWISE", "Concat": "CONCAT", "Deconvolution": "DECONVOLUTION", "Sigmoid": "SIGMOID"}  # fmt: skip


@st.composite
def generated_nets(draw) -> str:  # noqa: ANN001
    """A random small net as prototxt text, in V2 or legacy V1 syntax."""
    c, h, w = draw(st.integers(1, 4)), draw(st.integers(5, 12)), draw(st.integers(5, 12))
    lines = ['name: "generated"', f'input: "data" input_shape {{ dim: {draw(st.integers(1, 2))} dim: {c} dim: {h} dim: {w} }}']
    blob = "data"
    v1 = draw(st.booleans())  # a whole net in legacy V1 syntax (Caffe refuses a mix)
    kinds = sorted(V1_TYPES) if v1 else ["Convolution", "Deconvolution", "Pooling", "ReLU", "Sigmoid", "LRN", "BatchNorm", "Scale",
                                         "Dropout", "Power", "Eltwise", "Concat", "PReLU", "ELU"]  # fmt: skip

    def layer(head: str, kind: str, body: str) -> str:
        return f"layers {{ {head} type: {V1_TYPES[kind]} {body} }}" if v1 else f'layer {{ {head} type: "{kind}" {body} }}'

    for i in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(kinds))
        name = f"l{i}"
        body, tops, bottoms = "", [name], [blob]
        channels = c
        if kind in ("Convolution", "Deconvolution"):
            k = draw(st.integers(1, 3))
            channels = draw(st.integers(1, 4))
            body = (f"convolution_param {{ num_output: {channels} kernel_size: {k} pad: {draw(st.integers(0, k // 2))} "
                    f"stride: {draw(st.integers(1, 2))} dilation: {draw(st.integers(1, 2))} bias_term: {draw(st.booleans()) and 'true' or 'false'} }}")  # fmt: skip
        elif kind == "Pooling":
            k = draw(st.integers(1, 3))
            body = (f"pooling_param {{ pool: {draw(st.sampled_from(['MAX', 'AVE']))} kernel_size: {k} stride: {draw(st.integers(1, 2))} "
                    f"pad: {draw(st.integers(0, (k - 1) // 2))} }}")  # fmt: skip
        elif kind == "ReLU":
            body = f"relu_param {{ negative_slope: {draw(st.floats(0, 1))} }}"
        elif kind == "LRN":
            body = (f"lrn_param {{ local_size: {draw(st.sampled_from([1, 3, 5]))} alpha: {draw(st.floats(1e-5, 1))} "
                    f"beta: {draw(st.floats(0.1, 1))} norm_region: {draw(st.sampled_from(['ACROSS_CHANNELS', 'WITHIN_CHANNEL']))} }}")  # fmt: skip
        elif kind == "BatchNorm":
            body = f"batch_norm_param {{ use_global_stats: true eps: {draw(st.floats(1e-6, 1e-2))} }}"
        elif kind == "Scale":
            body = f"scale_param {{ bias_term: {draw(st.booleans()) and 'true' or 'false'} }}"
        elif kind == "Dropout":
            body = f"dropout_param {{ dropout_ratio: {draw(st.floats(0, 0.9))} }}"
        elif kind == "Power":
            body = f"power_param {{ power: {draw(st.sampled_from([1, 2]))} scale: {draw(st.floats(-2, 2))} shift: {draw(st.floats(-1, 1))} }}"
        elif kind == "ELU":
            body = f"elu_param {{ alpha: {draw(st.floats(0.1, 2))} }}"
        elif kind in ("Eltwise", "Concat"):
            # a 3x3 same-size convolution branch, then the merge
            branch = f"b{i}"
            lines.append(layer(f'name: "{branch}" bottom: "{blob}" top: "{branch}"', "Convolution", f"convolution_param {{ num_output: {c} kernel_size: 3 pad: 1 }}"))
            bottoms = [blob, branch]
            if kind == "Eltwise":
                op = draw(st.sampled_from(["SUM", "PROD", "MAX"]))
                coeff = " coeff: 0.5 coeff: -1" if op == "SUM" and draw(st.booleans()) else ""
                body = f"eltwise_param {{ operation: {op}{coeff} }}"
            else:
                body = "concat_param { axis: 1 }"
                channels = 2 * c
        in_place = kind in ("ReLU", "Sigmoid", "BatchNorm", "Scale", "Dropout", "ELU") and draw(st.booleans())
        if in_place:
            tops = [blob]
        head = f'name: "{name}" ' + " ".join(f'bottom: "{b}"' for b in bottoms) + " " + " ".join(f'top: "{t}"' for t in tops)
        lines.append(layer(head, kind, body))
        blob, c = tops[0], channels
    return "\n".join(lines) + "\n"


def ir_signature(net) -> tuple:  # noqa: ANN001
    blob = lambda v: net.values[v].blob  # noqa: E731
    nodes = tuple(
        (n.name, n.type, n.params, tuple(blob(v) for v in n.inputs), tuple(blob(v) for v in n.outputs)) for n in net.nodes
    )
    return nodes, tuple((blob(v), net.values[v].shape) for v in net.values)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(generated_nets())
def test_parse_print_parse_is_the_identity_on_the_ir(text: str) -> None:
    try:
        first = net_from_text(text, "generated.prototxt")
    except ShapeError:
        assume(False)  # e.g. a kernel larger than what is left of the image
        return
    printed = format_text(net_message(first))
    second = net_from_text(printed, "printed.prototxt")
    assert ir_signature(second) == ir_signature(first), printed


# --- arbitrary input: only typed errors ---------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(st.sampled_from(list('layer{}:"0123456789.-eE_ \n#<>[],;ABCtopbottomnameinput')), st.characters()), max_size=400))
def test_arbitrary_text_raises_only_typed_errors(text: str) -> None:
    try:
        net_from_text(text, "any.prototxt")
    except Proto2TorchError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_typed_errors(data: bytes) -> None:
    try:
        read_caffemodel_bytes(data, "any.caffemodel")
    except Proto2TorchError:
        pass


# --- regression cases the fuzzer found (second pass: solver, DSL, binary families) -------------------

def test_fuzz_find_bad_octal_number_is_a_located_parse_error() -> None:
    import pytest

    from proto2torch.errors import ParseError
    from proto2torch.prototxt.textformat import parse_text

    with pytest.raises(ParseError, match=r"x.prototxt:1:10: 08 is not a number"):
        parse_text("base_lr: 08\n", "x.prototxt")


def test_fuzz_find_solver_placeholders_and_impossible_paths(tmp_path) -> None:
    import pytest

    from proto2torch.errors import SolverError
    from proto2torch.train.solver import solver_from_text

    with pytest.raises(SolverError, match=r"s.prototxt:2:1: field 'display' takes a int64, not 'inf'"):
        solver_from_text('net: "n.prototxt"\ndisplay: inf\n', "s.prototxt", tmp_path)
    with pytest.raises(SolverError, match="does not exist"):
        solver_from_text(f'net: "{"a" * 5000}"\nbase_lr: 1\nlr_policy: "fixed"\n', "s.prototxt", tmp_path)


def test_bounded_fuzzing_of_the_other_families() -> None:
    tallies = fuzz.fuzz_all({"dsl": 60, "solver": 200, "solverstate": 100, "binaryproto": 100, "datum": 150}, seed=11, hang_seconds=30)
    failures = [f for t in tallies.values() for f in t.failures]
    assert not failures, failures[0][1]
    assert all(t.counts.get("loaded", 0) > 0 for k, t in tallies.items() if k != "dsl")


def test_structured_caffemodel_lies_are_refused(tmp_path) -> None:
    import random

    models = fuzz.seeds_caffemodel(tmp_path)
    name, data, net = next(m for m in models if m[0] == "net_lenet")
    rng = random.Random(0)
    tally = fuzz.Tally()
    for _ in range(25):
        lie = fuzz.structured_lie(rng, data)
        fuzz.run_case(tally, name, lambda lie=lie: fuzz.check_caffemodel(lie, net), lie, hang_seconds=30)
    assert not tally.failures, tally.failures[0][1]
