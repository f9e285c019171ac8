"""Whether an idle connection's socket has nothing to read, asked without letting go of
the GIL.

Every system call of Python's own (``select.poll``, ``socket.recv``) releases the GIL
around it. Where another thread waits for the GIL, as the loop thread serving asyncpg to
trio and to blocking code does, the caller then waits to get it back, for as long as that
thread runs: a zero-timeout poll at every hand-out cost asyncpg from trio about a tenth
of its throughput. libc's ``poll`` called through a ``ctypes.PyDLL`` (whose calls keep
the GIL) asks the same question without that wait. Where libc cannot be loaded so
(Windows), ``select`` asks it.
"""

from __future__ import annotations

import ctypes
import select
import sys
from collections.abc import Callable


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


def _libc_poll() -> Callable[..., int] | None:
    if sys.platform == "win32":  # pragma: no cover - no libc poll there
        return None
    try:
        poll: Callable[..., int] = ctypes.PyDLL(None).poll
    except (OSError, AttributeError):  # pragma: no cover - a libc without poll
        return None
    poll.restype = ctypes.c_int  # type: ignore[attr-defined]
    return poll


_poll = _libc_poll()


def quiet_probe(fileno: int) -> Callable[[], bool]:
    """A function that says whether socket ``fileno`` has nothing to read now (no data,
    no EOF, no error), without blocking and without releasing the GIL."""
    poll = _poll
    if poll is None:  # pragma: no cover - Windows
        return lambda: not select.select([fileno], [], [fileno], 0)[0]
    entry = _PollFd(fileno, select.POLLIN, 0)
    ref = ctypes.byref(entry)
    return lambda: poll(ref, 1, 0) == 0
