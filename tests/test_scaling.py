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
