"""Tests for the trio psycopg connection (`unipool.backends._psycopg_trio`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
import trio
from psycopg import errors as e
from psycopg import pq
from psycopg.rows import dict_row

from unipool.backends import _psycopg_trio as m
from unipool.backends import _trio_waiting as waiting
from unipool.backends._psycopg_trio import TrioConnection, check_psycopg_internals
from unipool.testing import TempServer

IDLE = pq.TransactionStatus.IDLE
T = TypeVar("T")


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return trio.run(fn, *args)


async def backend_state(dsn: str, pid: int) -> str | None:
    async with await TrioConnection.connect(dsn, autocommit=True) as mon:
        cur = await mon.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid])
        row = await cur.fetchone()
        return None if row is None else str(row[0])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# the canary


def test_psycopg_internals_present() -> None:
    check_psycopg_internals()
    assert ".".join(psycopg.__version__.split(".")[:2]) in m.TESTED_PSYCOPG, (
        f"psycopg {psycopg.__version__} is not in TESTED_PSYCOPG: re-run these tests and update it"
    )


@pytest.mark.parametrize(
    "entry, named",
    [
        (("psycopg.AsyncConnection", "_gone_gen", ""), "psycopg.AsyncConnection._gone_gen"),
        (("psycopg.AsyncConnection.__init__", "_gone", ""), "psycopg.AsyncConnection()._gone"),
        (("psycopg.errors", "_Gone", ""), "psycopg.errors._Gone"),
        (("psycopg._gone_module", "x", ""), "psycopg._gone_module"),
    ],
)
def test_psycopg_internals_missing(
    monkeypatch: pytest.MonkeyPatch, entry: tuple[str, str, str], named: str
) -> None:
    monkeypatch.setattr(m, "PSYCOPG_INTERNALS", (*m.PSYCOPG_INTERNALS, entry))
    with pytest.raises(RuntimeError, match="lacks semi-private API") as exc:
        check_psycopg_internals()
    assert named in str(exc.value)
    assert "_connect_gen" not in str(exc.value)


# queries


def test_select_raw_cursor(dsn: str) -> None:
    async def main() -> None:
        conn = await TrioConnection.connect(dsn, cursor_factory=psycopg.AsyncRawCursor)
        async with conn:
            assert isinstance(conn, psycopg.AsyncConnection)
            cur = await conn.execute("SELECT $1::int, $2::text", [42, "x"])
            assert isinstance(cur, psycopg.AsyncRawCursor)
            assert await cur.fetchone() == (42, "x")
            assert not conn.autocommit
            assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        assert conn.closed

    run(main)


def test_connect_options(dsn: str) -> None:
    async def main() -> None:
        ctx = psycopg.adapt.AdaptersMap(psycopg.adapters)
        async with await TrioConnection.connect(
            dsn,
            autocommit=True,
            prepare_threshold=None,
            row_factory=dict_row,
            context=ctx,
            application_name="unipool-trio",
        ) as conn:
            assert conn.autocommit
            assert conn.prepare_threshold is None
            assert conn.adapters is not ctx.adapters  # a copy, as psycopg does
            cur = await conn.execute("SELECT current_setting('application_name') AS app")
            assert await cur.fetchone() == {"app": "unipool-trio"}
            assert conn.info.transaction_status == IDLE

    run(main)


def test_transaction_commit_rollback(dsn: str) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("CREATE TEMP TABLE t (v int)")
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(ZeroDivisionError):
                async with conn.transaction():
                    await conn.execute("INSERT INTO t VALUES (2)")
                    1 / 0  # noqa: B018
            async with conn.transaction(force_rollback=True):
                await conn.execute("INSERT INTO t VALUES (3)")
            async with conn.transaction(), conn.transaction(savepoint_name="sp"):
                await conn.execute("INSERT INTO t VALUES (4)")
            cur = await conn.execute("SELECT array_agg(v ORDER BY v) FROM t")
            assert await cur.fetchone() == ([1, 4],)
            assert conn.info.transaction_status == IDLE

    run(main)


def test_copy_in_out(dsn: str) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("CREATE TEMP TABLE c (a int, b text)")
            cur = conn.cursor()
            async with cur.copy("COPY c (a, b) FROM STDIN") as copy:
                for i in range(5000):
                    await copy.write_row((i, f"row {i}"))
            cur = await conn.execute("SELECT count(*), sum(a) FROM c")
            assert await cur.fetchone() == (5000, sum(range(5000)))

            rows = []
            async with cur.copy("COPY (SELECT a, b FROM c ORDER BY a) TO STDOUT") as copy:
                copy.set_types(["int4", "text"])
                rows.extend([row async for row in copy.rows()])
            assert rows == [(i, f"row {i}") for i in range(5000)]

            data = b""
            async with cur.copy("COPY (SELECT generate_series(1, 3)) TO STDOUT") as copy:
                async for block in copy:
                    data += bytes(block)
            assert data == b"1\n2\n3\n"
            assert conn.info.transaction_status == IDLE

    run(main)


def test_server_side_cursor(dsn: str) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn) as conn:
            async with conn.cursor("ssc", scrollable=True) as cur:
                cur.itersize = 100
                await cur.execute("SELECT generate_series(1, 1000)")
                total = 0
                async for (v,) in cur:
                    total += v
                assert total == sum(range(1, 1001))
                await cur.scroll(0, mode="absolute")
                assert await cur.fetchmany(3) == [(1,), (2,), (3,)]
            await conn.rollback()

    run(main)


def test_pipeline(dsn: str) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("CREATE TEMP TABLE p (v int)")
            async with conn.pipeline() as p:
                curs = [await conn.execute("SELECT %s::int", [i]) for i in range(50)]
                await p.sync()
                assert [await c.fetchone() for c in curs] == [(i,) for i in range(50)]
                cur = conn.cursor()
                await cur.executemany("INSERT INTO p VALUES (%s)", [(i,) for i in range(500)])
            cur = await conn.execute("SELECT count(*) FROM p")
            assert await cur.fetchone() == (500,)
            assert conn.info.transaction_status == IDLE

    run(main)


def test_pipeline_read_or_write_waits(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # enough data in flight to fill both socket buffers: pipeline mode must
    # then wait for "readable or writable" (a wait for writable only deadlocks)
    parks: list[int] = []
    park_rw = waiting._park_rw

    async def counting_park_rw(fileno: int) -> int:
        parks.append(fileno)
        return await park_rw(fileno)

    monkeypatch.setattr(waiting, "_park_rw", counting_park_rw)

    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            # small client buffers: they fill up at once
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await conn.execute("CREATE TEMP TABLE big (v text)")
            cur = conn.cursor()
            with trio.fail_after(30):
                await cur.executemany(
                    "INSERT INTO big VALUES (%s) RETURNING length(v)",
                    [("x" * 2000,)] * 5000,
                    returning=True,
                )
            nresults = 1
            while cur.nextset():
                nresults += 1
            assert nresults == 5000
            cur = await conn.execute("SELECT count(*), sum(length(v)) FROM big")
            assert await cur.fetchone() == (5000, 10_000_000)

    run(main)
    assert parks


def test_concurrent_tasks_share_connection(dsn: str) -> None:
    async def main() -> None:
        results: dict[int, Any] = {}
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:

            async def query(i: int) -> None:
                async with conn.cursor() as cur:
                    await cur.execute("SELECT %s::int, pg_sleep(0.01)", [i])
                    results[i] = (await cur.fetchone() or [None])[0]

            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(query, i)
        assert results == {i: i for i in range(10)}

    run(main)


def test_notifies_and_wait_timeout(dsn: str) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("LISTEN unipool_chan")
            t0 = trio.current_time()
            assert [n async for n in conn.notifies(timeout=0.2)] == []
            assert 0.15 < trio.current_time() - t0 < 1.5
            await conn.execute("NOTIFY unipool_chan, 'hi'")
            got = [n async for n in conn.notifies(timeout=0.0, stop_after=1)]
            assert [(n.channel, n.payload) for n in got] == [("unipool_chan", "hi")]

    run(main)


# cancellation and failures


@pytest.fixture(params=["cancel_conn", "thread"])
def cancel_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Cancel with libpq 17's cancel connection, or `cancel()` in a thread (older libpq)."""
    if request.param == "thread":
        monkeypatch.setattr(psycopg.capabilities, "has_cancel_safe", lambda check=False: False)
    elif not psycopg.capabilities.has_cancel_safe():
        pytest.skip("libpq < 17")
    return str(request.param)


def test_cancel_with_move_on_after(dsn: str, cancel_impl: str) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            t0 = time.monotonic()
            with trio.move_on_after(0.2) as scope:
                await conn.execute("SELECT pg_sleep(5)")
            assert scope.cancelled_caught
            assert time.monotonic() - t0 < 2.0
            assert not conn.closed
            assert conn.info.transaction_status == IDLE
            assert await backend_state(dsn, conn.info.backend_pid) == "idle"
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)

    run(main)


def test_cancel_inside_transaction(dsn: str) -> None:
    # psycopg's cleanup (rollback in transaction __aexit__) must run after a trio
    # cancellation, or the connection's transaction bookkeeping is left broken.
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            with trio.move_on_after(0.2) as scope:
                async with conn.transaction():
                    await conn.execute("SELECT pg_sleep(5)")
            assert scope.cancelled_caught
            assert conn.info.transaction_status == IDLE
            async with conn.transaction():
                cur = await conn.execute("SELECT 2")
                assert await cur.fetchone() == (2,)
            assert conn.info.transaction_status == IDLE

    run(main)


def test_work_in_cancelled_scope_is_cancelled(dsn: str) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            t0 = time.monotonic()
            with trio.CancelScope() as scope:
                scope.cancel()
                while True:  # no other checkpoint: must not spin
                    await conn.execute("SELECT pg_sleep(5)")
            assert time.monotonic() - t0 < 2.0
            with trio.CancelScope() as scope:
                scope.cancel()
                while True:  # even if the results are there at once
                    await conn.execute("SELECT 1")
            assert time.monotonic() - t0 < 2.5
            assert conn.info.transaction_status == IDLE
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)

    run(main)


def test_transaction_exit_in_cancelled_scope(dsn: str) -> None:
    # cancelled with no checkpoint left in the block: the exit (commit) still
    # runs its bookkeeping, the connection stays consistent
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("CREATE TEMP TABLE x (v int)")
            with trio.CancelScope() as scope:
                async with conn.transaction():
                    await conn.execute("INSERT INTO x VALUES (1)")
                    scope.cancel()
            # (the exit raised Cancelled, unless it completed without parking)
            assert conn.info.transaction_status == IDLE
            async with conn.transaction():
                cur = await conn.execute("SELECT count(*) FROM x")
                assert await cur.fetchone() in ((0,), (1,))

    run(main)


def test_failed_cancel_closes_connection(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_cancel(self: TrioConnection[Any], limit: float | None) -> None:
        pass

    monkeypatch.setattr(m, "CANCEL_TIMEOUT", 0.3)
    monkeypatch.setattr(TrioConnection, "_cancel_request", no_cancel)

    async def main() -> None:
        conn = await TrioConnection.connect(dsn, autocommit=True)
        t0 = time.monotonic()
        with trio.move_on_after(0.2):
            await conn.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - t0 < 2.0
        assert conn.broken or conn.closed
        with pytest.raises(psycopg.OperationalError):
            await conn.execute("SELECT 1")
        await conn.close()

    run(main)


def test_cancel_stream_and_copy(dsn: str) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            n = 0
            with trio.move_on_after(0.3):
                cur = conn.cursor()
                # rows over 8kB: the server flushes each one
                query = "SELECT repeat('x', 9000), pg_sleep(0.001) FROM generate_series(1, 100000)"
                async for _ in cur.stream(query):
                    n += 1
            assert 0 < n < 100000
            assert conn.info.transaction_status == IDLE

            n = 0
            with trio.move_on_after(0.3):
                query = (
                    "COPY (SELECT repeat('x', 9000), pg_sleep(0.001)"
                    " FROM generate_series(1, 100000)) TO STDOUT"
                )
                async with cur.copy(query) as copy:
                    async for _ in copy:
                        n += 1
            assert 0 < n < 100000
            assert conn.info.transaction_status == IDLE
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)

    run(main)


def test_connection_context_closes_on_cancel(dsn: str) -> None:
    async def main() -> None:
        with trio.CancelScope() as scope:
            async with await TrioConnection.connect(dsn) as conn:
                await conn.execute("SELECT 1")
                scope.cancel()
                await trio.sleep(1)
        assert conn.closed

    run(main)


def test_keyboard_interrupt_cancels_query(dsn: str, sigint: None) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
            t0 = time.monotonic()
            timer.start()
            try:
                with pytest.raises(KeyboardInterrupt):
                    await conn.execute("SELECT pg_sleep(5)")
            finally:
                timer.cancel()
            assert time.monotonic() - t0 < 2.0
            assert conn.info.transaction_status == IDLE
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("trio handles SIGINT in the main thread only")
    run(main)


def test_cancel_safe_from_another_task(dsn: str, cancel_impl: str) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            errors: list[BaseException] = []

            async def sleeper() -> None:
                try:
                    await conn.execute("SELECT pg_sleep(5)")
                except psycopg.Error as ex:
                    errors.append(ex)

            t0 = time.monotonic()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sleeper)
                await trio.sleep(0.2)
                await conn.cancel_safe()
            assert time.monotonic() - t0 < 2.0
            assert [type(x) for x in errors] == [e.QueryCanceled]
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)
            await conn.cancel_safe()  # idle: a no-op on the server

    run(main)


def test_close_wakes_waiting_task(dsn: str) -> None:
    async def main() -> None:
        conn = await TrioConnection.connect(dsn)
        errors: list[BaseException] = []

        async def sleeper() -> None:
            try:
                await conn.execute("SELECT pg_sleep(5)")
            except psycopg.Error as ex:
                errors.append(ex)

        t0 = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await trio.sleep(0.2)
            await conn.close()
        assert time.monotonic() - t0 < 2.0
        assert conn.closed
        assert len(errors) == 1
        assert isinstance(errors[0], psycopg.OperationalError)

    run(main)


def test_terminated_backend(dsn: str) -> None:
    async def main() -> None:
        async with await TrioConnection.connect(dsn, autocommit=True) as conn:
            async with await TrioConnection.connect(dsn, autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
            with pytest.raises((e.AdminShutdown, psycopg.OperationalError)):
                await conn.execute("SELECT 1")
            assert conn.broken or conn.closed

    run(main)


def test_connect_closed_port() -> None:
    async def main() -> None:
        with pytest.raises(psycopg.OperationalError):
            await TrioConnection.connect(host="127.0.0.1", port=closed_port(), user="postgres")

    run(main)


def test_connect_multi_host(dsn: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    port = info.get("port", 5432)

    async def main() -> None:
        async with await TrioConnection.connect(
            dsn, host="127.0.0.1,127.0.0.1", port=f"{closed_port()},{port}"
        ) as conn:
            assert conn.info.port == int(str(port))

        with pytest.raises(psycopg.OperationalError) as exc:
            await TrioConnection.connect(
                dsn, host="127.0.0.1,127.0.0.1", port=f"{closed_port()},{closed_port()}"
            )
        assert "Multiple connection attempts failed" in str(exc.value)

    run(main)


def test_connect_unix_socket(dsn: str, session_server: TempServer | None) -> None:
    sockdir = "/var/run/postgresql" if session_server is None else session_server.socket_dir
    port = psycopg.conninfo.conninfo_to_dict(dsn).get("port", 5432)
    if not os.path.exists(f"{sockdir}/.s.PGSQL.{port}"):
        pytest.skip(f"the test server (UNIPOOL_TEST_DSN) has no unix socket in {sockdir}")

    async def main() -> None:
        async with await TrioConnection.connect(dsn, host=sockdir) as conn:
            assert conn.info.host == sockdir
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)

    assert not m._needs_dns({"host": sockdir})
    run(main)


def test_connect_resolving_hostname(dsn: str) -> None:
    async def main() -> None:
        # 'localhost' goes through getaddrinfo in a worker thread; an address
        # it resolves to which the server doesn't listen on is just skipped
        async with await TrioConnection.connect(dsn, host="localhost") as conn:
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)

    assert m._needs_dns({"host": "localhost"})
    assert not m._needs_dns({"host": "127.0.0.1,::1,/tmp"})
    assert not m._needs_dns({"host": "db.example", "hostaddr": "127.0.0.2"})
    run(main)


def test_connect_timeout_silent_server() -> None:
    # a listening socket nobody accepts: the TCP handshake succeeds, no answer
    async def main(port: int) -> None:
        t0 = time.monotonic()
        with pytest.raises(e.ConnectionTimeout):
            await TrioConnection.connect(host="127.0.0.1", port=port, connect_timeout=1)
        assert 1.5 < time.monotonic() - t0 < 4.0  # libpq rounds connect_timeout up to 2s

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        run(main, srv.getsockname()[1])


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A local port whose TCP handshake never completes: a listener that accepts nothing,
    its backlog already full, so that the kernel drops further connection requests."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(2):  # one fills the backlog, the next one waits unanswered
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        yield port


def test_connect_timeout_unanswered(unanswered_port: int) -> None:
    async def main() -> None:
        t0 = time.monotonic()
        with pytest.raises(e.ConnectionTimeout):
            await TrioConnection.connect(
                host="127.0.0.1", port=unanswered_port, user="postgres", connect_timeout=1
            )
        assert 0.9 < time.monotonic() - t0 < 4.0  # libpq rounds connect_timeout up to 2s

    run(main)


def test_wait_read_or_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # RW waits with the send buffer full must wake up on incoming data
    async def main() -> None:
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            try:
                while True:
                    a.send(b"x" * 65536)
            except BlockingIOError:
                pass
            assert waiting._ready_now(a.fileno(), waiting._RW) == 0
            async with trio.open_nursery() as nursery:

                async def peer_writes() -> None:
                    await trio.sleep(0.1)
                    b.send(b"hello")

                nursery.start_soon(peer_writes)
                with trio.fail_after(2):
                    assert await waiting._park(a.fileno(), waiting._RW) == waiting._R

    run(main)
