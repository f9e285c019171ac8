"""The blocking face: threads, one lock around every core call.

Waiters park on a pre-acquired ``threading.Lock`` (the cheapest wake-up the
standard library has); connections are opened by short-lived daemon threads,
so a requester never connects itself; a housekeeping thread runs the core's
timed work.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from .._connection import Connection
from .._core import CHECKING, CLOSING, Close, Open, Overdue, PoolCore, Slot, Waiter, Wake
from .._core.machine import Action
from .._errors import Error, PoolTimeout
from .._options import PoolOptions
from ..backends.base import Backend, ConnectParams, SyncConn
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
from .watchdog import WATCHDOG

_monotonic = time.monotonic
_HOUSEKEEPING_MAX_SLEEP = 1.0


class BlockingFace:
    """Carries out the core's decisions with threads."""

    def __init__(
        self, core: PoolCore, backend: Backend, params: ConnectParams, options: PoolOptions
    ) -> None:
        self.core = core
        self.backend = backend
        self.params = params
        self.options = options
        self._lock = threading.Lock()
        self._nudge = threading.Event()
        self._drained = threading.Event()
        self._stopped = False
        self._housekeeper: threading.Thread | None = None
        self._abandoned: deque[Slot] = deque()
        self._connect_log = ConnectLog(options.name)

    # -- lifecycle ---------------------------------------------------------

    def open(self, wait: bool, timeout: float) -> None:
        """Start opening ``min_size`` connections; with ``wait``, until they are open."""
        self._call(self.core.open)
        self._housekeeper = threading.Thread(
            target=_housekeep, args=(weakref.ref(self),), name="unipool-housekeeper", daemon=True
        )
        self._housekeeper.start()
        if wait:
            self._wait_min_size(timeout)

    def _wait_min_size(self, timeout: float) -> None:
        deadline = _monotonic() + timeout
        core = self.core
        while not core.filled():
            error = core.last_connect_error
            if error is not None and is_fatal(error):
                raise error
            if _monotonic() >= deadline:
                if core.last_connect_error is not None:
                    raise core.last_connect_error
                raise pool_timeout(core, self.options.name, timeout)
            time.sleep(0.002)

    def close(self, timeout: float) -> None:
        """Refuse new requests, let borrowers finish up to ``timeout``, then terminate.

        Idle connections are closed on a helper thread, so that a server that
        does not answer cannot hold the caller past ``timeout``.
        """
        with self._lock:
            self.core.close(_monotonic())
            actions = self.core.take_actions()
            if not self.core.size:
                self._drained.set()
        closer = threading.Thread(target=self._run, args=(actions,), name="unipool-close")
        closer.daemon = True
        closer.start()
        if not self._drained.wait(timeout) and self.core.size:
            self.terminate()
            self._drained.wait(1.0)
        self._stop_housekeeper()

    def terminate(self) -> None:
        """Close every connection now, cutting short closes under way."""
        with self._lock:
            core = self.core
            core.terminate(_monotonic())
            actions = core.take_actions()
            closing = [slot for slot in core.iter_slots() if slot.state is CLOSING]
            for slot in closing:
                core.closed(slot, _monotonic())
            if core.closing and not core.size:
                self._drained.set()
        for action in actions:
            if action.__class__ is Wake:
                action.waiter.token.release()
        for slot in closing:
            driver: SyncConn | None = slot.conn
            if driver is not None:
                try:
                    driver.terminate()
                except Exception as exc:  # it is being dropped either way
                    logger.debug("error terminating a connection: %s", exc)
        self._stop_housekeeper()

    def _stop_housekeeper(self) -> None:
        self._stopped = True
        self._nudge.set()

    # -- acquiring and releasing ---------------------------------------------

    def getconn(self, timeout: float) -> Connection:
        """A connection, waiting up to ``timeout`` seconds for one.

        Raises:
            PoolTimeout: none became available in time.
            ConnectError: the server refused us for good, or is down.
            PoolClosed: the pool is closed.
            TooManyWaiters: the queue is full.
        """
        core = self.core
        now = _monotonic()
        deadline = now + timeout
        while True:
            with self._lock:
                got = core.acquire(now)
                if got.__class__ is Waiter:
                    got.token = _parked_lock()
                actions = core.take_actions() if core.actions else None
            if actions:
                self._run(actions)
            slot = got if got.__class__ is Slot else self._wait(got, deadline, timeout)  # type: ignore[arg-type]
            needs_check = slot.state is CHECKING or not slot.conn.alive()
            if needs_check and not self._check(slot, deadline):
                now = _monotonic()
                if now >= deadline:  # the check used the time up: do not start another
                    self._call(core.timed_out)
                    raise pool_timeout(core, self.options.name, timeout)
                continue
            if self.options.leak_timeout is not None:
                slot.lent_by = borrow_site()
            conn = Connection(slot, self)
            setup = self.options.setup
            if setup is not None:
                self._run_hook(setup, conn)
            return conn

    def _wait(self, waiter: Waiter, deadline: float, timeout: float) -> Slot:
        token: Any = waiter.token
        try:
            woken = token.acquire(True, max(deadline - _monotonic(), 0.0))
        except BaseException:
            self._call(self.core.cancel, waiter)
            raise
        if not woken:
            self._call(self.core.cancel, waiter, timed_out=True)
            raise pool_timeout(self.core, self.options.name, timeout)
        with self._lock:
            return self.core.accept(waiter, _monotonic())

    def _check(self, slot: Slot, deadline: float) -> bool:
        """Ping a slot before handing it out, by ``deadline`` at the latest; False if it
        had to be dropped."""
        driver: SyncConn = slot.conn
        allowed = min(common.CHECK_TIMEOUT, max(deadline - _monotonic(), common.LAST_CHANCE))
        try:
            with WATCHDOG.guard(driver, allowed):
                if wants_writable(self.params.dsn):
                    ok = bool(driver.fetchval(READ_ONLY_PROBE, (), 0) == "off")
                else:
                    driver.ping()
                    ok = True
        except Error:
            ok = False
        except BaseException:
            self._release_slot(slot, reusable=False, cause="broken")
            raise
        if slot.state is CHECKING:
            self._call(self.core.check_done, slot, ok)
        elif not ok:
            self._call(self.core.lost_before_use, slot)
        return ok

    def release(self, conn: Connection) -> None:
        """Give ``conn`` back: reset it, or replace it if it cannot be reused."""
        slot = conn._detach()
        driver: SyncConn = slot.conn
        if conn._error is not None:
            if cause := release_cause(conn._error, self.params.dsn):
                self._release_slot(slot, reusable=False, cause=cause)
                return
            if interrupted(conn._error):
                conn._dirty = True
        if not conn._dirty and self.options.reset is None and driver.is_clean():
            now = _monotonic()
            cause = self.core.retire_reason(slot, now)
            with self._lock:
                self.core.release(slot, now, reusable=cause is None, cause=cause or "")
                actions = self.core.take_actions() if self.core.actions else None
            if actions:
                self._run(actions)
            return
        cause = self.core.retire_reason(slot, _monotonic())
        reusable = False
        if cause is None:
            cause = "broken"
            try:
                with WATCHDOG.guard(driver, common.CLOSE_TIMEOUT):
                    reusable = driver.alive() and driver.reset(conn._dirty)
                reset = self.options.reset
                if reusable and reset is not None:
                    reset(conn)
            except Error as exc:
                logger.debug("reset failed, discarding the connection: %s", exc)
                reusable = False
            except BaseException:
                self._release_slot(slot, reusable=False, cause="broken")
                raise
        self._release_slot(slot, reusable=reusable, cause=cause)

    def abandoned(self, slot: Slot) -> None:
        """A borrowed connection was garbage-collected: any thread, any moment; reap it later."""
        self._abandoned.append(slot)

    def _reap(self) -> None:
        while self._abandoned:
            slot = self._abandoned.popleft()
            report_abandoned(self.options.name)
            self._release_slot(slot, reusable=False, cause="abandoned")

    def _release_slot(self, slot: Slot, *, reusable: bool, cause: str) -> None:
        with self._lock:
            self.core.release(slot, _monotonic(), reusable=reusable, cause=cause)
            actions = self.core.take_actions() if self.core.actions else None
        if actions:
            self._run(actions)

    # -- carrying out decisions ----------------------------------------------

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        with self._lock:
            method(*args, _monotonic(), **kwargs)
            actions = self.core.take_actions()
        self._run(actions)
        if self.core.closing and not self.core.size:
            self._drained.set()

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if action.__class__ is Wake:
                action.waiter.token.release()
            elif action.__class__ is Open:
                threading.Thread(
                    target=self._open_slot, args=(action.slot,), name="unipool-connect", daemon=True
                ).start()
            elif action.__class__ is Overdue:
                report_overdue(self.options.name, action)
            else:
                assert isinstance(action, Close)
                self._close_slot(action.slot)

    def _open_slot(self, slot: Slot) -> None:
        try:
            driver = self.backend.connect_sync(self.params)
        except BaseException as exc:
            self._connect_log.failed(exc, _monotonic())
            self._call(self.core.connect_failed, slot, exc, fatal=is_fatal(exc))
            self._nudge.set()
            return
        slot.conn = driver
        init = self.options.init
        if init is not None:
            conn = Connection(slot)
            try:
                init(conn)
            except BaseException as exc:
                driver.terminate()
                logger.warning("pool %r: init hook failed: %s", self.options.name, exc)
                self._call(self.core.connect_failed, slot, exc)
                self._nudge.set()
                return
            conn._detach()
        self._connect_log.succeeded(_monotonic())
        self._call(self.core.connected, slot)

    def _close_slot(self, slot: Slot) -> None:
        driver: SyncConn | None = slot.conn
        if driver is not None:
            try:
                if slot.close_reason in common.NO_GOODBYE:
                    driver.terminate()
                else:
                    with WATCHDOG.guard(driver, common.CLOSE_TIMEOUT):
                        driver.close()
            except Exception as exc:  # the connection is gone either way
                logger.debug("error closing a connection: %s", exc)
        self._call(self.core.closed, slot)

    def _run_hook(self, hook: Callable[[Connection], Any], conn: Connection) -> None:
        try:
            hook(conn)
        except BaseException:
            self.release(conn)
            raise

    def tick(self) -> float:
        """Run the core's timed work; seconds until it is due again."""
        if self._abandoned:
            self._reap()
        with self._lock:
            now = _monotonic()
            self.core.tick(now)
            actions = self.core.take_actions()
            deadline = self.core.next_deadline()
        self._run(actions)
        return min(max(deadline - now, 0.0), _HOUSEKEEPING_MAX_SLEEP)


def _parked_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


def _housekeep(face_ref: weakref.ref[BlockingFace]) -> None:
    """The housekeeping thread: exits when the pool stops or is garbage-collected."""
    while True:
        face = face_ref()
        if face is None or face._stopped:
            return
        try:
            delay = face.tick()
        except Exception:  # pragma: no cover - a bug; keep the pool alive
            logger.exception("housekeeping failed")
            delay = _HOUSEKEEPING_MAX_SLEEP
        nudge = face._nudge
        del face
        nudge.wait(delay)
        nudge.clear()


__all__ = ["BlockingFace", "PoolTimeout"]
