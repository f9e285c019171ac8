"""The async waiters' parking: deadlines on one shared timer (asyncio), move_on_at (trio)."""

from __future__ import annotations

import asyncio
import math

import pytest
import trio
import trio.testing

from unipool._facades.parking import AsyncioParking, TrioParking


def test_asyncio_deadlines_out_of_order_each_ring_on_time() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        parking = AsyncioParking(loop)
        start = loop.time()
        woke: dict[str, float] = {}

        async def park(name: str, after: float) -> None:
            token = parking.token()
            await parking.park(token, start + after)
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
            await parking.park(token, now + 30)
        assert len(parking._waits) <= 1  # done waits are dropped from the front
        assert parking._alarm_at == now + 30
        token = parking.token()
        task = asyncio.ensure_future(parking.park(token, now + 0.01))
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
        await parking.park(token, math.inf)
        assert parking._alarm is None

    asyncio.run(main())


def test_asyncio_cancelled_wait_raises() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        parking = AsyncioParking(loop)
        token = parking.token()
        task = asyncio.ensure_future(parking.park(token, loop.time() + 30))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert token.cancelled()

    asyncio.run(main())


def _alarm_tasks() -> int:
    """How many alarm tasks run in this trio run."""
    todo = [trio.lowlevel.current_root_task()]
    found = 0
    while todo:
        task = todo.pop()
        if task is not None:
            found += task.name.endswith("unipool-alarm")
            todo.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return found


def test_trio_deadlines_share_one_alarm_task() -> None:
    async def main() -> None:
        parking = TrioParking()
        start = trio.current_time()
        woke: dict[str, float] = {}

        async def park(name: str, after: float) -> None:
            await parking.park(parking.token(), start + after)
            woke[name] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            for name, after in (("late", 0.06), ("early", 0.02), ("middle", 0.04)):
                nursery.start_soon(park, name, after)
        assert sorted(woke, key=woke.__getitem__) == ["early", "middle", "late"]
        assert woke["early"] >= 0.02 and woke["middle"] >= 0.04 and woke["late"] >= 0.06
        assert _alarm_tasks() == 1
        token = parking.token()
        parking.wake(token)
        await parking.park(token, math.inf)
        parking.close()
        await trio.testing.wait_all_tasks_blocked()
        assert _alarm_tasks() == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_trio_cancelled_wait_raises() -> None:
    async def main() -> None:
        parking = TrioParking()
        with trio.move_on_after(0.01) as scope:
            await parking.park(parking.token(), trio.current_time() + 30)
        assert scope.cancelled_caught
        parking.close()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
