"""The server goes away: restart (3), long outage (4), idle kill (6), on throwaway servers.

Each test prints what it measured (``pytest -s`` shows it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anyio
import psycopg
import pytest

import unipool
from tests._modes import ModePool, in_thread, open_pool, until
from tests.faults.tools import LONG, backends_of, named, settled
from unipool._core.policy import BACKOFF_MAX, OUTAGE_AFTER
from unipool.testing import TempServer

#: Timing slack for a noisy 2-core machine.
SLACK = 0.15


async def _op(pool: ModePool, timeout: float | None = None) -> None:
    async with pool.acquire(timeout) as conn:
        assert await conn.fetchval("select 1") == 1


async def _burst(pool: ModePool, n: int) -> None:
    """Borrow ``n`` connections at once: every idle one is handed out (and checked)."""
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(_op, pool)


def _connect_and_round_trip(dsn: str) -> float:
    """C + R: one fresh connection and one query, timed."""
    start = time.monotonic()
    with psycopg.connect(dsn) as conn:
        conn.execute("select 1")
    return time.monotonic() - start


async def test_restart(server: TempServer, mode: str, backend: str, name: str) -> None:
    """Scenario 3: a fast restart under an idle pool costs no user error and no backoff."""
    n = 20 if LONG else 10
    dsn = server.dsn()
    async with open_pool(mode, dsn, backend, **named(name, min_size=n, max_size=n)) as pool:
        await _burst(pool, n)
        assert pool.stats().connects == n  # each has served a query
        c_plus_r = await in_thread(_connect_and_round_trip, dsn)
        await in_thread(server.restart, "fast")
        back = time.monotonic()
        pattern = ""
        first = None
        for _ in range(20):
            try:
                await _op(pool)
            except unipool.Error as exc:
                pattern += "E"
                print(f"error after restart: {exc!r}")
                continue
            pattern += "."
            if first is None:
                first = time.monotonic() - back
        stats = pool.stats()
        print(
            f"restart {backend}/{mode}: {pattern} first op {first} s after ready "
            f"(C+R {c_plus_r:.3f} s), lost {stats.connections_lost}, "
            f"connect errors {stats.connect_errors}"
        )
        assert pattern == "." * 20
        assert first is not None and first <= c_plus_r + 0.1 + SLACK
        # Every stale connection is found dead without a failed connect (no serial backoff).
        assert stats.connect_errors == 0
        assert 1 <= stats.connections_lost <= n
        # Stale connections not yet handed out are still counted (each is checked at its
        # next hand-out): hold them all at once, then the pool and the server agree.
        held = [await pool.getconn() for _ in range(n)]
        for conn in held:
            await pool.release(conn)
        assert pool.stats().connections_lost == n
        await settled(pool, dsn, name, n)


#: What a connect attempt says of a server that is down: refused, or, for one made while
#: the server shut down, a connection closed or a refusal to start a session.
_DOWN = ("refused", "closed", "shutting down", "terminat")


async def test_long_outage(server: TempServer, mode: str, backend: str, name: str) -> None:
    """Scenario 4: while the server is down, acquires fail naming the cause: at their
    timeout (PoolTimeout caused by the ConnectError) while the outage is young, then at
    once with the ConnectError itself; the pool recovers at the first request after the
    server is back."""
    outage = 600.0 if LONG else 2.0
    timeout = 2.0 if LONG else 0.3
    dsn = server.dsn()
    options = named(name, min_size=3, max_size=5, acquire_timeout=timeout)
    async with open_pool(mode, dsn, backend, **options) as pool:
        await _op(pool)
        await in_thread(server.stop, "fast")
        stopped = time.monotonic()
        end = stopped + outage
        # Failing ops: while the outage is young they wait (PoolTimeout caused by the
        # ConnectError, or the ConnectError of the attempt that established the outage);
        # those that start once it is established fail at once with the ConnectError.
        established = stopped + OUTAGE_AFTER + timeout + SLACK
        waited: list[float] = []
        fast: list[float] = []
        slowest: list[tuple[float, float]] = []  # (took, when), for the failure message
        while time.monotonic() < end:
            start = time.monotonic()
            with pytest.raises((unipool.PoolTimeout, unipool.ConnectError)) as info:
                await _op(pool)
            took = time.monotonic() - start
            assert took <= timeout + SLACK
            error: BaseException | None = info.value
            if isinstance(error, unipool.PoolTimeout):
                assert start < established, "still waiting out timeouts"
                error = error.__cause__
            assert isinstance(error, unipool.ConnectError), error
            assert error.sqlstate == "08001" and any(cause in str(error) for cause in _DOWN)
            (fast if start >= established else waited).append(took)
            if start >= established:
                slowest = sorted([*slowest, (took, start - stopped)])[-5:]
            await anyio.sleep(0.1)
        assert fast and max(fast) <= SLACK, slowest
        c_plus_r = await in_thread(_start_and_time, server)
        back = time.monotonic()
        recovered = None
        streak = 0
        while streak < 10:
            try:
                await _op(pool)
            except (unipool.PoolTimeout, unipool.ConnectError):
                streak = 0
                assert time.monotonic() - back < BACKOFF_MAX + timeout + 1.0, "no recovery"
                continue
            if recovered is None:
                recovered = time.monotonic() - back
            streak += 1
        stats = pool.stats()
        fast.sort()
        print(
            f"outage {backend}/{mode}: {len(waited) + len(fast)} failed ops in {outage:g} s: "
            f"{len(waited)} while it was young (up to {max(waited, default=0):.3f} s), then "
            f"{len(fast)} at once "
            f"(median {fast[len(fast) // 2] * 1000:.1f} ms, max {fast[-1] * 1000:.1f} ms); "
            f"first success {recovered:.3f} s after ready; connect errors {stats.connect_errors}"
        )
        assert recovered is not None and recovered <= c_plus_r + 2 * SLACK
        assert stats.connect_errors >= 1
        await settled(pool, dsn, name, 3)


def _start_and_time(server: TempServer) -> float:
    server.start()
    return _connect_and_round_trip(server.dsn())


@pytest.fixture(scope="module")
def idle_server() -> Iterator[TempServer]:
    """A server that ends every session idle for longer than ``idle_session_timeout``."""
    timeout = "5s" if LONG else "300ms"
    with TempServer(settings={"idle_session_timeout": timeout}) as server:
        yield server


async def test_idle_kill(idle_server: TempServer, mode: str, backend: str, name: str) -> None:
    """Scenario 6: connections the server closed while idle are never handed out."""
    idle, n = (10.0, 1000) if LONG else (0.7, 100)
    dsn = idle_server.dsn()
    async with open_pool(mode, dsn, backend, **named(name, min_size=5, max_size=5)) as pool:
        await anyio.sleep(idle)  # idle_session_timeout closes all five meanwhile
        assert backends_of(dsn, name) == []
        latencies: list[float] = []

        async def worker() -> None:
            for _ in range(n // 5):
                start = time.monotonic()
                await _op(pool)
                latencies.append(time.monotonic() - start)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(worker)
        await until(lambda: pool.stats().idle == 5)  # replacements may still be opening
        stats = pool.stats()
        print(
            f"idle kill {backend}/{mode}: {len(latencies)} ok, slowest {max(latencies):.3f} s, "
            f"lost {stats.connections_lost}, connects {stats.connects}"
        )
        assert len(latencies) == n
        assert stats.connections_lost == 5
        assert stats.connects == 10
