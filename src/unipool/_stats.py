"""PoolStats: a snapshot of a pool's gauges and counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PoolStats:
    """Gauges now, and counters since the pool opened (times in seconds).

    ``overdue`` counts borrows held past ``leak_timeout``; ``recycled`` counts
    replaced connections by cause (``"abandoned"``: garbage-collected while
    borrowed).
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
