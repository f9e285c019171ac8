"""psqlpy and ``os.fork()``: a process forked after psqlpy ran cannot use it.

psqlpy runs every call on a runtime of its own threads (tokio's), started by its first
call and kept for the life of the process. A forked child has none of its parent's
threads, only the runtime's state saying it runs: a psqlpy call there waits forever.
So the first use of psqlpy in such a child fails at once instead: opening a connection
raises `ForkedProcessError`, a call on a connection inherited from the parent an
`InterfaceError`, both with `MESSAGE`.

It is an `InterfaceError` (the driver fails, not the database; nothing was asked of
unipool's API that it refuses: the pool survives fork on the other backends). Opening a
connection raises it as a permanent `ConnectError` too, so that the pool fails its
waiters at once rather than retrying until their timeout.

Only unipool's own use of psqlpy is known here: a program that ran psqlpy itself before
forking hangs as before.
"""

from __future__ import annotations

import os

from ..._errors import ConnectError, InterfaceError
from .._session import server_named
from ..base import ConnectParams

MESSAGE = (
    "psqlpy cannot run in a process forked after psqlpy was used in its parent "
    "(its runtime's threads do not survive fork()): create the pool in the child, "
    "forking before the parent uses psqlpy, start the child with the 'spawn' or "
    "'forkserver' start method, or use the psycopg or asyncpg backend, which survive fork()"
)

#: psqlpy's runtime was started in this process or in one it was forked from.
_ran = False
#: This process was forked after psqlpy's runtime was started: psqlpy cannot run here.
forked = False


class ForkedProcessError(InterfaceError, ConnectError):
    """Raised when a connection is opened with psqlpy in a process forked after psqlpy
    was used in its parent; permanent: the pool fails its waiters at once."""


def ran() -> None:
    """Note that psqlpy's runtime is (about to be) started: call before any psqlpy call."""
    global _ran
    _ran = True


def check_connect(params: ConnectParams) -> None:
    """Raise `ForkedProcessError` if psqlpy cannot run in this process."""
    if forked:
        message = f"{server_named(params)}: {MESSAGE}"
        raise ForkedProcessError(message, dsn=params.dsn, permanent=True)


def inherited() -> InterfaceError:
    """The error of a call on a psqlpy connection inherited from the parent process."""
    return InterfaceError(MESSAGE)


def _after_fork_in_child() -> None:
    global forked
    if _ran:
        forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
