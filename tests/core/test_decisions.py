"""The core decides what a face only carries out: checks, resets, goodbyes, the wait for
``min_size``, the events listeners hear, and when to tick. Fake clock, no I/O."""

# mypy: disable-error-code="unreachable"

from __future__ import annotations

import pytest

from tests.core.test_machine import Harness
from unipool import ConnectError, ConnectionLost, PoolClosed, PoolTimeout, ReadOnlySQLTransaction
from unipool._core import CHECKING, CLOSING, IDLE, IN_USE, Check, Close, Reset, Slot, Waiter, policy
from unipool._facades.watchdog import Watchdog

# -- checks -----------------------------------------------------------------------


def test_no_check_for_a_live_connection_handed_out_ready() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    slot = h.get()
    assert h.core.check_for(slot, True, h.now, h.now + 30, 30) is None


def test_a_check_the_core_asked_for_is_a_ping_bounded_by_the_request() -> None:
    h = Harness(min_size=1, max_size=1, check_after=1.0)
    (slot,) = h.fill()
    got = h.at(2.0).acquire()
    assert got is slot and slot.state is CHECKING
    check = h.core.check_for(slot, True, h.now, h.now + 30, 30)
    assert check == Check(slot, policy.CHECK_TIMEOUT, None, None, h.now + 30, 30)
    short = h.core.check_for(slot, True, h.now, h.now + 1.0, 1.0)
    assert short is not None and short.timeout == 1.0  # within the request's time
    late = h.core.check_for(slot, True, h.now, h.now - 1.0, 1.0)
    assert late is not None and late.timeout == policy.LAST_CHANCE  # never less than this


def test_a_pool_that_must_reach_a_writable_server_asks_whether_it_is() -> None:
    h = Harness(min_size=1, max_size=1, writable=True)
    h.fill()
    slot = h.get()
    check = h.core.check_for(slot, False, h.now, h.now + 30, 30)  # found dead locally
    assert check is not None
    assert (check.sql, check.expect) == (policy.READ_ONLY_PROBE, policy.WRITABLE)


def test_a_pool_may_ask_its_own_question() -> None:
    h = Harness(min_size=1, max_size=1, probe=("select pg_is_in_recovery()", True))
    h.fill()
    slot = h.get()
    check = h.core.check_for(slot, False, h.now, h.now + 30, 30)
    assert check is not None and (check.sql, check.expect) == ("select pg_is_in_recovery()", True)


def test_a_passed_check_hands_the_slot_out_once() -> None:
    h = Harness(min_size=1, max_size=1, check_after=1.0)
    (slot,) = h.fill()
    got = h.at(2.0).acquire()
    assert isinstance(got, Slot)
    check = h.core.check_for(got, True, h.now, h.now + 30, 30)
    assert check is not None
    h.core.check_done(check, True, h.now)
    assert slot.state is IN_USE and h.core.counters.acquires == 1


def test_an_interrupted_check_drops_its_connection_without_suspicion() -> None:
    h = Harness(min_size=2, max_size=2, check_after=1.0)
    a, b = h.fill()
    got = h.at(2.0).acquire()
    assert got is b
    check = h.core.check_for(b, True, h.now, h.now + 30, 30)
    assert check is not None
    h.core.check_abandoned(check, h.now)
    h.step()
    assert h.close_reasons == ["broken"] and b.state is CLOSING
    assert not h.core._needs_check(a, h.now - 1.5)  # the others are not suspect


# -- give-back --------------------------------------------------------------------


def given_back(h: Harness, slot: Slot, **kwargs: object) -> Reset | None:
    args: dict[str, object] = {"error": None, "dirty": False, "clean": True, **kwargs}
    reset = h.core.give_back(slot, h.now, **args)  # type: ignore[arg-type]
    h.step()
    return reset


def test_a_clean_borrow_is_reused_without_a_round_trip() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    slot = h.get()
    assert given_back(h, slot) is None
    assert slot.state is IDLE


@pytest.mark.parametrize(
    ("kwargs", "full"),
    [
        ({"dirty": True}, True),
        ({"clean": False}, False),  # a transaction left open: rolled back, no more
        ({"error": KeyboardInterrupt()}, True),  # interrupted: the session is in doubt
        ({"error": ValueError("user bug")}, False),
    ],
)
def test_a_session_that_may_have_changed_is_reset(kwargs: dict[str, object], full: bool) -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    slot = h.get()
    if "clean" not in kwargs and not full:
        kwargs = {**kwargs, "clean": False}
    reset = given_back(h, slot, **kwargs)
    assert reset == Reset(slot, full, policy.CLOSE_TIMEOUT)
    assert slot.state is IN_USE  # still the borrower's until the reset is done
    h.core.reset_done(reset, True, h.now)
    h.step()
    assert slot.state is IDLE


def test_a_reset_hook_means_a_reset_every_time() -> None:
    h = Harness(min_size=1, max_size=1, reset_hook=True)
    h.fill()
    slot = h.get()
    reset = given_back(h, slot)
    assert reset is not None and not reset.full


def test_a_failed_reset_replaces_the_connection() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    slot = h.get()
    reset = given_back(h, slot, dirty=True)
    assert reset is not None
    h.core.reset_done(reset, False, h.now)
    h.step()
    assert h.close_reasons == ["broken"] and h.core.counters.connections_lost == 1
    h.finish_closes()
    assert h.opened() == 1  # replaced once closed: size never passes max_size


@pytest.mark.parametrize(
    ("error", "writable", "reason"),
    [
        (ConnectionLost("gone"), False, "lost"),
        (ReadOnlySQLTransaction("read-only"), True, "read_only"),
    ],
)
def test_an_error_that_condemns_the_connection_retires_it_without_a_reset(
    error: BaseException, writable: bool, reason: str
) -> None:
    h = Harness(min_size=2, max_size=2, writable=writable)
    older, _ = h.fill()
    slot = h.get()
    assert given_back(h, slot, error=error, dirty=True) is None
    assert h.close_reasons == [reason]
    goodbye = Close(slot, reason).goodbye
    assert goodbye is (reason == "read_only")  # a dead connection gets no goodbye
    if reason == "read_only":  # demoted: every older connection is checked before use
        assert h.core._needs_check(older, h.now)


def test_a_read_only_refusal_is_a_plain_error_where_writes_were_not_asked_for() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    slot = h.get()
    assert given_back(h, slot, error=ReadOnlySQLTransaction("read-only")) is None
    assert slot.state is IDLE


def test_a_connection_due_for_retirement_is_not_reset() -> None:
    h = Harness(min_size=1, max_size=1, max_queries=1)
    h.fill()
    slot = h.get()
    slot.queries = 1
    assert given_back(h, slot, dirty=True) is None
    assert h.close_reasons == ["max_queries"]


def test_goodbyes() -> None:
    slot = Slot(0)
    for reason in ("broken", "lost", "abandoned"):
        assert not Close(slot, reason).goodbye
    for reason in ("", "max_idle", "max_lifetime", "expired", "read_only"):
        assert Close(slot, reason).goodbye
    assert Close(slot, "").timeout == policy.CLOSE_TIMEOUT


# -- waiting for min_size ---------------------------------------------------------


def test_waiting_for_min_size() -> None:
    h = Harness(min_size=2, max_size=2)
    h.open()
    waiter = h.core.wait_filled(h.now)
    assert isinstance(waiter, Waiter)
    h.connect(1)
    assert waiter not in h.woken
    h.connect(1)
    assert h.woken == [waiter] and waiter.done
    assert h.core.fill_result(waiter, 5.0, h.now) is None
    assert h.core.wait_filled(h.now) is None  # filled already


def test_waiting_for_min_size_ends_at_a_permanent_error() -> None:
    h = Harness(min_size=1, max_size=1)
    h.open()
    waiter = h.core.wait_filled(h.now)
    assert waiter is not None
    refused = ConnectError("password authentication failed")
    refused.permanent = True
    h.fail(refused)
    assert h.woken == [waiter]
    error = h.core.fill_result(waiter, 5.0, h.now)
    assert isinstance(error, ConnectError) and error is not refused  # a copy, raised afresh
    assert (error.message, error.permanent) == (refused.message, True)
    with pytest.raises(ConnectError):
        h.core.wait_filled(h.now)


def test_waiting_for_min_size_runs_out_of_time() -> None:
    h = Harness(min_size=1, max_size=1)
    h.open()
    waiter = h.core.wait_filled(h.now)
    assert waiter is not None
    error = h.core.fill_result(waiter, 5.0, h.at(5.0).now)
    assert isinstance(error, PoolTimeout) and "within 5 s" in str(error)
    waiter = h.core.wait_filled(h.now)
    assert waiter is not None
    refused = h.fail()  # a transient error: waited through, and raised at the end
    assert waiter not in h.woken
    error = h.core.fill_result(waiter, 5.0, h.at(10.0).now)
    assert isinstance(error, ConnectError) and str(error) == str(refused)


def test_waiting_for_min_size_ends_when_the_pool_closes() -> None:
    h = Harness(min_size=1, max_size=1)
    h.open()
    waiter = h.core.wait_filled(h.now)
    assert waiter is not None
    h.core.close(h.now)
    h.step()
    assert h.woken == [waiter]
    assert isinstance(h.core.fill_result(waiter, 5.0, h.now), PoolClosed)


# -- events -----------------------------------------------------------------------


def test_no_events_unless_observed() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    slot = h.get()
    given_back(h, slot)
    assert h.events == []


def test_events() -> None:
    h = Harness(min_size=1, max_size=1, max_queries=2)
    h.core.observed = True
    h.open()
    h.at(0.25).connect()
    assert h.events == [("connect", 0.25)]
    slot = h.at(1.0).get()
    w = h.at(1.5).wait()
    given_back(h.at(3.0), slot)
    assert h.at(3.5).accept(w) is slot
    w2 = h.wait()
    h.core.cancel(w2, h.at(4.0).now, timed_out=True)
    slot.queries = 2
    given_back(h.at(5.0), slot)
    h.finish_closes()
    h.fail(ConnectError("refused"))
    assert h.events[1:] == [
        ("acquire", 0.0),
        ("release", 2.0),
        ("acquire", 2.0),  # asked at 1.5, handed out at 3.5
        ("timeout",),
        ("release", 1.5),
        ("close_connection", "max_queries"),
        ("connect_error", h.core.last_connect_error),
    ]


def test_a_request_served_after_a_dead_hand_out_is_announced_once() -> None:
    """A connection handed out and found dead locally: its check fails, the request is
    asked again and served by another; listeners hear one acquire, counters count one."""
    h = Harness(min_size=2, max_size=2)
    h.core.observed = True
    h.fill()
    h.events.clear()
    first = h.at(1.0).get()
    check = h.core.check_for(first, False, h.now, h.now + 30, 30)
    assert check is not None and not check.announced
    h.core.check_done(check, False, h.now)
    h.step()
    again = h.core.acquire(h.at(1.5).now, announced=True)
    h.step()
    assert isinstance(again, Slot) and again is not first
    assert again.state is CHECKING  # suspect: older than the connection found dead
    second = h.core.check_for(again, True, h.now, h.now + 30, 30, announced=True)
    assert second is not None and second.announced
    h.core.check_done(second, True, h.now)
    h.step()
    assert [e for e in h.events if e[0] == "acquire"] == [("acquire", 0.0)]
    assert h.core.counters.acquires == 1


def test_a_request_announced_before_that_waits_is_not_announced_again() -> None:
    h = Harness(min_size=1, max_size=1)
    h.core.observed = True
    (slot,) = h.fill()
    held = h.get()
    h.events.clear()
    waiter = h.core.acquire(h.now, announced=True)
    assert isinstance(waiter, Waiter) and waiter.announced
    given_back(h.at(1.0), held)
    assert h.accept(waiter) is slot
    assert [e for e in h.events if e[0] == "acquire"] == []
    assert h.core.counters.acquires == 2


# -- time -------------------------------------------------------------------------


def test_the_next_tick_is_never_further_than_tick_max() -> None:
    h = Harness(min_size=1, max_size=1)
    h.fill()
    assert h.core.next_tick(h.now) == h.now + policy.TICK_MAX
    h = Harness(min_size=1, max_size=2, max_idle=0.5)
    h.fill()
    slot = h.at(1.0).get()
    extra = h.borrow(1)[0]
    given_back(h, extra)
    given_back(h, slot)
    assert h.core.next_tick(h.now) == h.now + 0.5


def test_the_watchdog_cuts_only_what_overran_on_its_clock() -> None:
    now = 100.0
    dog = Watchdog(clock=lambda: now)
    with dog.guard("late", 1.0, "p"), dog.guard("later", 3.0, "q"):
        with dog.guard("done in time", 0.5, "r"):
            pass
        victims, wait = dog.due(100.9)
        assert victims == [] and wait == pytest.approx(0.1)
        victims, wait = dog.due(101.0)
        assert victims == [("late", "p")] and wait == pytest.approx(2.0)
        victims, _ = dog.due(101.0)
        assert victims == []  # cut once
    assert dog.due(104.0) == ([], None)  # left in time: disarmed


def test_suspect_connections_are_checked_once() -> None:
    h = Harness(min_size=3, max_size=3)
    *_, c = h.fill()
    h.at(1.0)
    got = h.acquire()
    assert got is c and c.state is IN_USE
    check = h.core.check_for(c, False, h.now, h.now + 30, 30)  # found dead locally
    assert check is not None
    h.core.check_done(check, False, h.now)  # a failed check: a and b become suspect
    h.step()
    first = h.acquire()
    assert isinstance(first, Slot) and first.state is CHECKING
    h.core.check_done(first, True, h.now)
    given_back(h, first)
    again = h.advance(0.1).acquire()
    assert again is first and again.state is IN_USE, "checked since: not checked again"


def test_a_connection_lost_in_use_makes_the_older_ones_suspect() -> None:
    h = Harness(min_size=2, max_size=2)
    older, newer = h.fill()
    slot = h.at(1.0).get()
    assert slot is newer
    assert given_back(h, slot, error=ConnectionLost("gone")) is None
    assert h.close_reasons == ["lost"]
    got = h.acquire()
    assert got is older and older.state is CHECKING  # a dead server takes them all


def test_a_check_cut_short_by_terminate_ends_with_pool_closed() -> None:
    h = Harness(min_size=1, max_size=1, check_after=1.0)
    (slot,) = h.fill()
    assert h.at(2.0).acquire() is slot and slot.state is CHECKING
    cut = h.core.terminate(h.now)
    assert cut == [slot]
    with pytest.raises(PoolClosed):
        h.core.check_done(slot, True, h.now)  # the check saw the connection's last answer
    assert slot.state is CLOSING and h.core.counters.acquires == 0
