"""Behind PgBouncer in transaction mode: the ``pgbouncer`` preset (reliability scenario 14).

PgBouncer 1.18 has no prepared-statement support (``max_prepared_statements`` came in
1.21): a statement prepared on one of its server connections is unknown on the others,
and two clients' statements of the same name meet on one server. Its server pool here
is smaller than the client pool, so server connections are shared between the pool's
connections, and concurrent work through the preset must never hit
``DuplicatePreparedStatement`` (42P05) or ``InvalidSQLStatementName`` (26000), nor run
one client's statement with another's parameters. Without the preset it does.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import anyio
import psycopg
import pytest

import unipool
from tests._modes import ModePool, in_thread, open_pool
from tests._pgbouncer import PgBouncer, RenamingProxy, find_pgbouncer
from unipool._dsn import parse_dsn
from unipool.testing import TempServer

#: PgBouncer's server connections, fewer than the pool's client connections.
SERVER_POOL = 3
CLIENT_POOL = 10
QUERIES = 1000

#: Statements with parameters (as many distinct texts as drivers keep prepared), each
#: with its arguments and expected value for job ``i``; the result types differ, so a
#: statement run with another's parameters fails or gives a wrong value.
Job = tuple[str, Callable[[int], tuple[Any, ...]], Callable[[int], Any]]
JOBS: list[Job] = [
    ("select $1::int + 1", lambda i: (i,), lambda i: i + 1),
    ("select $1::text || 'x'", lambda i: (str(i),), lambda i: f"{i}x"),
    ("select $1::int * $2::int", lambda i: (i, 3), lambda i: 3 * i),
    ("select length($1::text)", lambda i: ("a" * (i % 40),), lambda i: i % 40),
    ("select $1::bigint - $2::bigint", lambda i: (i, 7), lambda i: i - 7),
    ("select $1::numeric * 2", lambda i: (i,), lambda i: Decimal(2 * i)),
]
#: sqlstates of a statement that is not where a client thinks it is.
MISPLACED = ("42P05", "26000")


@pytest.fixture(scope="module")
def server() -> Iterator[TempServer]:
    """A throwaway server for PgBouncer to serve (skips if PgBouncer is not installed)."""
    if find_pgbouncer() is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with TempServer() as server:
        yield server


@pytest.fixture
def bouncer(server: TempServer) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode, without prepared statements, 3 server connections.

    One per test: its server connections, and whatever was prepared on them, go with it.
    """
    settings = {"pool_mode": "transaction", "default_pool_size": str(SERVER_POOL)}
    with PgBouncer(server.port, settings=settings) as bouncer:
        yield bouncer


@dataclass
class Outcome:
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    wrong: list[str] = field(default_factory=list)

    def misplaced(self) -> int:
        return sum(self.errors[code] for code in MISPLACED)

    def failed(self, exc: unipool.Error) -> None:
        self.errors[getattr(exc, "sqlstate", None) or type(exc).__name__] += 1

    def check(self, i: int, got: Any) -> None:
        sql, args, expected = JOBS[i % len(JOBS)]
        if got != expected(i):
            self.wrong.append(f"{sql} {args(i)}: {got!r}")


def call(i: int) -> tuple[Any, ...]:
    """The statement and arguments of job ``i``."""
    sql, args, _ = JOBS[i % len(JOBS)]
    return (sql, *args(i))


def blocking_job(pool: unipool.Pool, i: int, outcome: Outcome, transactions: bool) -> None:
    """Job ``i``: one statement, or (``transactions``) every tenth job two in a transaction."""
    try:
        if i % 10 or not transactions:
            outcome.check(i, pool.fetchval(*call(i)))
            return
        with pool.transaction() as conn:
            outcome.check(i, conn.fetchval(*call(i)))
            outcome.check(i + 1, conn.fetchval(*call(i + 1)))
    except unipool.Error as exc:
        outcome.failed(exc)


async def async_job(pool: unipool.Pool, i: int, outcome: Outcome, transactions: bool) -> None:
    """`blocking_job` for asyncio and trio."""
    try:
        if i % 10 or not transactions:
            outcome.check(i, await pool.afetchval(*call(i)))
            return
        async with pool.transaction() as conn:
            outcome.check(i, await conn.fetchval(*call(i)))
            outcome.check(i + 1, await conn.fetchval(*call(i + 1)))
    except unipool.Error as exc:
        outcome.failed(exc)


async def run_jobs(pool: ModePool, count: int = QUERIES, transactions: bool = True) -> Outcome:
    """``count`` concurrent jobs: tasks, or in sync mode blocking calls in worker threads
    (anyio's, at most 40 at a time)."""
    outcome = Outcome()
    async with anyio.create_task_group() as tg:
        for i in range(count):
            if pool.sync:
                tg.start_soon(in_thread, blocking_job, pool.pool, i, outcome, transactions)
            else:
                tg.start_soon(async_job, pool.pool, i, outcome, transactions)
    return outcome


def server_backends(server: TempServer) -> int:
    """The sessions PgBouncer holds on the server."""
    with psycopg.connect(server.dsn(dbname="test"), autocommit=True) as admin:
        row = admin.execute(
            "select count(*) from pg_stat_activity where datname = 'test'"
            " and backend_type = 'client backend' and pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("preset", [True, False], ids=["preset", "no-preset"])
async def test_prepared_heavy_load_through_transaction_pooling(
    mode: str, backend: str, server: TempServer, bouncer: PgBouncer, preset: bool
) -> None:
    options: dict[str, Any] = {"pgbouncer": True} if preset else {}
    async with open_pool(mode, bouncer.dsn(), backend, max_size=CLIENT_POOL, **options) as pool:
        outcome = await run_jobs(pool)
        stats = pool.stats()
        shared_by = await in_thread(server_backends, server)
    # The pool's connections outnumbered PgBouncer's server connections: they shared them
    # (without the preset, some of the pool's connects fail on a misplaced statement).
    assert stats.connects + stats.connect_errors > SERVER_POOL >= shared_by
    if preset:
        assert not outcome.errors, dict(outcome.errors)
        assert not outcome.wrong, outcome.wrong[:5]
    else:  # the test can tell: the same work fails where statements stay prepared
        assert outcome.misplaced() > 0, (dict(outcome.errors), outcome.wrong[:5])


async def test_statement_pooling(mode: str, backend: str, server: TempServer) -> None:
    """PgBouncer in statement mode: each statement may get another server."""
    if backend == "psqlpy":
        pytest.skip("psqlpy needs transactions, which statement mode refuses")
    settings = {"pool_mode": "statement", "default_pool_size": str(SERVER_POOL)}
    with PgBouncer(server.port, settings=settings) as bouncer:
        async with open_pool(
            mode, bouncer.dsn(), backend, max_size=CLIENT_POOL, pgbouncer=True
        ) as pool:
            outcome = await run_jobs(pool, transactions=False)
    assert not outcome.errors, dict(outcome.errors)
    assert not outcome.wrong, outcome.wrong[:5]


async def test_psqlpy_behind_a_pooler_that_renames_statements(mode: str, dsn: str) -> None:
    """Where the pooler renames prepared statements (PgBouncer 1.21 and later with
    ``max_prepared_statements``), psqlpy's unprepared statements fail (psqlpy drops them
    by the name it gave): the adapter sees it at connect and keeps psqlpy's own."""
    pytest.importorskip("psqlpy", reason="the psqlpy driver is not installed (unipool[psqlpy])")
    info = parse_dsn(dsn)
    host, port = info.hosts[0] if info.hosts else ("localhost", None)
    if host.startswith("/"):
        pytest.skip("the test server is reached through a unix socket")
    with RenamingProxy(host or "localhost", port or 5432) as proxy:
        proxied = replace(info, hosts=((proxy.host, proxy.port),)).to_uri()
        async with (
            open_pool(mode, proxied, "psqlpy", max_size=1, pgbouncer=True) as pool,
            pool.acquire() as conn,
        ):
            for i in range(3):
                assert await conn.fetchval("select $1::int * 2", i) == 2 * i
                assert await conn.fetchval("select $1::numeric + 1", i) == i + 1
            row = await conn.fetchrow("select 1 as a, 'x'::char(2) as c, 2 as a")
            assert row is not None and tuple(row) == (1, "x ", 2)
            renamed = await conn.fetchval(
                "select count(*) from pg_prepared_statements where name like 'PGBOUNCER_%'"
            )
    assert renamed >= 3


async def test_preset_leaves_nothing_prepared(mode: str, backend: str, dsn: str) -> None:
    """Straight to the server (no pooler): the preset leaves no prepared statement in the
    session, and a driver setting in ``connect_kwargs`` wins over it."""
    overrides = {"asyncpg": {"statement_cache_size": 100}, "psycopg": {"prepare_threshold": 0}}

    async def prepared(**options: Any) -> int:
        async with (
            open_pool(mode, dsn, backend, max_size=1, **options) as pool,
            pool.acquire() as conn,
        ):
            for i in range(6):  # psycopg prepares from the sixth run on
                assert await conn.fetchval("select $1::int * 2", i) == 2 * i
                assert await conn.fetchval("select $1::numeric + 1", i) == i + 1
            return int(await conn.fetchval("select count(*) from pg_prepared_statements"))

    assert await prepared(pgbouncer=True) == 0
    assert await prepared() > 0
    if backend in overrides:
        assert await prepared(pgbouncer=True, connect_kwargs=overrides[backend]) > 0


async def test_statements_behind_pgbouncer(mode: str, backend: str, bouncer: PgBouncer) -> None:
    """What the adapters make up (psqlpy's above all) works through the preset too."""
    table = f"bounced_{backend}_{mode}"
    async with open_pool(mode, bouncer.dsn(), backend, max_size=2, pgbouncer=True) as pool:
        await pool.execute(f"drop table if exists {table}")
        await pool.execute(f"create table {table} (n numeric, i int primary key, c char(2))")
        await pool.executemany(
            f"insert into {table} values ($1, $2, $3)", [(1, 1, "a"), (2.5, 2, None)]
        )
        assert await pool.execute(f"insert into {table} values ($1, $2)", 3, 3) == "INSERT 0 1"
        async with pool.acquire() as conn:
            assert await conn.copy_records_to_table(table, records=[(4, 4, "d")]) == "COPY 1"
        rows = await pool.fetch(f"select n, i, c, i as i from {table} order by i")
        assert [tuple(r) for r in rows] == [
            (Decimal(1), 1, "a ", 1),
            (Decimal("2.5"), 2, None, 2),
            (Decimal(3), 3, None, 3),
            (Decimal(4), 4, "d ", 4),
        ]
        with pytest.raises(unipool.UniqueViolation):
            await pool.execute(f"insert into {table} values ($1, $2)", 5, 1)
        with pytest.raises(unipool.DivisionByZero):
            async with pool.transaction() as conn:
                await conn.execute(f"delete from {table}")
                await conn.fetchval("select 1 / $1::int", 0)
        assert await pool.fetchval(f"select count(*) from {table} where i > $1", 0) == 4
        await pool.execute(f"drop table {table}")


async def test_application_name_through_pgbouncer(
    mode: str, backend: str, bouncer: PgBouncer
) -> None:
    """PgBouncer refuses the ``options`` startup parameter, where psycopg and psqlpy send
    ``server_settings``; ``application_name``, which it takes, goes on its own."""
    settings = {"server_settings": {"application_name": "bounced"}}
    async with open_pool(
        mode, bouncer.dsn(), backend, max_size=1, pgbouncer=True, connect_kwargs=settings
    ) as pool:
        assert await pool.fetchval("select current_setting('application_name')") == "bounced"


async def test_a_pooler_that_refuses_the_client_check(
    mode: str, backend: str, server: TempServer
) -> None:
    """A PgBouncer in session mode that refuses ``options`` and unknown startup parameters,
    reached without the preset: ``client_connection_check_interval`` (sent by psycopg and
    psqlpy in ``options``, by asyncpg as a parameter of its own) is refused, and the
    attempt is made again without it."""
    settings = {"pool_mode": "session", "ignore_startup_parameters": "extra_float_digits"}
    with PgBouncer(server.port, settings=settings) as bouncer:
        async with open_pool(mode, bouncer.dsn(), backend, min_size=2, max_size=2) as pool:
            assert await pool.fetchval("show client_connection_check_interval") == "0"
            assert pool.stats().connects == 2


async def test_psqlpy_gives_up_a_cancelled_connection(mode: str, bouncer: PgBouncer) -> None:
    """psqlpy cannot cancel a query; the adapter's cancel from a side connection would
    name a server process PgBouncer may have lent to another client: the connection goes."""
    if mode == "sync":
        pytest.skip("threads cannot be cancelled")
    pytest.importorskip("psqlpy", reason="the psqlpy driver is not installed (unipool[psqlpy])")
    async with open_pool(mode, bouncer.dsn(), "psqlpy", max_size=1, pgbouncer=True) as pool:
        assert await pool.fetchval("select 1") == 1
        with anyio.move_on_after(0.3) as scope:
            await pool.fetchval("select pg_sleep(5)")
        assert scope.cancelled_caught
        assert await pool.fetchval("select $1::int + 1", 1) == 2
        stats = pool.stats()
    assert (stats.recycled["broken"], stats.connects) == (1, 2)


def _running(server: TempServer, tag: str) -> int:
    """How many queries tagged ``tag`` run on ``server``."""
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        row = admin.execute(
            "select count(*) from pg_stat_activity where state = 'active' and query like %s"
            " and pid <> pg_backend_pid()",
            (f"%{tag}%",),
        ).fetchone()
    return int(row[0]) if row else 0


async def test_a_cut_behind_pgbouncer_ends_the_query(
    mode: str, backend: str, bouncer: PgBouncer, server: TempServer
) -> None:
    """A borrower in a long query, ``close(timeout)`` past it: the cut delivers its
    cancel request before it closes the connection (PgBouncer refuses one that comes
    after the client left), so the query ends on the server (which checks nothing
    here). Not psqlpy: it has no cancel request, and its side cancel would name a
    server process PgBouncer may lend to another client."""
    if backend == "psqlpy":
        pytest.skip(
            "psqlpy has no cancel request, and behind PgBouncer its side cancel could"
            " reach another client: none is sent"
        )
    tag = f"bounced_cut_{backend}_{mode}"
    async with open_pool(mode, bouncer.dsn(), backend, max_size=1, pgbouncer=True) as pool:
        conn = await pool.getconn()

        async def borrower() -> None:
            with contextlib.suppress(unipool.Error):
                await conn.fetchval(f"select pg_sleep(5) /* {tag} */")

        async with anyio.create_task_group() as tg:
            tg.start_soon(borrower)
            with anyio.fail_after(3):
                while not await in_thread(_running, server, tag):  # noqa: ASYNC110 - polled
                    await anyio.sleep(0.02)
            await pool.close(timeout=0.3)
    with anyio.fail_after(2):  # it would run on for the rest of its 5 s
        while await in_thread(_running, server, tag):  # noqa: ASYNC110 - the server is polled
            await anyio.sleep(0.02)


def test_option_is_validated() -> None:
    with pytest.raises(TypeError, match="pgbouncer must be True or False, not str"):
        unipool.connect("postgresql://h/d", pgbouncer="transaction")
    with pytest.raises(TypeError, match="pgbouncer must be True or False, not int"):
        unipool.connect("postgresql://h/d", pgbouncer=1)
    unipool.connect("postgresql://h/d", pgbouncer=True)


def test_psqlpy_names_misplaced_statements() -> None:
    """psqlpy gives no SQLSTATE: the adapter reads these from the server's message."""
    pytest.importorskip("psqlpy", reason="the psqlpy driver is not installed (unipool[psqlpy])")
    from psqlpy import exceptions as pe

    from unipool.backends.psqlpy import _errors

    for message, sqlstate in [
        ('prepared statement "s7" already exists', "42P05"),
        ('prepared statement "s7" does not exist', "26000"),
        ("unnamed prepared statement does not exist", "26000"),
    ]:
        error, broken = _errors.map_error(pe.ConnectionExecuteError(f"db error: ERROR: {message}"))
        assert isinstance(error, unipool.DatabaseError), message
        assert (error.sqlstate, broken) == (sqlstate, False), message
