"""Package resources: the Lark grammars, read through importlib.resources.

The grammars live in the repository's top-level ``grammars/`` folder; inside the
package that folder appears as ``proto2torch/grammars`` (a link in a checkout, a
real folder in the wheel), so the same lookup works from a checkout, an editable
install and an installed wheel.  Also: how the paths a net or solver file names are found.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path


@functools.cache
def grammar_text(name: str) -> str:
    """The text of ``grammars/<name>``."""
    return resources.files("proto2torch").joinpath("grammars").joinpath(name).read_text(encoding="utf-8")


def exists(path: Path) -> bool:
    """Whether ``path`` exists, False (not an exception) for names no file system takes: too long, or with a NUL."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def locate(name: str, base: str | Path | None) -> Path:
    """A path a net file names (a database, a list, a mean file): as written, as Caffe takes it, else beside
    the file (``base``) when it is there; as written when it is in neither place (its reader then says so)."""
    path = Path(name)
    if exists(path) or path.is_absolute() or base is None:
        return path
    beside = Path(base) / path
    return beside if exists(beside) else path
