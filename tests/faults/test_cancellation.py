"""Cancellation on a real server: a storm of cancelled acquires (1), an outer deadline (2).

Threads cannot be cancelled, so these run in the async modes only; timeouts cover the
blocking face (see test_load.py and test_network_faults.py).
"""

from __future__ import annotations

import random
import time

import anyio
import pytest

from tests._modes import in_thread, open_pool
from tests.faults.conftest import via
from tests.faults.proxy import FaultProxy
from tests.faults.tools import LONG, backends_of, named, settled


def _async_only(mode: str) -> None:
    if mode == "sync":
        pytest.skip("threads cannot be cancelled")


async def test_cancellation_storm(dsn: str, mode: str, backend: str, name: str) -> None:
    """Scenario 1: acquires cancelled at random points (waiting, checking, querying,
    releasing) leave the pool whole: size = idle = max = the server's count, all idle."""
    _async_only(mode)
    rounds, tasks = (10, 1000) if LONG else (3, 150)
    rng = random.Random(1)
    outcomes = {"done": 0, "cancelled": 0}
    options = named(name, min_size=5, max_size=5, check=0.005)
    async with open_pool(mode, dsn, backend, **options) as pool:

        async def task(deadline: float) -> None:
            with anyio.move_on_after(deadline) as scope:
                async with pool.acquire() as conn:
                    await conn.execute("begin")
                    await conn.fetchval("select 1 from pg_sleep(0.01)")
                outcomes["done"] += 1
            if scope.cancelled_caught:
                outcomes["cancelled"] += 1

        for _ in range(rounds):
            async with anyio.create_task_group() as tg:
                for _ in range(tasks):
                    tg.start_soon(task, rng.uniform(0, 0.02))
                    await anyio.sleep(0.002)
            await settled(pool, dsn, name, 5)
            states = [state for _, state in await in_thread(backends_of, dsn, name)]
            assert states == ["idle"] * 5
            stats = pool.stats()
            assert (stats.in_use, stats.waiting) == (0, 0)
        assert await pool.fetchval("select 1") == 1
        print(f"cancellation storm {backend}/{mode}: {outcomes}, {pool.stats().connects} connects")
        assert outcomes["done"] + outcomes["cancelled"] == rounds * tasks
        assert outcomes["cancelled"] > 0 and outcomes["done"] > 0


@pytest.mark.parametrize("fault", ["refuse", "freeze"])
async def test_outer_deadline(
    proxy: FaultProxy, dsn: str, mode: str, backend: str, name: str, fault: str
) -> None:
    """Scenario 2: a caller's own deadline ends an acquire whose check fails (the server
    refuses) or hangs (the network is frozen), long before the pool's 30 s timeout: the
    pool's own calls are dropped, not cancelled on a server that may never answer."""
    _async_only(mode)
    options = named(name, min_size=2, max_size=2, check=0.0, acquire_timeout=30)
    async with open_pool(mode, via(proxy, dsn), backend, **options) as pool:
        assert await pool.fetchval("select 1") == 1
        getattr(proxy, fault)()
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            with anyio.fail_after(1):
                await pool.fetchval("select 1")
        took = time.monotonic() - start
        print(f"outer deadline ({fault}) {backend}/{mode}: raised after {took:.3f} s")
        assert took <= 1.05 + 0.1
        proxy.restore()
        with anyio.fail_after(5):
            assert await pool.fetchval("select 1") == 1
