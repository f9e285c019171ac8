"""The psycopg 3 backend.

Blocking code gets psycopg's own ``Connection``; asyncio its ``AsyncConnection``;
trio a :class:`~unipool.backends._psycopg_trio.TrioConnection`, which drives
psycopg's protocol generators with trio's socket waits (no thread hop).
Every connection is in autocommit mode with a raw cursor, so parameters are
PostgreSQL's own ``$1, $2, ...`` and ``BEGIN`` is explicit.
"""

from __future__ import annotations

import math
import os
import re
import select
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import timezone
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
from psycopg import pq, waiting
from psycopg.adapt import Loader
from psycopg.types.datetime import TimestamptzBinaryLoader, TimestamptzLoader
from psycopg.types.json import Jsonb, JsonbDumper

from .._dsn import ConnInfo, parse_dsn, scrub, tcp_options
from .._errors import (
    CommandTimeout,
    ConnectError,
    ConnectionLost,
    DataError,
    Error,
    InterfaceError,
    NotSupportedError,
    ProgrammingError,
    lost_sqlstate,
    make_database_error,
)
from .._record import Record, column_index
from .._sql import copy_statement, reset_statement
from ._asyncio_waiting import Parked, wait_gen
from ._copyio import achunks, chunks, sink
from ._psycopg_cancel import cancel_before_cut
from ._session import (
    CANCEL_WAIT,
    connect_failed,
    is_lost,
    options_with,
    refusal_sqlstate,
    refused_client_check,
    startup_settings,
    tls_failed,
)
from .base import POOL_CALL, ConnectParams, CopyTarget, Runtime

if TYPE_CHECKING:
    from psycopg.abc import RV, PQGen

_IDLE = pq.TransactionStatus.IDLE
_OK = pq.ConnStatus.OK
_IN_TRANSACTION = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)
_BY_CLASS: tuple[tuple[type[psycopg.Error], type[Error]], ...] = (
    (psycopg.DataError, DataError),
    (psycopg.NotSupportedError, NotSupportedError),
    (psycopg.ProgrammingError, ProgrammingError),
)

_ACTIVE = pq.TransactionStatus.ACTIVE


class AsyncioConnection(psycopg.AsyncConnection[Any]):
    """psycopg's asyncio connection, with a cancellation that cannot be interrupted.

    psycopg cancels a running query on the server when its task is
    cancelled, but anyio cancels again at every await of a cancelled scope,
    which interrupts that cleanup: psycopg then drops the connection and the
    query keeps running on the server. Here the cleanup runs shielded
    (bounded by ``CANCEL_WAIT``), so the query is cancelled and the
    connection stays usable; past the bound it is dropped.

    Its waits are `_asyncio_waiting`'s (no timer per wait): closing it, or
    cutting it (`_finish`), wakes a task waiting on its socket.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parked = Parked()

    async def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        try:
            if timeout is None:
                return await wait_gen(gen, self.pgconn.socket, self._parked)
            return await waiting.wait_async(gen, self.pgconn.socket, interval, timeout)
        except BaseException as exc:
            if not isinstance(exc, Exception) and self.pgconn.transaction_status == _ACTIVE:
                if POOL_CALL.get():  # the pool's own call: drop, no cancel request
                    self.pgconn.finish()
                else:
                    await self._cancel_running(gen, interval)
            raise

    async def _cancel_running(self, gen: PQGen[Any], interval: float) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_WAIT) as scope:
            try:
                await self.cancel_safe(timeout=CANCEL_WAIT)
                await waiting.wait_async(gen, self.pgconn.socket, interval, CANCEL_WAIT)
            except psycopg.errors.QueryCanceled:
                return
            except Exception:
                self.pgconn.finish()
        if scope.cancelled_caught:
            self.pgconn.finish()

    async def close(self) -> None:
        self._parked.wake()  # first: the socket's number may be reused once it closes
        await super().close()

    def _finish(self) -> None:
        """Cut the connection now (no goodbye), waking a task waiting on it."""
        self._parked.wake()
        self.pgconn.finish()


class _JsonbDictDumper(JsonbDumper):
    """Sends a ``dict`` as jsonb, like the other backends."""

    def dump(self, obj: Any) -> Any:
        return super().dump(Jsonb(obj))


class _UtcTimestamptzLoader(TimestamptzLoader):
    """timestamptz in UTC, like the other backends (psycopg uses the session time zone)."""

    def load(self, data: Any) -> Any:
        return super().load(data).astimezone(timezone.utc)


class _UtcTimestamptzBinaryLoader(TimestamptzBinaryLoader):
    """timestamptz in UTC, binary format."""

    def load(self, data: Any) -> Any:
        return super().load(data).astimezone(timezone.utc)


_VOID_OID = 2278  # not in psycopg's type registry


class _VoidLoader(Loader):
    """``void`` (``select pg_sleep(1)``) as None, like the other backends (psycopg gives '')."""

    def load(self, data: Any) -> None:
        return None


#: Connections whose pool set ``command_timeout`` (enforced as ``statement_timeout``):
#: a statement timeout there is a CommandTimeout; elsewhere a plain QueryCanceled.
_TIMED: weakref.WeakSet[psycopg.BaseConnection[Any]] = weakref.WeakSet()


def _map_error(exc: psycopg.Error, conn: psycopg.BaseConnection[Any]) -> Error:
    """The unipool exception for a psycopg error raised while using ``conn``."""
    sqlstate = exc.sqlstate
    message = str(exc)
    if is_lost(sqlstate) or conn.broken or conn.closed:
        return ConnectionLost(message, sqlstate=lost_sqlstate(message, sqlstate or "08006"))
    if sqlstate is not None:
        diag = exc.diag
        primary = diag.message_primary or message
        if sqlstate == "57014" and "statement timeout" in primary and conn in _TIMED:
            return CommandTimeout(primary, sqlstate=sqlstate)
        return make_database_error(
            sqlstate, primary, detail=diag.message_detail, hint=diag.message_hint
        )
    for psycopg_class, unipool_class in _BY_CLASS:
        if isinstance(exc, psycopg_class):
            return unipool_class(message)
    return InterfaceError(message)


def _connect_error(exc: BaseException, params: ConnectParams) -> ConnectError:
    message = scrub(str(exc), params.secrets)
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None and "FATAL:" in message:  # the server's refusal
        sqlstate = refusal_sqlstate(message)
    elif sqlstate is None:  # no server answer: refused, unreachable, timed out, TLS failed
        sqlstate = "08001"
    return connect_failed(message, params, sqlstate, tls=tls_failed(message))


def _connect_kwargs(params: ConnectParams) -> dict[str, Any]:
    kwargs = dict(params.kwargs)
    kwargs.pop("server_settings", None)
    settings, application_name = startup_settings(params)
    if params.pgbouncer:
        # Behind PgBouncer a prepared statement lives on one server connection of its pool
        # and the next statement may go to another: psycopg must not prepare.
        kwargs.setdefault("prepare_threshold", None)
    if application_name is not None:
        kwargs.setdefault("application_name", application_name)
    if settings or "options" in kwargs:
        kwargs["options"] = options_with(kwargs.get("options", ""), settings)
    if params.connect_timeout is not None:
        kwargs.setdefault("connect_timeout", max(2, math.ceil(params.connect_timeout)))
    # libpq applies the TCP parameters; unipool's defaults fill what the DSN leaves out.
    tcp = tcp_options(_dsn_params(params.dsn), kwargs)
    kwargs.update(tcp.as_libpq())
    kwargs["autocommit"] = True
    return kwargs


def _dsn_params(dsn: str | None) -> Mapping[str, str]:
    try:
        return parse_dsn(dsn).params
    except ValueError:  # libpq reports it
        return {}


_BAD_OPTION = re.compile(
    r'invalid (?:connection|URI query) (?:option|parameter):? "([A-Za-z_.0-9]+)"'
)


def _check_dsn(info: ConnInfo) -> None:
    """Refuse what libpq would refuse at every connection attempt: unknown parameters."""
    try:
        pq.Conninfo.parse(info.to_conninfo().encode())
    except psycopg.Error as exc:
        found = _BAD_OPTION.search(str(exc))
        what = f" {found.group(1)!r}" if found else ""
        raise ValueError(
            f"invalid DSN: libpq (psycopg) does not know the parameter{what}"
        ) from None


def _records(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any], rows: list[Any]) -> list[Record]:
    names = column_index([c.name for c in cur.description or ()])
    return [Record(row, names) for row in rows]


def _configure(raw: psycopg.BaseConnection[Any], params: ConnectParams) -> None:
    if params.command_timeout is not None:
        _TIMED.add(raw)
    adapters = raw.adapters
    adapters.register_dumper(dict, _JsonbDictDumper)
    adapters.register_loader("timestamptz", _UtcTimestamptzLoader)
    adapters.register_loader("timestamptz", _UtcTimestamptzBinaryLoader)
    adapters.register_loader(_VOID_OID, _VoidLoader)


def _reset_statement(status: int, dirty: bool) -> str | None:
    """What the release reset must send, ``""`` if nothing; None if not reusable."""
    if status != _IDLE and status not in _IN_TRANSACTION:
        return None
    return reset_statement(status != _IDLE, dirty)


def _fileno(raw: psycopg.BaseConnection[Any]) -> int | None:
    try:
        return raw.pgconn.socket
    except psycopg.OperationalError:
        return None


class _Liveness:
    """A no-I/O liveness probe: an idle connection's socket should have nothing to read."""

    __slots__ = ("_poller",)

    def __init__(self, raw: psycopg.BaseConnection[Any]) -> None:
        self._poller = select.poll()
        self._poller.register(raw.pgconn.socket, select.POLLIN)

    def quiet(self) -> bool:
        return not self._poller.poll(0)


class SyncPsycopgConn:
    """A blocking psycopg connection behind the uniform interface."""

    __slots__ = ("_bouncer", "_cur", "_live", "_owner", "raw")

    def __init__(self, raw: psycopg.Connection[Any], bouncer: bool = False) -> None:
        """``bouncer``: behind PgBouncer (a cut delivers its cancel request first)."""
        self.raw = raw
        self._cur = raw.cursor()
        self._live = _Liveness(raw)
        self._owner = os.getpid()
        self._bouncer = bouncer

    def execute(self, sql: str, args: Sequence[Any]) -> str:
        cur = self._cur
        try:
            cur.execute(sql, args or None)
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return cur.statusmessage or ""

    def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        try:
            self._cur.executemany(sql, args_seq)
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc

    def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]:
        cur = self._cur
        try:
            cur.execute(sql, args or None)
            rows = cur.fetchall()
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return _records(cur, rows)

    def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None:
        cur = self._cur
        try:
            cur.execute(sql, args or None)
            row = cur.fetchone()
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return None if row is None else _records(cur, [row])[0]

    def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any:
        cur = self._cur
        try:
            cur.execute(sql, args or None)
            row = cur.fetchone()
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return None if row is None else row[column]

    def copy_records(self, target: CopyTarget, records: Iterable[Sequence[Any]]) -> str:
        try:
            with self._cur.copy(copy_statement(*target, "FROM STDIN", {})) as copy:
                for record in records:
                    copy.write_row(record)
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return self._cur.statusmessage or ""

    def copy_in(self, target: CopyTarget, source: Any, options: dict[str, Any]) -> str:
        try:
            with self._cur.copy(copy_statement(*target, "FROM STDIN", options)) as copy:
                for chunk in chunks(source):
                    copy.write(chunk)
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return self._cur.statusmessage or ""

    def copy_out(self, target: CopyTarget, output: Any, options: dict[str, Any]) -> str:
        try:
            with (
                sink(output) as out,
                self._cur.copy(copy_statement(*target, "TO STDOUT", options)) as copy,
            ):
                for data in copy:
                    out.write(data)
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return f"COPY {self._cur.rowcount}"

    def alive(self) -> bool:
        return self.raw.pgconn.status == _OK and self._live.quiet()  # OK: neither closed nor broken

    def is_clean(self) -> bool:
        return self.raw.pgconn.transaction_status == _IDLE

    def ping(self) -> None:
        self.execute("", ())

    def reset(self, dirty: bool) -> bool:
        statement = _reset_statement(self.raw.pgconn.transaction_status, dirty)
        if statement:
            try:
                self._cur.execute(statement, prepare=False)
            except psycopg.Error as exc:
                raise _map_error(exc, self.raw) from exc
            return self.raw.pgconn.transaction_status == _IDLE
        return statement is not None

    def close(self) -> None:
        self.raw.close()

    def terminate(self) -> None:
        try:
            cancel_before_cut(self.raw.pgconn, self._owner, deliver=self._bouncer)
        finally:
            self.raw.close()

    def fileno(self) -> int | None:
        return _fileno(self.raw)


class AsyncPsycopgConn:
    """An async psycopg connection (asyncio or trio) behind the uniform interface."""

    __slots__ = ("_bouncer", "_cur", "_live", "_owner", "raw")

    def __init__(self, raw: psycopg.AsyncConnection[Any], bouncer: bool = False) -> None:
        """``bouncer``: behind PgBouncer (a cut delivers its cancel request first)."""
        self.raw = raw
        self._cur = raw.cursor()
        self._live = _Liveness(raw)
        self._owner = os.getpid()
        self._bouncer = bouncer

    async def execute(self, sql: str, args: Sequence[Any]) -> str:
        cur = self._cur
        try:
            await cur.execute(sql, args or None)
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return cur.statusmessage or ""

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        try:
            await self._cur.executemany(sql, args_seq)
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]:
        cur = self._cur
        try:
            await cur.execute(sql, args or None)
            rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return _records(cur, rows)

    async def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None:
        cur = self._cur
        try:
            await cur.execute(sql, args or None)
            row = await cur.fetchone()
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return None if row is None else _records(cur, [row])[0]

    async def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any:
        cur = self._cur
        try:
            await cur.execute(sql, args or None)
            row = await cur.fetchone()
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return None if row is None else row[column]

    async def copy_records(self, target: CopyTarget, records: Any) -> str:
        try:
            async with self._cur.copy(copy_statement(*target, "FROM STDIN", {})) as copy:
                if hasattr(records, "__aiter__"):
                    async for record in records:
                        await copy.write_row(record)
                else:
                    for record in records:
                        await copy.write_row(record)
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return self._cur.statusmessage or ""

    async def copy_in(self, target: CopyTarget, source: Any, options: dict[str, Any]) -> str:
        try:
            async with self._cur.copy(copy_statement(*target, "FROM STDIN", options)) as copy:
                async for chunk in achunks(source):
                    await copy.write(chunk)
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return self._cur.statusmessage or ""

    async def copy_out(self, target: CopyTarget, output: Any, options: dict[str, Any]) -> str:
        try:
            with sink(output) as out:
                async with self._cur.copy(copy_statement(*target, "TO STDOUT", options)) as copy:
                    async for data in copy:
                        out.write(data)
        except psycopg.Error as exc:
            raise _map_error(exc, self.raw) from exc
        return f"COPY {self._cur.rowcount}"

    def alive(self) -> bool:
        return self.raw.pgconn.status == _OK and self._live.quiet()  # OK: neither closed nor broken

    def is_clean(self) -> bool:
        return self.raw.pgconn.transaction_status == _IDLE

    async def ping(self) -> None:
        await self.execute("", ())

    async def reset(self, dirty: bool) -> bool:
        statement = _reset_statement(self.raw.pgconn.transaction_status, dirty)
        if statement:
            try:
                await self._cur.execute(statement, prepare=False)
            except psycopg.Error as exc:
                raise _map_error(exc, self.raw) from exc
            return self.raw.pgconn.transaction_status == _IDLE
        return statement is not None

    async def close(self) -> None:
        await self.raw.close()

    def terminate(self) -> None:
        try:
            cancel_before_cut(self.raw.pgconn, self._owner, deliver=self._bouncer)
        finally:
            finish = getattr(self.raw, "_finish", None)  # wakes a task waiting on the socket
            if finish is not None:
                finish()
            else:
                self.raw.pgconn.finish()

    def fileno(self) -> int | None:
        return _fileno(self.raw)


class PsycopgBackend:
    """psycopg 3: native in blocking code and on asyncio; protocol-driven on trio."""

    name = "psycopg"

    def check_dsn(self, info: ConnInfo) -> None:
        """Raise ValueError for a DSN libpq would refuse."""
        _check_dsn(info)

    def connect_sync(self, params: ConnectParams) -> SyncPsycopgConn:
        connect = params.factory or psycopg.Connection.connect
        try:
            try:
                raw = connect(params.dsn or "", **_connect_kwargs(params))
            except psycopg.Error as exc:
                if not refused_client_check(params, exc):
                    raise
                raw = connect(params.dsn or "", **_connect_kwargs(params))
            if not raw.autocommit:
                raw.autocommit = True
        except psycopg.Error as exc:
            raise _connect_error(exc, params) from exc
        raw.cursor_factory = psycopg.RawCursor
        _configure(raw, params)
        return SyncPsycopgConn(raw, params.pgbouncer)

    async def connect_async(self, params: ConnectParams, runtime: Runtime) -> AsyncPsycopgConn:
        if runtime == "trio":
            from ._psycopg_trio import TrioConnection

            cls: type[psycopg.AsyncConnection[Any]] = TrioConnection
        else:
            cls = AsyncioConnection
        connect = params.factory or cls.connect
        try:
            try:
                raw = await connect(params.dsn or "", **_connect_kwargs(params))
            except psycopg.Error as exc:
                if not refused_client_check(params, exc):
                    raise
                raw = await connect(params.dsn or "", **_connect_kwargs(params))
            if not raw.autocommit:
                await raw.set_autocommit(True)
        except psycopg.Error as exc:
            raise _connect_error(exc, params) from exc
        raw.cursor_factory = psycopg.AsyncRawCursor
        _configure(raw, params)
        return AsyncPsycopgConn(raw, params.pgbouncer)


BACKEND = PsycopgBackend()
