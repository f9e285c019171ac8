"""The async face without a task group (a pool used lazily, or ``aopen()`` alone): what the
core decides outside a request is still carried out. Fake backend, trio's mock clock."""

from __future__ import annotations

import gc

import trio
import trio.testing

import unipool
from tests.fake_backend import FakeBackend
from unipool import ConnectionLost


def run(main: object) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]


def test_resize_up_serves_a_waiter() -> None:
    async def main() -> None:
        pool = unipool.connect(None, backend=FakeBackend(), min_size=1, max_size=1, check=None)
        await pool.aopen()
        held = await pool.agetconn()
        waited: list[float] = []

        async def waiter() -> None:
            start = trio.current_time()
            conn = await pool.agetconn(timeout=3)
            waited.append(trio.current_time() - start)
            await pool.arelease(conn)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.1)
            pool.resize(2)  # room for one more: opened for the waiter
        assert len(waited) == 1 and waited[0] < 0.5
        await pool.arelease(held)
        await pool.aclose()

    run(main)


def test_closes_decided_by_resize_are_made() -> None:
    async def main() -> None:
        backend = FakeBackend()
        pool = unipool.connect(None, backend=backend, min_size=0, max_size=3, check=None)
        await pool.aopen()
        a, b, c = [await pool.agetconn() for _ in range(3)]
        await pool.arelease(b)
        await pool.arelease(c)
        pool.resize(1)  # the two idle ones must go
        del a  # a borrow dropped: reaped on the loop
        gc.collect()
        await trio.sleep(0.01)
        await pool.afetchval("x")  # the next request makes what waited for an await
        stats = pool.stats()
        assert backend.live == stats.size == stats.idle, (backend, stats)
        await pool.aclose()
        assert backend.live == 0, backend

    run(main)


def test_aclose_abandons_opens_nobody_makes() -> None:
    async def main() -> None:
        pool = unipool.connect(None, backend=FakeBackend(), min_size=1, max_size=2, check=0)
        await pool.aopen()
        conn = await pool.agetconn()
        await pool._arelease(conn, ConnectionLost("gone", sqlstate="08006"))  # a refill waits
        start = trio.current_time()
        await pool.aclose(timeout=3)
        assert trio.current_time() - start < 0.5
        assert pool.stats().size == 0

    run(main)
