"""Failed connection attempts, logged without flooding the log during an outage."""

from __future__ import annotations

import logging
import math

logger = logging.getLogger("unipool")


class ConnectLog:
    """Logs failed connection attempts: the first of a streak, then one every ``EVERY``
    seconds, at WARNING (with the count so far), the others at DEBUG; the first success
    after failures at INFO."""

    EVERY = 60.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self.since = 0.0
        self.warned_at = -math.inf

    def failed(self, error: BaseException, now: float) -> None:
        if not self.failures:
            self.since = now
        self.failures += 1
        if now - self.warned_at < self.EVERY:
            logger.debug("pool %r: connection failed: %s", self.name, error)
            return
        self.warned_at = now
        streak = f" ({self.failures} attempts failed in {now - self.since:.0f} s)"
        logger.warning(
            "pool %r: connection failed%s: %s",
            self.name,
            streak if self.failures > 1 else "",
            error,
        )

    def succeeded(self, now: float) -> None:
        if self.failures:
            logger.info(
                "pool %r: connected again after %d failed attempts in %.1f s",
                self.name, self.failures, now - self.since,
            )  # fmt: skip
            self.failures = 0
            self.warned_at = -math.inf
