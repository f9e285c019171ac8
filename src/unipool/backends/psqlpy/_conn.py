"""A psqlpy connection behind the uniform interface, native on asyncio.

psqlpy reports no transaction status and no command tag, and has no query
cancel: the connection tracks the transaction status from the statements run,
builds command tags from the statement and the row count (DML rows are counted
through a CTE), and cancels a call abandoned mid-query with
``pg_cancel_backend`` from a side connection. Its ``terminate()`` fails a call
waiting on it at once (`ConnectionLost`), which psqlpy's ``close()`` does not.
Behind PgBouncer (the ``pgbouncer`` option), no prepared statement of psqlpy's
outlives the transaction it was made in (`PsqlpyConn._extended`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import secrets
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio
import psqlpy
from psqlpy import exceptions as pe

from ..._errors import ConnectionLost, Error, NotSupportedError, make_database_error
from ..._record import Record
from ..._sql import first_words, qualified_name, quote_ident, reset_statement
from .._copyio import achunks, sink
from .._session import CANCEL_REQUEST_BOUND, CANCEL_WAIT, cancel_in_background
from ..base import POOL_CALL, ConnectParams, CopyTarget, TxStatus
from . import _fork
from ._copy import TABLE_COLUMNS, collected, format_copy, parse_copy
from ._errors import map_error
from ._params import connect_args
from ._statements import command_tag, split_statements, tx_after
from ._values import NO_SHAPE, Shape, Stale, as_decimal, decode_new, find_decoders, is_numeric

#: Seconds a server-side cancel (side connection included) may take when a blocking call
#: is interrupted (KeyboardInterrupt); an async call's gets `CANCEL_WAIT`.
CANCEL_TIMEOUT = 5.0
#: Statements whose result shape or parameter types a connection remembers.
_CACHE_MAX = 512
#: The rows a DML statement without RETURNING touched, counted through a CTE.
_COUNT = "SELECT count(*) FROM dml"
_RETURNING = re.compile(r"\breturning\b", re.I)
#: Statements that may return rows (others run as a batch).
_ROWS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN", "FETCH", "INSERT",
                   "UPDATE", "DELETE", "MERGE", "CALL"})  # fmt: skip
#: Statements after which what is known of other statements' results may be stale.
_DDL = frozenset({"CREATE", "ALTER", "DROP", "DISCARD"})
#: The open connections, closed before the interpreter exits.
_live: weakref.WeakSet[PsqlpyConn] = weakref.WeakSet()
_PARAM_TYPES = (
    "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE statement = $1 LIMIT 1"
)
#: Behind PgBouncer: the types of an SQL-level statement, and psqlpy's statements of a text.
_TYPES_OF = "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = $1"
_NAMES_OF = "SELECT name FROM pg_prepared_statements WHERE statement = $1 AND NOT from_sql"
#: What SQL-level PREPARE takes.
_PREPARABLE = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE",
                         "MERGE"})  # fmt: skip


class PsqlpyConn:
    """A psqlpy connection behind the uniform interface (native on asyncio)."""

    __slots__ = ("__weakref__", "_abandoned", "_bouncer", "_broken", "_busy", "_cut",
                 "_loop", "_numeric", "_params", "_pid", "_prepared", "_raw", "_shapes",
                 "_started", "_task", "_thread", "_tx")  # fmt: skip

    def __init__(
        self,
        raw: Any,
        pid: int,
        params: ConnectParams,
        *,
        unprepared: bool = False,
        started: str = "",
    ) -> None:
        """``unprepared``: behind a pooler that may run each step of a statement on another
        server, psqlpy prepares nothing that lasts, and statements run in transactions.
        ``pid`` and ``started``: the server process and its ``backend_start`` (as text)."""
        self._raw = raw
        self._pid = pid
        self._started = started
        self._params = params
        #: behind PgBouncer: no server process of our own (``pid`` is 0)
        self._bouncer = params.pgbouncer
        self._prepared = not unprepared
        self._tx = TxStatus.IDLE
        self._broken = False
        self._abandoned = False
        #: a driver call is in flight (its query may be running on the server)
        self._busy = False
        #: the asyncio loop the connection was opened on, and its thread (None: a pump's)
        loop = asyncio._get_running_loop()
        self._loop = loop if isinstance(loop, asyncio.AbstractEventLoop) else None
        self._thread = None if self._loop is None else threading.get_ident()
        #: the task of ``_loop`` whose driver call is in flight, if any
        self._task: asyncio.Task[Any] | None = None
        #: the task `terminate` cancelled to fail its call, and the cancellation
        #: requests it had before (a release's reset may run in a cancelled task)
        self._cut: tuple[asyncio.Task[Any], int] | None = None
        self._shapes: dict[str, Shape] = {}
        self._numeric: dict[str, tuple[int, ...]] = {}
        _live.add(self)

    # -- running driver calls -----------------------------------------------

    async def _call(self, call: Callable[[], Awaitable[Any]], sql: str | None = None) -> Any:
        """Run one driver call: map errors, track the transaction, cancel if abandoned.

        On the connection's loop the call's task is known while it runs, so that
        `terminate` can fail it.
        """
        if _fork.forked:  # inherited from the parent process: psqlpy would wait forever
            raise _fork.inherited()
        self._task = task = _task_of(self._loop) if self._thread == _get_ident() else None
        self._busy = True
        try:
            try:
                result = await call()
            finally:
                self._task = None
                self._busy = False
        except pe.Error as exc:
            error, broken = map_error(exc, self._params.command_timeout is not None)
            self._failed(sql, broken)
            raise error from exc
        except Exception:
            raise
        except BaseException as exc:  # the caller gave up: the query may still run on the server
            self._tx = TxStatus.UNKNOWN
            cut = self._cut
            if task is not None and cut is not None and cut[0] is task:  # by terminate()
                self._cut = None
                if _uncancel(task) == cut[1] and _is_cut(exc):
                    raise ConnectionLost(CUT_MESSAGE) from None
                raise  # also cancelled by someone else since
            if not _on_asyncio():  # a pump dropped this call (GeneratorExit): its runner cancels
                self._abandoned = True
                raise
            if self._broken:  # cut or lost: the connection is dropped, nothing to cancel
                raise
            if POOL_CALL.get():  # the pool's own call: drop, no cancel request
                self.terminate()
                raise
            with anyio.move_on_after(CANCEL_WAIT, shield=True), contextlib.suppress(Exception):
                await self.cancel_server()
            raise
        if sql is not None:
            self._tx = tx_after(sql, self._tx)
        return result

    def _failed(self, sql: str | None, broken: bool) -> None:
        self._broken = self._broken or broken
        if self._tx is TxStatus.INTRANS:
            self._tx = TxStatus.INERROR
        elif sql is not None and len(split_statements(sql)) > 1:
            self._tx = TxStatus.UNKNOWN  # a batch may have opened a transaction

    def _extended(
        self, call: Callable[[], Awaitable[Any]], sql: str | None = None
    ) -> Awaitable[Any]:
        """`_call` for a statement psqlpy sends in several exchanges (parse, then bind and
        execute; unprepared, a ``DEALLOCATE`` between them).

        PgBouncer in transaction mode may give each exchange another server, except
        inside a transaction: unprepared, outside one, the statement runs in one of its own.
        """
        if self._prepared or self._tx is not TxStatus.IDLE:
            return self._call(call, sql)
        return self._in_own_transaction(call, sql)

    async def _in_own_transaction(self, call: Callable[[], Awaitable[Any]], sql: str | None) -> Any:
        raw = self._raw
        await self._call(lambda: raw.execute_batch("BEGIN"))
        try:
            result = await self._call(call, sql)
        except Error:
            await self._abort()
            raise
        await self._call(lambda: raw.execute_batch("COMMIT"))
        return result

    async def _abort(self) -> None:
        """Roll back a transaction of the adapter's own; broken if that fails."""
        if self._broken:
            return
        raw = self._raw
        try:
            await self._call(lambda: raw.execute_batch("ROLLBACK"))
        except Error:
            self._broken = True

    async def cancel_server(self) -> None:
        """Cancel what the connection runs, from a side connection; broken if that failed.

        Behind PgBouncer the server process changes from one transaction to the next and
        its id may be another client's: the connection is given up instead (PgBouncer
        then closes the server connection it was using).
        """
        self._abandoned = False
        if self._bouncer:
            self._broken = True
            return
        try:
            await _cancel_backend(self._params, self._pid, self._started)
        except BaseException:
            self._broken = True
            raise

    @property
    def abandoned(self) -> bool:
        """A pumped call was dropped mid-query: `cancel_server` should run."""
        return self._abandoned and not self._broken

    # -- parameters and results ---------------------------------------------

    async def _values(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """``args`` as psqlpy can send them: numbers for numeric parameters as Decimal."""
        values = list(args)
        if values and any(is_numeric(v) for v in values):
            await self._decimals(sql, [values])
        return values

    async def _decimals(self, sql: str, rows: list[list[Any]]) -> None:
        """Make the numbers in ``rows`` for numeric parameters of ``sql`` Decimal."""
        positions = self._numeric.get(sql)
        if positions is None:
            positions = await self._numeric_params(sql)
        for values in rows:
            for i in positions:
                if i < len(values):
                    values[i] = as_decimal(values[i])

    async def _numeric_params(self, sql: str) -> tuple[int, ...]:
        raw = self._raw
        if self._bouncer:
            types = await self._declared_types(sql)
        else:
            statement = await self._call(lambda: raw.prepare(sql))
            types = await self._call(lambda: raw.fetch_val(_PARAM_TYPES, [sql]))
            del statement  # kept alive until its types were read
        found = tuple(i for i, t in enumerate(types or ()) if t in ("numeric", "numeric[]"))
        _remember(self._numeric, sql, found)
        return found

    async def _declared_types(self, sql: str) -> list[str]:
        """Behind PgBouncer: ``sql``'s parameter types, from an SQL-level ``PREPARE`` made,
        read and dropped in one transaction (the server may change between transactions);
        [] for a statement ``PREPARE`` does not take."""
        statements = split_statements(sql)
        if len(statements) != 1 or first_words(sql)[0] not in _PREPARABLE:
            return []
        raw = self._raw
        # A name no other client uses: should a failure leave the statement behind, it
        # stays on that server connection until PgBouncer closes it.
        name = f"unipool_{secrets.token_hex(8)}"
        opened = self._tx is TxStatus.IDLE
        prepare = f"PREPARE {name} AS {statements[0]}"
        prepared = self._prepared
        try:
            await self._call(lambda: raw.execute_batch(f"BEGIN; {prepare}" if opened else prepare))
            types = await self._call(lambda: raw.fetch_val(_TYPES_OF, [name], prepared=prepared))
        except Error:
            if opened:
                await self._abort()
            raise
        drop = f"DEALLOCATE {name}"
        await self._call(lambda: raw.execute_batch(f"{drop}; COMMIT" if opened else drop))
        return list(types or ())

    async def _learn(self, sql: str, args: list[Any], result: Any) -> tuple[list[Any], Shape]:
        """Decode ``result``, learning what the statement's results need."""
        shape = self._shapes.get(sql)
        rows = None
        if shape is not None:
            with contextlib.suppress(Stale):
                rows = shape.decode(result)
        if shape is None or rows is None:
            shape, rows = await self._new_shape(sql, args, result)
        if rows:
            if shape.learn_uuids(result, rows):
                rows = decode_new(shape, result)
            _remember(self._shapes, sql, shape)
        return rows, shape

    async def _new_shape(self, sql: str, args: list[Any], result: Any) -> tuple[Shape, list[Any]]:
        try:
            rows = result.result(as_tuple=True)
        except pe.RustToPyValueMappingError:
            names = await self._names(sql, args)
            shape = Shape(names, find_decoders(result, names))
            return shape, decode_new(shape, result)
        if not rows:
            return NO_SHAPE, rows
        first = result.result()[0]
        names = tuple(first) if len(first) == len(rows[0]) else await self._names(sql, args)
        return Shape(names, None), rows

    async def _names(self, sql: str, args: list[Any]) -> tuple[str, ...]:
        raw = self._raw
        if self._prepared:
            statement = await self._call(lambda: raw.prepare(sql, args or [None]))
        else:  # psqlpy keeps it prepared: dropped on the server in the same transaction
            statement = await self._extended(lambda: self._prepare_once(sql, args))
        return tuple(column.name for column in statement.columns())

    async def _prepare_once(self, sql: str, args: list[Any]) -> Any:
        """psqlpy's prepared statement for ``sql``, deallocated on the server (in a
        transaction: psqlpy itself would keep it, while the server may change)."""
        raw = self._raw
        statement = await raw.prepare(sql, args or [None])
        found = await raw.fetch(_NAMES_OF, [sql], prepared=False)
        names = [row[0] for row in found.result(as_tuple=True)]
        if names:
            await raw.execute_batch("; ".join(f"DEALLOCATE {quote_ident(n)}" for n in names))
        return statement

    # -- the uniform operations ---------------------------------------------

    async def execute(self, sql: str, args: Sequence[Any]) -> str:
        raw = self._raw
        statements = split_statements(sql)
        if len(statements) > 1 and not args:
            await self._call(lambda: raw.execute_batch(sql), sql)
            self._tx = self._tx_of_batch(statements)
            self._after_ddl(statements)
            return command_tag(statements[-1], 0)
        first = first_words(sql)[0]
        if first not in _ROWS and not args:
            await self._call(lambda: raw.execute_batch(sql), sql)
            self._after_ddl(statements)
            return command_tag(sql, 0)
        if first in ("INSERT", "UPDATE", "DELETE") and not _RETURNING.search(sql):
            counted = f"WITH dml AS ({sql.strip().rstrip(';')}\nRETURNING 1) {_COUNT}"
            values = await self._values(counted, args)
            prepared = self._prepared
            count = await self._extended(
                lambda: raw.fetch_val(counted, values, prepared=prepared), sql
            )
            return command_tag(sql, int(count))
        rows, _ = await self._query(sql, args)
        return command_tag(sql, len(rows))

    def _tx_of_batch(self, statements: list[str]) -> TxStatus:
        tx = self._tx
        for statement in statements[1:]:  # the first one was tracked by _call
            tx = tx_after(statement, tx)
        return tx

    def _after_ddl(self, statements: list[str]) -> None:
        if any(first_words(s)[0] in _DDL for s in statements):
            self._forget()

    def _forget(self) -> None:
        """Forget what statements need: tables may have changed."""
        self._shapes.clear()
        self._numeric.clear()

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        batches = [list(a) for a in args_seq]
        if not batches:
            return
        if any(is_numeric(v) for args in batches for v in args):
            await self._decimals(sql, batches)
        prepared = self._prepared
        await self._extended(lambda: self._raw.execute_many(sql, batches, prepared=prepared), sql)

    async def _query(self, sql: str, args: Sequence[Any]) -> tuple[list[Any], Shape]:
        """Run a statement: its rows as tuples, and its shape."""
        values = await self._values(sql, args)
        prepared = self._prepared
        result = await self._extended(lambda: self._raw.fetch(sql, values, prepared=prepared), sql)
        shape = self._shapes.get(sql)
        if shape is not None and not shape.pending:  # decoded as the statement is known to need
            try:
                return shape.decode(result), shape
            except Stale:
                pass
        return await self._learn(sql, values, result)

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Record]:
        rows, shape = await self._query(sql, args)
        index = shape.index
        return [Record(row, index) for row in rows]

    async def fetchrow(self, sql: str, args: Sequence[Any]) -> Record | None:
        rows = await self.fetch(sql, args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, args: Sequence[Any], column: int) -> Any:
        rows, _ = await self._query(sql, args)
        return rows[0][column] if rows else None

    async def copy_records(self, target: CopyTarget, records: Any) -> str:
        table, schema_name, _ = target
        columns = await self._columns(target)
        numeric = [i for i, (_, kind) in enumerate(columns) if kind.startswith("numeric")]
        rows = [list(r) for r in await collected(records)]
        for row in rows:
            for i in numeric:
                row[i] = as_decimal(row[i])
        names = [name for name, _ in columns]
        count = await self._extended(
            lambda: self._raw.copy_records_to_table(table, rows, names, schema_name)
        )
        return f"COPY {count}"

    async def copy_in(self, target: CopyTarget, source: Any, options: dict[str, Any]) -> str:
        table, schema_name, wanted = target
        data = b"".join([chunk async for chunk in achunks(await collected(source))])
        if options.get("format") == "binary":
            count = await self._extended(
                lambda: self._raw.binary_copy_to_table(data, table, wanted, schema_name)
            )
            return f"COPY {count}"
        rows = parse_copy(data.decode(options.get("encoding") or "utf-8"), options)
        columns = await self._columns(target)
        casts = ", ".join(f"(r->>{i})::{kind}" for i, (_, kind) in enumerate(columns))
        names = ", ".join(quote_ident(name) for name, _ in columns)
        insert = (
            f"INSERT INTO {qualified_name(table, schema_name)} ({names}) SELECT {casts}"
            " FROM json_array_elements($1::text::json) AS r"
        )
        tag = await self.execute(insert, [json.dumps(rows)])
        return "COPY " + tag.rsplit(" ", 1)[-1]

    async def copy_out(self, target: CopyTarget, output: Any, options: dict[str, Any]) -> str:
        if options.get("format") == "binary":
            raise NotSupportedError("psqlpy cannot COPY TO in binary format")
        table, schema_name, _ = target
        columns = await self._columns(target)
        texts = ", ".join(f"{quote_ident(name)}::text" for name, _ in columns)
        select = f"SELECT {texts} FROM {qualified_name(table, schema_name)}"
        prepared = self._prepared
        result = await self._extended(lambda: self._raw.fetch(select, prepared=prepared), select)
        rows = result.result(as_tuple=True)
        lines = format_copy([name for name, _ in columns], rows, options)
        with sink(output) as out:
            out.write(lines.encode(options.get("encoding") or "utf-8"))
        return f"COPY {len(rows)}"

    async def _columns(self, target: CopyTarget) -> list[tuple[str, str]]:
        """The (name, type) of the target's columns, all of them if none were named."""
        table, schema_name, wanted = target
        found = await self.fetch(TABLE_COLUMNS, [qualified_name(table, schema_name)])
        types = {row[0]: row[1] for row in found}
        for name in wanted or ():
            if name not in types:
                message = f'column "{name}" of relation "{table}" does not exist'
                raise make_database_error("42703", message)
        return [(name, types[name]) for name in wanted] if wanted else list(types.items())

    @property
    def raw(self) -> Any:
        """psqlpy's own connection, for a borrower: what is done there is unknown here, so
        the next reset also rolls back any transaction it may have left open."""
        self._tx = TxStatus.UNKNOWN
        return self._raw

    def alive(self) -> bool:
        return not self._broken

    def is_clean(self) -> bool:
        return self._tx is TxStatus.IDLE and not self._broken

    async def ping(self) -> None:
        await self._call(lambda: self._raw.execute_batch("SELECT 1"))

    async def reset(self, dirty: bool) -> bool:
        if self._broken:
            return False
        statement = reset_statement(self._tx is not TxStatus.IDLE, dirty)
        if dirty:
            self._forget()  # temp tables are gone: their statements may differ
        if statement:
            await self._call(lambda: self._raw.execute_batch(statement), "ROLLBACK")
        return self._tx is TxStatus.IDLE

    async def close(self) -> None:
        self.terminate()

    def terminate(self) -> None:
        """Close the connection, from any thread; a call in flight on asyncio fails with
        `ConnectionLost` at once (its task is cancelled, on its own loop)."""
        if self._busy and not (self._broken or self._bouncer or _fork.forked):
            params, pid, started = self._params, self._pid, self._started
            cancel_in_background(lambda: _cancel_in_new_loop(params, pid, started), params.secrets)
        self._broken = True
        _live.discard(self)
        self._raw.close()
        task, loop = self._task, self._loop
        if task is None or loop is None:
            return
        try:
            if asyncio._get_running_loop() is loop:
                self._cut_call(task)
            else:
                loop.call_soon_threadsafe(self._cut_call, task)
        except RuntimeError:  # the loop is closed: nothing runs there any more
            pass

    def _cut_call(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` if it still waits on this connection's driver (on its loop)."""
        cut = self._cut
        if self._task is task and (cut is None or cut[0] is not task) and not task.done():
            self._cut = (task, _cancelling(task))
            task.cancel(_CUT_CANCEL)


async def _cancel_backend(params: ConnectParams, pid: int, started: str) -> None:
    """Cancel what server process ``pid`` runs, from a side connection, if that process
    started at ``started`` (``backend_start`` as text; empty: not checked)."""
    dsn, kwargs = connect_args(params, side=True)
    side = await psqlpy.connect(dsn=dsn, **kwargs)
    try:
        await side.execute(_CANCEL, [pid, started])
    finally:
        side.close()


#: The cancel, only for the session it is meant for (`_SESSION` of ``__init__``).
_CANCEL = (
    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
    " WHERE pid = $1 AND ($2 = '' OR backend_start::text = $2)"
)


def _cancel_in_new_loop(params: ConnectParams, pid: int, started: str) -> None:
    """`_cancel_backend` within `CANCEL_REQUEST_BOUND`, on a loop of its own."""
    asyncio.run(asyncio.wait_for(_cancel_backend(params, pid, started), CANCEL_REQUEST_BOUND))


_get_ident = threading.get_ident
#: ``asyncio.current_task(loop)``: in 3.10 and 3.11 a Python function doing just this lookup.
_task_of: Callable[[Any], asyncio.Task[Any] | None] = (
    asyncio.current_task
    if sys.version_info >= (3, 12)
    else vars(asyncio.tasks)["_current_tasks"].get
)
#: What a call cut by `PsqlpyConn.terminate` fails with, and its task's cancel message.
CUT_MESSAGE = "the connection was cut: the server did not answer"
_CUT_CANCEL = "unipool: psqlpy connection terminated"


def _cancelling(task: asyncio.Task[Any]) -> int:
    """The cancellation requests pending on ``task`` (0 before 3.11)."""
    cancelling = getattr(task, "cancelling", None)
    return 0 if cancelling is None else int(cancelling())


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Withdraw one cancellation request of ``task``: the number left (0 before 3.11)."""
    uncancel = getattr(task, "uncancel", None)
    return 0 if uncancel is None else int(uncancel())


def _is_cut(exc: BaseException) -> bool:
    """Whether ``exc`` is the cancellation `PsqlpyConn.terminate` asked for (before 3.11,
    another one asked for first carries its own message)."""
    return isinstance(exc, asyncio.CancelledError) and exc.args[:1] == (_CUT_CANCEL,)


def _on_asyncio() -> bool:
    """Whether a real asyncio loop runs here (not a pump's stand-in)."""
    return isinstance(asyncio._get_running_loop(), asyncio.AbstractEventLoop)


def _remember(cache: dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


if hasattr(os, "register_at_fork"):  # a child's connections are its parent's: never closed
    os.register_at_fork(after_in_child=_live.clear)


@atexit.register
def _close_all() -> None:
    """psqlpy may abort the interpreter at exit while a connection is open: close them first."""
    for conn in list(_live):
        with contextlib.suppress(Exception):
            conn.terminate()
