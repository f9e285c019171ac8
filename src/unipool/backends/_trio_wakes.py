"""Wake-ups of trio tasks from other threads, handed over in batches.

A thread that finishes work for a trio task (the asyncio loop thread of
``_bridge``, a tokio thread of psqlpy's pump) must get trio to run a callback.
``TrioToken.run_sync_soon`` does that with a write to trio's wake-up socket
each time; `TrioWakes` makes it one write while a batch is pending, however
many callbacks join it, and runs the batch in trio in the order they came.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._trio_local import run_local

if TYPE_CHECKING:
    import trio


class TrioWakes:
    """The callbacks waiting to run in one trio run."""

    __slots__ = ("_callbacks", "_pending", "_token")

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._callbacks: deque[Callable[[], object]] = deque()
        self._pending = False

    def add(self, callback: Callable[[], object]) -> None:
        """From any thread: run ``callback`` in trio soon (dropped if the run is over)."""
        self._callbacks.append(callback)
        if not self._pending:
            self._pending = True
            try:
                self._token.run_sync_soon(self._run_all)
            except RuntimeError:  # trio.RunFinishedError: nobody left to wake
                pass
            except BaseException:  # an interrupt: the next one asks again
                self._pending = False
                raise

    def _run_all(self) -> None:
        """In trio: run every callback added (cleared first: one added meanwhile is
        either run here or schedules another call). The callbacks catch their own
        errors: one that raised would end the trio run (``TrioInternalError``)."""
        self._pending = False
        callbacks = self._callbacks
        while callbacks:
            callbacks.popleft()()


def trio_wakes() -> TrioWakes:
    """This trio run's `TrioWakes` (made on first use); call it in trio."""
    return run_local("trio_wakes", _make)


def _make() -> TrioWakes:
    import trio

    return TrioWakes(trio.lowlevel.current_trio_token())
