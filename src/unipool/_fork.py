"""After ``os.fork()``: a child never touches its parent's connections; its pools reopen
lazily there."""

from __future__ import annotations

import os
import weakref
from typing import Any

_open: weakref.WeakSet[Any] = weakref.WeakSet()


def track(pool: Any) -> None:
    """Remember an open pool, to forget its connections in a child process."""
    _open.add(pool)


def _forget_inherited_connections() -> None:
    """Each inherited socket is pointed at /dev/null in the child, so that whatever a
    driver sends when its connection object goes away (psycopg says goodbye to the
    server) cannot end the parent's session; each pool then reopens on first use."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for pool in list(_open):
            pool._forget_connections(devnull)
    finally:
        os.close(devnull)
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_connections)
