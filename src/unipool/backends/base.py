"""What a backend provides: the Backend and driver-connection protocols.

A backend turns the uniform connection operations into driver calls, and
maps driver values and errors to unipool's. Its connections raise only
:class:`unipool.Error` subclasses, with the driver's exception as
``__cause__``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .._record import Record

Runtime = Literal["asyncio", "trio"]

#: Where COPY goes: (table, schema_name, columns).
CopyTarget = tuple[str, "str | None", "Sequence[str] | None"]


#: True while the pool runs a call of its own (a check) on a connection: if that call is
#: interrupted, the adapter drops the connection at once instead of asking the server to
#: cancel (a request that waits for a server which may never answer); the pool discards a
#: connection whose check was interrupted anyway.
POOL_CALL: ContextVar[bool] = ContextVar("unipool_pool_call", default=False)


class TxStatus(enum.IntEnum):
    """A session's transaction status, as the server last reported it."""

    IDLE = 0
    ACTIVE = 1
    INTRANS = 2
    INERROR = 3
    UNKNOWN = 4


@dataclass(frozen=True)
class ConnectParams:
    """Everything a backend needs to open one connection."""

    dsn: str | None
    connect_timeout: float | None = None
    command_timeout: float | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    #: The ``connect`` hook: called as ``factory(dsn, **driver_kwargs)`` instead of the
    #: driver's own connect function; a coroutine function wherever the driver is async.
    factory: Callable[..., Any] | None = None
    #: The ``pgbouncer`` option: the DSN points at PgBouncer in transaction or statement mode.
    pgbouncer: bool = False


class SyncConn(Protocol):
    """A blocking driver connection, wrapped."""

    @property
    def raw(self) -> Any:
        """The driver's own connection, for a borrower."""

    def execute(self, sql: str, args: Sequence[Any]) -> str: ...
    def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None: ...
    def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]: ...
    def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None: ...
    def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any: ...
    def copy_records(self, target: CopyTarget, records: Iterable[Sequence[Any]]) -> str: ...
    def copy_in(self, target: CopyTarget, source: Any, options: dict[str, Any]) -> str: ...
    def copy_out(self, target: CopyTarget, output: Any, options: dict[str, Any]) -> str: ...
    def alive(self) -> bool:
        """False if the connection is surely unusable (no I/O)."""
        ...

    def is_clean(self) -> bool:
        """True if no transaction is open and no operation is under way (no I/O)."""
        ...

    def ping(self) -> None:
        """One round trip; raises if the connection is broken."""
        ...

    def reset(self, dirty: bool) -> bool:
        """Return the session to its defaults; False if it cannot be reused."""
        ...

    def close(self) -> None: ...
    def terminate(self) -> None: ...


class AsyncConn(Protocol):
    """An async driver connection, wrapped; methods as in :class:`SyncConn`."""

    @property
    def raw(self) -> Any:
        """The driver's own connection, for a borrower."""

    async def execute(self, sql: str, args: Sequence[Any]) -> str: ...
    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None: ...
    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]: ...
    async def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None: ...
    async def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any: ...
    async def copy_records(self, target: CopyTarget, records: Any) -> str: ...
    async def copy_in(self, target: CopyTarget, source: Any, options: dict[str, Any]) -> str: ...
    async def copy_out(self, target: CopyTarget, output: Any, options: dict[str, Any]) -> str: ...
    def alive(self) -> bool: ...
    def is_clean(self) -> bool: ...
    async def ping(self) -> None: ...
    async def reset(self, dirty: bool) -> bool: ...
    async def close(self) -> None: ...
    def terminate(self) -> None: ...


class Backend(Protocol):
    """One driver, reachable from blocking code, asyncio and trio."""

    name: str

    def connect_sync(self, params: ConnectParams) -> SyncConn:
        """Open a blocking connection.

        Raises:
            ConnectError: the server could not be reached or refused us.
        """
        ...

    async def connect_async(self, params: ConnectParams, runtime: Runtime) -> AsyncConn:
        """Open a connection for ``runtime``'s event loop.

        Raises:
            ConnectError: the server could not be reached or refused us.
        """
        ...
