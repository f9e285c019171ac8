"""The cancel request psycopg sends for a query running on a connection the pool cuts.

Cutting the socket alone leaves the query running on the server until it ends, unless the
server checks for its client (`CLIENT_CHECK`: PostgreSQL 14+). So a cut sends a cancel
request first, in the background (`cancel_in_background`): where psycopg and libpq both
have it (17+), over libpq's non-blocking cancel connection, bounded by
`CANCEL_REQUEST_BOUND`; else through libpq's blocking ``PQcancel``.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable

from psycopg import capabilities, pq
from psycopg.pq.abc import PGcancelConn, PGconn

from ._session import (
    CANCEL_REQUEST_BOUND,
    CANCEL_WAIT,
    born_here,
    cancel_in_background,
    log_unsent,
)

_ACTIVE = pq.TransactionStatus.ACTIVE
_OK = pq.ConnStatus.OK
_POLL_READING = pq.PollingStatus.READING
_POLL_WRITING = pq.PollingStatus.WRITING
_HAS_CANCEL_CONN = capabilities.has_cancel_safe()  # libpq 17+, at build and at run time


def cancel_before_cut(pgconn: PGconn, owner: int, *, deliver: bool = False) -> None:
    """Before ``pgconn`` is closed: if a query runs on it, have it cancelled on the server.

    ``owner``: the process that opened the connection; none is sent from another (after
    ``os.fork()`` the session is the parent's, and so is its query). ``deliver``: send it
    here and wait until it is delivered, up to `CANCEL_WAIT`, before the connection is
    closed (behind PgBouncer, which forgets a client that left and then refuses its
    request); else in the background."""
    if pgconn.status != _OK or pgconn.transaction_status != _ACTIVE or not born_here(owner):
        return
    send: Callable[[], object]
    try:
        if _HAS_CANCEL_CONN:
            cancel = pgconn.cancel_conn()  # a copy of what the request needs: outlives pgconn
            send = lambda: _send(cancel)  # noqa: E731
        else:
            send = pgconn.get_cancel().cancel
    except Exception as exc:  # closed meanwhile by another thread, say: the cut goes on
        log_unsent(exc)
        return
    if deliver and _HAS_CANCEL_CONN:
        try:
            _send(cancel, CANCEL_WAIT)
        except Exception as exc:  # not delivered in time: the cut goes on
            log_unsent(exc)
        return
    cancel_in_background(send)


def _send(cancel: PGcancelConn, bound: float = CANCEL_REQUEST_BOUND) -> None:
    """Send the request over libpq's non-blocking cancel connection, within ``bound`` s."""
    deadline = time.monotonic() + bound
    try:
        cancel.start()
        while (status := cancel.poll()) in (_POLL_READING, _POLL_WRITING):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within {bound:g} s")
            poller = select.poll()  # any descriptor number, unlike select()
            poller.register(
                cancel.socket, select.POLLIN if status == _POLL_READING else select.POLLOUT
            )
            poller.poll(left * 1000)
        if status != pq.PollingStatus.OK:
            raise OSError(cancel.get_error_message())
    finally:
        cancel.finish()
