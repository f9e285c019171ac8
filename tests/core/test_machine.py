"""Deterministic unit tests of the sans-I/O pool core (``unipool._core``).

Time is a plain float passed as ``now``; randomness comes from a seeded
``random.Random``. A :class:`Harness` feeds events to a :class:`PoolCore`,
records the actions it decides (the test plays the facade: it decides when an
``Open`` succeeds or fails and when a ``Close`` is done) and checks the core's
invariants after every step.
"""

# The tests assert a slot's state, then act on the core and assert it again:
# mypy keeps the first narrowing across the calls and would call the second
# assertion unreachable.
# mypy: disable-error-code="unreachable"

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from unipool import ConnectError, PoolClosed, PoolTimeout, TooManyWaiters
from unipool._core import (
    CHECKING,
    CLOSING,
    GRANTED,
    IDLE,
    IN_USE,
    OPENING,
    RECYCLE_CAUSES,
    Action,
    Close,
    CoreConfig,
    Notify,
    Open,
    Overdue,
    PoolCore,
    Slot,
    Waiter,
    Wake,
)
from unipool._core.policy import (
    BACKOFF_FACTOR,
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    BACKOFF_SPREAD,
    LIFETIME_JITTER,
    OUTAGE_AFTER,
    OUTAGE_PROBE,
    STREAK_GAP,
    Backoff,
    expiry,
)


class Harness:
    """Plays the facade for one :class:`PoolCore`; ``now`` is a fake clock."""

    def __init__(self, seed: int = 0, **config: Any) -> None:
        # No health checks and no expiry unless a test asks for them.
        config.setdefault("check_after", None)
        config.setdefault("max_lifetime", None)
        config.setdefault("max_idle", None)
        self.core = PoolCore(CoreConfig(**config), random.Random(seed))
        self.now = 0.0
        self.opens: list[Slot] = []  # Open actions not yet reported on, oldest first
        self.closes: list[Slot] = []  # Close actions not yet reported on
        self.close_reasons: list[str] = []  # every Close action's reason, in order
        self.woken: list[Waiter] = []  # every Wake action's waiter, in order
        self.overdue: list[Overdue] = []  # every Overdue action, in order
        self.events: list[tuple[Any, ...]] = []  # every Notify: (event, *args), in order
        self.history: list[Action] = []
        self.last: list[Action] = []  # the actions of the last step

    # -- plumbing ------------------------------------------------------------

    def step(self) -> list[Action]:
        """Collect the actions of the last event and check the invariants."""
        actions = self.core.take_actions()
        for action in actions:
            if isinstance(action, Open):
                assert action.slot.state is OPENING
                assert self.core.size <= self.core.config.max_size, "opened past max_size"
                self.opens.append(action.slot)
            elif isinstance(action, Close):
                assert action.slot.state is CLOSING
                assert action.slot not in self.closes, "closed twice"
                self.closes.append(action.slot)
                self.close_reasons.append(action.reason)
            elif isinstance(action, Overdue):
                assert action.slot.state in (IN_USE, CHECKING)
                self.overdue.append(action)
            elif isinstance(action, Notify):
                self.events.append((action.event, *action.args))
            else:
                assert isinstance(action, Wake)
                assert action.waiter.done
                self.woken.append(action.waiter)
        self.history.extend(actions)
        self.last = actions
        self.core.invariants()
        return actions

    def opened(self) -> int:
        """How many Open actions the last step decided."""
        return sum(isinstance(a, Open) for a in self.last)

    def at(self, now: float) -> Harness:
        assert now >= self.now, "time runs forward"
        self.now = now
        return self

    def advance(self, dt: float) -> Harness:
        return self.at(self.now + dt)

    # -- events --------------------------------------------------------------

    def open(self) -> None:
        self.core.open(self.now)
        self.step()

    def tick(self) -> None:
        self.core.tick(self.now)
        self.step()

    def acquire(self) -> Slot | Waiter:
        got = self.core.acquire(self.now)
        self.step()
        return got

    def get(self) -> Slot:
        """Acquire, expecting a connection at once, ready for use."""
        got = self.acquire()
        assert isinstance(got, Slot), got
        assert got.state is IN_USE
        return got

    def wait(self) -> Waiter:
        """Acquire, expecting to be queued."""
        got = self.acquire()
        assert isinstance(got, Waiter), got
        assert not got.done
        return got

    def accept(self, waiter: Waiter) -> Slot:
        slot = self.core.accept(waiter, self.now)
        self.step()
        return slot

    def cancel(self, waiter: Waiter, *, timed_out: bool = False) -> None:
        self.core.cancel(waiter, self.now, timed_out=timed_out)
        self.step()

    def check_done(self, slot: Slot, ok: bool) -> None:
        self.core.check_done(slot, ok, self.now)
        self.step()

    def release(self, slot: Slot, *, reusable: bool = True, cause: str = "broken") -> None:
        self.core.release(slot, self.now, reusable=reusable, cause=cause)
        self.step()

    def give_back(self, slot: Slot) -> None:
        """Release as the facade does for a clean connection: retire it if it is due."""
        cause = self.core.retire_reason(slot, self.now)
        self.release(slot, reusable=cause is None, cause=cause or "")

    def connect(self, n: int | None = None) -> list[Slot]:
        """Report the ``n`` oldest pending opens (all by default) as connected."""
        done: list[Slot] = []
        for _ in range(len(self.opens) if n is None else n):
            slot = self.opens.pop(0)
            slot.conn = f"conn-{slot.id}"
            self.core.connected(slot, self.now)
            self.step()
            done.append(slot)
        return done

    def fail(self, error: BaseException | None = None, *, fatal: bool = False) -> BaseException:
        """Report the oldest pending open as failed."""
        error = error if error is not None else ConnectError("refused")
        self.core.connect_failed(self.opens.pop(0), error, self.now, fatal=fatal)
        self.step()
        return error

    def abandon(self) -> None:
        self.core.connect_abandoned(self.opens.pop(0), self.now)
        self.step()

    def finish_closes(self) -> int:
        """Report every pending close as done (including closes they lead to)."""
        n = 0
        while self.closes:
            self.core.closed(self.closes.pop(0), self.now)
            self.step()
            n += 1
        return n

    def fill(self) -> list[Slot]:
        """Open the pool and connect its ``min_size`` connections."""
        self.open()
        return self.connect()

    def borrow(self, n: int) -> list[Slot]:
        """Borrow ``n`` connections, opening (and connecting) as many as needed."""
        slots: list[Slot] = []
        for _ in range(n):
            got = self.acquire()
            if isinstance(got, Waiter):
                self.connect()
                assert got.done and got.slot is not None
                got = self.accept(got)
            assert got.state is IN_USE
            slots.append(got)
        return slots


# -- observation and trivia -------------------------------------------------------


def test_new_core_is_empty() -> None:
    h = Harness(min_size=0, max_size=3)
    core = h.core
    assert (core.size, core.idle, core.in_use, core.waiting, core.opening) == (0, 0, 0, 0, 0)
    assert core.first_waiter() is None
    assert core.next_deadline() == math.inf
    assert core.take_actions() == []
    assert list(core.iter_slots()) == []
    assert core.counters.recycled == dict.fromkeys(RECYCLE_CAUSES, 0)
    h.open()
    assert h.last == []


def test_default_rng_and_config() -> None:
    core = PoolCore(CoreConfig())
    assert isinstance(core.rng, random.Random)
    core.open(0.0)
    assert [type(a) for a in core.take_actions()] == [Open]
    core.invariants()


def test_slot_repr_and_iter_slots() -> None:
    h = Harness(min_size=2, max_size=2)
    h.open()
    slots = sorted(h.core.iter_slots(), key=lambda s: s.id)
    assert [repr(s) for s in slots] == ["<Slot 0 opening>", "<Slot 1 opening>"]
    h.connect()
    assert {repr(s) for s in h.core.iter_slots()} == {"<Slot 0 idle>", "<Slot 1 idle>"}


def test_open_fills_min_size() -> None:
    h = Harness(min_size=3, max_size=5)
    h.open()
    assert h.opened() == 3
    assert (h.core.size, h.core.opening, h.core.idle) == (3, 3, 0)
    h.open()  # already filling: nothing more
    assert h.last == []
    h.advance(0.5)
    slots = h.connect()
    assert (h.core.size, h.core.opening, h.core.idle) == (3, 0, 3)
    assert all(s.state is IDLE and s.created_at == 0.5 and s.idle_since == 0.5 for s in slots)
    assert h.core.counters.connects == 3
    assert h.core.last_connect_error is None


# -- acquiring and releasing -------------------------------------------------------


def test_fast_path_acquire_release() -> None:
    h = Harness(min_size=1, max_size=3)
    (slot,) = h.fill()
    got = h.get()
    assert got is slot and slot.owner is None
    assert (h.core.idle, h.core.in_use, h.core.waiting) == (0, 1, 0)
    assert h.core.counters.acquires == 1
    assert h.last == []  # nothing to open: the pool is at min_size
    h.at(2.0).release(slot)
    assert slot.state is IDLE and slot.idle_since == 2.0
    assert (h.core.idle, h.core.in_use) == (1, 0)
    assert h.core.counters.wait_time_total == 0.0  # the fast path never waits


def test_lifo_reuse() -> None:
    h = Harness(min_size=3, max_size=3)
    h.fill()
    a, b, c = h.borrow(3)
    h.release(b)
    h.release(a)
    h.release(c)
    assert h.get() is c  # the warmest connection first
    assert h.get() is a
    assert h.get() is b


def test_fifo_waiters_and_wait_time() -> None:
    h = Harness(min_size=1, max_size=1)
    (slot,) = h.fill()
    h.get()
    w1 = h.at(0.0).wait()
    w2 = h.at(1.0).wait()
    w3 = h.at(1.5).wait()
    assert h.last == []  # at max_size: nothing to open
    assert h.core.waiting == 3 and h.core.first_waiter() is w1

    h.at(2.0).release(slot)
    assert h.last == [Wake(w1)]
    assert w1.done and w1.slot is slot and w1.error is None
    assert slot.state is GRANTED and slot.owner is w1
    assert h.core.waiting == 2 and h.core.first_waiter() is w2
    assert h.core.in_use == 1  # granted counts as lent out

    h.at(3.0).accept(w1)
    assert slot.state is IN_USE and slot.owner is None
    c = h.core.counters
    assert (c.acquires, c.wait_time_total, c.wait_time_max) == (2, 3.0, 3.0)

    h.at(4.0).release(slot)
    assert h.last == [Wake(w2)]
    h.accept(w2)
    assert (c.acquires, c.wait_time_total, c.wait_time_max) == (3, 6.0, 3.0)

    h.at(10.0).release(slot)
    assert h.last == [Wake(w3)]
    h.accept(w3)
    assert (c.acquires, c.wait_time_total, c.wait_time_max) == (4, 14.5, 8.5)
    assert h.woken == [w1, w2, w3]


def test_new_request_queues_behind_waiters() -> None:
    """A request never overtakes the queue, even if a connection is being handed back."""
    h = Harness(min_size=2, max_size=2)
    h.fill()
    a, b = h.borrow(2)
    w1 = h.wait()
    h.release(a)  # goes to w1, not to the idle stack
    assert w1.slot is a and h.core.idle == 0
    w2 = h.wait()  # w1 not yet accepted: w2 must wait too
    h.release(b)
    assert w2.slot is b


def test_cancel_before_grant_leaves_queue() -> None:
    h = Harness(min_size=1, max_size=1)
    (slot,) = h.fill()
    h.get()
    w1, w2 = h.wait(), h.wait()
    h.at(5.0).cancel(w1, timed_out=True)
    assert w1.done and w1.slot is None and w1.error is None
    assert h.core.waiting == 1 and h.core.first_waiter() is w2
    assert h.core.counters.acquire_timeouts == 1
    h.cancel(w1)  # a second cancel is a no-op
    assert h.core.waiting == 1
    h.release(slot)
    assert h.last == [Wake(w2)] and w2.slot is slot
    assert h.core.counters.acquire_timeouts == 1


def test_cancel_after_grant_passes_the_slot_on() -> None:
    h = Harness(min_size=1, max_size=1)
    (slot,) = h.fill()
    h.get()
    w1, w2 = h.wait(), h.wait()
    h.release(slot)
    assert w1.slot is slot
    h.cancel(w1)  # woken, but gave up before accepting
    assert w1.slot is None, "a cancelled waiter never takes the connection"
    assert h.last == [Wake(w2)]
    assert slot.state is GRANTED and slot.owner is w2 and w2.slot is slot
    assert h.core.counters.acquire_timeouts == 0

    h.cancel(w2, timed_out=True)  # nobody left: back to the idle stack
    assert slot.state is IDLE and h.core.idle == 1 and w2.slot is None
    assert h.core.counters.acquire_timeouts == 1
    assert h.core.counters.acquires == 1  # neither waiter took it
    h.cancel(w2)  # no-op
    assert slot.state is IDLE


def test_cancel_after_grant_while_closing_closes() -> None:
    h = Harness(min_size=1, max_size=1)
    (slot,) = h.fill()
    h.get()
    w = h.wait()
    h.release(slot)
    h.core.closing = True  # the pool closes between the grant and the cancel
    h.cancel(w)
    assert slot.state is CLOSING and h.last == [Close(slot, "")]


def test_max_waiting() -> None:
    h = Harness(min_size=1, max_size=1, max_waiting=2)
    h.fill()
    h.get()
    w1, _w2 = h.wait(), h.wait()
    with pytest.raises(TooManyWaiters):
        h.acquire()
    assert h.core.waiting == 2
    h.cancel(w1)
    h.wait()  # room again
    assert h.core.waiting == 2


def test_would_queue_only_when_a_request_would_queue_and_decide_nothing() -> None:
    h = Harness(min_size=1, max_size=2, max_waiting=2)
    h.fill()
    assert not h.core.would_queue()  # a connection is idle
    h.get()
    assert not h.core.would_queue()  # nothing idle, but room: a request opens one
    waiter = h.wait()
    assert h.opened() == 1
    h.connect()
    h.accept(waiter)
    assert h.core.would_queue()  # at max_size: a request only queues
    h.wait()
    assert h.last == []
    assert h.core.would_queue()  # behind the first waiter, likewise
    h.wait()
    assert h.last == []
    assert not h.core.would_queue()  # the queue is full: a request fails at once
    with pytest.raises(TooManyWaiters):
        h.acquire()
    h.core.close(h.now)
    h.step()
    assert not h.core.would_queue()  # closed: a request fails at once


def test_acquire_after_close_raises_pool_closed() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    h.core.close(h.now)
    h.step()
    with pytest.raises(PoolClosed):
        h.acquire()
    assert h.core.counters.acquires == 0


# -- growing -----------------------------------------------------------------------


def test_growth_on_demand_one_open_at_a_time() -> None:
    h = Harness(min_size=0, max_size=3)
    h.open()
    assert h.last == []
    w1 = h.wait()
    assert h.opened() == 1
    w2 = h.wait()
    assert h.opened() == 0  # one open in flight is enough to start with
    (s1,) = h.connect()
    assert w1.slot is s1 and not w2.done
    assert h.opened() == 1  # the next one, for w2
    h.accept(w1)
    (s2,) = h.connect()
    assert w2.slot is s2 and h.opened() == 0
    h.accept(w2)
    assert h.core.size == 2 and h.core.counters.connects == 2


def test_spike_damping_when_min_size_is_borrowed() -> None:
    h = Harness(min_size=5, max_size=50)
    h.fill()
    h.borrow(5)
    waiters = [h.wait() for _ in range(50)]
    assert h.core.opening == 1 and len(h.opens) == 1, "only one open in flight"
    assert h.core.size == 6
    # Each connection that arrives serves the oldest waiter and starts the next open.
    for i in range(3):
        h.connect()
        assert waiters[i].done and waiters[i].slot is not None
        assert not waiters[i + 1].done
        assert h.core.opening == 1
    assert h.core.size == 9 and h.core.waiting == 47


def test_spike_damping_on_an_empty_pool() -> None:
    h = Harness(min_size=5, max_size=50)
    h.open()
    assert h.core.opening == 5
    for _ in range(50):
        h.wait()
    assert h.core.opening == 5, "the min_size refill is already in flight: nothing beyond it"
    h.connect(1)
    assert h.core.opening == 4  # opens in flight: no new one yet
    h.connect()
    assert h.core.opening == 1  # all five served waiters; one more for the queue
    assert h.core.waiting == 45


def test_max_size_never_exceeded() -> None:
    h = Harness(min_size=0, max_size=3)
    waiters = [h.wait() for _ in range(20)]
    while h.opens:
        h.connect(1)
        assert h.core.size <= 3
    assert h.core.size == 3 and h.core.waiting == 17
    slots = [h.accept(w) for w in waiters[:3]]
    # The others are served in order as connections come back.
    for i, w in enumerate(waiters[3:6]):
        h.release(slots[i])
        assert h.last == [Wake(w)]
        assert h.core.size == 3


def test_min_size_refill_after_a_broken_connection() -> None:
    h = Harness(min_size=2, max_size=4)
    h.fill()
    a, _ = h.borrow(2)
    h.release(a, reusable=False)
    assert h.last == [Close(a, "broken")]
    assert h.core.size == 2  # the closing slot still counts
    c = h.core.counters
    assert (c.connections_lost, c.recycled["broken"]) == (1, 1)
    h.finish_closes()
    assert h.opened() == 1 and h.core.size == 2
    assert c.connections_closed == 1
    h.connect()
    assert h.core.idle == 1 and c.connects == 3


def test_unreusable_release_with_other_cause_is_not_lost() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    (a,) = h.borrow(1)
    h.release(a, reusable=False, cause="max_queries")
    c = h.core.counters
    assert (c.connections_lost, c.recycled["max_queries"]) == (0, 1)
    assert h.close_reasons == ["max_queries"]


def test_connect_abandoned_frees_the_slot_and_retries() -> None:
    h = Harness(min_size=1, max_size=2)
    h.open()
    h.abandon()
    assert h.opened() == 1, "not the server's fault: no backoff, open again"
    assert h.core.size == 1 and h.core.counters.connect_errors == 0
    assert h.core.last_connect_error is None


# -- retiring connections -----------------------------------------------------------


def test_max_queries() -> None:
    h = Harness(min_size=1, max_size=2, max_queries=3)
    (slot,) = h.fill()
    h.get().queries = 2
    assert h.core.retire_reason(slot, h.now) is None
    h.give_back(slot)
    assert slot.state is IDLE
    h.get().queries += 1
    assert h.core.retire_reason(slot, h.now) == "max_queries"
    h.give_back(slot)
    assert h.last == [Close(slot, "max_queries")]
    assert h.core.counters.recycled["max_queries"] == 1
    assert h.core.counters.connections_lost == 0


def test_retired_idle_connection_is_skipped_at_hand_out() -> None:
    h = Harness(min_size=2, max_size=3, max_queries=1)
    a, b = h.fill()
    got = h.get()
    assert got is b
    b.queries = 1
    h.release(b)  # handed back as reusable anyway: the core retires it at hand-out
    got = h.get()
    assert got is a
    assert h.close_reasons == ["max_queries"] and b.state is CLOSING
    h.finish_closes()
    assert h.opened() == 1  # min_size refill


def test_max_lifetime_jitter() -> None:
    n, lifetime = 200, 100.0
    h = Harness(seed=42, min_size=n, max_size=n, max_lifetime=lifetime)
    slots = h.fill()
    expiries = [s.expires_at for s in slots]
    low = lifetime * (1 - LIFETIME_JITTER)
    assert all(low <= e <= lifetime for e in expiries), "within 10% below max_lifetime"
    assert max(expiries) - min(expiries) > 0.8 * lifetime * LIFETIME_JITTER, "spread out"
    assert len(set(expiries)) == n
    assert h.core.next_deadline() == min(expiries)

    median = sorted(expiries)[n // 2]
    h.at(median).tick()
    due = sum(e <= median for e in expiries)
    assert h.close_reasons == ["max_lifetime"] * due
    assert h.core.counters.recycled["max_lifetime"] == due
    assert h.core.next_deadline() == min(e for e in expiries if e > median)
    h.finish_closes()
    assert len(h.opens) == due  # refilled to min_size
    assert h.core.next_deadline() == min(e for e in expiries if e > median)

    h.at(lifetime).tick()
    assert h.core.counters.recycled["max_lifetime"] == n


def test_max_lifetime_is_seeded() -> None:
    def expiries(seed: int) -> list[float]:
        return [
            s.expires_at for s in Harness(seed, min_size=5, max_size=5, max_lifetime=10.0).fill()
        ]

    assert expiries(7) == expiries(7)
    assert expiries(7) != expiries(8)


def test_expired_connection_retired_at_hand_out_and_on_release() -> None:
    h = Harness(seed=1, min_size=2, max_size=2, max_lifetime=10.0)
    a, b = h.fill()
    borrowed = h.get()
    assert borrowed is b
    h.at(max(a.expires_at, b.expires_at))
    got = h.acquire()  # a is past its lifetime: retired, and the request waits
    assert isinstance(got, Waiter)
    assert h.close_reasons == ["max_lifetime"]
    assert h.core.retire_reason(b, h.now) == "max_lifetime"
    h.give_back(b)
    assert h.close_reasons == ["max_lifetime", "max_lifetime"]
    h.finish_closes()
    h.connect()
    assert got.done and got.slot is not None


def test_max_idle_trims_only_above_min_size() -> None:
    h = Harness(min_size=2, max_size=5, max_idle=10.0)
    h.fill()
    slots = h.borrow(5)
    for i, s in enumerate(slots):
        h.at(float(i)).release(s)  # idle since 0, 1, 2, 3, 4
    assert h.core.idle == 5
    assert h.core.next_deadline() == 10.0  # the longest idle first

    h.at(9.9).tick()
    assert h.last == []
    h.at(10.0).tick()
    assert h.last == [Close(slots[0], "max_idle")]
    assert h.core.next_deadline() == 11.0
    h.at(12.0).tick()
    assert h.last == [Close(slots[1], "max_idle"), Close(slots[2], "max_idle")]
    assert h.core.counters.recycled["max_idle"] == 3
    assert h.core.next_deadline() == math.inf, "at min_size: no more trimming"

    h.at(100.0).tick()  # even though the closes are still under way
    assert h.last == []
    assert h.core.idle == 2
    h.finish_closes()
    h.tick()
    assert h.last == [] and h.core.size == 2 and h.core.idle == 2


def test_max_idle_does_not_trim_below_min_size_while_closes_are_pending() -> None:
    """Slots already closing are not surplus: they must not be trimmed twice over."""
    h = Harness(min_size=2, max_size=3, max_idle=10.0)
    h.fill()
    slots = h.borrow(3)
    for s in slots:
        h.release(s)
    h.at(10.0).tick()
    assert h.last == [Close(slots[0], "max_idle")]
    h.at(20.0).tick()  # the close of slots[0] is still pending
    assert h.last == [], "would trim below min_size"
    assert h.core.idle == 2
    assert h.core.next_deadline() > h.now, "nothing due right after a tick"


def test_health_check_after_idle() -> None:
    h = Harness(min_size=1, max_size=2, check_after=1.0)
    (slot,) = h.fill()
    assert h.at(0.5).get() is slot  # idle 0.5 s < 1 s: no check
    slot.queries += 1
    h.release(slot)
    got = h.at(1.5).acquire()
    assert got is slot and slot.state is CHECKING
    assert h.core.counters.acquires == 1  # not counted until checked
    assert h.core.in_use == 1
    h.check_done(slot, True)
    assert slot.state is IN_USE and h.core.counters.acquires == 2
    h.release(slot)

    got = h.at(3.0).acquire()
    assert got is slot and slot.state is CHECKING
    h.check_done(slot, False)
    assert h.last == [Close(slot, "lost")]
    c = h.core.counters
    assert (c.connections_lost, c.recycled["broken"], c.acquires) == (1, 1, 2)
    # The requester asks again; it waits for a new connection (one open, size 2 <= max).
    w = h.wait()
    assert h.opened() == 1
    h.at(3.5).connect()
    new = h.accept(w)
    assert new.state is IN_USE, "a fresh connection needs no check"


def test_fresh_connection_failing_its_check_backs_off() -> None:
    """Connects that succeed but yield unusable connections must not spin (rule 4)."""
    h = Harness(seed=8, min_size=0, max_size=2, check_after=0.0)
    w = h.wait()
    h.connect()
    slot = h.accept(w)
    assert slot.state is CHECKING and slot.queries == 0
    h.check_done(slot, False)
    assert h.last == [Close(slot, "lost")], "no new open at once"
    w = h.wait()  # the requester asks again
    assert h.last == []
    retry_at = h.core.next_deadline()
    assert h.now < retry_at <= h.now + BACKOFF_INITIAL * (1 + BACKOFF_SPREAD)
    h.finish_closes()
    assert h.opens == []
    h.at(retry_at).tick()
    assert h.opened() == 1
    h.connect()
    slot = h.accept(w)
    h.check_done(slot, True)
    assert h.core.counters.connections_lost == 1 and h.core.counters.connect_errors == 0


def test_connection_handed_to_a_waiter_is_not_stale() -> None:
    """A connection handed straight from a borrower to a waiter was in use until then."""
    h = Harness(min_size=1, max_size=1, check_after=1.0)
    (slot,) = h.fill()
    h.get()
    w = h.at(50.0).wait()
    h.at(100.0).release(slot)
    assert slot.idle_since == 100.0
    assert h.accept(w).state is IN_USE, "no check: it was in use a moment ago"
    w2 = h.wait()
    h.at(100.5).release(slot)
    assert h.at(102.0).accept(w2).state is CHECKING, "granted, but unclaimed for 1.5 s"


def test_accept_needs_check_after_idle() -> None:
    h = Harness(min_size=1, max_size=1, check_after=0.0)
    h.open()
    w = h.wait()
    h.connect()
    slot = h.accept(w)
    assert slot.state is CHECKING  # check_after=0: checked at every hand-out
    assert h.core.counters.acquires == 0
    assert h.core.counters.wait_time_total == 0.0
    h.check_done(slot, True)
    assert h.core.counters.acquires == 1


def test_failed_check_makes_older_connections_suspect() -> None:
    h = Harness(min_size=3, max_size=4, check_after=10.0)
    h.fill()  # three connections, created at t=0
    c, b, a = h.borrow(3)
    h.release(a)  # idle since 0
    h.at(20.0).release(b)  # idle since 20
    h.release(c)  # idle since 20
    assert h.get() is c and h.get() is b  # recently used: no check needed
    got = h.acquire()
    assert got is a and a.state is CHECKING  # idle 20 s
    h.check_done(a, False)  # a failed: b and c are suspect now
    h.at(21.0).release(b)
    h.release(c)
    h.finish_closes()
    (d,) = h.at(22.0).connect()  # the refill, created after the failure
    assert h.acquire() is d and d.state is IN_USE, "newer connections are not suspect"
    assert h.acquire() is c and c.state is CHECKING, "older ones are checked at next hand-out"
    h.check_done(c, True)
    w_slot = h.acquire()
    assert w_slot is b and b.state is CHECKING
    h.check_done(b, True)
    # Checked once since the failure, they are cleared of it.
    h.release(c)
    assert h.acquire() is c and c.state is IN_USE


def test_suspect_connection_checked_when_granted_to_a_waiter() -> None:
    h = Harness(min_size=2, max_size=2, check_after=5.0)
    h.fill()
    a, b = h.borrow(2)
    h.release(a)
    got = h.at(5.0).acquire()
    assert got is a and a.state is CHECKING
    h.check_done(a, False)
    w = h.wait()
    h.release(b)  # b is older than the failure
    assert w.slot is b
    assert h.accept(w).state is CHECKING


# -- backoff ---------------------------------------------------------------------


def test_reconnect_backoff() -> None:
    h = Harness(seed=3, min_size=1, max_size=2)
    h.open()
    err = h.fail()
    c = h.core.counters
    assert (c.connect_errors, h.core.size, h.core.last_connect_error) == (1, 0, err)
    assert h.last == [], "no new attempt before the backoff delay"
    retry_at = h.core.next_deadline()
    spread = BACKOFF_INITIAL * BACKOFF_SPREAD
    assert BACKOFF_INITIAL - spread <= retry_at <= BACKOFF_INITIAL + spread

    h.at(retry_at * 0.9).tick()
    assert h.last == []
    w = h.wait()  # demand does not break the backoff either
    assert h.last == []
    h.at(retry_at).tick()
    assert h.opened() == 1, "one probe at retry_at"
    assert h.core.next_deadline() > h.now, "nothing due while the probe is in flight"
    h.tick()
    assert h.last == []

    h.fail()
    retry_2 = h.core.next_deadline()
    delay = BACKOFF_INITIAL * BACKOFF_FACTOR
    assert delay * (1 - BACKOFF_SPREAD) <= retry_2 - h.now <= delay * (1 + BACKOFF_SPREAD)
    h.at(retry_2).tick()
    assert h.opened() == 1
    h.connect()
    assert w.done and w.slot is not None
    assert h.core.last_connect_error is None
    assert c.connect_errors == 2 and c.connects == 1
    # Success resets the backoff: a new failure waits the initial delay again.
    assert h.core.next_deadline() == math.inf
    h.opens.clear()
    (slot,) = [h.accept(w)]
    h.release(slot, reusable=False)
    h.finish_closes()
    assert h.opened() == 1  # refill at once: no backoff pending
    h.fail()
    assert h.core.next_deadline() - h.now <= BACKOFF_INITIAL * (1 + BACKOFF_SPREAD)


def test_backoff_probes_one_at_a_time() -> None:
    h = Harness(seed=5, min_size=3, max_size=5)
    h.open()
    assert h.core.opening == 3
    for _ in range(3):
        h.fail()
    assert h.core.size == 0 and h.core.counters.connect_errors == 3
    h.at(h.core.next_deadline()).tick()
    assert h.opened() == 1, "while failing, one probe at a time"
    h.wait()
    assert h.last == []
    h.connect()  # the probe succeeds: the rest of min_size at once
    assert h.core.opening == 2
    assert h.core.waiting == 0


def test_backoff_delay_caps() -> None:
    h = Harness(seed=9, min_size=1, max_size=1)
    h.open()
    delays = []
    for _ in range(10):
        h.fail()
        delays.append(h.core.next_deadline() - h.now)
        h.at(h.core.next_deadline()).tick()
        assert h.opened() == 1
    assert delays[-1] <= BACKOFF_MAX * (1 + BACKOFF_SPREAD)
    assert delays[-1] >= BACKOFF_MAX * (1 - BACKOFF_SPREAD)


def test_reconnect_timeout_stops_background_refill_but_not_demand() -> None:
    h = Harness(seed=11, min_size=2, max_size=3, reconnect_timeout=1.0)
    h.open()
    h.fail()
    h.fail()
    attempts = 2
    while True:
        due = h.core.next_deadline()
        if due == math.inf:
            break
        h.at(due).tick()
        if not h.opened():
            break
        h.fail()
        attempts += 1
        assert attempts < 100
    assert h.now >= 1.0, "retried in the background for reconnect_timeout"
    assert h.now < 1.0 + BACKOFF_MAX * 2
    assert h.core.next_deadline() > h.now, "gave up: nothing due"
    h.advance(60.0).tick()
    assert h.last == [], "no background refill after reconnect_timeout"
    assert h.core.size == 0

    w = h.wait()
    assert h.opened() == 1, "demand still opens"
    h.fail()
    assert not w.done, "a failure after a quiet spell starts a new streak: no outage yet"
    h.at(h.core.next_deadline()).tick()
    assert h.opened() == 1, "and retries for waiters"
    h.connect()
    assert w.done and w.slot is not None
    assert h.opened() == 1, "a success resumes the min_size refill"
    assert h.core.size == 2


def test_a_restart_is_waited_through() -> None:
    """Rule 6: for ``OUTAGE_AFTER`` after the first failure, requests wait as usual."""
    h = Harness(min_size=1, max_size=2)
    h.open()
    h.fail()
    w = h.wait()
    h.at(h.core.next_deadline()).tick()
    h.fail()
    assert not w.done, "a short outage is waited through"
    h.at(h.core.next_deadline()).tick()
    h.connect()
    assert w.done and w.slot is not None


def test_an_outage_fails_requests_at_once_with_the_connection_error() -> None:
    """Rule 6: once connecting has failed for ``OUTAGE_AFTER`` with nothing open, a request
    fails at once with the last error, except that one may try a connection every
    ``OUTAGE_PROBE``; the attempt that fails fails every waiter, a success ends it."""
    h = Harness(min_size=1, max_size=3)
    h.open()
    first = h.fail()
    while h.now < OUTAGE_AFTER:
        h.at(h.core.next_deadline()).tick()
        assert h.opened() == 1
        first = h.fail()
    assert h.now >= OUTAGE_AFTER
    failed_at = h.now
    h.advance(OUTAGE_PROBE / 2)
    with pytest.raises(ConnectError) as info:
        h.acquire()
    assert str(info.value) == str(first), "fails at once, with the real error"
    assert h.core.waiting == 0 and h.last == []
    h.at(failed_at + OUTAGE_PROBE)
    w1 = h.wait()
    assert h.opened() == 1, "a probe, before the backoff's own retry"
    w2 = h.wait()
    assert h.opened() == 0, "one probe at a time: the second request waits for it"
    second = h.fail()
    assert (w1.error, w2.error) == (second, second)
    assert h.core.waiting == 0
    h.advance(OUTAGE_PROBE)
    w3 = h.wait()
    h.connect()
    assert w3.done and w3.slot is not None, "the first success ends the outage"
    h.release(h.accept(w3))
    assert h.get().state is IN_USE


def test_an_outage_raises_a_fresh_error_each_time() -> None:
    """Rule 6: each request gets its own copy of the last error (one object raised over
    and over would collect every raise in its traceback), caused by the driver's error."""
    h = Harness(min_size=1, max_size=1)
    h.open()
    driver_error = OSError("refused")
    error = ConnectError("refused", sqlstate="08001")
    error.__cause__ = driver_error
    while h.now < OUTAGE_AFTER:
        h.fail(error)
        h.at(h.core.next_deadline()).tick()
    h.fail(error)
    raised = []
    for _ in range(2):
        with pytest.raises(ConnectError) as info:
            h.acquire()
        raised.append(info.value)
    assert raised[0] is not raised[1] and error not in raised
    assert all(e.__cause__ is driver_error and e.sqlstate == "08001" for e in raised)


def test_a_failure_after_a_quiet_spell_starts_a_new_streak() -> None:
    """Rule 6: an old failure says nothing about the server now: no outage until
    connecting has failed for ``OUTAGE_AFTER`` again."""
    h = Harness(min_size=0, max_size=1)
    h.wait()
    h.fail()
    h.at(h.core.next_deadline()).tick()
    h.fail()  # the waiter timed out meanwhile; nothing tries for an hour
    h.cancel(h.core.first_waiter())  # type: ignore[arg-type]
    h.advance(3600.0)
    w = h.wait()
    h.fail()
    assert not w.done, "waits, as in a short outage"


def test_an_init_hook_error_is_no_outage() -> None:
    """Rule 6 fails requests only with a connection error, not with what a hook raised."""
    h = Harness(min_size=1, max_size=1)
    h.open()
    while h.now <= OUTAGE_AFTER:
        h.fail(ValueError("init hook failed"))
        h.at(h.core.next_deadline()).tick()
    w = h.wait()
    assert not w.done


def test_no_outage_while_a_connection_is_open() -> None:
    """Rule 6: a borrowed connection may come back, so requests keep waiting for it."""
    h = Harness(min_size=0, max_size=2)
    w = h.wait()
    h.connect()
    slot = h.accept(w)
    w2 = h.wait()
    h.fail()
    h.advance(OUTAGE_AFTER * 5)
    h.tick()
    h.fail()
    assert not w2.done
    w3 = h.wait()
    assert not w3.done, "queued, not failed: a connection is lent out"
    h.release(slot)
    assert w2.done and w2.slot is not None


def test_fatal_connect_failure_fails_all_waiters() -> None:
    h = Harness(min_size=0, max_size=2)
    w1, w2 = h.wait(), h.wait()
    err = h.fail(ConnectError("bad password", sqlstate="28P01"), fatal=True)
    assert h.last == [Wake(w1), Wake(w2)]
    assert w1.error is err and w2.error is err
    assert h.core.waiting == 0
    for w in (w1, w2):
        with pytest.raises(ConnectError):
            h.accept(w)
    h.cancel(w1)  # a failed waiter cancelling is harmless
    assert h.core.counters.connect_errors == 1 and h.core.counters.acquires == 0


def test_non_fatal_connect_failure_keeps_waiters() -> None:
    h = Harness(min_size=0, max_size=2)
    w = h.wait()
    h.fail()
    assert not w.done and h.core.waiting == 1
    assert h.core.next_deadline() == h.core._backoff.retry_at


# -- closing -----------------------------------------------------------------------


def test_close() -> None:
    h = Harness(min_size=0, max_size=3)
    a, b, c = h.borrow(3)
    w1, w2, w3 = h.wait(), h.wait(), h.wait()
    h.release(b)  # granted to w1, not yet accepted
    assert w1.slot is b

    h.core.close(h.now)
    h.step()
    assert h.core.closing
    assert h.last == [Wake(w2), Wake(w3)]
    assert isinstance(w2.error, PoolClosed) and w3.error is w2.error
    assert h.core.waiting == 0
    h.core.close(h.now)  # idempotent
    assert h.step() == []
    with pytest.raises(PoolClosed):
        h.acquire()
    with pytest.raises(PoolClosed):
        h.accept(w2)

    h.release(a)  # borrowed connections close when they come back
    assert h.last == [Close(a, "")]
    h.accept(w1)  # granted before the close: it may still use it
    h.release(b)
    assert h.last == [Close(b, "")]
    h.release(c, reusable=False)
    assert h.last == [Close(c, "broken")]
    h.finish_closes()
    assert h.core.size == 0 and h.last == []  # no refill while closing
    cnt = h.core.counters
    assert cnt.connections_closed == 3 and cnt.connections_lost == 1
    assert cnt.recycled["broken"] == 1 and sum(cnt.recycled.values()) == 1
    h.advance(100).tick()
    assert h.last == []


def test_close_closes_idle_connections() -> None:
    h = Harness(min_size=3, max_size=3)
    slots = h.fill()
    h.core.close(h.now)
    h.step()
    assert h.last == [Close(s, "") for s in slots]
    assert h.core.idle == 0 and h.core.size == 3
    h.finish_closes()
    assert h.core.size == 0 and h.core.counters.connections_closed == 3


def test_connected_while_closing_is_closed() -> None:
    h = Harness(min_size=1, max_size=1)
    h.open()
    h.core.close(h.now)
    h.step()
    (slot,) = h.connect()
    assert h.last == [Close(slot, "")]
    h.finish_closes()
    assert h.core.size == 0


def test_terminate_closes_everything() -> None:
    h = Harness(min_size=0, max_size=4, check_after=5.0)
    h.open()
    in_use, checking, granted = h.borrow(3)
    h.release(checking)
    h.at(10.0)
    got = h.acquire()
    assert got is checking and checking.state is CHECKING
    w1 = h.wait()  # an open for it starts
    (opening,) = h.opens
    w2 = h.wait()
    h.release(granted)
    assert w1.slot is granted and granted.state is GRANTED

    cut = h.core.terminate(h.now)
    h.step()
    assert h.core.closing
    assert h.last == [Wake(w2)]  # no Close action: the face cuts what terminate() returns
    assert set(cut) == {in_use, checking, granted}
    assert all(s.state is CLOSING for s in cut)
    h.closes.extend(cut)
    assert isinstance(w1.error, PoolClosed) and w1.slot is None
    with pytest.raises(PoolClosed):
        h.accept(w1)
    assert opening.state is OPENING  # its outcome is still awaited
    # Borrowers coming back later find their slot already closing.
    h.release(in_use)
    assert h.last == []
    h.release(checking, reusable=False)
    assert h.last == []
    h.finish_closes()
    assert h.core.size == 1
    closed = h.core.counters.connections_closed
    h.core.closed(in_use, h.now)  # a late duplicate report is ignored
    assert h.core.counters.connections_closed == closed
    h.connect()
    assert h.last == [Close(opening, "")]
    h.finish_closes()
    assert h.core.size == 0
    assert h.core.counters.connections_lost == 0


# -- administration ------------------------------------------------------------------


def test_expire() -> None:
    h = Harness(min_size=2, max_size=3)
    a, b = h.fill()
    (borrowed,) = h.borrow(1)
    assert borrowed is b
    h.core.expire(h.now)
    h.step()
    assert h.last == [Close(a, "expired")]
    assert h.core.retire_reason(b, h.now) == "expired"
    h.give_back(b)
    assert h.last == [Close(b, "expired")]
    assert h.core.counters.recycled["expired"] == 2
    h.finish_closes()
    new = h.connect()
    assert len(new) == 2
    assert all(h.core.retire_reason(s, h.now) is None for s in new)


def test_expired_connection_released_as_reusable_is_retired_at_hand_out() -> None:
    h = Harness(min_size=1, max_size=2)
    (a,) = h.fill()
    h.get()
    h.core.expire(h.now)
    h.step()
    h.release(a)  # a facade that did not look: the core still won't hand it out
    got = h.acquire()
    assert isinstance(got, Waiter)
    assert h.close_reasons == ["expired"]


def test_resize_down_closes_surplus_idle_and_lowers_min() -> None:
    h = Harness(min_size=4, max_size=5)
    h.fill()
    slots = h.borrow(5)
    for s in slots:
        h.release(s)  # idle stack: slots[0] at the bottom
    h.core.resize(2, h.now)
    h.step()
    assert h.core.config.max_size == 2 and h.core.config.min_size == 2
    assert h.last == [Close(s, "") for s in slots[:3]], "the coldest ones go"
    assert h.core.size == 5  # until the closes are done
    h.core.resize(2, h.now)  # again: nothing more to close
    assert h.step() == []
    h.finish_closes()
    assert h.core.size == 2 and h.last == []
    assert h.get() is slots[4]


def test_resize_down_lets_borrowed_finish_first() -> None:
    h = Harness(min_size=0, max_size=4)
    a, b, c, d = h.borrow(4)
    h.core.resize(2, h.now)
    h.step()
    assert h.last == [] and h.core.size == 4
    h.release(a)
    assert h.last == [Close(a, "")]
    h.release(b)  # a's close is still pending
    assert h.last == [Close(b, "")]
    h.release(c)  # two are closing: the pool is back at its size
    assert h.last == [] and c.state is IDLE, "closed more than the resize asked for"
    h.finish_closes()
    assert h.core.size == 2
    h.release(d)
    assert d.state is IDLE and h.core.idle == 2


def test_resize_down_while_opening_does_not_keep_surplus() -> None:
    h = Harness(min_size=0, max_size=3)
    h.borrow(1)
    w1 = h.wait()
    h.connect()  # connected for w1 ...
    h.accept(w1)
    w2 = h.wait()
    (opening,) = h.opens
    h.cancel(w2)
    h.core.resize(1, h.now)
    h.step()
    assert h.core.size == 3
    h.connect()  # over max_size: the new connection must not stay idle
    assert opening.state is CLOSING
    h.finish_closes()
    assert h.core.size == 2 and h.core.idle == 0


def test_resize_up_serves_waiters() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    h.get()
    w1, w2 = h.wait(), h.wait()
    assert h.core.opening == 0
    h.core.resize(3, h.now)
    h.step()
    assert h.opened() == 1  # spike damping still applies
    h.connect()
    assert w1.done and h.opened() == 1
    h.connect()
    assert w2.done and h.core.size == 3


def test_resize_while_closing() -> None:
    h = Harness(min_size=1, max_size=3)
    h.fill()
    h.core.close(h.now)
    h.step()
    h.core.resize(2, h.now)
    h.step()
    assert h.last == []


# -- counters and deadlines ------------------------------------------------------------


def test_counters_are_exact() -> None:
    h = Harness(seed=2, min_size=1, max_size=2, max_queries=2, check_after=5.0)
    h.open()
    h.fail()  # connect_errors 1
    h.at(1.0).tick()
    h.connect()  # connects 1
    s = h.get()  # acquires 1
    s.queries = 2
    w = h.at(2.0).wait()  # an open for w
    h.at(2.5).give_back(s)  # retired (max_queries), not handed to w
    assert h.last == [Close(s, "max_queries")]
    h.at(3.0).connect()  # w gets the new connection
    slot = h.at(4.0).accept(w)  # acquires 2, waited 2.0
    h.at(4.0).release(slot, reusable=False)  # lost 1, broken 1
    h.finish_closes()  # closed 2; refill opens one
    h.connect()  # connects 3
    w2 = h.at(20.0).acquire()
    assert isinstance(w2, Slot) and w2.state is CHECKING
    h.check_done(w2, False)  # lost 2, broken 2
    w3 = h.wait()
    h.cancel(w3, timed_out=True)  # timeouts 1
    c = h.core.counters
    assert c.acquires == 2
    assert c.acquire_timeouts == 1
    assert c.wait_time_total == 2.0 and c.wait_time_max == 2.0
    assert c.connects == 3
    assert c.connect_errors == 1
    assert c.connections_lost == 2
    assert c.connections_closed == 2
    assert c.recycled == {
        "max_queries": 1,
        "max_lifetime": 0,
        "max_idle": 0,
        "broken": 2,
        "expired": 0,
        "abandoned": 0,
        "read_only": 0,
        "hook": 0,
    }


def test_next_deadline() -> None:
    h = Harness(seed=4, min_size=1, max_size=3, max_lifetime=100.0, max_idle=10.0)
    assert h.core.next_deadline() == math.inf
    (a,) = h.fill()
    # At min_size: only the lifetime counts.
    assert h.core.next_deadline() == a.expires_at
    x, y = h.borrow(2)
    h.at(5.0).release(x)
    h.at(6.0).release(y)
    # Above min_size: idle time counts too.
    assert h.core.next_deadline() == min(15.0, a.expires_at, x.expires_at, y.expires_at)
    h.core.close(h.now)
    h.step()
    assert h.core.next_deadline() == math.inf


def test_next_deadline_backoff_only_when_something_waits_for_it() -> None:
    h = Harness(seed=6, min_size=0, max_size=1)
    h.open()
    w = h.wait()
    h.fail()
    retry_at = h.core._backoff.retry_at
    assert h.core.next_deadline() == retry_at
    h.cancel(w)
    assert h.core.next_deadline() == math.inf, "nobody needs a connection"


# -- policy ------------------------------------------------------------------------


def test_expiry() -> None:
    rng = random.Random(0)
    assert expiry(5.0, None, rng) == math.inf
    values = [expiry(5.0, 10.0, rng) for _ in range(1000)]
    assert all(14.0 <= v <= 15.0 for v in values)
    assert min(values) < 14.1 and max(values) > 14.9


def test_backoff_policy() -> None:
    b = Backoff(random.Random(0))
    assert b.may_retry(-1e9) and b.failures == 0
    assert not b.gave_up(100.0, 1.0)  # not failing
    b.failed(10.0)
    assert b.failing_since == 10.0 and b.failures == 1
    assert not b.may_retry(10.0) and b.may_retry(b.retry_at)
    assert not b.gave_up(10.5, 1.0) and b.gave_up(11.0, 1.0)
    assert not b.gave_up(1e9, None)
    delays = []
    for i in range(8):
        now = 11.0 + i
        b.failed(now)
        delays.append(b.retry_at - now)
    assert b.failing_since == 10.0 and b.failures == 9
    nominal = [min(BACKOFF_INITIAL * BACKOFF_FACTOR ** (i + 1), BACKOFF_MAX) for i in range(8)]
    for d, n in zip(delays, nominal, strict=True):
        assert n * (1 - BACKOFF_SPREAD) <= d <= n * (1 + BACKOFF_SPREAD)
    assert b.outage(10.0 + OUTAGE_AFTER) and not b.outage(10.0 + OUTAGE_AFTER / 2)
    quiet = b.failed_at + STREAK_GAP + 0.5
    b.failed(quiet)  # after a quiet spell: a new streak, from the first delay again
    assert b.failing_since == quiet and b.delay == BACKOFF_INITIAL * BACKOFF_FACTOR
    assert not b.outage(quiet)
    b.succeeded()
    assert b.failing_since is None
    assert (b.delay, b.retry_at, b.failures) == (BACKOFF_INITIAL, -math.inf, 0)


def test_filled_counts_open_connections_against_min_size() -> None:
    core = PoolCore(CoreConfig(min_size=2, max_size=3), random.Random(0))
    core.open(0.0)
    opens = [a.slot for a in core.take_actions() if isinstance(a, Open)]
    assert len(opens) == 2 and not core.filled()
    core.connected(opens[0], 0.0)
    assert not core.filled()
    core.connected(opens[1], 0.0)
    assert core.filled()
    slot = core.acquire(0.0)
    assert isinstance(slot, Slot) and core.filled()


# -- leaks -------------------------------------------------------------------


def test_a_borrow_held_past_leak_timeout_is_reported_once() -> None:
    h = Harness(min_size=2, max_size=2, leak_timeout=10.0)
    h.fill()
    held = h.get()
    h.advance(4)
    brief = h.get()
    assert h.core.next_deadline() == 10.0  # the oldest borrow comes due first
    h.give_back(brief)
    h.at(9.9).tick()
    assert h.overdue == []
    h.at(10.0).tick()
    assert [(a.slot, a.held_for) for a in h.overdue] == [(held, 10.0)]
    assert h.core.counters.overdue == 1
    assert h.core.next_deadline() == math.inf
    h.advance(100).tick()
    assert len(h.overdue) == 1  # once per borrow
    h.give_back(held)
    again = h.get()
    assert again is held
    h.advance(10).tick()
    assert len(h.overdue) == 2 and h.core.counters.overdue == 2


def test_a_granted_waiter_starts_its_own_leak_clock() -> None:
    h = Harness(min_size=1, max_size=1, leak_timeout=5.0)
    h.fill()
    first = h.get()
    waiter = h.wait()
    h.advance(3)
    h.give_back(first)
    slot = h.accept(waiter)
    assert slot.lent_at == 3.0
    h.at(7.9).tick()
    assert h.overdue == []
    h.at(8.0).tick()
    assert [a.slot for a in h.overdue] == [slot]


def test_no_leak_timeout_no_reports() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    h.get()
    h.advance(10**6).tick()
    assert h.overdue == [] and h.core.next_deadline() == math.inf


def test_an_abandoned_borrow_is_closed_and_replaced() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    slot = h.get()
    waiter = h.wait()
    h.release(slot, reusable=False, cause="abandoned")
    assert h.close_reasons == ["abandoned"]
    assert h.core.counters.recycled["abandoned"] == 1
    assert h.core.counters.connections_lost == 0
    h.finish_closes()
    h.connect()
    assert waiter.done and h.accept(waiter).state is IN_USE


def test_a_write_refused_as_read_only_makes_older_connections_suspect() -> None:
    h = Harness(min_size=3, max_size=3)
    h.fill()
    a, b = h.get(), h.get()
    h.give_back(b)
    h.advance(1)
    h.release(a, reusable=False, cause="read_only")
    assert h.close_reasons == ["read_only"]
    assert h.core.counters.recycled["read_only"] == 1 and h.core.counters.connections_lost == 0
    got = h.acquire()
    assert got is b and got.state is CHECKING  # checked before anyone writes on it again


def test_an_old_idle_connection_failing_its_check_does_not_back_off() -> None:
    """One that had connected fine and died while idle says nothing about connecting now."""
    h = Harness(min_size=2, max_size=2, check_after=1.0)
    h.fill()
    got = h.at(5.0).acquire()
    assert isinstance(got, Slot) and got.state is CHECKING and got.queries == 0
    h.check_done(got, False)
    h.finish_closes()
    assert h.opened() == 1, "its replacement is opened as soon as it is closed"
    other = h.acquire()
    assert isinstance(other, Slot) and other.state is CHECKING  # suspect: checked too


def test_a_connection_lost_before_use_is_not_an_acquire() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    slot = h.get()
    assert h.core.counters.acquires == 1
    check = h.core.check_for(slot, False, h.now, h.now + 1.0, 1.0)  # found dead locally
    assert check is not None
    h.core.check_done(check, False, h.now)
    h.step()
    assert h.close_reasons == ["lost"]
    c = h.core.counters
    assert (c.acquires, c.connections_lost, c.recycled["broken"]) == (0, 1, 1)


def test_an_acquire_that_ran_out_of_time_checking_counts_as_a_timeout() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    slot = h.get()
    check = h.core.check_for(slot, False, h.now, h.now + 1.0, 1.0)
    assert check is not None
    with pytest.raises(PoolTimeout, match="within 1 s") as caught:
        h.core.check_done(check, False, h.now + 1.0)
    h.step()
    assert h.core.counters.acquire_timeouts == 1 and h.close_reasons == ["lost"]
    assert caught.value.__cause__ is None  # no connection error to blame
