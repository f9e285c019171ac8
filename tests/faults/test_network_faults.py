"""The network misbehaves, through the fault proxy: a frozen server (5), slow connects (9)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

import unipool
from tests._modes import ModePool, open_pool, until
from tests.faults.conftest import via
from tests.faults.proxy import FaultProxy
from tests.faults.tools import allow_threads

SLACK = 0.15


async def _op(pool: ModePool, timeout: float | None = None) -> None:
    async with pool.acquire(timeout) as conn:
        assert await conn.fetchval("select 1") == 1


async def test_frozen_server(proxy: FaultProxy, dsn: str, mode: str, backend: str) -> None:
    """Scenario 5: while the network is a black hole, opening a connection is bounded by
    ``connect_timeout`` and acquires fail at their timeout naming the cause; after the thaw
    the pool refills, and borrowed connections frozen meanwhile work again."""
    options: dict[str, Any] = {"min_size": 2, "max_size": 3, "connect_timeout": 0.5}
    async with open_pool(mode, via(proxy, dsn), backend, **options) as pool:
        held = [await pool.getconn(), await pool.getconn()]  # the third must be opened
        proxy.freeze()
        # libpq waits at least 2 s whatever connect_timeout says.
        timeout = 2.5 if backend == "psycopg" else 1.0
        start = time.monotonic()
        with pytest.raises(unipool.PoolTimeout) as info:
            await _op(pool, timeout=timeout)
        took = time.monotonic() - start
        assert isinstance(info.value.__cause__, unipool.ConnectError)
        assert timeout <= took <= timeout + SLACK
        assert pool.stats().connect_errors >= 1
        proxy.thaw()
        for conn in held:  # they were frozen, not broken: still usable
            assert await conn.fetchval("select 2") == 2
            await pool.release(conn)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(_op, pool, 5.0)
        stats = pool.stats()
        assert stats.size == 3 and stats.connections_lost == 0
        print(f"frozen {backend}/{mode}: acquire failed after {took:.3f} s, then refilled")


@pytest.fixture
def slow_proxy(proxy: FaultProxy) -> FaultProxy:
    """The proxy, with C = 150 ms added to every new connection."""
    proxy.accept_delay = 0.15
    return proxy


async def test_spike(slow_proxy: FaultProxy, dsn: str, mode: str, backend: str) -> None:
    """Scenario 9: 50 concurrent short queries on 5 warm connections with slow connects are
    served by the warm ones; few connections are opened."""
    allow_threads(60)
    async with open_pool(mode, via(slow_proxy, dsn), backend, min_size=5, max_size=50) as pool:
        await until(lambda: pool.stats().idle == 5)
        done: list[float] = []
        start = time.monotonic()

        async def query() -> None:
            await pool.fetchval("select pg_sleep(0.002)")
            done.append(time.monotonic() - start)

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(query)
        opened = slow_proxy.accepted - 5  # including any still being opened
        print(f"spike {backend}/{mode}: all served in {max(done):.3f} s, {opened} opened")
        assert len(done) == 50
        assert opened <= 5
        assert max(done) <= 0.3 + SLACK
