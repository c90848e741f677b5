"""Package resources: the Lark grammars, read through importlib.resources.

The grammars live in the repository's top-level ``grammars/`` folder; inside the
package that folder appears as ``proto2torch/grammars`` (a link in a checkout, a
real folder in the wheel), so the same lookup works from a checkout, an editable
install and an installed wheel.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def grammar_text(name: str) -> str:
    """The text of ``grammars/<name>``."""
    return resources.files("proto2torch").joinpath("grammars").joinpath(name).read_text(encoding="utf-8")
