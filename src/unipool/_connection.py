"""Connection and AsyncConnection: the uniform query API a borrower uses.

One object is made per borrow; it refuses to work once given back. It counts
queries (for ``max_queries``) and notes whether anything could have changed
session state, so the release reset can skip its round trip when nothing did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._errors import ConnectionLost, Error, InterfaceError, ReadOnlySQLTransaction
from ._record import Record
from ._sql import begin_statement, check_copy_options, leaves_session_clean

if TYPE_CHECKING:
    from ._core import Slot
    from .backends.base import AsyncConn, SyncConn

_RELEASED = "this connection was released to the pool; acquire a new one"


class _Borrowed:
    """State shared by both faces of a borrowed connection."""

    __slots__ = ("_depth", "_dirty", "_driver", "_face", "_noted", "_slot")

    _driver: Any

    def __init__(self, slot: Slot, face: Any = None) -> None:
        self._slot: Slot | None = slot
        self._driver = slot.conn
        self._face = face  # told if this object is collected while still borrowed
        self._dirty = False
        self._depth = 0
        #: an error that condemns the connection, kept even if the borrower caught it
        self._noted: Error | None = None

    def __del__(self) -> None:
        slot = getattr(self, "_slot", None)
        if slot is not None and self._face is not None:
            self._face.abandoned(slot)

    def _use(self, sql: str) -> Any:
        """Account for one statement; the driver connection to run it on."""
        slot = self._slot
        if slot is None:
            raise InterfaceError(_RELEASED)
        slot.queries += 1
        if not self._dirty and not leaves_session_clean(sql):
            self._dirty = True
        return self._driver

    def _note(self, error: Error) -> None:
        """Keep an error that says the connection must not be reused (lost, or a write refused
        by a server that should take writes): the give-back retires it even if the borrower
        caught the error."""
        if self._noted is None and isinstance(error, (ConnectionLost, ReadOnlySQLTransaction)):
            self._noted = error

    def _detach(self) -> Slot:
        slot = self._slot
        if slot is None:
            raise InterfaceError("this connection was already released")
        self._slot = None
        return slot

    @property
    def raw(self) -> Any:
        """The driver's own connection; using it counts as changing the session."""
        if self._slot is None:
            raise InterfaceError(_RELEASED)
        self._dirty = True
        return self._driver.raw

    @property
    def released(self) -> bool:
        """Whether this connection was given back to the pool."""
        return self._slot is None

    def _begin_sql(self, isolation: str | None, readonly: bool, deferrable: bool) -> str:
        if self._depth:
            if isolation is not None or readonly or deferrable:
                raise InterfaceError("a nested transaction cannot change its characteristics")
            return f"SAVEPOINT unipool_{self._depth}"
        return begin_statement(isolation, readonly, deferrable)

    def _end_sql(self, commit: bool) -> str:
        if self._depth:
            name = f"unipool_{self._depth}"
            return f"RELEASE SAVEPOINT {name}" if commit else f"ROLLBACK TO SAVEPOINT {name}"
        return "COMMIT" if commit else "ROLLBACK"


class Connection(_Borrowed):
    """A borrowed connection, blocking API. Use it from one thread at a time.

    Made by the pool (``with pool.acquire() as conn``), never directly.
    """

    __slots__ = ()
    _driver: SyncConn

    def execute(self, sql: str, *args: Any) -> str:
        """Run ``sql`` with ``$n`` parameters.

        Args:
            sql: One statement (or several without parameters), ``$1, $2, ...``
                placeholders.
            *args: The parameters, one per placeholder.

        Returns:
            The server's command tag (``"INSERT 0 1"``).

        Raises:
            DatabaseError: the server refused it (a subclass by SQLSTATE; past
                ``command_timeout``, :class:`CommandTimeout`).
            ConnectionLost: the connection died; it will be replaced.
            InterfaceError: this connection was given back to the pool.
        """
        try:
            return self._use(sql).execute(sql, args)  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        """Run ``sql`` once for each parameter tuple.

        Args:
            sql: One statement with ``$1, $2, ...`` placeholders.
            args_seq: The parameter tuples, one per run.

        Raises:
            DatabaseError: the server refused it (a subclass by SQLSTATE; past
                ``command_timeout``, :class:`CommandTimeout`).
            ConnectionLost: the connection died; it will be replaced.
            InterfaceError: this connection was given back to the pool.
        """
        try:
            self._use(sql).executemany(sql, args_seq)
        except Error as exc:
            self._note(exc)
            raise

    def fetch(self, sql: str, *args: Any) -> list[Record]:
        """All rows of ``sql``.

        Args:
            sql: One statement (or several without parameters), ``$1, $2, ...``
                placeholders.
            *args: The parameters, one per placeholder.

        Returns:
            A list of :class:`Record`.

        Raises:
            DatabaseError: the server refused it (a subclass by SQLSTATE; past
                ``command_timeout``, :class:`CommandTimeout`).
            ConnectionLost: the connection died; it will be replaced.
            InterfaceError: this connection was given back to the pool.
        """
        try:
            return self._use(sql).fetch(sql, args)  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    def fetchrow(self, sql: str, *args: Any) -> Record | None:
        """The first row of ``sql``, or None.

        Args:
            sql: One statement (or several without parameters), ``$1, $2, ...``
                placeholders.
            *args: The parameters, one per placeholder.

        Returns:
            A :class:`Record`, or ``None`` when there is no row.

        Raises:
            DatabaseError: the server refused it (a subclass by SQLSTATE; past
                ``command_timeout``, :class:`CommandTimeout`).
            ConnectionLost: the connection died; it will be replaced.
            InterfaceError: this connection was given back to the pool.
        """
        try:
            return self._use(sql).fetchrow(sql, args)  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    def fetchval(self, sql: str, *args: Any, column: int = 0) -> Any:
        """One value of the first row of ``sql`` (None if there is no row).

        Args:
            sql: One statement (or several without parameters), ``$1, $2, ...``
                placeholders.
            *args: The parameters, one per placeholder.
            column: The position of the value in the row.

        Returns:
            The value, or ``None`` when there is no row.

        Raises:
            DatabaseError: the server refused it (a subclass by SQLSTATE; past
                ``command_timeout``, :class:`CommandTimeout`).
            ConnectionLost: the connection died; it will be replaced.
            InterfaceError: this connection was given back to the pool.
        """
        try:
            return self._use(sql).fetchval(sql, args, column)
        except Error as exc:
            self._note(exc)
            raise

    def fetchmany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> list[list[Record]]:
        """Run ``sql`` once per parameter tuple; the rows of each run.

        Args:
            sql: One statement with ``$1, $2, ...`` placeholders.
            args_seq: The parameter tuples, one per run.

        Returns:
            A list of lists of :class:`Record`, one list per run.

        Raises:
            DatabaseError: the server refused it (a subclass by SQLSTATE; past
                ``command_timeout``, :class:`CommandTimeout`).
            ConnectionLost: the connection died; it will be replaced.
            InterfaceError: this connection was given back to the pool.
        """
        try:
            return [self._use(sql).fetch(sql, tuple(args)) for args in args_seq]
        except Error as exc:
            self._note(exc)
            raise

    def copy_records_to_table(
        self,
        table_name: str,
        *,
        records: Iterable[Sequence[Any]],
        columns: Sequence[str] | None = None,
        schema_name: str | None = None,
    ) -> str:
        """Copy ``records`` (tuples) into a table.

        Args:
            table_name: The table.
            records: The rows, each a sequence of values in column order.
            columns: The columns the values go to; ``None``: all, in table order.
            schema_name: The table's schema; ``None``: the ``search_path``.

        Returns:
            The command tag (``"COPY n"``).

        Raises:
            DatabaseError: the server refused it (a subclass by SQLSTATE).
            ConnectionLost: the connection died; it will be replaced.
            InterfaceError: this connection was given back to the pool.
        """
        try:
            driver = self._use("COPY")
            return driver.copy_records((table_name, schema_name, columns), records)  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    def copy_to_table(
        self,
        table_name: str,
        *,
        source: Any,
        columns: Sequence[str] | None = None,
        schema_name: str | None = None,
        **options: Any,
    ) -> str:
        """Copy data from ``source`` (a path, a file or an iterable of bytes) into a table.

        Args:
            table_name: The table.
            source: A path, a binary file open for reading, or an iterable of bytes.
            columns: The columns the data fills; ``None``: all, in table order.
            schema_name: The table's schema; ``None``: the ``search_path``.
            **options: COPY options, a subset of asyncpg's: ``format`` (``text``,
                ``csv``, ``binary``), ``delimiter``, ``null``, ``header``, ``quote``,
                ``escape``, ``encoding``.

        Returns:
            The command tag (``"COPY n"``).

        Raises:
            TypeError: an unknown COPY option.
            ValueError: an unknown ``format``.
            DatabaseError: the server refused it (a subclass by SQLSTATE).
            ConnectionLost: the connection died; it will be replaced.
            InterfaceError: this connection was given back to the pool.
        """
        target = (table_name, schema_name, columns)
        try:
            driver = self._use("COPY")
            return driver.copy_in(target, source, check_copy_options(options))  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    def copy_from_table(
        self,
        table_name: str,
        *,
        output: Any,
        columns: Sequence[str] | None = None,
        schema_name: str | None = None,
        **options: Any,
    ) -> str:
        """Copy a table to ``output`` (a path or a writable binary file).

        Args:
            table_name: The table.
            output: A path, or a binary file open for writing.
            columns: The columns to copy; ``None``: all, in table order.
            schema_name: The table's schema; ``None``: the ``search_path``.
            **options: COPY options, as for :meth:`copy_to_table`.

        Returns:
            The command tag (``"COPY n"``).

        Raises:
            TypeError: an unknown COPY option.
            ValueError: an unknown ``format``.
            NotSupportedError: ``format="binary"`` on psqlpy.
            DatabaseError: the server refused it (a subclass by SQLSTATE).
            ConnectionLost: the connection died; it will be replaced.
            InterfaceError: this connection was given back to the pool.
        """
        target = (table_name, schema_name, columns)
        try:
            driver = self._use("COPY")
            return driver.copy_out(target, output, check_copy_options(options))  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    def transaction(
        self, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> Transaction:
        """A transaction block (a savepoint when nested): commits on success, rolls back on error.

        Args:
            isolation: ``"read_committed"``, ``"repeatable_read"``, ``"serializable"``,
                or ``None`` for the server's default.
            readonly: Open it ``READ ONLY``.
            deferrable: Open it ``DEFERRABLE`` (with ``serializable`` and ``readonly``).

        Returns:
            A :class:`Transaction`, used as ``with conn.transaction():``.

        Raises:
            ValueError: an unknown isolation level.
            InterfaceError: a nested transaction given characteristics of its own.
        """
        sql = self._begin_sql(isolation, readonly, deferrable)
        return Transaction(self, sql)


class AsyncConnection(_Borrowed):
    """A borrowed connection, async API. Use it from one task at a time.

    Made by the pool (``async with pool.acquire() as conn``), never directly. Each
    method is the awaitable twin of :class:`Connection`'s, with the same arguments,
    results and errors.
    """

    __slots__ = ()
    _driver: AsyncConn

    async def execute(self, sql: str, *args: Any) -> str:
        """Run ``sql`` with ``$n`` parameters; the server's command tag (``"INSERT 0 1"``)."""
        try:
            return await self._use(sql).execute(sql, args)  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        """Run ``sql`` once for each parameter tuple."""
        try:
            await self._use(sql).executemany(sql, args_seq)
        except Error as exc:
            self._note(exc)
            raise

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        """All rows of ``sql``."""
        try:
            return await self._use(sql).fetch(sql, args)  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        """The first row of ``sql``, or None."""
        try:
            return await self._use(sql).fetchrow(sql, args)  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    async def fetchval(self, sql: str, *args: Any, column: int = 0) -> Any:
        """One value of the first row of ``sql`` (None if there is no row)."""
        try:
            return await self._use(sql).fetchval(sql, args, column)
        except Error as exc:
            self._note(exc)
            raise

    async def fetchmany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> list[list[Record]]:
        """Run ``sql`` once per parameter tuple; the rows of each run."""
        try:
            return [await self._use(sql).fetch(sql, tuple(args)) for args in args_seq]
        except Error as exc:
            self._note(exc)
            raise

    async def copy_records_to_table(
        self,
        table_name: str,
        *,
        records: Any,
        columns: Sequence[str] | None = None,
        schema_name: str | None = None,
    ) -> str:
        """Copy ``records`` (tuples, or an async iterable of them) into a table."""
        try:
            driver = self._use("COPY")
            return await driver.copy_records((table_name, schema_name, columns), records)  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    async def copy_to_table(
        self,
        table_name: str,
        *,
        source: Any,
        columns: Sequence[str] | None = None,
        schema_name: str | None = None,
        **options: Any,
    ) -> str:
        """Copy data from ``source`` into a table; see :meth:`Connection.copy_to_table`."""
        target = (table_name, schema_name, columns)
        try:
            driver = self._use("COPY")
            return await driver.copy_in(target, source, check_copy_options(options))  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    async def copy_from_table(
        self,
        table_name: str,
        *,
        output: Any,
        columns: Sequence[str] | None = None,
        schema_name: str | None = None,
        **options: Any,
    ) -> str:
        """Copy a table to ``output``; see :meth:`Connection.copy_from_table`."""
        target = (table_name, schema_name, columns)
        try:
            driver = self._use("COPY")
            return await driver.copy_out(target, output, check_copy_options(options))  # type: ignore[no-any-return]
        except Error as exc:
            self._note(exc)
            raise

    def transaction(
        self, isolation: str | None = None, readonly: bool = False, deferrable: bool = False
    ) -> AsyncTransaction:
        """A transaction block (a savepoint when nested): commits on success, rolls back on error.

        Raises:
            ValueError: an unknown isolation level.
        """
        sql = self._begin_sql(isolation, readonly, deferrable)
        return AsyncTransaction(self, sql)


class Transaction:
    """``with conn.transaction():`` on a blocking connection."""

    __slots__ = ("_begin", "_conn")

    def __init__(self, conn: Connection, begin: str) -> None:
        self._conn = conn
        self._begin = begin

    def __enter__(self) -> Connection:
        conn = self._conn
        conn.execute(self._begin)
        conn._depth += 1
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        conn._depth -= 1
        conn.execute(conn._end_sql(exc_type is None))


class AsyncTransaction:
    """``async with conn.transaction():`` on an async connection."""

    __slots__ = ("_begin", "_conn")

    def __init__(self, conn: AsyncConnection, begin: str) -> None:
        self._conn = conn
        self._begin = begin

    async def __aenter__(self) -> AsyncConnection:
        conn = self._conn
        await conn.execute(self._begin)
        conn._depth += 1
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        conn._depth -= 1
        if exc_type is not None and not issubclass(exc_type, Exception):
            return  # cancelled: the release reset rolls the whole transaction back
        await conn.execute(conn._end_sql(exc_type is None))
