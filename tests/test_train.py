"""Training must do what real Caffe's solver did: every train_* case (made with BVLC Caffe) through
the Python API and the CLI, both back ends; snapshots, solver states and resuming; two gloo ranks."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from proto2torch.caffemodel.reader import load_caffemodel, read_solverstate
from proto2torch.cli import main
from proto2torch.conformance import Case, judge_training
from proto2torch.errors import LayerParamError, SolverError, WeightError
from proto2torch.train import load_solver, solver_from_text, train, trainable
from proto2torch.train.loop import Trainer, read_inputs

from .conftest import CASES_DIR

ROOT = Path(__file__).resolve().parent.parent


def _run(case: Case, tmp_path: Path, backend: str = "live", **kwargs):
    weights = case.write_caffemodel(tmp_path / "init.caffemodel")
    return train(case.solver, weights, case.inputs(), iterations=case.meta["iterations"], record=True, backend=backend, workdir=tmp_path, **kwargs)


def _assert_passes(case: Case, record: dict[str, np.ndarray]) -> None:
    results = judge_training(case, record)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert len(results) == sum(len(keys) for keys in case.meta["checked"].values())


@pytest.mark.parametrize("backend", ["live", "source"])
def test_training_matches_caffe(train_case: Case, backend: str, tmp_path) -> None:
    result = _run(train_case, tmp_path, backend)
    _assert_passes(train_case, result.record.arrays)


@pytest.mark.parametrize("name", ["train_iter_size_clip", "train_shared", "train_solver_adadelta"])
def test_cli_train_records_caffes_numbers(name: str, tmp_path, capsys) -> None:
    case = Case.load(CASES_DIR / name)
    assert main(["case", str(case.path), "-o", str(tmp_path)]) == 0
    record = tmp_path / "record.npz"
    argv = ["train", str(case.solver), "--weights", str(tmp_path / "weights.caffemodel"), "--inputs", str(tmp_path / "inputs.npz")]
    argv += ["--iterations", str(case.meta["iterations"]), "--record", str(record)]
    assert main(argv) == 0, capsys.readouterr().err
    with np.load(record) as data:
        _assert_passes(case, {k: data[k] for k in data.files})


def test_torch_sgd_is_not_caffe_sgd(tmp_path) -> None:
    """The reason for CaffeSolver: torch.optim.SGD applies the rate after the momentum, so a step in
    the lr schedule makes it part from Caffe (this case's rate halves at iterations 2 and 4)."""
    case = Case.load(CASES_DIR / "train_sgd_bn")
    config = load_solver(case.solver)
    from proto2torch.api import with_weights
    from proto2torch.train import load_train_net

    net = with_weights(load_train_net(config), case.write_caffemodel(tmp_path / "w.caffemodel"))
    model = trainable(net)
    groups = [{**g, "lr": config.base_lr * g["lr_mult"]} for g in model.param_groups()]
    sgd = torch.optim.SGD(groups, lr=config.base_lr, momentum=config.momentum)
    inputs = {k: torch.from_numpy(v) for k, v in case.inputs().items()}
    for k in range(case.meta["iterations"]):
        for g in sgd.param_groups:
            g["lr"] = config.learning_rate(k) * g["lr_mult"]
        sgd.zero_grad()
        model(**inputs).loss.backward()
        for p in sgd.param_groups[0]["params"]:  # Caffe's weight decay with decay_mult 1 on the weights
            p.grad.add_(p.detach(), alpha=config.weight_decay)
        sgd.step()
    record = {f"after:{b.layer}:{b.index}": a for b in model.owners() for a in [model.caffe_blobs()[b.layer][b.index]]}
    after = [r for r in judge_training(case, record) if r.group == "after"]
    assert not all(r.passed for r in after)


# --- solver files -------------------------------------------------------------------------------

SOLVER = 'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "{policy}"\n{extra}'


def _config(tmp_path: Path, policy: str = "fixed", extra: str = ""):
    (tmp_path / "net.prototxt").write_text((CASES_DIR / "train_solver_adam" / "net.prototxt").read_text())
    return solver_from_text(SOLVER.format(policy=policy, extra=extra), "solver.prototxt", tmp_path)


@pytest.mark.parametrize(
    ("policy", "extra", "iteration", "expected"),
    [
        ("fixed", "", 7, 0.1),
        ("step", "gamma: 0.5\nstepsize: 3", 7, 0.1 * 0.5**2),
        ("exp", "gamma: 0.9", 4, 0.1 * 0.9**4),
        ("inv", "gamma: 0.1\npower: 0.75", 4, 0.1 * (1 + 0.1 * 4) ** -0.75),
        ("poly", "power: 2\nmax_iter: 10", 4, 0.1 * (1 - 0.4) ** 2),
        ("sigmoid", "gamma: -0.5\nstepsize: 3", 5, 0.1 / (1 + math.exp(0.5 * 2))),
    ],
)
def test_lr_policies(tmp_path, policy: str, extra: str, iteration: int, expected: float) -> None:
    config = _config(tmp_path, policy, extra)
    assert config.learning_rate(iteration) == pytest.approx(expected, rel=1e-6)


def test_multistep_moves_one_step_per_iteration_as_caffe(tmp_path) -> None:
    config = _config(tmp_path, "multistep", "gamma: 0.1\nstepvalue: 2\nstepvalue: 2\nstepvalue: 5")
    step, rates = 0, []
    for it in range(7):
        step = config.advance_step(it, step)
        rates.append(config.learning_rate(it, step))
    # at iteration 2 Caffe passes the first stepvalue only; the repeated one at iteration 3
    assert rates == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001, 0.0001, 0.0001], rel=1e-5)


def test_legacy_solver_type_is_upgraded(tmp_path) -> None:
    assert _config(tmp_path, extra="solver_type: NESTEROV\nmomentum: 0.9").type == "Nesterov"


def test_net_is_found_beside_the_solver(tmp_path) -> None:
    config = _config(tmp_path)
    assert config.net_file == tmp_path / "net.prototxt"


@pytest.mark.parametrize(
    ("extra", "policy", "message", "line"),
    [
        ("momentun: 0.9", "fixed", "unknown field 'momentun' in SolverParameter", 4),
        ('type: "Adamax"', "fixed", "unknown solver type 'Adamax'", 4),
        ("gamma: 0.1", "step", "lr_policy 'step' needs stepsize", 3),
        ("stepsize: 3", "step", "lr_policy 'step' needs gamma", 3),
        ("gamma: 0.1", "inv", "lr_policy 'inv' needs power", 3),
        ("", "poly", "lr_policy 'poly' needs power", 3),
        ("", "cosine", "unknown lr_policy 'cosine'", 3),
        ('type: "AdaGrad"\nmomentum: 0.9', "fixed", "momentum cannot be used with AdaGrad", 5),
        ('solver_type: ADAM\ntype: "Adam"', "fixed", "cannot both be given", 4),
        ('regularization_type: "L3"', "fixed", "unknown regularization_type 'L3'", 4),
        ('train_net: "net.prototxt"', "fixed", "more than one train net", 4),
        ("iter_size: 0", "fixed", "iter_size must be at least 1", 4),
    ],
)
def test_bad_solver_files_are_located_errors(tmp_path, extra: str, policy: str, message: str, line: int) -> None:
    with pytest.raises(SolverError) as info:
        _config(tmp_path, policy, extra)
    assert message in str(info.value)
    assert info.value.where is not None and info.value.where.line == line, str(info.value)


def test_solver_without_net_or_with_missing_net(tmp_path) -> None:
    with pytest.raises(SolverError, match="names no train net"):
        solver_from_text('base_lr: 0.1\nlr_policy: "fixed"', "s.prototxt", tmp_path)
    with pytest.raises(SolverError, match="does not exist"):
        solver_from_text('net: "nope.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"', "s.prototxt", tmp_path)


def test_inline_net_param(tmp_path) -> None:
    case = Case.load(CASES_DIR / "train_solver_nesterov")
    inline = f"net_param {{\n{(case.path / 'net.prototxt').read_text()}\n}}\n"
    solver = tmp_path / "solver.prototxt"
    text = "\n".join(line for line in case.solver.read_text().splitlines() if not line.startswith("net:"))
    solver.write_text(text + "\n" + inline)
    weights = case.write_caffemodel(tmp_path / "init.caffemodel")
    result = train(solver, weights, case.inputs(), iterations=case.meta["iterations"], record=True)
    _assert_passes(case, result.record.arrays)


def test_net_without_loss_is_refused(tmp_path) -> None:
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
                   'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }\n')
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\n')
    with pytest.raises(SolverError, match="the net has no loss"):
        train(tmp_path / "solver.prototxt", None, {"data": np.ones((1, 2), np.float32)}, iterations=1)


def test_loss_weight_count_must_match_tops(tmp_path) -> None:
    case = Case.load(CASES_DIR / "train_solver_adam")
    text = case.prototxt.read_text().replace('top: "loss" }', 'top: "loss" loss_weight: 1 loss_weight: 2 }')
    (tmp_path / "net.prototxt").write_text(text)
    (tmp_path / "solver.prototxt").write_text(case.solver.read_text())
    with pytest.raises(LayerParamError, match="loss_weight is given 2 times for 1 tops"):
        train(tmp_path / "solver.prototxt", case.write_caffemodel(tmp_path / "w.caffemodel"), case.inputs(), iterations=1)


def test_cli_train_errors_are_one_line(tmp_path, capsys) -> None:
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "step"\n')
    (tmp_path / "net.prototxt").write_text((CASES_DIR / "train_solver_adam" / "net.prototxt").read_text())
    assert main(["train", str(tmp_path / "solver.prototxt")]) == 2
    err = capsys.readouterr().err
    assert "solver.prototxt:3:" in err and "needs gamma" in err and "Traceback" not in err


# --- snapshots and solver states ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["train_solver_adam", "train_sgd_bn", "train_solver_nesterov"])
def test_resume_from_a_snapshot_continues_exactly(name: str, tmp_path) -> None:
    """Training 3 iterations, snapshotting and resuming for the rest gives what the whole run gives."""
    case = Case.load(CASES_DIR / name)
    weights = case.write_caffemodel(tmp_path / "init.caffemodel")
    total = case.meta["iterations"]
    whole = train(case.solver, weights, case.inputs(), iterations=total, record=True)
    first = train(case.solver, weights, case.inputs(), iterations=3, snapshot_dir=tmp_path / "snap")
    model_file, state_file = first.snapshots
    assert model_file.name == "solver_iter_3.caffemodel" and state_file.name == "solver_iter_3.solverstate"
    state = read_solverstate(state_file)
    assert state.iteration == 3 and Path(state.learned_net) == model_file
    rest = train(case.solver, weights, case.inputs(), iterations=total - 3, record=True, resume=state_file)
    assert rest.losses == pytest.approx([float(whole.record.arrays[f"loss:{k}"]) for k in range(3, total)], rel=1e-6)
    for key, value in whole.record.arrays.items():
        if key.startswith("after:"):
            np.testing.assert_allclose(rest.record.arrays[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    assert not list((tmp_path / "snap").glob(".*part"))


def test_snapshot_caffemodel_holds_the_trained_blobs(tmp_path) -> None:
    case = Case.load(CASES_DIR / "train_sgd_bn")
    result = _run(case, tmp_path, snapshot_dir=tmp_path / "out")
    weights = load_caffemodel(result.snapshots[0])
    for key, value in result.record.arrays.items():
        if key.startswith("after:"):
            _, layer, index = key.split(":")
            np.testing.assert_array_equal(weights[layer][int(index)].reshape(value.shape), value)
    assert weights["bn1"][2].reshape(-1)[0] == pytest.approx(2.0 * 0.9**6 + sum(0.9**k for k in range(6)), rel=1e-6)


def test_solverstate_that_does_not_fit_is_refused(tmp_path) -> None:
    case = Case.load(CASES_DIR / "train_solver_adam")
    weights = case.write_caffemodel(tmp_path / "init.caffemodel")
    first = train(case.solver, weights, case.inputs(), iterations=1, snapshot_dir=tmp_path)
    state = first.snapshots[1]
    other = Case.load(CASES_DIR / "train_solver_nesterov")  # the same net, but SGD-style: one history slot
    with pytest.raises(SolverError, match="has 16 history blobs; this net has 8 learned blobs"):
        train(other.solver, weights, other.inputs(), iterations=1, resume=state)
    truncated = tmp_path / "cut.solverstate"
    truncated.write_bytes(state.read_bytes()[:-40])
    with pytest.raises(WeightError, match="truncated"):
        train(case.solver, weights, case.inputs(), iterations=1, resume=truncated)


def test_frozen_blobs_do_not_move_and_get_no_gradient(tmp_path) -> None:
    case = Case.load(CASES_DIR / "train_iter_size_clip")
    result = _run(case, tmp_path)
    model = result.model
    frozen = {(b.layer, b.index) for b in model.learned if b.frozen}
    assert {("conv2", 0), ("conv2", 1), ("bn1", 0), ("bn1", 1), ("bn1", 2)} <= frozen
    assert not any(p.requires_grad for name, p in model.net.named_parameters() if name.startswith("conv2."))


# --- data parallel -----------------------------------------------------------------------------------

def test_two_gloo_ranks_equal_one_process(tmp_path) -> None:
    case = Case.load(CASES_DIR / "train_solver_nesterov")
    assert main(["case", str(case.path), "-o", str(tmp_path)]) == 0
    args = ["--weights", str(tmp_path / "weights.caffemodel"), "--inputs", str(tmp_path / "inputs.npz"), "--iterations", "3"]
    single, double = tmp_path / "one.npz", tmp_path / "two.npz"
    assert main(["train", str(case.solver), *args, "--record", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "proto2torch"]
    run = subprocess.run([*command, "train", str(case.solver), *args, "--record", str(double)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = read_npz(single), read_npz(double)
    expected = {k: v for k, v in case.expected().items()}
    for key in one:
        if key.startswith(("after:", "loss:", "grad:")):
            scale = max(1.0, float(np.abs(one[key]).max()))
            assert float(np.abs(two[key] - one[key]).max()) <= 1e-5 * scale, key
    assert set(k for k in one if k.startswith("after:")) <= set(expected)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_read_inputs_takes_input_keys(tmp_path) -> None:
    np.savez(tmp_path / "in.npz", **{"input:data": np.ones(2), "other": np.zeros(1)})
    assert list(read_inputs(tmp_path / "in.npz")) == ["data"]


def test_trainer_in_a_users_loop(tmp_path) -> None:
    """The API as a user's own loop uses it: the trainable module, proto2torch's optimizer and scheduler."""
    import proto2torch

    case = Case.load(CASES_DIR / "train_solver_rmsprop")
    config = load_solver(case.solver)
    net = proto2torch.with_weights(proto2torch.train.load_train_net(config), case.write_caffemodel(tmp_path / "w.caffemodel"))
    model = trainable(net)
    optimizer, scheduler = proto2torch.solver(model, case.solver)
    inputs = {k: torch.from_numpy(v) for k, v in case.inputs().items()}
    losses = []
    for _ in range(case.meta["iterations"]):
        optimizer.zero_grad()
        out = model(**inputs)
        out.loss.backward()
        losses.append(float(out.loss.detach()))
        optimizer.step()
        scheduler.step()
    expected = case.expected()
    assert losses == pytest.approx([float(expected[f"loss:{k}"]) for k in range(len(losses))], rel=1e-5)
    trainer = Trainer(model, config)
    assert trainer.iteration == 0


def test_emitted_train_net_has_the_objective(tmp_path) -> None:
    """The standalone file of a train net carries total_loss (the weighted sum), CaffeBatchNorm and nothing of proto2torch."""
    from proto2torch.backend.source import import_source, write_source

    case = Case.load(CASES_DIR / "train_losses")
    result = _run(case, tmp_path)
    py, pth, _ = write_source(result.model.ir, tmp_path / "emitted")
    text = py.read_text()
    assert "def total_loss(" in text and "proto2torch" not in text.split('"""', 2)[2]
    module = import_source(py)
    model = module.build(str(pth)).train()
    inputs = [torch.from_numpy(case.inputs()[name]) for name in result.model.input_names]
    outputs = model(*inputs)
    assert {"loss_seg": 1.0, "loss_seg_aux": pytest.approx(0.3), "loss_cls": 0.5, "loss_reg": 2.0, "loss_att": 1.0} == module.LOSS_WEIGHTS
    ours = result.model(*inputs).loss
    assert float(module.total_loss(outputs).detach()) == pytest.approx(float(ours.detach()), rel=1e-6)
    torch.jit.script(model)


def test_fcn32s_finetuning_recipe_of_the_readme(tmp_path, monkeypatch, capsys) -> None:
    """models/fcn32s/README.md: surgery builds the tiny FCN-32s, train fine-tunes it with FCN's solver; the loss falls."""
    tiny = ROOT / "models" / "fcn32s" / "tiny"
    monkeypatch.chdir(tmp_path)  # the solver names out/fcn32s_tiny/… relative to the working folder, as Caffe does
    passes = ["fc-to-conv", "set:layer=conv1_1,field=convolution_param.pad,value=100", "cut:after=fc7"]
    passes += [f"append:file={ROOT / 'models/fcn32s/head.prototxt'}", f"append:file={tiny / 'loss.prototxt'}", "bilinear-upsample:layers=upscore"]
    argv = ["surgery", str(tiny / "classifier.prototxt"), *[a for p in passes for a in ("--pass", p)]]
    argv += ["--input", "data=1,3,64,64", "--input", "label=1,1,64,64", "--name", "fcn32s_tiny", "-o", "out/fcn32s_tiny"]
    assert main(argv) == 0
    record = tmp_path / "record.npz"
    argv = ["train", str(tiny / "solver.prototxt"), "--weights", "out/fcn32s_tiny/fcn32s_tiny.caffemodel", "--inputs", str(tiny / "data.npz")]
    assert main([*argv, "--iterations", "15", "--record", str(record), "--snapshot", "snaps"]) == 0
    losses = [float(read_npz(record)[f"loss:{k}"]) for k in range(15)]
    assert np.mean(losses[-5:]) < 0.6 * losses[0]
    assert (tmp_path / "snaps" / "fcn32s_tiny_iter_15.caffemodel").exists()
    after = read_npz(record)
    np.testing.assert_array_equal(after["after:upscore:0"], load_caffemodel("out/fcn32s_tiny/fcn32s_tiny.caffemodel")["upscore"][0])


SNAPSHOTS = Path(__file__).parent / "data" / "caffe_snapshots"


@pytest.mark.parametrize("name", sorted(p.name for p in SNAPSHOTS.iterdir()))
def test_resume_from_caffes_own_solverstate(name: str, tmp_path) -> None:
    """Real Caffe trained 3 iterations and snapshotted (tools/check_snapshots_with_caffe.py --write); resuming from
    its .solverstate (and the caffemodel it names) continues with Caffe's numbers to the case's last iteration."""
    case = Case.load(CASES_DIR / name)
    state = SNAPSHOTS / name / "caffe_iter_3.solverstate"
    assert read_solverstate(state).iteration == 3
    result = train(case.solver, None, case.inputs(), resume=state, record=True, iterations=case.meta["iterations"] - 3)
    assert result.model is not None
    losses = [float(case.expected()[f"loss:{k}"]) for k in range(3, case.meta["iterations"])]
    assert result.losses == pytest.approx(losses, rel=1e-5, abs=1e-5)
    after = [r for r in judge_training(case, result.record.arrays) if r.group == "after"]
    assert after and all(r.passed for r in after), [str(r) for r in after if not r.passed]


def test_a_solverstate_naming_an_impossible_caffemodel_falls_back_to_the_weights(tmp_path) -> None:
    """A hostile or foreign .solverstate whose learned_net no file system can hold is not an OSError."""
    from proto2torch.caffemodel.writer import write_solverstate

    case = Case.load(CASES_DIR / "train_solver_nesterov")
    weights = case.write_caffemodel(tmp_path / "init.caffemodel")
    state = read_solverstate(train(case.solver, weights, case.inputs(), iterations=0, snapshot_dir=tmp_path).snapshots[1])
    write_solverstate(tmp_path / "odd.solverstate", state.iteration, "a" * 5000, state.history, state.current_step)
    result = train(case.solver, weights, case.inputs(), iterations=1, record=True, resume=tmp_path / "odd.solverstate")
    assert result.losses == pytest.approx([float(case.expected()["loss:0"])], rel=1e-5)
