"""The async face: carries out the core's decisions with anyio (asyncio or trio).

Everything runs on the pool's event loop, so the core needs no lock. Waiters
park on the loop's own cheapest primitive (``parking.py``). Background work
(opening connections, housekeeping) runs in the task group given to the pool
(``async with pool:`` or ``aopen(task_group=...)``); without one, there are no
free-floating tasks: connections are opened by the waiters that need them, on
the pool's behalf, and timed work runs on acquire and release. Every acquire
is a checkpoint (DESIGN §11); a give-back completes even when cancelled.
"""

from __future__ import annotations

import math
import types
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._connection import AsyncConnection
from .._core import (
    CHECKING,
    IN_USE,
    Check,
    Close,
    Open,
    Reset,
    Slot,
    Waiter,
    Wake,
)
from .._core.slots import Action
from .._credentials import aresolve
from .._errors import InterfaceError
from ..backends.base import AsyncConn, Runtime
from . import bounded
from .base import Face, terminate
from .parking import parking_for
from .reports import report_abandoned, report_hook_failure


class AsyncFace(Face):
    """Carries out the core's decisions on one event loop."""

    def __init__(self, *args: Any, runtime: Runtime, clock: Callable[[], float]) -> None:
        super().__init__(*args)
        self.runtime = runtime
        self._now = clock
        self._before_take, self._after_take = _checkpoints(runtime)
        self._parking = parking_for(runtime)
        self._call_soon = _call_soon_threadsafe(runtime)
        self._tg: TaskGroup | None = None
        self._pending: deque[Slot] = deque()  # opens waiting for a task (no task group)
        self._later: list[Close] = []  # closes waiting for an await (no task group)
        self._filling: Waiter | None = None
        self._next_tick = -math.inf
        self._nudge = anyio.Event()
        self._drained = anyio.Event()
        self._housekeeper: anyio.CancelScope | None = None

    # -- lifecycle ---------------------------------------------------------

    async def open(self, wait: bool, timeout: float, task_group: TaskGroup | None) -> None:
        """Start opening ``min_size`` connections; with ``wait``, until they are open."""
        self._tg = task_group
        if task_group is not None:
            await task_group.start(self._housekeep)
        core = self.core
        now = self._now()
        core.open(now)
        waiter = core.wait_filled(now) if wait else None
        if waiter is not None:
            waiter.token = self._parking.token()
        self._defer(self._dispatch(core.take_actions()))
        if waiter is not None:
            await self._wait_filled(waiter, timeout, now + timeout)

    async def _wait_filled(self, waiter: Waiter, timeout: float, deadline: float) -> None:
        core = self.core
        self._filling = waiter
        try:
            while not waiter.done and self._now() < deadline:
                if self._pending:  # no task group: open them on the pool's behalf
                    with anyio.CancelScope(deadline=deadline):
                        await self._open_slot(self._pending.popleft())
                    continue
                due = deadline if self._tg is not None else min(deadline, self._next_tick)
                await self._parking.park(waiter.token, due)
                if not waiter.done:
                    waiter.token = self._parking.token()
                if self._tg is None and self._now() >= self._next_tick:
                    await self._tick()
        finally:
            self._filling = None
        error = core.fill_result(waiter, timeout, self._now())
        self._defer(self._dispatch(core.take_actions()))
        if error is not None:
            raise error

    async def close(self, timeout: float) -> None:
        """Refuse new requests, let borrowers finish up to ``timeout``, then terminate."""
        closes = self._apply(self.core.close)
        self._abandon_pending()
        deadline = self._now() + timeout
        with anyio.CancelScope(shield=True):
            with anyio.move_on_at(deadline):
                await self._close_slots(closes, deadline)
                await self._drained.wait()
            if self.core.size:
                self.terminate()
        self._stop()

    def terminate(self) -> None:
        """Close every connection now (without waiting for the server)."""
        core = self.core
        now = self._now()
        cut = core.terminate(now)
        for slot in cut:
            core.closed(slot, now)
        self._abandon_pending()
        self._dispatch(core.take_actions())
        for slot in cut:
            terminate(slot.conn)
        self._check_drained()
        self._stop()

    def _abandon_pending(self) -> None:
        """The pool is closing: opens waiting for a task are made by nobody now."""
        while self._pending:
            self.core.connect_abandoned(self._pending.popleft(), self._now())
        self._check_drained()

    def _stop(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        self._parking.close()

    def _check_drained(self) -> None:
        if self.core.closing and not self.core.size:
            self._drained.set()

    # -- administration ------------------------------------------------------

    def resize(self, max_size: int) -> None:
        """Change ``max_size``: surplus idle connections close, new ones open for waiters."""
        self._defer(self._apply(self.core.resize, max_size))

    async def expire(self) -> None:
        """Replace every connection: idle ones now, borrowed ones when they come back."""
        await self._close_slots(self._apply(self.core.expire))

    # -- acquiring and releasing ---------------------------------------------

    async def getconn(self, timeout: float) -> AsyncConnection:
        """A connection, waiting up to ``timeout`` seconds for one.

        Raises:
            PoolTimeout: none became available in time.
            ConnectError: the server refused us for good, or is down.
            PoolClosed: the pool is closed.
            TooManyWaiters: the queue is full.
        """
        core = self.core
        now = self._now()
        deadline = now + timeout
        announced = False  # listeners were told of an acquire already (found dead since)
        first = True
        while True:
            if now >= self._next_tick and self._tg is None:
                await self._tick()
            if first:
                first = False
                if self._pending or not core.would_queue():  # else its wait is the checkpoint
                    await self._before_take()  # cancelled: raises before taking anything
                    now = self._now()
            got = core.acquire(now, announced)
            if got.__class__ is Waiter:
                got.token = self._parking.token()
            if core.actions:
                await self._run(core.take_actions())
            if got.__class__ is Slot:
                slot: Slot = got
                if self._after_take is not None:
                    await self._after_take()  # a yield that cannot lose the slot
            else:
                slot = await self._wait(got, timeout, deadline)  # type: ignore[arg-type]
                now = self._now()
            in_use = slot.state is IN_USE  # CHECKING: checked anyway
            alive = in_use and slot.conn.alive()
            check = core.check_for(slot, alive, now, deadline, timeout, announced)
            if check is not None and not await self._check(check):
                announced = announced or in_use
                now = self._now()
                continue
            if self._leak_reports:
                self._lend(slot)
            conn = AsyncConnection(slot, self)
            setup = self.options.setup
            if setup is not None:
                await self._run_hook(setup, conn)
            return conn

    async def _wait(self, waiter: Waiter, timeout: float, deadline: float) -> Slot:
        core = self.core
        parking = self._parking
        try:
            while True:
                if not self._pending:
                    await parking.park(waiter.token, deadline)
                if waiter.done:
                    return core.accept(waiter, self._now())
                if self._now() >= deadline:
                    raise core.time_out(waiter, timeout, self._now())
                waiter.token = parking.token()
                if self._pending:  # no task group: open a connection on the pool's behalf
                    with anyio.CancelScope(deadline=deadline):
                        await self._open_slot(self._pending.popleft())
        except BaseException:
            core.cancel(waiter, self._now())
            await self._run(core.take_actions())
            raise
        finally:
            if self._pending:  # pass the pending work on to the next waiter
                self._wake_first_waiter()

    async def _check(self, check: Check) -> bool:
        """Run the check the core asked for; report it (it raises PoolTimeout when the
        request's time is up); whether the slot may be handed out."""
        core = self.core
        try:
            ok = await bounded.acheck(check, self.options.name)
        except BaseException:
            core.check_abandoned(check, self._now())
            await self._run(core.take_actions())
            raise
        try:
            core.check_done(check, ok, self._now())
        finally:
            await self._run(core.take_actions())
        return ok

    async def release(self, conn: AsyncConnection, error: BaseException | None = None) -> None:
        """Give ``conn`` back (its borrow ended with ``error``, if it failed): reset it
        if the core says so, or replace it. Completes even when cancelled."""
        rest = self.give_back(conn, error)
        if rest is not None:
            await rest

    def give_back(
        self, conn: AsyncConnection, error: BaseException | None = None
    ) -> Awaitable[None] | None:
        """What :meth:`release` does up to its first await: the connection is back in the
        pool (or handed to a waiter) on return; what is left to await (a close, a reset,
        the timed work), or None, the common case, with no coroutine made for it."""
        if conn._face is not self:
            raise InterfaceError("this connection was not borrowed from this pool")
        slot = conn._detach()
        driver: AsyncConn = slot.conn
        core = self.core
        now = self._now()
        reset = core.give_back(
            slot, now, error=error, dirty=conn._dirty, clean=driver.is_clean(), noted=conn._noted
        )
        closes = self._dispatch(core.take_actions()) if core.actions else None
        tick = now >= self._next_tick and self._tg is None
        if closes or reset is not None or tick:
            rest: Awaitable[None] = self._finish_give_back(closes, reset, tick)
            return rest
        return None

    async def _finish_give_back(
        self, closes: list[Close] | None, reset: Reset | None, tick: bool
    ) -> None:
        if closes:
            await self._close_slots(closes)
        if reset is not None:
            await self._reset(reset)
        if tick:
            await self._tick()

    async def _reset(self, reset: Reset) -> None:
        """Run the reset the core asked for (shielded, bounded); report it whatever happens."""
        ok, hook_error = False, None
        try:
            ok, hook_error = await bounded.areset(reset, self.options.reset, self.options.name)
        finally:  # whatever the reset raised, the place is given back
            self.core.reset_done(reset, ok, self._now(), hook_error)
            await self._run(self.core.take_actions())

    def abandoned(self, slot: Slot) -> None:
        """A borrowed connection was garbage-collected: any thread, any moment; reap it soon."""
        self._abandoned.append(slot)
        try:
            self._call_soon(self._reap)
        except Exception:  # the event loop is gone (closed, finished): so is the pool
            pass

    def _reap(self) -> None:
        """Terminate abandoned connections and free their places (runs on the loop, no await)."""
        core = self.core
        while self._abandoned:
            slot = self._abandoned.popleft()
            if slot.state is not IN_USE and slot.state is not CHECKING:
                continue  # the pool was terminated meanwhile
            report_abandoned(self.options.name)
            terminate(slot.conn)
            core.release(slot, self._now(), reusable=False, cause="abandoned")
            for close in self._dispatch(core.take_actions()):
                if close.slot is slot:  # terminated above
                    core.closed(slot, self._now())
                    self._defer(self._dispatch(core.take_actions()))
                else:
                    self._defer([close])
        self._check_drained()

    # -- carrying out decisions ----------------------------------------------

    def _apply(self, method: Callable[..., Any], *args: Any) -> list[Close]:
        """Feed one event to the core; start what it decided; the closes to make."""
        method(*args, self._now())
        return self._dispatch(self.core.take_actions())

    def _defer(self, closes: list[Close]) -> None:
        """Make ``closes`` decided where nothing may be awaited: in the task group, or else
        at the next acquire or release (which run the timed work then)."""
        if not closes:
            return
        if self._tg is not None:
            self._tg.start_soon(self._close_slots, closes)
        else:
            self._later.extend(closes)
            self._next_tick = -math.inf

    async def _run(self, actions: list[Action]) -> None:
        closes = self._dispatch(actions)
        if closes:
            await self._close_slots(closes)

    def _dispatch(self, actions: list[Action]) -> list[Close]:
        closes: list[Close] = []
        for action in actions:
            kind = action.__class__
            if kind is Wake:
                self._parking.wake(action.waiter.token)  # type: ignore[union-attr]
            elif kind is Open:
                self._spawn_open(action.slot)  # type: ignore[union-attr]
            elif kind is Close:
                closes.append(action)  # type: ignore[arg-type]
            else:
                self._report(action)  # type: ignore[arg-type]
        return closes

    def _spawn_open(self, slot: Slot) -> None:
        if self._tg is not None:
            self._tg.start_soon(self._open_slot, slot)
            return
        self._pending.append(slot)
        self._wake_first_waiter()

    def _wake_first_waiter(self) -> None:
        waiter = self.core.first_waiter() or self._filling
        if waiter is not None and waiter.token is not None:
            self._parking.wake(waiter.token)

    async def _open_slot(self, slot: Slot) -> None:
        """Open the connection of ``slot`` and report the outcome to the core."""
        core = self.core
        try:
            params = await aresolve(self.params, self.options) if self._rotates else self.params
            driver = await self.backend.connect_async(params, self.runtime)
        except Exception as exc:  # a factory's or a driver's own error counts as well
            await self._settle(core.connect_failed, slot, exc)
            return
        except BaseException:
            await self._settle(core.connect_abandoned, slot)
            raise
        slot.conn = driver
        init = self.options.init
        try:
            error = await bounded.arun_on(slot, init) if init is not None else None
        except BaseException:  # interrupted: not the server's fault
            terminate(driver)
            await self._settle(core.connect_abandoned, slot)
            raise
        if error is not None:
            terminate(driver)
            await self._settle(core.init_failed, slot, error)
            return
        await self._settle(core.connected, slot)

    async def _settle(self, method: Callable[..., Any], *args: Any) -> None:
        method(*args, self._now())
        self._nudge.set()
        with anyio.CancelScope(shield=True):
            await self._run(self.core.take_actions())
        self._check_drained()

    async def _close_slots(self, closes: list[Close], deadline: float = math.inf) -> None:
        """Make ``closes``, together; each polite close is cut short after its timeout or
        at ``deadline``, whichever comes first."""
        with anyio.CancelScope(shield=True):
            if len(closes) == 1:
                await self._close_slot(closes[0], deadline)
            elif closes:
                async with anyio.create_task_group() as tg:
                    for close in closes:
                        tg.start_soon(self._close_slot, close, deadline)
        self._check_drained()

    async def _close_slot(self, close: Close, deadline: float) -> None:
        await bounded.aclose(close, min(deadline, self._now() + close.timeout))
        self.core.closed(close.slot, self._now())
        self._defer(self._dispatch(self.core.take_actions()))

    async def _run_hook(
        self, hook: Callable[[AsyncConnection], Awaitable[Any]], conn: AsyncConnection
    ) -> None:
        try:
            await hook(conn)
        except BaseException as exc:
            report_hook_failure(self.options.name, "setup", exc)
            await self.release(conn, exc)
            raise

    async def _tick(self) -> None:
        if self._later:
            later, self._later = self._later, []
            await self._close_slots(later)
        now = self._now()
        self.core.tick(now)
        self._next_tick = self.core.next_tick(now)
        if self.core.actions:
            await self._run(self.core.take_actions())

    async def _housekeep(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._housekeeper = scope
            task_status.started()
            while True:
                await self._tick()
                with anyio.CancelScope(deadline=self._next_tick):
                    await self._nudge.wait()
                self._nudge = anyio.Event()


def _checkpoints(
    runtime: str,
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]] | None]:
    """What an acquire awaits before it takes a slot (raises if cancelled), and after it
    took one without waiting (a yield that cannot be cancelled), so that it is a
    checkpoint (DESIGN §11) that keeps arrival order: on asyncio, whose ready queue is
    first in first out, one plain yield before; on trio, which runs the tasks of one batch
    in random order, trio's own pattern for a fair lock."""
    if runtime == "asyncio":
        return _yield_once, None
    import trio

    low = trio.lowlevel
    return low.checkpoint_if_cancelled, low.cancel_shielded_checkpoint


@types.coroutine
def _yield_once() -> Generator[None, None, None]:
    """One bare yield to asyncio's loop: what ``asyncio.sleep(0)`` does, without the
    coroutine around it (the task is rescheduled at the back of the ready queue, and a
    pending cancellation is raised here)."""
    yield


def _call_soon_threadsafe(runtime: str) -> Callable[[Callable[[], None]], object]:
    """Schedule a callback on this event loop, from any thread (or a finalizer)."""
    if runtime == "asyncio":
        import asyncio

        return asyncio.get_running_loop().call_soon_threadsafe
    import trio

    return trio.lowlevel.current_trio_token().run_sync_soon
