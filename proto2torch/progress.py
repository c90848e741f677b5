"""A minimal progress bar for long work, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress("loading", total) as p: p.update(done)`` draws a bar at most 10 times a second."""

    def __init__(self, label: str, total: int, unit: str = "B", stream: TextIO | None = None, min_total: int = 0):
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = total >= min_total and _is_tty(self.stream)
        self._last = 0.0
        self._start = time.monotonic()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.update(self.total, force=True)
            self.stream.write("\n")
            self.stream.flush()

    def update(self, done: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        amount = _human(done, self.unit) + "/" + _human(self.total, self.unit)
        self.stream.write(f"\r{self.label} [{bar}] {frac * 100:5.1f}% {amount} {now - self._start:5.1f}s")
        self.stream.flush()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _human(n: int, unit: str) -> str:
    if unit != "B":
        return f"{n}"
    for suffix in ("B", "KB", "MB", "GB"):
        if n < 1024 or suffix == "GB":
            return f"{n:.0f}{suffix}" if suffix == "B" else f"{n:.1f}{suffix}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}"
