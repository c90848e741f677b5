"""``solver.prototxt``: Caffe's SolverParameter read into a typed, checked record.

Everything Caffe's ``Solver`` constructor and ``GetLearningRate`` would refuse is refused
here, before any training starts, with the file position of the field: an unknown field
or solver type, both ``solver_type`` (the legacy enum) and ``type``, zero or several train
nets, an lr policy without the parameters it uses, momentum given to AdaGrad or RMSProp.
The legacy enum is upgraded as Caffe's ``UpgradeSolverType`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SolverError, SourceSpan, guarded
from ..prototxt.message import Msg, Template
from ..prototxt.schema import bind, define
from ..prototxt.textformat import parse_text
from ..resources import exists

define("""
enum SnapshotFormat HDF5=0 BINARYPROTO=1
enum SolverMode CPU=0 GPU=1
enum SolverType SGD=0 NESTEROV=1 ADAGRAD=2 RMSPROP=3 ADADELTA=4 ADAM=5

message SolverParameter
  net                24  string
  net_param          25  NetParameter
  train_net           1  string
  test_net            2  string*
  train_net_param    21  NetParameter
  test_net_param     22  NetParameter*
  train_state        26  NetState
  test_state         27  NetState*
  eval_type          41  string  = "classification"
  ap_version         42  string  = "Integral"
  test_iter           3  int64*
  test_interval       4  int64   = 0
  test_compute_loss  19  bool    = false
  test_initialization 32 bool    = true
  base_lr             5  float
  display             6  int64   = 0
  average_loss       33  int64   = 1
  max_iter            7  int64
  iter_size          36  int64   = 1
  lr_policy           8  string
  gamma               9  float
  power              10  float
  momentum           11  float   = 0
  weight_decay       12  float   = 0
  regularization_type 29 string  = "L2"
  stepsize           13  int64
  stepvalue          34  int64*
  clip_gradients     35  float   = -1
  snapshot           14  int64   = 0
  snapshot_prefix    15  string
  snapshot_diff      16  bool    = false
  snapshot_format    37  SnapshotFormat = BINARYPROTO
  solver_mode        17  SolverMode = GPU
  device_id          18  int64   = 0
  random_seed        20  int64   = -1
  type               40  string  = "SGD"
  delta              31  float   = 1e-8
  momentum2          39  float   = 0.999
  rms_decay          38  float   = 0.99
  debug_info         23  bool    = false
  snapshot_after_train 28 bool   = true
  solver_type        30  SolverType = SGD
  layer_wise_reduce   -  bool    = true
  weights             -  string*

message SolverState
  iter                1  int64
  learned_net         2  string
  history             3  BlobProto*
  current_step        4  int64   = 0
""")

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
_LEGACY_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}
LR_POLICIES = {
    "fixed": (),
    "step": ("gamma", "stepsize"),
    "exp": ("gamma",),
    "inv": ("gamma", "power"),
    "multistep": ("gamma", "stepvalue"),
    "poly": ("power", "max_iter"),
    "sigmoid": ("gamma", "stepsize"),
}
_NET_FIELDS = ("train_net_param", "train_net", "net_param", "net")
_MAX_MESSAGE = 64 * 2**20


@dataclass(frozen=True)
class SolverConfig:
    """What Caffe's solver does with a net, from ``solver.prototxt`` (names as in SolverParameter)."""

    type: str = "SGD"
    base_lr: float = 0.01
    lr_policy: str = "fixed"
    gamma: float | None = None
    power: float | None = None
    stepsize: int | None = None
    stepvalue: tuple[int, ...] = ()
    max_iter: int = 0
    momentum: float = 0.0
    momentum2: float = 0.999
    delta: float = 1e-8
    rms_decay: float = 0.99
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    clip_gradients: float = -1.0
    iter_size: int = 1
    display: int = 0
    average_loss: int = 1
    snapshot: int = 0
    snapshot_prefix: str = ""
    snapshot_after_train: bool = True
    random_seed: int = -1
    net_file: Path | None = None
    """The train net's prototxt (``net`` or ``train_net``), resolved against the solver's folder."""
    net_msg: Msg | None = field(default=None, compare=False)
    """An inline train net (``net_param`` or ``train_net_param``)."""
    train_level: int | None = None
    train_stages: tuple[str, ...] | None = None
    source: str = "<solver>"
    notes: tuple[str, ...] = ()
    """What the solver asks for that training here does not do (test nets, …), for the log."""

    def learning_rate(self, iteration: int, current_step: int = 0) -> float:
        """Caffe's ``GetLearningRate`` at ``iteration`` (``current_step``: multistep's counter)."""
        policy, base = self.lr_policy, self.base_lr
        if policy == "fixed":
            return base
        if policy == "step":
            return base * self.gamma ** (iteration // self.stepsize)  # type: ignore[operator]
        if policy == "exp":
            return base * self.gamma**iteration  # type: ignore[operator]
        if policy == "inv":
            return base * (1.0 + self.gamma * iteration) ** (-self.power)  # type: ignore[operator]
        if policy == "multistep":
            return base * self.gamma**current_step  # type: ignore[operator]
        if policy == "poly":
            return base * (1.0 - iteration / self.max_iter) ** self.power  # type: ignore[operator]
        if policy == "sigmoid":
            return base * (1.0 / (1.0 + math.exp(-self.gamma * (iteration - self.stepsize))))  # type: ignore[operator]
        raise SolverError(f"unknown lr_policy {policy!r}")

    def advance_step(self, iteration: int, current_step: int) -> int:
        """multistep's counter before the rate of ``iteration`` is taken: Caffe moves it by at most one a call."""
        if self.lr_policy == "multistep" and current_step < len(self.stepvalue) and iteration >= self.stepvalue[current_step]:
            return current_step + 1
        return current_step


@guarded("reading the solver")
def load_solver(path: str | Path) -> SolverConfig:
    """Read and check a ``solver.prototxt``."""
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_MESSAGE:
            raise SolverError(f"{path}: a solver file of {path.stat().st_size} bytes is beyond the 64 MiB limit")
        data = path.read_bytes()
    except OSError as exc:
        raise SolverError(f"cannot read solver {path}: {exc.strerror}") from None
    return solver_from_text(data, str(path), base_dir=path.parent)


@guarded("reading the solver")
def solver_from_text(text: str | bytes, filename: str = "<solver>", base_dir: str | Path | None = None) -> SolverConfig:
    from ..layers.registry import registered

    registered()  # fork layer messages, for an inline net_param
    msg = parse_text(text, filename)
    bind(msg, "SolverParameter", None)
    return _config(msg, filename, Path(base_dir) if base_dir is not None else None)


def _f32(value: Any) -> float:
    """A float field as Caffe holds it (protobuf ``float``: single precision)."""
    return float(np.float32(value))


def _config(msg: Msg, filename: str, base_dir: Path | None) -> SolverConfig:
    fields = _known_fields()
    for i, (name, value, _, _) in enumerate(msg.entries):
        if name not in fields:
            raise SolverError(f"unknown field '{name}' in SolverParameter", msg.entry_span(i))
        if isinstance(value, Template):  # a net file may keep a placeholder; a solver has no use for one
            raise SolverError(f"field '{name}' takes a {fields[name].type}, not {str(value)!r}", msg.entry_span(i))

    def span(name: str) -> SourceSpan | None:
        return msg.span(name)

    solver_type = str(msg.get("type"))
    if msg.has("solver_type"):
        if msg.has("type"):
            raise SolverError("the legacy solver_type (an enum) and type (a string) cannot both be given", span("solver_type"))
        solver_type = _LEGACY_TYPES[str(msg.get("solver_type"))]
    if solver_type not in SOLVER_TYPES:
        raise SolverError(f"unknown solver type {solver_type!r}; Caffe's are {', '.join(SOLVER_TYPES)}", span("type"))

    given = sorted((f for f in _NET_FIELDS if msg.has(f)), key=lambda f: next(i for i, e in enumerate(msg.entries) if e[0] == f))
    if not given:
        raise SolverError(f"the solver names no train net: give one of {', '.join(_NET_FIELDS)}", msg.span())
    if len(given) > 1:
        raise SolverError(f"the solver names more than one train net ({', '.join(given)}); give exactly one", span(given[1]))
    net_file: Path | None = None
    net_msg: Msg | None = None
    if given[0] in ("net", "train_net"):
        net_file = _resolve(str(msg.get(given[0])), base_dir, span(given[0]))
    else:
        net_msg = msg.get(given[0])

    if not msg.has("base_lr"):
        raise SolverError("base_lr is missing", msg.span())
    policy = str(msg.get("lr_policy")) if msg.has("lr_policy") else None
    if policy is None:
        raise SolverError(f"lr_policy is missing; Caffe's are {', '.join(LR_POLICIES)}", msg.span())
    if policy not in LR_POLICIES:
        raise SolverError(f"unknown lr_policy {policy!r}; Caffe's are {', '.join(LR_POLICIES)}", span("lr_policy"))
    for needed in LR_POLICIES[policy]:
        if not msg.has(needed):
            raise SolverError(f"lr_policy {policy!r} needs {needed}, which is missing", span("lr_policy"))
    if policy in ("step", "sigmoid") and int(msg.get("stepsize")) <= 0:
        raise SolverError(f"stepsize must be positive for lr_policy {policy!r}", span("stepsize"))
    if policy == "poly" and int(msg.get("max_iter")) <= 0:
        raise SolverError("max_iter must be positive for lr_policy 'poly'", span("max_iter"))
    steps = tuple(int(v) for v in msg.all("stepvalue"))

    regularization = str(msg.get("regularization_type"))
    if regularization not in ("L1", "L2"):
        raise SolverError(f"unknown regularization_type {regularization!r}; Caffe's are L1 and L2", span("regularization_type"))
    momentum = _f32(msg.get("momentum"))
    if solver_type in ("AdaGrad", "RMSProp") and momentum != 0:
        raise SolverError(f"momentum cannot be used with {solver_type} (Caffe refuses it)", span("momentum"))
    iter_size = int(msg.get("iter_size"))
    if iter_size < 1:
        raise SolverError(f"iter_size must be at least 1, got {iter_size}", span("iter_size"))
    if str(msg.get("snapshot_format")) == "HDF5":
        raise SolverError("snapshot_format HDF5 is not supported; snapshots are written as BINARYPROTO", span("snapshot_format"))
    if msg.get("snapshot_diff"):
        raise SolverError("snapshot_diff is not supported (snapshots carry the weights, not their gradients)", span("snapshot_diff"))
    for name in ("average_loss", "display", "snapshot", "max_iter"):
        if msg.has(name) and int(msg.get(name)) < 0:
            raise SolverError(f"{name} must not be negative", span(name))

    level: int | None = None
    stages: tuple[str, ...] | None = None
    if msg.has("train_state"):
        state = msg.sub("train_state")
        if state.has("phase") and str(state.get("phase")) != "TRAIN":
            raise SolverError("train_state.phase must be TRAIN (Caffe sets it)", state.span("phase"))
        level = int(state.get("level"))
        stages = tuple(state.all("stage"))
    notes = []
    if msg.has("test_net") or msg.has("test_net_param") or msg.all("test_iter"):
        notes.append("test nets and test_iter are not run by proto2torch train")
    return SolverConfig(
        type=solver_type,
        base_lr=_f32(msg.get("base_lr")),
        lr_policy=policy,
        gamma=_f32(msg.get("gamma")) if msg.has("gamma") else None,
        power=_f32(msg.get("power")) if msg.has("power") else None,
        stepsize=int(msg.get("stepsize")) if msg.has("stepsize") else None,
        stepvalue=steps,
        max_iter=int(msg.get("max_iter")) if msg.has("max_iter") else 0,
        momentum=momentum,
        momentum2=_f32(msg.get("momentum2")),
        delta=_f32(msg.get("delta")),
        rms_decay=_f32(msg.get("rms_decay")),
        weight_decay=_f32(msg.get("weight_decay")),
        regularization_type=regularization,
        clip_gradients=_f32(msg.get("clip_gradients")),
        iter_size=iter_size,
        display=int(msg.get("display")),
        average_loss=max(1, int(msg.get("average_loss"))),
        snapshot=int(msg.get("snapshot")),
        snapshot_prefix=str(msg.get("snapshot_prefix") or ""),
        snapshot_after_train=bool(msg.get("snapshot_after_train")),
        random_seed=int(msg.get("random_seed")),
        net_file=net_file,
        net_msg=net_msg,
        train_level=level,
        train_stages=stages,
        source=filename,
        notes=tuple(notes),
    )


def _known_fields() -> dict[str, Any]:
    from ..prototxt.schema import MESSAGES

    return MESSAGES["SolverParameter"].fields


def _resolve(name: str, base_dir: Path | None, where: SourceSpan | None) -> Path:
    """The net file: beside the solver first, then (as Caffe itself does) from the working folder."""
    candidates = [base_dir / name] if base_dir is not None and not Path(name).is_absolute() else []
    candidates.append(Path(name))
    for candidate in candidates:
        if exists(candidate) and candidate.is_file():
            return candidate
    tried = " or ".join(str(c) for c in candidates)
    raise SolverError(f"the train net {name!r} does not exist (looked for {tried})", where)


def load_train_net(config: SolverConfig, inputs: Any = None, options: Any = None):  # noqa: ANN201
    """The solver's train net in the TRAIN phase, with its train_state's level and stages."""
    from ..prototxt.lower import load_prototxt, net_from_msg

    if config.net_file is not None:
        return load_prototxt(config.net_file, phase="TRAIN", level=config.train_level, stages=config.train_stages, inputs=inputs, options=options)
    assert config.net_msg is not None
    return net_from_msg(config.net_msg.copy(), config.source, phase="TRAIN", level=config.train_level, stages=config.train_stages, inputs=inputs, options=options)
