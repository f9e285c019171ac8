"""Helpers the metrics tests share (tests/test_otel.py, tests/test_prometheus.py)."""

from __future__ import annotations

import pytest

import unipool
from tests._modes import ModePool


async def wait_in_vain(pool: ModePool) -> None:
    """Queue for a connection that never comes (the test holds the only one)."""
    with pytest.raises(unipool.PoolTimeout):
        async with pool.acquire(timeout=1.0):
            pass


def flaky_stats(pool: unipool.Pool, failures: int) -> None:
    """Make ``pool.stats()`` fail ``failures`` times."""
    real = pool.stats
    left = [failures]

    def stats() -> unipool.PoolStats:
        if left[0]:
            left[0] -= 1
            raise RuntimeError("dictionary changed size during iteration")
        return real()

    pool.stats = stats  # type: ignore[method-assign]
