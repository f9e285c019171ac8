"""The cancel request psycopg sends for a query running on a connection the pool cuts.

Cutting the socket alone leaves the query running on the server until it ends, unless the
server checks for its client (`CLIENT_CHECK`: PostgreSQL 14+, not through PgBouncer). So a
cut sends a cancel request first, in the background (`cancel_in_background`): with libpq 17
and newer over libpq's non-blocking cancel connection, bounded by `CANCEL_REQUEST_BOUND`;
with an older libpq through its blocking ``PQcancel``.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable

from psycopg import pq
from psycopg.pq.abc import PGcancelConn, PGconn

from ._session import CANCEL_REQUEST_BOUND, born_here, cancel_in_background

_ACTIVE = pq.TransactionStatus.ACTIVE
_OK = pq.ConnStatus.OK
_POLL_READING = pq.PollingStatus.READING
_POLL_WRITING = pq.PollingStatus.WRITING
_HAS_CANCEL_CONN = pq.version() >= 170000


def cancel_before_cut(pgconn: PGconn, owner: int) -> None:
    """Before ``pgconn`` is closed: if a query runs on it, have it cancelled on the server.

    ``owner``: the process that opened the connection; none is sent from another (after
    ``os.fork()`` the session is the parent's, and so is its query)."""
    if pgconn.status != _OK or pgconn.transaction_status != _ACTIVE or not born_here(owner):
        return
    send: Callable[[], object]
    if _HAS_CANCEL_CONN:
        cancel = pgconn.cancel_conn()  # a copy of what the request needs: outlives pgconn
        send = lambda: _send(cancel)  # noqa: E731
    else:
        send = pgconn.get_cancel().cancel
    cancel_in_background(send)


def _send(cancel: PGcancelConn) -> None:
    """Send the request over libpq's non-blocking cancel connection, within the bound."""
    deadline = time.monotonic() + CANCEL_REQUEST_BOUND
    try:
        cancel.start()
        while (status := cancel.poll()) in (_POLL_READING, _POLL_WRITING):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            sock = [cancel.socket]
            if status == _POLL_READING:
                select.select(sock, [], [], left)
            else:
                select.select([], sock, [], left)
        if status != pq.PollingStatus.OK:
            raise OSError(cancel.get_error_message())
    finally:
        cancel.finish()
