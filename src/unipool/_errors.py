"""The public exception tree of unipool and the SQLSTATE to exception class tables.

The tree follows PEP 249 (``DatabaseError`` and its ``IntegrityError``, ``DataError``,
``ProgrammingError``, ``OperationalError``, ``InternalError`` and ``NotSupportedError``
branches) with leaves for the SQLSTATE codes of PostgreSQL Appendix A that applications
commonly catch. Every class reports ``__module__ == "unipool"``; instances pickle without
needing the package ``__init__`` to re-export them.
"""

from __future__ import annotations

from typing import Any

from unipool._dsn import redact_dsn

__all__ = [
    "CheckViolation",
    "CommandTimeout",
    "ConnectError",
    "ConnectionLost",
    "DataError",
    "DatabaseError",
    "DeadlockDetected",
    "DivisionByZero",
    "DuplicateTable",
    "Error",
    "ExclusionViolation",
    "ForeignKeyViolation",
    "InFailedSQLTransaction",
    "InsufficientPrivilege",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "InvalidTextRepresentation",
    "LockNotAvailable",
    "NotNullViolation",
    "NotSupportedError",
    "NumericValueOutOfRange",
    "OperationalError",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "ProgrammingError",
    "QueryCanceled",
    "RaiseException",
    "ReadOnlySQLTransaction",
    "SQLSyntaxError",
    "SerializationFailure",
    "TooManyWaiters",
    "TransactionRollbackError",
    "UndefinedColumn",
    "UndefinedFunction",
    "UndefinedTable",
    "UniqueViolation",
    "UsageError",
    "error_class_for_sqlstate",
    "make_database_error",
]


def _rebuild(ref: str | type[Error], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Error:
    """Recreate a pickled exception; ``ref`` names a class of this module or is the class."""
    cls: Any = globals().get(ref) if isinstance(ref, str) else ref
    if not (isinstance(cls, type) and issubclass(cls, Error)):
        raise TypeError(f"cannot unpickle {ref!r}: not a unipool exception class")
    error: Error = cls(*args, **kwargs)
    return error


class Error(Exception):
    """Raised when anything in unipool fails; the root of the exception tree."""

    def __reduce__(self) -> tuple[Any, ...]:
        cls = type(self)
        # Classes of this module are found by name, so unpickling does not depend on them
        # being importable as ``unipool.<name>`` (their ``__module__``).
        ref: str | type[Error] = cls.__name__ if globals().get(cls.__name__) is cls else cls
        state = dict(self.__dict__)
        return (_rebuild, (ref, self.args, self._init_kwargs()), state or None)

    def _init_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments that recreate this exception with its args."""
        return {}


class PoolError(Error):
    """Raised when the pool cannot hand out a connection."""


class PoolTimeout(PoolError, TimeoutError):
    """Raised when no connection became available before the acquire timeout."""


class PoolClosed(PoolError):
    """Raised when the pool is used after it was closed."""


class TooManyWaiters(PoolError):
    """Raised when the queue of tasks waiting for a connection is full."""


class UsageError(Error):
    """Raised when the pool is used from a mode, event loop or integration it cannot serve."""


class InterfaceError(Error):
    """Raised when a driver or its adapter fails rather than the database."""


class ConnectError(Error):
    """Raised when a connection cannot be opened: unreachable server, failed auth, no database."""

    #: Waiting cannot help: the pool fails its waiters at once (by default for SQLSTATE
    #: classes 28 and 3D).
    permanent: bool

    def __init__(
        self,
        message: str,
        *,
        dsn: str | None = None,
        sqlstate: str | None = None,
        permanent: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # Redacting is idempotent, so callers may pass a DSN that is already redacted.
        self.dsn = None if dsn is None else redact_dsn(dsn)
        self.sqlstate = sqlstate
        if permanent is None:
            permanent = (sqlstate or "")[:2] in ("28", "3D")
        self.permanent = permanent

    def _init_kwargs(self) -> dict[str, Any]:
        return {"dsn": self.dsn, "sqlstate": self.sqlstate, "permanent": self.permanent}


class ConnectionLost(Error):
    """Raised when an open connection broke while in use (e.g. 57P01 admin shutdown, 08006)."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate

    def _init_kwargs(self) -> dict[str, Any]:
        return {"sqlstate": self.sqlstate}


class DatabaseError(Error):
    """Raised when the server reports an error for a statement."""

    #: The SQLSTATE an instance gets when none is passed (set on the leaf classes).
    sqlstate: str | None = None

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate if sqlstate is not None else type(self).sqlstate
        self.detail = detail
        self.hint = hint

    def __str__(self) -> str:
        lines = [self.message]
        if self.detail:
            lines.append(f"DETAIL: {self.detail}")
        if self.hint:
            lines.append(f"HINT: {self.hint}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, sqlstate={self.sqlstate!r})"

    def _init_kwargs(self) -> dict[str, Any]:
        return {"sqlstate": self.sqlstate, "detail": self.detail, "hint": self.hint}


# -- class 23: integrity constraint violation ------------------------------------------------


class IntegrityError(DatabaseError):
    """Raised when a statement violates an integrity constraint (SQLSTATE class 23)."""


class NotNullViolation(IntegrityError):
    """Raised when a NOT NULL constraint is violated (23502)."""

    sqlstate = "23502"


class ForeignKeyViolation(IntegrityError):
    """Raised when a foreign key constraint is violated (23503)."""

    sqlstate = "23503"


class UniqueViolation(IntegrityError):
    """Raised when a unique constraint is violated (23505)."""

    sqlstate = "23505"


class CheckViolation(IntegrityError):
    """Raised when a CHECK constraint is violated (23514)."""

    sqlstate = "23514"


class ExclusionViolation(IntegrityError):
    """Raised when an exclusion constraint is violated (23P01)."""

    sqlstate = "23P01"


# -- class 22: data exception ----------------------------------------------------------------


class DataError(DatabaseError):
    """Raised when a value is invalid for its type or operation (SQLSTATE class 22)."""


class NumericValueOutOfRange(DataError):
    """Raised when a numeric value is out of range (22003)."""

    sqlstate = "22003"


class DivisionByZero(DataError):
    """Raised when a statement divides by zero (22012)."""

    sqlstate = "22012"


class InvalidTextRepresentation(DataError):
    """Raised when text cannot be converted to the target type (22P02)."""

    sqlstate = "22P02"


# -- classes 42, 3D, 3F, 26, 34, 21...: programming errors ------------------------------------


class ProgrammingError(DatabaseError):
    """Raised when a statement is wrong: syntax, missing objects, privileges (42, 3D, 3F...)."""


class SQLSyntaxError(ProgrammingError):
    """Raised when a statement has a syntax error (42601)."""

    sqlstate = "42601"


class InsufficientPrivilege(ProgrammingError):
    """Raised when the role lacks a privilege the statement needs (42501)."""

    sqlstate = "42501"


class UndefinedColumn(ProgrammingError):
    """Raised when a statement references a column that does not exist (42703)."""

    sqlstate = "42703"


class UndefinedFunction(ProgrammingError):
    """Raised when a statement calls a function or operator that does not exist (42883)."""

    sqlstate = "42883"


class UndefinedTable(ProgrammingError):
    """Raised when a statement references a table that does not exist (42P01)."""

    sqlstate = "42P01"


class DuplicateTable(ProgrammingError):
    """Raised when a statement creates a table that already exists (42P07)."""

    sqlstate = "42P07"


# -- classes 53, 54, 55, 57, 58, HV, 40, 08...: operational errors ----------------------------


class OperationalError(DatabaseError):
    """Raised when the server cannot carry out a statement for operational reasons."""


class TransactionRollbackError(OperationalError):
    """Raised when the server rolled the transaction back (SQLSTATE class 40)."""


class SerializationFailure(TransactionRollbackError):
    """Raised when a transaction could not be serialized and should be retried (40001)."""

    sqlstate = "40001"


class DeadlockDetected(TransactionRollbackError):
    """Raised when the server broke a deadlock by aborting this transaction (40P01)."""

    sqlstate = "40P01"


class QueryCanceled(OperationalError):
    """Raised when a statement was canceled (57014)."""

    sqlstate = "57014"


class CommandTimeout(QueryCanceled, TimeoutError):
    """Raised when a statement ran longer than the command_timeout and was canceled."""


class LockNotAvailable(OperationalError):
    """Raised when a lock could not be taken at once, e.g. with NOWAIT (55P03)."""

    sqlstate = "55P03"


class ReadOnlySQLTransaction(OperationalError):
    """Raised when a write is attempted in a read-only transaction or on a standby (25006)."""

    sqlstate = "25006"


# -- classes XX, 25, 2D, 2B, P0, 38, 39...: internal errors -----------------------------------


class InternalError(DatabaseError):
    """Raised when the server reports an internal or transaction-state error (XX, 25, P0...)."""


class InFailedSQLTransaction(InternalError):
    """Raised when a statement is sent in a transaction that already failed (25P02)."""

    sqlstate = "25P02"


class RaiseException(InternalError):
    """Raised when PL/pgSQL code raised an exception with RAISE (P0001)."""

    sqlstate = "P0001"


# -- class 0A --------------------------------------------------------------------------------


class NotSupportedError(DatabaseError):
    """Raised when the server does not support a requested feature (SQLSTATE class 0A)."""


# -- lookup tables ---------------------------------------------------------------------------

#: Exact SQLSTATE codes with a class of their own.
_BY_SQLSTATE: dict[str, type[DatabaseError]] = {
    "22003": NumericValueOutOfRange,
    "22012": DivisionByZero,
    "22P02": InvalidTextRepresentation,
    "23502": NotNullViolation,
    "23503": ForeignKeyViolation,
    "23505": UniqueViolation,
    "23514": CheckViolation,
    "23P01": ExclusionViolation,
    "25006": ReadOnlySQLTransaction,
    "25P02": InFailedSQLTransaction,
    "40001": SerializationFailure,
    "40P01": DeadlockDetected,
    "42501": InsufficientPrivilege,
    "42601": SQLSyntaxError,
    "42703": UndefinedColumn,
    "42883": UndefinedFunction,
    "42P01": UndefinedTable,
    "42P07": DuplicateTable,
    "55P03": LockNotAvailable,
    "57014": QueryCanceled,
    "P0001": RaiseException,
}

#: SQLSTATE classes (the first two characters) and their PEP 249 branch.
_BY_CLASS: dict[str, type[DatabaseError]] = {
    "08": OperationalError,  # connection exception, when raised during a statement
    "0A": NotSupportedError,  # feature not supported
    "0B": InternalError,  # invalid transaction initiation
    "0L": ProgrammingError,  # invalid grantor
    "0P": ProgrammingError,  # invalid role specification
    "20": ProgrammingError,  # case not found
    "21": ProgrammingError,  # cardinality violation
    "22": DataError,  # data exception
    "23": IntegrityError,  # integrity constraint violation
    "24": InternalError,  # invalid cursor state
    "25": InternalError,  # invalid transaction state
    "26": ProgrammingError,  # invalid SQL statement name
    "27": OperationalError,  # triggered data change violation
    "28": OperationalError,  # invalid authorization specification
    "2B": InternalError,  # dependent privilege descriptors still exist
    "2D": InternalError,  # invalid transaction termination
    "2F": InternalError,  # SQL routine exception
    "34": ProgrammingError,  # invalid cursor name
    "38": InternalError,  # external routine exception
    "39": InternalError,  # external routine invocation exception
    "3B": InternalError,  # savepoint exception
    "3D": ProgrammingError,  # invalid catalog name
    "3F": ProgrammingError,  # invalid schema name
    "40": TransactionRollbackError,  # transaction rollback
    "42": ProgrammingError,  # syntax error or access rule violation
    "44": ProgrammingError,  # WITH CHECK OPTION violation
    "53": OperationalError,  # insufficient resources
    "54": OperationalError,  # program limit exceeded
    "55": OperationalError,  # object not in prerequisite state
    "57": OperationalError,  # operator intervention
    "58": OperationalError,  # system error (external to PostgreSQL)
    "72": OperationalError,  # snapshot failure
    "F0": InternalError,  # configuration file error
    "HV": OperationalError,  # foreign data wrapper error
    "P0": InternalError,  # PL/pgSQL error
    "XX": InternalError,  # internal error
}


def _normalize(sqlstate: str | None) -> str | None:
    code = (sqlstate or "").strip().upper()
    return code or None


def error_class_for_sqlstate(sqlstate: str | None) -> type[DatabaseError]:
    """Return the exception class for a SQLSTATE: exact code, else its class, else the root."""
    code = _normalize(sqlstate)
    if code is None:
        return DatabaseError
    return _BY_SQLSTATE.get(code) or _BY_CLASS.get(code[:2], DatabaseError)


def make_database_error(
    sqlstate: str | None, message: str, detail: str | None = None, hint: str | None = None
) -> DatabaseError:
    """Build the exception matching ``sqlstate`` from the fields of a server error report."""
    cls = error_class_for_sqlstate(sqlstate)
    return cls(message, sqlstate=_normalize(sqlstate), detail=detail, hint=hint)


for _obj in list(globals().values()):
    if isinstance(_obj, type) and issubclass(_obj, Error):
        _obj.__module__ = "unipool"
del _obj


#: Why the server closed a session, as it says it in its FATAL message.
_LOST_REASONS = (
    ("administrator command", "57P01"),
    ("crash of another server process", "57P02"),
    ("idle-session timeout", "57P05"),
    ("idle-in-transaction timeout", "25P03"),
    ("shutting down", "57P03"),
)


def lost_sqlstate(message: str, default: str | None = None) -> str | None:
    """The SQLSTATE of a server-closed session, read from its message, else ``default``."""
    for text, sqlstate in _LOST_REASONS:
        if text in message:
            return sqlstate
    return default
