"""What both faces share: errors they raise, the logger, leak reports."""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import sys
import traceback

from .._core import Overdue, PoolCore
from .._dsn import parse_dsn
from .._errors import ConnectError, PoolTimeout, ReadOnlySQLTransaction

logger = logging.getLogger("unipool")

#: Seconds a health check (ping) may take before the connection is given up.
CHECK_TIMEOUT = 5.0
#: Seconds a check may still take when the acquire's deadline has passed.
LAST_CHANCE = 0.05
#: Seconds a reset or a close may take before the connection is cut.
CLOSE_TIMEOUT = 5.0
#: Close reasons for which a connection is dropped without a goodbye: its state is
#: unknown, and a server that stopped answering would only make the close wait.
NO_GOODBYE = frozenset({"broken", "abandoned"})


class ConnectLog:
    """Logs failed connection attempts without flooding: the first of a streak, then
    one every ``EVERY`` seconds, at WARNING (with the count so far), the others at
    DEBUG; the first success after failures at INFO."""

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


def pool_timeout(core: PoolCore, name: str, timeout: float) -> PoolTimeout:
    """The PoolTimeout for a request that waited ``timeout`` seconds in vain.

    Its ``__cause__`` is the last connection error, if the pool is failing to
    connect.
    """
    error = PoolTimeout(
        f"no connection available from pool {name!r} within {timeout:g} s "
        f"(size {core.size}, idle {core.idle}, waiting {core.waiting})"
    )
    error.__cause__ = core.last_connect_error
    return error


#: Run instead of a plain ping when the pool must reach a server that takes writes.
READ_ONLY_PROBE = "SHOW transaction_read_only"


@functools.lru_cache(maxsize=16)
def wants_writable(dsn: str | None) -> bool:
    """Whether the DSN asks for a server that takes writes (``target_session_attrs``)."""
    try:
        attrs = parse_dsn(dsn).params.get("target_session_attrs")
    except ValueError:
        return False
    return attrs in ("read-write", "primary")


def interrupted(error: BaseException | None) -> bool:
    """Whether a borrow ended by cancellation (or an interrupt): a call may have been cut
    short, and the driver's own view of the session may lag behind the server's (asyncpg
    resyncs after a cancel), so only a full reset can tell whether it is clean."""
    return error is not None and not isinstance(error, Exception)


def release_cause(error: BaseException | None, dsn: str | None) -> str | None:
    """Why a borrow that ended with ``error`` must not be reused, if the error says so.

    A write refused as read-only by a server the DSN wants writable means the
    server was demoted: ``"read_only"``.
    """
    if isinstance(error, ReadOnlySQLTransaction) and wants_writable(dsn):
        return "read_only"
    return None


def is_fatal(error: BaseException) -> bool:
    """Whether a connect error cannot be cured by waiting (bad password, no database, TLS)."""
    return isinstance(error, ConnectError) and error.permanent


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def borrow_site() -> traceback.StackSummary:
    """The borrower's stack, unipool's own frames left out (kept when ``leak_timeout`` is set)."""
    frames = itertools.dropwhile(
        lambda fl: fl[0].f_code.co_filename.startswith(_PACKAGE),
        traceback.walk_stack(sys._getframe(1)),
    )
    site = traceback.StackSummary.extract(frames, limit=16, lookup_lines=False)
    site.reverse()
    return site


def report_overdue(name: str, action: Overdue) -> None:
    """Log a borrow held past ``leak_timeout``, with where it was borrowed."""
    site = action.slot.lent_by
    where = "".join(site.format()) if site is not None else "(unknown)\n"
    logger.warning(
        "pool %r: a connection has been borrowed for %.1f s and not returned "
        "(leak_timeout); borrowed at:\n%s",
        name,
        action.held_for,
        where.rstrip("\n"),
    )


def report_abandoned(name: str) -> None:
    """Log a borrowed connection that was garbage-collected without being returned."""
    logger.warning(
        "pool %r: a borrowed connection was garbage-collected without being returned; "
        "it is closed and its place freed (use 'with pool.acquire()')",
        name,
    )
