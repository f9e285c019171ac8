"""Where an async waiter parks: the event loop's own primitives, chosen once per pool.

The contended hand-off runs once per borrow when connections are scarce, so
it uses the runtime's cheapest wake-up directly: on asyncio a bare future
woken by ``set_result``, on trio a ``trio.Event``. Both raise on
cancellation like any other checkpoint.

Deadlines share one alarm per pool instead of a timer (or cancel scope) per
wait, which would cost a heap entry per borrow: the waits queue in arrival
order (so their deadlines are mostly in order too), the alarm is set for the
earliest, and when it rings it wakes the waits that are due and re-arms.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol


class Parking(Protocol):
    def token(self) -> Any:
        """A fresh wake-up token for one wait."""

    def wake(self, token: Any) -> None:
        """Wake whoever waits on ``token`` (now or later); idempotent."""

    def park(self, token: Any, deadline: float) -> Awaitable[Any]:
        """What to await until ``token`` is woken or the clock reaches ``deadline``."""

    def close(self) -> None:
        """Stop the alarm: the pool is closed, nobody waits any more."""


class _Alarmed:
    """The waits with a deadline, and when the alarm should ring."""

    __slots__ = ("_alarm_at", "_waits")

    def __init__(self) -> None:
        self._waits: deque[tuple[float, Any]] = deque()
        self._alarm_at = math.inf

    @staticmethod
    def _is_woken(token: Any) -> bool:
        raise NotImplementedError

    def _arm(self, when: float) -> None:
        raise NotImplementedError

    @staticmethod
    def wake(token: Any) -> None:
        raise NotImplementedError

    def _note(self, token: Any, deadline: float) -> None:
        waits = self._waits
        while waits and self._is_woken(waits[0][1]):
            waits.popleft()
        waits.append((deadline, token))
        if deadline < self._alarm_at:
            self._arm(deadline)

    def _ring(self, now: float) -> float:
        """Wake the waits due at ``now``; when the next one is due."""
        pending: deque[tuple[float, Any]] = deque()
        for deadline, token in self._waits:
            if self._is_woken(token):
                continue
            if deadline <= now:
                self.wake(token)
            else:
                pending.append((deadline, token))
        self._waits = pending
        return min((deadline for deadline, _ in pending), default=math.inf)


class AsyncioParking(_Alarmed):
    """Futures; the alarm is a ``call_at`` timer."""

    __slots__ = ("_alarm", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self._alarm: asyncio.TimerHandle | None = None

    def token(self) -> asyncio.Future[None]:
        return self._loop.create_future()

    @staticmethod
    def wake(token: asyncio.Future[None]) -> None:
        if not token.done():
            token.set_result(None)

    @staticmethod
    def _is_woken(token: asyncio.Future[None]) -> bool:
        return token.done()

    def park(self, token: asyncio.Future[None], deadline: float) -> Awaitable[None]:
        if deadline != math.inf:
            self._note(token, deadline)
        return token

    def _arm(self, when: float) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm_at = when
        self._alarm = self._loop.call_at(when, self._on_alarm)

    def _on_alarm(self) -> None:
        self._alarm, self._alarm_at = None, math.inf
        when = self._ring(self._loop.time())
        if when != math.inf:
            self._arm(when)

    def close(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm, self._alarm_at = None, math.inf


class TrioParking(_Alarmed):
    """``trio.Event``; the alarm is a system task asleep in a cancel scope whose deadline moves."""

    __slots__ = ("_event", "_scope", "_task_scope", "_trio")

    def __init__(self) -> None:
        import trio

        super().__init__()
        self._trio = trio
        self._event = trio.Event
        self._scope: Any = None  # the alarm's sleep, while it sleeps
        self._task_scope: Any = None  # the alarm task's outer scope, once started

    def token(self) -> Any:
        return self._event()

    @staticmethod
    def wake(token: Any) -> None:
        token.set()

    @staticmethod
    def _is_woken(token: Any) -> bool:
        return token.is_set()  # type: ignore[no-any-return]

    def park(self, token: Any, deadline: float) -> Awaitable[None]:
        if deadline != math.inf:
            self._note(token, deadline)
        return token.wait()  # type: ignore[no-any-return]

    def _arm(self, when: float) -> None:
        self._alarm_at = when
        if self._scope is not None:
            self._scope.deadline = when
        elif self._task_scope is None:
            self._task_scope = self._trio.CancelScope()
            self._trio.lowlevel.spawn_system_task(self._alarm, name="unipool-alarm")

    async def _alarm(self) -> None:
        trio = self._trio
        with self._task_scope:
            while True:
                with trio.CancelScope(deadline=self._alarm_at) as self._scope:
                    await trio.sleep_forever()
                # no checkpoint from here to the next sleep: nobody re-arms meanwhile
                self._scope = None
                self._alarm_at = self._ring(trio.current_time())

    def close(self) -> None:
        if self._task_scope is not None:
            self._task_scope.cancel()


def parking_for(runtime: str) -> Parking:
    """The parking of the running event loop (``runtime`` is "asyncio" or "trio")."""
    if runtime == "asyncio":
        return AsyncioParking(asyncio.get_running_loop())
    return TrioParking()
