"""A forked child never reuses, nor ends, the parent's connections."""

from __future__ import annotations

import os
import sys

import pytest

from tests._modes import in_thread
from tests.conftest import PoolFactory

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # fork() with threads running
]


def _child(pool_fetchval: object, parent_pid: int) -> None:
    """In the child: the pool must give a connection of its own. Never returns."""
    code = 1
    try:
        pid = pool_fetchval("select pg_backend_pid()")  # type: ignore[operator]
        code = 0 if pid != parent_pid else 2
    except BaseException:
        code = 3
    finally:
        sys.stdout.flush()
        os._exit(code)


async def test_fork(make_pool: PoolFactory, mode: str, backend: str) -> None:
    if mode != "sync":
        pytest.skip("forking a process that runs an event loop is not supported by the loops")
    if backend == "psqlpy":
        pytest.skip("psqlpy's tokio runtime does not survive fork(): use it in the child only")
    async with make_pool(min_size=1, max_size=1) as pool:
        parent_pid = await pool.fetchval("select pg_backend_pid()")

        def fork_and_wait() -> int:
            child = os.fork()
            if child == 0:
                _child(pool.pool.fetchval, parent_pid)
            _, status = os.waitpid(child, 0)
            return os.waitstatus_to_exitcode(status)

        assert await in_thread(fork_and_wait) == 0
        assert await pool.fetchval("select pg_backend_pid()") == parent_pid
