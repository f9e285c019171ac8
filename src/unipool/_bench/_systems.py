"""unipool in every mode, and the registry of systems (those whose packages are installed)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from .._connect import connect
from . import _limits, _natives
from ._harness import AsyncFactory, Ops, SyncFactory, System
from ._workloads import SQL


def _unipool_sync(backend: str) -> SyncFactory:
    @contextlib.contextmanager
    def factory(dsn: str, conns: int, size: int) -> Iterator[Ops]:
        with connect(dsn, backend=backend, min_size=size, max_size=size) as pool:

            def query(i: int) -> None:
                with pool.acquire() as conn:
                    conn.fetchval(SQL)

            def txn(i: int) -> None:
                with pool.acquire() as conn, conn.transaction():
                    conn.fetchval(SQL)

            def fetchval(i: int) -> None:
                pool.fetchval(SQL)

            @contextlib.contextmanager
            def held(n: int) -> Iterator[Callable[[int], None]]:
                with contextlib.ExitStack() as stack:
                    conns = [stack.enter_context(pool.acquire()) for _ in range(n)]

                    def op(i: int) -> None:
                        conns[i].fetchval(SQL)

                    yield op

            yield Ops(query, txn, pool.acquire, fetchval, held)

    return factory


def _unipool_async(backend: str) -> AsyncFactory:
    @contextlib.asynccontextmanager
    async def factory(dsn: str, conns: int, size: int) -> AsyncIterator[Ops]:
        async with connect(dsn, backend=backend, min_size=size, max_size=size) as pool:

            async def query(i: int) -> None:
                async with pool.acquire() as conn:
                    await conn.fetchval(SQL)

            async def txn(i: int) -> None:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.fetchval(SQL)

            async def fetchval(i: int) -> None:
                await pool.afetchval(SQL)

            @contextlib.asynccontextmanager
            async def held(n: int) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
                async with contextlib.AsyncExitStack() as stack:
                    conns = [await stack.enter_async_context(pool.acquire()) for _ in range(n)]

                    async def op(i: int) -> None:
                        await conns[i].fetchval(SQL)

                    yield op

            yield Ops(query, txn, pool.acquire, fetchval, held)

    return factory


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def systems() -> list[System]:
    """Every system whose packages (driver, runtime, pool) are installed, in table order."""
    out = [
        System("asyncpg.create_pool", "asyncpg", "asyncio", "native", _natives.asyncpg_pool),
        System("psycopg_pool.AsyncConnectionPool", "psycopg", "asyncio", "native",
               _natives.psycopg_async_pool, ("psycopg_pool",)),
        System("psycopg_pool.ConnectionPool", "psycopg", "threads", "native",
               _natives.psycopg_pool, ("psycopg_pool",)),
        System("psqlpy.ConnectionPool", "psqlpy", "asyncio", "native", _natives.psqlpy_pool),
        System("sqlalchemy.QueuePool", "psycopg", "threads", "native", _natives.sqlalchemy_pool,
               ("sqlalchemy",)),
        System("limit asyncpg", "asyncpg", "asyncio", "limit", _limits.asyncpg_limit),
        System("limit psycopg", "psycopg", "asyncio", "limit", _limits.psycopg_async_limit),
        System("limit psycopg", "psycopg", "threads", "limit", _limits.psycopg_limit),
        System("limit psqlpy", "psqlpy", "asyncio", "limit", _limits.psqlpy_limit),
    ]  # fmt: skip
    for backend in ("psycopg", "asyncpg", "psqlpy"):
        out.append(System(f"unipool {backend}", backend, "threads", "unipool",
                          _unipool_sync(backend)))  # fmt: skip
        out.extend(System(f"unipool {backend}", backend, runtime, "unipool",
                          _unipool_async(backend)) for runtime in ("asyncio", "trio"))  # fmt: skip
    return [s for s in out if all(_have(m) for m in (s.driver, *s.needs)) and
            (s.runtime != "trio" or _have("trio"))]  # fmt: skip
