"""proto2torch.optimize(module, *example_inputs): the fastest candidate, measured, whose outputs stay
within 1e-4 of the module's; a candidate that breaks them or cannot be built is skipped and reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import proto2torch
from proto2torch import optimization as optimize_module
from proto2torch.cli import main
from proto2torch.conformance import Case, recipe_layers
from proto2torch.export import ExportError

from .conftest import CASES_DIR


def _module(name: str):
    case = Case.load(CASES_DIR / name)
    inputs = case.inputs()
    net = proto2torch.load_net(case.prototxt, {k: v.shape for k, v in inputs.items()})
    net = proto2torch.with_weights(net, {layer: blobs for layer, _, blobs in recipe_layers(case.recipe)})
    return proto2torch.to_torch(net), [torch.from_numpy(v) for v in inputs.values()]


def test_optimize_picks_the_fastest_candidate_that_keeps_the_outputs() -> None:
    module, inputs = _module("layer_bn_scale")
    fast = proto2torch.optimize(module, *inputs, candidates=("eager", "channels_last", "torchscript"))
    timed = {c.name: c.ms for c in fast.report if c.ms is not None}
    assert [c.name for c in fast.report] == ["eager", "channels_last", "torchscript"]
    assert fast.choice == min(timed, key=timed.get) and all(c.error is not None and c.error <= 1 for c in fast.report)
    with torch.no_grad():
        want, got = module(*inputs), fast(*inputs)
    want, got = (list(x.values()) if isinstance(x, dict) else [x] for x in (want, got))
    for a, b in zip(want, got):
        assert torch.allclose(a, b, rtol=0, atol=1e-4 * max(1.0, float(a.abs().max())))
    assert "chosen" in fast.table()


def test_a_candidate_that_changes_the_outputs_or_cannot_be_built_is_skipped(monkeypatch) -> None:
    module, inputs = _module("net_lenet")
    monkeypatch.setattr(optimize_module, "_torchscript", lambda m, x, cl: (lambda *a: m(*a) + 1e-2))
    monkeypatch.setattr(optimize_module, "_inductor", lambda m, cl: (_ for _ in ()).throw(RuntimeError("no compiler")))
    fast = proto2torch.optimize(module, *inputs, candidates=("eager", "torchscript", "inductor"))
    notes = {c.name: c.skipped for c in fast.report}
    assert notes["torchscript"] == "outputs differ from the module's" and notes["inductor"].startswith("could not build: RuntimeError: no compiler")
    assert fast.choice == "eager"
    with pytest.raises(ValueError, match="unknown candidates"):
        proto2torch.optimize(module, *inputs, candidates=("magic",))


def test_verify_optimize_checks_the_compiled_module_against_caffe(tmp_path, capsys) -> None:
    case = Case.load(CASES_DIR / "net_lenet")
    weights, reference = case.write_caffemodel(tmp_path / "w.caffemodel"), case.write_reference(tmp_path / "ref.npz")
    assert main(["verify", str(case.prototxt), "--weights", str(weights), "--reference", str(reference), "--optimize"]) == 0
    out = capsys.readouterr().out
    table = out.split("proto2torch.optimize on the reference inputs:")[1]
    assert all(name in table for name in ("eager", "channels_last", "torchscript", "inductor")) and "chosen" in table
    assert "output 'prob' ok" in out
    with np.load(reference) as ref:
        assert "prob" in ref.files


def test_save_optimized_writes_a_torchscript_file_torch_loads_alone(tmp_path) -> None:
    module, inputs = _module("layer_bn_scale")
    fast = proto2torch.optimize(module, *inputs, candidates=("torchscript",))
    saved = optimize_module.save_optimized(fast, module, *inputs, stem=tmp_path / "bn")
    assert saved.path == tmp_path / "bn.optimized.pt" and saved.error is not None and saved.error <= 1 and saved.ms > 0
    loaded = torch.jit.load(str(saved.path))
    with torch.no_grad():
        want, got = module(*inputs), loaded(*inputs)
    want, got = (list(x.values()) if isinstance(x, dict) else list(x) if isinstance(x, tuple) else [x] for x in (want, got))
    assert all(torch.allclose(a, b, rtol=0, atol=1e-4 * max(1.0, float(a.abs().max()))) for a, b in zip(want, got))
    eager = proto2torch.optimize(module, *inputs, candidates=("eager",))
    assert optimize_module.save_optimized(eager, module, *inputs, stem=tmp_path / "plain").path is None
    assert not (tmp_path / "plain.optimized.pt").exists()


def test_convert_optimize_writes_the_fastest_path_and_checks_it(tmp_path, capsys) -> None:
    case = Case.load(CASES_DIR / "net_lenet")
    weights = case.write_caffemodel(tmp_path / "w.caffemodel")
    argv = ["convert", str(case.prototxt), "--weights", str(weights), "-o", str(tmp_path / "out"), "--optimize"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    chosen = next(line.split()[0] for line in out.splitlines() if line.rstrip().endswith("chosen"))
    wrote = [line.split()[1] for line in out.splitlines() if line.strip().startswith("wrote ") and ".optimized.pt" in line]
    if chosen in ("eager", "channels_last"):  # the plain module was fastest (a machine without a compiler, or a busy one)
        assert "nothing else to write: the module itself" in out and not wrote
    else:  # the choice, or the next fastest compiled path when the choice cannot be saved (and the output says why)
        assert len(wrote) == 1 and wrote[0].startswith(str(tmp_path / "out" / "LeNet.optimized.pt")) and Path(wrote[0]).is_file()
        assert "its outputs against the unoptimised module: ok" in out
        if {"pt": "torchscript", "pt2": "inductor"}[wrote[0].rsplit(".", 1)[-1]] != chosen:
            assert f"passed over: {chosen} " in out
    assert main(["convert", str(case.prototxt), "-o", str(tmp_path / "nothing"), "--optimize"]) == 2
    assert "--optimize measures the converted module: it needs --to torch (the default) and --weights" in capsys.readouterr().err


def test_save_optimized_compiles_inductors_choice_ahead_of_time(tmp_path) -> None:
    module, inputs = _module("layer_bn_scale")
    fast = proto2torch.optimize(module, *inputs, candidates=("inductor",))
    saved = optimize_module.save_optimized(fast, module, *inputs, stem=tmp_path / "bn")
    assert saved.path == tmp_path / "bn.optimized.pt2" and saved.path.is_file()
    assert saved.error is not None and saved.error <= 1 and "aoti_load_package" in saved.load


def test_save_optimized_that_cannot_reload_its_file_leaves_none_and_says_why(tmp_path, monkeypatch) -> None:
    module, inputs = _module("layer_bn_scale")
    fast = proto2torch.optimize(module, *inputs, candidates=("torchscript",))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("required keyword attribute 'value' is undefined")))
    with pytest.raises(ExportError, match=r"torchscript, the fastest path, could not be written as bn\.optimized\.pt and loaded again \(RuntimeError: required keyword"):
        optimize_module.save_optimized(fast, module, *inputs, stem=tmp_path / "bn")
    assert list(tmp_path.iterdir()) == []


def test_save_optimized_falls_back_to_the_next_fastest_candidate_it_can_save(tmp_path, monkeypatch) -> None:
    """When optimize's choice cannot be written and loaded again, the other compiled candidate is saved
    (and checked) instead, and the result names what was passed over and why; when neither can be, the
    error lists both and nothing is left on disk."""
    module, inputs = _module("layer_bn_scale")
    fast = proto2torch.optimize(module, *inputs, candidates=("torchscript", "inductor"))
    assert fast.choice in ("torchscript", "inductor")
    other = "inductor" if fast.choice == "torchscript" else "torchscript"
    broken = {"torchscript": (torch.jit, "load"), "inductor": (torch._inductor, "aoti_load_package")}

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("cannot load this file")

    monkeypatch.setattr(*broken[fast.choice], fail)
    saved = optimize_module.save_optimized(fast, module, *inputs, stem=tmp_path / "bn")
    assert saved.choice == other and saved.path == tmp_path / ("bn.optimized.pt2" if other == "inductor" else "bn.optimized.pt")
    assert saved.error is not None and saved.error <= 1 and saved.path.is_file()
    assert saved.passed_over == [f"{fast.choice} could not be written as {'bn.optimized.pt' if fast.choice == 'torchscript' else 'bn.optimized.pt2'} and loaded again (RuntimeError: cannot load this file)"]
    saved.path.unlink()
    monkeypatch.setattr(*broken[other], fail)
    with pytest.raises(ExportError, match=rf"{fast.choice}, the fastest path, could not be written .*; {other} could not be written .*not affected"):
        optimize_module.save_optimized(fast, module, *inputs, stem=tmp_path / "bn")
    assert [p for p in tmp_path.iterdir() if p.name.startswith("bn")] == []


@pytest.mark.parametrize(("size", "beta", "k"), [(5, 0.75, 1.0), (3, 0.5, 2.0), (5, 0.6, 1.0), (7, 0.75, 0.5), (1, 0.75, 1.0)])
def test_fast_lrn_computes_torchs_local_response_norm(size, beta, k) -> None:
    """The window's sum from shifted slices and the power from rsqrt/sqrt (or exp/log) give torch's LRN
    (Caffe's ACROSS_CHANNELS arithmetic) to float rounding, channel edges included; not 4-d: torch's own."""
    x = torch.randn(2, 9, 6, 5, generator=torch.Generator().manual_seed(size)) * 20
    want = torch.nn.LocalResponseNorm(size, 1e-2, beta, k)(x)
    got = optimize_module.FastLRN(size, 1e-2, beta, k)(x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    flat = torch.randn(3, 9, 4)
    assert torch.equal(optimize_module.FastLRN(size, 1e-2, beta, k)(flat), torch.nn.LocalResponseNorm(size, 1e-2, beta, k)(flat))


def test_optimize_swaps_lrn_in_a_copy_that_shares_the_weights() -> None:
    """Every candidate runs with FastLRN; the caller's module keeps torch's LocalResponseNorm and the
    copy shares its parameters rather than duplicating them; a window too wide keeps torch's."""
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.LocalResponseNorm(5, 1e-2, 0.75), torch.nn.LocalResponseNorm(17)).eval()
    swapped = optimize_module._with_fast_lrn(module)
    assert isinstance(swapped[1], optimize_module.FastLRN) and isinstance(swapped[2], torch.nn.LocalResponseNorm)
    assert isinstance(module[1], torch.nn.LocalResponseNorm) and swapped[0].weight is module[0].weight
    plain = torch.nn.Sequential(torch.nn.ReLU())
    assert optimize_module._with_fast_lrn(plain) is plain
    x = torch.randn(1, 3, 12, 12) * 10
    fast = proto2torch.optimize(module, x, candidates=("eager",))
    assert any(isinstance(m, optimize_module.FastLRN) for m in fast.inner.modules())
    with torch.no_grad():
        assert torch.allclose(fast(x), module(x), rtol=1e-5, atol=1e-6)
