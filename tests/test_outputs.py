"""verify's reference formats (.npz, HDF5, a folder of .npy files) and the terminal-only progress bar."""

from __future__ import annotations

import io

import h5py
import numpy as np

from proto2torch.cli import main
from proto2torch.progress import Progress
from proto2torch.verify import load_reference

from .conftest import CASES_DIR


def test_verify_reads_hdf5_and_npy_folders(tmp_path, capsys) -> None:
    case = CASES_DIR / "net_googlenet"  # blob names with '/' (inception_3a/1x1): groups and subfolders
    main(["case", str(case), "-o", str(tmp_path / "w")])
    reference = load_reference(tmp_path / "w" / "reference.npz")
    assert any("/" in k for k in reference)
    with h5py.File(tmp_path / "ref.h5", "w") as f:
        for k, v in reference.items():
            f[k] = v
    folder = tmp_path / "ref"
    for k, v in reference.items():
        (folder / k).parent.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{k}.npy", v)
    for ref in (tmp_path / "ref.h5", folder):
        loaded = load_reference(ref)
        assert loaded.keys() == reference.keys() and all(np.array_equal(loaded[k], reference[k]) for k in reference)
        capsys.readouterr()
        argv = ["verify", str(case / "net.prototxt"), "--weights", str(tmp_path / "w" / "weights.caffemodel"), "--reference", str(ref)]
        assert main(argv) == 0, capsys.readouterr().out
    np.save(folder / "prob.npy", reference["prob"] + 1)
    capsys.readouterr()
    assert main(argv) == 1 and "prob" in capsys.readouterr().out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_only_on_a_terminal() -> None:
    tty, pipe = _Terminal(), io.StringIO()
    for stream in (tty, pipe):
        with Progress("reading", 1000, stream=stream) as bar:
            bar.update(400)
            bar.update(1000)
    assert "reading" in tty.getvalue() and "100%" in tty.getvalue()
    assert pipe.getvalue() == ""
