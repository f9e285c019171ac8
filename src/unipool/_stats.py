"""PoolStats: a snapshot of a pool's gauges and counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PoolStats:
    """Gauges now, and counters since the pool opened (times in seconds).

    ``overdue`` counts borrows held past ``leak_timeout``; ``recycled`` counts
    replaced connections by cause: ``max_queries``, ``max_lifetime``,
    ``max_idle``, ``expired`` (``expire_connections()``), ``broken`` (found
    dead, or its reset failed; these count in ``connections_lost`` too),
    ``abandoned`` (garbage-collected while borrowed), ``read_only`` (a server
    that should take writes refused one) and ``hook`` (an ``init`` or
    ``reset`` hook failed).
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
