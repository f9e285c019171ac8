"""Pure rules of the pool: lifetime jitter and reconnect backoff.

Nothing here reads a clock or a global random generator: time comes in as
``now`` and randomness from an injected :class:`random.Random`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

#: A connection's lifetime is shortened by up to this fraction, so that
#: connections opened together do not all expire together.
LIFETIME_JITTER = 0.1

#: Reconnect backoff: first delay, growth factor, cap and random spread.
BACKOFF_INITIAL = 0.05
BACKOFF_FACTOR = 2.0
BACKOFF_MAX = 1.0
BACKOFF_SPREAD = 0.1


def expiry(now: float, max_lifetime: float | None, rng: random.Random) -> float:
    """The time at which a connection opened at ``now`` must be replaced."""
    if max_lifetime is None:
        return math.inf
    return now + max_lifetime * (1.0 - LIFETIME_JITTER * rng.random())


@dataclass
class Backoff:
    """Exponential backoff between failed connection attempts.

    ``failing_since`` is the time of the first failure of the current streak;
    ``retry_at`` the earliest time of the next attempt.
    """

    rng: random.Random
    delay: float = BACKOFF_INITIAL
    failing_since: float | None = None
    retry_at: float = -math.inf
    failures: int = field(default=0)

    def failed(self, now: float) -> None:
        """Record a failed attempt at ``now`` and schedule the next one."""
        if self.failing_since is None:
            self.failing_since = now
        spread = 1.0 + BACKOFF_SPREAD * (2.0 * self.rng.random() - 1.0)
        self.retry_at = now + self.delay * spread
        self.delay = min(self.delay * BACKOFF_FACTOR, BACKOFF_MAX)
        self.failures += 1

    def succeeded(self) -> None:
        """Forget the failure streak."""
        self.delay = BACKOFF_INITIAL
        self.failing_since = None
        self.retry_at = -math.inf
        self.failures = 0

    def may_retry(self, now: float) -> bool:
        """Whether an attempt may start at ``now``."""
        return now >= self.retry_at

    def gave_up(self, now: float, reconnect_timeout: float | None) -> bool:
        """Whether background retries have run past ``reconnect_timeout``."""
        if self.failing_since is None or reconnect_timeout is None:
            return False
        return now - self.failing_since >= reconnect_timeout
