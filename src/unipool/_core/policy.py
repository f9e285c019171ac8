"""Pure rules of the pool: bounds, lifetime jitter, reconnect backoff, and what an
error says about a connection.

Nothing here reads a clock or a global random generator: time comes in as
``now`` and randomness from an injected :class:`random.Random`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .._errors import ConnectError, ConnectionLost, ReadOnlySQLTransaction

#: Seconds a health check (ping) may take before the connection is cut.
CHECK_TIMEOUT = 5.0
#: Seconds a check may still take when the acquire's deadline has passed.
LAST_CHANCE = 0.05
#: Seconds a reset or a polite close may take before the connection is cut.
CLOSE_TIMEOUT = 5.0
#: Seconds a cut connection gets to fail its call before an async face cancels the call.
CUT_GRACE = 0.25
#: Close reasons for which a connection is dropped without a goodbye: its state is
#: unknown, and a server that stopped answering would only make the close wait.
NO_GOODBYE = frozenset({"broken", "lost", "abandoned"})
#: The longest a face sleeps between two ticks, whatever the core's next deadline.
TICK_MAX = 1.0
#: Run instead of a plain ping when the pool must reach a server that takes writes,
#: and the answer that says it does.
READ_ONLY_PROBE = "SHOW transaction_read_only"
WRITABLE = "off"

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


def interrupted(error: BaseException | None) -> bool:
    """Whether a borrow ended by cancellation (or an interrupt): a call may have been cut
    short, and the driver's own view of the session may lag behind the server's (asyncpg
    resyncs after a cancel), so only a full reset can tell whether it is clean."""
    return error is not None and not isinstance(error, Exception)


def retire_cause(error: BaseException | None, writable: bool) -> str | None:
    """Why a borrow that ended with ``error`` must not be reused, if the error says so:
    ``"read_only"`` for a write refused by a server that should take writes (it was
    demoted), ``"lost"`` for a connection found dead."""
    if error is None:
        return None
    if isinstance(error, ConnectionLost):
        return "lost"
    if writable and isinstance(error, ReadOnlySQLTransaction):
        return "read_only"
    return None


def is_permanent(error: BaseException) -> bool:
    """Whether a connect error cannot be cured by waiting (bad password, no database, TLS)."""
    return isinstance(error, ConnectError) and error.permanent
