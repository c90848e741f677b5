"""The repository itself: no binaries beyond small test data and the bundled models."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = ("tests/data/", "models/")


SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".hypothesis", "out", "build", "dist", ".venv"}


def _tracked() -> list[str]:
    """The files git tracks; outside a git checkout (an sdist), every file but caches and build output."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        return [p for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = (p for p in ROOT.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts))
        return [str(p.relative_to(ROOT)) for p in files if not p.parent.name.endswith(".egg-info")]


def test_no_binary_files_outside_test_data_and_models() -> None:
    binaries = []
    for name in _tracked():
        path = ROOT / name
        if path.is_file() and b"\0" in path.read_bytes()[:8192] and not name.startswith(ALLOWED):
            binaries.append(name)
    assert not binaries, f"binary files in the tree: {binaries}"


def test_bundled_binaries_are_small() -> None:
    large = [(n, (ROOT / n).stat().st_size) for n in _tracked() if n.startswith(ALLOWED) and (ROOT / n).is_file() and (ROOT / n).stat().st_size > 4 * 2**20]
    assert not large, f"files over 4 MiB: {large}"
