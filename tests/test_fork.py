"""A forked child never reuses, nor ends, the parent's connections."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

import unipool
from tests._modes import in_thread
from tests.conftest import PoolFactory
from unipool._dsn import parse_dsn

try:
    from unipool.backends.psqlpy._fork import ForkedProcessError
except ImportError:  # psqlpy is not installed: its tests skip
    ForkedProcessError = unipool.InterfaceError  # type: ignore[assignment,misc]

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
        pytest.skip("psqlpy cannot run in a child forked after it ran: see the tests below")
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


def test_a_block_open_across_a_fork(dsn: str, backend: str) -> None:
    """A ``with pool.acquire()`` block the child inherits: leaving it there says the
    connection is not the child's pool's, and the parent's connection is untouched."""
    if backend == "psqlpy":
        pytest.skip("psqlpy cannot run in a child forked after it ran: see the tests below")
    with unipool.connect(dsn, backend=backend, min_size=1, max_size=1) as pool:
        block = pool.acquire()
        conn = block.__enter__()
        parent_pid = conn.fetchval("select pg_backend_pid()")

        def leave_then_query() -> None:
            try:
                block.__exit__(None, None, None)
            except unipool.InterfaceError:
                assert pool.fetchval("select pg_backend_pid()") != parent_pid
                raise

        outcome = _in_child(leave_then_query)
        assert outcome.startswith("InterfaceError after 0."), outcome
        assert "not borrowed from this pool" in outcome
        assert conn.fetchval("select pg_backend_pid()") == parent_pid
        block.__exit__(None, None, None)
        assert pool.stats().in_use == 0


# -- psqlpy: a child forked after psqlpy ran cannot use it, and says so at once -------------

#: How long a child may take: a psqlpy call that hangs is killed after this, failing the test.
CHILD_TIMEOUT = 20.0


def _in_child(body: Callable[[], object]) -> str:
    """Run ``body`` in a forked child: what it raised (type and message), or "returned".

    A child still running after `CHILD_TIMEOUT` is killed, and the test fails.
    """
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child, which never returns
        os.close(read)
        start = time.monotonic()
        try:
            body()
            outcome = "returned"
        except BaseException as exc:
            outcome = f"{type(exc).__name__} after {time.monotonic() - start:.1f} s: {exc}"
        finally:
            os.write(write, outcome.encode())
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while not os.waitpid(child, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            os.close(read)
            pytest.fail(f"the child still ran after {CHILD_TIMEOUT} s: it hung")
        time.sleep(0.01)
    with os.fdopen(read, "rb") as pipe:
        return pipe.read().decode()


@pytest.fixture
def psqlpy_pool(dsn: str) -> Iterator[unipool.Pool]:
    """A blocking psqlpy pool that has run a query in this process."""
    pytest.importorskip("psqlpy", reason="the psqlpy driver is not installed (unipool[psqlpy])")
    with unipool.connect(dsn, backend="psqlpy", min_size=1, acquire_timeout=10) as pool:
        assert pool.fetchval("select 1") == 1
        yield pool


def _fails_at_once(outcome: str, error: type[unipool.Error]) -> None:
    assert outcome.startswith(f"{error.__name__} after 0."), outcome  # not after 10 s
    assert "psqlpy cannot run in a process forked after psqlpy was used" in outcome
    assert "create the pool in the child" in outcome


def test_psqlpy_inherited_pool_fails_at_once_in_a_child(
    psqlpy_pool: unipool.Pool, dsn: str
) -> None:
    outcome = _in_child(lambda: psqlpy_pool.fetchval("select 1"))
    _fails_at_once(outcome, ForkedProcessError)
    info = parse_dsn(dsn, env={})
    host, port = info.hosts[0]
    assert f"server {host}:{port}, database " in outcome  # a ConnectError: names the server
    assert psqlpy_pool.fetchval("select 1") == 1  # the parent's pool is untouched


def test_psqlpy_new_pool_fails_at_once_in_a_child(psqlpy_pool: unipool.Pool, dsn: str) -> None:
    def new_pool() -> object:
        with unipool.connect(dsn, backend="psqlpy", acquire_timeout=10) as pool:
            return pool.fetchval("select 1")

    outcome = _in_child(new_pool)
    _fails_at_once(outcome, ForkedProcessError)
    assert issubclass(ForkedProcessError, unipool.InterfaceError)
    assert issubclass(ForkedProcessError, unipool.ConnectError)  # permanent: fails waiters


def test_psqlpy_inherited_connection_fails_at_once_in_a_child(psqlpy_pool: unipool.Pool) -> None:
    with psqlpy_pool.acquire() as conn:
        outcome = _in_child(lambda: conn.fetchval("select 1"))
        assert conn.fetchval("select 2") == 2
    _fails_at_once(outcome, unipool.InterfaceError)


_FORK_FIRST = """
import os, sys, unipool
child = os.fork()
if child == 0:
    with unipool.connect(sys.argv[1], backend="psqlpy", acquire_timeout=10) as pool:
        os._exit(0 if pool.fetchval("select 1") == 1 else 1)
_, status = os.waitpid(child, 0)
with unipool.connect(sys.argv[1], backend="psqlpy", acquire_timeout=10) as pool:
    assert pool.fetchval("select 2") == 2
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_psqlpy_works_in_a_child_forked_before_psqlpy_ran(dsn: str) -> None:
    """The way out the error names: fork first, then use psqlpy (in a fresh interpreter,
    as this one has run psqlpy already)."""
    pytest.importorskip("psqlpy", reason="the psqlpy driver is not installed (unipool[psqlpy])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _FORK_FIRST, dsn],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
