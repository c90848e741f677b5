"""Fine-tuning as Caffe trains: solver files, Caffe's update rules, train-mode nets, snapshots.

::

    model = proto2torch.train.trainable(net)                       # TRAIN-phase net with weights
    optimizer, scheduler = proto2torch.solver(model, "solver.prototxt")
    for batch in batches:
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step(); scheduler.step()
"""

from __future__ import annotations

from pathlib import Path

from .loop import Record, Trainer, TrainResult, make_solver, train, write_trained
from .net import LearnedBlob, TrainableNet, TrainOutput, loss_weights, trainable
from .optim import CaffeLR, CaffeSolver
from .solver import SolverConfig, load_solver, load_train_net, solver_from_text


def solver(model: TrainableNet, config: SolverConfig | str | Path) -> tuple[CaffeSolver, CaffeLR]:
    """The optimizer and lr schedule that ``config`` (a solver file or a :class:`SolverConfig`) makes for ``model``."""
    if not isinstance(config, SolverConfig):
        config = load_solver(config)
    return make_solver(model, config)


__all__ = [
    "CaffeLR",
    "CaffeSolver",
    "LearnedBlob",
    "Record",
    "SolverConfig",
    "TrainOutput",
    "TrainResult",
    "TrainableNet",
    "Trainer",
    "load_solver",
    "load_train_net",
    "loss_weights",
    "make_solver",
    "solver",
    "solver_from_text",
    "train",
    "trainable",
    "write_trained",
]
