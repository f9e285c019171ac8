"""The limits: one dedicated connection per worker, no pool."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

from ._harness import Ops
from ._workloads import SQL


@contextlib.asynccontextmanager
async def asyncpg_limit(dsn: str, conns: int, size: int) -> AsyncIterator[Ops]:
    import asyncpg

    cs = [await asyncpg.connect(dsn) for _ in range(conns)]

    async def query(i: int) -> None:
        await cs[i].fetchval(SQL)

    async def txn(i: int) -> None:
        async with cs[i].transaction():
            await cs[i].fetchval(SQL)

    try:
        yield Ops(query, txn)
    finally:
        for c in cs:
            await c.close()


@contextlib.asynccontextmanager
async def psycopg_async_limit(dsn: str, conns: int, size: int) -> AsyncIterator[Ops]:
    import psycopg

    cs = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(conns)]

    async def query(i: int) -> None:
        await (await cs[i].execute(SQL)).fetchone()

    async def txn(i: int) -> None:
        async with cs[i].transaction():
            await (await cs[i].execute(SQL)).fetchone()

    try:
        yield Ops(query, txn)
    finally:
        for c in cs:
            await c.close()


@contextlib.contextmanager
def psycopg_limit(dsn: str, conns: int, size: int) -> Iterator[Ops]:
    import psycopg

    cs = [psycopg.connect(dsn, autocommit=True) for _ in range(conns)]

    def query(i: int) -> None:
        cs[i].execute(SQL).fetchone()

    def txn(i: int) -> None:
        with cs[i].transaction():
            cs[i].execute(SQL).fetchone()

    try:
        yield Ops(query, txn)
    finally:
        for c in cs:
            c.close()


@contextlib.asynccontextmanager
async def psqlpy_limit(dsn: str, conns: int, size: int) -> AsyncIterator[Ops]:
    import psqlpy

    cs = [await psqlpy.connect(dsn=dsn) for _ in range(conns)]

    async def query(i: int) -> None:
        await cs[i].fetch_val(SQL)

    async def txn(i: int) -> None:
        async with cs[i].transaction() as tx:
            await tx.fetch_val(SQL)

    try:
        yield Ops(query, txn)
    finally:
        for c in cs:
            c.close()
