"""What both faces log about borrows: where a connection was borrowed, leaks."""

from __future__ import annotations

import itertools
import logging
import os
import sys
import traceback

from .._core import Overdue

logger = logging.getLogger("unipool")

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


def report_hook_failure(name: str, hook: str, error: BaseException) -> None:
    """Log a ``setup`` hook that failed (its error also reaches the borrower)."""
    if isinstance(error, Exception):
        logger.warning("pool %r: %s hook failed: %r", name, hook, error)


def report_abandoned(name: str) -> None:
    """Log a borrowed connection that was garbage-collected without being returned."""
    logger.warning(
        "pool %r: a borrowed connection was garbage-collected without being returned; "
        "it is closed and its place freed (use 'with pool.acquire()')",
        name,
    )
