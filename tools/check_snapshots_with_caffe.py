#!/usr/bin/env python3
"""Snapshots both ways with real Caffe, on training conformance cases.

usage: PYTHONPATH=/tmp/caffe-oracle/src/python python tools/check_snapshots_with_caffe.py [CASE ...] [--write]

For each case (its net handed to Caffe's solver inline, as the cases were made):
1. Caffe trains ``K`` iterations and snapshots; ``--write`` keeps that caffemodel + solverstate in
   ``tests/data/caffe_snapshots/<case>/`` for the test that resumes from them without Caffe.
2. proto2torch trains ``K`` iterations and snapshots; Caffe loads that caffemodel into a TEST-phase
   net (its forward is compared with the trained module's) and restores the solverstate into its
   solver, which continues to the end: the result is compared with the case's expected blobs.
Prints one line per check; exits 1 when one fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")

from proto2torch.conformance import Case, judge_training  # noqa: E402

CASES = ["train_solver_adam", "train_solver_nesterov", "train_sgd_bn", "train_fcn", "train_extra_adam_iter_size"]
K = 3


def inline_solver(case: Case, work: Path, prefix: str) -> Path:
    lines = [line for line in case.solver.read_text().splitlines() if not line.startswith("net:")]
    lines = [line for line in lines if not line.startswith(("snapshot_prefix", "snapshot:"))]
    text = "\n".join(lines) + f'\nsnapshot_prefix: "{work / prefix}"\nnet_param {{\n{case.prototxt.read_text()}\n}}\n'
    path = work / f"{prefix}_solver.prototxt"
    path.write_text(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", nargs="*")
    parser.add_argument("--write", action="store_true", help="keep Caffe's iteration-K snapshots as test data")
    args = parser.parse_args()
    import caffe
    import torch

    from proto2torch.train import train
    from proto2torch.train.loop import all_blobs

    caffe.set_mode_cpu()
    ok = True
    for name in args.cases or CASES:
        case = Case.load(ROOT / "tests" / "data" / "conformance" / name)
        work = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        weights = case.write_caffemodel(work / "init.caffemodel")
        inputs = case.inputs()
        total = case.meta["iterations"]

        # 1. Caffe's own snapshot at K
        solver = caffe.get_solver(str(inline_solver(case, work, "caffe")))
        solver.net.copy_from(str(weights))
        for k, v in inputs.items():
            solver.net.blobs[k].data[...] = v
        solver.step(K)
        solver.snapshot()
        if args.write:
            keep = ROOT / "tests" / "data" / "caffe_snapshots" / name
            keep.mkdir(parents=True, exist_ok=True)
            for suffix in (".caffemodel", ".solverstate"):
                shutil.copy(work / f"caffe_iter_{K}{suffix}", keep / f"caffe_iter_{K}{suffix}")

        # 2. our snapshot at K, into Caffe
        ours = train(case.solver, weights, inputs, iterations=K, snapshot_dir=work / "ours")
        model_file, state_file = ours.snapshots
        test_net = caffe.Net(str(case.prototxt), str(model_file), caffe.TEST)
        for k, v in inputs.items():
            test_net.blobs[k].data[...] = v
        test_net.forward()
        module = ours.model.eval()
        with torch.no_grad():
            blobs = all_blobs(module, {k: torch.from_numpy(v) for k, v in inputs.items()})
        worst = 0.0
        for blob, value in blobs.items():
            if blob in test_net.blobs and blob not in inputs:
                want = test_net.blobs[blob].data
                err = float(np.abs(value.numpy().reshape(want.shape) - want).max()) / max(1.0, float(np.abs(want).max()))
                worst = max(worst, err)
        good = worst <= 1e-5
        ok &= good
        print(f"{name}: our iteration-{K} caffemodel in Caffe's TEST net: worst relative blob error {worst:.2e} {'PASS' if good else 'FAIL'}")

        resumed = caffe.get_solver(str(inline_solver(case, work, "resumed")))
        for k, v in inputs.items():
            resumed.net.blobs[k].data[...] = v
        resumed.restore(str(state_file))
        resumed.step(total - K)
        record = {f"after:{layer}:{i}": b.data.copy() for layer in resumed.net.params for i, b in enumerate(resumed.net.params[layer])}
        results = [r for r in judge_training(case, record) if r.group == "after"]
        good = all(r.passed for r in results) and resumed.iter == total
        ok &= good
        worst = max(r.error / r.tolerance if r.tolerance else float(r.error > 0) for r in results)
        print(f"{name}: Caffe resumed from our iteration-{K} solverstate to {resumed.iter}: worst after/tolerance {worst:.3f} {'PASS' if good else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
