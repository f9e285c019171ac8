"""Cancel requests around a cut of an asyncpg connection: the ones asyncpg has under way
are left to reach the server (`spare_cancel_requests`), and a call still running gets
one of its own (`cancel_before_cut`), so that no query is left running on the server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from ._session import CANCEL_REQUEST_BOUND, CANCEL_WAIT


def spare_cancel_requests(raw: asyncpg.Connection) -> None:
    """Take asyncpg's cancel requests in flight out of its hands before the connection is
    dropped (private API: ``_cancellations``), to be cancelled only if still running
    `CANCEL_REQUEST_BOUND` seconds later: they reach the server, so no query is left
    running there, and asyncpg does not cut one short while it opens its socket (which
    logs a never-retrieved ``ConnectionError``). Nothing is done on a closed loop."""
    pending = getattr(raw, "_cancellations", None)
    if not pending:
        return
    for task in pending:
        loop = task.get_loop()
        if task.done() or loop.is_closed():
            continue
        timer = loop.call_later(CANCEL_REQUEST_BOUND, task.cancel)
        task.add_done_callback(lambda _, timer=timer: timer.cancel())
    pending.clear()


#: Cancel requests sent before a cut, kept until they end.
_requests: set[asyncio.Task[Any]] = set()


def cancel_before_cut(raw: asyncpg.Connection, then: Callable[[], None] | None = None) -> None:
    """Before ``raw`` is cut while a call runs on it: send a cancel request (bounded by
    `CANCEL_REQUEST_BOUND`) on its loop, so that the query ends on the server even where
    the server does not check for its client (private API: ``connect_utils._cancel``,
    what asyncpg's own cancel sends; nothing is sent without it).

    ``then``: the cut, to be made once the request is delivered, or `CANCEL_WAIT` s
    after it was sent at the latest (behind PgBouncer, which refuses a request that
    comes after its client left); at once if none can be sent."""
    protocol = getattr(raw, "_protocol", None)
    send = getattr(asyncpg.connect_utils, "_cancel", None)
    if protocol is None or send is None:
        if then is not None:
            then()
        return
    loop = raw._loop
    request = {
        "addr": raw._addr,
        "params": raw._params,
        "backend_pid": protocol.backend_pid,
        "backend_secret": protocol.backend_secret,
    }

    def start() -> None:
        task = loop.create_task(asyncio.wait_for(send(loop=loop, **request), CANCEL_REQUEST_BOUND))
        _requests.add(task)
        task.add_done_callback(_request_done)
        if then is not None:
            cut = _Once(then)
            task.add_done_callback(lambda _: cut())
            loop.call_later(CANCEL_WAIT, cut)

    if asyncio._get_running_loop() is loop:
        start()
        return
    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:  # its loop is closed: nothing runs there
        if then is not None:
            then()


class _Once:
    """``fn``, called once however often this is."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn: Callable[[], None] | None = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()


def _request_done(task: asyncio.Task[Any]) -> None:
    _requests.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a server that is gone fails the request, as expected
