"""Whether a socket is ready now, without blocking: what psycopg's protocol generators
wait for (`Wait` flags in, `Ready` flags out), shared by the trio and asyncio drivers."""

from __future__ import annotations

import errno
import select
from typing import Final

from psycopg.waiting import Ready, Wait

R: Final = int(Wait.R)
W: Final = int(Wait.W)
RW: Final = int(Wait.RW)
assert int(Ready.R) == R and int(Ready.W) == W

if hasattr(select, "poll"):
    _POLLIN: Final = select.POLLIN
    _POLLOUT: Final = select.POLLOUT
    _POLLBAD: Final = select.POLLERR | select.POLLHUP

    def ready_now(fileno: int, wait: int) -> int:
        """Return the `Ready` flags of `fileno` for `wait`, without blocking."""
        p = select.poll()
        p.register(fileno, (_POLLIN if wait & R else 0) | (_POLLOUT if wait & W else 0))
        ready = 0
        for _, ev in p.poll(0):
            if ev & select.POLLNVAL:
                raise OSError(errno.EBADF, "bad file descriptor")
            if ev & _POLLBAD:
                return wait  # let libpq find the error
            ready |= (R if ev & _POLLIN else 0) | (W if ev & _POLLOUT else 0)
        return ready

else:  # pragma: no cover - Windows

    def ready_now(fileno: int, wait: int) -> int:
        """Return the `Ready` flags of `fileno` for `wait`, without blocking."""
        rl, wl, xl = select.select(
            [fileno] if wait & R else [], [fileno] if wait & W else [], [fileno], 0
        )
        return wait if xl else (R if rl else 0) | (W if wl else 0)
