"""The context manager a cluster hands out for reading, usable with ``with``, ``async
with`` or ``await`` (its read-only transaction is a :class:`PoolTransaction` over it)."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ._connection import AsyncConnection, Connection
from ._contexts import AcquireContext

if TYPE_CHECKING:
    from ._cluster import ClusterPool


class ReadAcquire(AcquireContext):
    """``cluster.acquire(readonly=True)``: a connection to read on, as ``with`` (a
    Connection), ``async with`` (an AsyncConnection) or ``await`` (give it back with
    ``await cluster.arelease(conn)``). Each entry picks the pool it reads from; leaving
    gives the connection back to that pool."""

    __slots__ = ("_cluster",)

    def __init__(self, cluster: ClusterPool, timeout: float | None) -> None:
        super().__init__(cluster.primary, timeout)
        self._cluster = cluster

    def __enter__(self) -> Connection:
        self._pool, self._conn = self._cluster._read_conn(self._timeout)
        return self._conn

    async def __aenter__(self) -> AsyncConnection:
        self._pool, self._async_conn = await self._cluster._aread_conn(self._timeout)
        return self._async_conn

    def __await__(self) -> Generator[Any, None, AsyncConnection]:
        return self._cluster.agetconn(self._timeout, readonly=True).__await__()
