"""The psqlpy backend.

psqlpy reports no SQLSTATE, no transaction status, no command tag and no
column types, and has no query cancel, so this adapter makes them up:

- errors: the SQLSTATE is derived from the server's message (`_SQLSTATES`);
- the transaction status is tracked from the statements run;
- command tags are built from the statement and the row count (DML rows are
  counted through a CTE);
- values psqlpy cannot decode (``void``, ``char(n)``, arrays holding NULL) get
  decoders of ours, and ``uuid`` (a ``str`` from psqlpy) becomes `uuid.UUID`.
  What a statement's result needs is learnt on its first run and kept per
  connection and statement text (`_Shape`);
- ``int`` and ``float`` values for ``numeric`` parameters, which psqlpy sends
  malformed, become `Decimal` (parameter types are asked of the server once
  per connection and statement text);
- a call abandoned mid-query is cancelled on the server with
  ``pg_cancel_backend`` from a side connection;
- ``terminate()`` fails a call waiting on the connection at once
  (`ConnectionLost`), which psqlpy's ``close()`` does not;
- behind PgBouncer (the ``pgbouncer`` option), no prepared statement of
  psqlpy's outlives the transaction it was made in (`PsqlpyConn._extended`);
- COPY, which psqlpy has only in binary and only into a table, is emulated
  for text and CSV (parsed here, inserted with a cast per column) and for
  output (the columns selected as text, formatted here).

On asyncio the connections are native. Blocking code and trio drive psqlpy's
coroutines without asyncio (``_psqlpy_pump``), or through the shared asyncio
loop thread if the pump does not work with the installed psqlpy. Blocking
connects go through the loop thread (psqlpy's connect timeout does not cover
the startup handshake; the pump has no timer).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import functools
import json
import re
import secrets
import struct
import sys
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import replace
from decimal import Decimal
from math import prod
from typing import Any

import anyio
import psqlpy
from psqlpy import exceptions as pe

from .._dsn import (
    TCP_PARAMS,
    ConnInfo,
    parse_dsn,
    root_cert,
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
    NotSupportedError,
    make_database_error,
)
from .._record import Record, column_index
from .._sql import RESET_SESSION, quote_ident
from ._copyio import achunks, sink
from .base import POOL_CALL, ConnectParams, CopyTarget, Runtime, TxStatus

#: Seconds a server-side cancel (side connection included) may take.
_CANCEL_TIMEOUT = 5.0
#: Statements whose result shape or parameter types a connection remembers.
_CACHE_MAX = 512

# -- errors ------------------------------------------------------------------

_REPORT = re.compile(
    r"db error: (?P<severity>ERROR|FATAL|PANIC): (?P<message>.*?)"
    r"(?:\nDETAIL: (?P<detail>.*?))?(?:\nHINT: (?P<hint>.*?))?\Z",
    re.S,
)

#: psqlpy reports no SQLSTATE: it is derived from the (English) server message.
_SQLSTATES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), code)
    for pattern, code in (
        (r"^duplicate key value violates unique constraint", "23505"),
        (r"violates foreign key constraint", "23503"),
        (r"violates not-null constraint", "23502"),
        (r"violates check constraint|^check constraint .* is violated", "23514"),
        (r"violates exclusion constraint", "23P01"),
        (r"^division by zero", "22012"),
        (r"^value too long for type", "22001"),
        (r"^date/time field value out of range", "22008"),
        (r"out of range|^numeric field overflow", "22003"),
        (r"^invalid input syntax|^invalid input value for enum|^malformed .* literal", "22P02"),
        (r"^invalid byte sequence for encoding", "22021"),
        (r"^incorrect binary data format", "22P03"),
        (r"^syntax error at|^unterminated |^cannot insert multiple commands", "42601"),
        (r"^could not serialize access|due to conflict with recovery", "40001"),
        (r"^deadlock detected", "40P01"),
        (r"^canceling statement due to (?:user request|statement timeout)", "57014"),
        (r"^canceling statement due to lock timeout|^could not obtain lock", "55P03"),
        (r"in a read-only transaction", "25006"),
        (r"^current transaction is aborted", "25P02"),
        (r"must be called before any query", "25001"),
        (r"^permission denied|^must be owner of", "42501"),
        (r"^(?:relation|table) .* does not exist|^missing FROM-clause entry", "42P01"),
        (r"^column .* does not exist", "42703"),
        (r"^(?:function|operator) .* does not exist", "42883"),
        (r"^relation .* already exists", "42P07"),
        (r"^schema .* does not exist", "3F000"),
        (r"^database .* does not exist", "3D000"),
        (r"^(?:type|role) .* does not exist", "42704"),
        (r"^column reference .* is ambiguous", "42702"),
        (r"^there is no parameter \$", "42P02"),
        (r"^could not determine data type of parameter", "42P18"),
        (r"must appear in the GROUP BY clause", "42803"),
        (r"^argument of .* must be type|but expression is of type", "42804"),
        (r"^cannot cast type", "42846"),
        (r"^more than one row returned by a subquery", "21000"),
        (r"^(?:unnamed prepared statement|prepared statement .*) does not exist", "26000"),
        (r"^prepared statement .* already exists", "42P05"),
        (r"^cursor .* does not exist", "34000"),
        (r"^savepoint .* does not exist", "3B001"),
        (r"^insufficient data left in message|^bind message supplies", "08P01"),
        (r"^cached plan must not change result type", "0A000"),
    )
)
_LOST = re.compile(
    r"connection closed|error communicating with the server|connection reset|broken pipe", re.I
)
_LOST_SQLSTATES = (
    ("administrator command", "57P01"),
    ("idle-in-transaction timeout", "25P03"),
    ("shutting down", "57P03"),
)
_CONNECT_SQLSTATES = (
    ("password authentication failed", "28P01"),
    ('role "', "28000"),  # role "x" does not exist
    ("no pg_hba.conf entry", "28000"),
    ("not currently accepting connections", "55000"),
    ('database "', "3D000"),  # database "x" does not exist
    ("too many clients", "53300"),
    ("too many connections", "53300"),
    ("starting up", "57P03"),
    ("shutting down", "57P03"),
)
#: psqlpy's words for a TLS failure, which no retry can cure.
_TLS_FAILED = (
    "server does not support tls",
    "certificate verify failed",  # not trusted by the root certificate; host name not in it
    "cannot create set ssl",  # the root certificate file is missing or unreadable
)


def _sqlstate(message: str) -> str | None:
    for pattern, code in _SQLSTATES:
        if pattern.search(message):
            return code
    return None


def _map_error(exc: BaseException, timed: bool = False) -> tuple[Error, bool]:
    """The unipool exception for a psqlpy error, and whether the connection broke.

    ``timed``: the pool set ``command_timeout`` (a statement timeout is then a CommandTimeout).
    """
    text = str(exc)
    report = _REPORT.search(text)
    if (
        isinstance(exc, pe.ConnectionClosedError)
        or (report is None and _LOST.search(text))
        or (report is not None and report["severity"] != "ERROR")
    ):
        code = next((c for t, c in _LOST_SQLSTATES if t in text), None)
        return ConnectionLost(text, sqlstate=code), True
    if report is not None:
        message = report["message"]
        code = _sqlstate(message)
        if code == "57014" and timed and "statement timeout" in message:
            return CommandTimeout(message, sqlstate=code), False
        return make_database_error(code, message, report["detail"], report["hint"]), False
    if isinstance(exc, pe.PyToRustValueMappingError):
        return DataError(text), False
    return InterfaceError(text), False


_POOL_NOISE = "Database engine pool exception: Error occurred while creating a new object: "


def _connect_error(exc: BaseException, params: ConnectParams) -> ConnectError:
    message = scrub(str(exc) or "connection timed out", params.secrets).replace(_POOL_NOISE, "")
    lowered = message.lower()
    if "db error:" not in message:  # no server answer: refused, unreachable, timed out, TLS
        tls_failed = any(text in lowered for text in _TLS_FAILED)
        return ConnectError(
            message, dsn=params.dsn, sqlstate="08001", permanent=True if tls_failed else None
        )
    code = next((c for t, c in _CONNECT_SQLSTATES if t in lowered), None)
    return ConnectError(message, dsn=params.dsn, sqlstate=code)


# -- statement text -----------------------------------------------------------

_COMMENTS = re.compile(r"\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*", re.S)
_WORD = re.compile(r"[A-Za-z]+")
_TOKENS = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|(\$[A-Za-z_0-9]*\$).*?\1|;", re.S
)
_COUNT = "SELECT count(*) FROM dml"
_RETURNING = re.compile(r"\breturning\b", re.I)
_MODIFIERS = frozenset({"OR", "REPLACE", "TEMP", "TEMPORARY", "UNLOGGED", "UNIQUE", "GLOBAL",
                        "LOCAL", "RECURSIVE", "TRUSTED", "PROCEDURAL"})  # fmt: skip
_TWO_WORDS = frozenset({"MATERIALIZED", "FOREIGN", "EVENT", "ACCESS", "DEFAULT", "USER"})
_ROWS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN", "FETCH", "INSERT",
                   "UPDATE", "DELETE", "MERGE", "CALL"})  # fmt: skip
_DDL = frozenset({"CREATE", "ALTER", "DROP", "DISCARD"})
_TX_AFTER = {"BEGIN": TxStatus.INTRANS, "START": TxStatus.INTRANS, "COMMIT": TxStatus.IDLE,
             "END": TxStatus.IDLE, "ABORT": TxStatus.IDLE}  # fmt: skip


@functools.lru_cache(maxsize=1024)
def _words(sql: str) -> tuple[str, ...]:
    """The first words of a statement, upper-cased, padded with '' to three at least."""
    start = _COMMENTS.match(sql).end()  # type: ignore[union-attr]  # it matches ''
    if _WORD.match(sql, start) is None:
        return ("", "", "")
    words = [w.upper() for w in _WORD.findall(sql, start, start + 80)[:6]]
    return (*words, *[""] * (3 - len(words)))


def _statements(sql: str) -> list[str]:
    """``sql`` split at its top-level semicolons, without empty statements."""
    if ";" not in sql:
        return [sql]
    parts, start = [], 0
    for token in _TOKENS.finditer(sql):
        if token.group() == ";":
            parts.append(sql[start : token.start()])
            start = token.end()
    parts.append(sql[start:])
    return [p for p in parts if _words(p)[0]]


def _command_tag(sql: str, rows: int) -> str:
    first, *rest = _words(sql)
    if first in ("SELECT", "WITH", "VALUES", "TABLE", "FETCH", "MOVE", "COPY"):
        return f"{first if first in ('FETCH', 'MOVE', 'COPY') else 'SELECT'} {rows}"
    if first == "INSERT":
        return f"INSERT 0 {rows}"
    if first in ("UPDATE", "DELETE", "MERGE"):
        return f"{first} {rows}"
    if first in ("CREATE", "DROP", "ALTER"):
        kind = [w for w in rest if w not in _MODIFIERS][:2] or ["TABLE"]
        return f"{first} {' '.join(kind if kind[0] in _TWO_WORDS else kind[:1])}"
    if first == "START":
        return "START TRANSACTION"
    return first


def _tx_after(sql: str, before: TxStatus) -> TxStatus:
    """The transaction status once ``sql`` succeeded."""
    words = _words(sql)
    first, second = words[0], words[1]
    if "CHAIN" in words and "NO" not in words:  # COMMIT/ROLLBACK AND CHAIN
        return TxStatus.INTRANS
    if first == "ROLLBACK":
        if second == "TO":
            return TxStatus.INTRANS if before is TxStatus.INERROR else before
        return TxStatus.IDLE
    if first == "PREPARE" and second == "TRANSACTION":
        return TxStatus.IDLE
    after = _TX_AFTER.get(first)
    return before if after is None else after


# -- values -------------------------------------------------------------------

_INT4 = struct.Struct(">i")
_ARRAY_HEAD = struct.Struct(">iiI")
_NUMERIC_HEAD = struct.Struct(">hhHh")
_INTERVAL = struct.Struct(">qii")
_NUMERIC_SPECIAL = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}
_Y2K = dt.datetime(2000, 1, 1)
_Y2K_UTC = _Y2K.replace(tzinfo=dt.timezone.utc)
_UUID_OID = 2950
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _unpacker(fmt: str) -> Callable[[bytes], Any]:
    unpack = struct.Struct(fmt).unpack
    return lambda b: unpack(b)[0]


def _numeric(b: bytes) -> Decimal:
    ndigits, weight, sign, dscale = _NUMERIC_HEAD.unpack_from(b)
    if sign in _NUMERIC_SPECIAL:
        return Decimal(_NUMERIC_SPECIAL[sign])
    digits = "".join(f"{d:04d}" for d in struct.unpack_from(f">{ndigits}H", b, 8))
    exponent = 4 * (weight + 1 - ndigits)
    if exponent < -dscale:  # trailing zeros of the last base-10000 digit
        digits = digits[: len(digits) + exponent + dscale]
    else:
        digits += "0" * (exponent + dscale)
    return Decimal((sign == 0x4000, tuple(int(c) for c in digits or "0"), -dscale))


def _interval(b: bytes) -> dt.timedelta:
    micros, days, months = _INTERVAL.unpack(b)
    return dt.timedelta(days=days + 30 * months, microseconds=micros)


_int8 = _unpacker(">q")


def _time(b: bytes) -> dt.time:
    return (_Y2K + dt.timedelta(microseconds=_int8(b))).time()


#: Binary decoders of array elements, by type OID (psqlpy's own cannot take NULLs).
_ELEMENTS: dict[int, Callable[[bytes], Any]] = {
    16: lambda b: b != b"\x00",
    17: bytes,
    18: bytes.decode, 19: bytes.decode, 25: bytes.decode, 142: bytes.decode,
    1042: bytes.decode, 1043: bytes.decode,
    20: _int8, 21: _unpacker(">h"), 23: _unpacker(">i"), 26: _unpacker(">I"),
    700: _unpacker(">f"), 701: _unpacker(">d"),
    114: json.loads, 3802: lambda b: json.loads(b[1:]),
    1082: lambda b: _Y2K.date() + dt.timedelta(days=_INT4.unpack(b)[0]),
    1083: _time,
    1114: lambda b: _Y2K + dt.timedelta(microseconds=_int8(b)),
    1184: lambda b: _Y2K_UTC + dt.timedelta(microseconds=_int8(b)),
    1186: _interval,
    1700: _numeric,
    _UUID_OID: lambda b: _uuid(b),
}  # fmt: skip


_MIXED = "columns sharing a name must have one type: give them distinct names"


def _array(b: bytes) -> list[Any]:
    """A binary array, NULLs included."""
    ndim, flags, oid = _ARRAY_HEAD.unpack_from(b)
    if not 0 <= ndim <= 6 or flags not in (0, 1):
        raise ValueError(f"not an array: {_MIXED}")
    if ndim == 0:
        return []
    element = _ELEMENTS.get(oid)
    if element is None:
        raise ValueError(f"psqlpy cannot decode arrays of type OID {oid} holding NULL")
    dims = [_INT4.unpack_from(b, 12 + 8 * i)[0] for i in range(ndim)]
    pos = 12 + 8 * ndim
    values: list[Any] = []
    for _ in range(prod(dims)):
        (size,) = _INT4.unpack_from(b, pos)
        pos += 4
        if size < 0:
            values.append(None)
        else:
            values.append(element(b[pos : pos + size]))
            pos += size
    if pos != len(b):
        raise ValueError(f"not an array: {_MIXED}")
    for size in reversed(dims[1:]):
        values = [values[i : i + size] for i in range(0, len(values), size)]
    return values


def _array_or_element(oid: int, b: bytes) -> Any:
    """An array, or else one ``oid`` value: the columns sharing an array's name may be either.

    (A cast names its column after the type: ``x::numeric, y::numeric[]`` are both "numeric".)
    """
    with contextlib.suppress(ValueError, struct.error):
        return _array(b)
    return _ELEMENTS[oid](b)


def _void(b: bytes) -> None:
    if b:
        raise ValueError(f"not a void: {_MIXED}")


def _text(b: bytes) -> str:
    text = b.decode()
    if "\x00" in text:  # never in PostgreSQL text: another type's binary form
        raise ValueError(f"not a text: {_MIXED}")
    return text


#: Element type OIDs by name, as psqlpy names array types ("_" + this).
_OIDS = {"bool": 16, "bytea": 17, "char": 18, "name": 19, "int8": 20, "int2": 21, "int4": 23,
         "text": 25, "oid": 26, "json": 114, "xml": 142, "float4": 700, "float8": 701,
         "bpchar": 1042, "varchar": 1043, "date": 1082, "time": 1083, "timestamp": 1114,
         "timestamptz": 1184, "interval": 1186, "numeric": 1700, "uuid": 2950,
         "jsonb": 3802}  # fmt: skip

#: Decoders for the types psqlpy refuses, by the type name in its error.
_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "void": _void,
    "bpchar": _text,
    "citext": _text,
}
_FAILED_TYPE = re.compile(r"Cannot convert (?:PostgreSQL type )?(\S+) into Python type")


def _decoder_for(error: BaseException) -> tuple[str, Callable[[bytes], Any] | None]:
    """The type named in psqlpy's decoding error, and a decoder of ours for it."""
    text = str(error)
    match = _FAILED_TYPE.search(text)
    name = match.group(1) if match else text.rsplit(": ", 1)[-1].strip()
    if name.startswith("_"):
        oid = _OIDS.get(name[1:])
        return name, _array if oid is None else functools.partial(_array_or_element, oid)
    return name, _DECODERS.get(name)


def _raw(b: bytes) -> bytes:
    return b


_new_uuid = object.__new__
_set = object.__setattr__


def _uuid(b: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes=b)``, as ``UUID.__init__`` ends, without its checks (a third faster)."""
    if len(b) != 16:
        raise ValueError("not a uuid")
    value: uuid.UUID = _new_uuid(uuid.UUID)
    _set(value, "int", int.from_bytes(b, "big"))
    _set(value, "is_safe", uuid.SafeUUID.unknown)
    return value


def _first_value(rows: list[tuple[Any, ...]], i: int) -> Any:
    return next((row[i] for row in rows if row[i] is not None), None)


def _first_scalar(value: Any) -> Any:
    while type(value) is list:
        value = next((v for v in value if v is not None), None)
    return value


def _to_uuid(value: Any) -> Any:
    if type(value) is list:
        return [_to_uuid(v) for v in value]
    return None if value is None else uuid.UUID(value)


def _is_uuid(raw: bytes, value: Any) -> bool:
    """Whether psqlpy's raw bytes for ``value`` are a uuid, or an array of uuid."""
    if type(value) is list:
        return bool(_ARRAY_HEAD.unpack_from(raw)[2] == _UUID_OID)
    return len(raw) == 16


class _Stale(Exception):
    """A statement's results no longer decode as learnt (or never did)."""


class _Shape:
    """What one statement's results need: names, decoders for psqlpy, uuid columns."""

    __slots__ = ("decoders", "index", "keys", "names", "pending", "uuids")

    def __init__(self, names: tuple[str, ...], decoders: dict[str, Any] | None) -> None:
        self.names = names
        self.index = column_index(names)
        #: psqlpy's ``custom_decoders``: by lower-cased column name
        self.keys = [name.lower() for name in names]
        self.decoders = decoders or None
        #: uuid columns sharing their name with another: converted after decoding
        self.uuids: tuple[int, ...] = ()
        #: columns not seen holding a value yet (they may turn out to be uuid)
        self.pending = tuple(i for i, key in enumerate(self.keys) if key not in (decoders or ()))

    def decode(self, result: Any) -> list[tuple[Any, ...]]:
        """The rows of ``result``.

        Raises:
            _Stale: a value psqlpy or a decoder of ours cannot decode, or a row of
                another width: the statement changed, or needs what is not known.
        """
        try:
            rows: list[tuple[Any, ...]] = result.result(
                as_tuple=True, custom_decoders=self.decoders
            )
        except Exception as exc:  # psqlpy's RustToPyValueMappingError, or a decoder's
            raise _Stale(str(exc)) from exc
        if rows and len(rows[0]) != len(self.names):
            raise _Stale(f"{len(rows[0])} columns, not {len(self.names)}")
        if not self.uuids:
            return rows
        uuids = self.uuids
        fixed = []
        for row in rows:
            values = list(row)
            for i in uuids:
                values[i] = _to_uuid(values[i])
            fixed.append(tuple(values))
        return fixed

    def learn_uuids(self, result: Any, rows: list[tuple[Any, ...]]) -> bool:
        """Settle the pending columns holding a value in ``rows``; True if a uuid was found."""
        pending, candidates = [], []
        for i in self.pending:
            scalar = _first_scalar(_first_value(rows, i))
            if scalar is None:
                pending.append(i)
            elif type(scalar) is str and _UUID_TEXT.fullmatch(scalar):
                candidates.append(i)
        self.pending = tuple(pending)
        if not candidates:
            return False
        probe = {**(self.decoders or {}), **{self.keys[i]: _raw for i in candidates}}
        raw = result.result(as_tuple=True, custom_decoders=probe)
        found = [i for i in candidates if _is_uuid(_first_value(raw, i), _first_value(rows, i))]
        decoders, uuids = dict(self.decoders or {}), list(self.uuids)
        for i in found:
            if self.keys.count(self.keys[i]) > 1:
                uuids.append(i)
            else:
                decoders[self.keys[i]] = _array if type(_first_value(rows, i)) is list else _uuid
        self.decoders, self.uuids = decoders or None, tuple(uuids)
        return bool(found)


_NO_SHAPE = _Shape((), None)


def _decode_new(shape: _Shape, result: Any) -> list[tuple[Any, ...]]:
    try:
        return shape.decode(result)
    except _Stale as exc:
        raise InterfaceError(f"psqlpy: cannot decode a value: {exc}") from exc.__cause__


def _find_decoders(result: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Decoders for the columns psqlpy cannot decode, found one column at a time."""
    keys = [n.lower() for n in names]
    decoders: dict[str, Any] = {}
    for key in dict.fromkeys(keys):
        others = {k: _raw for k in keys if k != key}
        try:
            result.result(as_tuple=True, custom_decoders=others)
        except pe.RustToPyValueMappingError as exc:
            type_name, decoder = _decoder_for(exc)
            if decoder is None:
                raise InterfaceError(
                    f"psqlpy cannot decode column {key!r} of type {type_name}: cast it in "
                    f"SQL (e.g. {key}::text)"
                ) from exc
            decoders[key] = decoder  # also for the columns sharing its name: it checks
    return decoders


def _is_numeric(value: Any) -> bool:
    kind = type(value)
    if kind is list:
        return any(_is_numeric(v) for v in value)
    return kind is int or kind is float


def _decimal(value: Any) -> Any:
    kind = type(value)
    if kind is list:
        return [_decimal(v) for v in value]
    if kind is int:
        return Decimal(value)
    if kind is float:
        return Decimal(repr(value))
    return value


# -- connections ---------------------------------------------------------------

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

    __slots__ = ("__weakref__", "_abandoned", "_bouncer", "_broken", "_cut", "_loop",
                 "_numeric", "_params", "_pid", "_prepared", "_shapes", "_task", "_thread",
                 "_tx", "raw")  # fmt: skip

    def __init__(
        self, raw: Any, pid: int, params: ConnectParams, *, unprepared: bool = False
    ) -> None:
        """``unprepared``: behind a pooler that may run each step of a statement on another
        server, psqlpy prepares nothing that lasts, and statements run in transactions."""
        self.raw = raw
        self._pid = pid
        self._params = params
        #: behind PgBouncer: no server process of our own (``pid`` is 0)
        self._bouncer = params.pgbouncer
        self._prepared = not unprepared
        self._tx = TxStatus.IDLE
        self._broken = False
        self._abandoned = False
        #: the asyncio loop the connection was opened on, and its thread (None: a pump's)
        loop = asyncio._get_running_loop()
        self._loop = loop if isinstance(loop, asyncio.AbstractEventLoop) else None
        self._thread = None if self._loop is None else threading.get_ident()
        #: the task of ``_loop`` whose driver call is in flight, if any
        self._task: asyncio.Task[Any] | None = None
        #: the task `terminate` cancelled to fail its call, and the cancellation
        #: requests it had before (a release's reset may run in a cancelled task)
        self._cut: tuple[asyncio.Task[Any], int] | None = None
        self._shapes: dict[str, _Shape] = {}
        self._numeric: dict[str, tuple[int, ...]] = {}
        _live.add(self)

    # -- running driver calls -----------------------------------------------

    async def _call(self, call: Callable[[], Awaitable[Any]], sql: str | None = None) -> Any:
        """Run one driver call: map errors, track the transaction, cancel if abandoned.

        On the connection's loop the call's task is known while it runs, so that
        `terminate` can fail it.
        """
        self._task = task = _task_of(self._loop) if self._thread == _get_ident() else None
        try:
            try:
                result = await call()
            finally:
                self._task = None
        except pe.Error as exc:
            error, broken = _map_error(exc, self._params.command_timeout is not None)
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
                    raise ConnectionLost(_CUT_MESSAGE) from None
                raise  # also cancelled by someone else since
            if not _on_asyncio():  # a pump dropped this call (GeneratorExit): its runner cancels
                self._abandoned = True
                raise
            if self._broken:  # cut or lost: the connection is dropped, nothing to cancel
                raise
            if POOL_CALL.get():  # the pool's own call: drop, no cancel request
                self.terminate()
                raise
            with anyio.move_on_after(_CANCEL_TIMEOUT, shield=True), contextlib.suppress(Exception):
                await self.cancel_server()
            raise
        if sql is not None:
            self._tx = _tx_after(sql, self._tx)
        return result

    def _failed(self, sql: str | None, broken: bool) -> None:
        self._broken = self._broken or broken
        if self._tx is TxStatus.INTRANS:
            self._tx = TxStatus.INERROR
        elif sql is not None and len(_statements(sql)) > 1:
            self._tx = TxStatus.UNKNOWN  # a batch may have opened a transaction

    async def _extended(self, call: Callable[[], Awaitable[Any]], sql: str | None = None) -> Any:
        """`_call` for a statement psqlpy sends in several exchanges (parse, then bind and
        execute; unprepared, a ``DEALLOCATE`` between them).

        PgBouncer in transaction mode may give each exchange another server, except
        inside a transaction: unprepared, outside one, the statement runs in one of its own.
        """
        if self._prepared or self._tx is not TxStatus.IDLE:
            return await self._call(call, sql)
        raw = self.raw
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
        raw = self.raw
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
            dsn, kwargs = _connect_args(self._params)
            side = await psqlpy.connect(dsn=dsn, **kwargs)
            try:
                await side.execute("SELECT pg_cancel_backend($1)", [self._pid])
            finally:
                side.close()
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
        if any(_is_numeric(v) for v in values):
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
                    values[i] = _decimal(values[i])

    async def _numeric_params(self, sql: str) -> tuple[int, ...]:
        raw = self.raw
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
        statements = _statements(sql)
        if len(statements) != 1 or _words(sql)[0] not in _PREPARABLE:
            return []
        raw = self.raw
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

    def _decoded(self, sql: str, result: Any) -> tuple[list[Any], _Shape] | None:
        """``result`` decoded as the statement is known to need; None: learn first."""
        shape = self._shapes.get(sql)
        if shape is None or shape.pending:
            return None
        try:
            return shape.decode(result), shape
        except _Stale:
            return None

    async def _learn(self, sql: str, args: list[Any], result: Any) -> tuple[list[Any], _Shape]:
        """Decode ``result``, learning what the statement's results need."""
        shape = self._shapes.get(sql)
        rows = None
        if shape is not None:
            with contextlib.suppress(_Stale):
                rows = shape.decode(result)
        if shape is None or rows is None:
            shape, rows = await self._new_shape(sql, args, result)
        if rows:
            if shape.learn_uuids(result, rows):
                rows = _decode_new(shape, result)
            _remember(self._shapes, sql, shape)
        return rows, shape

    async def _new_shape(self, sql: str, args: list[Any], result: Any) -> tuple[_Shape, list[Any]]:
        try:
            rows = result.result(as_tuple=True)
        except pe.RustToPyValueMappingError:
            names = await self._names(sql, args)
            shape = _Shape(names, _find_decoders(result, names))
            return shape, _decode_new(shape, result)
        if not rows:
            return _NO_SHAPE, rows
        first = result.result()[0]
        names = tuple(first) if len(first) == len(rows[0]) else await self._names(sql, args)
        return _Shape(names, None), rows

    async def _names(self, sql: str, args: list[Any]) -> tuple[str, ...]:
        raw = self.raw
        if self._prepared:
            statement = await self._call(lambda: raw.prepare(sql, args or [None]))
        else:  # psqlpy keeps it prepared: dropped on the server in the same transaction
            statement = await self._extended(lambda: self._prepare_once(sql, args))
        return tuple(column.name for column in statement.columns())

    async def _prepare_once(self, sql: str, args: list[Any]) -> Any:
        """psqlpy's prepared statement for ``sql``, deallocated on the server (in a
        transaction: psqlpy itself would keep it, while the server may change)."""
        raw = self.raw
        statement = await raw.prepare(sql, args or [None])
        found = await raw.fetch(_NAMES_OF, [sql], prepared=False)
        names = [row[0] for row in found.result(as_tuple=True)]
        if names:
            await raw.execute_batch("; ".join(f"DEALLOCATE {quote_ident(n)}" for n in names))
        return statement

    # -- the uniform operations ---------------------------------------------

    async def execute(self, sql: str, args: Sequence[Any]) -> str:
        raw = self.raw
        statements = _statements(sql)
        if len(statements) > 1 and not args:
            await self._call(lambda: raw.execute_batch(sql), sql)
            self._tx = self._tx_of_batch(statements)
            self._after_ddl(statements)
            return _command_tag(statements[-1], 0)
        first = _words(sql)[0]
        if first not in _ROWS and not args:
            await self._call(lambda: raw.execute_batch(sql), sql)
            self._after_ddl(statements)
            return _command_tag(sql, 0)
        if first in ("INSERT", "UPDATE", "DELETE") and not _RETURNING.search(sql):
            counted = f"WITH dml AS ({sql.strip().rstrip(';')}\nRETURNING 1) {_COUNT}"
            values = await self._values(counted, args)
            prepared = self._prepared
            count = await self._extended(
                lambda: raw.fetch_val(counted, values, prepared=prepared), sql
            )
            return _command_tag(sql, int(count))
        rows, _ = await self._query(sql, args)
        return _command_tag(sql, len(rows))

    def _tx_of_batch(self, statements: list[str]) -> TxStatus:
        tx = self._tx
        for statement in statements[1:]:  # the first one was tracked by _call
            tx = _tx_after(statement, tx)
        return tx

    def _after_ddl(self, statements: list[str]) -> None:
        if any(_words(s)[0] in _DDL for s in statements):
            self._forget()

    def _forget(self) -> None:
        """Forget what statements need: tables may have changed."""
        self._shapes.clear()
        self._numeric.clear()

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        batches = [list(a) for a in args_seq]
        if not batches:
            return
        if any(_is_numeric(v) for args in batches for v in args):
            await self._decimals(sql, batches)
        prepared = self._prepared
        await self._extended(lambda: self.raw.execute_many(sql, batches, prepared=prepared), sql)

    async def _query(self, sql: str, args: Sequence[Any]) -> tuple[list[Any], _Shape]:
        """Run a statement: its rows as tuples, and its shape."""
        values = await self._values(sql, args)
        prepared = self._prepared
        result = await self._extended(lambda: self.raw.fetch(sql, values, prepared=prepared), sql)
        return self._decoded(sql, result) or await self._learn(sql, values, result)

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
        rows = [list(r) for r in await _collected(records)]
        for row in rows:
            for i in numeric:
                row[i] = _decimal(row[i])
        names = [name for name, _ in columns]
        count = await self._extended(
            lambda: self.raw.copy_records_to_table(table, rows, names, schema_name)
        )
        return f"COPY {count}"

    async def copy_in(self, target: CopyTarget, source: Any, options: dict[str, Any]) -> str:
        data = b"".join([chunk async for chunk in achunks(await _collected(source))])
        if options.get("format") == "binary":
            table, schema_name, wanted = target
            count = await self._extended(
                lambda: self.raw.binary_copy_to_table(data, table, wanted, schema_name)
            )
            return f"COPY {count}"
        rows = _parse_copy(data.decode(options.get("encoding") or "utf-8"), options)
        columns = await self._columns(target)
        casts = ", ".join(f"(r->>{i})::{kind}" for i, (_, kind) in enumerate(columns))
        names = ", ".join(quote_ident(name) for name, _ in columns)
        insert = (
            f"INSERT INTO {_qualified(target)} ({names}) SELECT {casts}"
            " FROM json_array_elements($1::text::json) AS r"
        )
        tag = await self.execute(insert, [json.dumps(rows)])
        return "COPY " + tag.rsplit(" ", 1)[-1]

    async def copy_out(self, target: CopyTarget, output: Any, options: dict[str, Any]) -> str:
        if options.get("format") == "binary":
            raise NotSupportedError("psqlpy cannot COPY TO in binary format")
        columns = await self._columns(target)
        texts = ", ".join(f"{quote_ident(name)}::text" for name, _ in columns)
        select = f"SELECT {texts} FROM {_qualified(target)}"
        prepared = self._prepared
        result = await self._extended(lambda: self.raw.fetch(select, prepared=prepared), select)
        rows = result.result(as_tuple=True)
        lines = _format_copy([name for name, _ in columns], rows, options)
        with sink(output) as out:
            out.write(lines.encode(options.get("encoding") or "utf-8"))
        return f"COPY {len(rows)}"

    async def _columns(self, target: CopyTarget) -> list[tuple[str, str]]:
        """The (name, type) of the target's columns, all of them if none were named."""
        table, _, wanted = target
        found = await self.fetch(_TABLE_COLUMNS, [_qualified(target)])
        types = {row[0]: row[1] for row in found}
        for name in wanted or ():
            if name not in types:
                message = f'column "{name}" of relation "{table}" does not exist'
                raise make_database_error("42703", message)
        return [(name, types[name]) for name in wanted] if wanted else list(types.items())

    def alive(self) -> bool:
        return not self._broken

    def is_clean(self) -> bool:
        return self._tx is TxStatus.IDLE and not self._broken

    async def ping(self) -> None:
        await self._call(lambda: self.raw.execute_batch("SELECT 1"))

    async def reset(self, dirty: bool) -> bool:
        if self._broken:
            return False
        parts = [] if self._tx is TxStatus.IDLE else ["ROLLBACK"]
        if dirty:
            parts.append(RESET_SESSION)
            self._forget()  # temp tables are gone: their statements may differ
        if parts:
            statement = "; ".join(parts)
            await self._call(lambda: self.raw.execute_batch(statement), "ROLLBACK")
        return self._tx is TxStatus.IDLE

    async def close(self) -> None:
        self.terminate()

    def terminate(self) -> None:
        """Close the connection, from any thread; a call in flight on asyncio fails with
        `ConnectionLost` at once (its task is cancelled, on its own loop)."""
        self._broken = True
        _live.discard(self)
        self.raw.close()
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


_get_ident = threading.get_ident
#: ``asyncio.current_task(loop)``: in 3.10 and 3.11 a Python function doing just this lookup.
_task_of: Callable[[Any], asyncio.Task[Any] | None] = (
    asyncio.current_task
    if sys.version_info >= (3, 12)
    else vars(asyncio.tasks)["_current_tasks"].get
)
#: What a call cut by `PsqlpyConn.terminate` fails with, and its task's cancel message.
_CUT_MESSAGE = "the connection was cut: the server did not answer"
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


# -- COPY, emulated where psqlpy has none ------------------------------------------
# psqlpy copies only binary data into a table. Text and CSV input is parsed here
# and inserted through the server's input functions (a cast per column); output
# is a SELECT of the columns as text, formatted here.

_TABLE_COLUMNS = (
    "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped"
    " AND attgenerated = '' ORDER BY attnum"
)
_UNESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)", re.S)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPED = {v: "\\" + k for k, v in _ESCAPES.items()} | {"\\": "\\\\"}
_LINES = re.compile(r"\r\n|\r|\n")


def _qualified(target: CopyTarget) -> str:
    table, schema_name, _ = target
    name = quote_ident(table)
    return name if schema_name is None else f"{quote_ident(schema_name)}.{name}"


async def _collected(value: Any) -> Any:
    """``value``, or the list of its items if it is an async iterable."""
    if hasattr(value, "__aiter__"):
        return [item async for item in value]
    return value


def _unescaped(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code[0] in "01234567":
        return chr(int(code, 8))
    return _ESCAPES.get(code, code)


def _text_fields(line: str, delimiter: str, null: str) -> list[str | None]:
    """One line of COPY text format: split at unescaped delimiters, then unescaped."""
    fields, start, i = [], 0, 0
    while i < len(line):
        if line[i] == "\\":
            i += 1
        elif line[i] == delimiter:
            fields.append(line[start:i])
            start = i + 1
        i += 1
    fields.append(line[start:])
    return [None if f == null else _UNESCAPE.sub(_unescaped, f) for f in fields]


def _csv_rows(text: str, delimiter: str, quote: str, escape: str, null: str) -> list[list[Any]]:
    """CSV as COPY reads it: an unquoted field equal to ``null`` is NULL."""
    rows: list[list[Any]] = []
    row: list[Any] = []
    field: list[str] = []
    quoted = in_quotes = False
    i, end = 0, len(text)
    while i < end:
        c = text[i]
        if in_quotes:
            if (
                c == escape
                and i + 1 < end
                and text[i + 1] in (quote, escape)
                and (escape != quote or text[i + 1] == quote)
            ):
                field.append(text[i + 1])
                i += 1
            elif c == quote:
                in_quotes = False
            else:
                field.append(c)
        elif c == quote:
            in_quotes = quoted = True
        elif c in (delimiter, "\r", "\n"):
            value = "".join(field)
            row.append(None if not quoted and value == null else value)
            field, quoted = [], False
            if c != delimiter:
                rows.append(row)
                row = []
                i += c == "\r" and text[i + 1 : i + 2] == "\n"
        else:
            field.append(c)
        i += 1
    if field or quoted or row:
        value = "".join(field)
        rows.append([*row, None if not quoted and value == null else value])
    return rows


def _parse_copy(text: str, options: dict[str, Any]) -> list[list[Any]]:
    """The rows of COPY text or CSV data, fields as text or None."""
    if options.get("format") == "csv":
        quote = options.get("quote", '"')
        rows = _csv_rows(text, options.get("delimiter", ","), quote,
                         options.get("escape", quote), options.get("null", ""))  # fmt: skip
    else:
        delimiter, null = options.get("delimiter", "\t"), options.get("null", "\\N")
        lines = _LINES.split(text)
        if lines and lines[-1] == "":
            lines.pop()
        if "\\." in lines:
            lines = lines[: lines.index("\\.")]
        rows = [_text_fields(line, delimiter, null) for line in lines]
    return rows[1:] if options.get("header") else rows


def _csv_field(value: str | None, delimiter: str, quote: str, escape: str, null: str) -> str:
    if value is None:
        return null
    if value == null or any(c in value for c in (delimiter, quote, "\r", "\n")):
        escaped = "".join(escape + c if c in (quote, escape) else c for c in value)
        return quote + escaped + quote
    return value


def _text_field(value: str | None, delimiter: str, null: str) -> str:
    if value is None:
        return null
    escapes = {delimiter: "\\" + delimiter, **_ESCAPED}
    return "".join(escapes.get(c, c) for c in value)


def _format_copy(names: list[str], rows: list[tuple[Any, ...]], options: dict[str, Any]) -> str:
    """Rows of text values as COPY writes them in text or CSV format."""
    if options.get("format") == "csv":
        quote = options.get("quote", '"')
        args = (options.get("delimiter", ","), quote, options.get("escape", quote),
                options.get("null", ""))  # fmt: skip
        delimiter = args[0]
        lines = [delimiter.join(_csv_field(v, *args) for v in row) for row in rows]
        header = delimiter.join(_csv_field(n, *args) for n in names)
    else:
        delimiter, null = options.get("delimiter", "\t"), options.get("null", "\\N")
        lines = [delimiter.join(_text_field(v, delimiter, null) for v in row) for row in rows]
        header = delimiter.join(_text_field(n, delimiter, null) for n in names)
    if options.get("header"):
        lines.insert(0, header)
    return "".join(line + "\n" for line in lines)


def _remember(cache: dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


# -- connecting -----------------------------------------------------------------


#: libpq parameters psqlpy's DSN parser takes as they are, ...
_NATIVE = frozenset(
    {
        "options",
        "application_name",
        "connect_timeout",
        "target_session_attrs",
        "load_balance_hosts",
        "channel_binding",
        "hostaddr",
    }
)
#: ... those the adapter passes its own way (`_connect_args`) ...
_MAPPED = frozenset({"sslmode", "sslrootcert", *TCP_PARAMS})
#: ... and those it drops, for values that ask for nothing psqlpy would not do anyway.
#: Any other parameter is refused at ``unipool.connect()``.
_MOOT: dict[str, tuple[str, ...] | None] = {
    "gssencmode": ("disable", "prefer", "allow"),
    "sslsni": None,
    "sslcompression": None,
    "fallback_application_name": None,
}
_SSL_MODES = {
    "disable": "Disable",
    "allow": "Allow",
    "prefer": "Prefer",
    "require": "Require",
    "verify-ca": "VerifyCa",
    "verify-full": "VerifyFull",
}


def _check_dsn(info: ConnInfo) -> None:
    """Refuse, at ``unipool.connect()``, libpq parameters psqlpy cannot honour."""
    verify = info.params.get("sslmode") in ("verify-ca", "verify-full")
    if verify and root_cert(info) == "system" and system_ca_file() is None:
        raise ValueError(
            "invalid DSN for the psqlpy backend: sslrootcert=system, but no system "
            "certificate bundle was found: give its path"
        )
    for key, value in info.params.items():
        if key in _NATIVE or key in _MAPPED:
            continue
        allowed = _MOOT.get(key, ())
        if key not in _MOOT or (allowed and value not in allowed):
            shown = f"{key}={value}" if allowed else key
            raise ValueError(f"invalid DSN for the psqlpy backend: it cannot honour {shown!r}")


def _connect_args(params: ConnectParams) -> tuple[str, dict[str, Any]]:
    """psqlpy's DSN and keyword arguments for ``params``.

    ``server_settings`` and ``command_timeout`` become ``-c`` options; ``sslmode`` and
    ``sslrootcert`` become ``ssl_mode`` and ``ca_file`` (psqlpy's DSN parser ignores the
    former's verify modes and refuses the latter); the TCP options are spelt psqlpy's way
    (its ``tcp_user_timeout`` is in seconds, libpq's in milliseconds).
    """
    info = parse_dsn(params.dsn)
    kwargs = {
        k: v for k, v in params.kwargs.items() if k != "server_settings" and k not in TCP_PARAMS
    }
    # psqlpy ignores credentials passed beside a DSN: they go into it.
    password = kwargs.pop("password", None)
    user = kwargs.pop("user", None) or kwargs.pop("username", None)
    if password is not None or user is not None:
        info = replace(
            info,
            user=info.user if user is None else str(user),
            password=info.password if password is None else str(password),
        )
    query = {k: v for k, v in info.params.items() if k in _NATIVE}
    fallback = info.params.get("fallback_application_name")
    if fallback and "application_name" not in query:
        query["application_name"] = fallback
    settings = dict(params.kwargs.get("server_settings") or {})
    if params.pgbouncer and "application_name" in settings:
        # PgBouncer takes application_name as a parameter of its own; it refuses `options`.
        query["application_name"] = str(settings.pop("application_name"))
    if params.command_timeout is not None:
        settings.setdefault("statement_timeout", f"{int(params.command_timeout * 1000)}ms")
    if settings:
        options = [query.get("options", "")]
        for key, value in settings.items():
            escaped = str(value).replace("\\", "\\\\").replace(" ", "\\ ")
            options.append(f"-c {key}={escaped}")
        query["options"] = " ".join(o for o in options if o)
    tcp = tcp_options(info.params, params.kwargs)
    query["keepalives"] = "1" if tcp.keepalives else "0"
    if tcp.keepalives:
        for key, value in (
            ("keepalives_idle", tcp.idle),
            ("keepalives_interval", tcp.interval),
            ("keepalives_retries", tcp.count),
        ):
            if value:  # 0: the system's default, as in libpq
                query[key] = str(value)
    if tcp.user_timeout:
        seconds, millis = divmod(tcp.user_timeout, 1000)
        kwargs.setdefault("tcp_user_timeout_sec", seconds)
        kwargs.setdefault("tcp_user_timeout_nanosec", millis * 1_000_000)
    sslmode = info.params.get("sslmode")
    rootcert = info.params.get("sslrootcert")
    if sslmode in ("verify-ca", "verify-full"):
        # psqlpy's verify modes fall back to plain text when the server has no TLS; its
        # "require" with a root certificate verifies the chain and the host name.
        kwargs.setdefault("ssl_mode", psqlpy.SslMode.Require)
        rootcert = root_cert(info)
    elif sslmode in _SSL_MODES:
        kwargs.setdefault("ssl_mode", getattr(psqlpy.SslMode, _SSL_MODES[sslmode]))
    if rootcert == "system":
        rootcert = system_ca_file()
    if rootcert:
        kwargs.setdefault("ca_file", rootcert)
    return replace(info, params=query).to_uri(), kwargs


async def _connect(params: ConnectParams) -> PsqlpyConn:
    dsn, kwargs = _connect_args(params)
    if params.connect_timeout is not None:
        kwargs.setdefault("connect_timeout_sec", max(1, int(params.connect_timeout)))
    try:
        if params.factory is not None:
            raw = await params.factory(dsn, **kwargs)
        else:
            raw = await psqlpy.connect(dsn=dsn, **kwargs)
    except pe.Error as exc:
        raise _connect_error(exc, params) from exc
    try:
        if params.pgbouncer:
            unprepared = await _names_pass_through(raw)
            return PsqlpyConn(raw, 0, params, unprepared=unprepared)
        pid = await raw.fetch_val("SELECT pg_backend_pid()")
    except BaseException as exc:
        raw.close()
        if isinstance(exc, pe.Error):
            raise _connect_error(exc, params) from exc
        raise
    return PsqlpyConn(raw, int(pid), params)


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
        report = _REPORT.search(str(exc))
        if report is None or _sqlstate(report["message"]) != "26000":
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
        raise _connect_error(exc, params) from exc


# -- running in each world --------------------------------------------------------


def _pump_works() -> bool:
    from ._psqlpy_pump import pump_works

    return pump_works()


def _loop_call(fn: Callable[..., Awaitable[Any]], *args: Any, timeout: float | None = None) -> Any:
    from ._bridge import shared_loop

    return shared_loop().call(fn, *args, timeout=timeout)


async def _loop_acall(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    from ._bridge import shared_loop

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
            pump.abort(ConnectionLost(_CUT_MESSAGE))


class _PumpRunner(_Pumped):
    """``run(fn, *args)`` for blocking code through the pump."""

    __slots__ = ()

    def __call__(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        from ._psqlpy_pump import _SyncPump, pump_sync

        self._pump = pump = _SyncPump()
        try:
            return pump_sync(fn(*args), pump)
        except BaseException:  # KeyboardInterrupt: the query may still run
            if self._conn.abandoned:
                with contextlib.suppress(Exception):
                    _loop_call(self._conn.cancel_server, timeout=_CANCEL_TIMEOUT)
            raise
        finally:
            self._pump = None


def _sync_runner(conn: PsqlpyConn) -> Callable[..., Any]:
    """``run(fn, *args)`` for blocking code: the pump, or the shared loop thread."""
    return _PumpRunner(conn) if _pump_works() else _loop_call


class _TrioRunner(_Pumped):
    """``await run(fn, *args)`` for trio through the pump."""

    __slots__ = ("_new_pump", "_pump_trio")

    def __init__(self, conn: PsqlpyConn) -> None:
        from ._psqlpy_pump import _TrioPump, pump_trio

        super().__init__(conn)
        self._new_pump = _TrioPump
        self._pump_trio = pump_trio

    async def __call__(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        conn = self._conn
        args = await _trio_args(args)
        self._pump = pump = self._new_pump()
        try:
            return await self._pump_trio(fn(*args), pump)
        except BaseException:
            if conn.abandoned and POOL_CALL.get():  # the pool's own call: no cancel request
                conn.terminate()
            elif conn.abandoned:
                self._pump = pump = self._new_pump()
                with anyio.move_on_after(_CANCEL_TIMEOUT, shield=True):
                    with contextlib.suppress(Exception):
                        await self._pump_trio(conn.cancel_server(), pump)
            raise
        finally:
            if self._pump is pump:
                self._pump = None


async def _loop_runner(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    """``await run(fn, *args)`` for trio through the shared asyncio loop thread."""
    return await _loop_acall(fn, *await _trio_args(args))


async def _trio_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with a trio async iterable (a COPY source) collected first: psqlpy
    iterates its sources on its own side, where trio's cannot run."""
    if any(hasattr(arg, "__aiter__") for arg in args):
        return tuple([await _collected(arg) for arg in args])
    return args


async def _connect_trio(params: ConnectParams) -> PsqlpyConn:
    if not _pump_works():
        conn: PsqlpyConn = await _loop_acall(_connect_timed, params)
        return conn
    from ._psqlpy_pump import pump_trio

    try:
        with anyio.fail_after(params.connect_timeout):
            return await pump_trio(_connect(params))
    except TimeoutError as exc:
        raise _connect_error(exc, params) from exc


class PsqlpyBackend:
    """psqlpy: native on asyncio; its coroutines pumped without asyncio elsewhere."""

    name = "psqlpy"
    #: psqlpy cannot see a dead socket without a round trip: ping sooner.
    check_default = 0.05

    def check_dsn(self, info: ConnInfo) -> None:
        """Raise ValueError for DSN parameters psqlpy cannot honour."""
        _check_dsn(info)

    def connect_sync(self, params: ConnectParams) -> Any:
        from ._bridged import SyncBridge

        conn: PsqlpyConn = _loop_call(_connect_timed, params)
        runner = _sync_runner(conn)
        return SyncBridge(conn, runner, getattr(runner, "cut", conn.terminate))

    async def connect_async(self, params: ConnectParams, runtime: Runtime) -> Any:
        if runtime == "asyncio":
            return await _connect_timed(params)
        from ._bridged import AsyncBridge

        conn = await _connect_trio(params)
        if not _pump_works():
            return AsyncBridge(conn, _loop_runner, conn.terminate)
        runner = _TrioRunner(conn)
        return AsyncBridge(conn, runner, runner.cut)


@atexit.register
def _close_all() -> None:
    """psqlpy may abort the interpreter at exit while a connection is open: close them first."""
    for conn in list(_live):
        with contextlib.suppress(Exception):
            conn.terminate()


BACKEND = PsqlpyBackend()
