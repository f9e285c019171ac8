"""PoolStats: a snapshot of a pool's gauges and counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolStats:
    """Gauges now, and counters since the pool opened (times in seconds)."""

    name: str
    min_size: int
    max_size: int
    size: int
    idle: int
    in_use: int
    waiting: int
    closing: bool
    acquires: int
    acquire_timeouts: int
    wait_time_total: float
    wait_time_max: float
    connects: int
    connect_errors: int
    connections_lost: int
    connections_closed: int
    recycled: Mapping[str, int]
