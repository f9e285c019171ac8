"""Connections killed under load: a ``pg_terminate_backend`` storm (7)."""

from __future__ import annotations

import time
from collections import Counter

import anyio

import unipool
from tests._modes import open_pool
from tests.faults.tools import LONG, TerminateStorm, named, settled


async def test_terminate_storm(dsn: str, mode: str, backend: str, name: str) -> None:
    """Scenario 7: a backend killed every 100 ms under 10 workers. Only a query in flight on
    a killed connection fails, with ConnectionLost; every kill is counted once."""
    duration = 60.0 if LONG else 1.5
    ok = 0
    errors: Counter[str] = Counter()
    async with open_pool(mode, dsn, backend, **named(name, min_size=5, max_size=5)) as pool:

        async def worker(end: float) -> None:
            nonlocal ok
            while time.monotonic() < end:
                try:
                    assert await pool.fetchval("select 1") == 1
                    ok += 1
                except unipool.ConnectionLost:
                    errors["ConnectionLost"] += 1
                except unipool.Error as exc:  # counted, and fails the test below
                    errors[repr(exc)] += 1

        with TerminateStorm(dsn, name, 0.1) as storm:
            end = time.monotonic() + duration
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(worker, end)
        # A connection killed after its last use still idles in the pool: it is checked
        # at its next hand-out. Past every backend's check threshold, borrow all five.
        await anyio.sleep(0.1)
        held = [await pool.getconn() for _ in range(5)]
        for conn in held:
            assert await conn.fetchval("select 1") == 1
            ok += 1
        for conn in held:
            await pool.release(conn)
        await settled(pool, dsn, name, 5)
        stats = pool.stats()
        failed = sum(errors.values())
        print(
            f"storm {backend}/{mode}: {storm.kills} kills, {ok} ok, {dict(errors)}, "
            f"lost {stats.connections_lost}, connect errors {stats.connect_errors}"
        )
        assert storm.kills >= duration * 5
        assert set(errors) <= {"ConnectionLost"}
        assert failed <= storm.kills
        # A hand-out whose connection is found dead before the borrower gets it is
        # counted as an acquire too.
        assert ok + failed <= stats.acquires <= ok + failed + stats.connections_lost
        # A kill lands on a connection the pool holds (lost), or on one still completing
        # its start-up (a failed connect): the server is up, nothing else fails to connect.
        assert stats.connections_lost + stats.connect_errors == storm.kills
        assert (stats.in_use, stats.waiting) == (0, 0)
