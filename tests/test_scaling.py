"""Loading and converting grow linearly with the net: doubling a chain of in-place layers at most about
doubles the Python lines executed (an operation count, not a time, so the test is not flaky)."""

from __future__ import annotations

import sys

import pytest

from proto2torch.backend.live import build_graph_module
from proto2torch.prototxt.lower import net_from_text
from proto2torch.summary import summary_table


def _chain(n: int) -> str:
    lines = ['layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }']
    for i in range(n):
        kind = ("ReLU", "Sigmoid", "TanH")[i % 3]
        lines.append(f'layer {{ name: "l{i}" type: "{kind}" bottom: "data" top: "data" }}')
    return "\n".join(lines)


def _lines(fn, *args) -> int:  # noqa: ANN001
    """Python lines executed by ``fn(*args)`` in proto2torch's own code (loops count every pass)."""
    count = 0

    def local(frame, event, arg):  # noqa: ANN001, ANN202
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame, event, arg):  # noqa: ANN001, ANN202
        return local if "proto2torch" in frame.f_code.co_filename else None

    sys.settrace(tracer)
    try:
        fn(*args)
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize(
    "work",
    [
        pytest.param(lambda text: net_from_text(text), id="load"),
        pytest.param(lambda text: summary_table(net_from_text(text)), id="inspect"),
        pytest.param(lambda text: build_graph_module(net_from_text(text)), id="to_torch"),
    ],
)
def test_doubling_the_net_at_most_doubles_the_work(work) -> None:
    small, large = _chain(600), _chain(1200)
    work(small)  # imports and caches out of the way
    ratio = _lines(work, large) / _lines(work, small)
    assert ratio < 2.3, f"work grew {ratio:.2f}x for twice the layers"


HUGE = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 64 dim: 64 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: %s kernel_size: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" inner_product_param { num_output: %s } }
"""


@pytest.mark.parametrize(
    ("conv", "ip", "message"),
    [
        ("2000000000", "10", "layer 'conv1': shape [1, 2000000000, 64, 64] has 8,192,000,000,000 elements, over the limit of 2,147,483,647 for one blob"),
        ("100000", "100000", "layer 'ip': learned blob 0 of shape [100000, 409600000] has 40,960,000,000,000 elements, over the limit"),
        ("600", "500", "layer 'ip': the net's learned blobs reach 1,228,802,900 elements here, over the limit of 1,000,000,000"),
    ],
)
def test_absurd_sizes_are_refused_before_allocating(conv: str, ip: str, message: str, tmp_path, capsys) -> None:
    from proto2torch.cli import main
    from proto2torch.layers.registry import LIMITS

    path = tmp_path / "huge.prototxt"
    path.write_text(HUGE % (conv, ip))
    before = (LIMITS.max_blob, LIMITS.max_params, LIMITS.max_activations)
    try:
        args = ["--max-params", "1000000000"] if conv == "600" else []
        assert main(["convert", str(path), "-o", str(tmp_path / "out"), *args]) == 2
    finally:
        LIMITS.max_blob, LIMITS.max_params, LIMITS.max_activations = before
    err = capsys.readouterr().err
    assert message in err and "huge.prototxt:" in err, err
    assert not (tmp_path / "out").exists()


def test_limits_can_be_raised_for_a_real_giant(tmp_path) -> None:
    from proto2torch.layers.registry import LIMITS, set_limits
    from proto2torch.prototxt.lower import load_prototxt

    path = tmp_path / "big.prototxt"
    path.write_text(HUGE % ("64", "100"))
    before = (LIMITS.max_blob, LIMITS.max_params, LIMITS.max_activations)
    try:
        set_limits(max_params=1000)
        with pytest.raises(Exception, match="over the limit of 1,000"):
            load_prototxt(path)
        set_limits(max_params=10**9)
        assert load_prototxt(path).nodes[-1].name == "ip"
    finally:
        LIMITS.max_blob, LIMITS.max_params, LIMITS.max_activations = before


def test_a_dsl_chain_of_20000_calls_reads_without_recursion(tmp_path) -> None:
    from proto2torch.dsl import load_dsl

    body = "".join(f"             .relu(name='r{i}')\n" for i in range(20000))
    path = tmp_path / "chain.py"
    path.write_text(f"from kaffe.tensorflow import Network\n\nclass Deep(Network):\n    def setup(self):\n        (self.feed('data')\n{body}        )\n")
    net = load_dsl(path, inputs={"data": (1, 3, 4, 4)})
    assert len(net.nodes) == 20001


@pytest.mark.parametrize("error", [RecursionError, MemoryError, OverflowError])
def test_python_resource_errors_become_typed_errors(error, monkeypatch, tmp_path) -> None:
    from proto2torch.errors import LimitError
    from proto2torch.prototxt import lower

    def explode(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise error("boom")

    monkeypatch.setattr(lower, "upgrade_net", explode)
    path = tmp_path / "net.prototxt"
    path.write_text('layer { name: "a" type: "Input" top: "a" }\n')
    with pytest.raises(LimitError, match=rf"net.prototxt: reading the prototxt failed: .*\({error.__name__}\)"):
        lower.load_prototxt(path)
