"""What the exporters (``unipool.otel``, ``unipool.prometheus``) share."""

from __future__ import annotations

import logging
from typing import Any

from ._stats import PoolStats

logger = logging.getLogger("unipool")

_TRIES = 5


def read_stats(pool: Any) -> PoolStats | None:
    """``pool.stats()`` read from an exporter's own thread; None if no whole snapshot came.

    An async pool's state belongs to its event loop's thread and is read there without
    a lock, so a reader on another thread (a periodic metric reader, a scrape handler)
    may catch a container in mid-change and get ``RuntimeError``; a second try almost
    always succeeds. Giving up skips the pool for this one collection.
    """
    for _ in range(_TRIES):
        try:
            return pool.stats()  # type: ignore[no-any-return]
        except RuntimeError:  # noqa: PERF203 - "changed size during iteration": read again
            continue
    logger.debug("pool %r: no stats for this collection (busy on another thread)", pool.name)
    return None
