"""The asyncpg backend.

On asyncio the connections live on the caller's loop. Blocking code and trio
reach them through one shared asyncio loop thread (``_bridge.shared_loop``),
with a lean cross-thread wake-up; a caller that gives up cancels the work on
the loop thread and waits for it, so the connection is left usable or known
broken.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import select
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from .._dsn import parse_dsn, scrub
from .._errors import (
    CommandTimeout,
    ConnectError,
    ConnectionLost,
    DataError,
    Error,
    InterfaceError,
    lost_sqlstate,
    make_database_error,
)
from .._record import Record, column_index
from .._sql import RESET_SESSION
from ._bridged import AsyncBridge, SyncBridge
from .base import ConnectParams, CopyTarget, Runtime

_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def _map_error(exc: BaseException, conn: asyncpg.Connection) -> Error:
    """The unipool exception for an asyncpg error raised while using ``conn``."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate
        if sqlstate and (sqlstate[:2] == "08" or sqlstate in _LOST_SQLSTATES):
            return ConnectionLost(str(exc), sqlstate=lost_sqlstate(str(exc), sqlstate))
        return make_database_error(
            sqlstate, exc.message or str(exc), detail=exc.detail, hint=exc.hint
        )
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return CommandTimeout("the statement exceeded command_timeout and was cancelled")
    if conn.is_closed() or isinstance(exc, OSError):
        message = str(exc) or type(exc).__name__
        return ConnectionLost(message, sqlstate=lost_sqlstate(message, "08006"))
    if isinstance(exc, asyncpg.DataError):
        return DataError(str(exc))
    return InterfaceError(str(exc))


_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)


def _records(rows: list[asyncpg.Record]) -> list[Record]:
    if not rows:
        return []
    names = column_index(list(rows[0].keys()))
    return [Record(tuple(row), names) for row in rows]


def _poller(raw: asyncpg.Connection) -> select.poll | None:
    """A poller on the connection's socket, if asyncpg lets us find it (private API)."""
    transport = getattr(raw, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return None
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return poller


class AsyncpgConn:
    """An asyncpg connection behind the uniform interface (on its own loop)."""

    __slots__ = ("_poller", "raw")

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw
        self._poller = _poller(raw)

    async def execute(self, sql: str, args: Sequence[Any]) -> str:
        try:
            return await self.raw.execute(sql, *args)  # type: ignore[no-any-return]
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        try:
            await self.raw.executemany(sql, args_seq)
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]:
        try:
            rows = await self.raw.fetch(sql, *args)
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc
        return _records(rows)

    async def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None:
        try:
            row = await self.raw.fetchrow(sql, *args)
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc
        return None if row is None else _records([row])[0]

    async def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any:
        try:
            return await self.raw.fetchval(sql, *args, column=column)
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc

    async def copy_records(self, target: CopyTarget, records: Any) -> str:
        table, schema_name, columns = target
        try:
            return await self.raw.copy_records_to_table(  # type: ignore[no-any-return]
                table, records=records, columns=columns, schema_name=schema_name
            )
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc

    async def copy_in(self, target: CopyTarget, source: Any, options: dict[str, Any]) -> str:
        table, schema_name, columns = target
        try:
            return await self.raw.copy_to_table(  # type: ignore[no-any-return]
                table, source=source, columns=columns, schema_name=schema_name, **options
            )
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc

    async def copy_out(self, target: CopyTarget, output: Any, options: dict[str, Any]) -> str:
        table, schema_name, columns = target
        try:
            return await self.raw.copy_from_table(  # type: ignore[no-any-return]
                table, output=output, columns=columns, schema_name=schema_name, **options
            )
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc

    def alive(self) -> bool:
        """Not closed, and nothing waiting unread (EOF or an error from a killed backend)."""
        if self.raw.is_closed():
            return False
        return self._poller is None or not self._poller.poll(0)

    def is_clean(self) -> bool:
        raw = self.raw
        return not raw.is_closed() and not raw.is_in_transaction()

    async def ping(self) -> None:
        await self.execute("SELECT 1", ())

    async def reset(self, dirty: bool) -> bool:
        raw = self.raw
        if raw.is_closed():
            return False
        if raw.is_in_transaction():
            statement = "ROLLBACK; " + RESET_SESSION if dirty else "ROLLBACK"
        elif dirty:
            statement = RESET_SESSION
        else:
            return True
        await self.execute(statement, ())
        return not raw.is_in_transaction()

    async def close(self) -> None:
        await self.raw.close(timeout=5)

    def terminate(self) -> None:
        self.raw.terminate()

    def fileno(self) -> int | None:
        transport = getattr(self.raw, "_transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        return None if sock is None else int(sock.fileno())


def _connect_error(exc: BaseException, params: ConnectParams) -> ConnectError:
    message = scrub(str(exc) or type(exc).__name__, params.secrets)
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None and isinstance(exc, OSError):
        sqlstate = "08001"
    return ConnectError(message, sqlstate=sqlstate)


def _asyncpg_dsn(dsn: str | None) -> str:
    """A URI asyncpg understands: ``load_balance_hosts=random`` is done here (asyncpg lacks it)."""
    info = parse_dsn(dsn)
    balance = info.params.get("load_balance_hosts")
    if balance is None:
        return info.to_uri()
    if balance not in ("disable", "random"):
        raise ConnectError(f"load_balance_hosts must be 'disable' or 'random', not {balance!r}")
    hosts = list(info.hosts)
    if balance == "random":
        random.shuffle(hosts)
    rest = {k: v for k, v in info.params.items() if k != "load_balance_hosts"}
    return dataclasses.replace(info, hosts=tuple(hosts), params=rest).to_uri()


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + json.dumps(value).encode()


def _jsonb_decode(data: bytes) -> Any:
    return json.loads(data[1:])


def _json_encode(value: Any) -> bytes:
    return json.dumps(value).encode()


#: Binary codecs (COPY of records is binary in asyncpg); jsonb carries a version byte.
_JSON_CODECS: dict[str, tuple[Any, Any]] = {
    "json": (_json_encode, json.loads),
    "jsonb": (_jsonb_encode, _jsonb_decode),
}


async def _connect(params: ConnectParams) -> AsyncpgConn:
    kwargs = dict(params.kwargs)
    if params.command_timeout is not None:
        kwargs.setdefault("command_timeout", params.command_timeout)
    if params.connect_timeout is not None:
        kwargs.setdefault("timeout", params.connect_timeout)
    dsn = _asyncpg_dsn(params.dsn)
    try:
        raw = await (params.factory or asyncpg.connect)(dsn, **kwargs)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError) as exc:
        raise _connect_error(exc, params) from exc
    try:
        for name, (encoder, decoder) in _JSON_CODECS.items():
            await raw.set_type_codec(
                name, encoder=encoder, decoder=decoder, schema="pg_catalog", format="binary"
            )
    except BaseException:
        raw.terminate()
        raise
    return AsyncpgConn(raw)


class AsyncpgBackend:
    """asyncpg: native on asyncio; through a shared loop thread elsewhere."""

    name = "asyncpg"

    def connect_sync(self, params: ConnectParams) -> SyncBridge:
        from ._bridge import shared_loop

        loop = shared_loop()
        conn: AsyncpgConn = loop.call(_connect, params)
        return SyncBridge(conn, loop.call, _killer(loop.loop, conn))

    async def connect_async(self, params: ConnectParams, runtime: Runtime) -> Any:
        if runtime == "asyncio":
            return await _connect(params)
        from ._bridge import shared_loop

        loop = shared_loop()
        conn: AsyncpgConn = await loop.acall(_connect, params)
        return AsyncBridge(conn, loop.acall, _killer(loop.loop, conn))


def _killer(loop: asyncio.AbstractEventLoop, conn: AsyncpgConn) -> Any:
    def kill() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(conn.terminate)

    return kill


BACKEND = AsyncpgBackend()
