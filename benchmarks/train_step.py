"""A training step: proto2torch's converted train net + Caffe's solver against the same net written
by hand in plain PyTorch (nn.Sequential, torch.optim.SGD), in one process.

    python benchmarks/train_step.py [--batch 32] [--repeat 20]

The net is a classifier of the train_sgd_bn case's shape (conv + BatchNorm in train mode + Scale +
ReLU + pool, conv + ReLU + pool, IP, SoftmaxWithLoss) on 3x32x32 inputs.  Printed: the median time of
one step (forward, backward, update) of each, and the ratio ours / hand-written.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import median_seconds, scratch
from torch import nn

CLASSIFIER = """
name: "bench_bn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: %(n)d dim: 3 dim: 32 dim: 32 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: %(n)d } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 64 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 10 weight_filler { type: "msra" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""
SOLVER = 'net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmomentum: 0.9\nweight_decay: 0.0005\n'


def hand_written() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32, momentum=0.1), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True), nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    from proto2torch.api import with_weights
    from proto2torch.train import Trainer, load_solver, load_train_net, trainable

    work = scratch("proto2torch-train-bench-")
    (work / "net.prototxt").write_text(CLASSIFIER % {"n": args.batch})
    (work / "solver.prototxt").write_text(SOLVER)
    config = load_solver(work / "solver.prototxt")
    model = trainable(with_weights(load_train_net(config), None))
    trainer = Trainer(model, config)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(args.batch, 3, 32, 32)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, args.batch).astype(np.float32))
    ours = median_seconds(lambda: trainer.step({"data": x, "label": y}), args.repeat, 3)

    plain = hand_written().train()
    sgd = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
    target = y.long()

    def plain_step() -> None:
        sgd.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(plain(x), target).backward()
        sgd.step()

    theirs = median_seconds(plain_step, args.repeat, 3)
    print(f"classifier, batch {args.batch}: proto2torch {ours * 1e3:.2f} ms, hand-written {theirs * 1e3:.2f} ms, ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
