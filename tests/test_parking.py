"""The async waiters' parking: deadlines on one shared timer (asyncio), move_on_at (trio)."""

from __future__ import annotations

import asyncio
import math

import pytest
import trio

from unipool._facades.parking import AsyncioParking, TrioParking


def test_asyncio_deadlines_out_of_order_each_ring_on_time() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        parking = AsyncioParking(loop)
        start = loop.time()
        woke: dict[str, float] = {}

        async def park(name: str, after: float) -> None:
            token = parking.token()
            await parking.wait(token, start + after)
            woke[name] = loop.time() - start

        await asyncio.gather(
            *(park(n, a) for n, a in (("late", 0.06), ("early", 0.02), ("middle", 0.04)))
        )
        assert sorted(woke, key=woke.__getitem__) == ["early", "middle", "late"]
        for name, after in (("late", 0.06), ("early", 0.02), ("middle", 0.04)):
            assert woke[name] >= after

    asyncio.run(main())


def test_asyncio_woken_waits_leave_and_the_alarm_follows_the_earliest() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        parking = AsyncioParking(loop)
        now = loop.time()
        for _ in range(100):  # woken at once, as a granted waiter is
            token = parking.token()
            parking.wake(token)
            await parking.wait(token, now + 30)
        assert len(parking._waits) <= 1  # done waits are dropped from the front
        assert parking._alarm_at == now + 30
        token = parking.token()
        task = asyncio.ensure_future(parking.wait(token, now + 0.01))
        await asyncio.sleep(0)
        assert parking._alarm_at == now + 0.01  # an earlier deadline re-arms
        await task
        assert token.done() and loop.time() >= now + 0.01
        parking.wake(token)  # waking twice is harmless

    asyncio.run(main())


def test_asyncio_no_deadline_waits_for_its_wake() -> None:
    async def main() -> None:
        parking = AsyncioParking(asyncio.get_running_loop())
        token = parking.token()
        asyncio.get_running_loop().call_later(0.01, parking.wake, token)
        await parking.wait(token, math.inf)
        assert parking._alarm is None

    asyncio.run(main())


def test_asyncio_cancelled_wait_raises() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        parking = AsyncioParking(loop)
        token = parking.token()
        task = asyncio.ensure_future(parking.wait(token, loop.time() + 30))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert token.cancelled()

    asyncio.run(main())


def test_trio_deadline_and_wake() -> None:
    async def main() -> None:
        parking = TrioParking()
        token = parking.token()
        start = trio.current_time()
        await parking.wait(token, start + 0.01)
        assert trio.current_time() >= start + 0.01 and not token.is_set()
        token = parking.token()
        parking.wake(token)
        await parking.wait(token, math.inf)

    trio.run(main)
