"""Every backend gives the same Python values and the same errors.

Each test runs all installed backends in one mode and, on failure, prints the
table of which backend differs from the expected result.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest

import unipool
from tests._modes import in_thread, open_pool
from tests.conftest import BACKENDS, Admin, installed

UTC = dt.timezone.utc

#: (sql, args, expected value); the type must match too.
VALUES: list[tuple[str, tuple[Any, ...], Any]] = [
    ("select 1::int2", (), 1),
    ("select 9000000000::int8", (), 9000000000),
    ("select 1.5::float8", (), 1.5),
    ("select 1.50::numeric", (), Decimal("1.50")),
    ("select 'x'::text", (), "x"),
    ("select true", (), True),
    ("select '\\x0102'::bytea", (), b"\x01\x02"),
    ("select '2024-01-02'::date", (), dt.date(2024, 1, 2)),
    ("select '12:34:56'::time", (), dt.time(12, 34, 56)),
    ("select '2024-01-02 03:04:05'::timestamp", (), dt.datetime(2024, 1, 2, 3, 4, 5)),
    ("select '2024-01-02 03:04:05+00'::timestamptz", (),
     dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("select '1 day 2 hours'::interval", (), dt.timedelta(days=1, hours=2)),
    ("select '00000000-0000-0000-0000-000000000001'::uuid", (), uuid.UUID(int=1)),
    ("select '{\"a\": 1}'::json", (), {"a": 1}),
    ("select '[1, 2]'::jsonb", (), [1, 2]),
    ("select array[1, null, 3]::int4[]", (), [1, None, 3]),
    ("select array['a', null]::text[]", (), ["a", None]),
    ("select 'ab'::char(3)", (), "ab "),
    ("select null::int", (), None),
    ("select pg_sleep(0)", (), None),
    ("select $1::jsonb", ({"a": [1, 2]},), {"a": [1, 2]}),
    ("select $1::json", ({"a": 1},), {"a": 1}),
    ("select $1::uuid", (uuid.UUID(int=5),), uuid.UUID(int=5)),
    ("select $1::numeric", (5,), Decimal(5)),
    ("select $1::numeric", (Decimal("1.25"),), Decimal("1.25")),
    ("select $1::timestamptz", (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),),
     dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("select $1::timestamp", (dt.datetime(2024, 1, 2, 3, 4, 5),), dt.datetime(2024, 1, 2, 3, 4, 5)),
    ("select $1::int4[]", ([1, None],), [1, None]),
    ("select $1::bytea", (b"\x00\x01",), b"\x00\x01"),
    ("select $1::interval", (dt.timedelta(days=1),), dt.timedelta(days=1)),
    ("select $1::bool", (False,), False),
    ("select $1::date", (dt.date(2024, 1, 2),), dt.date(2024, 1, 2)),
]  # fmt: skip

#: (sql, expected exception class, sqlstate)
ERRORS: list[tuple[str, type[unipool.Error], str]] = [
    ("select 1/0", unipool.DivisionByZero, "22012"),
    ("selec 1", unipool.SQLSyntaxError, "42601"),
    ("select * from no_such_table_here", unipool.UndefinedTable, "42P01"),
    ("do $$ begin raise exception 'dup' using errcode = '23505'; end $$",
     unipool.UniqueViolation, "23505"),
    ("do $$ begin raise exception 'ser' using errcode = '40001'; end $$",
     unipool.SerializationFailure, "40001"),
    ("do $$ begin raise exception 'canceled' using errcode = '57014'; end $$",
     unipool.QueryCanceled, "57014"),
    ("do $$ begin raise exception 'deadlock' using errcode = '40P01'; end $$",
     unipool.DeadlockDetected, "40P01"),
]  # fmt: skip


#: Cells a backend cannot meet, and why (docs/types.md lists them): they are skipped.
GAPS: dict[tuple[str, str], str] = {
    ("psqlpy", sql): "psqlpy reports no SQLSTATE and the message is the user's own: "
    "a custom errcode cannot be told (DatabaseError, sqlstate None)"
    for sql, _, _ in ERRORS
    if "using errcode" in sql
}


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, uuid.UUID):  # asyncpg's UUID is a subclass
        return isinstance(got, uuid.UUID) and got == want
    return type(got) is type(want) and got == want


def _table(rows: list[tuple[str, str, str]]) -> str:
    return "\n".join(f"  {backend:8} {case:60} {outcome}" for backend, case, outcome in rows)


async def test_values_conform(mode: str, dsn: str) -> None:
    differ: list[tuple[str, str, str]] = []
    for backend in installed(BACKENDS):
        async with open_pool(mode, dsn, backend, max_size=1) as pool:
            for sql, args, want in VALUES:
                case = f"{sql} {args!r}"[:60]
                try:
                    got = await pool.fetchval(sql, *args)
                except unipool.Error as exc:
                    differ.append((backend, case, f"raised {type(exc).__name__}: {exc}"[:80]))
                    continue
                if not _same(got, want):
                    differ.append((backend, case, f"gave {got!r} ({type(got).__name__})"))
    if differ:
        pytest.fail("backends differ from the type table:\n" + _table(differ))


async def test_errors_conform(mode: str, dsn: str) -> None:
    differ: list[tuple[str, str, str]] = []
    for backend in installed(BACKENDS):
        async with open_pool(mode, dsn, backend, max_size=1) as pool:
            for sql, want, sqlstate in ERRORS:
                if (backend, sql) in GAPS:
                    continue
                try:
                    await pool.execute(sql)
                except unipool.Error as exc:
                    if type(exc) is not want or getattr(exc, "sqlstate", None) != sqlstate:
                        got = f"{type(exc).__name__} {getattr(exc, 'sqlstate', None)}"
                        differ.append((backend, sql[:60], got))
                    elif exc.__cause__ is None:
                        differ.append((backend, sql[:60], "no driver exception as __cause__"))
                else:
                    differ.append((backend, sql[:60], "raised nothing"))
    if differ:
        pytest.fail("backends differ from the error table:\n" + _table(differ))


async def test_connect_errors_conform(mode: str, dsn: str) -> None:
    differ: list[tuple[str, str, str]] = []
    base = dsn.rsplit("/", 1)[0]
    cases = [
        (base + "/no_such_database_here", "3D000"),
        ("postgresql://postgres@127.0.0.1:1/test", "08001"),
    ]
    for backend in installed(BACKENDS):
        for target, sqlstate in cases:
            pool = unipool.connect(target, backend=backend, connect_timeout=2, acquire_timeout=1)
            try:
                if mode == "sync":
                    await in_thread(pool.open)
                else:
                    await pool.aopen()
            except unipool.ConnectError as exc:
                if exc.sqlstate != sqlstate:
                    differ.append((backend, target[-40:], f"sqlstate {exc.sqlstate}"))
            except unipool.Error as exc:
                differ.append((backend, target[-40:], f"{type(exc).__name__}: {exc}"[:80]))
            else:
                differ.append((backend, target[-40:], "connected"))
            pool.terminate()
    if differ:
        pytest.fail("backends differ on connect errors:\n" + _table(differ))


#: Errors the server raises itself, after a setup, on one connection: (sql, class, sqlstate).
REAL_ERRORS: list[tuple[str, type[unipool.Error], str]] = [
    ("insert into uq values (1)", unipool.UniqueViolation, "23505"),
    ("insert into uq values (null)", unipool.NotNullViolation, "23502"),
    ("select 1 from pg_sleep(1)", unipool.QueryCanceled, "57014"),
]
REAL_SETUP = (
    "create temp table uq (x int primary key)",
    "insert into uq values (1)",
    "set statement_timeout = '50ms'",
)


async def test_real_errors_conform(mode: str, dsn: str) -> None:
    differ: list[tuple[str, str, str]] = []
    for backend in installed(BACKENDS):
        async with open_pool(mode, dsn, backend, max_size=1) as pool, pool.acquire() as conn:
            for sql in REAL_SETUP:
                await conn.execute(sql)
            for sql, want, sqlstate in REAL_ERRORS:
                try:
                    await conn.execute(sql)
                except unipool.Error as exc:
                    if type(exc) is not want or getattr(exc, "sqlstate", None) != sqlstate:
                        got = f"{type(exc).__name__} {getattr(exc, 'sqlstate', None)}"
                        differ.append((backend, sql, got))
                else:
                    differ.append((backend, sql, "raised nothing"))
    if differ:
        pytest.fail("backends differ from the error table:\n" + _table(differ))


async def test_admin_shutdown_conforms(mode: str, dsn: str, admin: Admin) -> None:
    """A backend killed mid-query: ConnectionLost with SQLSTATE 57P01 everywhere."""
    differ: list[tuple[str, str, str]] = []
    for backend in installed(BACKENDS):
        async with open_pool(mode, dsn, backend, max_size=1) as pool, pool.acquire() as conn:
            pid = await conn.fetchval("select pg_backend_pid()")
            timer = threading.Timer(0.3, admin.kill, (pid,))
            timer.start()
            try:
                await conn.fetchval("select 1 from pg_sleep(3)")
            except unipool.Error as exc:
                if type(exc) is not unipool.ConnectionLost or exc.sqlstate != "57P01":
                    got = f"{type(exc).__name__} {getattr(exc, 'sqlstate', None)}"
                    differ.append((backend, "killed mid-query", got))
            else:
                differ.append((backend, "killed mid-query", "raised nothing"))
            finally:
                timer.join()
    if differ:
        pytest.fail("backends differ on a lost connection:\n" + _table(differ))
