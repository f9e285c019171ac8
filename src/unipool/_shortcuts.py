"""The one-statement shortcuts of a pool: borrow, run one connection method, give back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ._record import Record


class Shortcuts:
    """``pool.fetchval(...)`` and the rest, blocking and async (``afetchval``...), each on a
    connection borrowed for it alone.

    Every shortcut raises what borrowing and the statement may: :class:`PoolTimeout` (no
    connection within ``acquire_timeout``), :class:`PoolClosed`, :class:`UsageError` (the
    pool is open in the other mode, or on another event loop), :class:`DatabaseError` (a
    subclass by SQLSTATE) and :class:`ConnectionLost` (the connection died meanwhile).
    """

    def _with_conn(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def _awith_conn(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def execute(self, sql: str, *args: Any) -> str:
        """Run ``sql`` on a connection borrowed for this call alone.

        Args:
            sql: One statement (or several without parameters), with ``$1, $2, ...``
                placeholders.
            *args: The parameters, one per placeholder.

        Returns:
            The server's command tag (``"INSERT 0 1"``).
        """
        return self._with_conn("execute", sql, *args)  # type: ignore[no-any-return]

    def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        """Run ``sql`` once per parameter tuple, on a connection borrowed for this call alone.

        Args:
            sql: One statement with ``$1, $2, ...`` placeholders.
            args_seq: The parameter tuples, one per run.
        """
        self._with_conn("executemany", sql, args_seq)

    def fetch(self, sql: str, *args: Any) -> list[Record]:
        """All rows of ``sql``, run on a connection borrowed for this call alone.

        Args:
            sql: One statement (or several without parameters), with ``$1, $2, ...``
                placeholders.
            *args: The parameters, one per placeholder.

        Returns:
            A list of :class:`Record`.
        """
        return self._with_conn("fetch", sql, *args)  # type: ignore[no-any-return]

    def fetchrow(self, sql: str, *args: Any) -> Record | None:
        """The first row of ``sql``, run on a connection borrowed for this call alone.

        Args:
            sql: One statement (or several without parameters), with ``$1, $2, ...``
                placeholders.
            *args: The parameters, one per placeholder.

        Returns:
            A :class:`Record`, or ``None`` when there is no row.
        """
        return self._with_conn("fetchrow", sql, *args)  # type: ignore[no-any-return]

    def fetchval(self, sql: str, *args: Any, column: int = 0) -> Any:
        """One value of the first row of ``sql``, run on a connection borrowed for this call alone.

        Args:
            sql: One statement (or several without parameters), with ``$1, $2, ...``
                placeholders.
            *args: The parameters, one per placeholder.
            column: The position of the value in the row.

        Returns:
            The value, or ``None`` when there is no row.
        """
        return self._with_conn("fetchval", sql, *args, column=column)

    def fetchmany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> list[list[Record]]:
        """Run ``sql`` once per parameter tuple, on a connection borrowed for this call alone.

        Args:
            sql: One statement with ``$1, $2, ...`` placeholders.
            args_seq: The parameter tuples, one per run.

        Returns:
            The rows of each run: a list of lists of :class:`Record`.
        """
        return self._with_conn("fetchmany", sql, args_seq)  # type: ignore[no-any-return]

    def copy_records_to_table(self, table_name: str, **kwargs: Any) -> str:
        """:meth:`Connection.copy_records_to_table` on a connection borrowed for this call alone.

        Args:
            table_name: The table.
            **kwargs: As for :meth:`Connection.copy_records_to_table`.

        Returns:
            The command tag (``"COPY n"``).
        """
        return self._with_conn("copy_records_to_table", table_name, **kwargs)  # type: ignore[no-any-return]

    def copy_to_table(self, table_name: str, **kwargs: Any) -> str:
        """:meth:`Connection.copy_to_table` on a connection borrowed for this call alone.

        Args:
            table_name: The table.
            **kwargs: As for :meth:`Connection.copy_to_table`.

        Returns:
            The command tag (``"COPY n"``).
        """
        return self._with_conn("copy_to_table", table_name, **kwargs)  # type: ignore[no-any-return]

    def copy_from_table(self, table_name: str, **kwargs: Any) -> str:
        """:meth:`Connection.copy_from_table` on a connection borrowed for this call alone.

        Args:
            table_name: The table.
            **kwargs: As for :meth:`Connection.copy_from_table`.

        Returns:
            The command tag (``"COPY n"``).
        """
        return self._with_conn("copy_from_table", table_name, **kwargs)  # type: ignore[no-any-return]

    async def aexecute(self, sql: str, *args: Any) -> str:
        """The async twin of :meth:`execute`."""
        return await self._awith_conn("execute", sql, *args)  # type: ignore[no-any-return]

    async def aexecutemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        """The async twin of :meth:`executemany`."""
        await self._awith_conn("executemany", sql, args_seq)

    async def afetch(self, sql: str, *args: Any) -> list[Record]:
        """The async twin of :meth:`fetch`."""
        return await self._awith_conn("fetch", sql, *args)  # type: ignore[no-any-return]

    async def afetchrow(self, sql: str, *args: Any) -> Record | None:
        """The async twin of :meth:`fetchrow`."""
        return await self._awith_conn("fetchrow", sql, *args)  # type: ignore[no-any-return]

    async def afetchval(self, sql: str, *args: Any, column: int = 0) -> Any:
        """The async twin of :meth:`fetchval`."""
        return await self._awith_conn("fetchval", sql, *args, column=column)

    async def afetchmany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> list[list[Record]]:
        """The async twin of :meth:`fetchmany`."""
        return await self._awith_conn("fetchmany", sql, args_seq)  # type: ignore[no-any-return]

    async def acopy_records_to_table(self, table_name: str, **kwargs: Any) -> str:
        """The async twin of :meth:`copy_records_to_table`."""
        return await self._awith_conn("copy_records_to_table", table_name, **kwargs)  # type: ignore[no-any-return]

    async def acopy_to_table(self, table_name: str, **kwargs: Any) -> str:
        """The async twin of :meth:`copy_to_table`."""
        return await self._awith_conn("copy_to_table", table_name, **kwargs)  # type: ignore[no-any-return]

    async def acopy_from_table(self, table_name: str, **kwargs: Any) -> str:
        """The async twin of :meth:`copy_from_table`."""
        return await self._awith_conn("copy_from_table", table_name, **kwargs)  # type: ignore[no-any-return]
