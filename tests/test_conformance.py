"""Every conformance case (made with real BVLC Caffe) must match Caffe blob for blob."""

from __future__ import annotations

import numpy as np
import pytest

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
