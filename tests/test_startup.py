"""Commands that read nets without running them import no torch (issue 14): ``inspect`` (tables,
``--rf``, ``--json``, caffe-tensorflow files), ``draw``, ``passes`` and ``layers`` — over every
corpus file and conformance net, so every layer type's shape rule is held to it.  The start-up
time this buys is measured by ``benchmarks/startup.py``, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import CORPUS_DIR

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "data" / "conformance"
DSL = ROOT / "tests" / "data" / "dsl"

# Runs in a fresh interpreter; torch is made unimportable as well as looked for afterwards, so the
# import that breaks the rule is named in the failure.
SCRIPT = r"""
import contextlib, importlib.abc, io, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"{name} imported by a command that runs no net")
sys.meta_path.insert(0, NoTorch())
from proto2torch.cli import main
codes = {}
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        codes[" ".join(argv)] = (main(argv), err.getvalue()[-400:])
print(json.dumps({"codes": codes, "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}))
"""


def run_without_torch(commands: list[list[str]]) -> dict[str, tuple[int, str]]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(commands)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["torch"] == []
    return result["codes"]


def test_reading_commands_import_no_torch(tmp_path: Path) -> None:
    resnet = str(CORPUS_DIR / "KaimingHe__deep-residual-networks" / "prototxt" / "ResNet-152-deploy.prototxt")
    commands = [
        ["inspect", resnet],
        ["inspect", "--rf", resnet],
        ["inspect", "--json", resnet],
        ["inspect", str(DSL / "ethereon_resnets.py"), "--class", "TinyResNetA", "--input", "data=1,3,64,64"],
        ["draw", resnet, "-o", str(tmp_path / "resnet.dot")],
        ["passes"],
        ["layers"],
    ]
    codes = run_without_torch(commands)
    for argv, (code, err) in codes.items():
        assert code == 0, (argv, err)
    assert (tmp_path / "resnet.dot").stat().st_size > 10_000


def test_every_corpus_file_and_case_inspects_without_torch() -> None:
    paths = sorted(CORPUS_DIR.rglob("*.prototxt")) + sorted(CASES.glob("*/net.prototxt"))
    codes = run_without_torch([["inspect", str(p)] for p in paths])
    assert len(codes) == len(paths) > 470
    # exit 3 lists unsupported layers and exit 2 is a net's own error, as in tests/test_corpus.py; an
    # import of torch would be an ImportError and no exit code at all
    assert {code for code, _ in codes.values()} <= {0, 2, 3}
    assert not [argv for argv, (code, err) in codes.items() if code == 2 and "imported by a command" in err]
