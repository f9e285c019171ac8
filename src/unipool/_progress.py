"""Progress of the long commands (``demo``, ``bench``), on stderr when it is a terminal.

Results go to stdout; progress is for the person watching, so it is written only when
stderr is a terminal, and nothing is written when it is not (a log file, a pipe, CI).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Counts steps and says each one, with the time spent and an estimate of what is left.

    ``total`` (the number of steps) may be set once it is known; before that, steps are
    said without a count. ``stream`` None means stderr, and only when it is a terminal.
    """

    def __init__(self, total: int = 0, stream: TextIO | None = None) -> None:
        if stream is None and sys.stderr.isatty():
            stream = sys.stderr
        self.stream = stream
        self.total = total
        self.done = 0
        self._started = time.monotonic()

    def __call__(self, text: str) -> None:
        """Say that the next step starts: ``[3/9] text (0:12 so far, about 0:24 left)``."""
        self.done += 1
        if self.stream is None:
            return
        if not self.total:
            self.note(text)
            return
        elapsed = time.monotonic() - self._started
        timing = f"{_clock(elapsed)} so far"
        if self.done > 1:
            left = elapsed / (self.done - 1) * (self.total - self.done + 1)
            timing += f", about {_clock(left)} left"
        self.note(f"[{self.done}/{self.total}] {text} ({timing})")

    def note(self, text: str) -> None:
        """Say something that is not a step (a server starting, a phase ending)."""
        if self.stream is not None:
            print(text, file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes}:{secs:02d}"
