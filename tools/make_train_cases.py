#!/usr/bin/env python3
"""Make training conformance cases with real Caffe as the oracle (the format of the train_* cases).

usage: PYTHONPATH=/tmp/caffe-oracle/src/python python tools/make_train_cases.py [NAME ...] [-o tests/data/conformance]

Each case below is a net, solver settings, inputs and a number of iterations.  Its weights and
inputs are a seeded recipe (proto2torch.conformance); Caffe then gives the first gradients and
blobs (a TRAIN-phase net: one forward and backward), the loss of every iteration and every blob
after the last one (the solver, with the net handed to it inline: this oracle build drops a
BatchNorm's param specs when it reads a net file).  Needs pycaffe (shared/tools/build-caffe-oracle.sh);
the project's tests only read what this writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")

from proto2torch.caffemodel.writer import write_caffemodel  # noqa: E402
from proto2torch.conformance import recipe_inputs, recipe_layers  # noqa: E402

ORACLE = "BVLC Caffe 1.0 (commit 9b89154, packaged as brocolli-caffe 9.0.2), CPU, float32"
TOLERANCES = {
    "loss": {"rtol": 1e-05, "scale": "max(1, |expected|)"},
    "blob": {"rtol": 1e-05, "scale": "max(1, max|expected|)"},
    "grad": {"rtol": 1e-05, "scale": "largest |expected grad| among the layer's blobs"},
    "after": {"rtol": 0.0001, "scale": "max(largest |expected after - initial|, largest |expected after| / 100) among the layer's blobs"},
}

CASES = {
    "train_extra_adam_iter_size": {
        "description": "grouped conv + PReLU + padded AVE pool + IP + TanH + IP + SoftmaxWithLoss (BATCH_SIZE); Adam, iter_size 3, "
        "clip_gradients, L1 regularisation, multistep lr",
        "net": """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 4 dim: 9 dim: 9 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 6 kernel_size: 3 group: 2 stride: 2 pad: 1 } }
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 8 } }
layer { name: "tanh1" type: "TanH" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 } param { lr_mult: 0.5 decay_mult: 0 } inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" loss_param { normalization: BATCH_SIZE } }
""",
        "solver": {"type": "Adam", "base_lr": 0.01, "lr_policy": "multistep", "gamma": 0.5, "stepvalue": [1, 3], "momentum": 0.9,
                   "momentum2": 0.999, "delta": 1e-8, "weight_decay": 0.001, "regularization_type": "L1", "iter_size": 3, "clip_gradients": 0.5},
        "inputs": {"data": {"shape": [4, 4, 9, 9], "lo": -1.0, "hi": 1.0}, "label": {"shape": [4], "values": [0, 2, 1, 2]}},
        "iterations": 5,
    },
    "train_extra_frozen_bn_residual": {
        "description": "fine-tuning with frozen statistics: BatchNorm use_global_stats true in TRAIN + Scale, a residual Eltwise SUM "
        "(propagate_down false into the shortcut), Concat, a trainable Deconvolution, Crop, EuclideanLoss; Nesterov, poly lr",
        "net": """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 2 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }
  batch_norm_param { use_global_stats: true } }
layer { name: "scale1" type: "Scale" bottom: "bn1" top: "bn1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "bn1" top: "bn1" }
layer { name: "conv2" type: "Convolution" bottom: "bn1" top: "conv2" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "conv1" top: "sum" propagate_down: true propagate_down: false
  eltwise_param { operation: SUM coeff: 1 coeff: 0.5 } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "bn1" top: "cat" }
layer { name: "down" type: "Convolution" bottom: "cat" top: "down" convolution_param { num_output: 4 kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "down" top: "up" convolution_param { num_output: 2 kernel_size: 4 stride: 2 } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "target" top: "crop" crop_param { axis: 2 offset: 1 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "crop" bottom: "target" top: "loss" }
""",
        "solver": {"type": "Nesterov", "base_lr": 0.002, "lr_policy": "poly", "power": 1.5, "max_iter": 10, "momentum": 0.9,
                   "weight_decay": 0.0005, "regularization_type": "L2", "iter_size": 1},
        "inputs": {"data": {"shape": [2, 3, 8, 8], "lo": -1.0, "hi": 1.0}, "target": {"shape": [2, 2, 8, 8], "lo": -0.5, "hi": 0.5}},
        "iterations": 5,
    },
    "train_extra_rmsprop_shared_bn": {
        "description": "weights shared by param name where only the sharer sets lr_mult, BatchNorm in train mode on a 2-d blob (IP output), "
        "(no bias: before a BatchNorm its gradient is rounding noise, which RMSProp would scale up to full steps), "
        "Dropout ratio 0, spatial SoftmaxWithLoss with normalization FULL and ignore_label, SigmoidCrossEntropyLoss at 0.25; RMSProp, step lr",
        "net": """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 2 dim: 6 dim: 6 } } }
layer { name: "seg" type: "Input" top: "seg" input_param { shape { dim: 4 dim: 1 dim: 6 dim: 6 } } }
layer { name: "att" type: "Input" top: "att" input_param { shape { dim: 4 dim: 5 } } }
layer { name: "conv_a" type: "Convolution" bottom: "data" top: "conv_a" param { name: "w" } param { name: "b" }
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "relu_a" type: "ReLU" bottom: "conv_a" top: "conv_a" }
layer { name: "conv_b" type: "Convolution" bottom: "conv_a" top: "conv_b" param { name: "w2" } convolution_param { num_output: 3 kernel_size: 1 bias_term: false } }
layer { name: "conv_c" type: "Convolution" bottom: "conv_b" top: "conv_c" param { name: "w2" lr_mult: 3 } convolution_param { num_output: 3 kernel_size: 1 bias_term: false } }
layer { name: "drop" type: "Dropout" bottom: "conv_c" top: "conv_c" dropout_param { dropout_ratio: 0 } }
layer { name: "loss_seg" type: "SoftmaxWithLoss" bottom: "conv_c" bottom: "seg" top: "loss_seg"
  loss_param { ignore_label: 255 normalization: FULL } }
layer { name: "ip" type: "InnerProduct" bottom: "conv_a" top: "ip" inner_product_param { num_output: 5 bias_term: false } }
layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "ip" param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }
  batch_norm_param { moving_average_fraction: 0.8 } }
layer { name: "loss_att" type: "SigmoidCrossEntropyLoss" bottom: "ip" bottom: "att" top: "loss_att" loss_weight: 0.25 }
""",
        "solver": {"type": "RMSProp", "base_lr": 0.01, "lr_policy": "step", "gamma": 0.7, "stepsize": 2, "rms_decay": 0.95, "delta": 1e-6,
                   "weight_decay": 0.0002, "regularization_type": "L2", "iter_size": 1},
        "inputs": {"data": {"shape": [4, 2, 6, 6], "lo": -1.0, "hi": 1.0},
                   "seg": {"shape": [4, 1, 6, 6], "values": None},
                   "att": {"shape": [4, 5], "lo": 0.0, "hi": 2.0, "integer": True}},
        "iterations": 6,
    },
}


def _labels(shape: list[int], classes: int, seed: int, ignore_share: float = 0.2) -> list[float]:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, classes, int(np.prod(shape))).astype(float)
    values[rng.random(values.size) < ignore_share] = 255
    return values.tolist()


def _solver_text(settings: dict, net: str) -> str:
    lines = []
    for key, value in settings.items():
        for v in value if isinstance(value, list) else [value]:
            lines.append(f'{key}: "{v}"' if isinstance(v, str) else f"{key}: {v}")
    lines += ["display: 0", "snapshot: 0", "test_interval: 0", "solver_mode: CPU", "snapshot_after_train: false"]
    if "max_iter" not in settings:
        lines.append("max_iter: 100")
    return "\n".join([net, *lines]) + "\n"


def _blob_spec(layer_type: str, shape: tuple[int, ...], index: int) -> dict:
    if layer_type == "BatchNorm":
        return [{"shape": list(shape), "lo": -0.4, "hi": 0.4}, {"shape": list(shape), "lo": 1.0, "hi": 3.0}, {"shape": list(shape), "const": 2.0}][index]
    if layer_type == "Scale":
        return {"shape": list(shape), "lo": 0.75, "hi": 1.25} if index == 0 else {"shape": list(shape), "lo": -0.1, "hi": 0.1}
    if layer_type == "PReLU":
        return {"shape": list(shape), "lo": 0.1, "hi": 0.4}
    if index == 0 and len(shape) > 1:
        fan_in = int(np.prod(shape[1:]))
        bound = float(np.sqrt(6.0 / fan_in))
        return {"shape": list(shape), "lo": -bound, "hi": bound}
    return {"shape": list(shape), "lo": -0.1, "hi": 0.1}


def make(name: str, spec: dict, out: Path, caffe) -> None:  # noqa: ANN001
    work = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    net_text = f'name: "{name}"\n' + spec["net"].strip() + "\n"
    (work / "net.prototxt").write_text(net_text)
    inputs = json.loads(json.dumps(spec["inputs"]))
    for value in inputs.values():
        if "values" in value and value["values"] is None:
            value["values"] = _labels(value["shape"], 3, 7)
    probe = caffe.Net(str(work / "net.prototxt"), caffe.TRAIN)
    layer_types = {n: probe.layers[i].type for i, n in enumerate(probe._layer_names)}
    seen: set[str] = set()
    layers = []
    from proto2torch.prototxt.lower import load_prototxt

    ir = load_prototxt(work / "net.prototxt", phase="TRAIN")
    shared_owner: dict[str, str] = {}
    shared_blobs: dict[str, str] = {}
    for node in ir.nodes:
        if node.name not in probe.params:
            continue
        specs = node.msg.all("param")
        names = [s.get("name") if s.has("name") else None for s in specs]
        blobs = probe.params[node.name]
        owned = []
        for i, blob in enumerate(blobs):
            pname = names[i] if i < len(names) else None
            if pname and pname in seen:
                shared_blobs[f"{node.name}:{i}"] = shared_owner[pname]
                continue
            if pname:
                seen.add(pname)
                shared_owner[pname] = f"{node.name}:{i}"
            owned.append(_blob_spec(layer_types[node.name], tuple(blob.data.shape), i))
        if owned and len(owned) != len(blobs):
            raise SystemExit(f"{name}: layer {node.name} shares only some of its blobs; the recipe format cannot say that")
        if owned:
            layers.append({"name": node.name, "type": layer_types[node.name], "blobs": owned})
    recipe = {"net_name": name, "seed": 4321, "input_seed": 8765, "layers": layers, "inputs": inputs}
    weights = work / "init.caffemodel"
    write_caffemodel(weights, ((n, t, b) for n, t, b in recipe_layers(recipe)), net_name=name)
    feed = recipe_inputs(recipe)
    loss_tops = {}
    for node in ir.nodes:
        given = node.msg.all("loss_weight")
        from proto2torch.layers.registry import lookup

        if given:
            loss_tops.update({ir.values[v].blob: float(w) for v, w in zip(node.outputs, given) if w})
        elif lookup(node.type).loss:
            loss_tops[ir.values[node.outputs[0]].blob] = 1.0

    expected: dict[str, np.ndarray] = {f"input:{k}": v for k, v in feed.items()}
    grad_net = caffe.Net(str(work / "net.prototxt"), str(weights), caffe.TRAIN)
    for k, v in feed.items():
        grad_net.blobs[k].data[...] = v
    grad_net.forward()
    for blob in grad_net.blobs:
        if blob in feed or "_split_" in blob:
            continue
        expected[f"blob:{blob}"] = grad_net.blobs[blob].data.copy()
    grad_net.backward()
    frozen = []
    for layer in grad_net.params:
        for i, b in enumerate(grad_net.params[layer]):
            key = f"{layer}:{i}"
            if key in shared_blobs:
                continue
            expected[f"grad:{key}"] = b.diff.copy()
    (work / "solver_inline.prototxt").write_text(_solver_text(spec["solver"], "net_param {\n" + net_text + "}\n"))
    solver = caffe.get_solver(str(work / "solver_inline.prototxt"))
    solver.net.copy_from(str(weights))
    for k, v in feed.items():
        solver.net.blobs[k].data[...] = v
    initial = {layer: [b.data.copy() for b in solver.net.params[layer]] for layer in solver.net.params}
    for it in range(spec["iterations"]):
        solver.step(1)
        expected[f"loss:{it}"] = np.float32(sum(w * float(solver.net.blobs[t].data.sum()) for t, w in loss_tops.items()))
    for layer in solver.net.params:
        for i, b in enumerate(solver.net.params[layer]):
            key = f"{layer}:{i}"
            if key in shared_blobs:
                continue
            expected[f"after:{key}"] = b.data.copy()
            if np.array_equal(b.data, initial[layer][i]):
                frozen.append(key)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.prototxt").write_text(net_text)
    (folder / "solver.prototxt").write_text(_solver_text(spec["solver"], 'net: "net.prototxt"'))
    (folder / "recipe.json").write_text(json.dumps(recipe))
    np.savez(folder / "expected.npz", **expected)
    checked = {group: sorted(k for k in expected if k.startswith(group + ":")) for group in ("loss", "grad", "after", "blob")}
    checked["loss"] = [f"loss:{k}" for k in range(spec["iterations"])]
    meta = {
        "name": name, "description": spec["description"], "source": "written for this suite (tools/make_train_cases.py)", "oracle": ORACLE,
        "phase": "TRAIN", "kind": "train", "inputs": {k: list(v.shape) for k, v in feed.items()}, "iterations": spec["iterations"],
        "solver": spec["solver"], "loss_tops": loss_tops, "checked": checked, "tolerances": TOLERANCES, "shared_blobs": shared_blobs,
        "frozen_blobs": frozen, "weights_format": "v2", "layer_types": sorted(set(layer_types.values())),
        "params": int(sum(b.data.size for layer in grad_net.params for b in grad_net.params[layer])),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"{name}: {len(expected)} arrays, frozen {frozen}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="*")
    parser.add_argument("-o", "--output", default=str(ROOT / "tests" / "data" / "conformance"))
    args = parser.parse_args()
    import caffe

    caffe.set_mode_cpu()
    for name in args.names or CASES:
        make(name, CASES[name], Path(args.output), caffe)


if __name__ == "__main__":
    main()
