"""The pool's state machine: events in, decisions out, no I/O.

Theory of operation
===================

The core owns *slots* and *waiters*. A slot is one place in the pool, holding
at most one connection; a waiter is one ``acquire()`` that could not be served
at once. The core never touches a connection, a clock, a lock or an event
loop: a face (blocking or async) feeds it events with the current time and
carries out what it decides.

Slot states (exactly one at a time)::

    OPENING --connected--> IDLE --acquire--> IN_USE --release--> IDLE
       |                    |  \\--acquire(needs check)--> CHECKING --ok--> IN_USE
       |                    |                                \\--failed--> CLOSING
       |                    \\--to a waiter--> GRANTED --accept--> IN_USE (or CHECKING)
       \\--connect_failed--> (gone)          any state --close--> CLOSING --closed--> (gone)

Rule 1: every slot counts toward ``size`` from the moment its opening is
decided until its connection is known closed, so ``size <= max_size`` holds at
every instant (a ``resize()`` down lets borrowed slots finish first; no slot is
opened while the pool is over its size).

Rule 2: a slot has exactly one owner: the idle stack, one waiter (GRANTED),
one borrower (CHECKING, IN_USE), or the face doing its I/O (OPENING,
CLOSING).

Rule 3: waiters are served strictly first come, first served. A slot that
becomes available goes to the oldest live waiter; a waiter that gives up
(timeout, cancellation) leaves the queue, and if it had already been granted a
slot, that slot is passed on as if it had just been released, so a cancelled
waiter never takes a connection with it.

Rule 4: requesters never open connections themselves. The core asks for them
(``Open`` actions): enough to keep ``min_size``, plus one at a time while
waiters outnumber the connections being opened (spike damping). After a failed
attempt, no other attempt starts before the backoff delay.

Rule 5: connections are replaced, never reused, when they reach
``max_queries``, ``max_lifetime`` (jittered per connection), belong to an
expired generation, or came back broken. Idle connections above ``min_size``
are closed after ``max_idle``. A failed health check marks every connection
opened before it as suspect (so does a connection found dead in use): each is
checked at its next hand-out, once, instead of being pinged one by one.

Rule 6 (outage): once connecting has failed for ``OUTAGE_AFTER`` with no
connection open, the server is taken to be down. A request then fails at once
with the last connection error, unless an attempt is under way (it waits for
it) or one may start (at most every ``OUTAGE_PROBE``, whatever the backoff: the
request starts one and waits for it). An attempt that fails fails every
waiter; the first success ends the outage.

Rule 7: what a hand-out and a give-back need is decided here too: a
:class:`Check` (which probe, how long) when a connection must be verified, a
:class:`Reset` (full or not, how long) when a session may have changed, and
each :class:`Close` says whether the connection gets a goodbye. Listeners'
events (:class:`Notify`) are produced here, once, when the pool is observed.

The face reads decisions from :attr:`PoolCore.actions` after each event.
Time-driven work runs in :meth:`PoolCore.tick`; :meth:`PoolCore.next_tick`
tells when it is due.
"""

from __future__ import annotations

import copy
import math

from .._errors import ConnectError, PoolClosed, PoolTimeout, TooManyWaiters
from . import policy
from .connect_log import logger
from .policy import expiry, interrupted, is_permanent, retire_cause
from .slots import (
    CHECKING,
    CLOSING,
    GRANTED,
    IDLE,
    IN_USE,
    OPENING,
    Check,
    Close,
    Overdue,
    Reset,
    Slot,
    Waiter,
    Wake,
)
from .state import CoreState


def _again(error: ConnectError) -> ConnectError:
    """A fresh copy of ``error`` to raise (one object raised over and over would
    collect every raise in its traceback): of its class, with the same driver error as
    its cause."""
    again = copy.copy(error)
    again.__cause__ = error.__cause__
    return again


def _fresh(error: BaseException) -> BaseException:
    """``error`` to raise once more: a fresh copy when it is a connection error, which is
    shared by every request it fails."""
    return _again(error) if isinstance(error, ConnectError) else error


class PoolCore(CoreState):
    """The sans-I/O pool: see the module docstring for the rules it keeps."""

    # -- acquiring ---------------------------------------------------------

    def acquire(self, now: float, announced: bool = False) -> Slot | Waiter:
        """Serve a new request: a slot (IN_USE, or CHECKING) or a queued waiter.

        The requester then asks :meth:`check_for` whether the slot needs a check.
        ``announced``: asked again after a hand-out found dead, already announced.

        Raises:
            PoolClosed: the pool is closing.
            ConnectError: the server is down (rule 6): the last connection error.
            TooManyWaiters: the queue is full (``max_waiting``).
        """
        if self.closing:
            raise PoolClosed("the pool is closed")
        error = self.last_connect_error
        if (
            error is not None  # the common case, first: one comparison per acquire
            and isinstance(error, ConnectError)
            and self._down(now)  # then nothing is idle either
            and not self._opening
            and not self._backoff.may_probe(now)
        ):
            raise _again(error)
        if self._live_waiters == 0:
            slot = self._pop_idle(now)
            if slot is not None:
                slot.asked_at = now
                if slot.state is IN_USE:
                    self._count_acquire(slot, now, announced)
                return slot
        cap = self.config.max_waiting
        if cap and self._live_waiters >= cap:
            raise TooManyWaiters(f"{self._live_waiters} requests are already waiting (max_waiting)")
        waiter = Waiter(now, announced=announced)
        self._waiters.append(waiter)
        self._live_waiters += 1
        self._grow(now)
        return waiter

    def accept(self, waiter: Waiter, now: float) -> Slot:
        """A woken waiter takes its slot (IN_USE, or CHECKING if it needs a check).

        Raises:
            BaseException: the error the waiter was failed with.
        """
        if waiter.error is not None:
            raise _fresh(waiter.error)
        slot = waiter.slot
        assert slot is not None and slot.state is GRANTED and slot.owner is waiter
        slot.owner = None
        slot.state = CHECKING if self._needs_check(slot, now) else IN_USE
        slot.lent_at = now
        slot.asked_at = waiter.enqueued_at
        slot.overdue = False
        waited = now - waiter.enqueued_at
        c = self.counters
        c.wait_time_total += waited
        c.wait_time_max = max(c.wait_time_max, waited)
        if slot.state is IN_USE:
            self._count_acquire(slot, now, waiter.announced)
        return slot

    def _count_acquire(self, slot: Slot, now: float, announced: bool) -> None:
        self.counters.acquires += 1
        if self.observed and not announced:
            self._emit("acquire", now - slot.asked_at)

    def cancel(self, waiter: Waiter, now: float, *, timed_out: bool = False) -> None:
        """A waiter gives up; a slot it was granted meanwhile is passed on."""
        if timed_out:
            self._count_timeout()
        if not waiter.done:
            waiter.done = True
            self._live_waiters -= 1
            try:
                self._waiters.remove(waiter)
            except ValueError:  # pragma: no cover - a live waiter is always queued
                pass
            return
        slot = waiter.slot
        if slot is not None and slot.owner is waiter:
            waiter.slot = None
            slot.owner = None
            self._make_available(slot, now)

    def time_out(self, waiter: Waiter, timeout: float, now: float) -> PoolTimeout:
        """A waiter of a ``timeout`` seconds' request ran out of time: it leaves (a slot
        granted meanwhile is passed on); the error to raise."""
        self.cancel(waiter, now, timed_out=True)
        return self.timeout_error(timeout)

    def _count_timeout(self) -> None:
        self.counters.acquire_timeouts += 1
        if self.observed:
            self._emit("timeout")

    def check_for(
        self,
        slot: Slot,
        alive: bool,
        now: float,
        deadline: float,
        wait: float,
        announced: bool = False,
    ) -> Check | None:
        """The check a slot just handed out needs before its borrower gets it, if any:
        one the core asked for (CHECKING), or one because the face's local look found
        the connection dead (``alive`` False). Within the request's ``deadline`` (of a
        ``wait`` seconds' request), but never under ``LAST_CHANCE`` seconds (``announced``:
        as for :meth:`acquire`).

        Reads only the borrower's own slot: no lock needed.
        """
        if alive and slot.state is IN_USE:
            return None
        timeout = min(policy.CHECK_TIMEOUT, max(deadline - now, policy.LAST_CHANCE))
        cfg = self.config
        probe = cfg.probe
        if probe is None and cfg.writable:
            probe = (policy.READ_ONLY_PROBE, policy.WRITABLE)
        if probe is None:
            return Check(slot, timeout, None, None, deadline, wait, announced)
        return Check(slot, timeout, probe[0], probe[1], deadline, wait, announced)

    def check_done(self, check: Check | Slot, ok: bool, now: float) -> None:
        """The requester checked a slot: ``ok`` hands it out.

        A failed check closes the slot as lost and marks older connections
        suspect; the requester should then ask again with :meth:`acquire`. A
        slot opened moments ago (within ``check_after``) that never ran a query
        fails like a connect: new opens back off.

        Raises:
            PoolTimeout: the check failed after the request's deadline: no other
                check is started.
            PoolClosed: the pool was terminated while the check ran (its connection
                is being cut).
        """
        slot = check if isinstance(check, Slot) else check.slot
        if slot.state is CLOSING:
            raise PoolClosed("the pool is closed")
        counted = slot.state is IN_USE  # counted at hand-out; the face found it dead
        assert counted or slot.state is CHECKING
        if ok:
            slot.checked_at = now  # cleared of any suspicion raised before now
            if not counted:
                slot.state = IN_USE
                self._count_acquire(slot, now, isinstance(check, Check) and check.announced)
            return
        self._suspect_before = now
        if counted:
            self.counters.acquires -= 1
        elif slot.queries == 0 and now - slot.created_at <= (self.config.check_after or 0.0):
            # opened moments ago and unusable at once: as good as a failed connect (rule 4);
            # one that had worked and died while idle says nothing about connecting
            self._backoff.failed(now)
        self.counters.connections_lost += 1
        self._close(slot, "lost", now)
        self._grow(now)
        if isinstance(check, Check) and now >= check.deadline:
            self._count_timeout()
            raise self.timeout_error(check.wait)

    def check_abandoned(self, check: Check, now: float) -> None:
        """A check was interrupted (not the connection's fault): its connection is
        dropped, its state being unknown."""
        self.release(check.slot, now, reusable=False, cause="broken")

    def _pop_idle(self, now: float) -> Slot | None:
        while self._idle:
            slot = self._idle.pop()
            reason = self.retire_reason(slot, now)
            if reason is not None:
                self._close(slot, reason, now)
                self._grow(now)
                continue
            slot.state = CHECKING if self._needs_check(slot, now) else IN_USE
            slot.lent_at = now
            slot.overdue = False
            return slot
        return None

    def _needs_check(self, slot: Slot, now: float) -> bool:
        suspect_before = self._suspect_before
        if slot.created_at <= suspect_before and slot.checked_at < suspect_before:
            return True  # opened before a failure, and not checked since: once
        after = self.config.check_after
        return after is not None and now - slot.idle_since >= after

    # -- releasing ---------------------------------------------------------

    def give_back(
        self,
        slot: Slot,
        now: float,
        *,
        error: BaseException | None,
        dirty: bool,
        clean: bool,
        noted: BaseException | None = None,
    ) -> Reset | None:
        """A borrower gives ``slot`` back; the borrow ended with ``error`` (if it failed),
        ``dirty`` if a statement may have changed the session, and the driver says its
        session is ``clean`` (no transaction open); ``noted``: an error the connection saw
        during the borrow that may condemn it, even if the borrower caught it.

        Returns the :class:`Reset` to run before the slot can be reused (report
        :meth:`reset_done`), or None: the slot was reused or retired at once.
        """
        if slot.state is not IN_USE and slot.state is not CHECKING:
            return None  # terminated meanwhile: its close is already under way
        if self.observed:
            self._emit("release", now - slot.lent_at)
        if error is None and noted is None:  # the common case, first
            cause = self.retire_reason(slot, now)
        else:
            writable = self.config.writable
            cause = (
                retire_cause(error, writable)
                or retire_cause(noted, writable)
                or self.retire_reason(slot, now)
            )
        if cause is not None:
            self.release(slot, now, reusable=False, cause=cause)
            return None
        full = dirty or (error is not None and interrupted(error))
        if full or not clean or self.config.reset_hook:
            return Reset(slot, full, policy.CLOSE_TIMEOUT)
        self._make_available(slot, now)
        return None

    def reset_done(
        self, reset: Reset, ok: bool, now: float, hook_error: BaseException | None = None
    ) -> None:
        """The reset of a given-back slot ended: ``ok``, it is reused, else replaced; a
        ``reset`` hook that raised ``hook_error`` replaces it too (cause ``hook``)."""
        if hook_error is not None:
            logger.warning("pool %r: reset hook failed: %r", self.config.name, hook_error)
            self.release(reset.slot, now, reusable=False, cause="hook")
            return
        self.release(reset.slot, now, reusable=ok, cause="broken")

    def release(self, slot: Slot, now: float, *, reusable: bool, cause: str = "broken") -> None:
        """``slot`` comes back, reusable or not (then ``cause`` says why: counted in
        ``recycled``; ``broken`` and ``lost`` also count as a lost connection;
        ``lost``, a connection found dead, and ``read_only``, a write refused by a
        server that should take writes (it was demoted), make every older connection
        suspect: each is checked at its next hand-out)."""
        if slot.state is not IN_USE and slot.state is not CHECKING:
            return  # terminated meanwhile: its close is already under way
        if reusable:
            self._make_available(slot, now)
            return
        if cause == "broken" or cause == "lost":
            self.counters.connections_lost += 1
        if cause == "lost" or cause == "read_only":
            self._suspect_before = now
        self._close(slot, cause, now)
        self._grow(now)

    def _make_available(self, slot: Slot, now: float) -> None:
        """Give ``slot`` to the oldest live waiter, else put it on the idle stack.

        While closing, or over ``max_size`` after a ``resize()`` down (slots
        already closing do not count), the slot is closed instead.
        """
        if self.closing or (len(self.slots) > self.config.max_size and self._over_size()):
            self._close(slot, "", now)
            return
        slot.idle_since = now  # granted or idle: it was in use (or opened) until now
        if self._live_waiters:
            waiter = self._waiters.popleft()
            waiter.done = True
            self._live_waiters -= 1
            waiter.slot = slot
            slot.owner = waiter
            slot.state = GRANTED
            self.actions.append(Wake(waiter))
            return
        slot.state = IDLE
        self._idle.append(slot)

    # -- opening and closing connections -----------------------------------

    def connected(self, slot: Slot, now: float) -> None:
        """The connection for an OPENING slot is open."""
        assert slot.state is OPENING
        self._opening -= 1
        self.counters.connects += 1
        self._backoff.succeeded()
        self._log.succeeded(now)
        self.last_connect_error = None
        slot.created_at = now
        slot.expires_at = expiry(now, self.config.max_lifetime, self.rng)
        slot.generation = self._generation
        if self.observed:
            self._emit("connect", now - slot.opened_at)
        self._make_available(slot, now)
        self._grow(now)
        if self._fill_waiters and self.filled():
            self._wake_fill_waiters(None)

    def connect_failed(
        self, slot: Slot, error: BaseException, now: float, *, fatal: bool = False
    ) -> None:
        """Opening failed: free the slot and back off.

        A permanent error (bad password, missing database, TLS; or ``fatal``)
        also fails every waiter at once: waiting longer cannot help them.
        """
        self._log.failed(error, now)
        self._failed(slot, error, now)
        fatal = fatal or is_permanent(error)
        if fatal or (isinstance(error, ConnectError) and self._down(now)):
            self._fail_waiters(error)
        if fatal:
            self._wake_fill_waiters(error)

    def init_failed(self, slot: Slot, error: BaseException, now: float) -> None:
        """The ``init`` hook failed on a new connection (which the face dropped)."""
        logger.warning("pool %r: init hook failed: %r", self.config.name, error)
        self.counters.recycled["hook"] += 1
        self._failed(slot, error, now)

    def _failed(self, slot: Slot, error: BaseException, now: float) -> None:
        assert slot.state is OPENING
        self._opening -= 1
        del self.slots[slot.id]
        self.counters.connect_errors += 1
        self.last_connect_error = error
        self._backoff.failed(now)
        if self.observed:
            self._emit("connect_error", error)

    def connect_abandoned(self, slot: Slot, now: float) -> None:
        """Opening was interrupted (not the server's fault): free the slot."""
        assert slot.state is OPENING
        self._opening -= 1
        del self.slots[slot.id]
        self._grow(now)

    def closed(self, slot: Slot, now: float) -> None:
        """The connection of a CLOSING slot is closed."""
        if self.slots.pop(slot.id, None) is None:
            return
        self.counters.connections_closed += 1
        if self.observed:
            self._emit("close_connection", slot.close_reason or "closed")
        self._grow(now)

    # -- opening the pool --------------------------------------------------

    def open(self, now: float) -> None:
        """Start filling the pool up to ``min_size``."""
        self._grow(now)

    def wait_filled(self, now: float) -> Waiter | None:
        """For ``open(wait=True)``: None if ``min_size`` connections are open, else a
        waiter woken once they are, or with the error that ends the wait (a permanent
        connect error, the pool closing). See :meth:`fill_result`.

        Raises:
            ConnectError: the last attempt failed for good.
        """
        error = self.last_connect_error
        if error is not None and is_permanent(error):
            raise _fresh(error)
        if self.filled():
            return None
        waiter = Waiter(now)
        self._fill_waiters.append(waiter)
        return waiter

    def fill_result(self, waiter: Waiter, timeout: float, now: float) -> BaseException | None:
        """What ends an ``open(wait=True)`` of ``timeout`` seconds whose ``waiter`` was
        woken, or timed out if it was not: None (filled), or the error to raise."""
        if not waiter.done:
            self._fill_waiters.remove(waiter)
            if self.filled():
                return None
            error = self.last_connect_error
            return _fresh(error) if error is not None else self.timeout_error(timeout)
        return None if waiter.error is None else _fresh(waiter.error)

    def _wake_fill_waiters(self, error: BaseException | None) -> None:
        waiters, self._fill_waiters = self._fill_waiters, []
        for waiter in waiters:
            waiter.done = True
            waiter.error = error
            self.actions.append(Wake(waiter))

    # -- time and administration -------------------------------------------

    def tick(self, now: float) -> None:
        """Run what is due at ``now``: retire idle connections, retry opening."""
        cfg = self.config
        self._ticked_at = now
        keep: list[Slot] = []
        surplus = self.size - self._closing_count() - cfg.min_size
        for slot in self._idle:  # oldest first
            reason = self.retire_reason(slot, now)
            idle_too_long = cfg.max_idle is not None and now - slot.idle_since >= cfg.max_idle
            if reason is None and surplus > 0 and idle_too_long:
                reason = "max_idle"
            if reason is None:
                keep.append(slot)
            else:
                surplus -= 1
                self._close(slot, reason, now)
        self._idle = keep
        self._grow(now)
        limit = cfg.leak_timeout
        if limit is not None:
            for slot in self._lent():
                if not slot.overdue and now - slot.lent_at >= limit:
                    slot.overdue = True
                    self.counters.overdue += 1
                    self.actions.append(Overdue(slot, now - slot.lent_at))

    def next_deadline(self) -> float:
        """When :meth:`tick` next has work to do (``math.inf`` if never)."""
        cfg = self.config
        deadline = math.inf
        # A retry that was due by the last tick was made then, or waits for an
        # event (connected, closed, acquire...) that runs _grow itself.
        backoff = self._backoff
        if (
            backoff.failures
            and backoff.retry_at > self._ticked_at
            and (self._live_waiters or self._fill_waiters or self.size < cfg.min_size)
        ):
            deadline = backoff.retry_at
        surplus = self.size - self._closing_count() - cfg.min_size
        for slot in self._idle:
            deadline = min(deadline, slot.expires_at)
            if surplus > 0 and cfg.max_idle is not None:
                deadline = min(deadline, slot.idle_since + cfg.max_idle)
        if cfg.leak_timeout is not None:
            for slot in self._lent():
                if not slot.overdue:
                    deadline = min(deadline, slot.lent_at + cfg.leak_timeout)
        return deadline

    def next_tick(self, now: float) -> float:
        """When a face should run :meth:`tick` next: the next deadline, but no later than
        ``TICK_MAX`` from ``now``."""
        return min(self.next_deadline(), now + policy.TICK_MAX)

    def close(self, now: float) -> None:
        """Refuse new requests, fail waiters and close idle connections.

        Borrowed connections are closed when they come back; see
        :meth:`terminate` to close them at once.
        """
        if self.closing:
            return
        self.closing = True
        closed = PoolClosed("the pool is closed")
        self._fail_waiters(closed)
        self._wake_fill_waiters(closed)
        idle, self._idle = self._idle, []
        for slot in idle:
            self._close(slot, "", now)

    def terminate(self, now: float) -> list[Slot]:
        """Close every connection now, borrowed ones included: the slots whose
        connections the face must cut (closes under way included), each then
        reported :meth:`closed`."""
        self.close(now)
        for slot in list(self.slots.values()):
            if slot.state in (GRANTED, CHECKING, IN_USE):
                if slot.owner is not None:
                    slot.owner.slot = None
                    slot.owner.error = PoolClosed("the pool is closed")
                self._close(slot, "", now)
        self.actions = [a for a in self.actions if a.__class__ is not Close]
        return [slot for slot in self.slots.values() if slot.state is CLOSING]

    def expire(self, now: float) -> None:
        """Replace every connection: idle ones now, borrowed ones on release."""
        self._generation += 1
        self.tick(now)

    def resize(self, max_size: int, now: float) -> None:
        """Change ``max_size`` (lowering ``min_size`` with it if needed)."""
        self.config.max_size = max_size
        self.config.min_size = min(self.config.min_size, max_size)
        while self._idle and self.size - self._closing_count() > max_size:
            self._close(self._idle.pop(0), "", now)
        self._grow(now)
