"""The psqlpy adapter: what it makes up for psqlpy, held to psycopg's behaviour.

psqlpy reports no SQLSTATE, command tag or column type, cannot decode some
values and has no COPY TO; `unipool.backends.psqlpy` makes these up. Each test
runs the same work through psqlpy and psycopg (the reference) and compares.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from tests._modes import ModePool, in_thread, open_pool, until
from tests.conftest import Admin

import unipool
from unipool.backends import psqlpy as adapter
from unipool.backends.base import ConnectParams, TxStatus
from unipool.backends.psqlpy import _conn as conn_module
from unipool.backends.psqlpy import _errors, _statements

pytest.importorskip("psqlpy", reason="the psqlpy driver is not installed (unipool[psqlpy])")

#: Queries psqlpy cannot decode by itself, or decodes differently (uuid as str).
QUERIES = [
    "select array[1, null]::int2[], array[1, null]::int8[], array[1.5, null]::float4[]",
    "select array[1.5, null]::float8[], array[true, null], array['a', null]::varchar[]",
    "select array['ab'::char(3), null], array['\\x01'::bytea, null], array[null]::text[]",
    "select array['2024-01-02'::date, null], array['12:34:56.789'::time, null]",
    "select array['2024-01-02 03:04:05.6'::timestamp, null]",
    "select array['2024-01-02 03:04:05+02'::timestamptz, null]",
    "select array['1 day 2 hours 3 sec'::interval, null]",
    "select array[1.50, -0.001, 12345678901234567890.123, 0, null]::numeric[]",
    "select array['00000000-0000-0000-0000-000000000001'::uuid, null]",
    "select array['{\"a\": [1]}'::json, null], array['[1, 2]'::jsonb, null]",
    "select array[[1, null], [3, 4]]::int4[], '{}'::int4[], array[null]::int4[]",
    "select 'ab'::char(3) as c, null::char(2) as n, 'x'::varchar as v",
    "select gen_random_uuid() is not null, '00000000-0000-0000-0000-000000000002'::uuid",
    "select '00000000-0000-0000-0000-000000000003'::text as looks_like_a_uuid",
    "select u from (values (null::uuid), ('00000000-0000-0000-0000-000000000004')) t(u)",
    "select array['00000000-0000-0000-0000-000000000005'::uuid]",
    "select 1 as a, 'x'::char(1) as b, '00000000-0000-0000-0000-000000000006'::uuid as c",
    "select 1 as a, 2 as a, '00000000-0000-0000-0000-000000000007'::uuid as a",
    "select 'x'::char(2) as \"MiXeD\"",
    "select $1::numeric, $2::numeric[], $3::int, $4::float8",
]
ARGS = {QUERIES[-1]: (5, [1, 2, None], 7, 1.5)}
#: Queries whose expected rows are not psycopg's: it gives "" for void, asyncpg None.
EXPECTED = {"select pg_sleep(0), pg_advisory_unlock_all()": [(None, None)]}

#: Statements that fail, with the error psqlpy must report like psycopg.
FAILING = [
    "select 1/0",
    "select 2147483647::int + 1",
    "select 'x'::int",
    "select * from no_such_table",
    "select no_such_column from pg_class",
    "select no_such_function()",
    "insert into adapter_t values (1), (1)",
    "insert into adapter_t values (null)",
    "insert into adapter_child values (42)",
    "insert into adapter_t values (-1)",
    "create temp table adapter_t (id int)",
    "selec 1",
    "set transaction isolation level serializable",
]
SETUP = (
    "create temp table adapter_t (id int primary key check (id >= 0));"
    " create temp table adapter_child (id int references adapter_t)"
)


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, (list, tuple)):
        return (
            type(got) is type(want)
            and len(got) == len(want)
            and all(_same(g, w) for g, w in zip(got, want, strict=True))
        )
    if isinstance(want, uuid.UUID):
        return isinstance(got, uuid.UUID) and got == want
    if isinstance(want, Decimal):
        return type(got) is Decimal and str(got) == str(want)
    return type(got) is type(want) and got == want


@pytest.fixture
async def pools(mode: str, dsn: str) -> Any:
    async with (
        open_pool(mode, dsn, "psqlpy", max_size=1) as psqlpy,
        open_pool(mode, dsn, "psycopg", max_size=1) as psycopg,
    ):
        yield psqlpy, psycopg


async def test_values_match_psycopg(pools: tuple[ModePool, ModePool]) -> None:
    psqlpy, psycopg = pools
    for sql in [*QUERIES, *EXPECTED]:
        args = ARGS.get(sql, ())
        reference = await psycopg.fetch(sql, *args)
        want = EXPECTED.get(sql) or [tuple(r) for r in reference]
        for _ in range(2):  # learning the statement, then knowing it
            rows = await psqlpy.fetch(sql, *args)
            got = [tuple(r) for r in rows]
            assert _same(got, want), f"{sql}\n  psqlpy:  {got!r}\n  psycopg: {want!r}"
            assert list(rows[0].keys()) == list(reference[0].keys())


async def test_undecodable_type_names_the_column(pools: tuple[ModePool, ModePool]) -> None:
    psqlpy, _ = pools
    with pytest.raises(unipool.InterfaceError, match=r"'r'.*int4range.*::text"):
        await psqlpy.fetchval("select int4range(1, 3) as r")
    with pytest.raises(unipool.InterfaceError, match="distinct names"):
        await psqlpy.fetch("select 1 as a, 'x'::char(1) as a")
    assert await psqlpy.fetchval("select int4range(1, 3)::text") == "[1,3)"


async def test_errors_match_psycopg(pools: tuple[ModePool, ModePool]) -> None:
    psqlpy, psycopg = pools
    for pool in pools:
        await pool.execute("drop table if exists adapter_child, adapter_t")
    differ = []
    async with psqlpy.acquire() as mine, psycopg.acquire() as theirs:
        await mine.execute(SETUP)
        await theirs.execute(SETUP)
        await mine.execute("insert into adapter_t values (1)")
        await theirs.execute("insert into adapter_t values (1)")
        for sql in FAILING:
            outcomes = []
            for conn in (mine, theirs):
                await conn.execute("begin" if "isolation" in sql else "select 1")
                if "isolation" in sql:
                    await conn.fetchval("select 1")
                try:
                    await conn.execute(sql)
                except unipool.DatabaseError as exc:
                    outcomes.append((type(exc).__name__, exc.sqlstate, exc.detail is None))
                if "isolation" in sql:
                    await conn.execute("rollback")
            if outcomes[0] != outcomes[1]:
                differ.append(f"{sql}: psqlpy {outcomes[0]}, psycopg {outcomes[1]}")
    assert not differ, "\n".join(differ)


async def test_command_tags_match_psycopg(pools: tuple[ModePool, ModePool]) -> None:
    statements = [
        "create temp table tags (id int, v text)",
        "create unique index on tags (id)",
        "insert into tags values (1, 'a;b'), (2, 'c')",
        "insert into tags select 3, 'x' -- trailing comment",
        "update tags set v = 'y' where id > 1",
        "delete from tags where id = 3",
        "select * from tags",
        "do $$ begin perform 1; end $$",
        "begin",
        "savepoint s",
        "release savepoint s",
        "commit",
        "set application_name = 'tags'",
        "drop table tags",
    ]
    tags: list[list[str]] = []
    for pool in pools:
        async with pool.acquire() as conn:
            tags.append([await conn.execute(sql) for sql in statements])
    assert tags[0] == tags[1]


async def test_numbers_for_numeric_parameters(pools: tuple[ModePool, ModePool]) -> None:
    psqlpy, _ = pools
    async with psqlpy.acquire() as conn:
        await conn.execute("create temp table money (n numeric, ns numeric[], i int)")
        await conn.executemany(
            "insert into money values ($1, $2, $3)", [(1, [2], 3), (1.5, None, 4)]
        )
        await conn.execute("insert into money values ($1, $2, $3)", 7, [8, 9.25], 10)
        rows = await conn.fetch("select n, ns, i from money order by i")
        assert [tuple(r) for r in rows] == [
            (Decimal(1), [Decimal(2)], 3),
            (Decimal("1.5"), None, 4),
            (Decimal(7), [Decimal(8), Decimal("9.25")], 10),
        ]
        assert await conn.copy_records_to_table("money", records=[(11, None, 12)]) == "COPY 1"
        assert await conn.fetchval("select n from money where i = 12") == Decimal(11)


COPY_ROWS = [
    (1, "plain", None),
    (2, "tab\tnew\nline\\back", {"k": "v"}),
    (3, "", {"k": ["a,b"]}),
    (4, 'quote " and, comma', None),
    (5, "\\N", None),
]
COPY_OPTIONS: list[dict[str, Any]] = [
    {},
    {"format": "csv"},
    {"format": "csv", "header": True, "delimiter": ";", "null": "NULL"},
    {"format": "text", "delimiter": "|", "null": "<null>"},
    {"format": "csv", "quote": "'", "escape": "\\"},
]


async def test_copy_matches_psycopg(pools: tuple[ModePool, ModePool], tmp_path: Path) -> None:
    for options in COPY_OPTIONS:
        outputs: list[bytes] = []
        for pool in pools:
            async with pool.acquire() as conn:
                await conn.execute("create temp table src (id int, s text, j jsonb)")
                await conn.execute("create temp table dst (id int, s text, j jsonb)")
                await conn.copy_records_to_table("src", records=COPY_ROWS)
                out = tmp_path / f"{pool.pool.backend}.out"
                assert await conn.copy_from_table("src", output=str(out), **options) == "COPY 5"
                outputs.append(out.read_bytes())
                tag = await conn.copy_to_table("dst", source=str(out), **options)
                assert tag == "COPY 5"
                copied = await conn.fetch("select id, s, j::text from dst order by id")
                original = await conn.fetch("select id, s, j::text from src order by id")
                assert [tuple(r) for r in copied] == [tuple(r) for r in original]
                await conn.execute("drop table src, dst")
        assert outputs[0] == outputs[1], options


def _binary_copy(rows: list[tuple[int, str | None]]) -> bytes:
    """COPY binary data of (int4, text) rows."""
    out = [b"PGCOPY\n\xff\r\n\x00", (0).to_bytes(4, "big"), (0).to_bytes(4, "big")]
    for number, text in rows:
        out += [(2).to_bytes(2, "big"), (4).to_bytes(4, "big"), number.to_bytes(4, "big")]
        if text is None:
            out.append((-1).to_bytes(4, "big", signed=True))
        else:
            out += [len(text.encode()).to_bytes(4, "big"), text.encode()]
    out.append((-1).to_bytes(2, "big", signed=True))
    return b"".join(out)


async def test_copy_in_columns_and_binary(pools: tuple[ModePool, ModePool]) -> None:
    psqlpy, _ = pools
    async with psqlpy.acquire() as conn:
        await conn.execute("create temp table b (id int default 9, v text, w text default 'd')")
        source = _binary_copy([(1, "x"), (2, None)])
        tag = await conn.copy_to_table("b", source=source, columns=["id", "v"], format="binary")
        assert tag == "COPY 2"
        assert await conn.copy_to_table("b", source=[b"x\n", b"\\N\n"], columns=["v"]) == "COPY 2"
        rows = await conn.fetch("select id, v, w from b order by id, v")
        assert [tuple(r) for r in rows] == [(1, "x", "d"), (2, None, "d"), (9, "x", "d"),
                                            (9, None, "d")]  # fmt: skip
        with pytest.raises(unipool.UndefinedColumn):
            await conn.copy_to_table("b", source=b"1\n", columns=["nope"])
        with pytest.raises(unipool.NotSupportedError, match="binary"):
            await conn.copy_from_table("b", output="/dev/null", format="binary")


def test_statement_text_helpers() -> None:
    assert _statements.split_statements("select ';' ; select $$;$$; -- x;\n") == [
        "select ';' ",
        " select $$;$$",
    ]
    assert _statements.split_statements('select 1 as "a;b"') == ['select 1 as "a;b"']
    assert _statements.command_tag("create or replace function f() ...", 0) == "CREATE FUNCTION"
    assert _statements.command_tag("  /* c */ start transaction", 0) == "START TRANSACTION"
    tx = TxStatus
    assert _statements.tx_after("rollback to savepoint s", tx.INERROR) is tx.INTRANS
    assert _statements.tx_after("rollback", tx.INERROR) is tx.IDLE
    assert _statements.tx_after("commit", tx.INTRANS) is tx.IDLE
    assert _statements.tx_after("begin isolation level serializable", tx.IDLE) is tx.INTRANS
    assert _statements.tx_after("prepare transaction 'x'", tx.INTRANS) is tx.IDLE
    assert _statements.tx_after("select 1", tx.INTRANS) is tx.INTRANS
    # a statement's effect is remembered, not its result: asked again from another status
    assert _statements.tx_after("rollback to savepoint s", tx.IDLE) is tx.IDLE
    assert _statements.tx_after("select 1", tx.IDLE) is tx.IDLE
    assert _statements.tx_after("commit and chain", tx.INTRANS) is tx.INTRANS
    assert _statements.tx_after("commit and no chain", tx.INTRANS) is tx.IDLE


def test_error_messages_are_parsed() -> None:
    from psqlpy import exceptions as pe

    text = (
        "Cannot execute query, error - db error: ERROR: duplicate key value violates unique "
        'constraint "t_pkey"\nDETAIL: Key (id)=(1) already exists.\nHINT: a hint'
    )
    error, broken = _errors.map_error(pe.ConnectionExecuteError(text))
    assert isinstance(error, unipool.UniqueViolation) and not broken
    assert (error.sqlstate, error.detail, error.hint) == ("23505", "Key (id)=(1) already exists.",
                                                          "a hint")  # fmt: skip
    timeout = "db error: ERROR: canceling statement due to statement timeout"
    error, _ = _errors.map_error(pe.DatabaseError(timeout), timed=True)
    assert isinstance(error, unipool.CommandTimeout)
    error, _ = _errors.map_error(pe.DatabaseError(timeout))
    assert type(error) is unipool.QueryCanceled
    lost = "db error: FATAL: terminating connection due to administrator command"
    error, broken = _errors.map_error(pe.DatabaseError(lost))
    assert isinstance(error, unipool.ConnectionLost) and error.sqlstate == "57P01" and broken
    mine = "db error: ERROR: connection closed by the remote peer, says the user"
    error, broken = _errors.map_error(pe.DatabaseError(mine))
    assert type(error) is unipool.DatabaseError and not broken


def test_check_default_applies_only_when_check_is_not_given(dsn: str) -> None:
    assert unipool.connect(dsn, backend="psqlpy")._check_after() == 0.05
    assert unipool.connect(dsn, backend="psqlpy", check=2.0)._check_after() == 2.0
    assert unipool.connect(dsn, backend="psqlpy", check=None)._check_after() is None
    assert unipool.connect(dsn, backend="psycopg")._check_after() == 1.0


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        held: list[socket.socket] = []
        done = threading.Event()

        def accept() -> None:
            server.settimeout(0.1)
            while not done.is_set():
                try:
                    held.append(server.accept()[0])
                except OSError:
                    pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield server.getsockname()[1]
        done.set()
        thread.join()
        for peer in held:
            peer.close()


async def test_connect_timeout_covers_the_handshake(mode: str, silent_server: int) -> None:
    """psqlpy's own connect timeout stops at TCP: a silent server would hang it."""
    params = ConnectParams(f"postgresql://u@127.0.0.1:{silent_server}/d", connect_timeout=0.2)
    start = anyio.current_time()
    with pytest.raises(unipool.ConnectError) as info:
        if mode == "sync":
            await in_thread(adapter.BACKEND.connect_sync, params)
        else:
            await adapter.BACKEND.connect_async(params, "trio" if mode == "trio" else "asyncio")
    assert info.value.sqlstate == "08001"
    assert anyio.current_time() - start < 2.0


async def test_loop_thread_fallback(mode: str, dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a working pump, blocking code and trio go through the shared loop thread."""
    monkeypatch.setattr(adapter, "_pump_works", lambda: False)
    async with open_pool(mode, dsn, "psqlpy", max_size=1) as pool:
        assert await pool.fetchval("select $1::numeric", 2) == Decimal(2)
        value = await pool.fetchval("select '00000000-0000-0000-0000-000000000001'::uuid")
        assert value == uuid.UUID(int=1)
        when = await pool.fetchval("select '2024-01-02'::date")
        assert when == dt.date(2024, 1, 2)


# -- terminate() fails a call in flight ------------------------------------------------------

#: Long enough that a call ending sooner was failed by terminate(), not answered.
SLEEP = "select pg_sleep(2)"


def _cancelling(task: asyncio.Task[Any] | None) -> int:
    """``task.cancelling()``: the cancellation requests it holds (0 before 3.11)."""
    return int(getattr(task, "cancelling", lambda: 0)())


def _cut_in(delay: float, conn: Any) -> threading.Timer:
    """``conn.terminate()`` from another thread (as the watchdog does), ``delay`` s from now."""
    timer = threading.Timer(delay, conn.terminate)
    timer.start()
    return timer


def _twice(conn: Any) -> None:
    conn.terminate()
    conn.terminate()


def test_terminate_fails_an_asyncio_call_in_flight(dsn: str) -> None:
    """From another thread or from the call's own loop, once or twice: ConnectionLost at
    once, and the task is left with no cancellation."""

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        took = []
        for cut in (
            lambda conn: _cut_in(0.1, conn),
            lambda conn: threading.Timer(0.1, _twice, (conn,)).start(),
            lambda conn: loop.call_later(0.1, conn.terminate),
            lambda conn: loop.call_later(0.1, _twice, conn),
        ):
            conn = await adapter.BACKEND.connect_async(ConnectParams(dsn), "asyncio")
            cut(conn)
            start = time.monotonic()
            with pytest.raises(unipool.ConnectionLost, match="cut"):
                await conn.fetchval(SLEEP, (), 0)
            took.append(time.monotonic() - start)
            await asyncio.sleep(0.01)  # no cancellation left over
            assert _cancelling(task) == 0
            assert not conn.alive()
        return took

    assert all(t < 1.0 for t in asyncio.run(main()))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is 3.11+")
@pytest.mark.parametrize("first", ["outside", "terminate"])
def test_a_call_also_cancelled_from_outside_stays_cancelled(dsn: str, first: str) -> None:
    """Cut and cancelled: the task gets CancelledError, holding the outside request only."""

    async def main() -> None:
        conn = await adapter.BACKEND.connect_async(ConnectParams(dsn), "asyncio")
        task = asyncio.current_task()
        assert task is not None

        def both() -> None:
            if first == "outside":
                task.cancel()
            conn.terminate()
            if first == "terminate":
                task.cancel()

        asyncio.get_running_loop().call_later(0.1, both)
        with pytest.raises(asyncio.CancelledError):
            await conn.fetchval(SLEEP, (), 0)
        assert _cancelling(task) == 1

    asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is 3.11+")
def test_a_cut_in_a_task_already_being_cancelled_is_connection_lost(dsn: str) -> None:
    """A release's reset runs shielded in a task whose deadline has passed: cut there, the
    call fails with ConnectionLost (so the pool frees the slot), and the earlier
    cancellation goes on afterwards."""

    async def main() -> None:
        conn = await adapter.BACKEND.connect_async(ConnectParams(dsn), "asyncio")
        task = asyncio.current_task()
        outcome: BaseException | None = None
        with anyio.move_on_after(0.05):
            try:
                await anyio.sleep(1)
            finally:
                assert _cancelling(task) == 1
                with anyio.CancelScope(shield=True):
                    _cut_in(0.1, conn)
                    try:  # (the scope outside would swallow a CancelledError)
                        await conn.fetchval(SLEEP, (), 0)
                    except BaseException as exc:
                        outcome = exc
                assert _cancelling(task) == 1
        assert _cancelling(task) == 0
        assert isinstance(outcome, unipool.ConnectionLost), repr(outcome)

    asyncio.run(main())


def test_a_cut_arriving_after_its_call_ended_is_ignored(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """terminate() from a thread while a call runs, its wake-up delivered only once the
    call is over: no stray cancellation hits the task. (The cut's cancel request, which
    would end the query on the server first, is left out here.)"""
    monkeypatch.setattr(conn_module, "cancel_in_background", lambda *_: None)

    async def main() -> None:
        conn = await adapter.BACKEND.connect_async(ConnectParams(dsn), "asyncio")
        loop = asyncio.get_running_loop()
        wake = loop.call_soon_threadsafe
        held: list[tuple[Any, ...]] = []

        def hold_the_cut(callback: Any, *args: Any, context: Any = None) -> Any:
            if getattr(callback, "__self__", None) is conn:
                return held.append((callback, *args))
            return wake(callback, *args, context=context)  # psqlpy's wake-ups

        loop.call_soon_threadsafe = hold_the_cut  # type: ignore[method-assign,assignment]
        try:
            _cut_in(0.1, conn)
            assert await conn.fetchval("select 7 from pg_sleep(0.5)", (), 0) == 7  # answered
        finally:
            del loop.call_soon_threadsafe
        assert held  # the cut came while the call ran
        for callback, *args in held:
            callback(*args)
        await asyncio.sleep(0.01)
        assert _cancelling(asyncio.current_task()) == 0

    asyncio.run(main())


def test_terminate_after_the_loop_closed_only_closes(dsn: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = loop.run_until_complete(adapter.BACKEND.connect_async(ConnectParams(dsn), "asyncio"))
        stuck = loop.create_task(conn.fetchval(SLEEP, (), 0))
        loop.run_until_complete(asyncio.sleep(0.1))  # the call is in flight
    finally:
        loop.close()
    conn.terminate()
    conn.terminate()
    assert not conn.alive()
    assert not stuck.done()


async def _fails_at_once(conn: Any, cut: Callable[[], object]) -> float:
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_call_later, 0.1, cut)
        with pytest.raises(unipool.ConnectionLost, match="cut"):
            await conn.fetchval(SLEEP, (), 0)
    return trio.current_time() - start


async def _call_later(delay: float, fn: Callable[[], object]) -> None:
    await trio.sleep(delay)
    fn()


def test_terminate_fails_a_trio_call_in_flight(dsn: str) -> None:
    """The pumped call ends at once with ConnectionLost, cut from a thread or a task."""

    async def main() -> list[float]:
        took = []
        for from_thread in (True, False):
            conn = await adapter.BACKEND.connect_async(ConnectParams(dsn), "trio")
            cut = functools.partial(_cut_in, 0, conn) if from_thread else conn.terminate
            took.append(await _fails_at_once(conn, cut))
            await trio.sleep(0.01)
            assert not conn.alive()
        return took

    assert all(t < 1.0 for t in trio.run(main))


@pytest.mark.parametrize("same_start", [True, False], ids=["its session", "a later one"])
def test_a_side_cancel_reaches_only_the_session_it_is_meant_for(
    dsn: str, admin: Admin, same_start: bool
) -> None:
    """The cancel names the server process and when it started: a process id now used by
    another session (or another server's) is left alone."""
    import psycopg

    target = psycopg.connect(dsn, autocommit=True)
    pid = target.info.backend_pid
    started = target.execute(
        "select backend_start::text from pg_stat_activity where pid = pg_backend_pid()"
    ).fetchone()[0]  # type: ignore[index]
    outcome: list[str] = []

    def sleep() -> None:
        try:
            target.execute("select pg_sleep(2)")
            outcome.append("ran to its end")
        except psycopg.errors.QueryCanceled:
            outcome.append("cancelled")

    thread = threading.Thread(target=sleep)
    thread.start()

    def running() -> bool:  # the query runs before the cancel is tried
        return bool(
            admin.value(
                "select count(*) from pg_stat_activity where pid = %s"
                " and query like 'select pg_sleep%%' and state = 'active'",
                pid,
            )
        )

    anyio.run(until, running)
    claimed = started if same_start else "2000-01-01 00:00:00+00"
    conn_module._cancel_in_new_loop(ConnectParams(dsn), pid, claimed)
    thread.join(5)
    target.close()
    assert outcome == (["cancelled"] if same_start else ["ran to its end"])
