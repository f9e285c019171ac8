"""The one-statement shortcuts of a cluster: like a pool's, each with ``readonly``, which
borrows a connection to read on (a standby in bounds, else the primary)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ._record import Record


class ReadShortcuts:
    """``cluster.fetchval(..., readonly=True)`` and the rest, blocking and async."""

    def _with_conn(self, readonly: bool, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def _awith_conn(self, readonly: bool, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def execute(self, sql: str, *args: Any, readonly: bool = False) -> str:
        """:meth:`Pool.execute`, on a connection to read on with ``readonly``."""
        return self._with_conn(readonly, "execute", sql, *args)  # type: ignore[no-any-return]

    def executemany(
        self, sql: str, args_seq: Iterable[Sequence[Any]], *, readonly: bool = False
    ) -> None:
        """:meth:`Pool.executemany`, on a connection to read on with ``readonly``."""
        self._with_conn(readonly, "executemany", sql, args_seq)

    def fetch(self, sql: str, *args: Any, readonly: bool = False) -> list[Record]:
        """:meth:`Pool.fetch`, on a connection to read on with ``readonly``."""
        return self._with_conn(readonly, "fetch", sql, *args)  # type: ignore[no-any-return]

    def fetchrow(self, sql: str, *args: Any, readonly: bool = False) -> Record | None:
        """:meth:`Pool.fetchrow`, on a connection to read on with ``readonly``."""
        return self._with_conn(readonly, "fetchrow", sql, *args)  # type: ignore[no-any-return]

    def fetchval(self, sql: str, *args: Any, column: int = 0, readonly: bool = False) -> Any:
        """:meth:`Pool.fetchval`, on a connection to read on with ``readonly``."""
        return self._with_conn(readonly, "fetchval", sql, *args, column=column)

    def fetchmany(
        self, sql: str, args_seq: Iterable[Sequence[Any]], *, readonly: bool = False
    ) -> list[list[Record]]:
        """:meth:`Pool.fetchmany`, on a connection to read on with ``readonly``."""
        return self._with_conn(readonly, "fetchmany", sql, args_seq)  # type: ignore[no-any-return]

    def copy_records_to_table(self, table_name: str, *, readonly: bool = False, **kw: Any) -> str:
        """:meth:`Pool.copy_records_to_table` (a write: ``readonly`` only for symmetry)."""
        return self._with_conn(readonly, "copy_records_to_table", table_name, **kw)  # type: ignore[no-any-return]

    def copy_to_table(self, table_name: str, *, readonly: bool = False, **kw: Any) -> str:
        """:meth:`Pool.copy_to_table` (a write: ``readonly`` only for symmetry)."""
        return self._with_conn(readonly, "copy_to_table", table_name, **kw)  # type: ignore[no-any-return]

    def copy_from_table(self, table_name: str, *, readonly: bool = False, **kw: Any) -> str:
        """:meth:`Pool.copy_from_table`, on a connection to read on with ``readonly``."""
        return self._with_conn(readonly, "copy_from_table", table_name, **kw)  # type: ignore[no-any-return]

    async def aexecute(self, sql: str, *args: Any, readonly: bool = False) -> str:
        """:meth:`Pool.aexecute`, on a connection to read on with ``readonly``."""
        return await self._awith_conn(readonly, "execute", sql, *args)  # type: ignore[no-any-return]

    async def aexecutemany(
        self, sql: str, args_seq: Iterable[Sequence[Any]], *, readonly: bool = False
    ) -> None:
        """:meth:`Pool.aexecutemany`, on a connection to read on with ``readonly``."""
        await self._awith_conn(readonly, "executemany", sql, args_seq)

    async def afetch(self, sql: str, *args: Any, readonly: bool = False) -> list[Record]:
        """:meth:`Pool.afetch`, on a connection to read on with ``readonly``."""
        return await self._awith_conn(readonly, "fetch", sql, *args)  # type: ignore[no-any-return]

    async def afetchrow(self, sql: str, *args: Any, readonly: bool = False) -> Record | None:
        """:meth:`Pool.afetchrow`, on a connection to read on with ``readonly``."""
        return await self._awith_conn(readonly, "fetchrow", sql, *args)  # type: ignore[no-any-return]

    async def afetchval(self, sql: str, *args: Any, column: int = 0, readonly: bool = False) -> Any:
        """:meth:`Pool.afetchval`, on a connection to read on with ``readonly``."""
        return await self._awith_conn(readonly, "fetchval", sql, *args, column=column)

    async def afetchmany(
        self, sql: str, args_seq: Iterable[Sequence[Any]], *, readonly: bool = False
    ) -> list[list[Record]]:
        """:meth:`Pool.afetchmany`, on a connection to read on with ``readonly``."""
        return await self._awith_conn(readonly, "fetchmany", sql, args_seq)  # type: ignore[no-any-return]

    async def acopy_records_to_table(
        self, table_name: str, *, readonly: bool = False, **kw: Any
    ) -> str:
        """:meth:`Pool.acopy_records_to_table` (a write: ``readonly`` only for symmetry)."""
        return await self._awith_conn(readonly, "copy_records_to_table", table_name, **kw)  # type: ignore[no-any-return]

    async def acopy_to_table(self, table_name: str, *, readonly: bool = False, **kw: Any) -> str:
        """:meth:`Pool.acopy_to_table` (a write: ``readonly`` only for symmetry)."""
        return await self._awith_conn(readonly, "copy_to_table", table_name, **kw)  # type: ignore[no-any-return]

    async def acopy_from_table(self, table_name: str, *, readonly: bool = False, **kw: Any) -> str:
        """:meth:`Pool.acopy_from_table`, on a connection to read on with ``readonly``."""
        return await self._awith_conn(readonly, "copy_from_table", table_name, **kw)  # type: ignore[no-any-return]
