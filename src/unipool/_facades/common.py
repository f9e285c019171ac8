"""What both faces share: errors they raise, the logger, leak reports."""

from __future__ import annotations

import itertools
import logging
import os
import sys
import traceback

from .._core import Overdue, PoolCore
from .._errors import PoolTimeout

logger = logging.getLogger("unipool")


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


def is_fatal(error: BaseException) -> bool:
    """Whether a connect error cannot be cured by waiting (bad password, no database)."""
    sqlstate = getattr(error, "sqlstate", None) or ""
    return sqlstate[:2] in ("28", "3D")


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
