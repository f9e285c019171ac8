"""Leaks: a borrow held past ``leak_timeout`` is reported with its stack; a lost one is freed."""

from __future__ import annotations

import gc
import logging

import pytest

import unipool
from tests._modes import ModeConn, ModePool, in_thread, until
from tests.conftest import Admin, PoolFactory


async def _borrow_here(pool: ModePool) -> ModeConn:
    """Borrow with this function on the stack (in a worker thread for the blocking API)."""

    def borrow_here() -> unipool.Connection:
        return pool.pool.getconn()

    if pool.sync:
        return ModeConn(await in_thread(borrow_here), True)
    return ModeConn(await pool.pool.agetconn(), False)


async def test_a_borrow_held_too_long_is_logged_with_its_stack(
    make_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="unipool")
    async with make_pool(min_size=1, max_size=2, leak_timeout=0.2) as pool:
        conn = await _borrow_here(pool)
        assert pool.stats().overdue == 0
        async with pool.acquire():  # a brief borrow is never reported
            pass

        def reports() -> list[str]:
            return [r.getMessage() for r in caplog.records if "leak_timeout" in r.getMessage()]

        await until(lambda: bool(reports()), timeout=3)
        (text,) = reports()
        assert pool.stats().overdue == 1
        assert "borrowed for" in text and __file__ in text
        assert ("borrow_here" if pool.sync else "_borrow_here") in text
        assert "unipool/_" not in text  # the pool's own frames are left out
        await pool.release(conn)
        assert pool.stats().overdue == 1 and pool.stats().in_use == 0


async def test_a_dropped_borrow_is_closed_and_its_place_freed(
    make_pool: PoolFactory, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="unipool")
    async with make_pool(min_size=1, max_size=1) as pool:
        conn = await _borrow_here(pool)
        pid = await conn.fetchval("select pg_backend_pid()")
        del conn
        gc.collect()
        await until(lambda: any("garbage-collected" in r.getMessage() for r in caplog.records))
        await until(lambda: pool.stats().recycled["abandoned"] == 1)
        async with pool.acquire(timeout=5) as again:  # the only place was freed
            assert await again.fetchval("select pg_backend_pid()") != pid
        await until(
            lambda: not admin.value("select count(*) from pg_stat_activity where pid = %s", pid)
        )
        stats = pool.stats()
        assert stats.size == 1 and stats.in_use == 0 and stats.connections_lost == 0
