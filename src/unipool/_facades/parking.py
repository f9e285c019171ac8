"""Where an async waiter parks: the event loop's own primitives, chosen once per pool.

The contended hand-off runs once per borrow when connections are scarce, so
it uses the runtime's cheapest wake-up directly: on asyncio a bare future
woken by ``set_result`` (deadlines share one timer), on trio a
``trio.Event`` under ``move_on_at``. Both raise on cancellation like any
other checkpoint.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any, Protocol


class Parking(Protocol):
    def token(self) -> Any:
        """A fresh wake-up token for one wait."""

    def wake(self, token: Any) -> None:
        """Wake whoever waits on ``token`` (now or later); idempotent."""

    async def wait(self, token: Any, deadline: float) -> None:
        """Until ``token`` is woken or the clock reaches ``deadline``."""


def _wake_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class AsyncioParking:
    """Futures, and one timer for all their deadlines.

    A timer per wait would cost a heap push and a cancelled handle per
    borrow. Instead the waits queue in arrival order (their deadlines are
    then mostly in order too) and a single alarm is set for the earliest
    deadline; when it rings it wakes the waits that are due and re-arms.
    """

    __slots__ = ("_alarm", "_alarm_at", "_loop", "_waits")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waits: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = math.inf

    def token(self) -> asyncio.Future[None]:
        return self._loop.create_future()

    wake = staticmethod(_wake_future)

    async def wait(self, token: asyncio.Future[None], deadline: float) -> None:
        if deadline != math.inf:
            waits = self._waits
            while waits and waits[0][1].done():
                waits.popleft()
            waits.append((deadline, token))
            if deadline < self._alarm_at:
                self._arm(deadline)
        await token

    def _arm(self, when: float) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm_at = when
        self._alarm = self._loop.call_at(when, self._ring)

    def _ring(self) -> None:
        self._alarm, self._alarm_at = None, math.inf
        now = self._loop.time()
        pending: deque[tuple[float, asyncio.Future[None]]] = deque()
        for deadline, token in self._waits:
            if token.done():
                continue
            if deadline <= now:
                token.set_result(None)
            else:
                pending.append((deadline, token))
        self._waits = pending
        if pending:
            self._arm(min(deadline for deadline, _ in pending))


class TrioParking:
    __slots__ = ("_event", "_move_on_at")

    def __init__(self) -> None:
        import trio

        self._event = trio.Event
        self._move_on_at = trio.move_on_at

    def token(self) -> Any:
        return self._event()

    @staticmethod
    def wake(token: Any) -> None:
        token.set()

    async def wait(self, token: Any, deadline: float) -> None:
        with self._move_on_at(deadline):
            await token.wait()


def parking_for(runtime: str) -> Parking:
    """The parking of the running event loop (``runtime`` is "asyncio" or "trio")."""
    if runtime == "asyncio":
        return AsyncioParking(asyncio.get_running_loop())
    return TrioParking()
