"""The 478 real prototxt files of tests/data/corpus: every one loads (or fails with a located
error where the net itself is inconsistent), at least 90% convert fully in the TEST phase,
and the README's layer table and corpus report are the generated ones."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from proto2torch.cli import main
from proto2torch.coverage import corpus_report, corpus_status, layer_table

from .conftest import CORPUS_DIR, corpus_files

ROOT = Path(__file__).resolve().parents[1]

# Files whose net contradicts itself; inspect must fail on them with this message (exit 2).
INCONSISTENT = {
    # PSANet sizes the attention mask (2H-1) x (2W-1) when no mask size is given and checks the
    # attention input against it: at 59 x 59 that is 117 x 117 channels, the file gives 59 x 59.
    # (The ade20k twin shrinks its features to 30 x 30 first, so 59 x 59 is right there.)
    "hszhao__PSANet/evaluation/prototxt/voc2012/psanet101_voc2012_465.prototxt": "the attention input must be (N, 117 x 117, H, W)",
}


@functools.cache
def statuses():
    return corpus_status(CORPUS_DIR)


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: str(p.relative_to(CORPUS_DIR)))
def test_inspect_every_corpus_file(path, capsys) -> None:
    code = main(["inspect", str(path)])
    captured = capsys.readouterr()
    rel = str(path.relative_to(CORPUS_DIR))
    if rel in INCONSISTENT:
        assert code == 2 and INCONSISTENT[rel] in captured.err, captured.err
        assert "Traceback" not in captured.err
        return
    assert code in (0, 3), captured.err
    if code == 3:  # every unsupported layer is listed with its position and a reason
        listed = [line for line in captured.out.splitlines() if "(type " in line]
        assert listed and all(":" in line.split("layer '")[0] for line in listed), captured.out


def test_at_least_90_percent_of_the_corpus_converts() -> None:
    results = statuses()
    assert len(results) == 478
    supported = sum(s.supported for s in results)
    assert supported / len(results) >= 0.90, f"{supported} of {len(results)}"
    assert {s.path for s in results if s.error} == set(INCONSISTENT)


def test_readme_layer_table_and_corpus_report_are_current() -> None:
    readme = (ROOT / "README.md").read_text()
    assert layer_table() in readme, "run python tools/update_readme.py"
    assert corpus_report(statuses()) in readme, "run python tools/update_readme.py"
