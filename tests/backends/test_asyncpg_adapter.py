"""The asyncpg adapter: what it does around asyncpg's own handling of cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from tests.conftest import Admin

import unipool
from unipool.backends.base import POOL_CALL, ConnectParams

pytest.importorskip("asyncpg", reason="the asyncpg driver is not installed (unipool[asyncpg])")

from unipool.backends import asyncpg as adapter


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_connection_cut_after_a_cancelled_pool_call_still_cancels_its_query(
    dsn: str, admin: Admin
) -> None:
    """The pool's own call is cancelled and its connection dropped at once: the cancel
    request asyncpg started still reaches the server, so the query ends there in well
    under its 5 s (no client check is set to end it otherwise)."""
    params = ConnectParams(
        dsn, kwargs={"server_settings": {"client_connection_check_interval": None}}
    )
    conn = await adapter.BACKEND.connect_async(params, "asyncio")
    pid = await conn.fetchval("select pg_backend_pid()", (), 0)
    token = POOL_CALL.set(True)
    try:
        call = asyncio.ensure_future(conn.fetchval("select pg_sleep(5)", (), 0))
        await asyncio.sleep(0.2)  # the query runs on the server
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
    finally:
        POOL_CALL.reset(token)
    start = time.monotonic()
    conn.terminate()
    while admin.value("select count(*) from pg_stat_activity where pid = %s", pid):
        assert time.monotonic() - start < 2.0, "the query runs on after its connection's cut"
        await asyncio.sleep(0.02)
    print(f"session gone {time.monotonic() - start:.3f} s after the cut")


def test_a_cut_on_a_closed_loop_closes_the_socket(dsn: str) -> None:
    """A connection whose event loop is closed, with a cancel request still pending: the
    cut closes its socket here, and raises nothing."""
    loop = asyncio.new_event_loop()

    async def interrupted_pool_call() -> adapter.AsyncpgConn:
        conn = await adapter.BACKEND.connect_async(ConnectParams(dsn), "asyncio")
        token = POOL_CALL.set(True)
        try:
            call = asyncio.ensure_future(conn.fetchval("select pg_sleep(5)", (), 0))
            await asyncio.sleep(0.1)
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
        finally:
            POOL_CALL.reset(token)
        return conn  # type: ignore[no-any-return]

    conn = loop.run_until_complete(interrupted_pool_call())
    assert any(not task.done() for task in conn.raw._cancellations)
    loop.close()
    conn.terminate()
    assert conn.raw._transport._sock is None


@pytest.mark.parametrize("hosted", [True, False], ids=["hosted loop", "loop thread"])
def test_under_trio_on_the_runs_own_loop_or_the_loop_thread(
    dsn: str, monkeypatch: pytest.MonkeyPatch, hosted: bool
) -> None:
    """asyncpg under trio runs on an asyncio loop hosted in the trio run, in trio's own
    thread; where that cannot be (`HOSTED` False), on the shared loop thread."""
    trio = pytest.importorskip("trio", reason="trio is not installed (unipool[trio])")
    from unipool.backends import _hosted_loop

    if hosted and not _hosted_loop.can_host():
        pytest.skip("this interpreter's asyncio loop cannot be hosted")
    monkeypatch.setattr(adapter, "HOSTED", hosted)

    async def main() -> None:
        conn = await adapter.BACKEND.connect_async(ConnectParams(dsn), "trio")
        try:
            assert await conn.fetchval("select 41 + 1", (), 0) == 42
            on_this_thread = conn.inner.raw._loop is _hosted_loop.hosted_loop().loop
            assert on_this_thread is hosted
        finally:
            await conn.close()

    trio.run(main)


def test_a_cut_just_before_the_trio_run_ends_still_ends_the_query(dsn: str, admin: Admin) -> None:
    """A busy connection on the run's hosted loop, cut from another thread (the watchdog)
    just before the run ends: the cut's cancel request still reaches the server (no
    client check is set to end the query otherwise)."""
    trio = pytest.importorskip("trio", reason="trio is not installed (unipool[trio])")
    import threading

    params = ConnectParams(
        dsn, kwargs={"server_settings": {"client_connection_check_interval": None}}
    )
    pids: list[int] = []

    async def main() -> None:
        conn = await adapter.BACKEND.connect_async(params, "trio")
        pids.append(await conn.fetchval("select pg_backend_pid()", (), 0))
        threading.Timer(0.3, conn.terminate).start()
        with contextlib.suppress(unipool.Error):
            await conn.fetchval("select pg_sleep(5)", (), 0)

    trio.run(main)
    start = time.monotonic()
    while admin.value("select count(*) from pg_stat_activity where pid = %s", pids[0]):
        assert time.monotonic() - start < 2.0, "the query runs on after the run ended"
        time.sleep(0.02)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_refused_overlapping_call_leaves_the_connection_busy(dsn: str) -> None:
    """asyncpg refuses a second call while one runs; the first is still in flight, and a
    cut still sends its cancel request."""
    conn = await adapter.BACKEND.connect_async(ConnectParams(dsn), "asyncio")
    try:
        first = asyncio.ensure_future(conn.fetchval("select pg_sleep(0.3)", (), 0))
        await asyncio.sleep(0.05)
        with pytest.raises(unipool.Error):
            await conn.fetchval("select 1", (), 0)
        assert conn._busy == 1
        await first
        assert conn._busy == 0
    finally:
        await conn.close()
