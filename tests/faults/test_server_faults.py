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
from unipool._core.policy import BACKOFF_MAX
from unipool._tempserver import TempServer

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


async def test_long_outage(server: TempServer, mode: str, backend: str, name: str) -> None:
    """Scenario 4: while the server is down, acquires fail at their timeout naming the cause;
    the pool recovers within its reconnect backoff of the server's return."""
    outage = 600.0 if LONG else 1.0
    timeout = 2.0 if LONG else 0.3
    dsn = server.dsn()
    options = named(name, min_size=3, max_size=5, acquire_timeout=timeout)
    async with open_pool(mode, dsn, backend, **options) as pool:
        await _op(pool)
        await in_thread(server.stop, "fast")
        end = time.monotonic() + outage
        failed: list[float] = []
        while time.monotonic() < end:
            start = time.monotonic()
            with pytest.raises(unipool.PoolTimeout) as info:
                await _op(pool)
            failed.append(time.monotonic() - start)
            assert isinstance(info.value.__cause__, unipool.ConnectError), info.value.__cause__
            await anyio.sleep(0.1)
        assert failed and max(failed) <= timeout + SLACK
        c_plus_r = await in_thread(_start_and_time, server)
        back = time.monotonic()
        recovered = None
        streak = 0
        while streak < 10:
            try:
                await _op(pool)
            except unipool.PoolTimeout:
                streak = 0
                assert time.monotonic() - back < BACKOFF_MAX + timeout + 1.0, "no recovery"
                continue
            if recovered is None:
                recovered = time.monotonic() - back
            streak += 1
        stats = pool.stats()
        print(
            f"outage {backend}/{mode}: {len(failed)} failed ops in {outage:g} s, each "
            f"{min(failed):.3f}-{max(failed):.3f} s (timeout {timeout:g}); first success "
            f"{recovered:.3f} s after ready; connect errors {stats.connect_errors}"
        )
        assert recovered is not None and recovered <= BACKOFF_MAX + c_plus_r + 2 * SLACK
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
