"""The pool's state machine: events in, decisions out, no I/O.

Theory of operation
===================

The core owns *slots* and *waiters*. A slot is one place in the pool, holding
at most one connection; a waiter is one ``acquire()`` that could not be served
at once. The core never touches a connection, a clock, a lock or an event
loop: a facade (blocking or async) feeds it events with the current time and
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
one borrower (CHECKING, IN_USE), or the facade doing its I/O (OPENING,
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
opened before it as suspect: each is checked at its next hand-out instead of
being pinged one by one.

Rule 6 (outage): once connecting has failed for ``OUTAGE_AFTER`` with no
connection open, the server is taken to be down. A request then fails at once
with the last connection error, unless an attempt is under way (it waits for
it) or one may start (at most every ``OUTAGE_PROBE``, whatever the backoff: the
request starts one and waits for it). An attempt that fails fails every
waiter; the first success ends the outage.

The facade reads decisions from :attr:`PoolCore.actions` after each event:
``Open(slot)``, ``Close(slot)``, ``Wake(waiter)`` and ``Overdue(slot)`` (a
borrow held past ``leak_timeout``, reported once). Time-driven work runs in
:meth:`PoolCore.tick`; :meth:`PoolCore.next_deadline` tells when it is due.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConnectError, PoolClosed, TooManyWaiters
from .policy import Backoff, expiry

RECYCLE_CAUSES = (
    "max_queries",
    "max_lifetime",
    "max_idle",
    "broken",
    "expired",
    "abandoned",
    "read_only",
)


def _again(error: ConnectError) -> ConnectError:
    """A fresh copy of ``error`` to raise (one object raised over and over would
    collect every raise in its traceback), with the same driver error as its cause."""
    again = ConnectError(error.message, dsn=error.dsn, sqlstate=error.sqlstate)
    again.permanent = error.permanent
    again.__cause__ = error.__cause__
    return again


class SlotState(enum.Enum):
    """Where a slot stands; see the module docstring."""

    OPENING = "opening"
    IDLE = "idle"
    GRANTED = "granted"
    CHECKING = "checking"
    IN_USE = "in_use"
    CLOSING = "closing"


OPENING = SlotState.OPENING
IDLE = SlotState.IDLE
GRANTED = SlotState.GRANTED
CHECKING = SlotState.CHECKING
IN_USE = SlotState.IN_USE
CLOSING = SlotState.CLOSING


@dataclass(eq=False, slots=True)
class Slot:
    """One place in the pool; ``conn`` is the facade's connection object."""

    id: int
    state: SlotState = OPENING
    generation: int = 0
    created_at: float = 0.0
    expires_at: float = math.inf
    idle_since: float = 0.0
    queries: int = 0
    conn: Any = None
    owner: Waiter | None = None
    lent_at: float = 0.0
    lent_by: Any = None  # the facade's note of who borrowed it (for leak reports)
    overdue: bool = False
    close_reason: str = ""  # why it is CLOSING (a recycle cause, or "" for a pool close)

    def __repr__(self) -> str:
        return f"<Slot {self.id} {self.state.value}>"


@dataclass(eq=False, slots=True)
class Waiter:
    """One queued ``acquire()``.

    ``token`` belongs to the facade (its wake-up primitive). The outcome is
    either ``slot`` (granted) or ``error`` (failed); ``done`` is set once the
    waiter has left the queue for any reason.
    """

    enqueued_at: float
    token: Any = None
    slot: Slot | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class Open:
    """Open a connection for ``slot``; report ``connected`` or ``connect_failed``."""

    slot: Slot


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``slot``'s connection; report ``closed``."""

    slot: Slot
    reason: str


@dataclass(frozen=True, slots=True)
class Wake:
    """Wake ``waiter``: it was granted a slot or failed."""

    waiter: Waiter


@dataclass(frozen=True, slots=True)
class Overdue:
    """``slot`` has been borrowed for longer than ``leak_timeout``: report it (once)."""

    slot: Slot
    held_for: float


Action = Open | Close | Wake | Overdue


@dataclass
class CoreConfig:
    """The options the core's decisions depend on (times in seconds)."""

    min_size: int = 1
    max_size: int = 10
    max_waiting: int = 0
    max_queries: int = 0
    max_lifetime: float | None = 3600.0
    max_idle: float | None = 600.0
    check_after: float | None = 1.0
    reconnect_timeout: float | None = 300.0
    leak_timeout: float | None = None


@dataclass
class Counters:
    """Cumulative counters since the pool opened."""

    acquires: int = 0
    acquire_timeouts: int = 0
    wait_time_total: float = 0.0
    wait_time_max: float = 0.0
    connects: int = 0
    connect_errors: int = 0
    connections_lost: int = 0
    connections_closed: int = 0
    overdue: int = 0
    recycled: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECYCLE_CAUSES, 0))


class PoolCore:
    """The sans-I/O pool: see the module docstring for the rules it keeps."""

    def __init__(self, config: CoreConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng if rng is not None else random.Random()
        self.counters = Counters()
        self.actions: list[Action] = []
        self.slots: dict[int, Slot] = {}
        self.closing = False
        self.last_connect_error: BaseException | None = None
        self._idle: list[Slot] = []  # a stack: the warmest connection is reused first
        self._waiters: deque[Waiter] = deque()
        self._live_waiters = 0
        self._opening = 0
        self._next_id = 0
        self._generation = 0
        self._suspect_before = -math.inf
        self._backoff = Backoff(self.rng)
        self._ticked_at = -math.inf

    # -- observation -------------------------------------------------------

    @property
    def size(self) -> int:
        """Slots counted against ``max_size`` (opening ones included)."""
        return len(self.slots)

    @property
    def idle(self) -> int:
        """Connections ready to hand out."""
        return len(self._idle)

    @property
    def waiting(self) -> int:
        """Waiters still queued."""
        return self._live_waiters

    @property
    def opening(self) -> int:
        """Connections being opened."""
        return self._opening

    @property
    def in_use(self) -> int:
        """Slots lent out: granted, being checked or in use."""
        return sum(1 for s in self.slots.values() if s.state in (GRANTED, CHECKING, IN_USE))

    def filled(self) -> bool:
        """Whether ``min_size`` connections are open (idle or lent out)."""
        return self.idle + self.in_use >= self.config.min_size

    def first_waiter(self) -> Waiter | None:
        """The oldest live waiter, if any."""
        return self._waiters[0] if self._waiters else None

    def take_actions(self) -> list[Action]:
        """Hand the pending decisions to the facade, oldest first."""
        actions, self.actions = self.actions, []
        return actions

    # -- acquiring ---------------------------------------------------------

    def acquire(self, now: float) -> Slot | Waiter:
        """Serve a new request: a slot (IN_USE, or CHECKING) or a queued waiter.

        A CHECKING slot must be checked by the requester, which then reports
        :meth:`check_done`.

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
                if slot.state is IN_USE:
                    self.counters.acquires += 1
                return slot
        cap = self.config.max_waiting
        if cap and self._live_waiters >= cap:
            raise TooManyWaiters(f"{self._live_waiters} requests are already waiting (max_waiting)")
        waiter = Waiter(now)
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
            raise waiter.error
        slot = waiter.slot
        assert slot is not None and slot.state is GRANTED and slot.owner is waiter
        slot.owner = None
        slot.state = CHECKING if self._needs_check(slot, now) else IN_USE
        slot.lent_at = now
        slot.overdue = False
        waited = now - waiter.enqueued_at
        c = self.counters
        if slot.state is IN_USE:
            c.acquires += 1
        c.wait_time_total += waited
        c.wait_time_max = max(c.wait_time_max, waited)
        return slot

    def cancel(self, waiter: Waiter, now: float, *, timed_out: bool = False) -> None:
        """A waiter gives up; a slot it was granted meanwhile is passed on."""
        if timed_out:
            self.counters.acquire_timeouts += 1
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

    def check_done(self, slot: Slot, ok: bool, now: float) -> None:
        """The requester checked a CHECKING slot: ``ok`` makes it IN_USE.

        A failed check closes the slot and marks older connections suspect;
        the requester should then ask again with ``acquire(now)``. A slot
        opened moments ago (within ``check_after``) that never ran a query
        fails like a connect: new opens back off.
        """
        assert slot.state is CHECKING
        if ok:
            slot.state = IN_USE
            self.counters.acquires += 1
            return
        self._suspect_before = now
        if slot.queries == 0 and now - slot.created_at <= (self.config.check_after or 0.0):
            # opened moments ago and unusable at once: as good as a failed connect (rule 4);
            # one that had worked and died while idle says nothing about connecting now
            self._backoff.failed(now)
        self._close(slot, "broken", now)
        self.counters.connections_lost += 1
        self._grow(now)

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
        if slot.created_at <= self._suspect_before:
            return True
        after = self.config.check_after
        return after is not None and now - slot.idle_since >= after

    # -- releasing ---------------------------------------------------------

    def retire_reason(self, slot: Slot, now: float) -> str | None:
        """Why ``slot`` must be replaced rather than reused, or ``None``."""
        if slot.generation != self._generation:
            return "expired"
        if now >= slot.expires_at:
            return "max_lifetime"
        cap = self.config.max_queries
        if cap and slot.queries >= cap:
            return "max_queries"
        return None

    def release(self, slot: Slot, now: float, *, reusable: bool, cause: str = "broken") -> None:
        """A borrower gives ``slot`` back, after its reset if it was reusable.

        ``reusable=False`` closes the connection; ``cause`` is counted in
        ``recycled`` (``broken`` also counts as a lost connection;
        ``read_only``, a write refused by a server that should take writes,
        means it was demoted, so every older connection becomes suspect).
        """
        if slot.state is not IN_USE and slot.state is not CHECKING:
            return  # terminated meanwhile: its close is already under way
        if not reusable:
            if cause == "broken":
                self.counters.connections_lost += 1
            elif cause == "read_only":
                self._suspect_before = now
            self._close(slot, cause, now)
            self._grow(now)
            return
        self._make_available(slot, now)

    def timed_out(self, now: float) -> None:
        """An acquire ran out of time checking connections, without waiting in the queue:
        counted like a waiter's timeout."""
        self.counters.acquire_timeouts += 1

    def lost_before_use(self, slot: Slot, now: float) -> None:
        """A connection just handed out (IN_USE) was found dead before its borrower got it:
        it is closed as broken, and the hand-out does not count as an acquire."""
        self.counters.acquires -= 1
        self.release(slot, now, reusable=False, cause="broken")

    def _make_available(self, slot: Slot, now: float) -> None:
        """Give ``slot`` to the oldest live waiter, else put it on the idle stack.

        While closing, or over ``max_size`` after a ``resize()`` down (slots
        already closing do not count), the slot is closed instead.
        """
        if self.closing or self._over_size():
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
        self.last_connect_error = None
        slot.created_at = now
        slot.expires_at = expiry(now, self.config.max_lifetime, self.rng)
        slot.generation = self._generation
        self._make_available(slot, now)
        self._grow(now)

    def connect_failed(
        self, slot: Slot, error: BaseException, now: float, *, fatal: bool = False
    ) -> None:
        """Opening failed: free the slot and back off.

        ``fatal`` (bad password, missing database, ...) also fails every
        waiter at once with ``error``: waiting longer cannot help them.
        """
        assert slot.state is OPENING
        self._opening -= 1
        del self.slots[slot.id]
        self.counters.connect_errors += 1
        self.last_connect_error = error
        self._backoff.failed(now)
        if fatal or (isinstance(error, ConnectError) and self._down(now)):
            self._fail_waiters(error)

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
        self._grow(now)

    def _close(self, slot: Slot, reason: str, now: float) -> None:
        if reason in self.counters.recycled:
            self.counters.recycled[reason] += 1
        slot.state = CLOSING
        slot.owner = None
        slot.close_reason = reason
        self.actions.append(Close(slot, reason))

    def _open(self) -> None:
        slot = Slot(self._next_id)
        self._next_id += 1
        self.slots[slot.id] = slot
        assert self.size <= self.config.max_size, "opened past max_size"
        self._opening += 1
        self.actions.append(Open(slot))

    def _grow(self, now: float) -> None:
        """Ask for the connections that sizing calls for (rule 4)."""
        if self.closing:
            return
        cfg = self.config
        room = cfg.max_size - self.size
        if room <= 0:
            return
        backoff = self._backoff
        if not backoff.may_retry(now) and not (
            self._live_waiters and backoff.may_probe(now) and self._down(now)
        ):
            return
        wanted = 0
        if not self._backoff.gave_up(now, cfg.reconnect_timeout):
            wanted = cfg.min_size - self.size
        if self._live_waiters > self._opening and self._opening == 0:
            wanted = max(wanted, 1)
        if self._backoff.failures:
            wanted = min(wanted, 1 - self._opening)  # probe one at a time while failing
        for _ in range(min(wanted, room)):
            self._open()

    def _down(self, now: float) -> bool:
        """Whether the server is taken to be down (rule 6)."""
        return self._backoff.outage(now) and all(
            s.state is OPENING or s.state is CLOSING for s in self.slots.values()
        )

    def _fail_waiters(self, error: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.done = True
            waiter.error = error
            self.actions.append(Wake(waiter))
        self._live_waiters = 0

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

    def _lent(self) -> Iterator[Slot]:
        return (s for s in self.slots.values() if s.state is IN_USE or s.state is CHECKING)

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
            and (self._live_waiters or self.size < cfg.min_size)
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

    def open(self, now: float) -> None:
        """Start filling the pool up to ``min_size``."""
        self._grow(now)

    def close(self, now: float) -> None:
        """Refuse new requests, fail waiters and close idle connections.

        Borrowed connections are closed when they come back; see
        :meth:`terminate` to close them at once.
        """
        if self.closing:
            return
        self.closing = True
        self._fail_waiters(PoolClosed("the pool is closed"))
        idle, self._idle = self._idle, []
        for slot in idle:
            self._close(slot, "", now)

    def terminate(self, now: float) -> None:
        """Close every connection now, borrowed ones included."""
        self.close(now)
        for slot in list(self.slots.values()):
            if slot.state in (GRANTED, CHECKING, IN_USE):
                if slot.owner is not None:
                    slot.owner.slot = None
                    slot.owner.error = PoolClosed("the pool is closed")
                self._close(slot, "", now)

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

    def _closing_count(self) -> int:
        return sum(1 for s in self.slots.values() if s.state is CLOSING)

    def _over_size(self) -> bool:
        max_size = self.config.max_size
        return self.size > max_size and self.size - self._closing_count() > max_size

    # -- checking ----------------------------------------------------------

    def iter_slots(self) -> Iterator[Slot]:
        """Every slot, in no particular order."""
        return iter(list(self.slots.values()))

    def invariants(self) -> None:
        """Assert the rules of the module docstring (for tests)."""
        states = [s.state for s in self.slots.values()]
        assert states.count(OPENING) == self._opening  # max_size is asserted in _open()
        assert all(s.state is IDLE for s in self._idle)
        assert len({id(s) for s in self._idle}) == len(self._idle)
        assert states.count(IDLE) == len(self._idle)
        assert all(s.id in self.slots for s in self._idle)
        live = [w for w in self._waiters if not w.done]
        assert len(live) == len(self._waiters) == self._live_waiters
        assert not (live and self._idle), "a waiter waits while a connection idles"
        for slot in self.slots.values():
            if slot.state is GRANTED:
                assert slot.owner is not None and slot.owner.slot is slot
                assert slot.owner.done
            else:
                assert slot.owner is None
        for waiter in live:
            assert waiter.slot is None and waiter.error is None
