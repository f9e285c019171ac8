"""The query API, on every backend and in every mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio.lowlevel
import pytest

import unipool
from tests.conftest import PoolFactory


async def test_shortcuts(make_pool: PoolFactory) -> None:
    async with make_pool() as pool:
        assert await pool.fetchval("select $1::int + $2", 40, 2) == 42
        assert await pool.fetchval("select 1, 2", column=1) == 2
        row = await pool.fetchrow("select 1 as a, 'x' as b")
        assert row is not None and row["b"] == "x" and row[0] == 1
        assert await pool.fetchrow("select 1 where false") is None
        rows = await pool.fetch("select g from generate_series(1, 3) g")
        assert [r["g"] for r in rows] == [1, 2, 3]
        assert await pool.execute("select 1") == "SELECT 1"
        runs = await pool.fetchmany("select $1::int * 2 as v", [(1,), (2,)])
        assert [[r["v"] for r in run] for run in runs] == [[2], [4]]


async def test_record_api(make_pool: PoolFactory) -> None:
    async with make_pool() as pool:
        row = await pool.fetchrow("select 1 as a, null::text as b, 'z' as c")
        assert row is not None
        assert len(row) == 3
        assert list(row) == [1, None, "z"]
        assert list(row.keys()) == ["a", "b", "c"]
        assert list(row.values()) == [1, None, "z"]
        assert dict(row) == {"a": 1, "b": None, "c": "z"}
        assert next(iter(row.items())) == ("a", 1)
        assert row.get("missing", 7) == 7
        assert row[1:] == (None, "z")
        with pytest.raises(KeyError):
            row["missing"]
        with pytest.raises(IndexError):
            row[3]


async def test_execute_tags_and_executemany(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=1) as pool, pool.acquire() as conn:
        await conn.execute("create temp table t (id int primary key, v text)")
        assert await conn.execute("insert into t values ($1, $2)", 1, "a") == "INSERT 0 1"
        await conn.executemany("insert into t values ($1, $2)", [(2, "b"), (3, "c")])
        assert await conn.execute("update t set v = 'x' where id > $1", 1) == "UPDATE 2"
        assert await conn.fetchval("select count(*) from t where v = 'x'") == 2
        assert await conn.execute("delete from t") == "DELETE 3"


async def test_transactions_commit_rollback_savepoint(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=1) as pool, pool.acquire() as conn:
        await conn.execute("create temp table t (v int)")
        async with conn.transaction():
            await conn.execute("insert into t values (1)")
        with pytest.raises(unipool.DivisionByZero):
            async with conn.transaction():
                await conn.execute("insert into t values (2)")
                await conn.execute("select 1/0")
        async with conn.transaction():
            await conn.execute("insert into t values (3)")
            with pytest.raises(unipool.UniqueViolation):
                async with conn.transaction():
                    await conn.execute("insert into t values (4)")
                    await conn.execute("create unique index on t (v)")
                    await conn.execute("insert into t values (3)")
        assert [r[0] for r in await conn.fetch("select v from t order by v")] == [1, 3]


async def test_transaction_options(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=1) as pool:
        async with pool.transaction(isolation="serializable", readonly=True) as conn:
            assert await conn.fetchval("show transaction_isolation") == "serializable"
            assert await conn.fetchval("show transaction_read_only") == "on"
            with pytest.raises(unipool.ReadOnlySQLTransaction):
                await conn.execute("create temp table nope (x int)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("show transaction_isolation") == "read committed"
        with pytest.raises(ValueError, match="isolation"):
            async with pool.transaction(isolation="chaos"):
                pass


async def test_errors_carry_sqlstate_and_cause(make_pool: PoolFactory) -> None:
    async with make_pool() as pool:
        with pytest.raises(unipool.SQLSyntaxError) as info:
            await pool.execute("selec 1")
        assert info.value.sqlstate == "42601"
        assert isinstance(info.value, unipool.ProgrammingError)
        assert info.value.__cause__ is not None
        with pytest.raises(unipool.UndefinedTable):
            await pool.fetch("select * from no_such_table")
        assert await pool.fetchval("select 1") == 1


async def test_released_connection_refuses_work(make_pool: PoolFactory) -> None:
    async with make_pool() as pool:
        async with pool.acquire() as conn:
            pass
        with pytest.raises(unipool.InterfaceError, match="released"):
            await conn.fetchval("select 1")


async def test_copy(make_pool: PoolFactory, tmp_path: Path) -> None:
    async with make_pool(max_size=1) as pool, pool.acquire() as conn:
        await conn.execute("create temp table c (id int, name text, doc jsonb)")
        tag = await conn.copy_records_to_table(
            "c", records=[(1, "a", {"k": 1}), (2, None, None)], columns=["id", "name", "doc"]
        )
        assert tag == "COPY 2"
        source = tmp_path / "in.csv"
        source.write_bytes(b'3,c\n4,"d, e"\n')
        tag = await conn.copy_to_table(
            "c", source=str(source), columns=["id", "name"], format="csv"
        )
        assert tag == "COPY 2"
        out = tmp_path / "out.csv"
        tag = await conn.copy_from_table("c", output=str(out), columns=["id", "name"], format="csv")
        assert tag == "COPY 4"
        assert out.read_bytes().splitlines() == [b"1,a", b"2,", b"3,c", b'4,"d, e"']
        assert await conn.fetchval("select doc from c where id = 1") == {"k": 1}
        with pytest.raises(TypeError, match="unknown COPY option"):
            await conn.copy_from_table("c", output=str(out), colour="red")


async def test_copy_from_async_iterables(make_pool: PoolFactory, mode: str) -> None:
    if mode == "sync":
        pytest.skip("an async iterable needs an event loop: blocking code passes a plain one")

    async def records() -> AsyncIterator[tuple[int, str]]:
        for i in (1, 2):
            await anyio.lowlevel.checkpoint()  # yields to whichever loop iterates it
            yield (i, f"r{i}")

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"3,c\n", b"4,d\n"):
            await anyio.lowlevel.checkpoint()
            yield chunk

    async with make_pool(max_size=1) as pool, pool.acquire() as conn:
        await conn.execute("create temp table ca (id int, name text)")
        tag = await conn.copy_records_to_table("ca", records=records(), columns=["id", "name"])
        assert tag == "COPY 2"
        tag = await conn.copy_to_table("ca", source=chunks(), columns=["id", "name"], format="csv")
        assert tag == "COPY 2"
        rows = await conn.fetch("select id, name from ca order by id")
        assert [tuple(r) for r in rows] == [(1, "r1"), (2, "r2"), (3, "c"), (4, "d")]


async def test_command_timeout(make_pool: PoolFactory) -> None:
    async with make_pool(max_size=1, command_timeout=0.2) as pool:
        with pytest.raises(unipool.CommandTimeout) as info:
            await pool.fetchval("select 1 from pg_sleep(2)")
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, unipool.QueryCanceled)
        assert await pool.fetchval("select 1") == 1
