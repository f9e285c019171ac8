"""Each example in examples/ runs against the suite's server and does what it says."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from functools import partial

import httpx
import psycopg
import pytest
import trio
from examples import (
    asyncio_tasks,
    blocking_threads,
    fastapi_app,
    ledger,
    sqlalchemy_orm,
    trio_nursery,
)


@pytest.fixture
def name(dsn: str) -> Iterator[str]:
    """A table name (or prefix) of this test's own; what an example leaves behind is dropped."""
    unique = f"example_{uuid.uuid4().hex[:12]}"
    yield unique
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "select tablename from pg_tables where tablename like %s", (unique + "%",)
        ).fetchall()
        for (table,) in tables:
            conn.execute(f"drop table if exists {table} cascade")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def table_exists(dsn: str, table: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select to_regclass(%s) is not null", (table,)).fetchone() == (True,)


def test_blocking_threads(dsn: str, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    blocking_threads.main(dsn, table=name)
    out = capsys.readouterr().out
    assert "8 threads inserted 40 rows (5 each)" in out
    found = re.search(r"connections: (\d+), at most 4", out)
    assert found is not None and 1 <= int(found.group(1)) <= 4
    assert not table_exists(dsn, name)


@pytest.mark.parametrize("backend", ["asyncpg", "psycopg"])
def test_asyncio_tasks(
    dsn: str, name: str, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(asyncio_tasks.main(dsn, backend=backend, table=name))
    out = capsys.readouterr().out
    assert "rows: [{'id': 0, 'square': 0}, {'id': 1, 'square': 1}," in out
    assert "sum of squares: 2470" in out  # 0² + 1² + ... + 19²
    assert not table_exists(dsn, name)


@pytest.mark.parametrize("backend", ["psycopg", "asyncpg"])
def test_trio_nursery(
    dsn: str, name: str, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trio.run(partial(trio_nursery.main, dsn, backend=backend, table=name))
    assert "10 rows from 10 tasks over at most 3 connections" in capsys.readouterr().out
    assert not table_exists(dsn, name)


def test_sqlalchemy_orm(dsn: str, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    sqlalchemy_orm.main(dsn, table=name)
    out = capsys.readouterr().out
    assert "books: Dune, Solaris" in out
    assert "rows: 2" in out
    assert "in use: 0" in out
    assert not table_exists(dsn, name)


async def test_fastapi_app(dsn: str, name: str) -> None:
    app = fastapi_app.create_app(dsn, table=name)
    transport = httpx.ASGITransport(app=app)
    # The ASGI transport sends requests only: run the app's lifespan around them,
    # as a server does (the pool opens on entry and closes on exit).
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        created = await client.post("/notes", json={"text": "hello"})
        assert created.status_code == 201
        note = created.json()
        assert note["text"] == "hello"
        assert (await client.get(f"/notes/{note['id']}")).json() == note
        assert (await client.get("/notes/999999")).status_code == 404
        stats = (await client.get("/pool")).json()
        assert stats["in_use"] == 0  # each request gave its connection back
        assert stats["acquires"] >= 3
        assert 1 <= stats["size"] <= stats["max_size"] == 10
    assert app.state.pool.is_closing()


@pytest.mark.parametrize("backend", ["asyncpg", "psycopg"])
def test_ledger_script(
    dsn: str, name: str, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(ledger.main(dsn, backend=backend, prefix=name))
    out = capsys.readouterr().out
    assert "after one transfer: 70.00 30.00" in out
    assert "rolled back, alice still has 70.00" in out
    assert "concurrent transfers: 7 done, 3 refused" in out
    assert "final: 0.00 100.00" in out


@pytest.mark.parametrize("backend", ["asyncpg", "psycopg"])
def test_ledger_failed_transfers_roll_back(dsn: str, name: str, backend: str) -> None:
    async def run() -> None:
        db = ledger.DatabaseManager(dsn, backend=backend, prefix=name)
        await db.connect()
        try:
            await db.create_schema()
            a = await db.open_account("a", Decimal(50))
            b = await db.open_account("b")
            with pytest.raises(ledger.InsufficientFunds):
                await db.transfer(a, b, Decimal("50.01"))
            with pytest.raises(ledger.UnknownAccount):
                await db.transfer(a, 999_999, Decimal(10))  # debited, then rolled back
            with pytest.raises(ledger.UnknownAccount):
                await db.transfer(999_999, a, Decimal(10))
            assert (await db.balance(a), await db.balance(b)) == (Decimal(50), Decimal(0))
            assert await db.pool.afetchval(f"select count(*) from {db.transfers}") == 0
            assert db.pool.stats().in_use == 0
        finally:
            await db.close()

    asyncio.run(run())


@pytest.mark.parametrize("backend", ["asyncpg", "psycopg"])
def test_ledger_concurrent_transfers_never_overdraw(dsn: str, name: str, backend: str) -> None:
    rng = random.Random(7)
    moves = [(rng.random() < 0.5, Decimal(rng.randint(5, 40))) for _ in range(60)]

    async def run() -> None:
        db = ledger.DatabaseManager(dsn, backend=backend, prefix=name)
        await db.connect()
        try:
            await db.create_schema()
            a = await db.open_account("a", Decimal(100))
            b = await db.open_account("b", Decimal(20))

            async def move(a_to_b: bool, amount: Decimal) -> Decimal:
                """The change to a's balance, if the transfer went through."""
                source, target = (a, b) if a_to_b else (b, a)
                try:
                    await db.transfer(source, target, amount)
                except ledger.InsufficientFunds:
                    return Decimal(0)
                return -amount if a_to_b else amount

            changes = await asyncio.gather(*(move(*m) for m in moves))
            balance_a, balance_b = await db.balance(a), await db.balance(b)
            assert balance_a >= 0 and balance_b >= 0
            assert balance_a + balance_b == 120  # no money made or lost
            assert balance_a == 100 + sum(changes)  # each transfer that returned happened
            done = sum(1 for c in changes if c)
            assert 0 < done < len(moves)  # both outcomes occurred
            assert await db.pool.afetchval(f"select count(*) from {db.transfers}") == done
        finally:
            await db.close()

    asyncio.run(run())
