"""psqlpy's errors as unipool's: the SQLSTATE, which psqlpy does not report, derived
from the server's (English) message."""

from __future__ import annotations

import re

from psqlpy import exceptions as pe

from ..._dsn import parse_dsn, scrub
from ..._errors import (
    CommandTimeout,
    ConnectError,
    ConnectionLost,
    DataError,
    Error,
    InterfaceError,
    lost_sqlstate,
    make_database_error,
)
from .._session import connect_failed, refusal_sqlstate, tls_failed
from ..base import ConnectParams

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


def _sqlstate(message: str) -> str | None:
    for pattern, code in _SQLSTATES:
        if pattern.search(message):
            return code
    return None


def map_error(exc: BaseException, timed: bool = False) -> tuple[Error, bool]:
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
        return ConnectionLost(text, sqlstate=lost_sqlstate(text)), True
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


def connect_error(exc: BaseException, params: ConnectParams) -> ConnectError:
    """The unipool exception for a failed connection attempt.

    psqlpy tries every host of the DSN in turn, whatever the failure, and reports the last
    one's error; the message says which host that is, unless the hosts were shuffled
    (``load_balance_hosts=random``) or the attempt ran out of time (on any host).
    """
    message = scrub(str(exc) or "connection timed out", params.secrets).replace(_POOL_NOISE, "")
    last = not isinstance(exc, TimeoutError) and _in_order(params)
    if "db error:" not in message:  # no server answer: refused, unreachable, timed out, TLS
        return connect_failed(message, params, "08001", tls=tls_failed(message), last_host=last)
    return connect_failed(message, params, refusal_sqlstate(message), last_host=last)


def _in_order(params: ConnectParams) -> bool:
    """Whether psqlpy tries the hosts in the DSN's order."""
    try:
        return parse_dsn(params.dsn).params.get("load_balance_hosts") != "random"
    except ValueError:
        return False


def server_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of an error the server reported in ``exc``, if it tells."""
    report = _REPORT.search(str(exc))
    return None if report is None else _sqlstate(report["message"])
