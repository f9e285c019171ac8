"""The drivers' own pools, and SQLAlchemy's QueuePool, as the benchmark runs them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

from ._harness import Ops
from ._workloads import SQL


@contextlib.asynccontextmanager
async def asyncpg_pool(dsn: str, conns: int, size: int) -> AsyncIterator[Ops]:
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)

    async def query(i: int) -> None:
        async with pool.acquire() as conn:
            await conn.fetchval(SQL)

    async def txn(i: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchval(SQL)

    async def fetchval(i: int) -> None:
        await pool.fetchval(SQL)

    try:
        yield Ops(query, txn, pool.acquire, fetchval)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def psycopg_async_pool(dsn: str, conns: int, size: int) -> AsyncIterator[Ops]:
    from psycopg_pool import AsyncConnectionPool

    kwargs = {"autocommit": True}
    async with AsyncConnectionPool(
        dsn, min_size=size, max_size=size, kwargs=kwargs, open=False
    ) as pool:
        await pool.wait()

        async def query(i: int) -> None:
            async with pool.connection() as conn:
                await (await conn.execute(SQL)).fetchone()

        async def txn(i: int) -> None:
            async with pool.connection() as conn, conn.transaction():
                await (await conn.execute(SQL)).fetchone()

        yield Ops(query, txn, pool.connection)


@contextlib.contextmanager
def psycopg_pool(dsn: str, conns: int, size: int) -> Iterator[Ops]:
    from psycopg_pool import ConnectionPool

    kwargs = {"autocommit": True}
    with ConnectionPool(dsn, min_size=size, max_size=size, kwargs=kwargs, open=False) as pool:
        pool.wait()

        def query(i: int) -> None:
            with pool.connection() as conn:
                conn.execute(SQL).fetchone()

        def txn(i: int) -> None:
            with pool.connection() as conn, conn.transaction():
                conn.execute(SQL).fetchone()

        yield Ops(query, txn, pool.connection)


@contextlib.asynccontextmanager
async def psqlpy_pool(dsn: str, conns: int, size: int) -> AsyncIterator[Ops]:
    import psqlpy

    pool = psqlpy.ConnectionPool(dsn=dsn, max_db_pool_size=size)

    async def query(i: int) -> None:
        async with pool.acquire() as conn:
            await conn.fetch_val(SQL)

    async def txn(i: int) -> None:
        async with pool.acquire() as conn, conn.transaction() as tx:
            await tx.fetch_val(SQL)

    try:
        yield Ops(query, txn, pool.acquire)
    finally:
        pool.close()


@contextlib.contextmanager
def sqlalchemy_pool(dsn: str, conns: int, size: int) -> Iterator[Ops]:
    """QueuePool through ``engine.raw_connection()``: the pool's checkout, no Connection layer.

    ``creator`` opens the connections, so that any libpq DSN works.
    """
    import psycopg
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(dsn),
        pool_size=size,
        max_overflow=0,
        isolation_level="AUTOCOMMIT",
    )

    def connection() -> contextlib.closing[sqlalchemy.PoolProxiedConnection]:
        return contextlib.closing(engine.raw_connection())

    def query(i: int) -> None:
        conn = engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute(SQL)
            cur.fetchone()
            cur.close()
        finally:
            conn.close()

    def txn(i: int) -> None:
        conn = engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute("BEGIN")
            cur.execute(SQL)
            cur.fetchone()
            cur.execute("COMMIT")
            cur.close()
        finally:
            conn.close()

    try:
        yield Ops(query, txn, connection)
    finally:
        engine.dispose()
