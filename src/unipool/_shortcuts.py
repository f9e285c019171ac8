"""The one-statement shortcuts of a pool: borrow, run one connection method, give back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ._record import Record


class Shortcuts:
    """``pool.fetchval(...)`` and the rest, blocking and async (``afetchval``...), each on a
    connection borrowed for it alone."""

    def _with_conn(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def _awith_conn(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def execute(self, sql: str, *args: Any) -> str:
        """Run ``sql`` on a pooled connection; the command tag."""
        return self._with_conn("execute", sql, *args)  # type: ignore[no-any-return]

    def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        """Run ``sql`` once per parameter tuple on a pooled connection."""
        self._with_conn("executemany", sql, args_seq)

    def fetch(self, sql: str, *args: Any) -> list[Record]:
        """All rows of ``sql``, run on a pooled connection."""
        return self._with_conn("fetch", sql, *args)  # type: ignore[no-any-return]

    def fetchrow(self, sql: str, *args: Any) -> Record | None:
        """The first row of ``sql``, run on a pooled connection."""
        return self._with_conn("fetchrow", sql, *args)  # type: ignore[no-any-return]

    def fetchval(self, sql: str, *args: Any, column: int = 0) -> Any:
        """One value of the first row of ``sql``, run on a pooled connection."""
        return self._with_conn("fetchval", sql, *args, column=column)

    def fetchmany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> list[list[Record]]:
        """Run ``sql`` once per parameter tuple on a pooled connection; the rows of each run."""
        return self._with_conn("fetchmany", sql, args_seq)  # type: ignore[no-any-return]

    def copy_records_to_table(self, table_name: str, **kwargs: Any) -> str:
        """:meth:`Connection.copy_records_to_table` on a pooled connection."""
        return self._with_conn("copy_records_to_table", table_name, **kwargs)  # type: ignore[no-any-return]

    def copy_to_table(self, table_name: str, **kwargs: Any) -> str:
        """:meth:`Connection.copy_to_table` on a pooled connection."""
        return self._with_conn("copy_to_table", table_name, **kwargs)  # type: ignore[no-any-return]

    def copy_from_table(self, table_name: str, **kwargs: Any) -> str:
        """:meth:`Connection.copy_from_table` on a pooled connection."""
        return self._with_conn("copy_from_table", table_name, **kwargs)  # type: ignore[no-any-return]

    async def aexecute(self, sql: str, *args: Any) -> str:
        """Run ``sql`` on a pooled connection; the command tag."""
        return await self._awith_conn("execute", sql, *args)  # type: ignore[no-any-return]

    async def aexecutemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        """Run ``sql`` once per parameter tuple on a pooled connection."""
        await self._awith_conn("executemany", sql, args_seq)

    async def afetch(self, sql: str, *args: Any) -> list[Record]:
        """All rows of ``sql``, run on a pooled connection."""
        return await self._awith_conn("fetch", sql, *args)  # type: ignore[no-any-return]

    async def afetchrow(self, sql: str, *args: Any) -> Record | None:
        """The first row of ``sql``, run on a pooled connection."""
        return await self._awith_conn("fetchrow", sql, *args)  # type: ignore[no-any-return]

    async def afetchval(self, sql: str, *args: Any, column: int = 0) -> Any:
        """One value of the first row of ``sql``, run on a pooled connection."""
        return await self._awith_conn("fetchval", sql, *args, column=column)

    async def afetchmany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> list[list[Record]]:
        """Run ``sql`` once per parameter tuple on a pooled connection; the rows of each run."""
        return await self._awith_conn("fetchmany", sql, args_seq)  # type: ignore[no-any-return]

    async def acopy_records_to_table(self, table_name: str, **kwargs: Any) -> str:
        """:meth:`AsyncConnection.copy_records_to_table` on a pooled connection."""
        return await self._awith_conn("copy_records_to_table", table_name, **kwargs)  # type: ignore[no-any-return]

    async def acopy_to_table(self, table_name: str, **kwargs: Any) -> str:
        """:meth:`AsyncConnection.copy_to_table` on a pooled connection."""
        return await self._awith_conn("copy_to_table", table_name, **kwargs)  # type: ignore[no-any-return]

    async def acopy_from_table(self, table_name: str, **kwargs: Any) -> str:
        """:meth:`AsyncConnection.copy_from_table` on a pooled connection."""
        return await self._awith_conn("copy_from_table", table_name, **kwargs)  # type: ignore[no-any-return]
