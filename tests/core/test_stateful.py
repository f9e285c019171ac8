"""A Hypothesis state machine over the pool core, with a fake clock.

The test plays every party at once: requesters (acquire, accept, cancel,
check, release), the facade's I/O (opens that succeed, fail or are abandoned;
closes that finish) and the administrator (time, tick, expire, resize, close,
terminate). A model of who owns what is kept beside the core and compared
with it after every step.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from unipool import ConnectError, PoolClosed, TooManyWaiters
from unipool._core import (
    CHECKING,
    CLOSING,
    GRANTED,
    IDLE,
    IN_USE,
    OPENING,
    RECYCLE_CAUSES,
    Close,
    CoreConfig,
    Open,
    PoolCore,
    Slot,
    Waiter,
    Wake,
)

TIME_STEPS = (0.0, 0.001, 0.03, 0.06, 0.3, 1.0, 2.5, 7.0, 30.0, 200.0, 4000.0)


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = PoolCore(CoreConfig())
        self.now = 0.0
        self.opens: list[Slot] = []  # Open decided, outcome not yet reported
        self.closes: list[Slot] = []  # Close decided, not yet reported closed
        self.queued: list[Waiter] = []  # live waiters, oldest first
        self.woken: list[Waiter] = []  # Wake received, not yet accepted or cancelled
        self.borrowed: list[Slot] = []  # IN_USE or CHECKING, held by a requester
        self.stale: list[Slot] = []  # borrowed when terminate() closed them
        self.shrunk = False  # resize() lowered max_size at some point
        self.acquires = 0
        self.timeouts = 0
        self.connects = 0
        self.connect_errors = 0
        self.lost = 0
        self.closed = 0
        self.recycled = dict.fromkeys(RECYCLE_CAUSES, 0)
        self.wait_total = 0.0
        self.wait_max = 0.0

    # -- plumbing ------------------------------------------------------------

    @initialize(
        min_size=st.integers(0, 3),
        extra=st.integers(0, 2),
        max_waiting=st.sampled_from([0, 1, 3]),
        max_queries=st.sampled_from([0, 1, 3]),
        max_lifetime=st.sampled_from([None, 5.0, 60.0]),
        max_idle=st.sampled_from([None, 2.0, 20.0]),
        check_after=st.sampled_from([None, 0.0, 1.0]),
        reconnect_timeout=st.sampled_from([None, 0.1, 1.0, 10.0]),
        seed=st.integers(0, 2**16),
    )
    def setup(
        self,
        min_size: int,
        extra: int,
        max_waiting: int,
        max_queries: int,
        max_lifetime: float | None,
        max_idle: float | None,
        check_after: float | None,
        reconnect_timeout: float | None,
        seed: int,
    ) -> None:
        config = CoreConfig(
            min_size=min_size,
            max_size=max(1, min_size + extra),
            max_waiting=max_waiting,
            max_queries=max_queries,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            check_after=check_after,
            reconnect_timeout=reconnect_timeout,
        )
        self.core = PoolCore(config, random.Random(seed))
        self.core.open(self.now)
        self.collect()

    def collect(self) -> None:
        """Take the core's decisions and carry them into the model."""
        backoff = self.core._backoff
        for action in self.core.take_actions():
            if isinstance(action, Open):
                slot = action.slot
                assert slot.state is OPENING and slot not in self.opens
                assert self.core.size <= self.core.config.max_size, "opened past max_size"
                # rule 6: during an outage a waiting request may probe, whatever the backoff
                probe = bool(self.core._live_waiters) and backoff.may_probe(self.now)
                assert self.now >= backoff.retry_at or probe, "opened before the backoff delay"
                if backoff.failures:
                    assert self.core.opening == 1, "more than one probe while failing"
                self.opens.append(slot)
            elif isinstance(action, Close):
                slot = action.slot
                assert slot.state is CLOSING
                assert slot not in self.closes, "closed twice"
                assert slot not in self.opens
                if slot in self.borrowed:  # terminate() took it from its borrower
                    self.borrowed.remove(slot)
                    self.stale.append(slot)
                reason = "broken" if action.reason == "lost" else action.reason
                if reason in self.recycled:
                    self.recycled[reason] += 1
                self.closes.append(slot)
            else:
                assert isinstance(action, Wake)
                waiter = action.waiter
                assert self.queued and self.queued[0] is waiter, "served first come first served"
                self.queued.pop(0)
                assert waiter.done
                assert (waiter.slot is None) != (waiter.error is None)
                self.woken.append(waiter)

    def pick(self, data: st.DataObject, items: list[Slot] | list[Waiter]) -> int:
        return data.draw(st.integers(0, len(items) - 1))

    # -- requesters --------------------------------------------------------------

    @rule()
    def request(self) -> None:
        cap = self.core.config.max_waiting
        quietly = self.core.would_queue()  # then queued, deciding nothing else
        try:
            got = self.core.acquire(self.now)
        except PoolClosed:
            assert self.core.closing and not quietly
            return
        except TooManyWaiters:
            assert cap and len(self.queued) >= cap and not quietly
            self.collect()
            return
        except ConnectError as exc:  # rule 6: the server is down
            last = self.core.last_connect_error
            # a copy of the last error, each raise its own (its traceback is the caller's)
            assert type(exc) is type(last) and exc.args == last.args and not quietly
            assert not self.queued and not self.opens
            assert all(s.state is CLOSING for s in self.core.slots.values())
            self.collect()
            return
        assert not self.core.closing
        assert not quietly or (isinstance(got, Waiter) and not self.core.actions)
        self.collect()
        if isinstance(got, Waiter):
            assert not got.done
            self.queued.append(got)
        else:
            assert not self.queued, "a request overtook the queue"
            assert got.state in (IN_USE, CHECKING)
            if got.state is IN_USE:
                self.acquires += 1
            self.borrowed.append(got)

    @precondition(lambda self: self.queued or self.woken)
    @rule(data=st.data(), timed_out=st.booleans())
    def cancel(self, data: st.DataObject, timed_out: bool) -> None:
        waiters = self.queued + self.woken
        waiter = waiters[self.pick(data, waiters)]
        granted = waiter.slot
        if waiter in self.queued:
            self.queued.remove(waiter)
        else:
            self.woken.remove(waiter)
        self.core.cancel(waiter, self.now, timed_out=timed_out)
        self.timeouts += timed_out
        assert waiter.slot is None, "a cancelled waiter never keeps a connection"
        self.collect()
        if granted is not None:
            assert granted.owner is not waiter
            assert granted.state in (GRANTED, IDLE, CLOSING)

    @precondition(lambda self: self.woken)
    @rule(data=st.data())
    def accept(self, data: st.DataObject) -> None:
        waiter = self.woken.pop(self.pick(data, self.woken))
        if waiter.error is not None:
            with pytest.raises(type(waiter.error)):
                self.core.accept(waiter, self.now)
            self.collect()
            return
        slot = self.core.accept(waiter, self.now)
        self.collect()
        assert slot.state in (IN_USE, CHECKING) and slot.owner is None
        if slot.state is IN_USE:
            self.acquires += 1
        waited = self.now - waiter.enqueued_at
        self.wait_total += waited
        self.wait_max = max(self.wait_max, waited)
        self.borrowed.append(slot)

    @precondition(lambda self: any(s.state is CHECKING for s in self.borrowed))
    @rule(data=st.data(), ok=st.booleans())
    def check(self, data: st.DataObject, ok: bool) -> None:
        checking = [s for s in self.borrowed if s.state is CHECKING]
        slot = checking[self.pick(data, checking)]
        if not ok:
            self.borrowed.remove(slot)
            self.lost += 1
        else:
            self.acquires += 1
        self.core.check_done(slot, ok, self.now)
        self.collect()
        assert slot.state is (IN_USE if ok else CLOSING)

    @precondition(lambda self: self.borrowed)
    @rule(
        data=st.data(),
        kind=st.sampled_from(["clean", "broken", "unchecked"]),
        queries=st.integers(0, 2),
    )
    def release(self, data: st.DataObject, kind: str, queries: int) -> None:
        slot = self.borrowed.pop(self.pick(data, self.borrowed))
        if slot.state is CHECKING or kind == "broken":  # a failed or interrupted borrow
            self.lost += 1
            self.core.release(slot, self.now, reusable=False)
        elif kind == "clean":  # as the facade does: retire it if it is due
            slot.queries += queries
            cause = self.core.retire_reason(slot, self.now)
            self.core.release(slot, self.now, reusable=cause is None, cause=cause or "")
        else:  # handed back without looking: the core must still not misuse it
            slot.queries += queries
            self.core.release(slot, self.now, reusable=True)
        self.collect()
        assert slot.state in (IDLE, GRANTED, CLOSING)

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def release_terminated(self, data: st.DataObject) -> None:
        slot = self.stale.pop(self.pick(data, self.stale))
        size = self.core.size
        self.core.release(slot, self.now, reusable=True)
        assert self.core.take_actions() == [] and self.core.size == size

    # -- the facade's I/O ----------------------------------------------------------

    @precondition(lambda self: self.opens)
    @rule(data=st.data(), outcome=st.sampled_from(["ok", "ok", "fail", "fatal", "abandon"]))
    def finish_open(self, data: st.DataObject, outcome: str) -> None:
        slot = self.opens.pop(self.pick(data, self.opens))
        if outcome == "ok":
            slot.conn = object()
            self.core.connected(slot, self.now)
            self.connects += 1
            assert slot.state in (IDLE, GRANTED, CLOSING)
        elif outcome == "abandon":
            self.core.connect_abandoned(slot, self.now)
        else:
            fatal = outcome == "fatal"
            error = ConnectError("refused", sqlstate="28P01" if fatal else None)
            queued = list(self.queued)
            self.core.connect_failed(slot, error, self.now, fatal=fatal)
            self.connect_errors += 1
            assert self.core.last_connect_error is error
            if fatal:
                self.collect()
                assert not self.queued
                assert all(w.error is error for w in queued)
        if outcome != "ok":
            assert slot.id not in self.core.slots
        self.collect()

    @precondition(lambda self: self.closes)
    @rule(data=st.data())
    def finish_close(self, data: st.DataObject) -> None:
        slot = self.closes.pop(self.pick(data, self.closes))
        self.core.closed(slot, self.now)
        self.closed += 1
        assert slot.id not in self.core.slots
        self.collect()
        self.core.closed(slot, self.now)  # a duplicate report is ignored
        self.collect()

    # -- time and administration -------------------------------------------------------

    @rule(dt=st.sampled_from(TIME_STEPS))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(dt=st.sampled_from(TIME_STEPS))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.core.tick(self.now)
        self.collect()
        assert self.core.next_deadline() > self.now, "tick left work due: a busy loop"

    @rule()
    def tick_at_deadline(self) -> None:
        deadline = self.core.next_deadline()
        if deadline != math.inf:
            self.now = max(self.now, deadline)
        self.core.tick(self.now)
        self.collect()
        assert self.core.next_deadline() > self.now, "tick left work due: a busy loop"

    @rule()
    def expire(self) -> None:
        self.core.expire(self.now)
        self.collect()
        assert all(self.core.retire_reason(s, self.now) == "expired" for s in self.borrowed)

    @rule(max_size=st.integers(1, 5))
    def resize(self, max_size: int) -> None:
        if max_size < self.core.config.max_size:
            self.shrunk = True
        self.core.resize(max_size, self.now)
        self.collect()
        assert self.core.config.min_size <= max_size

    @rule()
    def close(self) -> None:
        self.core.close(self.now)
        self.collect()
        assert self.core.closing and not self.queued and self.core.idle == 0

    @rule()
    def terminate(self) -> None:
        cut = self.core.terminate(self.now)
        self.collect()
        for slot in cut:  # to be cut now: closes the face makes at once
            assert slot.state is CLOSING
            if slot in self.borrowed:  # taken from its borrower
                self.borrowed.remove(slot)
                self.stale.append(slot)
            if slot not in self.closes:
                self.closes.append(slot)
        assert set(self.closes) == set(cut), "a closing slot left uncut"
        assert self.core.closing and not self.borrowed
        assert all(w.slot is None for w in self.woken)

    # -- invariants ------------------------------------------------------------

    @invariant()
    def core_invariants(self) -> None:
        self.core.invariants()

    @invariant()
    def every_slot_has_exactly_one_owner(self) -> None:
        core = self.core
        idle = list(core._idle)
        granted = [w.slot for w in self.woken if w.slot is not None]
        owned = {
            "idle": idle,
            "granted": granted,
            "borrowed": self.borrowed,
            "opening": self.opens,
            "closing": self.closes,
        }
        ids: list[int] = [s.id for slots in owned.values() for s in slots]
        assert len(ids) == len(set(ids)), f"a slot with two owners: {owned}"
        assert set(ids) == set(core.slots), "a slot without an owner"
        for slot in core.slots.values():
            assert slot is core.slots[slot.id]
        assert all(s.state is IDLE for s in idle)
        assert all(s.state is OPENING for s in self.opens)
        assert all(s.state is CLOSING for s in self.closes)
        assert all(s.state in (IN_USE, CHECKING) and s.owner is None for s in self.borrowed)
        for waiter in self.woken:
            if waiter.slot is not None:
                assert waiter.slot.state is GRANTED and waiter.slot.owner is waiter
        for waiter in self.queued:
            assert not waiter.done and waiter.slot is None and waiter.error is None

    @invariant()
    def sizes(self) -> None:
        core = self.core
        max_size = core.config.max_size
        if not self.shrunk:
            assert core.size <= max_size
        closing = len(self.closes)
        assert not (core.idle and core.size - closing > max_size), "idle while over max_size"
        if core.closing:
            assert core.idle == 0 and not self.queued

    @invariant()
    def gauges_and_counters_match_the_model(self) -> None:
        core = self.core
        granted = sum(w.slot is not None for w in self.woken)
        assert core.waiting == len(self.queued)
        assert core.first_waiter() is (self.queued[0] if self.queued else None)
        assert core.opening == len(self.opens)
        assert core.in_use == len(self.borrowed) + granted
        assert core.size == core.idle + core.in_use + len(self.opens) + len(self.closes)
        c = core.counters
        assert c.acquires == self.acquires
        assert c.acquire_timeouts == self.timeouts
        assert c.connects == self.connects
        assert c.connect_errors == self.connect_errors
        assert c.connections_lost == self.lost
        assert c.connections_closed == self.closed
        assert c.recycled == self.recycled
        assert math.isclose(c.wait_time_total, self.wait_total, abs_tol=1e-9)
        assert c.wait_time_max == self.wait_max


PoolMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
test_pool_core = PoolMachine.TestCase


class _First:
    """Draws the first item, for replaying a sequence by hand."""

    def draw(self, strategy: object) -> int:
        return 0


@pytest.mark.parametrize("probe_after", [0.0, 0.06], ids=["down at once", "probe at 60 ms"])
def test_an_outage_seen_by_a_request(probe_after: float) -> None:
    """Two sequences the machine found: during an outage a request either fails at once
    with a copy of the last connection error, or, past ``OUTAGE_PROBE``, starts an attempt
    before the backoff's own retry time (rule 6)."""
    machine = PoolMachine()
    machine.setup(min_size=1, extra=0, max_waiting=0, max_queries=0, max_lifetime=None,
                  max_idle=None, check_after=None, reconnect_timeout=None, seed=0)  # fmt: skip
    draw: Any = _First()
    machine.request()
    machine.cancel(data=draw, timed_out=False)
    machine.finish_open(data=draw, outcome="fail")
    machine.tick(dt=1.0)
    machine.finish_open(data=draw, outcome="fail")
    if probe_after:
        machine.advance(dt=probe_after)
    machine.request()
    machine.teardown()
