"""Training as ``caffe train`` does it: iterations, snapshots, solver states, a record of the run.

:class:`Trainer` is one Caffe ``Solver::Step`` per :meth:`~Trainer.step`: ``iter_size``
forward/backward passes accumulating gradients, then :class:`CaffeSolver`'s update and the
lr policy's next rate.  :func:`train` runs a solver file end to end (the ``proto2torch train``
command).  Snapshots are named as Caffe names them (``<prefix>_iter_<N>.caffemodel`` and
``.solverstate``) and written under a temporary name first, so a crash leaves no half file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from ..caffemodel.reader import read_solverstate
from ..caffemodel.writer import atomic_open, write_caffemodel, write_solverstate
from ..errors import SolverError, WeightError
from ..progress import Progress
from ..resources import exists
from .net import TrainableNet, trainable
from .optim import HISTORY_SLOTS, CaffeLR, CaffeSolver
from .solver import SolverConfig, load_solver, load_train_net

log = logging.getLogger("proto2torch.train")


def make_solver(model: TrainableNet, config: SolverConfig) -> tuple[CaffeSolver, CaffeLR]:
    """The optimizer and lr schedule Caffe's solver ``config`` makes for ``model``."""
    groups = model.param_groups()
    if not groups:
        raise SolverError("every learned blob of the net is frozen (lr_mult 0): the solver has nothing to update")
    optimizer = CaffeSolver(groups, config)
    return optimizer, CaffeLR(optimizer, config)


@dataclass
class Record:
    """What a run records, under the keys of the conformance cases' ``expected.npz``."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        with atomic_open(path) as f:
            np.savez(f, **self.arrays)


class Trainer:
    """Caffe's solver loop over a :class:`TrainableNet`."""

    def __init__(self, model: TrainableNet, config: SolverConfig):
        self.model = model
        self.config = config
        self.optimizer, self.scheduler = make_solver(model, config)
        self.smoothed: list[float] = []
        self.world = distributed_world()
        self.forward: torch.nn.Module = model
        if self.world > 1:
            import inspect

            from torch.nn.parallel import DistributedDataParallel

            # each rank keeps BatchNorm statistics of its own share, as each of Caffe's GPUs does
            keep_local = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers"
            self.forward = DistributedDataParallel(model, **{keep_local: False})

    @property
    def iteration(self) -> int:
        return self.optimizer.iteration

    @property
    def rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, inputs: Mapping[str, torch.Tensor], record: Record | None = None) -> float:
        """One iteration; returns its loss (the mean over the ``iter_size`` passes)."""
        config = self.config
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(config.iter_size):
            last = k == config.iter_size - 1
            # with several ranks, gradients are averaged once, after the last accumulated pass
            sync = contextlib.nullcontext() if last or self.world == 1 else self.forward.no_sync()  # type: ignore[operator]
            with sync:
                output = self.forward(**inputs)
                if not torch.isfinite(output.loss):
                    raise SolverError(f"iteration {self.iteration}: the loss is {float(output.loss.detach())}")
                output.loss.backward()
            total += float(output.loss.detach())
            if record is not None and k == 0:
                self._record_grads(record)
        loss = total / config.iter_size
        if self.world > 1:
            mean = torch.tensor([loss], dtype=torch.float64)
            torch.distributed.all_reduce(mean)
            loss = float(mean) / self.world
        self.optimizer.step()
        self.scheduler.step()
        self.smoothed = (self.smoothed + [loss])[-config.average_loss :]
        return loss

    def _record_grads(self, record: Record) -> None:
        tensors = self.model.tensors()
        for blob in self.model.owners():
            tensor = tensors[blob.key]
            grad = tensor.grad if isinstance(tensor, torch.nn.Parameter) and tensor.grad is not None else torch.zeros_like(tensor)
            record.arrays[f"grad:{blob.layer}:{blob.index}"] = grad.detach().cpu().numpy().reshape(blob.shape).copy()

    def record_blobs(self, inputs: Mapping[str, torch.Tensor], record: Record) -> None:
        """Every blob of a forward pass at the current weights (BatchNorm's statistics left as they were)."""
        with preserved_buffers(self.model):
            blobs = all_blobs(self.model, inputs)
        for name, value in blobs.items():
            record.arrays[f"blob:{name}"] = value.detach().cpu().numpy().copy()

    def record_after(self, record: Record) -> None:
        blobs = self.model.caffe_blobs()
        for blob in self.model.owners():
            record.arrays[f"after:{blob.layer}:{blob.index}"] = blobs[blob.layer][blob.index]

    # --- solver states -------------------------------------------------------------------------
    def history(self) -> list[np.ndarray]:
        """Caffe's ``history_`` blobs: slot 1 for every learned blob in net order, then slot 2 (AdaDelta, Adam)."""
        tensors = self.model.tensors()
        in_optimizer = {id(p) for p in self.optimizer.parameters_in_order()}
        slots = HISTORY_SLOTS[self.config.type]
        out: list[np.ndarray] = []
        for slot in range(slots):
            for blob in self.model.owners():
                tensor = tensors[blob.key]
                if id(tensor) in in_optimizer and "history" in self.optimizer.state[tensor]:
                    value = self.optimizer.state[tensor]["history"][slot]
                    out.append(value.detach().cpu().numpy().reshape(blob.shape).copy())
                else:
                    out.append(np.zeros(blob.shape, np.float32))
        return out

    def restore(self, path: str | Path, weights_fallback: str | Path | None = None) -> None:
        """Continue from a Caffe ``.solverstate`` (and the caffemodel it names)."""
        state = read_solverstate(path)
        learned = _resolve_learned_net(state.learned_net, Path(path).parent)
        if learned is not None:
            from ..caffemodel.reader import load_caffemodel

            self.model.load_caffe_blobs(load_caffemodel(learned))
        elif weights_fallback is None:
            raise SolverError(f"{path}: the solver state names the weights {state.learned_net!r}, which do not exist; give --weights")
        owners = self.model.owners()
        slots = HISTORY_SLOTS[self.config.type]
        if len(state.history) != slots * len(owners):
            raise SolverError(
                f"{path}: the solver state has {len(state.history)} history blobs; this net has {len(owners)} learned blobs "
                f"and a {self.config.type} solver keeps {slots} per blob ({slots * len(owners)} in all)"
            )
        tensors = self.model.tensors()
        in_optimizer = {id(p) for p in self.optimizer.parameters_in_order()}
        for slot in range(slots):
            for i, blob in enumerate(owners):
                array = state.history[slot * len(owners) + i]
                if array.size != math.prod(blob.shape):
                    raise SolverError(
                        f"{path}: history blob {slot * len(owners) + i} has {array.size} values, "
                        f"but blob {blob.index} of layer '{blob.layer}' has shape {list(blob.shape)}"
                    )
                tensor = tensors[blob.key]
                if id(tensor) in in_optimizer:
                    history = self.optimizer.history(tensor)
                    history[slot].copy_(torch.from_numpy(np.ascontiguousarray(array, np.float32).reshape(tensor.shape)))
        self.optimizer.iteration = state.iteration
        self.scheduler.resume(state.iteration, state.current_step)

    def snapshot(self, directory: str | Path, prefix: str) -> tuple[Path, Path]:
        """``<prefix>_iter_<N>.caffemodel`` and ``.solverstate`` in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{prefix}_iter_{self.iteration}"
        model_path = directory / f"{stem}.caffemodel"
        state_path = directory / f"{stem}.solverstate"
        write_trained(self.model, model_path)
        write_solverstate(state_path, self.iteration, str(model_path), self.history(), self.scheduler.current_step)
        return model_path, state_path


def distributed_world() -> int:
    """Ranks of the torch.distributed group this process belongs to (1 when there is none)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank_share(inputs: Mapping[str, np.ndarray], rank: int, world: int) -> dict[str, np.ndarray]:
    """This rank's 1/world of every input batch (axis 0), as data-parallel training splits it."""
    out = {}
    for name, array in inputs.items():
        n = array.shape[0] if array.ndim else 0
        if n % world:
            raise SolverError(f"input '{name}' has a batch of {n}, which does not split over {world} ranks")
        share = n // world
        out[name] = array[rank * share : (rank + 1) * share]
    return out


def _resolve_learned_net(name: str, state_dir: Path) -> Path | None:
    if not name:
        return None
    for candidate in (Path(name), state_dir / Path(name).name):
        if exists(candidate) and candidate.is_file():
            return candidate
    return None


def write_trained(model: TrainableNet, path: str | Path) -> Path:
    """The net's learned blobs (BatchNorm's statistics included) as a caffemodel Caffe loads."""
    blobs = model.caffe_blobs()
    layers = [(node.name, node.type, blobs[node.name]) for node in model.ir.nodes if node.name in blobs]
    write_caffemodel(path, layers, net_name=model.ir.name)
    return Path(path)


@contextlib.contextmanager
def preserved_buffers(model: torch.nn.Module) -> Iterator[None]:
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])


def all_blobs(model: TrainableNet, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every blob of one forward pass by name, through whichever back end built the model."""
    if model.backend == "source":
        from ..backend.source import run_source_blobs

        return run_source_blobs(model.net, model.ir, inputs)
    from ..backend.live import run_blobs

    return run_blobs(model.net, **inputs)  # type: ignore[arg-type]


def snapshot_prefix(config: SolverConfig) -> str:
    """Caffe's snapshot file stem: ``snapshot_prefix``'s name, or the solver file's stem when it is empty or a folder."""
    prefix = config.snapshot_prefix
    return Path(config.source).stem if not prefix or prefix.endswith("/") else Path(prefix).name


def _input_tensors(model: TrainableNet, inputs: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    missing = [n for n in model.input_names if n not in inputs]
    if missing:
        raise SolverError(f"no data for the net input(s) {', '.join(missing)}: give them as input:NAME arrays (--inputs IN.npz)")
    shapes = {model.ir.values[v].blob: model.ir.values[v].shape for v in model.ir.inputs}
    out = {}
    for name in model.input_names:
        array = np.ascontiguousarray(inputs[name], np.float32)
        shape = shapes.get(name)
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise SolverError(f"input '{name}' has shape {list(array.shape)}, the net expects {list(shape)}")
        out[name] = torch.from_numpy(array)
    return out


def read_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """``input:NAME`` arrays of an ``.npz`` (other keys ignored)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k.removeprefix("input:"): data[k] for k in data.files if k.startswith("input:")}
    except (OSError, ValueError) as exc:
        raise WeightError(f"cannot read inputs {path}: {exc}") from None


@dataclass
class TrainResult:
    losses: list[float]
    record: Record
    snapshots: list[Path]
    model: TrainableNet


def train(
    solver_path: str | Path,
    weights: Any = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    iterations: int | None = None,
    record: bool = False,
    snapshot_dir: str | Path | None = None,
    resume: str | Path | None = None,
    backend: str = "live",
    options: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    workdir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Run a solver: load its TRAIN net with ``weights``, feed ``inputs`` (net input name →
    array, the same batch every iteration, as Caffe's Input layers keep their data), and step
    ``iterations`` times (default: the solver's ``max_iter``, counting from a resumed state).
    ``device`` places the net and its data (e.g. ``"cuda"``); snapshots and records are on the CPU."""
    from ..api import with_weights

    config = load_solver(solver_path)
    if config.random_seed >= 0:
        torch.manual_seed(config.random_seed)
    world = distributed_world()
    main_rank = world == 1 or torch.distributed.get_rank() == 0
    if world > 1 and inputs:
        inputs = rank_share(inputs, torch.distributed.get_rank(), world)
    shapes = {k: tuple(v.shape) for k, v in (inputs or {}).items()}
    net = load_train_net(config, inputs=shapes or None, options=options)
    from ..data.layers import NetFeed
    from ..ir.shapes import infer_shapes

    data = NetFeed(net, seed=config.random_seed if config.random_seed >= 0 else None)
    first: dict[str, np.ndarray] = {}
    if data:
        first = next(data)  # the data layers' batches: their shapes are the net's
        net = infer_shapes(net, {**shapes, **{k: v.shape for k, v in first.items()}})
    net = with_weights(net, weights)
    model = trainable(net, backend, workdir).to(device)
    trainer = Trainer(model, config)
    if resume is not None:
        trainer.restore(resume, weights)
    fixed = {**(inputs or {}), **first}
    feed = {k: v.to(device) for k, v in _input_tensors(model, fixed).items()}
    total = iterations if iterations is not None else config.max_iter - trainer.iteration
    if total < 0:
        raise SolverError(f"iterations must not be negative, got {total}")
    result = TrainResult([], Record(), [], model)
    stream = stream if stream is not None else sys.stderr
    for note in config.notes:
        log.info(note)
    if record:
        trainer.record_blobs(feed, result.record)
    prefix = snapshot_prefix(config)
    start = time.monotonic()
    with Progress("training", total, unit="it", stream=stream) as bar:
        for k in range(total):
            iteration = trainer.iteration
            rate = trainer.rate
            if data and k > 0:
                feed.update({name: torch.from_numpy(v).to(device) for name, v in next(data).items()})
            loss = trainer.step(feed, result.record if record and k == 0 else None)
            result.losses.append(loss)
            if record:
                result.record.arrays[f"loss:{k}"] = np.float32(loss)
            if main_rank and config.display and iteration % config.display == 0:
                smoothed = sum(trainer.smoothed) / len(trainer.smoothed)
                elapsed = time.monotonic() - start
                _say(stream, bar, f"Iteration {iteration} ({elapsed:.2f} s), loss = {smoothed:.6g}")
                _say(stream, bar, f"Iteration {iteration}, lr = {rate:.6g}")
            if main_rank and snapshot_dir is not None and config.snapshot and trainer.iteration % config.snapshot == 0 and k != total - 1:
                result.snapshots.extend(trainer.snapshot(snapshot_dir, prefix))
            bar.update(k + 1)
    if record:
        trainer.record_after(result.record)
    if main_rank and snapshot_dir is not None:
        result.snapshots.extend(trainer.snapshot(snapshot_dir, prefix))
    return result


def _say(stream: TextIO, bar: Progress, text: str) -> None:
    if bar.enabled:
        stream.write("\r\033[K")
    stream.write(text + "\n")
    stream.flush()
