"""What the core's decisions are made of: slots, waiters, the options they follow,
the counters they move, and the actions a face carries out."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from . import policy

RECYCLE_CAUSES = (
    "max_queries",
    "max_lifetime",
    "max_idle",
    "broken",
    "expired",
    "abandoned",
    "read_only",
    "hook",
)


class SlotState(enum.Enum):
    """Where a slot stands; see the docstring of ``machine``."""

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
    """One place in the pool; ``conn`` is the face's connection object."""

    id: int
    state: SlotState = OPENING
    generation: int = 0
    opened_at: float = 0.0  # when its opening was decided
    created_at: float = 0.0  # when its connection opened
    expires_at: float = math.inf
    checked_at: float = -math.inf  # when it last passed a check
    idle_since: float = 0.0
    queries: int = 0
    conn: Any = None
    owner: Waiter | None = None
    asked_at: float = 0.0  # when the borrower asked for it
    lent_at: float = 0.0
    lent_by: Any = None  # the face's note of who borrowed it (for leak reports)
    overdue: bool = False
    close_reason: str = ""  # why it is CLOSING (a recycle cause, "lost", or "" for a pool close)

    def __repr__(self) -> str:
        return f"<Slot {self.id} {self.state.value}>"


@dataclass(eq=False, slots=True)
class Waiter:
    """One queued ``acquire()`` (or an ``open(wait=True)`` waiting for ``min_size``).

    ``token`` belongs to the face (its wake-up primitive). The outcome is
    either ``slot`` (granted) or ``error`` (failed); ``done`` is set once the
    waiter has left the queue for any reason.
    """

    enqueued_at: float
    token: Any = None
    slot: Slot | None = None
    error: BaseException | None = None
    done: bool = False
    #: listeners were told of this request's acquire already (a hand-out found dead)
    announced: bool = False


@dataclass(frozen=True, slots=True)
class Open:
    """Open a connection for ``slot``; report ``connected`` or ``connect_failed``."""

    slot: Slot


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``slot``'s connection; report ``closed``.

    With :attr:`goodbye`, close it politely, cut after :attr:`timeout` seconds;
    without, terminate it at once.
    """

    slot: Slot
    reason: str

    @property
    def goodbye(self) -> bool:
        """Whether to say goodbye: not when the connection's state is unknown (a server
        that stopped answering would only make the close wait)."""
        return self.reason not in policy.NO_GOODBYE

    @property
    def timeout(self) -> float:
        """Seconds a polite close may take before the connection is cut."""
        return policy.CLOSE_TIMEOUT


@dataclass(frozen=True, slots=True)
class Wake:
    """Wake ``waiter``: it was granted a slot, failed, or the pool is filled."""

    waiter: Waiter


@dataclass(frozen=True, slots=True)
class Overdue:
    """``slot`` has been borrowed for longer than ``leak_timeout``: report it (once)."""

    slot: Slot
    held_for: float


@dataclass(frozen=True, slots=True)
class Notify:
    """Deliver an event to the pool's listeners: ``on_<event>(pool, *args)``."""

    event: str
    args: tuple[Any, ...]


Action = Open | Close | Wake | Overdue | Notify


@dataclass(frozen=True, slots=True)
class Check:
    """Verify ``slot`` before it is handed out, in ``timeout`` seconds at most: run
    ``sql`` and compare its value with ``expect`` (no ``sql``: a plain ping).
    Report :meth:`PoolCore.check_done`.

    ``deadline`` and ``wait`` are the request's: a check that fails after the
    deadline ends the request with a timeout of ``wait`` seconds. ``announced``:
    listeners were told of the request's acquire already.
    """

    slot: Slot
    timeout: float
    sql: str | None
    expect: Any
    deadline: float
    wait: float
    announced: bool = False


@dataclass(frozen=True, slots=True)
class Reset:
    """Reset ``slot``'s session before reuse (``full``: its state is unknown), then run
    the ``reset`` hook, in ``timeout`` seconds at most (then cut). Report
    :meth:`PoolCore.reset_done`."""

    slot: Slot
    full: bool
    timeout: float


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
    name: str = "pool"
    #: the server must take writes (``target_session_attrs=read-write``): checks ask, and
    #: a write refused as read-only retires the connection
    writable: bool = False
    #: a check runs this query and expects this value instead of a plain ping (None: the
    #: writable probe where ``writable``); a pool of standbys asks whether one still is
    probe: tuple[str, Any] | None = None
    #: a ``reset`` hook runs on every release
    reset_hook: bool = False


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
