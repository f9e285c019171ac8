"""The cancel request psycopg's adapter sends before cutting a busy connection: through
libpq's cancel connection (libpq 17+) or its older ``PQcancel``, never from a process
that did not open the connection."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
from tests.conftest import Admin

pytest.importorskip("psycopg", reason="the psycopg driver is not installed (unipool[psycopg])")

import psycopg

from unipool.backends import _psycopg_cancel

#: The session must be gone this soon after the cut (it sleeps 5 s otherwise).
ENDS_WITHIN = 2.0


def _busy(dsn: str) -> tuple[psycopg.Connection[object], int, threading.Thread]:
    """A connection with no client check, running ``pg_sleep(5)`` in a thread."""
    conn = psycopg.connect(dsn, autocommit=True, options="-c client_connection_check_interval=0")
    pid = conn.info.backend_pid

    def sleep() -> None:
        try:
            conn.execute("select pg_sleep(5)")
        except psycopg.Error:  # cancelled, or its connection closed under it
            pass

    thread = threading.Thread(target=sleep, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.ACTIVE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)  # the query runs on the server
    return conn, pid, thread


def _alive_after_cut(admin: Admin, pid: int) -> float:
    """Seconds the session lives on after the cut (up to `ENDS_WITHIN`, then that)."""
    start = time.monotonic()
    while admin.value("select count(*) from pg_stat_activity where pid = %s", pid):
        if time.monotonic() - start > ENDS_WITHIN:
            break
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.parametrize("cancel_conn", [True, False], ids=["libpq 17+", "PQcancel"])
def test_a_cut_cancels_the_running_query(
    dsn: str, admin: Admin, monkeypatch: pytest.MonkeyPatch, cancel_conn: bool
) -> None:
    if cancel_conn and not _psycopg_cancel._HAS_CANCEL_CONN:
        pytest.skip(f"libpq {psycopg.pq.version()} has no cancel connection (17+)")
    monkeypatch.setattr(_psycopg_cancel, "_HAS_CANCEL_CONN", cancel_conn)
    conn, pid, thread = _busy(dsn)
    _psycopg_cancel.cancel_before_cut(conn.pgconn, os.getpid())
    conn.close()
    took = _alive_after_cut(admin, pid)
    thread.join(5)
    assert took < ENDS_WITHIN, "the query ran on after its connection was cut"


def test_no_cancel_from_a_process_that_did_not_open_it(dsn: str, admin: Admin) -> None:
    """As after ``os.fork()``: the session, and the query, are another process's."""
    conn, pid, thread = _busy(dsn)
    _psycopg_cancel.cancel_before_cut(conn.pgconn, os.getpid() + 1)
    time.sleep(0.3)
    state = admin.value("select state from pg_stat_activity where pid = %s", pid)
    assert state == "active"
    conn.cancel()
    thread.join(5)
    conn.close()


def test_nothing_is_sent_for_an_idle_connection(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[object] = []
    monkeypatch.setattr(_psycopg_cancel, "cancel_in_background", sent.append)
    with psycopg.connect(dsn, autocommit=True) as conn:
        _psycopg_cancel.cancel_before_cut(conn.pgconn, os.getpid())
    assert sent == []


def test_a_descriptor_past_1024_is_no_obstacle(dsn: str, admin: Admin) -> None:
    """The request waits on its socket with poll(), which takes any descriptor number."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"the open-file limit ({soft}) leaves no descriptor past 1024")
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        conn, pid, thread = _busy(dsn)
        assert conn.pgconn.socket >= 1024
        _psycopg_cancel.cancel_before_cut(conn.pgconn, os.getpid())
        conn.close()
        took = _alive_after_cut(admin, pid)
        thread.join(5)
    finally:
        for fd in filler:
            os.close(fd)
    assert took < ENDS_WITHIN, "the query ran on after its connection was cut"


def test_the_cut_closes_even_when_no_request_can_be_sent(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No thread to be had (at interpreter exit, say): the connection is closed all the
    same, and the unsent request logged."""

    class NoThread(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't create new thread at interpreter shutdown")

    from unipool.backends.psycopg import SyncPsycopgConn

    conn, _, thread = _busy(dsn)
    monkeypatch.setattr(threading, "Thread", NoThread)  # the one _session starts
    adapter = SyncPsycopgConn.__new__(SyncPsycopgConn)
    adapter.raw, adapter._owner, adapter._bouncer = conn, os.getpid(), False
    with caplog.at_level(logging.DEBUG, logger="unipool"):
        adapter.terminate()
    assert conn.closed
    assert "cancel request before a cut failed" in caplog.text
    thread.join(5)


def test_past_the_cap_no_request_is_sent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from unipool.backends import _session

    monkeypatch.setattr(_session, "MAX_CANCEL_THREADS", 0)
    sent: list[bool] = []
    with caplog.at_level(logging.DEBUG, logger="unipool"):
        _session.cancel_in_background(lambda: sent.append(True))
    assert sent == []
    assert "not sent" in caplog.text
