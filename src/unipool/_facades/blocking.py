"""The blocking face: carries out the core's decisions with threads.

One lock around every core call; the decisions it returns are carried out
after the lock is released. Waiters park on a pre-acquired ``threading.Lock``
(the cheapest wake-up the standard library has); connections are opened by
short-lived daemon threads, so a requester never connects itself; a
housekeeping thread runs the core's timed work.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from .._connection import Connection
from .._core import IN_USE, Check, Close, Open, Slot, Waiter, Wake
from .._core.slots import Action
from .._credentials import resolve
from .._errors import InterfaceError
from ..backends.base import SyncConn
from . import bounded
from .base import Face, terminate
from .reports import logger, report_abandoned, report_hook_failure

_monotonic = time.monotonic
_T = TypeVar("_T")


class BlockingFace(Face):
    """Carries out the core's decisions with threads."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._lock = threading.Lock()
        self._nudge = threading.Event()
        self._drained = threading.Event()
        self._stopped = False

    def _locked(self) -> threading.Lock:
        return self._lock

    # -- lifecycle ---------------------------------------------------------

    def open(self, wait: bool, timeout: float) -> None:
        """Start opening ``min_size`` connections; with ``wait``, until they are open."""
        waiter = self._call(self._start, wait)
        threading.Thread(
            target=_housekeep, args=(weakref.ref(self),), name="unipool-housekeeper", daemon=True
        ).start()
        if waiter is not None:
            waiter.token.acquire(True, timeout)
            error = self._call(self.core.fill_result, waiter, timeout)
            if error is not None:
                raise error

    def _start(self, wait: bool, now: float) -> Waiter | None:
        self.core.open(now)
        waiter = self.core.wait_filled(now) if wait else None
        if waiter is not None:
            waiter.token = _parked_lock()
        return waiter

    def close(self, timeout: float) -> None:
        """Refuse new requests, let borrowers finish up to ``timeout``, then terminate.

        Idle connections are closed on a helper thread, so that a server that
        does not answer cannot hold the caller past ``timeout``.
        """
        with self._lock:
            self.core.close(_monotonic())
            actions = self.core.take_actions()
            self._note_drained()
        closer = threading.Thread(target=self._run, args=(actions,), name="unipool-close")
        closer.daemon = True
        closer.start()
        if not self._drained.wait(timeout):
            self.terminate()
        self._stop()

    def terminate(self) -> None:
        """Close every connection now, cutting short closes under way."""
        with self._lock:
            now = _monotonic()
            cut = self.core.terminate(now)
            for slot in cut:
                self.core.closed(slot, now)
            actions = self.core.take_actions()
            self._note_drained()
        self._run(actions)
        for slot in cut:
            terminate(slot.conn)
        self._stop()

    def _stop(self) -> None:
        self._stopped = True
        self._nudge.set()

    def _note_drained(self) -> None:
        if self.core.closing and not self.core.slots:
            self._drained.set()

    # -- administration ------------------------------------------------------

    def resize(self, max_size: int) -> None:
        """Change ``max_size``; surplus idle connections close."""
        self._call(self.core.resize, max_size)
        self._nudge.set()

    def expire(self) -> None:
        """Replace every connection: idle ones now, borrowed ones when they come back."""
        self._call(self.core.expire)

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
        lock = self._lock
        now = _monotonic()
        deadline = now + timeout
        announced = False  # listeners were told of an acquire already (found dead since)
        while True:
            with lock:
                got = core.acquire(now, announced)
                if got.__class__ is Waiter:
                    got.token = _parked_lock()
                actions = core.take_actions() if core.actions else None
            if actions:
                self._run(actions)
            if got.__class__ is Slot:
                slot: Slot = got
            else:
                slot = self._wait(got, timeout, deadline)  # type: ignore[arg-type]
                now = _monotonic()
            in_use = slot.state is IN_USE  # CHECKING: checked anyway
            alive = in_use and slot.conn.alive()
            check = core.check_for(slot, alive, now, deadline, timeout, announced)
            if check is not None and not self._check(check):
                announced = announced or in_use
                now = _monotonic()
                continue
            if self._leak_reports:
                self._lend(slot)
            conn = Connection(slot, self)
            setup = self.options.setup
            if setup is not None:
                self._run_hook(setup, conn)
            return conn

    def _wait(self, waiter: Waiter, timeout: float, deadline: float) -> Slot:
        try:
            woken = waiter.token.acquire(True, max(deadline - _monotonic(), 0.0))
        except BaseException:
            self._call(self.core.cancel, waiter)
            raise
        if not woken:
            raise self._call(self.core.time_out, waiter, timeout)
        return self._call(self.core.accept, waiter)

    def _check(self, check: Check) -> bool:
        """Run the check the core asked for; report it (it raises PoolTimeout when the
        request's time is up); whether the slot may be handed out."""
        try:
            ok = bounded.check(check, self.options.name)
        except BaseException:
            self._call(self.core.check_abandoned, check)
            raise
        self._call(self.core.check_done, check, ok)
        return ok

    def release(self, conn: Connection, error: BaseException | None = None) -> None:
        """Give ``conn`` back (its borrow ended with ``error``, if it failed): reset it
        if the core says so, or replace it."""
        if conn._face is not self:
            raise InterfaceError("this connection was not borrowed from this pool")
        slot = conn._detach()
        driver: SyncConn = slot.conn
        clean = driver.is_clean()
        with self._lock:
            reset = self.core.give_back(
                slot, _monotonic(), error=error, dirty=conn._dirty, clean=clean, noted=conn._noted
            )
            actions = self.core.take_actions() if self.core.actions else None
        if actions:
            self._run(actions)
        if reset is None:
            return
        ok, hook_error = False, None
        try:
            ok, hook_error = bounded.reset(reset, self.options.reset, self.options.name)
        finally:
            self._call(self.core.reset_done, reset, ok, hook_error=hook_error)

    def abandoned(self, slot: Slot) -> None:
        """A borrowed connection was garbage-collected: any thread, any moment; reap it later."""
        self._abandoned.append(slot)

    def _reap(self) -> None:
        while self._abandoned:
            slot = self._abandoned.popleft()
            report_abandoned(self.options.name)
            self._call(self.core.release, slot, reusable=False, cause="abandoned")

    # -- carrying out decisions ----------------------------------------------

    def _call(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Feed one event to the core (with the time), under the lock; then carry out
        what it decided, even if it raised."""
        lock = self._lock
        core = self.core
        lock.acquire()
        try:
            return method(*args, _monotonic(), **kwargs)
        finally:
            actions = core.take_actions() if core.actions else None
            self._note_drained()
            lock.release()
            if actions:
                self._run(actions)

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            kind = action.__class__
            if kind is Wake:
                action.waiter.token.release()  # type: ignore[union-attr]
            elif kind is Open:
                threading.Thread(
                    target=self._open_slot,
                    args=(action.slot,),  # type: ignore[union-attr]
                    name="unipool-connect",
                    daemon=True,
                ).start()
            elif kind is Close:
                self._close_slot(action)  # type: ignore[arg-type]
            else:
                self._report(action)  # type: ignore[arg-type]

    def _open_slot(self, slot: Slot) -> None:
        try:
            params = resolve(self.params, self.options) if self._rotates else self.params
            driver = self.backend.connect_sync(params)
        except BaseException as exc:
            self._call(self.core.connect_failed, slot, exc)
            self._nudge.set()
            return
        slot.conn = driver
        init = self.options.init
        error = bounded.run_on(slot, init) if init is not None else None
        if error is not None:
            terminate(driver)
            self._call(self.core.init_failed, slot, error)
            self._nudge.set()
            return
        self._call(self.core.connected, slot)

    def _close_slot(self, close: Close) -> None:
        bounded.close(close, self.options.name)
        self._call(self.core.closed, close.slot)

    def _run_hook(self, hook: Callable[[Connection], Any], conn: Connection) -> None:
        try:
            hook(conn)
        except BaseException as exc:
            report_hook_failure(self.options.name, "setup", exc)
            self.release(conn, exc)
            raise

    def tick(self) -> float:
        """Run the core's timed work; seconds until it is due again."""
        if self._abandoned:
            self._reap()
        with self._lock:
            now = _monotonic()
            self.core.tick(now)
            actions = self.core.take_actions()
            due = self.core.next_tick(now)
        self._run(actions)
        return max(due - now, 0.0)


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
            delay = 1.0
        nudge = face._nudge
        del face
        nudge.wait(delay)
        nudge.clear()
