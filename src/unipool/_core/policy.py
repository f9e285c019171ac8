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

#: Connecting has failed for this long with no connection open: the server is taken
#: to be down, and an acquire fails at once with the connection error instead of
#: waiting out its timeout (a shorter outage, such as a restart, is waited through).
OUTAGE_AFTER = 1.0
#: While the server is down, requests try a connection at most this often, whatever
#: the backoff says: the first that succeeds ends the outage for everyone.
OUTAGE_PROBE = 0.05
#: A failure after no attempt for this long starts a new streak: an old failure
#: says nothing about the server now.
STREAK_GAP = 2 * BACKOFF_MAX


def expiry(now: float, max_lifetime: float | None, rng: random.Random) -> float:
    """The time at which a connection opened at ``now`` must be replaced."""
    if max_lifetime is None:
        return math.inf
    return now + max_lifetime * (1.0 - LIFETIME_JITTER * rng.random())


@dataclass
class Backoff:
    """Exponential backoff between failed connection attempts.

    ``failing_since`` is the time of the first failure of the current streak,
    ``failed_at`` of the last one; ``retry_at`` the earliest time of the next attempt.
    """

    rng: random.Random
    delay: float = BACKOFF_INITIAL
    failing_since: float | None = None
    failed_at: float = -math.inf
    retry_at: float = -math.inf
    failures: int = field(default=0)

    def failed(self, now: float) -> None:
        """Record a failed attempt at ``now`` and schedule the next one."""
        if self.failing_since is None or now - self.failed_at > STREAK_GAP:
            self.failing_since = now
            self.delay = BACKOFF_INITIAL
        self.failed_at = now
        spread = 1.0 + BACKOFF_SPREAD * (2.0 * self.rng.random() - 1.0)
        self.retry_at = now + self.delay * spread
        self.delay = min(self.delay * BACKOFF_FACTOR, BACKOFF_MAX)
        self.failures += 1

    def succeeded(self) -> None:
        """Forget the failure streak."""
        self.delay = BACKOFF_INITIAL
        self.failing_since = None
        self.failed_at = -math.inf
        self.retry_at = -math.inf
        self.failures = 0

    def may_retry(self, now: float) -> bool:
        """Whether an attempt may start at ``now``."""
        return now >= self.retry_at

    def outage(self, now: float) -> bool:
        """Whether connecting has failed for ``OUTAGE_AFTER`` seconds or more."""
        return self.failing_since is not None and now - self.failing_since >= OUTAGE_AFTER

    def may_probe(self, now: float) -> bool:
        """Whether a request may try a connection at ``now`` during an outage."""
        return now >= min(self.retry_at, self.failed_at + OUTAGE_PROBE)

    def gave_up(self, now: float, reconnect_timeout: float | None) -> bool:
        """Whether background retries have run past ``reconnect_timeout``."""
        if self.failing_since is None or reconnect_timeout is None:
            return False
        return now - self.failing_since >= reconnect_timeout
