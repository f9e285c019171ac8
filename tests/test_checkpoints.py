"""Async calls are checkpoints (DESIGN §11), on every backend under asyncio and trio."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from tests.conftest import PoolFactory


@pytest.fixture(autouse=True)
def async_only(mode: str) -> None:
    if mode == "sync":
        pytest.skip("a checkpoint is an async notion: blocking calls are bounded by timeouts")


async def test_acquire_in_a_cancelled_scope_takes_nothing(make_pool: PoolFactory) -> None:
    async with make_pool(min_size=1, max_size=1, check=None) as mp:
        pool = mp.pool
        await pool.afetchval("select 1")
        before = pool.stats()
        assert before.idle == 1
        with anyio.CancelScope() as scope:
            scope.cancel()
            async with pool.acquire():
                pytest.fail("a connection was handed out in a cancelled scope")
        assert scope.cancelled_caught
        with anyio.move_on_after(0) as late:  # a deadline already past cancels the same way
            await pool.afetchval("select 1")
        assert late.cancelled_caught
        after = pool.stats()
        assert (after.idle, after.in_use, after.acquires) == (1, 0, before.acquires)


async def test_an_acquire_that_would_wait_in_a_cancelled_scope_takes_nothing(
    make_pool: PoolFactory,
) -> None:
    async with make_pool(min_size=1, max_size=1, check=None) as mp:
        pool = mp.pool
        async with pool.acquire() as held:  # nothing idle: a request would queue
            before = pool.stats()
            with anyio.CancelScope() as scope:
                scope.cancel()
                async with pool.acquire():
                    pytest.fail("a connection was handed out in a cancelled scope")
            assert scope.cancelled_caught
            assert pool.stats().waiting == 0  # it left the queue
            await held.fetchval("select 1")
        after = pool.stats()  # given back to nobody: idle, not granted to the cancelled request
        assert (after.idle, after.in_use, after.acquires) == (1, 0, before.acquires)


async def test_a_loop_of_acquires_lets_other_tasks_run(make_pool: PoolFactory) -> None:
    async with make_pool(min_size=1, max_size=1, check=None) as mp:
        pool = mp.pool
        await pool.afetchval("select 1")
        ticks = 0

        async def other() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            await anyio.lowlevel.checkpoint()  # let it start
            start = ticks
            for _ in range(1000):
                async with pool.acquire():
                    pass
            ran = ticks - start
            tg.cancel_scope.cancel()
        assert ran >= 500, f"the other task ran {ran} times during 1000 acquires"


async def test_a_loop_of_acquires_sees_its_deadline(make_pool: PoolFactory) -> None:
    async with make_pool(min_size=1, max_size=1, check=None) as mp:
        pool = mp.pool
        await pool.afetchval("select 1")
        done = 0
        with anyio.move_on_after(0.05) as scope:
            for _ in range(10_000_000):  # bounded: far more than 0.05 s of acquires
                async with pool.acquire():
                    pass
                done += 1
        assert scope.cancelled_caught and done > 0
        stats = pool.stats()
        assert (stats.idle, stats.in_use) == (1, 0)


async def test_giving_back_completes_in_a_cancelled_scope(make_pool: PoolFactory) -> None:
    async with make_pool(min_size=1, max_size=1, check=None) as mp:
        pool = mp.pool
        with anyio.CancelScope() as scope:
            async with pool.acquire() as conn:
                await conn.execute("set application_name = 'dirty'")  # the reset must run
                scope.cancel()
        assert not scope.cancelled_caught  # nothing awaited after cancel() could be cut
        stats = pool.stats()
        assert (stats.idle, stats.in_use) == (1, 0)
        async with pool.acquire() as conn:
            assert await conn.fetchval("show application_name") != "dirty"
