"""One test body, three modes: an awaitable view of a pool in sync, asyncio or trio mode.

In sync mode every call runs the *blocking* API in a worker thread; in the
async modes it calls the a-prefixed API on the test's own event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

import unipool

MODES = ("sync", "asyncio", "trio")


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds: it watches another thread or task, so poll it."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - the condition lives elsewhere
            await anyio.sleep(0.002)


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking call in a worker thread."""
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))


class _Queries:
    """The query methods, each one ``self._call(name, ...)``: shared by connections and pools."""

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._call("execute", sql, *args)  # type: ignore[no-any-return]

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        await self._call("executemany", sql, args_seq)

    async def fetch(self, sql: str, *args: Any) -> list[unipool.Record]:
        return await self._call("fetch", sql, *args)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> unipool.Record | None:
        return await self._call("fetchrow", sql, *args)  # type: ignore[no-any-return]

    async def fetchval(self, sql: str, *args: Any, column: int = 0) -> Any:
        return await self._call("fetchval", sql, *args, column=column)

    async def fetchmany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> Any:
        return await self._call("fetchmany", sql, args_seq)


@asynccontextmanager
async def _entered(cm: Any, sync: bool) -> AsyncIterator[Any]:
    """``cm`` entered in this mode: blocking ``with`` in a worker thread, or ``async with``."""
    if not sync:
        async with cm as value:
            yield value
        return
    value = await in_thread(cm.__enter__)
    try:
        yield value
    except BaseException as exc:
        await in_thread(cm.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await in_thread(cm.__exit__, None, None, None)


class ModeConn(_Queries):
    """A borrowed connection with an awaitable API in every mode."""

    def __init__(self, conn: unipool.Connection | unipool.AsyncConnection, sync: bool) -> None:
        self.conn = conn
        self.sync = sync

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.conn, name)
        if self.sync:
            return await in_thread(method, *args, **kwargs)
        return await method(*args, **kwargs)

    async def copy_records_to_table(self, table: str, **kwargs: Any) -> str:
        return await self._call("copy_records_to_table", table, **kwargs)  # type: ignore[no-any-return]

    async def copy_to_table(self, table: str, **kwargs: Any) -> str:
        return await self._call("copy_to_table", table, **kwargs)  # type: ignore[no-any-return]

    async def copy_from_table(self, table: str, **kwargs: Any) -> str:
        return await self._call("copy_from_table", table, **kwargs)  # type: ignore[no-any-return]

    @asynccontextmanager
    async def transaction(self, **kwargs: Any) -> AsyncIterator[ModeConn]:
        async with _entered(self.conn.transaction(**kwargs), self.sync):
            yield self

    @property
    def raw(self) -> Any:
        return self.conn.raw


class ModePool(_Queries):
    """A pool seen through one mode; ``pool`` is the real :class:`unipool.Pool`."""

    def __init__(self, pool: unipool.Pool, mode: str) -> None:
        self.pool = pool
        self.mode = mode
        self.sync = mode == "sync"

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.sync:
            return await in_thread(getattr(self.pool, name), *args, **kwargs)
        return await getattr(self.pool, "a" + name)(*args, **kwargs)

    async def expire_connections(self) -> None:
        await self._call("expire_connections")

    async def open(self, wait: bool = True, timeout: float | None = None) -> None:
        await self._call("open", wait=wait, timeout=timeout)

    async def close(self, timeout: float = 5.0) -> None:
        await self._call("close", timeout=timeout)

    @asynccontextmanager
    async def acquire(self, timeout: float | None = None) -> AsyncIterator[ModeConn]:
        async with _entered(self.pool.acquire(timeout), self.sync) as conn:
            yield ModeConn(conn, self.sync)

    async def getconn(self, timeout: float | None = None) -> ModeConn:
        if self.sync:
            return ModeConn(await in_thread(self.pool.getconn, timeout), True)
        return ModeConn(await self.pool.agetconn(timeout), False)

    async def release(self, conn: ModeConn) -> None:
        if self.sync:
            await in_thread(self.pool.release, conn.conn)
        else:
            await self.pool.arelease(conn.conn)  # type: ignore[arg-type]

    @asynccontextmanager
    async def transaction(self, **kwargs: Any) -> AsyncIterator[ModeConn]:
        async with _entered(self.pool.transaction(**kwargs), self.sync) as conn:
            yield ModeConn(conn, self.sync)

    def stats(self) -> unipool.PoolStats:
        return self.pool.stats()


@asynccontextmanager
async def open_pool(
    mode: str, dsn: str | None, backend: str, *, wait: bool = True, **options: Any
) -> AsyncIterator[ModePool]:
    """A pool opened in ``mode``; closed (and checked for leftovers) on exit."""
    pool = unipool.connect(dsn, backend=backend, **options)
    if mode == "sync":
        await in_thread(pool.open, wait=wait)
        try:
            yield ModePool(pool, mode)
        finally:
            await in_thread(pool.close)
    else:
        async with anyio.create_task_group() as tg:
            await pool.aopen(wait=wait, task_group=tg)
            try:
                yield ModePool(pool, mode)
            finally:
                with anyio.CancelScope(shield=True):
                    await pool.aclose()
                tg.cancel_scope.cancel()
    assert pool.get_size() == 0, f"connections left after close: {pool.stats()}"
