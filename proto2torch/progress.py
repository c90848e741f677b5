"""Progress bars for long work (reading a large caffemodel, training, converting a zoo), drawn by
``tqdm`` and only when the stream is a terminal: logs, pipes and CI output stay clean."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class Progress:
    """``with Progress("loading", total) as p: p.update(done)``: ``done`` is the running total, not a step."""

    def __init__(self, label: str, total: int, unit: str = "B", stream: TextIO | None = None, min_total: int = 0):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = total >= min_total and _is_tty(self.stream)
        self._done = 0
        self._bar = (
            tqdm(total=max(total, 1), desc=label, unit=unit, unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000, file=self.stream, mininterval=0.1, leave=True)
            if self.enabled
            else None
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            if not any(exc):
                self.update(int(self._bar.total))
            self._bar.close()

    def update(self, done: int, force: bool = False) -> None:
        if self._bar is None:
            return
        step = min(done, int(self._bar.total)) - self._done
        if step > 0:
            self._done += step
            self._bar.update(step)
        if force:
            self._bar.refresh()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
