"""The clock a pool's async face reads: the running loop's own."""

from __future__ import annotations

import asyncio
import time

import trio
import trio.testing

from unipool._binding import loop_clock


def test_asyncios_own_loop_clock_is_monotonic_itself() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert loop_clock("asyncio", loop) is time.monotonic
    finally:
        loop.close()


def test_a_loop_with_a_clock_of_its_own_keeps_it() -> None:
    class Frozen(asyncio.SelectorEventLoop):
        def time(self) -> float:
            return 42.0

    loop = Frozen()
    try:
        assert loop_clock("asyncio", loop)() == 42.0
    finally:
        loop.close()


def test_trio_runs_on_the_runs_clock() -> None:
    mock = trio.testing.MockClock()

    async def main() -> tuple[float, float]:
        clock = loop_clock("trio", trio.lowlevel.current_trio_token())
        mock.jump(12_345.0)  # far from time.monotonic(), whatever the machine's uptime
        return clock(), trio.current_time()

    read, run_time = trio.run(main, clock=mock)
    assert read == run_time and 12_345.0 <= read < 12_346.0
