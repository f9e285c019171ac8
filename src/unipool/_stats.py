"""PoolStats: a snapshot of a pool's gauges and counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PoolStats:
    """Gauges now, and counters since the pool opened (times in seconds).

    Returned by ``pool.stats()``; more in docs/stats.md.

    Attributes:
        name: The pool's ``name`` option.
        min_size: The ``min_size`` option, or what ``resize()`` made it.
        max_size: The ``max_size`` option, or what ``resize()`` made it.
        size: Connections counted against ``max_size``: open, being opened or closed.
        idle: Connections ready to hand out.
        in_use: Connections lent out (handed over, being checked, or borrowed).
        waiting: Requests queued for a connection.
        closing: Whether ``close()`` or ``terminate()`` was called.
        acquires: Connections handed out.
        acquire_timeouts: Requests that gave up waiting (``PoolTimeout``).
        wait_time_total: Seconds requests waited for a connection, summed.
        wait_time_max: The longest such wait, in seconds.
        connects: Connection attempts that succeeded.
        connect_errors: Connection attempts that failed.
        connections_lost: Connections found dead (by a check, by failing their
            borrower's query, or by a failed reset).
        connections_closed: Connections closed, for any reason.
        overdue: Borrows held past ``leak_timeout``.
        recycled: Connections replaced, by cause: ``max_queries``, ``max_lifetime``,
            ``max_idle``, ``expired`` (``expire_connections()``), ``broken`` (found
            dead, or its reset failed; these count in ``connections_lost`` too),
            ``abandoned`` (garbage-collected while borrowed), ``read_only`` (a server
            that should take writes refused one) and ``hook`` (an ``init`` or
            ``reset`` hook failed). Every cause is present, at 0 until it happens.
    """

    name: str
    min_size: int
    max_size: int
    size: int = 0
    idle: int = 0
    in_use: int = 0
    waiting: int = 0
    closing: bool = False
    acquires: int = 0
    acquire_timeouts: int = 0
    wait_time_total: float = 0.0
    wait_time_max: float = 0.0
    connects: int = 0
    connect_errors: int = 0
    connections_lost: int = 0
    connections_closed: int = 0
    overdue: int = 0
    recycled: Mapping[str, int] = field(default_factory=dict)
