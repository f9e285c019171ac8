"""The async face: anyio, so asyncio and trio alike.

Everything runs on the pool's event loop, so the core needs no lock. Waiters
park on the loop's own cheapest primitive (``parking.py``). Background work (opening connections,
housekeeping) runs in the task group given to the pool (``async with pool:``
or ``aopen(task_group=...)``); without one, there are no free-floating tasks:
connections are opened by the waiters that need them, on the pool's behalf,
and timed work runs on acquire and release.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._connection import AsyncConnection
from .._core import CHECKING, CLOSING, IN_USE, Close, Open, Overdue, PoolCore, Slot, Waiter, Wake
from .._core.machine import Action
from .._errors import Error
from .._options import PoolOptions
from ..backends.base import POOL_CALL, AsyncConn, Backend, ConnectParams, Runtime
from . import common
from .common import (
    READ_ONLY_PROBE,
    ConnectLog,
    borrow_site,
    interrupted,
    is_fatal,
    logger,
    pool_timeout,
    release_cause,
    report_abandoned,
    report_overdue,
    wants_writable,
)
from .parking import parking_for
from .watchdog import WATCHDOG

_HOUSEKEEPING_MAX_SLEEP = 1.0
#: Seconds a cut connection gets to fail its call before the call is cancelled.
_CUT_GRACE = 0.25


class AsyncFace:
    """Carries out the core's decisions on one event loop."""

    def __init__(
        self,
        core: PoolCore,
        backend: Backend,
        params: ConnectParams,
        options: PoolOptions,
        runtime: Runtime,
        clock: Callable[[], float],
    ) -> None:
        self.core = core
        self.backend = backend
        self.params = params
        self.options = options
        self.runtime = runtime
        self._now = clock
        self._parking = parking_for(runtime)
        self._connect_log = ConnectLog(options.name)
        self._call_soon = _call_soon_threadsafe(runtime)
        self._abandoned: deque[Slot] = deque()
        self._tg: TaskGroup | None = None
        self._pending: deque[Slot] = deque()
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
        self._apply(self.core.open)
        if wait:
            await self._wait_min_size(timeout)

    async def _wait_min_size(self, timeout: float) -> None:
        core = self.core
        with anyio.move_on_after(timeout):
            while not core.filled():
                error = core.last_connect_error
                if error is not None and is_fatal(error):
                    raise error
                if self._pending:
                    await self._open_slot(self._pending.popleft())
                else:
                    await anyio.sleep(0.002)
            return
        if core.last_connect_error is not None:
            raise core.last_connect_error
        raise pool_timeout(core, self.options.name, timeout)

    async def close(self, timeout: float) -> None:
        """Refuse new requests, let borrowers finish up to ``timeout``, then terminate."""
        closes = self._apply(self.core.close)
        deadline = self._now() + timeout
        with anyio.CancelScope(shield=True):
            with anyio.move_on_at(deadline):
                await self._close_slots(closes, deadline)
                self._check_drained()
                await self._drained.wait()
            if self.core.size:
                self.terminate()
                with anyio.move_on_after(1.0):
                    await self._drained.wait()
        self._stop_housekeeper()

    def terminate(self) -> None:
        """Close every connection now (without waiting for the server)."""
        core = self.core
        core.terminate(self._now())
        for action in core.take_actions():
            if action.__class__ is Wake:
                self._parking.wake(action.waiter.token)
        for slot in list(core.slots.values()):
            if slot.state is CLOSING:  # including closes under way elsewhere: cut them short
                driver: AsyncConn | None = slot.conn
                if driver is not None:
                    try:
                        driver.terminate()
                    except Exception as exc:  # its event loop has ended, say: dropped all the same
                        logger.debug("error terminating a connection: %s", exc)
                core.closed(slot, self._now())
        self._pending.clear()
        self._check_drained()
        self._stop_housekeeper()

    def _stop_housekeeper(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        self._parking.close()

    def _check_drained(self) -> None:
        if self.core.closing and not self.core.size:
            self._drained.set()

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
        while True:
            if now >= self._next_tick and self._tg is None:
                await self._tick()
            got = core.acquire(now)
            if got.__class__ is Waiter:
                got.token = self._parking.token()
            if core.actions:
                await self._run(core.take_actions())
            if got.__class__ is Slot:
                slot: Slot = got
            else:
                slot = await self._wait(got, deadline, timeout)  # type: ignore[arg-type]
            needs_check = slot.state is CHECKING or not slot.conn.alive()
            if needs_check and not await self._check(slot, deadline):
                now = self._now()
                if now >= deadline:  # the check used the time up: do not start another
                    core.timed_out(now)
                    raise pool_timeout(core, self.options.name, timeout)
                continue
            if self.options.leak_timeout is not None:
                slot.lent_by = borrow_site()
            conn = AsyncConnection(slot, self)
            setup = self.options.setup
            if setup is not None:
                await self._run_hook(setup, conn)
            return conn

    async def _wait(self, waiter: Waiter, deadline: float, timeout: float) -> Slot:
        core = self.core
        parking = self._parking
        try:
            while True:
                if not self._pending:
                    await parking.park(waiter.token, deadline)
                if waiter.done:
                    return core.accept(waiter, self._now())
                if self._now() >= deadline:
                    core.cancel(waiter, self._now(), timed_out=True)
                    raise pool_timeout(core, self.options.name, timeout)
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

    async def _check(self, slot: Slot, deadline: float) -> bool:
        """Ping a slot before handing it out, by ``deadline`` at the latest; False if it
        had to be dropped."""
        driver: AsyncConn = slot.conn
        allowed = min(common.CHECK_TIMEOUT, max(deadline - self._now(), common.LAST_CHANCE))
        ok = False
        try:
            # The watchdog cuts the connection when the check overruns, so that the check
            # fails as on a lost connection, with no cancel request to a server that does
            # not answer; the cancel scope is the backstop for a driver that would not notice.
            with (
                WATCHDOG.guard(driver, allowed),
                anyio.move_on_after(allowed + _CUT_GRACE),
            ):
                pool_call = POOL_CALL.set(True)  # interrupted, it drops the connection
                try:
                    if wants_writable(self.params.dsn):
                        ok = bool(await driver.fetchval(READ_ONLY_PROBE, (), 0) == "off")
                    else:
                        await driver.ping()
                        ok = True
                finally:
                    POOL_CALL.reset(pool_call)
        except Error:
            ok = False
        except BaseException:
            await self._release_slot(slot, reusable=False, cause="broken")
            raise
        if slot.state is CHECKING:
            self.core.check_done(slot, ok, self._now())
            await self._run(self.core.take_actions())
        elif not ok:
            self.core.lost_before_use(slot, self._now())
            await self._run(self.core.take_actions())
        return ok

    async def release(self, conn: AsyncConnection) -> None:
        """Give ``conn`` back: reset it, or replace it if it cannot be reused."""
        slot = conn._detach()
        driver: AsyncConn = slot.conn
        core = self.core
        now = self._now()
        if conn._error is not None:
            if cause := release_cause(conn._error, self.params.dsn):
                await self._release_slot(slot, reusable=False, cause=cause)
                return
            if interrupted(conn._error):
                conn._dirty = True
        if not conn._dirty and self.options.reset is None and driver.is_clean():
            cause = core.retire_reason(slot, now)
            core.release(slot, now, reusable=cause is None, cause=cause or "")
            if core.actions and (closes := self._dispatch(core.take_actions())):
                await self._close_slots(closes)
            if now >= self._next_tick and self._tg is None:
                await self._tick()
            return
        with anyio.CancelScope(shield=True):
            retired = core.retire_reason(slot, now)
            cause = retired or "broken"
            reusable = False
            try:
                if retired is None:
                    with (  # bounded as a check is: cut when late, the scope as a backstop
                        WATCHDOG.guard(driver, common.CLOSE_TIMEOUT),
                        anyio.move_on_after(common.CLOSE_TIMEOUT + _CUT_GRACE),
                    ):
                        reusable = await self._reset(driver, conn)
            finally:  # whatever the reset raised, the place is given back
                await self._release_slot(slot, reusable=reusable, cause=cause)

    async def _reset(self, driver: AsyncConn, conn: AsyncConnection) -> bool:
        try:
            if not (driver.alive() and await driver.reset(conn._dirty)):
                return False
            reset = self.options.reset
            if reset is not None:
                await reset(conn)
        except Error as exc:
            logger.debug("reset failed, discarding the connection: %s", exc)
            return False
        return True

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
            try:
                slot.conn.terminate()
            except Exception as exc:  # it is being dropped either way
                logger.debug("error terminating a connection: %s", exc)
            core.release(slot, self._now(), reusable=False, cause="abandoned")
            for closing in self._dispatch(core.take_actions()):  # only this slot
                core.closed(closing, self._now())
                self._dispatch(core.take_actions())
        self._check_drained()

    async def _release_slot(self, slot: Slot, *, reusable: bool, cause: str) -> None:
        self.core.release(slot, self._now(), reusable=reusable, cause=cause)
        await self._run(self.core.take_actions())

    # -- carrying out decisions ----------------------------------------------

    def _apply(self, method: Callable[..., Any], *args: Any) -> list[Slot]:
        """Feed one event to the core; start what it decided; the slots to close."""
        method(*args, self._now())
        return self._dispatch(self.core.take_actions())

    async def _run(self, actions: list[Action]) -> None:
        closes = self._dispatch(actions)
        if closes:
            await self._close_slots(closes)

    def _dispatch(self, actions: list[Action]) -> list[Slot]:
        closes: list[Slot] = []
        for action in actions:
            if action.__class__ is Wake:
                self._parking.wake(action.waiter.token)
            elif action.__class__ is Open:
                self._spawn_open(action.slot)
            elif action.__class__ is Overdue:
                report_overdue(self.options.name, action)
            else:
                assert isinstance(action, Close)
                closes.append(action.slot)
        return closes

    def _spawn_open(self, slot: Slot) -> None:
        if self._tg is not None:
            self._tg.start_soon(self._open_slot, slot)
            return
        self._pending.append(slot)
        self._wake_first_waiter()

    def _wake_first_waiter(self) -> None:
        waiter = self.core.first_waiter()
        if waiter is not None and waiter.token is not None:
            self._parking.wake(waiter.token)

    async def _open_slot(self, slot: Slot) -> None:
        """Open the connection of ``slot`` and report the outcome to the core."""
        try:
            driver = await self.backend.connect_async(self.params, self.runtime)
        except Error as exc:
            self._connect_log.failed(exc, self._now())
            await self._settle(self.core.connect_failed, slot, exc, fatal=is_fatal(exc))
            return
        except BaseException:
            await self._settle(self.core.connect_abandoned, slot)
            raise
        slot.conn = driver
        init = self.options.init
        if init is not None:
            conn = AsyncConnection(slot)
            try:
                await init(conn)
            except Exception as exc:
                driver.terminate()
                logger.warning("pool %r: init hook failed: %s", self.options.name, exc)
                await self._settle(self.core.connect_failed, slot, exc)
                return
            except BaseException:  # interrupted: not the server's fault
                driver.terminate()
                await self._settle(self.core.connect_abandoned, slot)
                raise
            conn._detach()
        self._connect_log.succeeded(self._now())
        await self._settle(self.core.connected, slot)

    async def _settle(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        method(*args, self._now(), **kwargs)
        self._nudge.set()
        with anyio.CancelScope(shield=True):
            await self._run(self.core.take_actions())
        self._check_drained()

    async def _close_slots(self, slots: list[Slot], deadline: float = math.inf) -> None:
        """Close the connections of ``slots``, together; each is cut short after
        ``CLOSE_TIMEOUT`` or at ``deadline``, whichever comes first."""
        with anyio.CancelScope(shield=True):
            if len(slots) == 1:
                await self._close_slot(slots[0], deadline)
            elif slots:
                async with anyio.create_task_group() as tg:
                    for slot in slots:
                        tg.start_soon(self._close_slot, slot, deadline)
        self._check_drained()

    async def _close_slot(self, slot: Slot, deadline: float) -> None:
        driver: AsyncConn | None = slot.conn
        if driver is not None and slot.close_reason in common.NO_GOODBYE:
            driver.terminate()
        elif driver is not None:
            with anyio.move_on_at(min(deadline, self._now() + common.CLOSE_TIMEOUT)) as scope:
                try:
                    await driver.close()
                except Exception as exc:
                    logger.debug("error closing a connection: %s", exc)
            if scope.cancelled_caught:
                driver.terminate()
        self.core.closed(slot, self._now())
        self._dispatch(self.core.take_actions())

    async def _run_hook(
        self, hook: Callable[[AsyncConnection], Awaitable[Any]], conn: AsyncConnection
    ) -> None:
        try:
            await hook(conn)
        except BaseException:
            await self.release(conn)
            raise

    async def _tick(self) -> None:
        now = self._now()
        self.core.tick(now)
        self._next_tick = min(self.core.next_deadline(), now + _HOUSEKEEPING_MAX_SLEEP)
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


def _call_soon_threadsafe(runtime: str) -> Callable[[Callable[[], None]], object]:
    """Schedule a callback on this event loop, from any thread (or a finalizer)."""
    if runtime == "asyncio":
        import asyncio

        return asyncio.get_running_loop().call_soon_threadsafe
    import trio

    return trio.lowlevel.current_trio_token().run_sync_soon
