"""An asyncio loop hosted in a trio run: calls, errors, timers, cancellation, wake-ups
from other threads, and the end of the run. No server: plain asyncio coroutines."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import AsyncIterator

import anyio
import pytest
import sniffio

from unipool.backends import _hosted_loop
from unipool.backends._hosted_loop import hosted_loop
from unipool.backends.base import POOL_CALL

trio = pytest.importorskip("trio", reason="trio is not installed (unipool[trio])")

pytestmark = pytest.mark.skipif(
    not _hosted_loop.can_host(), reason="this interpreter's asyncio loop cannot be hosted"
)


async def _answer(value: int) -> int:
    await asyncio.sleep(0)
    return value


async def _fail() -> None:
    await asyncio.sleep(0)
    raise KeyError("boom")


def test_calls_return_and_raise_in_trio() -> None:
    async def main() -> None:
        hosted = hosted_loop()
        assert hosted_loop() is hosted  # one per run
        assert await hosted.acall(_answer, 7) == 7
        with pytest.raises(KeyError, match="boom"):
            await hosted.acall(_fail)
        values = []

        async def one(i: int) -> None:
            values.append(await hosted.acall(_answer, i))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        assert sorted(values) == list(range(50))

    trio.run(main)


def test_the_loop_runs_in_trios_thread_as_asyncio() -> None:
    """Code on the loop sees asyncio (sniffio, anyio, the running loop), without the
    caller's context variables; the trio side is trio's again afterwards."""

    async def inside() -> tuple[int, str, bool, bool]:
        with anyio.move_on_after(0.01) as scope:  # anyio's asyncio backend
            await anyio.sleep(1)
        return (
            threading.get_ident(),
            sniffio.current_async_library(),
            scope.cancelled_caught,
            POOL_CALL.get(),
        )

    async def main() -> None:
        token = POOL_CALL.set(True)
        try:
            ident, library, caught, pool_call = await hosted_loop().acall(inside)
        finally:
            POOL_CALL.reset(token)
        assert ident == threading.get_ident()
        assert (library, caught, pool_call) == ("asyncio", True, False)
        assert sniffio.current_async_library() == "trio"
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()

    trio.run(main)


def test_timers_fire_on_time() -> None:
    async def main() -> None:
        start = time.monotonic()
        await hosted_loop().acall(asyncio.sleep, 0.1)
        took = time.monotonic() - start
        assert 0.09 <= took < 0.5

    trio.run(main)


def test_a_cancelled_call_cancels_its_task_and_waits_for_it() -> None:
    finished: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # its cleanup takes a while: the caller waits
            finished.append("cleaned up")
            raise

    async def main() -> None:
        start = time.monotonic()
        with trio.move_on_after(0.05) as scope:
            await hosted_loop().acall(slow)
        assert scope.cancelled_caught
        assert finished == ["cleaned up"]
        assert time.monotonic() - start < 1.0

    trio.run(main)


def test_a_call_that_finishes_despite_its_cancel_returns_its_outcome() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "finished anyway"
        return "slept"

    async def main() -> None:
        result = None
        with trio.move_on_after(0.05):  # once the task is under way
            result = await hosted_loop().acall(stubborn)
        assert result == "finished anyway"

    trio.run(main)


def test_another_thread_wakes_the_loop() -> None:
    """``call_soon_threadsafe`` from another thread (the watchdog's cut) runs at once,
    while the driver is parked."""

    async def main() -> None:
        hosted = hosted_loop()
        loop = hosted.loop
        ran = trio.Event()
        token = trio.lowlevel.current_trio_token()
        await hosted.acall(_answer, 1)  # the driver is now parked, waiting for I/O
        start = time.monotonic()
        threading.Thread(
            target=loop.call_soon_threadsafe, args=(token.run_sync_soon, ran.set)
        ).start()
        with trio.fail_after(2):
            await ran.wait()
        assert time.monotonic() - start < 0.5

    trio.run(main)


def test_the_end_of_the_run_cancels_what_is_left_and_closes_the_loop() -> None:
    cancelled: list[bool] = []
    kept: list[_hosted_loop.HostedLoop] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> None:
        hosted = hosted_loop()
        kept.append(hosted)
        hosted.loop.create_task(forever())
        await hosted.acall(_answer, 1)

    trio.run(main)
    assert cancelled == [True]
    assert kept[0].closed and kept[0].loop.is_closed()

    async def next_run() -> None:
        hosted = hosted_loop()
        assert hosted is not kept[0]  # a new run, a new loop
        assert await hosted.acall(_answer, 2) == 2

    trio.run(next_run)


def test_a_call_still_parked_when_the_run_ends_is_woken() -> None:
    """A system task parked on a call when the run ends: its task is cancelled, and the
    caller gets the outcome; the run ends."""
    outcomes: list[str] = []

    async def background() -> None:
        try:
            await hosted_loop().acall(asyncio.sleep, 3600)
        except BaseException as exc:
            outcomes.append(type(exc).__name__)
            raise

    async def main() -> None:
        hosted_loop()
        trio.lowlevel.spawn_system_task(background)
        await trio.sleep(0.05)

    start = time.monotonic()
    trio.run(main)
    assert time.monotonic() - start < 3.0
    assert outcomes and outcomes[0] in ("Cancelled", "RuntimeError")


def test_a_task_that_keeps_the_loop_busy_does_not_keep_the_run_alive() -> None:
    async def poll_forever() -> None:
        while True:  # noqa: ASYNC110 - a busy poll, on purpose
            await asyncio.sleep(0)

    async def start() -> None:
        asyncio.get_running_loop().create_task(poll_forever())

    async def main() -> None:
        await hosted_loop().acall(start)
        await trio.sleep(0.05)  # the trio side still gets its turns

    begin = time.monotonic()
    trio.run(main)
    assert time.monotonic() - begin < 5.0


def test_timers_follow_trios_clock() -> None:
    """Under trio's autojump clock asyncio's sleep jumps with trio's, and a trio deadline
    around it agrees with it."""
    from trio.testing import MockClock

    async def main() -> None:
        start = time.monotonic()
        with trio.move_on_after(5) as scope:
            await hosted_loop().acall(asyncio.sleep, 2)
        assert not scope.cancelled_caught
        assert time.monotonic() - start < 1.0  # virtual seconds

    trio.run(main, clock=MockClock(autojump_threshold=0))


def test_async_generators_are_asyncios() -> None:
    """An async generator dropped half-way on the loop is finalized by asyncio, its
    cleanup awaiting asyncio."""
    log: list[str] = []

    async def numbers() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            log.append("cleaned up")

    async def use() -> None:
        gen = numbers()
        await gen.__anext__()
        del gen

    async def main() -> None:
        await hosted_loop().acall(use)
        gc.collect()
        await hosted_loop().acall(asyncio.sleep, 0.01)

    trio.run(main)
    assert log == ["cleaned up"]
