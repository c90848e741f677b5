"""Regenerate the README sections that are derived from the code: the layer table (from the
registry) and the corpus report (every file of tests/data/corpus loaded in TEST phase).

usage: python tools/update_readme.py [--check]     (--check: exit 1 if the README is stale)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proto2torch.coverage import corpus_report, corpus_status, layer_table, replace_section  # noqa: E402


def render(text: str) -> str:
    text = replace_section(text, "layers", layer_table())
    return replace_section(text, "corpus", corpus_report(corpus_status(ROOT / "tests" / "data" / "corpus" / "prototxt")))


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = render(old)
    if "--check" in argv:
        if new != old:
            print("README.md is stale: run python tools/update_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
