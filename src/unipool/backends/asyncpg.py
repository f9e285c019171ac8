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
import os
import random
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio
import asyncpg

from .._dsn import (
    TCP_PARAMS,
    ConnInfo,
    TcpOptions,
    parse_dsn,
    scrub,
    system_ca_file,
    tcp_options,
)
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
from .._sql import reset_statement
from ._asyncpg_cancel import cancel_before_cut, spare_cancel_requests
from ._bridged import AsyncBridge, SyncBridge
from ._quiet import quiet_probe
from ._session import (
    CANCEL_WAIT,
    born_here,
    connect_failed,
    is_lost,
    log_unsent,
    refused_client_check,
    with_client_check,
)
from .base import POOL_CALL, ConnectParams, CopyTarget, Runtime


def _map_error(exc: BaseException, conn: asyncpg.Connection) -> Error:
    """The unipool exception for an asyncpg error raised while using ``conn``."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate
        if is_lost(sqlstate):
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


def _socket(raw: asyncpg.Connection) -> Any:
    """The connection's socket, if asyncpg lets us find it (private API)."""
    transport = getattr(raw, "_transport", None)
    return None if transport is None else transport.get_extra_info("socket")


def _quiet_probe(raw: asyncpg.Connection) -> Callable[[], bool] | None:
    """Whether the connection's socket has nothing to read, if the socket can be found
    (`quiet_probe`: it keeps the GIL, which the loop thread would otherwise take)."""
    sock = _socket(raw)
    return None if sock is None else quiet_probe(sock.fileno())


class AsyncpgConn:
    """An asyncpg connection behind the uniform interface (on its own loop)."""

    __slots__ = ("_bouncer", "_busy", "_owner", "_quiet", "raw")

    def __init__(self, raw: asyncpg.Connection, bouncer: bool = False) -> None:
        """``bouncer``: behind PgBouncer (a cut delivers its cancel request first)."""
        self.raw = raw
        self._bouncer = bouncer
        self._quiet = _quiet_probe(raw)
        self._owner = os.getpid()
        #: calls in flight (a query may be running on the server); a second one asyncpg
        #: refuses while the first runs comes and goes
        self._busy = 0

    async def _interrupted(self) -> None:
        """A call was cancelled: asyncpg cancels its query on the server in a task of its
        own, and the connection waits for that. A user's call gets `CANCEL_WAIT` for it
        (shielded), then the connection is dropped; the pool's own call is dropped by the
        pool (private API: asyncpg's ``_cancellations``; nothing is waited for without it).
        """
        if POOL_CALL.get():
            return
        pending: set[asyncio.Task[Any]] = set()
        with anyio.move_on_after(CANCEL_WAIT, shield=True):
            await asyncio.sleep(0)  # the cancelled waiter's callback starts asyncpg's cancel
            pending.update(getattr(self.raw, "_cancellations", ()))
            if pending:
                await asyncio.wait(pending)
        if any(not task.done() for task in pending):
            self.terminate()

    async def execute(self, sql: str, args: Sequence[Any]) -> str:
        self._busy += 1
        try:
            return await self.raw.execute(sql, *args)  # type: ignore[no-any-return]
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc
        except asyncio.CancelledError:
            await self._interrupted()
            raise
        finally:
            self._busy -= 1

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        self._busy += 1
        try:
            await self.raw.executemany(sql, args_seq)
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc
        except asyncio.CancelledError:
            await self._interrupted()
            raise
        finally:
            self._busy -= 1

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]:
        self._busy += 1
        try:
            rows = await self.raw.fetch(sql, *args)
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc
        except asyncio.CancelledError:
            await self._interrupted()
            raise
        finally:
            self._busy -= 1
        return _records(rows)

    async def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None:
        self._busy += 1
        try:
            row = await self.raw.fetchrow(sql, *args)
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc
        except asyncio.CancelledError:
            await self._interrupted()
            raise
        finally:
            self._busy -= 1
        return None if row is None else _records([row])[0]

    async def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any:
        self._busy += 1
        try:
            return await self.raw.fetchval(sql, *args, column=column)
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc
        except asyncio.CancelledError:
            await self._interrupted()
            raise
        finally:
            self._busy -= 1

    async def copy_records(self, target: CopyTarget, records: Any) -> str:
        table, schema_name, columns = target
        self._busy += 1
        try:
            return await self.raw.copy_records_to_table(  # type: ignore[no-any-return]
                table, records=records, columns=columns, schema_name=schema_name
            )
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc
        except asyncio.CancelledError:
            await self._interrupted()
            raise
        finally:
            self._busy -= 1

    async def copy_in(self, target: CopyTarget, source: Any, options: dict[str, Any]) -> str:
        table, schema_name, columns = target
        self._busy += 1
        try:
            return await self.raw.copy_to_table(  # type: ignore[no-any-return]
                table, source=source, columns=columns, schema_name=schema_name, **options
            )
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc
        except asyncio.CancelledError:
            await self._interrupted()
            raise
        finally:
            self._busy -= 1

    async def copy_out(self, target: CopyTarget, output: Any, options: dict[str, Any]) -> str:
        table, schema_name, columns = target
        self._busy += 1
        try:
            return await self.raw.copy_from_table(  # type: ignore[no-any-return]
                table, output=output, columns=columns, schema_name=schema_name, **options
            )
        except _ERRORS as exc:
            raise _map_error(exc, self.raw) from exc
        except asyncio.CancelledError:
            await self._interrupted()
            raise
        finally:
            self._busy -= 1

    def alive(self) -> bool:
        """Not closed, and nothing waiting unread (EOF or an error from a killed backend)."""
        if self.raw.is_closed():
            return False
        return self._quiet is None or self._quiet()

    def is_clean(self) -> bool:
        raw = self.raw
        return not raw.is_closed() and not raw.is_in_transaction()

    async def ping(self) -> None:
        await self.execute("SELECT 1", ())

    async def reset(self, dirty: bool) -> bool:
        raw = self.raw
        if raw.is_closed():
            return False
        statement = reset_statement(raw.is_in_transaction(), dirty)
        if not statement:
            return True
        await self.execute(statement, ())
        return not raw.is_in_transaction()

    async def close(self) -> None:
        await self.raw.close(timeout=5)

    def terminate(self) -> None:
        if self._busy and born_here(self._owner):
            try:
                cancel_before_cut(self.raw, self._cut if self._bouncer else None)
            except Exception as exc:  # the cut goes on
                log_unsent(exc)
            else:
                if self._bouncer:
                    return  # cut once the request is delivered
        self._cut()

    def _cut(self) -> None:
        spare_cancel_requests(self.raw)
        try:
            self.raw.terminate()
        except RuntimeError:  # its event loop is closed: close the socket here (private API)
            transport = getattr(self.raw, "_transport", None)
            sock = getattr(transport, "_sock", None)
            if sock is not None:
                sock.close()
                transport._sock = None  # type: ignore[union-attr]  # closed: no warning later

    def fileno(self) -> int | None:
        sock = _socket(self.raw)
        return None if sock is None else int(sock.fileno())


#: TLS errors that tell of a connection cut short rather than of a refused handshake.
_TLS_CUT = (ssl.SSLEOFError, ssl.SSLSyscallError, ssl.SSLZeroReturnError)


def _tls_failed(exc: BaseException) -> bool:
    """Whether a connect error is a TLS failure, which no retry can cure."""
    if isinstance(exc, ssl.SSLError):  # certificate not trusted, host name not in it, ...
        return not isinstance(exc, _TLS_CUT)
    return isinstance(exc, ConnectionError) and "rejected SSL upgrade" in str(exc)


def _connect_error(exc: BaseException, params: ConnectParams) -> ConnectError:
    message = str(exc)
    if isinstance(exc, TimeoutError):  # asyncio's carries no message
        message = (
            f"timeout expired while connecting ({params.connect_timeout:g} s)"
            if params.connect_timeout is not None
            else "timeout expired while connecting"
        )
    elif (
        isinstance(exc, OSError)
        and not isinstance(exc, ssl.SSLError)  # its errno is OpenSSL's, not the system's
        and exc.errno
        and os.strerror(exc.errno) not in message
    ):
        message = f"{os.strerror(exc.errno)}: {message}"  # "Connect call failed" says not why
    message = scrub(message or type(exc).__name__, params.secrets)
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None or (sqlstate[:2] == "08" and getattr(exc, "severity", None) is None):
        # No server answer (refused, unreachable, timed out, hung up, TLS failed); asyncpg
        # calls a hang-up 08003, libpq and psqlpy say nothing: 08001 for all.
        sqlstate = "08001"
    return connect_failed(message, params, sqlstate, tls=_tls_failed(exc))


#: libpq parameters asyncpg does not know, and would send to the server as settings: the
#: adapter applies these itself, ...
_APPLIED = frozenset({*TCP_PARAMS, "connect_timeout", "load_balance_hosts"})
#: ... drops these (values that ask for nothing asyncpg would not do anyway) ...
_MOOT = {
    "gssencmode": ("disable", "prefer", "allow"),
    "channel_binding": ("disable", "prefer"),
    "sslsni": None,
    "sslcompression": None,
    "fallback_application_name": None,
}
#: ... and refuses these, which it cannot honour.
_UNSUPPORTED = frozenset({"hostaddr", "require_auth", "requirepeer", "sslcertmode", "replication"})


def _check_dsn(info: ConnInfo) -> None:
    """Refuse, at ``unipool.connect()``, libpq parameters asyncpg cannot honour."""
    for key, value in info.params.items():
        allowed = _MOOT.get(key, ())
        if key in _UNSUPPORTED or (allowed and value not in allowed):
            shown = f"{key}={value}" if allowed else key
            raise ValueError(f"invalid DSN for the asyncpg backend: it cannot honour {shown!r}")
    balance = info.params.get("load_balance_hosts")
    if balance not in (None, "disable", "random"):
        raise ValueError(
            f"invalid DSN: load_balance_hosts must be 'disable' or 'random', not {balance!r}"
        )


def _asyncpg_dsn(info: ConnInfo) -> str:
    """A URI asyncpg understands: what it lacks is done here (``load_balance_hosts=random``,
    ``fallback_application_name``) or by `_connect` (TCP options, ``connect_timeout``)."""
    params = {k: v for k, v in info.params.items() if k not in _APPLIED and k not in _MOOT}
    if params.get("sslrootcert") == "system":  # libpq's word for the system's authorities
        system = system_ca_file()
        if system is not None:
            params["sslrootcert"] = system
    fallback = info.params.get("fallback_application_name")
    if fallback and "application_name" not in params:
        params["application_name"] = fallback
    hosts = list(info.hosts)
    balance = info.params.get("load_balance_hosts", "disable")
    if balance not in ("disable", "random"):
        raise ConnectError(f"load_balance_hosts must be 'disable' or 'random', not {balance!r}")
    if balance == "random":
        random.shuffle(hosts)
    return dataclasses.replace(info, hosts=tuple(hosts), params=params).to_uri()


def _set_tcp_options(raw: asyncpg.Connection, tcp: TcpOptions) -> None:
    """Set libpq's TCP options on the connection's socket (asyncpg has none of its own).

    The socket is found through asyncpg's private ``_transport``; ``tests/test_keepalive.py``
    reads the options back from the socket, so it fails if that ever stops working.
    """
    sock = _socket(raw)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a unix socket: no TCP options, as with libpq
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(tcp.keepalives))
    if tcp.keepalives:
        idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
        for option, value in (
            (idle, tcp.idle),
            (getattr(socket, "TCP_KEEPINTVL", None), tcp.interval),
            (getattr(socket, "TCP_KEEPCNT", None), tcp.count),
        ):
            if option is not None and value:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None and tcp.user_timeout:
        sock.setsockopt(socket.IPPROTO_TCP, user_timeout, tcp.user_timeout)


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
    try:
        return await _connect_once(params)
    except ConnectError as exc:
        if not refused_client_check(params, exc):
            raise
    return await _connect_once(params)


async def _connect_once(params: ConnectParams) -> AsyncpgConn:
    info = parse_dsn(params.dsn)
    kwargs = {k: v for k, v in params.kwargs.items() if k not in TCP_PARAMS}
    if params.pgbouncer:
        # No named statements: they would stay on one server connection of PgBouncer's
        # pool while the next statement may go to another. Unnamed ones are safe: asyncpg
        # parses, describes (with a Flush, so PgBouncer keeps the server) and executes
        # them in one exchange, and parses again at each execution without a cache.
        kwargs.setdefault("statement_cache_size", 0)
    kwargs["server_settings"] = with_client_check(kwargs.get("server_settings"), params)
    tcp = tcp_options(info.params, params.kwargs)
    if params.command_timeout is not None:
        kwargs.setdefault("command_timeout", params.command_timeout)
    timeout = params.connect_timeout
    if timeout is None and info.params.get("connect_timeout"):
        timeout = int(info.params["connect_timeout"]) or None  # 0 means none, as in libpq
    if timeout is not None:
        kwargs.setdefault("timeout", timeout)
    dsn = _asyncpg_dsn(info)
    try:
        raw = await (params.factory or asyncpg.connect)(dsn, **kwargs)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError) as exc:
        raise _connect_error(exc, params) from exc
    try:
        try:
            _set_tcp_options(raw, tcp)
        except OSError as exc:  # libpq fails the connection too
            raise _connect_error(exc, params) from exc
        for name, (encoder, decoder) in _JSON_CODECS.items():
            await raw.set_type_codec(
                name, encoder=encoder, decoder=decoder, schema="pg_catalog", format="binary"
            )
    except BaseException:
        raw.terminate()
        raise
    return AsyncpgConn(raw, params.pgbouncer)


class AsyncpgBackend:
    """asyncpg: native on asyncio; through a shared loop thread elsewhere."""

    name = "asyncpg"

    def check_dsn(self, info: ConnInfo) -> None:
        """Raise ValueError for DSN parameters asyncpg cannot honour."""
        _check_dsn(info)

    def connect_sync(self, params: ConnectParams) -> SyncBridge:
        from ._bridge import shared_loop

        loop = shared_loop()
        conn: AsyncpgConn = loop.call(_connect, params)
        return SyncBridge(conn, loop, _killer(loop.loop, conn))

    async def connect_async(self, params: ConnectParams, runtime: Runtime) -> Any:
        if runtime == "asyncio":
            return await _connect(params)
        runner = _trio_runner()
        conn: AsyncpgConn = await runner.acall(_connect, params)
        return AsyncBridge(conn, runner, _killer(runner.loop, conn))


#: Whether asyncpg under trio runs on an asyncio loop hosted in the trio run (else on the
#: shared loop thread); decided on first use.
HOSTED: bool | None = None


def _trio_runner() -> Any:
    """The runner that takes asyncpg calls from trio: this run's hosted loop where the
    interpreter's asyncio allows it (`_hosted_loop`), else the shared loop thread."""
    global HOSTED
    from . import _hosted_loop

    if HOSTED is None:
        HOSTED = _hosted_loop.can_host()
    if HOSTED:
        return _hosted_loop.hosted_loop()
    from ._bridge import shared_loop

    return shared_loop()


def _killer(loop: asyncio.AbstractEventLoop, conn: AsyncpgConn) -> Any:
    """Cut ``conn`` from any thread: on its loop, or here once that loop is closed."""

    def kill() -> None:
        try:
            loop.call_soon_threadsafe(conn.terminate)
        except RuntimeError:  # its loop is closed: the cut closes the socket here
            conn.terminate()
        else:
            if loop.is_closed():  # closed meanwhile: the cut may never run there
                conn.terminate()

    return kill


BACKEND = AsyncpgBackend()
