"""Every conformance case (made with real BVLC Caffe) must match Caffe blob for blob."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proto2torch.cli import main
from proto2torch.conformance import Case
from proto2torch.verify import verify_net

from .conftest import CASES_DIR, case_net, case_reference, case_support, live_runner


def test_case_matches_caffe(case: Case, tmp_path) -> None:
    net = case_net(case, tmp_path)
    report = verify_net(net, case_reference(case), live_runner(net), rtol=case.rtol, strict=True, support=case_support(case))
    assert report.passed, report.table()
    checked = {b.blob for b in report.blobs}
    assert set(case.meta["checked_blobs"]) <= checked, "every blob the case checks must be compared"


def test_ssd_tail_is_ill_conditioned_in_caffe_itself(tmp_path) -> None:
    """The blobs reported 'ill-conditioned' move past the tolerance in real Caffe under a one-ulp input change."""
    case = Case.load(CASES_DIR / "net_mobilenetv2_ssd")
    net = case_net(case, tmp_path)
    report = verify_net(net, case_reference(case), live_runner(net), rtol=case.rtol, strict=True, support=case_support(case))
    ill = [b for b in report.blobs if b.status == "ill-conditioned"]
    assert ill, "the SSD tail is expected to be ill-conditioned"
    expected = case.expected()
    with np.load(case.path / "oracle_extra.npz") as extra:
        for b in ill:
            caffe_moves = float(np.abs(extra[f"one_ulp:{b.blob}"].astype(np.float64) - expected[b.blob]).max())
            assert caffe_moves > b.tolerance, (b.blob, caffe_moves)
            assert b.local_error is not None and b.local_error <= b.tolerance


def test_verify_without_layer_local_data_is_unverifiable_not_a_pass_in_strict_mode(tmp_path) -> None:
    case = Case.load(CASES_DIR / "net_mobilenetv2_ssd")
    net = case_net(case, tmp_path)
    reference = case_reference(case)
    lenient = verify_net(net, reference, live_runner(net), rtol=case.rtol)
    strict = verify_net(net, reference, live_runner(net), rtol=case.rtol, strict=True)
    statuses = {b.blob: b.status for b in lenient.blobs}
    assert statuses["layer_19_2_5/depthwise"] == "unverifiable"
    assert lenient.passed and not strict.passed


@pytest.mark.parametrize("name", ["layer_legacy_v1", "net_caffenet_v0", "layer_pool_variants"])
def test_cli_verify(name: str, tmp_path, capsys) -> None:
    case_dir = CASES_DIR / name
    assert main(["case", str(case_dir), "-o", str(tmp_path)]) == 0
    code = main(["verify", str(case_dir / "net.prototxt"), "--weights", str(tmp_path / "weights.caffemodel"), "--reference", str(tmp_path / "reference.npz")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS" in out


def test_cli_verify_reports_first_diverging_layer(tmp_path, capsys) -> None:
    case_dir = CASES_DIR / "net_lenet"
    main(["case", str(case_dir), "-o", str(tmp_path)])
    with np.load(tmp_path / "reference.npz") as data:
        ref = {k: data[k] for k in data.files}
    ref["conv2"] = ref["conv2"] + 1.0  # a wrong reference value for one blob in the middle
    np.savez(tmp_path / "bad.npz", **ref)
    capsys.readouterr()
    code = main(["verify", str(case_dir / "net.prototxt"), "--weights", str(tmp_path / "weights.caffemodel"), "--reference", str(tmp_path / "bad.npz"), "--json"])
    import json

    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["first_diverging_layer"] == "conv2"
    assert not report["passed"]


def test_a_blob_over_tolerance_is_classified_by_its_layer_on_the_reference_inputs(tmp_path) -> None:
    """pool1's reference is off by more than the tolerance (a wrong layer); conv2's reference is conv2 of
    that value, so ours misses it end to end too, but conv2 is right on its reference input: accumulated, not wrong."""
    from proto2torch.verify import _run_node

    case = Case.load(CASES_DIR / "net_lenet")
    net = case_net(case, tmp_path)
    full = case_reference(case)
    tol = 1e-4 * max(1.0, float(np.abs(full["pool1"]).max()))
    shifted = (full["pool1"] + 3 * tol).astype(np.float32)
    conv2 = _run_node(net, net.node("conv2"), [torch.from_numpy(shifted)])[0].numpy()
    reference = {"input:data": full["input:data"], "pool1": shifted, "conv2": conv2}
    report = verify_net(net, reference, live_runner(net), rtol=1e-4)
    status = {b.blob: b for b in report.blobs}
    assert status["pool1"].status == "MISMATCH" and "lacks the inputs of 'pool1'" in status["pool1"].detail  # (conv1 is not in the reference)
    assert status["conv2"].max_abs > status["conv2"].tolerance
    assert status["conv2"].status == "ill-conditioned" and status["conv2"].local_error <= status["conv2"].tolerance
    assert "accumulated rounding" in status["conv2"].detail and status["conv2"].sensitivity is not None
    assert not report.passed and report.first_divergence.layer == "pool1"


def test_a_wrong_layer_is_named_with_both_numbers(tmp_path) -> None:
    case = Case.load(CASES_DIR / "net_lenet")
    net = case_net(case, tmp_path)
    full = case_reference(case)
    tol = 1e-4 * max(1.0, float(np.abs(full["conv2"]).max()))
    reference = {"input:data": full["input:data"], "pool1": full["pool1"], "conv2": (full["conv2"] + 3 * tol).astype(np.float32)}
    result = next(b for b in verify_net(net, reference, live_runner(net), rtol=1e-4).blobs if b.blob == "conv2")
    assert result.status == "MISMATCH" and result.local_error is not None and result.local_error > result.tolerance
    assert "this layer is wrong" in result.detail and "one-ulp input change" in result.detail
