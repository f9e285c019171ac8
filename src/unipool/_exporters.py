"""What the exporters (``unipool.otel``, ``unipool.prometheus``) share."""

from __future__ import annotations

import logging
from typing import Any

from ._stats import PoolStats

logger = logging.getLogger("unipool")


def read_stats(pool: Any) -> PoolStats | None:
    """``pool.stats()`` read from an exporter's own thread; None (the pool sits out this
    one collection) if it failed, which a scrape must survive."""
    try:
        return pool.stats()  # type: ignore[no-any-return]
    except Exception:
        logger.debug("pool %r: no stats for this collection", pool.name, exc_info=True)
        return None
