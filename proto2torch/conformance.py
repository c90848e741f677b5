"""Conformance cases: nets that real Caffe ran, with weights given as a seeded recipe.

A case folder holds ``net.prototxt``, ``recipe.json`` (weights and inputs as a
deterministic recipe), ``expected.npz`` (Caffe's blob values) and ``meta.json``.
This module regenerates the recipe's weights and inputs bit-exactly: element ``i`` of
the uniform stream is ``(splitmix64(seed + (i + 1) * golden) >> 11) * 2**-53``, scaled
to [lo, hi) in float64 and rounded to float32; one counter runs across all blobs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .caffemodel.writer import write_caffemodel

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_CHUNK = 1 << 22


def uniform(seed: int, start: int, count: int) -> np.ndarray:
    """``count`` float64 values in [0, 1) from the stream, starting at element ``start``."""
    out = np.empty(count, np.float64)
    seed64 = np.uint64(seed & (2**64 - 1))
    with np.errstate(over="ignore"):
        for lo in range(0, count, _CHUNK):
            hi = min(lo + _CHUNK, count)
            z = np.arange(start + lo + 1, start + hi + 1, dtype=np.uint64)
            z *= _GOLDEN
            z += seed64
            z ^= z >> np.uint64(30)
            z *= _MIX1
            z ^= z >> np.uint64(27)
            z *= _MIX2
            z ^= z >> np.uint64(31)
            z >>= np.uint64(11)
            out[lo:hi] = z
    out *= 2.0**-53
    return out


def draw(spec: dict[str, Any], seed: int, start: int) -> np.ndarray:
    """One blob or input from its spec: uniform ``lo``/``hi`` (optionally floored), ``const`` or ``values``."""
    shape = tuple(int(d) for d in spec["shape"])
    n = int(np.prod(shape, dtype=np.int64))
    if "const" in spec:
        return np.full(shape, spec["const"], dtype=np.float32)
    if "values" in spec:
        return np.asarray(spec["values"], dtype=np.float32).reshape(shape)
    values = uniform(seed, start, n)
    values *= spec["hi"] - spec["lo"]
    values += spec["lo"]
    if spec.get("integer"):
        np.floor(values, out=values)
    return values.astype(np.float32).reshape(shape)


def recipe_layers(recipe: dict[str, Any]) -> Iterator[tuple[str, str, list[np.ndarray]]]:
    """(layer name, layer type, blobs) in recipe order; the stream offset runs on across blobs."""
    seed, offset = recipe["seed"], 0
    for layer in recipe["layers"]:
        arrays = []
        for spec in layer["blobs"]:
            arrays.append(draw(spec, seed, offset))
            offset += int(np.prod(spec["shape"], dtype=np.int64))
        yield layer["name"], layer["type"], arrays


def recipe_inputs(recipe: dict[str, Any]) -> dict[str, np.ndarray]:
    """The net inputs, each from its own stream seeded ``input_seed + position``."""
    return {name: draw(spec, recipe["input_seed"] + i, 0) for i, (name, spec) in enumerate(recipe["inputs"].items())}


@dataclass
class Case:
    """One conformance case folder."""

    path: Path
    meta: dict[str, Any]
    recipe: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Case:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        recipe = json.loads((path / "recipe.json").read_text())
        return cls(path, meta, recipe)

    @property
    def name(self) -> str:
        return self.meta.get("name", self.path.name)

    @property
    def prototxt(self) -> Path:
        return self.path / "net.prototxt"

    @property
    def is_training(self) -> bool:
        """A training case (solver + net + weights + inputs, with Caffe's losses, gradients and updated blobs)."""
        return self.meta.get("kind") == "train"

    @property
    def solver(self) -> Path:
        return self.path / "solver.prototxt"

    @property
    def v1(self) -> bool:
        return self.meta.get("weights_format") == "v1"

    @property
    def semantics(self) -> dict[str, str]:
        """Fork semantics the oracle build follows where proto2torch's default differs (``--semantics``)."""
        return dict(self.meta.get("semantics", {}))

    @property
    def rtol(self) -> float:
        return float(self.meta.get("rtol", 1e-4))

    def expected(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "expected.npz") as data:
            return {k: data[k] for k in data.files}

    def inputs(self) -> dict[str, np.ndarray]:
        return recipe_inputs(self.recipe)

    def write_caffemodel(self, path: str | Path) -> Path:
        write_caffemodel(path, recipe_layers(self.recipe), net_name=self.recipe.get("net_name", "net"), v1=self.v1)
        return Path(path)

    def reference(self) -> dict[str, np.ndarray]:
        """Expected blobs plus every net input as ``input:NAME``: the recipe's inputs, and for
        inputs the recipe does not feed (DummyData tops) the values Caffe's run gave them."""
        from .prototxt.lower import load_prototxt

        arrays = {k: v for k, v in self.expected().items() if not k.startswith("input:")}
        inputs = self.inputs()
        arrays.update({f"input:{k}": v for k, v in inputs.items()})
        net = load_prototxt(self.prototxt, inputs={k: v.shape for k, v in inputs.items()}, options=self.semantics)
        for blob in (net.values[v].blob for v in net.inputs):
            if f"input:{blob}" not in arrays and blob in arrays:
                arrays[f"input:{blob}"] = arrays[blob]
        return arrays

    def write_reference(self, path: str | Path) -> Path:
        """:meth:`reference` as a ready ``--reference`` file."""
        np.savez(path, **self.reference())
        return Path(path)


@dataclass(frozen=True)
class KeyResult:
    """One key of a training case, judged by the case's criterion for its group."""

    key: str
    group: str
    error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict} {self.key}: error {self.error:.3g}, tolerance {self.tolerance:.3g}"


def judge_training(case: Case, record: dict[str, np.ndarray]) -> list[KeyResult]:
    """Every checked key of a training case against ``record`` (the keys of ``proto2torch train --record``),
    with the criteria of the conformance README: loss and blob relative to max(1, |expected|); a
    gradient relative to its layer's largest expected gradient (exactly zero where that is zero); an
    updated blob relative to its layer's largest change or 1% of its largest value (a layer Caffe did
    not move must keep exactly its initial values)."""
    expected = case.expected()
    tolerances = {group: float(spec["rtol"]) for group, spec in case.meta["tolerances"].items()}
    initial = {name: blobs for name, _, blobs in recipe_layers(case.recipe)}
    checked: dict[str, list[str]] = case.meta["checked"]
    out = []

    def by_layer(group: str) -> dict[str, list[str]]:
        layers: dict[str, list[str]] = {}
        for key in checked.get(group, []):
            layers.setdefault(key.split(":")[1], []).append(key)
        return layers

    grad_layers, after_layers = by_layer("grad"), by_layer("after")
    for group, keys in checked.items():
        rtol = tolerances[group]
        for key in keys:
            want = expected[key].astype(np.float64)
            if key not in record:
                out.append(KeyResult(key, group, math.inf, 0.0))
                continue
            got = np.asarray(record[key], np.float64)
            if got.size != want.size:
                out.append(KeyResult(key, group, math.inf, 0.0))
                continue
            error = float(np.abs(got.reshape(want.shape) - want).max()) if want.size else 0.0
            if group in ("loss", "blob"):
                scale = max(1.0, float(np.abs(want).max()) if want.size else 0.0)
            elif group == "grad":
                scale = max(float(np.abs(expected[k]).max()) for k in grad_layers[key.split(":")[1]])
            else:
                layer = key.split(":")[1]
                changes = [_change(expected[k], initial[layer][int(k.split(":")[2])]) for k in after_layers[layer]]
                largest = max(float(np.abs(expected[k]).max()) for k in after_layers[layer])
                scale = max(max(changes), largest / 100) if max(changes) > 0 else 0.0
            out.append(KeyResult(key, group, error, rtol * scale))
    return out


def _change(after: np.ndarray, before: np.ndarray) -> float:
    return float(np.abs(after.astype(np.float64) - before.reshape(after.shape).astype(np.float64)).max())
