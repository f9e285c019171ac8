"""The psqlpy backend: psqlpy's connections, made to behave as the other drivers'.

psqlpy reports no SQLSTATE, no transaction status, no command tag and no
column types, and has no query cancel; this package makes them up, one
concern a module:

- ``_errors``: errors, the SQLSTATE derived from the server's message;
- ``_statements``: command tags and transaction status, from the statements run;
- ``_values``: values psqlpy cannot decode or send as the other drivers do;
- ``_conn``: the connection, with its query cancel from a side connection;
- ``_copy``: COPY in text and CSV, and COPY out, which psqlpy lacks;
- ``_params``: the DSN and keyword arguments psqlpy is given;
- ``_pump``: psqlpy's coroutines driven without asyncio;
- this module: opening a connection, and the runner that carries it into each world.

On asyncio the connections are native. Blocking code and trio drive psqlpy's
coroutines without asyncio (the pump), or through the shared asyncio loop
thread if the pump does not work with the installed psqlpy. Blocking connects
go through the loop thread (psqlpy's connect timeout does not cover the
startup handshake; the pump has no timer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import anyio
import psqlpy
from psqlpy import exceptions as pe

from ..._dsn import ConnInfo
from ..._errors import ConnectError, ConnectionLost
from .._session import CANCEL_WAIT, refused_client_check
from ..base import POOL_CALL, ConnectParams, Runtime
from . import _fork
from ._conn import CANCEL_TIMEOUT, CUT_MESSAGE, PsqlpyConn
from ._copy import collected
from ._errors import connect_error, server_sqlstate
from ._params import check_dsn, connect_args

T = TypeVar("T")


async def _connect(params: ConnectParams) -> PsqlpyConn:
    _fork.check_connect(params)
    _fork.ran()
    try:
        return await _connect_once(params)
    except ConnectError as exc:
        if not refused_client_check(params, exc):
            raise
    return await _connect_once(params)


async def _connect_once(params: ConnectParams) -> PsqlpyConn:
    dsn, kwargs = connect_args(params)
    if params.connect_timeout is not None:
        kwargs.setdefault("connect_timeout_sec", max(1, int(params.connect_timeout)))
    try:
        if params.factory is not None:
            raw = await params.factory(dsn, **kwargs)
        else:
            raw = await psqlpy.connect(dsn=dsn, **kwargs)
    except pe.Error as exc:
        raise connect_error(exc, params) from exc
    try:
        if params.pgbouncer:
            unprepared = await _names_pass_through(raw)
            return PsqlpyConn(raw, 0, params, unprepared=unprepared)
        session = await raw.fetch_val(_SESSION)
    except BaseException as exc:
        raw.close()
        if isinstance(exc, pe.Error):
            raise connect_error(exc, params) from exc
        raise
    pid, _, started = str(session).partition(" ")
    return PsqlpyConn(raw, int(pid), params, started=started)


#: The server process of a connection and when it started: what a cancel from a side
#: connection checks, so that it never reaches another session (another server's of a
#: multi-host DSN, or a later one given the same process id).
_SESSION = (
    "SELECT pg_backend_pid()::text || ' ' || coalesce("
    "(SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()), '')"
)


async def _names_pass_through(raw: Any) -> bool:
    """Whether the pooler in front passes psqlpy's statement names to the server unchanged.

    PgBouncer before 1.21 (or with ``max_prepared_statements = 0``) does: psqlpy must
    then prepare nothing that lasts, and run each statement inside a transaction, where
    PgBouncer keeps one server. PgBouncer with prepared statements renames them: psqlpy's
    own prepared statements then work, and its unprepared ones, which it drops with an
    SQL ``DEALLOCATE`` of the name it gave, fail. An unprepared statement tells which.
    """
    await raw.execute_batch("BEGIN")
    try:
        await raw.fetch_val("SELECT 1", prepared=False)
    except pe.Error as exc:
        if server_sqlstate(exc) != "26000":
            raise
        renamed = True
    else:
        renamed = False
    await raw.execute_batch("ROLLBACK")
    return not renamed


async def _connect_timed(params: ConnectParams) -> PsqlpyConn:
    """`_connect` within ``connect_timeout``, on asyncio (psqlpy's covers only TCP)."""
    try:
        with anyio.fail_after(params.connect_timeout):
            return await _connect(params)
    except TimeoutError as exc:
        raise connect_error(exc, params) from exc


def _pump_works() -> bool:
    from ._pump import pump_works

    return pump_works()


def _loop_call(fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None) -> T:
    from .._bridge import shared_loop

    return shared_loop().call(fn, *args, timeout=timeout)


async def _loop_acall(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    from .._bridge import shared_loop

    return await shared_loop().acall(fn, *args)


class _Pumped:
    """A runner through a pump; ``cut()`` stops the call under way, from any thread."""

    __slots__ = ("_conn", "_pump")

    def __init__(self, conn: PsqlpyConn) -> None:
        self._conn = conn
        self._pump: Any = None  # the pump of the call under way

    def cut(self) -> None:
        """Close the connection; a call waiting on it fails with `ConnectionLost` at once."""
        self._conn.terminate()
        pump = self._pump
        if pump is not None:
            pump.abort(ConnectionLost(CUT_MESSAGE))


class _PumpRunner(_Pumped):
    """The `SyncRunner` through the pump."""

    __slots__ = ()

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        from ._pump import _SyncPump, pump_sync

        self._pump = pump = _SyncPump()
        try:
            return pump_sync(fn(*args), pump)
        except BaseException:  # KeyboardInterrupt: the query may still run
            if self._conn.abandoned:
                with contextlib.suppress(Exception):
                    _loop_call(self._conn.cancel_server, timeout=CANCEL_TIMEOUT)
            raise
        finally:
            self._pump = None


class _TrioRunner(_Pumped):
    """The `AsyncRunner` through the pump."""

    __slots__ = ("_new_pump", "_pump_trio")

    def __init__(self, conn: PsqlpyConn) -> None:
        from ._pump import _TrioPump, pump_trio

        super().__init__(conn)
        self._new_pump = _TrioPump
        self._pump_trio = pump_trio

    async def acall(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        conn = self._conn
        if _takes_sources(fn):
            args = await _trio_args(args)
        self._pump = pump = self._new_pump()
        try:
            return await self._pump_trio(fn(*args), pump)
        except BaseException:
            if conn.abandoned and POOL_CALL.get():  # the pool's own call: no cancel request
                conn.terminate()
            elif conn.abandoned:
                self._pump = pump = self._new_pump()
                with anyio.move_on_after(CANCEL_WAIT, shield=True):
                    with contextlib.suppress(Exception):
                        await self._pump_trio(conn.cancel_server(), pump)
            raise
        finally:
            if self._pump is pump:
                self._pump = None


class _LoopRunner:
    """The `AsyncRunner` through the shared asyncio loop thread."""

    __slots__ = ()

    async def acall(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        if _takes_sources(fn):
            args = await _trio_args(args)
        return await _loop_acall(fn, *args)


#: The adapter's calls that may be handed a trio async iterable (a COPY source).
_TAKES_SOURCES = frozenset({PsqlpyConn.copy_in, PsqlpyConn.copy_records})


def _takes_sources(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a bound method of the adapter's) is one of `_TAKES_SOURCES`."""
    return getattr(fn, "__func__", None) in _TAKES_SOURCES


async def _trio_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with a trio async iterable (a COPY source) collected first: psqlpy
    iterates its sources on its own side, where trio's cannot run."""
    if any(hasattr(arg, "__aiter__") for arg in args):
        return tuple([await collected(arg) for arg in args])
    return args


async def _connect_trio(params: ConnectParams) -> PsqlpyConn:
    if not _pump_works():
        return await _loop_acall(_connect_timed, params)
    from ._pump import pump_trio

    try:
        with anyio.fail_after(params.connect_timeout):
            return await pump_trio(_connect(params))
    except TimeoutError as exc:
        raise connect_error(exc, params) from exc


class PsqlpyBackend:
    """psqlpy: native on asyncio; its coroutines pumped without asyncio elsewhere."""

    name = "psqlpy"
    #: psqlpy cannot see a dead socket without a round trip: ping sooner.
    check_default = 0.05

    def check_dsn(self, info: ConnInfo) -> None:
        """Raise ValueError for DSN parameters psqlpy cannot honour."""
        check_dsn(info)

    def connect_sync(self, params: ConnectParams) -> Any:
        from .._bridge import shared_loop
        from .._bridged import SyncBridge

        _fork.check_connect(params)  # before the loop thread or the pump is started
        conn = _loop_call(_connect_timed, params)
        if not _pump_works():
            return SyncBridge(conn, shared_loop(), conn.terminate)
        runner = _PumpRunner(conn)
        return SyncBridge(conn, runner, runner.cut)

    async def connect_async(self, params: ConnectParams, runtime: Runtime) -> Any:
        _fork.check_connect(params)
        if runtime == "asyncio":
            return await _connect_timed(params)
        from .._bridged import AsyncBridge

        conn = await _connect_trio(params)
        if not _pump_works():
            return AsyncBridge(conn, _LoopRunner(), conn.terminate)
        runner = _TrioRunner(conn)
        return AsyncBridge(conn, runner, runner.cut)


BACKEND = PsqlpyBackend()
