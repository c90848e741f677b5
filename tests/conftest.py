"""Shared test helpers: where the copied conformance cases and corpus live, and how to run a case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from proto2torch.api import load_net, with_weights
from proto2torch.backend.live import build_graph_module, run_blobs
from proto2torch.conformance import Case

DATA = Path(__file__).parent / "data"
CASES_DIR = DATA / "conformance"
CORPUS_DIR = DATA / "corpus" / "prototxt"
ALL_CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "meta.json").exists())
TRAIN_CASE_NAMES = [name for name in ALL_CASES if Case.load(CASES_DIR / name).is_training]
CASE_NAMES = [name for name in ALL_CASES if name not in TRAIN_CASE_NAMES]
"""Inference cases (layer_*, net_*, surgery_*); TRAIN_CASE_NAMES are the train_* cases."""

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS_DIR.rglob("*") if p.is_file())


def case_reference(case: Case) -> dict[str, np.ndarray]:
    """Expected blobs plus every net input as input:NAME."""
    return case.reference()


def case_support(case: Case) -> dict[str, np.ndarray]:
    """Extra Caffe values (ORACLE_EXTRA.md) for layer-local checks; not compared themselves."""
    extra_file = case.path / "oracle_extra.npz"
    if not extra_file.exists():
        return {}
    with np.load(extra_file) as data:
        return {k: data[k] for k in data.files if ":" not in k}


def live_runner(net):
    module = build_graph_module(net)

    def run(inputs):
        return run_blobs(module, **{k: torch.from_numpy(v) for k, v in inputs.items()})

    return run


def case_net(case: Case, tmp_path: Path):
    weights = case.write_caffemodel(tmp_path / f"{case.name}.caffemodel")
    inputs = case.inputs()
    net = load_net(case.prototxt, {k: v.shape for k, v in inputs.items()}, options=case.semantics)
    return with_weights(net, weights)


@pytest.fixture(params=CASE_NAMES)
def case(request) -> Case:
    return Case.load(CASES_DIR / request.param)


@pytest.fixture(params=TRAIN_CASE_NAMES)
def train_case(request) -> Case:
    return Case.load(CASES_DIR / request.param)
