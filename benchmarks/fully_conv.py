"""net_surgery's promise: the fully convolutional CaffeNet at 451x451 against the classifier at 227x227.

    python benchmarks/fully_conv.py [--threads 2] [--repeat 10]

Caffe's net_surgery notebook casts CaffeNet's fully connected layers into convolutions and notes
that the result gives 64 times the outputs (an 8x8 map) for about 3 times the classifier's time,
on a GPU.  Here the same pair (the ``net_caffenet`` conformance case with its recipe weights, and
the ``fc-to-conv`` pass of it) runs on the CPU on each path a user has: the live module, the
emitted source, and ``proto2torch.optimize``.  The ratio of the two times is set beside the ratio
of the multiply-adds, which bounds what a CPU can do.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import CASES, median_seconds, scratch, table


def multiply_adds(net: object) -> int:
    """Multiply-adds of the convolutions and inner products of a net with shapes."""
    total = 0
    for node in net.nodes:
        if node.type == "Convolution":
            out = net.values[node.outputs[0]].shape
            cin = net.values[node.inputs[0]].shape[1]
            total += int(np.prod(out)) * cin // node.params.group * int(np.prod(node.blobs[0].shape[2:]))
        elif node.type == "InnerProduct":
            total += node.blobs[0].size * net.values[node.inputs[0]].shape[0]
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from proto2torch.api import load_net, with_weights
    from proto2torch.backend.live import build_graph_module
    from proto2torch.backend.source import load_emitted
    from proto2torch.conformance import Case, recipe_layers
    from proto2torch.optimization import optimize
    from proto2torch.passes import run_passes

    case = Case.load(CASES / "net_caffenet")
    weights = {layer: blobs for layer, _, blobs in recipe_layers(case.recipe)}
    classifier = with_weights(load_net(case.prototxt, {"data": (1, 3, 227, 227)}), weights)
    full = load_net(run_passes(classifier, ["fc-to-conv"]).net, {"data": (1, 3, 451, 451)})  # the surgery, then a larger input
    rng = np.random.default_rng(0)
    x227 = torch.from_numpy(rng.uniform(-100, 100, (1, 3, 227, 227)).astype(np.float32))
    x451 = torch.from_numpy(rng.uniform(-100, 100, (1, 3, 451, 451)).astype(np.float32))
    work = scratch("proto2torch-fullyconv-")
    builders = {
        "live module": lambda net, x, tag: build_graph_module(net),
        "emitted source": lambda net, x, tag: load_emitted(net, work / tag),
        "proto2torch.optimize": lambda net, x, tag: optimize(build_graph_module(net), x),
    }
    outputs = full.values[full.outputs[0]].shape
    rows = [("path", "classifier 227x227", f"fully conv 451x451 ({outputs[2]}x{outputs[3]} outputs)", "time ratio")]
    for label, build in builders.items():
        times = []
        for net, x, tag in ((classifier, x227, "227"), (full, x451, "451")):
            module = build(net, x, tag)
            with torch.inference_mode():
                times.append(median_seconds(lambda m=module, x=x: m(x), repeat=args.repeat, warmup=2))
            choice = getattr(module, "choice", None)
        rows.append((label if choice is None else f"{label} (chose {choice} at 451)", f"{times[0] * 1000:.1f} ms", f"{times[1] * 1000:.1f} ms", f"{times[1] / times[0]:.2f}x"))
    ops = multiply_adds(full) / multiply_adds(classifier)
    print(f"{args.threads} threads, median of {args.repeat} forwards after 2 warm-up runs, torch {torch.__version__}")
    print(table(rows))
    print(f"multiply-adds: {ops:.2f}x for {outputs[2] * outputs[3]}x the outputs")


if __name__ == "__main__":
    main()
