"""The context manager a cluster hands out for reading, usable with ``with``, ``async
with`` or ``await`` (its read-only transaction is a :class:`PoolTransaction` over it)."""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._connection import AsyncConnection, Connection

if TYPE_CHECKING:
    from ._cluster import ClusterPool
    from ._pool import Pool


class ReadAcquire:
    """``cluster.acquire(readonly=True)``: a connection to read on, as ``with`` (a
    Connection), ``async with`` (an AsyncConnection) or ``await`` (give it back with
    ``await cluster.arelease(conn)``)."""

    __slots__ = ("_async_conn", "_cluster", "_conn", "_pool", "_timeout")

    def __init__(self, cluster: ClusterPool, timeout: float | None) -> None:
        self._cluster = cluster
        self._timeout = timeout
        self._pool: Pool | None = None
        self._conn: Connection | None = None
        self._async_conn: AsyncConnection | None = None

    def __enter__(self) -> Connection:
        self._pool, self._conn = self._cluster._read_conn(self._timeout)
        return self._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pool is not None:
            self._pool._release(conn, exc)

    async def __aenter__(self) -> AsyncConnection:
        self._pool, self._async_conn = await self._cluster._aread_conn(self._timeout)
        return self._async_conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._async_conn = self._async_conn, None
        if conn is not None and self._pool is not None:
            await self._pool._arelease(conn, exc)

    def __await__(self) -> Generator[Any, None, AsyncConnection]:
        return self._cluster.agetconn(self._timeout, readonly=True).__await__()
