"""What the pool core holds, and the rules that read it: gauges, sizing (rule 1 and
rule 4 of ``machine``), the outage test (rule 6), retirement (rule 5), invariants."""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator

from .._errors import PoolTimeout
from .._stats import PoolStats
from .connect_log import ConnectLog
from .policy import Backoff
from .slots import (
    CHECKING,
    CLOSING,
    GRANTED,
    IDLE,
    IN_USE,
    OPENING,
    Action,
    Close,
    CoreConfig,
    Counters,
    Notify,
    Open,
    Slot,
    Waiter,
    Wake,
)


class CoreState:
    """The slots, waiters and counters of one pool; events live in ``machine.PoolCore``."""

    def __init__(self, config: CoreConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng if rng is not None else random.Random()
        self.counters = Counters()
        self.actions: list[Action] = []
        self.slots: dict[int, Slot] = {}
        self.closing = False
        #: whether listeners want events (:class:`Notify` actions)
        self.observed = False
        self.last_connect_error: BaseException | None = None
        self._idle: list[Slot] = []  # a stack: the warmest connection is reused first
        self._waiters: deque[Waiter] = deque()
        self._live_waiters = 0
        self._fill_waiters: list[Waiter] = []
        self._opening = 0
        self._next_id = 0
        self._generation = 0
        self._suspect_before = -math.inf
        self._backoff = Backoff(self.rng)
        self._ticked_at = -math.inf
        self._log = ConnectLog(config.name)

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
        """Slots lent out: granted, being checked or in use.

        Safe to read from a thread other than the pool's (an exporter's): the slots are
        copied in one step before they are counted.
        """
        lent = (GRANTED, CHECKING, IN_USE)
        return sum(1 for s in list(self.slots.values()) if s.state in lent)

    def would_queue(self) -> bool:
        """Whether a request made now would only be queued, and decide nothing else: others
        wait or nothing is idle, in an open pool at ``max_size`` (no connection to open)
        with no connection error on record and room in the queue. Its wait is then its
        checkpoint: the face need not yield before it."""
        if self._idle and not self._live_waiters:
            return False  # the common case, first: it would be handed an idle connection
        cfg = self.config
        if self.closing or self.last_connect_error is not None or len(self.slots) < cfg.max_size:
            return False
        cap = cfg.max_waiting
        return not (cap and self._live_waiters >= cap)  # others wait, or nothing is idle

    def filled(self) -> bool:
        """Whether ``min_size`` connections are open (idle or lent out)."""
        return self.idle + self.in_use >= self.config.min_size

    def first_waiter(self) -> Waiter | None:
        """The oldest live waiter, if any."""
        return self._waiters[0] if self._waiters else None

    def take_actions(self) -> list[Action]:
        """Hand the pending decisions to the face, oldest first."""
        actions, self.actions = self.actions, []
        return actions

    def stats(self, closing: bool = False) -> PoolStats:
        """A snapshot of the gauges and counters (``closing``: the pool says it is)."""
        c = self.counters
        cfg = self.config
        return PoolStats(
            name=cfg.name, min_size=cfg.min_size, max_size=cfg.max_size, size=self.size,
            idle=self.idle, in_use=self.in_use, waiting=self.waiting,
            closing=self.closing or closing, acquires=c.acquires,
            acquire_timeouts=c.acquire_timeouts, wait_time_total=c.wait_time_total,
            wait_time_max=c.wait_time_max, connects=c.connects, connect_errors=c.connect_errors,
            connections_lost=c.connections_lost, connections_closed=c.connections_closed,
            overdue=c.overdue, recycled=dict(c.recycled),
        )  # fmt: skip

    def timeout_error(self, timeout: float) -> PoolTimeout:
        """The error of a request that waited ``timeout`` seconds in vain; its ``__cause__``
        is the last connection error, if the pool is failing to connect."""
        error = PoolTimeout(
            f"no connection available from pool {self.config.name!r} within {timeout:g} s "
            f"(size {self.size}, idle {self.idle}, waiting {self.waiting})"
        )
        error.__cause__ = self.last_connect_error
        return error

    def _emit(self, event: str, *args: object) -> None:
        self.actions.append(Notify(event, args))

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

    def _close(self, slot: Slot, reason: str, now: float) -> None:
        counted = "broken" if reason == "lost" else reason
        if counted in self.counters.recycled:
            self.counters.recycled[counted] += 1
        slot.state = CLOSING
        slot.owner = None
        slot.close_reason = reason
        self.actions.append(Close(slot, reason))

    def _open(self, now: float) -> None:
        slot = Slot(self._next_id, opened_at=now)
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
            self._open(now)

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

    def _lent(self) -> Iterator[Slot]:
        return (s for s in self.slots.values() if s.state is IN_USE or s.state is CHECKING)

    def _closing_count(self) -> int:
        return sum(1 for s in self.slots.values() if s.state is CLOSING)

    def _over_size(self) -> bool:
        max_size = self.config.max_size
        size = len(self.slots)
        return size > max_size and size - self._closing_count() > max_size

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

    def _make_available(self, slot: Slot, now: float) -> None:
        raise NotImplementedError  # PoolCore's: who gets a slot that becomes free
