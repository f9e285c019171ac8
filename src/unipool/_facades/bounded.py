"""Carrying out the core's :class:`Check`, :class:`Reset` and :class:`Close` on a driver
connection within their bounds, the blocking way and the async way side by side; and
running a pool hook on a connection the pool holds itself.

A call that overruns its bound is cut by the watchdog, so it fails as on a lost
connection, with no cancel request to a server that does not answer; in the async
forms a cancel scope is the backstop for a driver that would not notice the cut.
What the outcome means is the core's business: these only report it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .._connection import AsyncConnection, Connection
from .._core import Check, Close, Reset, Slot, policy
from .._errors import Error
from ..backends.base import POOL_CALL, AsyncConn, SyncConn
from .base import terminate
from .reports import logger
from .watchdog import WATCHDOG


def check(check: Check, pool: str) -> bool:
    """Whether the connection passed the check (an interruption propagates)."""
    driver: SyncConn = check.slot.conn
    try:
        with WATCHDOG.guard(driver, check.timeout, pool):
            if check.sql is None:
                driver.ping()
                return True
            return bool(driver.fetchval(check.sql, (), 0) == check.expect)
    except Error:
        return False


async def acheck(check: Check, pool: str) -> bool:
    """:func:`check` for an async connection: interrupted, it drops the connection
    (``POOL_CALL``) rather than ask a server that may not answer to cancel."""
    driver: AsyncConn = check.slot.conn
    ok = False
    try:
        with (
            WATCHDOG.guard(driver, check.timeout, pool),
            anyio.move_on_after(check.timeout + policy.CUT_GRACE),
        ):
            pool_call = POOL_CALL.set(True)
            try:
                if check.sql is None:
                    await driver.ping()
                    ok = True
                else:
                    ok = await driver.fetchval(check.sql, (), 0) == check.expect
            finally:
                POOL_CALL.reset(pool_call)
    except Error:
        return False
    return ok


def reset(
    reset: Reset, hook: Callable[..., Any] | None, pool: str
) -> tuple[bool, Exception | None]:
    """Reset the session, then run the ``reset`` hook: whether the connection may be
    reused, and what the hook raised if it failed."""
    driver: SyncConn = reset.slot.conn
    try:
        with WATCHDOG.guard(driver, reset.timeout, pool):  # the hook too: cut when late
            ok = driver.alive() and driver.reset(reset.full)
            if not ok or hook is None:
                return ok, None
            return True, run_on(reset.slot, hook)
    except Error as exc:
        logger.debug("reset failed, discarding the connection: %s", exc)
        return False, None


async def areset(
    reset: Reset, hook: Callable[..., Awaitable[Any]] | None, pool: str
) -> tuple[bool, Exception | None]:
    """:func:`reset` for an async connection, shielded from cancellation."""
    driver: AsyncConn = reset.slot.conn
    ok = False
    hook_error: Exception | None = None
    with anyio.CancelScope(shield=True):
        try:
            with (
                WATCHDOG.guard(driver, reset.timeout, pool),
                anyio.move_on_after(reset.timeout + policy.CUT_GRACE),
            ):
                ok = driver.alive() and await driver.reset(reset.full)
                if ok and hook is not None:
                    hook_error = await arun_on(reset.slot, hook)
        except Error as exc:
            logger.debug("reset failed, discarding the connection: %s", exc)
            return False, None
    return ok, hook_error


def close(close: Close, pool: str) -> None:
    """Close politely (cut when late), or terminate when the core says no goodbye."""
    driver: SyncConn | None = close.slot.conn
    if driver is None:
        return
    if not close.goodbye:
        terminate(driver)
        return
    try:
        with WATCHDOG.guard(driver, close.timeout, pool):
            driver.close()
    except Exception as exc:  # the connection is gone either way
        logger.debug("error closing a connection: %s", exc)


async def aclose(close: Close, until: float) -> None:
    """:func:`close` for an async connection, a polite close ending at ``until`` (the
    loop's clock) at the latest, then terminated."""
    driver: AsyncConn | None = close.slot.conn
    if driver is None:
        return
    if not close.goodbye:
        terminate(driver)
        return
    with anyio.move_on_at(until) as scope:
        try:
            await driver.close()
        except Exception as exc:
            logger.debug("error closing a connection: %s", exc)
    if scope.cancelled_caught:
        terminate(driver)


def run_on(slot: Slot, hook: Callable[[Connection], Any]) -> Exception | None:
    """Run a pool hook (``init``, ``reset``) on a connection the pool holds itself; what it
    raised, if it failed."""
    conn = Connection(slot)
    try:
        hook(conn)
    except Exception as exc:
        return exc
    finally:
        conn._detach()
    return None


async def arun_on(
    slot: Slot, hook: Callable[[AsyncConnection], Awaitable[Any]]
) -> Exception | None:
    """:func:`run_on` for an async hook (an interruption propagates)."""
    conn = AsyncConnection(slot)
    try:
        await hook(conn)
    except Exception as exc:
        return exc
    finally:
        conn._detach()
    return None
