"""The systems: the drivers' own pools, the limits, and unipool in every mode."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator, Iterator

from .._connect import connect
from ._harness import MAX_SIZE, SQL, AsyncFactory, Ops, SyncFactory, System


@contextlib.asynccontextmanager
async def _asyncpg_pool(dsn: str, workers: int) -> AsyncIterator[Ops]:
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=MAX_SIZE, max_size=MAX_SIZE)

    async def query(i: int) -> None:
        async with pool.acquire() as conn:
            await conn.fetchval(SQL)

    async def acquire() -> None:
        async with pool.acquire():
            pass

    try:
        yield Ops(query, acquire)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def _asyncpg_limit(dsn: str, workers: int) -> AsyncIterator[Ops]:
    import asyncpg

    conns = [await asyncpg.connect(dsn) for _ in range(workers)]

    async def query(i: int) -> None:
        await conns[i].fetchval(SQL)

    try:
        yield Ops(query, None)
    finally:
        for c in conns:
            await c.close()


@contextlib.asynccontextmanager
async def _psycopg_async_pool(dsn: str, workers: int) -> AsyncIterator[Ops]:
    from psycopg_pool import AsyncConnectionPool

    kwargs = {"autocommit": True}
    async with AsyncConnectionPool(
        dsn, min_size=MAX_SIZE, max_size=MAX_SIZE, kwargs=kwargs, open=False
    ) as pool:
        await pool.wait()

        async def query(i: int) -> None:
            async with pool.connection() as conn:
                await (await conn.execute(SQL)).fetchone()

        async def acquire() -> None:
            async with pool.connection():
                pass

        yield Ops(query, acquire)


@contextlib.asynccontextmanager
async def _psycopg_async_limit(dsn: str, workers: int) -> AsyncIterator[Ops]:
    import psycopg

    conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(workers)]

    async def query(i: int) -> None:
        await (await conns[i].execute(SQL)).fetchone()

    try:
        yield Ops(query, None)
    finally:
        for c in conns:
            await c.close()


@contextlib.contextmanager
def _psycopg_pool(dsn: str, workers: int) -> Iterator[Ops]:
    from psycopg_pool import ConnectionPool

    kwargs = {"autocommit": True}
    with ConnectionPool(
        dsn, min_size=MAX_SIZE, max_size=MAX_SIZE, kwargs=kwargs, open=False
    ) as pool:
        pool.wait()

        def query(i: int) -> None:
            with pool.connection() as conn:
                conn.execute(SQL).fetchone()

        def acquire() -> None:
            with pool.connection():
                pass

        yield Ops(query, acquire)


@contextlib.contextmanager
def _psycopg_limit(dsn: str, workers: int) -> Iterator[Ops]:
    import psycopg

    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(workers)]
    try:
        yield Ops(lambda i: conns[i].execute(SQL).fetchone(), None)
    finally:
        for c in conns:
            c.close()


@contextlib.asynccontextmanager
async def _psqlpy_pool(dsn: str, workers: int) -> AsyncIterator[Ops]:
    import psqlpy

    pool = psqlpy.ConnectionPool(dsn=dsn, max_db_pool_size=MAX_SIZE)

    async def query(i: int) -> None:
        async with pool.acquire() as conn:
            await conn.fetch_val(SQL)

    async def acquire() -> None:
        async with pool.acquire():
            pass

    try:
        yield Ops(query, acquire)
    finally:
        pool.close()


@contextlib.asynccontextmanager
async def _psqlpy_limit(dsn: str, workers: int) -> AsyncIterator[Ops]:
    import psqlpy

    conns = [await psqlpy.connect(dsn=dsn) for _ in range(workers)]

    async def query(i: int) -> None:
        await conns[i].fetch_val(SQL)

    try:
        yield Ops(query, None)
    finally:
        for c in conns:
            c.close()


def _unipool_sync(backend: str) -> SyncFactory:
    @contextlib.contextmanager
    def factory(dsn: str, workers: int) -> Iterator[Ops]:
        pool = connect(dsn, backend=backend, min_size=MAX_SIZE, max_size=MAX_SIZE)
        with pool:

            def query(i: int) -> None:
                with pool.acquire() as conn:
                    conn.fetchval(SQL)

            def acquire() -> None:
                with pool.acquire():
                    pass

            yield Ops(query, acquire)

    return factory


def _unipool_async(backend: str) -> AsyncFactory:
    @contextlib.asynccontextmanager
    async def factory(dsn: str, workers: int) -> AsyncIterator[Ops]:
        pool = connect(dsn, backend=backend, min_size=MAX_SIZE, max_size=MAX_SIZE)
        async with pool:

            async def query(i: int) -> None:
                async with pool.acquire() as conn:
                    await conn.fetchval(SQL)

            async def acquire() -> None:
                async with pool.acquire():
                    pass

            yield Ops(query, acquire)

    return factory


_MODULES = {"asyncpg": "asyncpg", "psycopg": "psycopg_pool", "psqlpy": "psqlpy", "trio": "trio"}


def _have(name: str) -> bool:
    return importlib.util.find_spec(_MODULES[name]) is not None


def systems() -> list[System]:
    """Every system whose driver (and runtime) is installed."""
    out = [
        System("asyncpg.create_pool", "asyncpg", "asyncio", "native", _asyncpg_pool),
        System("psycopg_pool.AsyncConnectionPool", "psycopg", "asyncio", "native",
               _psycopg_async_pool),
        System("psycopg_pool.ConnectionPool", "psycopg", "threads", "native", _psycopg_pool),
        System("psqlpy.ConnectionPool", "psqlpy", "asyncio", "native", _psqlpy_pool),
        System("limit asyncpg", "asyncpg", "asyncio", "limit", _asyncpg_limit),
        System("limit psycopg", "psycopg", "asyncio", "limit", _psycopg_async_limit),
        System("limit psycopg", "psycopg", "threads", "limit", _psycopg_limit),
        System("limit psqlpy", "psqlpy", "asyncio", "limit", _psqlpy_limit),
    ]  # fmt: skip
    for backend in ("psycopg", "asyncpg", "psqlpy"):
        out.append(System(f"unipool {backend}", backend, "threads", "unipool",
                          _unipool_sync(backend)))  # fmt: skip
        out.extend(System(f"unipool {backend}", backend, runtime, "unipool",
                          _unipool_async(backend)) for runtime in ("asyncio", "trio"))  # fmt: skip
    return [s for s in out if _have(s.driver) and (s.runtime != "trio" or _have("trio"))]
