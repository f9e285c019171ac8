"""The context managers a pool hands out, each usable with ``with`` or ``async with``."""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._connection import AsyncConnection, AsyncTransaction, Connection, Transaction

if TYPE_CHECKING:
    from ._facades.async_ import AsyncFace
    from ._facades.blocking import BlockingFace
    from ._pool import Pool


class AcquireContext:
    """``pool.acquire()``: ``with`` gives a Connection, ``async with`` an AsyncConnection.

    ``conn = await pool.acquire()`` also works; give it back with
    ``await pool.arelease(conn)``.
    """

    __slots__ = ("_async_conn", "_conn", "_pool", "_timeout")

    def __init__(self, pool: Pool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Connection | None = None
        self._async_conn: AsyncConnection | None = None

    def __enter__(self) -> Connection:
        self._conn = self._pool.getconn(self._timeout)
        return self._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        face: BlockingFace = conn._face
        if conn._face is self._pool._face:  # the face that lent it, still the pool's: straight back
            face.release(conn, exc)
        else:
            self._pool._release(conn, exc)

    async def __aenter__(self) -> AsyncConnection:
        pool = self._pool  # what agetconn does, without its own coroutine in between
        face = pool._serving() or await pool._aface()
        timeout = pool._options.acquire_timeout if self._timeout is None else self._timeout
        self._async_conn = await face.getconn(timeout)
        return self._async_conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._async_conn = self._async_conn, None
        if conn is None:
            return
        face: AsyncFace = conn._face
        if conn._face is self._pool._face:  # the face that lent it, on this loop (the same block)
            rest = face.give_back(conn, exc)  # no coroutine unless there is more to do
            if rest is not None:
                await rest
        else:
            await self._pool._arelease(conn, exc)

    def __await__(self) -> Generator[Any, None, AsyncConnection]:
        return self._pool.agetconn(self._timeout).__await__()


class PoolTransaction:
    """``pool.transaction()``: acquire (with ``acquire``, an :class:`AcquireContext` or one
    like it), open a transaction, commit or roll back, release."""

    __slots__ = ("_acquire", "_args", "_async_tx", "_tx")

    def __init__(
        self, acquire: Any, isolation: str | None, readonly: bool, deferrable: bool
    ) -> None:
        self._acquire = acquire
        self._args = (isolation, readonly, deferrable)
        self._tx: Transaction | None = None
        self._async_tx: AsyncTransaction | None = None

    def __enter__(self) -> Connection:
        conn = self._acquire.__enter__()
        try:
            self._tx = conn.transaction(*self._args)
            return self._tx.__enter__()
        except BaseException as exc:
            self._acquire.__exit__(type(exc), exc, exc.__traceback__)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            assert self._tx is not None
            self._tx.__exit__(exc_type, exc, tb)
        finally:
            self._acquire.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> AsyncConnection:
        conn = await self._acquire.__aenter__()
        try:
            self._async_tx = conn.transaction(*self._args)
            return await self._async_tx.__aenter__()
        except BaseException as exc:
            await self._acquire.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            assert self._async_tx is not None
            await self._async_tx.__aexit__(exc_type, exc, tb)
        finally:
            await self._acquire.__aexit__(exc_type, exc, tb)
