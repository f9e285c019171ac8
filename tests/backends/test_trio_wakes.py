"""Trio wake-ups from other threads, in batches (`unipool.backends._trio_wakes`)."""

from __future__ import annotations

import threading

import trio

from unipool.backends._trio_wakes import TrioWakes, trio_wakes


def test_callbacks_from_a_thread_run_in_trio_in_order_and_in_batches() -> None:
    """200 callbacks added from another thread in a burst run in trio, in the order they
    came, after far fewer wake-ups of trio than callbacks."""
    ran: list[int] = []
    wakeups = 0

    async def main() -> None:
        nonlocal wakeups
        wakes = trio_wakes()
        assert trio_wakes() is wakes  # one per run
        token = wakes._token
        real = token.run_sync_soon

        def counting(*args: object) -> None:
            nonlocal wakeups
            wakeups += 1
            real(*args)  # type: ignore[arg-type]

        wakes._token = type("Token", (), {"run_sync_soon": staticmethod(counting)})()
        done = trio.Event()

        def burst() -> None:
            for n in range(200):
                wakes.add(lambda n=n: ran.append(n))  # type: ignore[misc]
            token.run_sync_soon(done.set)

        thread = threading.Thread(target=burst)
        thread.start()
        with trio.fail_after(5):
            await done.wait()
            while len(ran) < 200:  # noqa: ASYNC110 - the last batch may still be queued
                await trio.sleep(0.001)
        thread.join()

    trio.run(main)
    assert ran == list(range(200))
    assert wakeups < 100, wakeups


def test_a_wake_up_after_the_run_ended_is_dropped() -> None:
    """A thread that finishes its work after the trio run is over wakes nobody, quietly."""

    async def main() -> TrioWakes:
        return trio_wakes()

    wakes = trio.run(main)
    ran: list[str] = []
    wakes.add(lambda: ran.append("late"))
    assert ran == []
